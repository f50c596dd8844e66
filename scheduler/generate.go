// Package scheduler decides what each forward step of a runner computes.
//
// Generate is the simplest schedule: one sequence, its prompt prefilled in
// chunks, then one token per step until a stop. `octet generate` and the
// evaluation tools use it.
package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/octet-dev/octet/backends"
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
	var st Stats
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
	smp := sample.New(req.Sample)
	for _, id := range req.Prompt {
		smp.Accept(id)
	}
	start := time.Now()
	var logits *backends.Logits
	for i := 0; i < len(req.Prompt); i += chunk {
		end := min(i+chunk, len(req.Prompt))
		mode := backends.LogitsNone
		if end == len(req.Prompt) {
			mode = backends.LogitsLast
		}
		var err error
		if logits, err = seq.Forward(ctx, req.Prompt[i:end], mode); err != nil {
			return st, err
		}
	}
	st.PromptTokens = len(req.Prompt)
	st.PromptTime = time.Since(start)

	// The first generated piece keeps its leading space unless it starts the
	// text (the prompt ends with BOS), as SentencePiece decoding does.
	var opts []tokenizer.DecoderOption
	if req.Prompt[len(req.Prompt)-1] != tok.BOS() {
		opts = append(opts, tokenizer.MidText)
	}
	dec := tok.NewDecoder(false, opts...)
	genStart := time.Now()
	st.FinishReason = FinishLength
	for st.Generated < req.MaxTokens {
		id := smp.Sample(logits.Last(0))
		if st.Generated == 0 {
			st.TimeToFirstTok = time.Since(start)
		}
		if tok.IsEOG(id) && !req.IgnoreEOS {
			st.FinishReason = FinishStop
			break
		}
		smp.Accept(id)
		st.Generated++
		st.CompletionToken = append(st.CompletionToken, id)
		if err := emit(id, dec.Add(id)); err != nil {
			return st, err
		}
		if st.Generated == req.MaxTokens || seq.Pos() >= seq.Cap() {
			break
		}
		var err error
		if logits, err = seq.Forward(ctx, []int32{id}, backends.LogitsLast); err != nil {
			return st, err
		}
	}
	st.GenerateTime = time.Since(genStart)
	if rest := dec.Flush(); rest != "" {
		if err := emit(-1, rest); err != nil {
			return st, err
		}
	}
	return st, nil
}
