// Package backends defines how octet runs a model's forward pass: the
// Backend and Runner interfaces, the batch a runner executes, a registry of
// backends, and automatic selection.
//
// A Backend loads a model into a Runner. A Runner owns the memory of a paged
// KV cache: KVBlocks() blocks of BlockSize() positions each. Its caller (the
// scheduler, or a Sequence for single-sequence work) owns the block tables:
// which blocks hold which sequence's positions. One Forward call runs a batch
// of token runs from several sequences at different positions; each run
// writes the keys and values of its tokens into its blocks and attends over
// every earlier position of its own sequence.
//
// Every backend computes the same function as ref, the plain-Go reference:
// tests compare their logits with ref's on random inputs and on real models.
package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"

	"github.com/octet-dev/octet/model"
)

// Backend loads models for one kind of hardware.
type Backend interface {
	// Name identifies the backend and its device: "ref", "cpu-avx2",
	// "cuda:0 NVIDIA H100 80GB HBM3".
	Name() string
	Load(m *model.Model, o LoadOptions) (Runner, error)
}

// Runner runs forward steps of one loaded model.
type Runner interface {
	// Forward runs one step over a batch and returns the logits the batch
	// asks for (in b.Reuse's memory, when set and large enough). Forward
	// calls on one Runner must not overlap.
	Forward(ctx context.Context, b *Batch) (*Logits, error)
	KVBlocks() int  // blocks of KV cache this runner holds
	BlockSize() int // positions per block
	Close() error
}

// LoadOptions size a runner.
type LoadOptions struct {
	// BlockSize is the number of positions per KV block (default 16).
	BlockSize int
	// KVBlocks is the number of KV blocks to allocate. 0 means enough for
	// one sequence of MaxContext positions.
	KVBlocks int
	// MaxContext is the longest sequence the caller will run (default: the
	// model's trained context length).
	MaxContext int
	// Threads bounds the CPU threads a backend uses (default: GOMAXPROCS).
	Threads int
	// KV is the type of the KV cache's values (default KVF32).
	KV     KVType
	Logger *slog.Logger
}

// KVType is the type of a KV cache's values.
type KVType int

const (
	// KVF32: 4 bytes per value.
	KVF32 KVType = iota
	// KVF16: 2 bytes per value (IEEE half, rounded to nearest even): twice
	// the positions in the same memory, and half the bytes attention reads,
	// for a relative error of at most 2^-11 per cached value (as llama.cpp's
	// default cache).
	KVF16
	// KVQ8: one byte per value, each (position, KV head) row of head_dim
	// values an int8 multiple of one float32 scale (Q8Round): close to a
	// quarter of f32's memory. Attention reads the keys as they are stored
	// and multiplies them by the query rounded the same way, in integers.
	KVQ8
)

// ParseKVType parses "f32", "f16" or "q8".
func ParseKVType(s string) (KVType, error) {
	switch s {
	case "f32":
		return KVF32, nil
	case "f16":
		return KVF16, nil
	case "q8":
		return KVQ8, nil
	}
	return 0, fmt.Errorf("KV cache type %q: want f32, f16 or q8", s)
}

func (t KVType) String() string {
	switch t {
	case KVF16:
		return "f16"
	case KVQ8:
		return "q8"
	}
	return "f32"
}

// MarshalText writes t as String does, so that JSON logs and documents
// say "f16", not 1.
func (t KVType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Bytes is the size of one value (a q8 cache also holds a float32 scale
// per row of head_dim values: KVBytesPerPosition counts it).
func (t KVType) Bytes() int {
	switch t {
	case KVF16:
		return 2
	case KVQ8:
		return 1
	}
	return 4
}

// Q8RowMin is the smallest max|x| of a row Q8Round scales; smaller rows
// (and rows with a NaN or an infinity) become zeros.
const Q8RowMin = 1e-30

// Q8MaxHeadDim is the widest head a q8 KV cache takes, so that the cpu
// kernels' f32 sums of integer products stay exact (OC_KV8_MAX_HD in the
// cpu library, which refuses wider heads too).
const Q8MaxHeadDim = 512

// CheckQ8Heads says whether a q8 KV cache takes heads of headDim values:
// a multiple of 4 (the key layout's groups) and at most Q8MaxHeadDim.
func CheckQ8Heads(headDim int) error {
	if headDim%4 != 0 || headDim > Q8MaxHeadDim {
		return fmt.Errorf("a q8 KV cache needs heads of a multiple of 4 values, at most %d (this model's are %d)",
			Q8MaxHeadDim, headDim)
	}
	return nil
}

// Q8Round rounds x in place to the values a q8 KV cache holds for it, one
// row of head_dim values: q·d, with d = max|x|/127 and q = x·(127/max|x|)
// rounded to the nearest integer, ties to even (each product in float32).
// A row whose max|x| is below Q8RowMin (0, or so small that 127/max|x|
// overflows), infinite or NaN becomes zeros with d = 0. It returns d.
// Every backend's q8 cache rounds the same way, so their caches hold the
// same values.
func Q8Round(x []float32) float32 {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v)))) // NaN if any is
	}
	if !(amax >= Q8RowMin && amax <= math.MaxFloat32) {
		clear(x)
		return 0
	}
	id, d := 127/amax, amax/127
	for i, v := range x {
		x[i] = float32(math.RoundToEven(float64(v*id))) * d
	}
	return d
}

// KVHolder is implemented by a backend that says which KV cache types its
// runners hold in their own type (those it does not may be refused at load,
// or kept in a wider type).
type KVHolder interface {
	HoldsKV(KVType) bool
}

// KVPreferrer is implemented by a backend that names the KV type it serves
// best itself, rather than f16 wherever it holds f16 values.
type KVPreferrer interface {
	PreferredKV() KVType
}

// PreferredKV is the KV type a backend serves best: the one it names (a
// KVPreferrer), else f16 (half the memory and half the bytes attention
// reads) where it holds f16 values, else f32. It is what kv_type = "auto"
// picks.
func PreferredKV(b Backend) KVType {
	if p, ok := b.(KVPreferrer); ok {
		return p.PreferredKV()
	}
	if h, ok := b.(KVHolder); ok && h.HoldsKV(KVF16) {
		return KVF16
	}
	return KVF32
}

// ResolveKVType parses "f32", "f16" or "q8", and resolves "auto" to b's
// PreferredKV.
func ResolveKVType(s string, b Backend) (KVType, error) {
	if s == "auto" {
		return PreferredKV(b), nil
	}
	return ParseKVType(s)
}

// KVBytesPerPosition is the KV cache's size for one position of one
// sequence, keys and values of every layer.
func KVBytesPerPosition(m *model.Model, t KVType) int64 {
	var n int64
	for _, l := range m.Layers {
		n += 2 * int64(l.KVHeads*m.Config.HeadDim*t.Bytes())
		if t == KVQ8 {
			n += 2 * int64(l.KVHeads) * 4 // a scale per KV head
		}
	}
	return n
}

// WithDefaults fills zero fields from the model.
func (o LoadOptions) WithDefaults(m *model.Model) LoadOptions {
	if o.BlockSize <= 0 {
		o.BlockSize = 16
	}
	if o.MaxContext <= 0 {
		o.MaxContext = m.Config.ContextLength
	}
	if o.KVBlocks <= 0 {
		o.KVBlocks = (o.MaxContext + o.BlockSize - 1) / o.BlockSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// LogitsMode says which positions of a run need logits.
type LogitsMode uint8

const (
	LogitsLast LogitsMode = iota // only the run's last token (decode, end of a prompt)
	LogitsAll                    // every token (evaluation)
	LogitsNone                   // none (a prefill chunk that is not the prompt's end)
)

// Run is a stretch of consecutive tokens of one sequence.
type Run struct {
	Tokens []int32
	// Pos is the position of Tokens[0]; positions 0…Pos-1 of this sequence
	// must already be in its KV blocks.
	Pos int
	// Blocks is the sequence's block table: Blocks[i] holds positions
	// i*BlockSize … (i+1)*BlockSize-1. It must cover Pos+len(Tokens).
	Blocks []int32
	Logits LogitsMode
}

// Batch is the work of one forward step. Its runs belong to different
// sequences: no run may reference a KV block another run of the batch
// writes (backends compute a step's runs in parallel).
type Batch struct {
	Runs []Run
	// Reuse, when set, is the Logits of an earlier step that the caller is
	// done with (a decode step of 8 sequences over a 49k vocabulary
	// returns 1.5 MB): Forward may overwrite it, even when it fails, and
	// return it as this step's.
	Reuse *Logits
}

// Tokens counts the tokens of the batch.
func (b *Batch) Tokens() int {
	n := 0
	for i := range b.Runs {
		n += len(b.Runs[i].Tokens)
	}
	return n
}

// Logits holds the rows a batch asked for, in batch order.
type Logits struct {
	Vocab int
	Data  []float32
	// Offsets[r] is the first row of run r; run r has rows
	// Offsets[r] … Offsets[r+1]-1 (Offsets has one entry per run, plus one).
	Offsets []int
}

// Row returns row i.
func (l *Logits) Row(i int) []float32 { return l.Data[i*l.Vocab : (i+1)*l.Vocab] }

// Run returns the rows of run r, one per requested position.
func (l *Logits) Run(r int) []float32 {
	return l.Data[l.Offsets[r]*l.Vocab : l.Offsets[r+1]*l.Vocab]
}

// Last returns the last row of run r (the next-token logits).
func (l *Logits) Last(r int) []float32 { return l.Row(l.Offsets[r+1] - 1) }

// NewLogits returns the output for b: in b.Reuse's memory when it is
// large enough, else newly allocated. Its values are for the backend to
// write, every one of them.
func NewLogits(b *Batch, vocab int) *Logits {
	l := b.Reuse
	if l == nil {
		l = &Logits{}
	}
	l.Vocab = vocab
	l.Offsets = slices.Grow(l.Offsets[:0], len(b.Runs)+1)[:len(b.Runs)+1]
	n := 0
	for i, r := range b.Runs {
		l.Offsets[i] = n
		switch r.Logits {
		case LogitsLast:
			n++
		case LogitsAll:
			n += len(r.Tokens)
		}
	}
	l.Offsets[len(b.Runs)] = n
	if cap(l.Data) >= n*vocab {
		l.Data = l.Data[:n*vocab]
	} else {
		l.Data = make([]float32, n*vocab)
	}
	return l
}

// ErrBadBatch wraps every batch that fails Validate.
var ErrBadBatch = errors.New("bad batch")

// Validate checks a batch against a runner's geometry and vocabulary, so
// that kernels can trust every index.
func (b *Batch) Validate(vocab, blockSize, kvBlocks int) error {
	if len(b.Runs) == 0 {
		return fmt.Errorf("backends: %w: no runs", ErrBadBatch)
	}
	for i, r := range b.Runs {
		if len(r.Tokens) == 0 {
			return fmt.Errorf("backends: %w: run %d has no tokens", ErrBadBatch, i)
		}
		if r.Logits > LogitsNone {
			return fmt.Errorf("backends: %w: run %d: logits mode %d", ErrBadBatch, i, r.Logits)
		}
		end := r.Pos + len(r.Tokens)
		if r.Pos < 0 || end > len(r.Blocks)*blockSize {
			return fmt.Errorf("backends: %w: run %d: positions %d…%d outside its %d blocks of %d", ErrBadBatch, i, r.Pos, end-1, len(r.Blocks), blockSize)
		}
		for _, blk := range r.Blocks[:(end+blockSize-1)/blockSize] {
			if blk < 0 || int(blk) >= kvBlocks {
				return fmt.Errorf("backends: %w: run %d: block %d outside the cache of %d", ErrBadBatch, i, blk, kvBlocks)
			}
		}
		for _, t := range r.Tokens {
			if t < 0 || int(t) >= vocab {
				return fmt.Errorf("backends: %w: run %d: token %d outside the vocabulary of %d", ErrBadBatch, i, t, vocab)
			}
		}
	}
	if len(b.Runs) == 1 {
		return nil
	}
	// A run's blocks include the ones it writes, so this also catches two
	// runs writing one block.
	writer := make(map[int32]int, len(b.Runs)) // block → the run that writes it
	for i, r := range b.Runs {
		for _, blk := range r.Blocks[r.Pos/blockSize : (r.Pos+len(r.Tokens)+blockSize-1)/blockSize] {
			writer[blk] = i
		}
	}
	for i, r := range b.Runs {
		for _, blk := range r.Blocks[:(r.Pos+len(r.Tokens)+blockSize-1)/blockSize] {
			if w, ok := writer[blk]; ok && w != i {
				return fmt.Errorf("backends: %w: run %d reads block %d, which run %d writes", ErrBadBatch, i, blk, w)
			}
		}
	}
	return nil
}
