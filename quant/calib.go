package quant

import (
	"context"
	"fmt"
	"math"
	"runtime"

	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
)

// Stats are activation statistics gathered by running a model over
// calibration text: for every matrix, per input column, the sum of squares
// and the largest magnitude of the activations it multiplies.
type Stats struct {
	Tokens int
	// In maps a matrix's tensor name to the statistics of its input. The
	// matrices that read the same activations (attn_q, attn_k, attn_v;
	// ffn_gate, ffn_up) share one entry.
	In map[string]*ColumnStats
	// HeadOut[l][h] is Σ over tokens of ‖Wo_h · o_h‖², the squared norm of
	// what query head h of layer l adds to the residual stream.
	HeadOut [][]float64
}

// ColumnStats describe one activation matrix, column by column.
type ColumnStats struct {
	SumSq  []float64 // Σ x_j² over tokens
	MaxAbs []float32 // max |x_j|
	// Gram is Σ x xᵀ over tokens (n×n, row-major), recorded only where
	// CalibOptions.Gram asks: structured pruning refits the matrix that
	// reads these activations from it.
	Gram []float64
}

// Norm is ‖X_j‖₂ of each column, Wanda's activation norm.
func (c *ColumnStats) Norm() []float64 {
	out := make([]float64, len(c.SumSq))
	for j, s := range c.SumSq {
		out[j] = math.Sqrt(s)
	}
	return out
}

// newColumnStats makes the statistics of n columns, with their Gram
// matrix when n ≤ gram.
func newColumnStats(n, gram int) *ColumnStats {
	c := &ColumnStats{SumSq: make([]float64, n), MaxAbs: make([]float32, n)}
	if n <= gram {
		c.Gram = make([]float64, n*n)
	}
	return c
}

func (c *ColumnStats) add(x []float32, rows int) {
	n := len(c.SumSq)
	for r := 0; r < rows; r++ {
		for j, v := range x[r*n : (r+1)*n] {
			c.SumSq[j] += float64(v) * float64(v)
			c.MaxAbs[j] = max(c.MaxAbs[j], float32(math.Abs(float64(v))))
		}
		if c.Gram == nil {
			continue
		}
		x := x[r*n : (r+1)*n]
		for i, a := range x {
			if a == 0 {
				continue
			}
			g := c.Gram[i*n : (i+1)*n]
			for j, b := range x {
				g[j] += float64(a) * float64(b)
			}
		}
	}
}

// CalibOptions say how much text Calibrate runs.
type CalibOptions struct {
	Ctx     int // tokens per chunk (default 128), each chunk starting with BOS
	Chunks  int // chunks to run (0: 32; more than the text has: all of it)
	Threads int
	// Gram records the Gram matrix of the inputs of attn_output and
	// ffn_down where they are at most this wide (0: nowhere).
	Gram     int
	Progress func(done, total int)
}

// Calibrate runs m over tokens, chunk by chunk from position 0, with a
// plain forward pass built from the reference backend's operations, and
// records the inputs of every matrix.
func Calibrate(ctx context.Context, m *model.Model, tokens []int32, o CalibOptions) (*Stats, error) {
	if o.Ctx <= 0 {
		o.Ctx = 128
	}
	if o.Chunks <= 0 {
		o.Chunks = 32
	}
	if o.Threads <= 0 {
		o.Threads = runtime.GOMAXPROCS(0)
	}
	n := min(o.Chunks, len(tokens)/o.Ctx)
	if n < 1 {
		return nil, fmt.Errorf("quant: calibration text has %d tokens, less than one chunk of %d", len(tokens), o.Ctx)
	}
	c := &m.Config
	st := &Stats{In: map[string]*ColumnStats{}, HeadOut: make([][]float64, c.Layers)}
	for l, layer := range m.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		attn := newColumnStats(c.Dim, 0)
		st.In[p+"attn_q.weight"], st.In[p+"attn_k.weight"], st.In[p+"attn_v.weight"] = attn, attn, attn
		st.In[p+"attn_output.weight"] = newColumnStats(layer.Heads*c.HeadDim, o.Gram)
		ffn := newColumnStats(c.Dim, 0)
		st.In[p+"ffn_gate.weight"], st.In[p+"ffn_up.weight"] = ffn, ffn
		st.In[p+"ffn_down.weight"] = newColumnStats(layer.FFN, o.Gram)
		st.HeadOut[l] = make([]float64, layer.Heads)
	}
	st.In["output.weight"] = newColumnStats(c.Dim, 0)
	fw := newForward(m, o.Threads)
	fw.stats = st
	bos := int32(-1)
	if m.Tok.AddBOS() {
		bos = m.Tok.BOS()
	}
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := append([]int32(nil), tokens[i*o.Ctx:(i+1)*o.Ctx]...)
		if bos >= 0 {
			chunk[0] = bos
		}
		fw.run(chunk)
		st.Tokens += len(chunk)
		if o.Progress != nil {
			o.Progress(i+1, n)
		}
	}
	return st, nil
}

// forward is a whole-sequence forward pass (positions 0…n-1, no cache kept
// between calls) that records what stats asks for.
type forward struct {
	m       *model.Model
	threads int
	stats   *Stats
	norms   [][2][]float32
	outNorm []float32
}

func newForward(m *model.Model, threads int) *forward {
	f := &forward{m: m, threads: threads, outNorm: m.OutputNorm.Float32s()}
	for _, l := range m.Layers {
		f.norms = append(f.norms, [2][]float32{l.AttnNorm.Float32s(), l.FFNNorm.Float32s()})
	}
	return f
}

// run returns the hidden state after the output norm (n rows of Dim).
func (f *forward) run(tokens []int32) []float32 {
	m, c, th := f.m, &f.m.Config, f.threads
	n, dim, hd := len(tokens), c.Dim, c.HeadDim
	x := make([]float32, n*dim)
	for i, t := range tokens {
		m.TokEmbd.DequantizeRow(int(t), x[i*dim:(i+1)*dim])
	}
	xn := make([]float32, n*dim)
	slots := make([]int, n)
	for i := range slots {
		slots[i] = i
	}
	for l := range m.Layers {
		layer := &m.Layers[l]
		p := fmt.Sprintf("blk.%d.", l)
		qw, kvw := layer.Heads*hd, layer.KVHeads*hd
		for i := 0; i < n; i++ {
			ref.RMSNorm(xn[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], f.norms[l][0], c.NormEps)
		}
		f.record(p+"attn_q.weight", xn, n)
		q, k, v := make([]float32, n*qw), make([]float32, n*kvw), make([]float32, n*kvw)
		ref.MatMul(q, layer.Wq, xn, n, th)
		ref.MatMul(k, layer.Wk, xn, n, th)
		ref.MatMul(v, layer.Wv, xn, n, th)
		ref.AddBias(q, layer.Bq, n)
		ref.AddBias(k, layer.Bk, n)
		ref.AddBias(v, layer.Bv, n)
		for i := 0; i < n; i++ {
			ref.Rope(q[i*qw:(i+1)*qw], layer.Heads, hd, i, c.Rope, m.RopeFreqs)
			ref.Rope(k[i*kvw:(i+1)*kvw], layer.KVHeads, hd, i, c.Rope, m.RopeFreqs)
		}
		att := make([]float32, n*qw)
		ref.ParallelFor(n, th, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				ref.Attention(att[i*qw:(i+1)*qw], q[i*qw:(i+1)*qw], k, v, slots[:i+1], layer.Heads, layer.KVHeads, hd)
			}
		})
		f.record(p+"attn_output.weight", att, n)
		if f.stats != nil {
			f.headOut(l, att, n)
		}
		o := make([]float32, n*dim)
		ref.MatMul(o, layer.Wo, att, n, th)
		for i := range x {
			x[i] += o[i]
		}

		for i := 0; i < n; i++ {
			ref.RMSNorm(xn[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], f.norms[l][1], c.NormEps)
		}
		f.record(p+"ffn_gate.weight", xn, n)
		gate, up := make([]float32, n*layer.FFN), make([]float32, n*layer.FFN)
		ref.MatMul(gate, layer.Gate, xn, n, th)
		ref.MatMul(up, layer.Up, xn, n, th)
		ref.SiLUGate(gate, gate, up)
		f.record(p+"ffn_down.weight", gate, n)
		down := make([]float32, n*dim)
		ref.MatMul(down, layer.Down, gate, n, th)
		for i := range x {
			x[i] += down[i]
		}
	}
	for i := 0; i < n; i++ {
		ref.RMSNorm(xn[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], f.outNorm, c.NormEps)
	}
	f.record("output.weight", xn, n)
	return xn
}

func (f *forward) record(name string, x []float32, n int) {
	if f.stats != nil {
		f.stats.In[name].add(x, n)
	}
}

// headOut adds ‖Wo_h · o_h‖² of every head and token to the stats.
func (f *forward) headOut(l int, att []float32, n int) {
	layer := &f.m.Layers[l]
	hd, dim := f.m.Config.HeadDim, f.m.Config.Dim
	qw := layer.Heads * hd
	wo := layer.Wo.Float32s() // dim rows of qw
	sums := make([]float64, layer.Heads)
	ref.ParallelFor(layer.Heads, f.threads, func(lo, hi int) {
		y := make([]float32, dim)
		for h := lo; h < hi; h++ {
			for t := 0; t < n; t++ {
				oh := att[t*qw+h*hd : t*qw+(h+1)*hd]
				var s float64
				for r := range y {
					y[r] = ref.Dot(wo[r*qw+h*hd:r*qw+(h+1)*hd], oh)
					s += float64(y[r]) * float64(y[r])
				}
				sums[h] += s
			}
		}
	})
	for h, s := range sums {
		f.stats.HeadOut[l][h] += s
	}
}
