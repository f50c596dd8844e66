package eval

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
)

// Options control how a text is evaluated.
type Options struct {
	// Ctx is the length of one chunk in tokens, BOS included (default 512,
	// llama.cpp's default). Only the second half of each chunk is scored.
	Ctx int
	// Chunks bounds the chunks evaluated (0: every whole chunk of the text).
	Chunks int
	// Skip leaves out the first Skip chunks of the text, so that text used
	// for calibration is not also used to judge the result.
	Skip int
	// Parallel is the number of chunks run in one forward step, each as its
	// own sequence (default: enough for about 512 tokens, at most 8).
	Parallel int

	// Backend runs the model; nil means backends.Auto(Prefer).
	Backend backends.Backend
	// Prefer names the backends Auto tries, in order ("auto" or empty: all
	// registered, fastest first).
	Prefer  []string
	Threads int             // CPU threads (0: the backend's default)
	KV      backends.KVType // the KV cache's values
	// BaseKV, if set, is the baseline's KV cache values in a comparison
	// (default KV): Compare then measures what a KV type costs, one model
	// against itself.
	BaseKV *backends.KVType
	Logger *slog.Logger

	// Progress, if set, is called after each forward step with the units
	// done (chunks or tasks) and their total.
	Progress func(done, total int)
}

func (o Options) withDefaults() Options {
	if o.Ctx <= 0 {
		o.Ctx = 512
	}
	if o.Parallel <= 0 {
		o.Parallel = min(8, max(1, 512/o.Ctx))
	}
	// More sequences at once than 64 of a full context's positions buy
	// nothing and cost their KV cache each.
	o.Parallel = min(o.Parallel, 64)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// backend resolves the backend to run on.
func (o Options) backend() (backends.Backend, error) {
	if o.Backend != nil {
		return o.Backend, nil
	}
	return backends.Auto(o.Prefer, o.Logger)
}

// loadRunner loads m for seqs sequences of at most maxLen positions each,
// with a KV cache of kv values.
func (o Options) loadRunner(b backends.Backend, m *model.Model, maxLen, seqs int, kv backends.KVType) (backends.Runner, error) {
	const block = 16
	per := (maxLen + block - 1) / block
	r, err := b.Load(m, backends.LoadOptions{
		BlockSize: block, KVBlocks: per * seqs, MaxContext: maxLen,
		Threads: o.Threads, KV: kv, Logger: o.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("eval: load %s on %s: %w", modelName(m), b.Name(), err)
	}
	return r, nil
}

func modelName(m *model.Model) string {
	if m.Path != "" {
		return m.Path
	}
	return m.Config.Name
}

// multi runs several whole sequences, each from position 0, in one forward
// step: sequence i uses the blocks [i*per, (i+1)*per).
type multi struct {
	r      backends.Runner
	per    int // blocks per sequence
	tables [][]int32
}

func newMulti(r backends.Runner, maxLen, seqs int) *multi {
	per := (maxLen + r.BlockSize() - 1) / r.BlockSize()
	mu := &multi{r: r, per: per, tables: make([][]int32, seqs)}
	for i := range mu.tables {
		t := make([]int32, per)
		for j := range t {
			t[j] = int32(i*per + j)
		}
		mu.tables[i] = t
	}
	return mu
}

// forward runs the sequences (at most len(tables)) and returns, for each,
// the logits of every position.
func (mu *multi) forward(ctx context.Context, seqs [][]int32) (*backends.Logits, error) {
	if len(seqs) > len(mu.tables) {
		return nil, fmt.Errorf("eval: %d sequences in one step, room for %d", len(seqs), len(mu.tables))
	}
	b := &backends.Batch{Runs: make([]backends.Run, len(seqs))}
	for i, s := range seqs {
		b.Runs[i] = backends.Run{Tokens: s, Pos: 0, Blocks: mu.tables[i], Logits: backends.LogitsAll}
	}
	return mu.r.Forward(ctx, b)
}
