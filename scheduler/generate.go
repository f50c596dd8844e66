// Package scheduler decides what each forward step of a runner computes.
//
// Generate is the simplest schedule: one sequence, its prompt prefilled in
// chunks, then one token per step until a stop. `octet generate` and the
// evaluation tools use it.
//
// Engine is what the daemon submits requests to: Submit returns a stream
// of text events ending in a Result; a full queue is ErrQueueFull, which the
// daemon answers with 429 and Retry-After from EngineStats.RetryAfter (the
// queue ahead over the measured drain rate). Serial is the simplest Engine:
// one goroutine per model runs one request at a time with Generate on one
// Sequence, fed by a bounded queue. Batcher is the one the daemon uses:
// continuous (iteration-level) batching over a paged KV cache with a
// prefix cache, preemption by recompute, admission policies (FCFS,
// priority with aging, fair share between API keys), queue deadlines, and
// knobs that change live (Tunable).
//
// Decisions of the batching engine: a step runs the decode tokens of the
// running sequences first (oldest first), then prefill chunks, within
// max_batch_tokens — except that a prompt's last chunk may go over by as
// many tokens as the step decodes (no step spent on a few leftover tokens),
// and a prompt alone (nothing decoding, nothing else waiting) takes its
// whole prefill_chunk; a newcomer is admitted only when the blocks for its
// whole prompt are free (after its prefix-cache hits), and the queue's head
// is never jumped for lack of blocks; when a running sequence needs a block
// and none is free, the sequence admission ranks last (the youngest
// arrival of the lowest class, aging included) is preempted — it keeps its
// sampler and its tokens, so when it is recomputed it continues exactly
// where it was; the one ranked first is never preempted while another runs,
// so the engine always makes progress. The stream to a slow reader is coalesced, never
// waited for: the loop does not block on a client. Prefix-cache blocks are
// keyed by the hash of their whole prefix and their tokens are compared on
// every hit.
//
// Decisions of the serial engine: stop strings are matched on the decoded
// text (text that may begin a stop string is held back until it cannot);
// the heartbeat (EngineStats.Beat) moves at the end of every forward step
// and on every pass of the idle wait, so a loop stuck inside a step stops
// beating and the daemon stops the systemd watchdog pings; a panic in the
// backend fails that request, not the process; a request cancelled while
// queued never runs; a token's logprob travels with the first event after
// its step that carries text (text held back by a stop string holds its
// logprobs back too).
package scheduler

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model/constrain"
	"github.com/octet-dev/octet/model/sample"
	"github.com/octet-dev/octet/model/tokenizer"
)

// Request is one generation.
type Request struct {
	Prompt    []int32
	MaxTokens int // tokens to generate at most
	Sample    sample.Params
	// PrefillChunk bounds the tokens of one prefill step (default 512).
	PrefillChunk int
	// IgnoreEOS keeps generating past end-of-generation tokens.
	IgnoreEOS bool
	// Stop strings end the text before their first occurrence. Engines
	// apply them; Generate itself ignores them.
	Stop []string
	// Logprobs asks for each generated token's log-probability, with the
	// TopLogprobs likeliest tokens of its step (at most MaxTopLogprobs).
	Logprobs    bool
	TopLogprobs int
	// PromptLogprobs asks for the log-probability of each prompt token
	// after the first, given those before it (with TopLogprobs
	// alternatives), on the first event after the prompt is read: for
	// scoring a text (echo with logprobs). Its prompt is computed row by
	// row, without the prefix cache.
	PromptLogprobs bool
	// JSON holds the answer to one JSON object (constrain.JSON): only
	// tokens that continue one may come, and the answer ends, "stop", when
	// it closes. IgnoreEOS has no effect with it.
	JSON bool
	// Schema, when set, holds the answer to the JSON texts of a compiled
	// JSON schema (constrain.Schema) instead, alike.
	Schema *constrain.Compiled

	// Scheduling, for the batching engine: a lower Priority is admitted
	// first under the priority and fair policies (as in vLLM; default 0); a request still queued
	// at Deadline (if set) ends with ErrDeadline; Key names the client (an
	// API key's hash) for fair share and per-key limits.
	Priority int
	Deadline time.Time
	Key      string
}

// MaxTopLogprobs bounds Request.TopLogprobs (OpenAI's limit).
const MaxTopLogprobs = 20

// TokenLogprob is a generated token's log-probability under the model's
// distribution at its step: the log-softmax of the raw logits, before
// penalties, temperature and truncation (what vLLM reports by default), so
// it does not depend on the sampling settings.
type TokenLogprob struct {
	ID      int32
	Logprob float32
	Top     []Alternative // the likeliest tokens of the step, likeliest first
}

// Alternative is one of the likeliest tokens of a step.
type Alternative struct {
	ID      int32
	Logprob float32
}

// Token is one step of GenerateTokens.
type Token struct {
	ID      int32         // -1 for the text the decoder flushes at the end, and for Prompt
	Text    string        // the text this token completes (may be "")
	Logprob *TokenLogprob // when Request.Logprobs, except for the flush
	// Prompt, on a token of its own (ID -1, no text) before the first
	// generated one, is the prompt's logprobs (Request.PromptLogprobs).
	Prompt []TokenLogprob
	// End marks the end-of-generation token that ended the answer, after
	// the text: no text, not counted, its Logprob set (only when
	// Request.Logprobs asks for it).
	End bool
}

// Finish reasons, as the OpenAI API names them.
const (
	FinishStop   = "stop"   // an end-of-generation token
	FinishLength = "length" // MaxTokens or the context is full
)

// Stats describe a finished generation.
type Stats struct {
	PromptTokens    int
	PromptTime      time.Duration
	Generated       int
	GenerateTime    time.Duration // from the first sampled token to the last
	TimeToFirstTok  time.Duration
	FinishReason    string
	CompletionToken []int32
}

// Emit receives each generated token and the text it completes (which may
// be empty while a UTF-8 sequence is incomplete). Returning an error stops
// the generation with that error.
type Emit func(id int32, text string) error

// Generate runs req on seq, which must be empty, and streams the tokens to
// emit. It stops at an end-of-generation token (not emitted), after
// MaxTokens tokens, or when the sequence is full.
func Generate(ctx context.Context, seq *backends.Sequence, tok *tokenizer.Tokenizer, req Request, emit Emit) (Stats, error) {
	return GenerateTokens(ctx, seq, tok, req, func(t Token) error { return emit(t.ID, t.Text) })
}

// GenerateTokens is Generate handing each step over as a Token, with its
// log-probabilities when req.Logprobs.
func GenerateTokens(ctx context.Context, seq *backends.Sequence, tok *tokenizer.Tokenizer, req Request, emit func(Token) error) (st Stats, err error) {
	if len(req.Prompt) == 0 {
		return st, fmt.Errorf("scheduler: empty prompt")
	}
	if len(req.Prompt) >= seq.Cap() {
		return st, fmt.Errorf("scheduler: prompt of %d tokens does not fit the context of %d", len(req.Prompt), seq.Cap())
	}
	chunk := req.PrefillChunk
	if chunk <= 0 {
		chunk = 512
	}
	if req.PromptLogprobs {
		chunk = min(chunk, scoredChunk) // each token a row of logits, as the batcher's
	}
	g := newGen(tok, req)
	start := time.Now()
	var logits *backends.Logits
	for i := 0; i < len(req.Prompt); i += chunk {
		end := min(i+chunk, len(req.Prompt))
		mode := backends.LogitsNone
		switch {
		case req.PromptLogprobs:
			mode = backends.LogitsAll
		case end == len(req.Prompt):
			mode = backends.LogitsLast
		}
		var err error
		if logits, err = seq.Forward(ctx, req.Prompt[i:end], mode); err != nil {
			return g.st, err
		}
		if req.PromptLogprobs {
			g.scorePrompt(i, logits.Run(0), logits.Vocab)
		}
	}
	if req.PromptLogprobs {
		if err := emit(Token{ID: -1, Prompt: g.promptLP}); err != nil {
			return g.st, err
		}
	}
	g.st.PromptTokens = len(req.Prompt)
	g.st.PromptTime = time.Since(start)
	genStart := time.Now()
	defer func() { st.GenerateTime = time.Since(genStart) }() // on every way out, an interrupt's too
	for g.st.Generated < req.MaxTokens {
		t, ok := g.next(logits.Last(0))
		if g.st.TimeToFirstTok == 0 {
			g.st.TimeToFirstTok = time.Since(start)
		}
		if !ok {
			break
		}
		if err := emit(t); err != nil {
			return g.st, err
		}
		if g.closed() {
			break
		}
		if g.st.Generated == req.MaxTokens || seq.Pos() >= seq.Cap() {
			break
		}
		var err error
		if logits, err = seq.Forward(ctx, []int32{t.ID}, backends.LogitsLast); err != nil {
			return g.st, err
		}
	}
	if rest := g.flush(); rest != "" {
		if err := emit(Token{ID: -1, Text: rest}); err != nil {
			return g.st, err
		}
	}
	if g.end != nil {
		if err := emit(Token{ID: g.end.ID, Logprob: g.end, End: true}); err != nil {
			return g.st, err
		}
	}
	return g.st, nil
}

// gen is the per-token state of one generation, whatever schedules its
// forward steps: the sampler, the text decoder and the statistics.
type gen struct {
	req Request
	tok *tokenizer.Tokenizer
	smp *sample.Sampler
	dec *tokenizer.Decoder
	st  Stats

	json   constraint // with Request.JSON or Schema
	masked []float32  // the logits under json's mask

	promptLP []TokenLogprob // with Request.PromptLogprobs: prompt token k+1's at k
	end      *TokenLogprob  // the end-of-generation token that ended the answer, with Request.Logprobs
}

// constraint is what holds an answer to a JSON grammar (constrain.JSON,
// constrain.Schema).
type constraint interface {
	Mask(logits []float32) // -Inf on the tokens that cannot come next
	Accept(id int32)       // past the token taken
	Done() bool            // complete, and nothing may follow
	Over() bool            // Done, or no token could continue it
}

func newGen(tok *tokenizer.Tokenizer, req Request) *gen {
	smp := sample.New(req.Sample)
	for _, id := range req.Prompt {
		smp.Accept(id)
	}
	// The first generated piece keeps its leading space unless it starts the
	// text (the prompt ends with BOS), as SentencePiece decoding does.
	var opts []tokenizer.DecoderOption
	if req.Prompt[len(req.Prompt)-1] != tok.BOS() {
		opts = append(opts, tokenizer.MidText)
	}
	g := &gen{req: req, tok: tok, smp: smp, dec: tok.NewDecoder(false, opts...), st: Stats{FinishReason: FinishLength}}
	switch {
	case req.Schema != nil:
		g.json = req.Schema.Start(tok)
	case req.JSON:
		g.json = constrain.NewJSON(tok)
	}
	if req.PromptLogprobs {
		g.promptLP = make([]TokenLogprob, 0, len(req.Prompt)-1)
	}
	return g
}

// sample draws the next token from logits (left unchanged), under the JSON
// mask when the request has one (and none when its answer is over: take
// then ends it).
func (g *gen) sample(logits []float32) int32 {
	switch {
	case g.json == nil:
		return g.smp.Sample(logits)
	case g.json.Over():
		return 0
	}
	g.masked = append(g.masked[:0], logits...)
	g.json.Mask(g.masked)
	id := g.smp.Sample(g.masked)
	if math.IsInf(float64(g.masked[id]), -1) { // (the sampler never draws one: a guard)
		id = int32(slices.Index(g.masked, slices.Max(g.masked)))
	}
	return id
}

// next samples the token that follows logits. It reports false, with the
// finish reason set, at an end-of-generation token (which is not counted).
func (g *gen) next(logits []float32) (Token, bool) {
	id := g.sample(logits)
	return g.take(id, g.logprob(logits, id))
}

// logprob is id's logprob under logits when the request asks for them
// (else nil), an end-of-generation token's too, as OpenAI's and vLLM's
// answers report it (lm-eval-harness's scoring counts on one entry after
// the prompt's), but none once a JSON answer is over (no token was
// drawn): at a 49152-token vocabulary, 0.4-0.5 ms of the 2-core dev VM.
func (g *gen) logprob(logits []float32, id int32) *TokenLogprob {
	if !g.req.Logprobs || g.json != nil && g.json.Over() {
		return nil
	}
	return Logprobs(logits, id, g.req.TopLogprobs)
}

// ends reports whether id ends the answer: an end-of-generation token
// unless the request ignores them, or anything once a JSON answer is over
// (its object closed, no end-of-generation token needed).
func (g *gen) ends(id int32) bool {
	if g.json != nil {
		return g.json.Over() || g.tok.IsEOG(id)
	}
	return g.tok.IsEOG(id) && !g.req.IgnoreEOS
}

// take is next for the token id already drawn, with its logprob.
func (g *gen) take(id int32, lp *TokenLogprob) (Token, bool) {
	if g.ends(id) {
		g.st.FinishReason = FinishStop
		g.end = lp
		return Token{}, false
	}
	g.smp.Accept(id)
	if g.json != nil {
		g.json.Accept(id)
	}
	g.st.Generated++
	g.st.CompletionToken = append(g.st.CompletionToken, id)
	return Token{ID: id, Text: g.dec.Add(id), Logprob: lp}, true
}

// scorePrompt takes the logits rows (vocab values each) of the positions
// from pos on, and keeps the logprob of each prompt token that follows one
// of them (a row past the prompt, or scored before a preemption's
// recompute, is skipped).
func (g *gen) scorePrompt(pos int, rows []float32, vocab int) {
	for r := 0; (r+1)*vocab <= len(rows); r++ {
		next := pos + r + 1
		if next >= len(g.req.Prompt) || next != len(g.promptLP)+1 {
			continue
		}
		g.promptLP = append(g.promptLP, *Logprobs(rows[r*vocab:(r+1)*vocab], g.req.Prompt[next], g.req.TopLogprobs))
	}
}

// closed reports whether the token just taken closed a JSON answer's
// object: the answer ends there ("stop"), with no step more.
func (g *gen) closed() bool {
	if g.json == nil || !g.json.Done() {
		return false
	}
	g.st.FinishReason = FinishStop
	return true
}

// flush returns the text the decoder still holds.
func (g *gen) flush() string { return g.dec.Flush() }

// Logprobs returns the log-probability of id under logits (log-softmax) and
// the top likeliest tokens, likeliest first (ties to the lower id). top is
// clamped to [0, MaxTopLogprobs].
func Logprobs(logits []float32, id int32, top int) *TokenLogprob {
	top = min(max(top, 0), MaxTopLogprobs, len(logits))
	lse := sample.LogSumExp(logits)
	lp := &TokenLogprob{ID: id, Logprob: float32(float64(logits[id]) - lse)}
	if top == 0 {
		return lp
	}
	// Keep the best top in a small sorted slice: one pass over the vocabulary.
	best := make([]Alternative, 0, top)
	for i, l := range logits {
		if len(best) == top && l <= best[top-1].Logprob {
			continue
		}
		j := len(best)
		if j < top {
			best = append(best, Alternative{})
		} else {
			j = top - 1
		}
		for ; j > 0 && best[j-1].Logprob < l; j-- {
			best[j] = best[j-1]
		}
		best[j] = Alternative{ID: int32(i), Logprob: l}
	}
	for i := range best {
		best[i].Logprob = float32(float64(best[i].Logprob) - lse)
	}
	lp.Top = best
	return lp
}
