package daemon

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/octet-dev/octet/configs"
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

	choices []*choice     // the n answers (answer.go)
	events  <-chan tagged // their events, merged
	pending []tagged      // events read ahead of events (endedQueued)
	stop    chan struct{} // closed when the reader is done: the forwarders stop
	failed  *choice       // the first choice to fail, which fails the request

	firstText time.Time // the request's first text, of any choice

	promptIDs []int32 // the prompt, for an echo
	echoText  string  // the prompt's text, which an echoed answer begins with
	echoChars int     // its length in characters, where the completion's offsets start
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
	if e == nil {
		e = fits(g.N, cfg.Tuning)
	}
	if e != nil {
		fail(e)
		return
	}
	gen := &generation{s: s, req: g, model: l, endpoint: endpoint, arrived: arrived, created: arrived.Unix(), prompt: len(sreq.Prompt),
		rid: rid, remote: ctx.RemoteAddr().String()}
	gen.id = newID(isChat)
	if g.Echo {
		gen.promptIDs = sreq.Prompt
		gen.echoText, gen.echoChars = echoText(l.Model.Tok, sreq.Prompt)
	}
	rctx, cancel := context.WithCancelCause(s.genCtx)
	rctx, cancelTimeout := context.WithTimeoutCause(rctx, cfg.Limits.RequestTimeout.D(), errTimeout)
	gen.ctx = rctx
	gen.cancel = func(err error) { cancel(err); cancelTimeout() }
	stopWatch := watchPeer(rctx, ctx.Conn(), gen.cancel)
	sreq.Key, sreq.Priority = clientKey(ctx), g.Priority
	if g.QueueDeadline > 0 {
		sreq.Deadline = arrived.Add(g.QueueDeadline)
	}
	err := gen.submit(sreq, g.N)
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
	gen.merge()
	end := func() {
		close(gen.stop) // (the forwarders, when the reader stopped early)
		gen.cancel(nil)
		stopWatch()
	}
	defer func() {
		if !streaming {
			end()
		}
	}()
	// A stream's status waits until the engine takes the request from the
	// queue: one refused there (its queue deadline, the request timeout, a
	// shutdown) is answered as a whole answer would be, with its
	// error's status and Retry-After, which OpenAI's SDKs retry, not with a
	// 200 and an error event.
	if !g.Stream || gen.endedQueued() {
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
		defer end()
		st := gen.stream(w)
		s.metrics.requests.WithLabelValues(l.Name, endpoint, fmt.Sprint(st)).Inc()
	})
}

// submit queues the request's n choices, choice i with the seed plus i;
// on a refusal those queued are cancelled (by the caller's cancel).
func (g *generation) submit(req scheduler.Request, n int) error {
	g.stop = make(chan struct{})
	seed := req.Sample.Seed
	for i := range max(n, 1) {
		req.Sample.Seed = seed + uint64(i)
		if i > 0 {
			// Choice 0 scores an echoed prompt for all: the others take
			// its blocks from the prefix cache, and its logprobs.
			req.PromptLogprobs = false
		}
		events, err := g.model.Engine.Submit(g.ctx, req)
		if err != nil {
			return err
		}
		g.choices = append(g.choices, &choice{i: i, events: events, lpOffset: g.echoChars})
	}
	return nil
}

// fits refuses n choices that the engine could never hold at once (each
// choice is queued and run on its own): a 429 for them would be retried in
// vain, and choices run in waves would hold a stream back and could
// outlive their queue deadline on an idle server.
func fits(n int, t configs.Tuning) *apiError {
	switch {
	case t.MaxQueuedPerKey > 0 && n > t.MaxQueuedPerKey:
		return badRequest("n", "n = %d is more than the %d requests a client may have queued (tuning.toml's max_queued_per_key)", n, t.MaxQueuedPerKey)
	case n > t.MaxRunning:
		return badRequest("n", "n = %d is more than the %d sequences the server runs at once (tuning.toml's max_running)", n, t.MaxRunning)
	case t.MaxRunningPerKey > 0 && n > t.MaxRunningPerKey:
		return badRequest("n", "n = %d is more than the %d sequences a client may have running (tuning.toml's max_running_per_key)", n, t.MaxRunningPerKey)
	}
	return nil
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
	if g.JSON || g.Schema != nil {
		constrain.Prepare(tok) // the vocabulary's tables, once per model, here rather than in the scheduler's loop
	}
	room := l.Context - len(ids)
	n := g.MaxTokens
	switch {
	case g.ScoreOnly:
		n = 0
	case n == 0:
		n = defMax
	}
	sp := g.Sample
	if !g.SeedSet {
		sp.Seed = mrand.Uint64()
	}
	return scheduler.Request{Prompt: ids, MaxTokens: min(n, room), Sample: sp, Stop: g.Stop, IgnoreEOS: g.IgnoreEOS,
		Logprobs: g.Logprobs, TopLogprobs: g.TopLogprobs, PromptLogprobs: g.Echo && g.Logprobs, JSON: g.JSON, Schema: g.Schema}, nil
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
