package cpu

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// runner is a model loaded into a native runner: the C side holds the
// weights' addresses (in m's mapping), a KV cache and a thread pool.
type runner struct {
	lib     *library
	m       *model.Model
	o       backends.LoadOptions
	threads int
	kvBytes int64
	copied  int // bytes of weights copied out of the file mapping

	mu sync.Mutex // Forward calls must not overlap; Close waits for them
	nh *handle

	// step holds the arrays of the step in flight, reused from step to
	// step. They live in the runner (on the heap, never on a goroutine's
	// stack) because the library's threads read them during the call.
	step struct {
		tokens, pos, table, blocks, outRows []int32
		bd                                  ocBatch
	}
}

// handle owns the C runner. Its mutex orders a cancellation arriving from
// context.AfterFunc with freeing, so that oc_cancel never sees a freed
// runner; a runner dropped without Close is freed by a cleanup.
type handle struct {
	lib *library
	w   *weights // freed after the C runner that reads them
	mu  sync.Mutex
	h   uintptr // 0 once freed
}

func (h *handle) free() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h != 0 {
		h.lib.call(h.lib.fn.runnerFree, h.h)
		h.h = 0
	}
	h.w.free()
}

func (h *handle) cancel() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h != 0 {
		h.lib.call(h.lib.fn.cancel, h.h)
	}
}

func tensorDesc(t *model.Tensor, data []byte) (ocTensor, error) {
	switch t.Type {
	case gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0:
	default:
		return ocTensor{}, fmt.Errorf("cpu: tensor %s has type %s, which the kernels do not take", t.Name, t.Type)
	}
	if t.Type == gguf.Q8_0 && t.Cols%gguf.QK8_0 != 0 {
		return ocTensor{}, fmt.Errorf("cpu: tensor %s: Q8_0 rows of %d are not whole blocks", t.Name, t.Cols)
	}
	if len(data) < t.Rows*t.RowBytes() || len(data) == 0 {
		return ocTensor{}, fmt.Errorf("cpu: tensor %s: %d bytes for %d rows of %d", t.Name, len(data), t.Rows, t.RowBytes())
	}
	return ocTensor{data: unsafe.Pointer(&data[0]), typ: int64(t.Type), rows: int64(t.Rows), cols: int64(t.Cols)}, nil
}

func floats(t *model.Tensor) []float32 {
	if t == nil {
		return nil
	}
	return t.Float32s()
}

func newRunner(l *library, m *model.Model, o backends.LoadOptions) (*runner, error) {
	c := &m.Config
	threads := o.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	d := ocModel{
		abi: abiVersion, dim: int64(c.Dim), nLayers: int64(c.Layers), headDim: int64(c.HeadDim),
		vocab: int64(c.VocabSize), normEps: float64(c.NormEps),
		ropeDims: int64(c.Rope.Dims), ropeBase: float64(c.Rope.Base), ropeFreqScale: float64(c.Rope.FreqScale),
		blockSize: int64(o.BlockSize), kvBlocks: int64(o.KVBlocks), maxContext: int64(o.MaxContext), threads: int64(threads),
	}
	if c.Rope.NeoX {
		d.ropeNeox = 1
	}
	switch o.KV {
	case backends.KVF16:
		d.kvType = int64(gguf.F16)
	case backends.KVQ8:
		if err := backends.CheckQ8Heads(c.HeadDim); err != nil {
			return nil, fmt.Errorf("cpu: %w", err)
		}
		d.kvType = int64(gguf.Q8_0)
	}
	// Vectors the library copies during oc_runner_new; keep them alive.
	var keep [][]float32
	vec := func(t *model.Tensor) unsafe.Pointer {
		f := floats(t)
		keep = append(keep, f)
		return uptr(f)
	}
	w, err := loadWeights(m, threads)
	if err != nil {
		return nil, err
	}
	if w.repack {
		d.repack = 1
	}
	tensor := func(t *model.Tensor) ocTensor {
		if err != nil {
			return ocTensor{}
		}
		var td ocTensor
		td, err = tensorDesc(t, w.of(t))
		return td
	}
	d.tokEmbd = tensor(m.TokEmbd)
	d.output = tensor(m.Output)
	d.outputNorm = vec(m.OutputNorm)
	d.ropeFreqs = uptr(m.RopeFreqs)
	layers := make([]ocLayer, c.Layers)
	for i := range m.Layers {
		L := &m.Layers[i]
		layers[i] = ocLayer{
			heads: int64(L.Heads), kvHeads: int64(L.KVHeads), ffn: int64(L.FFN),
			wq: tensor(L.Wq), wk: tensor(L.Wk), wv: tensor(L.Wv), wo: tensor(L.Wo),
			gate: tensor(L.Gate), up: tensor(L.Up), down: tensor(L.Down),
			attnNorm: vec(L.AttnNorm), ffnNorm: vec(L.FFNNorm), bq: vec(L.Bq), bk: vec(L.Bk), bv: vec(L.Bv),
		}
	}
	kvBytes := backends.KVBytesPerPosition(m, o.KV) * int64(o.KVBlocks) * int64(o.BlockSize)
	if err != nil {
		w.free()
		return nil, err
	}
	d.layers = uptr(layers)
	msg := make([]byte, 256)
	h := uintptr(l.call(l.fn.runnerNew, uintptr(unsafe.Pointer(&d)), uintptr(uptr(msg)), uintptr(len(msg))))
	runtime.KeepAlive(keep)
	runtime.KeepAlive(layers)
	runtime.KeepAlive(m.RopeFreqs)
	if h == 0 {
		w.free()
		return nil, fmt.Errorf("cpu: %s", cString(msg))
	}
	r := &runner{lib: l, m: m, o: o, threads: threads, kvBytes: kvBytes, copied: len(w.mem), nh: &handle{lib: l, w: w, h: h}}
	runtime.AddCleanup(r, func(h *handle) { h.free() }, r.nh)
	return r, nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func (r *runner) KVBlocks() int  { return r.o.KVBlocks }
func (r *runner) BlockSize() int { return r.o.BlockSize }

// Close frees the runner's KV cache and threads.
func (r *runner) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nh.free()
	return nil
}

// Forward implements backends.Runner: one oc_forward call runs the whole
// step on the library's threads.
func (r *runner) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	c := &r.m.Config
	if err := b.Validate(c.VocabSize, r.o.BlockSize, r.o.KVBlocks); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.nh.h
	if h == 0 {
		return nil, ErrClosed
	}
	st := &r.step
	tokens, pos, table := st.tokens[:0], st.pos[:0], st.table[:0]
	blocks, outRows := st.blocks[:0], st.outRows[:0]
	slots := r.o.KVBlocks * r.o.BlockSize
	for ri, run := range b.Runs {
		if end := run.Pos + len(run.Tokens); end > slots {
			return nil, fmt.Errorf("backends: %w: run %d reaches position %d, past the %d positions of the cache", backends.ErrBadBatch, ri, end-1, slots)
		}
		off := int32(len(blocks))
		need := (run.Pos + len(run.Tokens) + r.o.BlockSize - 1) / r.o.BlockSize
		blocks = append(blocks, run.Blocks[:need]...)
		for j, t := range run.Tokens {
			if run.Logits == backends.LogitsAll || (run.Logits == backends.LogitsLast && j == len(run.Tokens)-1) {
				outRows = append(outRows, int32(len(tokens)))
			}
			tokens = append(tokens, t)
			pos = append(pos, int32(run.Pos+j))
			table = append(table, off)
		}
	}
	st.tokens, st.pos, st.table, st.blocks, st.outRows = tokens, pos, table, blocks, outRows
	logits := backends.NewLogits(b, c.VocabSize)
	st.bd = ocBatch{
		n: int64(len(tokens)), tokens: uptr(tokens), pos: uptr(pos), table: uptr(table), blocks: uptr(blocks),
		nOut: int64(len(outRows)), outRows: uptr(outRows), logits: uptr(logits.Data),
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, r.nh.cancel)
		defer stop()
	}
	rc := r.lib.call(r.lib.fn.forward, h, uintptr(unsafe.Pointer(&st.bd)))
	st.bd = ocBatch{}
	runtime.KeepAlive(logits.Data)
	switch rc {
	case 0:
		return logits, nil
	case errCancelled:
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, context.Canceled
	case errNoMem:
		return nil, fmt.Errorf("cpu: out of memory for a step of %d tokens", len(st.tokens))
	default:
		return nil, fmt.Errorf("cpu: forward step failed (status %d)", rc)
	}
}

// Status codes of native/octet.h.
const (
	errArg       = -1
	errNoMem     = -2
	errCancelled = -3
)

var _ backends.Runner = (*runner)(nil)
