package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/octet-dev/octet/scheduler"
)

// choice is one of a request's n answers, with a stream of its own from
// the engine.
type choice struct {
	i      int
	events <-chan scheduler.Event

	started   bool // its Started event came
	done      bool // its final event came
	res       scheduler.Result
	tokens    int // generated, as its text events count them
	firstText time.Time
	lastText  time.Time
	lpOffset  int                      // text offset of its next completion logprob
	timedOut  bool                     // cut at limits.request_timeout (finish_reason "length")
	lost      bool                     // the engine's final event was lost: no queue time measured
	promptLP  []scheduler.TokenLogprob // an echoed prompt's logprobs
}

// tagged is an event of one choice, stamped when it came from the engine
// (it may wait in pending while a stream's other choices are queued);
// closed marks the end of its stream.
type tagged struct {
	c      *choice
	ev     scheduler.Event
	at     time.Time
	closed bool
}

// merge starts forwarding the choices' events into one stream, which
// all reads until every choice's stream has closed. The forwarders stop
// early when stop closes (after the reader is done).
func (g *generation) merge() {
	out := make(chan tagged)
	for _, c := range g.choices {
		go func() {
			for ev := range c.events {
				select {
				case out <- tagged{c: c, ev: ev, at: time.Now()}:
				case <-g.stop:
					return
				}
			}
			select {
			case out <- tagged{c: c, closed: true}:
			case <-g.stop:
			}
		}()
	}
	g.events = out
}

// endedQueued waits for a streamed request's choices to leave the queue
// and reports whether one failed first (in the queue, or running while
// others wait there): then nothing has been sent and respond answers with
// its error, cancelling the others. The events read stay for the reader.
func (g *generation) endedQueued() bool {
	waiting := len(g.choices)
	finished := make(map[*choice]bool)
	for waiting > 0 {
		t := <-g.events
		c := t.c
		if t.ev.Started {
			c.started = true
			waiting--
			continue
		}
		g.pending = append(g.pending, t)
		switch {
		case t.ev.Done && t.ev.Result.Err != nil, t.closed && !finished[c]:
			return true // a choice failed (queued or not) before a byte was sent
		case t.ev.Done:
			finished[c] = true
		}
		if !c.started {
			c.started = true // (an engine without Started events)
			waiting--
		}
	}
	return false
}

// all yields the events read ahead, then the merged stream's, until every
// choice's stream has closed. Its reader must read to the end. When only
// choice 0 scores an echoed prompt (sharesPrompt), the other choices'
// events wait until its prompt's logprobs (or its end) came, so that each
// choice's echo goes first.
func (g *generation) all() iter.Seq[tagged] {
	return func(yield func(tagged) bool) {
		open := len(g.choices)
		hold := g.sharesPrompt()
		var held []tagged
		for {
			var t tagged
			switch {
			case !hold && len(held) > 0:
				t, held = held[0], held[1:]
			case open == 0:
				return
			default:
				if len(g.pending) > 0 {
					t, g.pending = g.pending[0], g.pending[1:]
				} else {
					t = <-g.events
				}
				if t.closed {
					open--
				}
				if hold && t.c.i > 0 {
					held = append(held, t)
					continue
				}
				if t.ev.PromptLogprobs != nil || t.ev.Done || t.closed {
					hold = false
				}
			}
			if !yield(t) {
				return
			}
		}
	}
}

// sharesPrompt reports whether choice 0 alone scores an echoed prompt for
// all n choices (the others read it from the prefix cache).
func (g *generation) sharesPrompt() bool {
	return g.req.Echo && g.req.Logprobs && len(g.choices) > 1
}

// take folds an event into its choice: its token count, its text's
// timing, and at the end how it ended (ended). It returns the choice's
// final result when t ends it, with ok set.
func (g *generation) take(t tagged) (res scheduler.Result, ok bool) {
	c := t.c
	switch {
	case t.closed:
		if c.done {
			return res, false
		}
		c.done = true // without its final event: lost
		return g.ended(c, scheduler.Result{}, false), true
	case t.ev.Done:
		c.done = true
		return g.ended(c, t.ev.Result, true), true
	}
	c.tokens = max(c.tokens, t.ev.Tokens)
	if t.ev.PromptLogprobs != nil {
		c.promptLP = t.ev.PromptLogprobs
	}
	if t.ev.Text != "" {
		g.sawText(c, t.at)
	}
	return res, false
}

// failedBy records the first choice to fail, and cancels the others with
// its error: the request fails as a whole.
func (g *generation) failedBy(c *choice) {
	if g.failed == nil {
		g.failed = c
		g.cancel(c.res.Err)
	}
}

// respond collects a whole answer and writes it as one JSON object.
func (g *generation) respond(ctx *fasthttp.RequestCtx) int {
	texts := make([]strings.Builder, len(g.choices))
	lps := make([][]scheduler.TokenLogprob, len(g.choices))
	for t := range g.all() {
		c := t.c
		texts[c.i].WriteString(t.ev.Text)
		lps[c.i] = append(lps[c.i], g.eventLogprobs(t.ev)...)
		if _, end := g.take(t); end && c.res.Err != nil {
			g.failedBy(c)
		}
	}
	if g.failed != nil {
		e := g.endError(g.failed.res.Err)
		e.write(ctx)
		g.finish(e.Status, e.Code, e.Msg)
		return e.Status
	}
	choices := make([]any, len(g.choices))
	for i, c := range g.choices {
		text, lp := texts[i].String(), g.logprobs(c, lps[i])
		if g.req.Echo {
			text = g.echoText + text
			if lp != nil {
				lp = joinLogprobs(echoLogprobs(g.model.Model.Tok, g.promptIDs, g.choices[0].promptLP), lp.(*completionLogprobs)) // (choice 0 scores the prompt)
			}
		}
		choices[i] = g.choice(c, text, c.res.FinishReason, lp)
	}
	body := g.object(choices, nil)
	if g.req.Chat {
		body["object"] = "chat.completion"
	}
	body["usage"], body["timings"] = g.usage(), g.timings(g.choices...)
	writeJSON(ctx, 200, body)
	g.finish(200, "", "")
	return 200
}

// stream writes the answer as server-sent events and returns the status
// the request ends with (200, or the status of the error in its last event).
// Each choice's chunks carry its index; each ends with its finishing chunk
// (with its timings) as it ends.
func (g *generation) stream(w *bufio.Writer) int {
	broken := false
	send := func(v any) {
		if broken {
			return
		}
		b, _ := json.Marshal(v)
		w.WriteString("data: ")
		w.Write(b)
		w.WriteString("\n\n")
		if w.Flush() != nil {
			broken = true
			g.cancel(errClientGone)
		}
	}
	for _, c := range g.choices {
		switch {
		case g.req.Chat:
			send(g.object([]any{g.choice(c, map[string]any{"role": "assistant", "content": ""}, "", nil)}, nil))
		case g.req.Echo && !g.req.Logprobs:
			send(g.object([]any{g.choice(c, g.echoText, "", nil)}, nil))
		}
	}
	for t := range g.all() {
		c := t.c
		ev := t.ev
		if g.failed == nil && g.req.Echo && g.req.Logprobs && ev.PromptLogprobs != nil {
			lp := echoLogprobs(g.model.Model.Tok, g.promptIDs, ev.PromptLogprobs)
			for _, c := range g.choices { // (only choice 0 scores the prompt)
				send(g.object([]any{g.choice(c, g.echoText, "", lp)}, nil))
			}
		}
		if lps := g.eventLogprobs(ev); g.failed == nil && (ev.Text != "" || len(lps) > 0) {
			var delta any = ev.Text
			if g.req.Chat {
				delta = map[string]any{"content": ev.Text}
			}
			send(g.object([]any{g.choice(c, delta, "", g.logprobs(c, lps))}, nil))
		}
		res, end := g.take(t)
		switch {
		case !end || g.failed != nil:
		case res.Err != nil:
			g.failedBy(c)
			e := g.endError(res.Err)
			send(errorBody{Error: errorObject{Message: e.Msg, Type: e.Type, Code: &e.Code}})
		default:
			var delta any = ""
			if g.req.Chat {
				delta = map[string]any{}
			}
			last := g.object([]any{g.choice(c, delta, res.FinishReason, nil)}, nil)
			last["timings"] = g.timings(c)
			send(last)
		}
	}
	status := 200
	if g.failed != nil {
		e := g.endError(g.failed.res.Err)
		status = e.Status
		g.finish(status, e.Code, e.Msg)
	} else {
		if g.req.IncludeUsage {
			u := g.usage()
			send(g.object(nil, &u))
		}
		g.finish(200, "", "")
	}
	if !broken {
		w.WriteString("data: [DONE]\n\n")
		w.Flush()
	}
	return status
}

// object builds one streamed object (and, renamed, the whole answer)
// around its choices; a non-nil u makes the usage chunk (no choices).
func (g *generation) object(choices []any, u *usage) map[string]any {
	obj := "text_completion"
	if g.req.Chat {
		obj = "chat.completion.chunk"
	}
	o := map[string]any{"id": g.id, "object": obj, "created": g.created, "model": g.model.Name}
	if u != nil {
		o["choices"] = []any{}
		o["usage"] = u
		return o
	}
	if g.req.IncludeUsage {
		o["usage"] = nil // as OpenAI: null on each chunk before the usage chunk
	}
	o["choices"] = choices
	return o
}

// choice builds one choice of an object. delta is the chat delta or
// message (a string: the whole answer's message), or the completion text;
// lp the choice's logprobs.
func (g *generation) choice(c *choice, delta any, finish string, lp any) map[string]any {
	var fr any
	if finish != "" {
		fr = finish
	}
	ch := map[string]any{"index": c.i, "finish_reason": fr, "logprobs": lp}
	switch text, whole := delta.(string); {
	case g.req.Chat && whole: // the non-streamed answer
		ch["message"] = map[string]string{"role": "assistant", "content": text}
	case g.req.Chat:
		ch["delta"] = delta
	default:
		ch["text"] = delta
	}
	return ch
}

// eventLogprobs are the logprobs an event reports: a completion's end with
// the end-of-generation token that ended it, which adds no text, as
// OpenAI's and vLLM's do (lm-eval-harness scores a continuation by the
// entries before the last); a chat answer's without (as OpenAI's).
func (g *generation) eventLogprobs(ev scheduler.Event) []scheduler.TokenLogprob {
	if ev.End == nil || g.req.Chat {
		return ev.Logprobs
	}
	return append(ev.Logprobs[:len(ev.Logprobs):len(ev.Logprobs)], *ev.End)
}

// logprobs formats the logprobs of one event or answer of c, nil when the
// request asked for none.
func (g *generation) logprobs(c *choice, lps []scheduler.TokenLogprob) any {
	if !g.req.Logprobs {
		return nil
	}
	tok := g.model.Model.Tok
	if g.req.Chat {
		return newChatLogprobs(tok, lps)
	}
	var out *completionLogprobs
	out, c.lpOffset = newCompletionLogprobs(tok, lps, c.lpOffset)
	return out
}

// sawText times a piece of c's text that came at now: the request's first
// text (its TTFT, which finish records), or the time since c's previous
// piece (inter-token latency).
func (g *generation) sawText(c *choice, now time.Time) {
	m := g.s.metrics
	if g.firstText.IsZero() {
		g.firstText = now
	}
	if c.firstText.IsZero() {
		c.firstText = now
	} else {
		m.itl.WithLabelValues(g.model.Name).Observe(now.Sub(c.lastText).Seconds())
	}
	c.lastText = now
}

// timings are the figures of the choices cs together: the longest queue,
// prompt and generation, the request's first token, and the tokens of all
// over the longest generation.
func (g *generation) timings(cs ...*choice) timings {
	var queued, prompt, gen time.Duration
	tokens, promptTokens := 0, 0
	for _, c := range cs {
		queued, prompt, gen = max(queued, c.res.Queued), max(prompt, c.res.PromptTime), max(gen, c.res.GenerateTime)
		tokens += c.res.Generated
		promptTokens = max(promptTokens, c.res.PromptTokens)
	}
	return timings{
		QueueMs: ms(queued), PromptMs: ms(prompt), TTFTMs: ms(g.ttft(cs)), GenerateMs: ms(gen),
		PromptTokensPerS: perS(promptTokens, prompt), TokensPerS: perS(tokens, gen),
	}
}

// ttft is the time to the first text of the choices cs, or when none had
// text, to the first token the engine measured.
func (g *generation) ttft(cs []*choice) time.Duration {
	first, queued := time.Time{}, time.Duration(0)
	for _, c := range cs {
		if !c.firstText.IsZero() && (first.IsZero() || c.firstText.Before(first)) {
			first = c.firstText
		}
		queued = max(queued, c.res.Queued)
	}
	if first.IsZero() {
		return queued + cs[0].res.TimeToFirstTok
	}
	return first.Sub(g.arrived)
}

// usage counts the prompt once and the tokens of every choice.
func (g *generation) usage() usage {
	n := 0
	for _, c := range g.choices {
		n += c.res.Generated
	}
	return usage{PromptTokens: g.prompt, CompletionTokens: n, TotalTokens: g.prompt + n}
}

// ended is how c ended, from the engine's final event when done, else from
// the request's context (the event was lost with the stream's buffer full:
// the text events' token count stands in), then cut at the request
// timeout (cutAtTimeout). It is kept as c.res.
func (g *generation) ended(c *choice, res scheduler.Result, done bool) scheduler.Result {
	if !done {
		res.Err, res.Generated, res.PromptTokens, c.lost = context.Cause(g.ctx), c.tokens, g.prompt, true
	}
	g.cutAtTimeout(c, &res)
	c.res = res
	return res
}

// cutAtTimeout ends a choice that ran past limits.request_timeout after it
// produced tokens as an answer cut there, with finish_reason "length"
// (llama.cpp's t_max_predict_ms does the same): an error would have
// OpenAI's SDKs retry the request, computing it all again. One that
// produced none stays an error (endError).
func (g *generation) cutAtTimeout(c *choice, res *scheduler.Result) {
	if !errors.Is(res.Err, errTimeout) || (res.Generated == 0 && c.firstText.IsZero()) {
		return
	}
	res.Err, res.FinishReason = nil, "length"
	if res.GenerateTime == 0 && !c.firstText.IsZero() { // the engine times only the answers it ends
		res.GenerateTime = time.Since(c.firstText)
	}
	c.timedOut = true
}

// endError maps how a generation failed to the API error.
func (g *generation) endError(err error) *apiError {
	switch {
	case errors.Is(err, errShutdown):
		return errUnavailable("shutting_down", "the server is shutting down; the generation was cancelled")
	case errors.Is(err, errTimeout): // before its first token (cutAtTimeout takes the others)
		return retryLater(g.model, &apiError{Status: 503, Type: "service_unavailable", Code: "request_timeout",
			Msg: fmt.Sprintf("the request ran past limits.request_timeout (%s) before its first token, queued or reading its prompt: the model %q is busy",
				g.s.cfg.Load().Limits.RequestTimeout.D(), g.model.Name)})
	case errors.Is(err, errClientGone):
		return &apiError{Status: 499, Type: "invalid_request_error", Code: "client_closed_request", Msg: "the client disconnected"}
	case errors.Is(err, scheduler.ErrClosed):
		return errUnavailable("model_unloading", "the model was unloaded before the request ran; retry")
	case errors.Is(err, scheduler.ErrDeadline):
		return retryLater(g.model, &apiError{Status: 429, Type: "rate_limit_error", Code: "queue_deadline",
			Msg: fmt.Sprintf("the request waited in the queue past its queue_deadline_ms; the model %q is busy", g.model.Name)})
	}
	return errInternal("generation failed: " + err.Error())
}

// finish records the metrics and the log line of a generation: its
// tokens, queue time and duration, and one line.
func (g *generation) finish(status int, code, msg string) {
	m := g.s.metrics
	name := g.model.Name
	if code != "" {
		m.errors.WithLabelValues(name, g.endpoint, code).Inc()
	}
	// As usage: the prompt once, the tokens of every choice; the queue
	// wait is the request's (its longest choice's).
	generated, prompt, finishes, timedOut := 0, 0, make([]string, len(g.choices)), false
	queued, timed := time.Duration(0), false
	for i, c := range g.choices {
		generated += c.res.Generated
		prompt = max(prompt, c.res.PromptTokens)
		if !c.lost {
			queued, timed = max(queued, c.res.Queued), true
		}
		finishes[i] = c.res.FinishReason
		timedOut = timedOut || c.timedOut
	}
	m.tokens.WithLabelValues(name, "prompt").Add(float64(prompt))
	m.tokens.WithLabelValues(name, "completion").Add(float64(generated))
	if timed {
		m.queue.WithLabelValues(name).Observe(queued.Seconds())
	}
	if !g.firstText.IsZero() { // the earliest text of any choice (events may be read out of order)
		m.ttft.WithLabelValues(name).Observe(g.ttft(g.choices).Seconds())
	}
	m.duration.WithLabelValues(name, g.endpoint).Observe(time.Since(g.arrived).Seconds())
	attrs := []any{"remote", g.remote, "id", g.id, "stream", g.req.Stream, "prompt_tokens", g.prompt, "completion_tokens", generated,
		"ttft_ms", int64(g.ttft(g.choices) / time.Millisecond), "finish", strings.Join(finishes, ",")}
	if len(g.choices) > 1 {
		attrs = append(attrs, "n", len(g.choices))
	}
	if timedOut {
		attrs = append(attrs, "cut_by", "request_timeout")
	}
	g.s.logRequest(errorLevel(status), g.rid, g.endpoint, name, status, g.arrived, msg, attrs...)
}
