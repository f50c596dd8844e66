// Package ref is octet's reference backend: the forward pass of a
// llama-family model in plain Go and float32 arithmetic, with weights
// decoded on the fly from their stored type (Q8_0, F16, BF16, F32).
//
// It is written to be obviously right rather than fast: every step is the
// textbook loop, in the order of the model's definition. It is the oracle
// that the native CPU and CUDA backends are tested against, and it runs
// anywhere Go does. The only concession to speed is that matrix products
// share weight rows out among goroutines.
//
// The KV cache is paged: per layer, KVBlocks blocks of BlockSize positions
// of keys and of values, in float32. A batch may hold several sequences at
// different positions; every token's keys and values are written to its
// sequence's blocks before any token attends, so tokens of one run see the
// earlier tokens of the same run.
package ref

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

func init() {
	backends.Register("ref", 10, func() (backends.Backend, error) { return Backend{}, nil })
}

// Backend is the reference backend.
type Backend struct{}

// Name implements backends.Backend.
func (Backend) Name() string { return "ref" }

// HoldsKV reports that ref's caches hold f32 values (an f16 or q8 cache's
// values are rounded to f16 or q8 and kept as f32).
func (Backend) HoldsKV(t backends.KVType) bool { return t == backends.KVF32 }

// Load implements backends.Backend.
func (Backend) Load(m *model.Model, o backends.LoadOptions) (backends.Runner, error) {
	o = o.WithDefaults(m)
	if o.Threads <= 0 {
		o.Threads = runtime.GOMAXPROCS(0)
	}
	if o.KV == backends.KVQ8 {
		if err := backends.CheckQ8Heads(m.Config.HeadDim); err != nil {
			return nil, fmt.Errorf("ref: %w", err)
		}
	}
	if o.KV != backends.KVF32 {
		o.Logger.Warn("ref backend: the KV cache's "+o.KV.String()+" values are kept as f32, in more memory than the type takes",
			"kv_bytes", backends.KVBytesPerPosition(m, backends.KVF32)*int64(o.KVBlocks)*int64(o.BlockSize))
	}
	c := &m.Config
	r := &runner{m: m, o: o, k: make([][]float32, c.Layers), v: make([][]float32, c.Layers)}
	slots := int64(o.KVBlocks) * int64(o.BlockSize)
	for l, layer := range m.Layers {
		n := slots * int64(layer.KVHeads*c.HeadDim)
		if n > math.MaxInt32*8 {
			return nil, fmt.Errorf("ref: KV cache of %d blocks is too large", o.KVBlocks)
		}
		r.k[l] = make([]float32, n)
		r.v[l] = make([]float32, n)
	}
	r.attnNorm = make([][]float32, c.Layers)
	r.ffnNorm = make([][]float32, c.Layers)
	for l, layer := range m.Layers {
		r.attnNorm[l] = layer.AttnNorm.Float32s()
		r.ffnNorm[l] = layer.FFNNorm.Float32s()
	}
	r.outNorm = m.OutputNorm.Float32s()
	return r, nil
}

type runner struct {
	m    *model.Model
	o    backends.LoadOptions
	k, v [][]float32 // per layer: KVBlocks*BlockSize rows of KVHeads*HeadDim

	attnNorm, ffnNorm [][]float32
	outNorm           []float32

	mu sync.Mutex // Forward calls must not overlap; this makes misuse safe
}

func (r *runner) KVBlocks() int  { return r.o.KVBlocks }
func (r *runner) BlockSize() int { return r.o.BlockSize }
func (r *runner) Close() error   { r.k, r.v = nil, nil; return nil }

// row is one token of the batch.
type row struct {
	tok   int32
	pos   int
	run   int
	slots []int // cache rows of positions 0…pos of its sequence
}

// Forward implements backends.Runner.
func (r *runner) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	c := &r.m.Config
	if err := b.Validate(c.VocabSize, r.o.BlockSize, r.o.KVBlocks); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.k == nil {
		return nil, fmt.Errorf("ref: runner is closed")
	}
	rows := r.rows(b)
	n, dim, th := len(rows), c.Dim, r.o.Threads

	x := make([]float32, n*dim)
	for i, rw := range rows {
		r.m.TokEmbd.DequantizeRow(int(rw.tok), x[i*dim:(i+1)*dim])
	}
	xn := make([]float32, n*dim)
	for l := range r.m.Layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.attention(l, rows, x, xn)
		r.feedForward(l, n, x, xn)
	}

	logits := backends.NewLogits(b, c.VocabSize)
	var out []float32
	for i, rw := range rows {
		mode := b.Runs[rw.run].Logits
		last := i == n-1 || rows[i+1].run != rw.run
		if mode == backends.LogitsAll || (mode == backends.LogitsLast && last) {
			h := make([]float32, dim)
			RMSNorm(h, x[i*dim:(i+1)*dim], r.outNorm, c.NormEps)
			out = append(out, h...)
		}
	}
	MatMul(logits.Data, r.m.Output, out, len(out)/dim, th)
	return logits, nil
}

// rows flattens the batch into tokens with their positions and cache slots.
func (r *runner) rows(b *backends.Batch) []row {
	bs := r.o.BlockSize
	var rows []row
	for ri, run := range b.Runs {
		end := run.Pos + len(run.Tokens)
		slots := make([]int, end)
		for p := range slots {
			slots[p] = int(run.Blocks[p/bs])*bs + p%bs
		}
		for j, t := range run.Tokens {
			p := run.Pos + j
			rows = append(rows, row{tok: t, pos: p, run: ri, slots: slots[:p+1]})
		}
	}
	return rows
}

// attention adds the attention block of layer l to x (n rows).
func (r *runner) attention(l int, rows []row, x, xn []float32) {
	c := &r.m.Config
	layer := &r.m.Layers[l]
	n, dim, hd, th := len(rows), c.Dim, c.HeadDim, r.o.Threads
	qw, kvw := layer.Heads*hd, layer.KVHeads*hd
	for i := 0; i < n; i++ {
		RMSNorm(xn[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], r.attnNorm[l], c.NormEps)
	}
	q := make([]float32, n*qw)
	k := make([]float32, n*kvw)
	v := make([]float32, n*kvw)
	MatMul(q, layer.Wq, xn, n, th)
	MatMul(k, layer.Wk, xn, n, th)
	MatMul(v, layer.Wv, xn, n, th)
	AddBias(q, layer.Bq, n)
	AddBias(k, layer.Bk, n)
	AddBias(v, layer.Bv, n)
	for i, rw := range rows {
		Rope(q[i*qw:(i+1)*qw], layer.Heads, hd, rw.pos, c.Rope, r.m.RopeFreqs)
		Rope(k[i*kvw:(i+1)*kvw], layer.KVHeads, hd, rw.pos, c.Rope, r.m.RopeFreqs)
		s := rw.slots[rw.pos]
		r.store(r.k[l][s*kvw:(s+1)*kvw], k[i*kvw:(i+1)*kvw], hd)
		r.store(r.v[l][s*kvw:(s+1)*kvw], v[i*kvw:(i+1)*kvw], hd)
		if r.o.KV == backends.KVQ8 {
			// A q8 cache's keys meet the query rounded as they are.
			for h := 0; h < layer.Heads; h++ {
				backends.Q8Round(q[i*qw+h*hd : i*qw+(h+1)*hd])
			}
		}
	}
	att := make([]float32, n*qw)
	ParallelFor(n, th, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			Attention(att[i*qw:(i+1)*qw], q[i*qw:(i+1)*qw], r.k[l], r.v[l], rows[i].slots, layer.Heads, layer.KVHeads, hd)
		}
	})
	o := make([]float32, n*dim)
	MatMul(o, layer.Wo, att, n, th)
	for i := range x {
		x[i] += o[i]
	}
}

// feedForward adds the SiLU-gated feed-forward block of layer l to x.
func (r *runner) feedForward(l, n int, x, xn []float32) {
	c := &r.m.Config
	layer := &r.m.Layers[l]
	dim, ffn, th := c.Dim, layer.FFN, r.o.Threads
	for i := 0; i < n; i++ {
		RMSNorm(xn[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], r.ffnNorm[l], c.NormEps)
	}
	gate := make([]float32, n*ffn)
	up := make([]float32, n*ffn)
	MatMul(gate, layer.Gate, xn, n, th)
	MatMul(up, layer.Up, xn, n, th)
	SiLUGate(gate, gate, up)
	down := make([]float32, n*dim)
	MatMul(down, layer.Down, gate, n, th)
	for i := range x {
		x[i] += down[i]
	}
}

// AddBias adds bias b (nil: none) to each of the n rows of x.
func AddBias(x []float32, b *model.Tensor, n int) {
	if b == nil {
		return
	}
	bias := b.Float32s()
	w := len(bias)
	for t := 0; t < n; t++ {
		for i, v := range bias {
			x[t*w+i] += v
		}
	}
}

var _ backends.Runner = (*runner)(nil)
var (
	_ backends.Backend  = Backend{}
	_ backends.KVHolder = Backend{}
)

// store copies src into the KV cache at dst: as they are, rounded to the
// nearest f16 values when the cache is f16, or to q8 values (rows of hd)
// when it is q8. ref keeps them as f32, so its own memory does not shrink;
// its results are those of a cache of f16 or q8 values, the twin of the
// fast backends'.
func (r *runner) store(dst, src []float32, hd int) {
	switch r.o.KV {
	case backends.KVF16:
		for i, x := range src {
			dst[i] = gguf.F16ToF32(gguf.F32ToF16(x))
		}
	case backends.KVQ8:
		copy(dst, src)
		for h := 0; h < len(dst); h += hd {
			backends.Q8Round(dst[h : h+hd])
		}
	default:
		copy(dst, src)
	}
}
