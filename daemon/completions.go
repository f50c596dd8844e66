package daemon

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/octet-dev/octet/model/constrain"
	"github.com/octet-dev/octet/scheduler"
)

// generation is one completion or chat request in flight.
type generation struct {
	s        *server
	req      *genRequest
	model    *Loaded
	endpoint string
	id       string // the response's id (cmpl-…)
	rid      string // the request's X-Request-Id
	remote   string // the client's address
	created  int64
	arrived  time.Time
	prompt   int // prompt tokens

	ctx    context.Context
	cancel context.CancelCauseFunc
	events <-chan scheduler.Event
	head   *scheduler.Event // an event read ahead of events (endedQueued)

	// measured while streaming
	firstText time.Time
	lastText  time.Time
	lpOffset  int  // text offset of the next completion logprob
	timedOut  bool // cut at limits.request_timeout (finish_reason "length")
	lost      bool // the engine's final event was lost: no queue time measured
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// timings are the per-request figures every response carries.
type timings struct {
	QueueMs          float64 `json:"queue_ms"`
	PromptMs         float64 `json:"prompt_ms"`
	TTFTMs           float64 `json:"ttft_ms"`
	GenerateMs       float64 `json:"generate_ms"`
	PromptTokensPerS float64 `json:"prompt_tokens_per_s"`
	TokensPerS       float64 `json:"tokens_per_s"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func perS(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// generate serves /v1/completions and /v1/chat/completions.
func (s *server) generate(ctx *fasthttp.RequestCtx, isChat bool) {
	arrived := time.Now()
	endpoint := "completions"
	if isChat {
		endpoint = "chat"
	}
	status, modelName := 0, ""
	// count counts the answer once (streams count themselves when they
	// end): at the latest here, and before the model's reference goes, so
	// that a removed model's last request does not make its series again.
	count := func() {
		if status != 0 {
			s.metrics.requests.WithLabelValues(modelName, endpoint, fmt.Sprint(status)).Inc()
			status = 0
		}
	}
	defer count()
	rid := ridOf(ctx)
	fail := func(e *apiError) {
		status = e.Status
		e.write(ctx)
		if e.Code != "" {
			s.metrics.errors.WithLabelValues(modelName, endpoint, e.Code).Inc()
		}
		s.logRequest(errorLevel(status), rid, endpoint, modelName, status, arrived, e.Msg, "remote", ctx.RemoteAddr().String())
	}
	cfg := s.cfg.Load()
	var g *genRequest
	var e *apiError
	if isChat {
		g, e = parseChat(ctx.PostBody(), cfg.Limits.MaxTokens)
	} else {
		g, e = parseCompletion(ctx.PostBody(), cfg.Limits.MaxTokens)
	}
	if e != nil {
		fail(e)
		return
	}
	if !s.gens.begin() {
		fail(errUnavailable("draining", "the server is draining and takes no new requests"))
		return
	}
	// From here on, end() runs when the generation is over: at the end of
	// this function, or of the stream writer.
	streaming := false
	defer func() {
		if !streaming {
			s.gens.end()
		}
	}()
	l, e := s.acquire(g.Model)
	if e != nil {
		fail(e)
		return
	}
	modelName = l.Name
	ctx.Response.Header.Set("X-Octet-Model-Sha256", l.SHA256) // which version of the model answers
	defer func() {
		if !streaming {
			count()
			l.Release()
		}
	}()
	sreq, e := s.prepare(g, l, cfg.Limits.DefaultMaxTokens)
	if e != nil {
		fail(e)
		return
	}
	gen := &generation{s: s, req: g, model: l, endpoint: endpoint, arrived: arrived, created: arrived.Unix(), prompt: len(sreq.Prompt),
		rid: rid, remote: ctx.RemoteAddr().String()}
	gen.id = newID(isChat)
	rctx, cancel := context.WithCancelCause(s.genCtx)
	rctx, cancelTimeout := context.WithTimeoutCause(rctx, cfg.Limits.RequestTimeout.D(), errTimeout)
	gen.ctx = rctx
	gen.cancel = func(err error) { cancel(err); cancelTimeout() }
	stopWatch := watchPeer(rctx, ctx.Conn(), gen.cancel)
	sreq.Key, sreq.Priority = clientKey(ctx), g.Priority
	if g.QueueDeadline > 0 {
		sreq.Deadline = arrived.Add(g.QueueDeadline)
	}
	events, err := l.Engine.Submit(rctx, sreq)
	if err != nil {
		stopWatch()
		gen.cancel(nil)
		switch {
		case errors.Is(err, scheduler.ErrKeyQueueFull):
			fail(retryLater(l, &apiError{Status: 429, Type: "rate_limit_error", Code: "key_queue_full",
				Msg: fmt.Sprintf("this API key has as many requests waiting for the model %q as tuning.toml's max_queued_per_key allows", l.Name)}))
		case errors.Is(err, scheduler.ErrQueueFull):
			fail(retryLater(l, &apiError{Status: 429, Type: "rate_limit_error", Code: "queue_full",
				Msg: fmt.Sprintf("the model %q is busy: its queue is full", l.Name)}))
		case errors.Is(err, scheduler.ErrClosed):
			fail(errUnavailable("model_unloading", "the model is being unloaded; retry"))
		default:
			fail(errInternal(err.Error()))
		}
		return
	}
	gen.events = events
	// A stream's status waits until the engine takes the request from the
	// queue: one refused there (its queue deadline, the request timeout, an
	// unload, a shutdown) is answered as a whole answer would be, with its
	// error's status and Retry-After, which OpenAI's SDKs retry, not with a
	// 200 and an error event.
	if !g.Stream || gen.endedQueued() {
		defer stopWatch()
		defer gen.cancel(nil)
		status = gen.respond(ctx)
		return
	}
	streaming = true
	ctx.SetStatusCode(200)
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.gens.end()
		defer l.Release()
		defer stopWatch()
		defer gen.cancel(nil)
		st := gen.stream(w)
		s.metrics.requests.WithLabelValues(l.Name, endpoint, fmt.Sprint(st)).Inc()
	})
}

// acquire takes a reference to the model a request names (its only one when
// it names none), or the error to answer with.
func (s *server) acquire(name string) (*Loaded, *apiError) {
	var l *Loaded
	var ok bool
	if name == "" {
		l, ok = s.models.Only()
		if !ok && s.models.Len() > 1 {
			return nil, badRequest("model", "model is required: this server serves %s", joinQuoted(s.models.Names()))
		}
	} else {
		l, ok = s.models.Acquire(name)
	}
	switch {
	case ok:
		return l, nil
	case s.models.Len() == 0:
		return nil, errUnavailable("no_model", s.noModelsMessage())
	}
	return nil, errModelNotFound(name, s.models.Names())
}

// prepare renders and tokenizes the prompt and fits the request into the
// model's context.
func (s *server) prepare(g *genRequest, l *Loaded, defMax int) (scheduler.Request, *apiError) {
	tok := l.Model.Tok
	var ids []int32
	switch {
	case g.Chat:
		text, err := l.Chat.Render(g.Messages)
		if err != nil {
			return scheduler.Request{}, badRequest("messages", "%v", err)
		}
		ids = tok.Encode(text, true, true)
	case g.PromptTokens != nil:
		for _, id := range g.PromptTokens {
			if int(id) >= tok.Len() {
				return scheduler.Request{}, badRequest("prompt", "token id %d is outside the model's vocabulary of %d", id, tok.Len())
			}
		}
		ids = g.PromptTokens
	default:
		ids = tok.Encode(g.Prompt, true, false)
	}
	if len(ids) == 0 {
		return scheduler.Request{}, badRequest("prompt", "the prompt is empty and the model adds no BOS token")
	}
	for _, b := range g.Sample.LogitBias {
		if int(b.ID) >= tok.Len() {
			return scheduler.Request{}, badRequest("logit_bias", "logit_bias names token %d, outside the model's vocabulary of %d", b.ID, tok.Len())
		}
	}
	if len(ids) >= l.Context {
		param := "prompt"
		if g.Chat {
			param = "messages"
		}
		return scheduler.Request{}, &apiError{Status: 400, Type: "invalid_request_error", Param: param, Code: "context_length_exceeded",
			Msg: fmt.Sprintf("the prompt has %d tokens; the model %q serves a context of %d tokens, which must also hold the answer", len(ids), l.Name, l.Context)}
	}
	if g.JSON {
		constrain.Prepare(tok) // the vocabulary's tables, once per model, here rather than in the scheduler's loop
	}
	room := l.Context - len(ids)
	n := g.MaxTokens
	if n == 0 {
		n = defMax
	}
	sp := g.Sample
	if !g.SeedSet {
		sp.Seed = mrand.Uint64()
	}
	return scheduler.Request{Prompt: ids, MaxTokens: min(n, room), Sample: sp, Stop: g.Stop, IgnoreEOS: g.IgnoreEOS,
		Logprobs: g.Logprobs, TopLogprobs: g.TopLogprobs, JSON: g.JSON}, nil
}

// endedQueued waits for a streamed request to leave the queue and reports
// whether it ended there instead: then nothing has been sent and respond
// answers with its error. Any first event but Started stays for the reader.
func (g *generation) endedQueued() bool {
	ev, ok := <-g.events
	switch {
	case !ok:
		return true // the final event was lost: ended takes the context's cause
	case ev.Started:
		return false
	}
	g.head = &ev
	return ev.Done && ev.Result.Err != nil
}

// all yields the event read ahead, then the engine's.
func (g *generation) all() iter.Seq[scheduler.Event] {
	return func(yield func(scheduler.Event) bool) {
		if g.head != nil {
			ev := *g.head
			g.head = nil
			if !yield(ev) {
				return
			}
		}
		for ev := range g.events {
			if !yield(ev) {
				return
			}
		}
	}
}

// respond collects a whole answer and writes it as one JSON object.
func (g *generation) respond(ctx *fasthttp.RequestCtx) int {
	var text strings.Builder
	var res scheduler.Result
	var lps []scheduler.TokenLogprob
	done, tokens := false, 0
	for ev := range g.all() {
		if ev.Text != "" {
			g.sawText()
			text.WriteString(ev.Text)
		}
		lps = append(lps, ev.Logprobs...)
		tokens = max(tokens, ev.Tokens)
		if ev.Done {
			res, done = ev.Result, true
		}
	}
	res = g.ended(res, done, tokens)
	if res.Err != nil {
		e := g.endError(res.Err)
		e.write(ctx)
		g.finish(res, e.Status, e.Code, e.Msg)
		return e.Status
	}
	body := g.chunk(text.String(), res.FinishReason, g.logprobs(lps), nil)
	if g.req.Chat {
		body["object"] = "chat.completion"
	}
	body["usage"], body["timings"] = g.usage(res), g.timings(res)
	writeJSON(ctx, 200, body)
	g.finish(res, 200, "", "")
	return 200
}

// stream writes the answer as server-sent events and returns the status
// the request ends with (200, or the status of the error in its last event).
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
	if g.req.Chat {
		send(g.chunk(map[string]any{"role": "assistant", "content": ""}, "", nil, nil))
	}
	var res scheduler.Result
	done, tokens := false, 0
	for ev := range g.all() {
		tokens = max(tokens, ev.Tokens)
		if ev.Text != "" {
			g.sawText()
		}
		if ev.Text != "" || len(ev.Logprobs) > 0 {
			var delta any = ev.Text
			if g.req.Chat {
				delta = map[string]any{"content": ev.Text}
			}
			send(g.chunk(delta, "", g.logprobs(ev.Logprobs), nil))
		}
		if ev.Done {
			res, done = ev.Result, true
		}
	}
	res = g.ended(res, done, tokens)
	status := 200
	if res.Err != nil {
		e := g.endError(res.Err)
		status = e.Status
		send(errorBody{Error: errorObject{Message: e.Msg, Type: e.Type, Code: &e.Code}})
		g.finish(res, status, e.Code, e.Msg)
	} else {
		tm := g.timings(res)
		var delta any = ""
		if g.req.Chat {
			delta = map[string]any{}
		}
		last := g.chunk(delta, res.FinishReason, nil, nil)
		last["timings"] = tm
		send(last)
		if g.req.IncludeUsage {
			u := g.usage(res)
			send(g.chunk(nil, "", nil, &u))
		}
		g.finish(res, 200, "", "")
	}
	if !broken {
		w.WriteString("data: [DONE]\n\n")
		w.Flush()
	}
	return status
}

// chunk builds one streamed object (and, renamed, the whole answer). delta
// is the chat delta or message, or the completion text; lp the choice's
// logprobs; a non-nil u makes the usage chunk (no choices).
func (g *generation) chunk(delta any, finish string, lp any, u *usage) map[string]any {
	obj := "text_completion"
	if g.req.Chat {
		obj = "chat.completion.chunk"
	}
	c := map[string]any{"id": g.id, "object": obj, "created": g.created, "model": g.model.Name}
	if u != nil {
		c["choices"] = []any{}
		c["usage"] = u
		return c
	}
	if g.req.IncludeUsage {
		c["usage"] = nil // as OpenAI: null on each chunk before the usage chunk
	}
	var fr any
	if finish != "" {
		fr = finish
	}
	choice := map[string]any{"index": 0, "finish_reason": fr, "logprobs": lp}
	switch text, whole := delta.(string); {
	case g.req.Chat && whole: // the non-streamed answer
		choice["message"] = map[string]string{"role": "assistant", "content": text}
	case g.req.Chat:
		choice["delta"] = delta
	default:
		choice["text"] = delta
	}
	c["choices"] = []any{choice}
	return c
}

// logprobs formats the logprobs of one event or answer, nil when the
// request asked for none.
func (g *generation) logprobs(lps []scheduler.TokenLogprob) any {
	if !g.req.Logprobs {
		return nil
	}
	tok := g.model.Model.Tok
	if g.req.Chat {
		return newChatLogprobs(tok, lps)
	}
	var out *completionLogprobs
	out, g.lpOffset = newCompletionLogprobs(tok, lps, g.lpOffset)
	return out
}

func (g *generation) sawText() {
	now := time.Now()
	if g.firstText.IsZero() {
		g.firstText = now
		g.s.metrics.ttft.WithLabelValues(g.model.Name).Observe(now.Sub(g.arrived).Seconds())
	} else {
		g.s.metrics.itl.WithLabelValues(g.model.Name).Observe(now.Sub(g.lastText).Seconds())
	}
	g.lastText = now
}

func (g *generation) ttft(res scheduler.Result) time.Duration {
	if !g.firstText.IsZero() {
		return g.firstText.Sub(g.arrived)
	}
	return res.Queued + res.TimeToFirstTok
}

func (g *generation) timings(res scheduler.Result) timings {
	return timings{
		QueueMs: ms(res.Queued), PromptMs: ms(res.PromptTime), TTFTMs: ms(g.ttft(res)), GenerateMs: ms(res.GenerateTime),
		PromptTokensPerS: perS(res.PromptTokens, res.PromptTime), TokensPerS: perS(res.Generated, res.GenerateTime),
	}
}

func (g *generation) usage(res scheduler.Result) usage {
	return usage{PromptTokens: g.prompt, CompletionTokens: res.Generated, TotalTokens: g.prompt + res.Generated}
}

// ended is how the generation ended, from the engine's final event when
// done, else from its context (the event was lost with the stream's buffer
// full: the text events' token count stands in), then cut at the request
// timeout (cutAtTimeout).
func (g *generation) ended(res scheduler.Result, done bool, tokens int) scheduler.Result {
	if !done {
		res.Err, res.Generated, res.PromptTokens, g.lost = context.Cause(g.ctx), tokens, g.prompt, true
	}
	g.cutAtTimeout(&res)
	return res
}

// cutAtTimeout ends a generation that ran past limits.request_timeout
// after it produced tokens as an answer cut there, with finish_reason
// "length" (llama.cpp's t_max_predict_ms does the same): an error would
// have OpenAI's SDKs retry the request, computing it all again. One that
// produced none stays an error (endError).
func (g *generation) cutAtTimeout(res *scheduler.Result) {
	if !errors.Is(res.Err, errTimeout) || (res.Generated == 0 && g.firstText.IsZero()) {
		return
	}
	res.Err, res.FinishReason = nil, "length"
	if res.GenerateTime == 0 && !g.firstText.IsZero() { // the engine times only the answers it ends
		res.GenerateTime = time.Since(g.firstText)
	}
	g.timedOut = true
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

// finish records the metrics and the log line of a generation.
func (g *generation) finish(res scheduler.Result, status int, code, msg string) {
	m := g.s.metrics
	name := g.model.Name
	if code != "" {
		m.errors.WithLabelValues(name, g.endpoint, code).Inc()
	}
	m.tokens.WithLabelValues(name, "prompt").Add(float64(res.PromptTokens))
	m.tokens.WithLabelValues(name, "completion").Add(float64(res.Generated))
	if !g.lost {
		m.queue.WithLabelValues(name).Observe(res.Queued.Seconds())
	}
	m.duration.WithLabelValues(name, g.endpoint).Observe(time.Since(g.arrived).Seconds())
	level := errorLevel(status)
	attrs := []any{"remote", g.remote, "id", g.id, "stream", g.req.Stream, "prompt_tokens", g.prompt, "completion_tokens", res.Generated,
		"ttft_ms", int64(g.ttft(res) / time.Millisecond), "finish", res.FinishReason}
	if g.timedOut {
		attrs = append(attrs, "cut_by", "request_timeout")
	}
	g.s.logRequest(level, g.rid, g.endpoint, name, status, g.arrived, msg, attrs...)
}

// errorLevel is the level of a request's line: error for a 5xx other than
// 503 (the server's fault; a 503 is load or a shutdown), info otherwise.
func errorLevel(status int) slog.Level {
	if status >= 500 && status != 503 {
		return slog.LevelError
	}
	return slog.LevelInfo
}

// logRequest writes the one line per request.
func (s *server) logRequest(level slog.Level, rid, endpoint, model string, status int, arrived time.Time, msg string, attrs ...any) {
	if !s.cfg.Load().Log.Requests {
		return
	}
	args := append([]any{"endpoint", endpoint, "model", model, "status", status, "ms", time.Since(arrived).Milliseconds()}, attrs...)
	if msg != "" {
		args = append(args, "error", msg)
	}
	args = append(args, "request_id", rid)
	s.log.Log(context.Background(), level, "request", args...)
}

// watchPeer cancels the generation when its client hangs up, checking the
// connection every 50 ms until ctx ends or the returned stop is called.
func watchPeer(ctx context.Context, c net.Conn, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if peerGone(c) {
					cancel(errClientGone)
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func newID(isChat bool) string {
	var b [12]byte
	rand.Read(b[:])
	if isChat {
		return "chatcmpl-" + hex.EncodeToString(b[:])
	}
	return "cmpl-" + hex.EncodeToString(b[:])
}
