package ref

import (
	"math"
	"sync"

	"github.com/octet-dev/octet/model"
)

// The operations of the forward pass, each written as the plain loop it is.
// They are exported because they are the twins that every native and CUDA
// kernel is tested against.

// RMSNorm sets dst = x / sqrt(mean(x²) + eps) * w, for one row.
func RMSNorm(dst, x, w []float32, eps float32) {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	scale := float32(1 / math.Sqrt(ss/float64(len(x))+float64(eps)))
	for i, v := range x {
		dst[i] = v * scale * w[i]
	}
}

// MatMul sets dst (n rows of w.Rows) to x (n rows of w.Cols) times wᵀ: every
// output element is the dot product of an activation row and a weight row.
// Weight rows are decoded to float32 once and used for all n activation rows;
// rows of w are shared out among threads goroutines.
func MatMul(dst []float32, w *model.Tensor, x []float32, n, threads int) {
	rows, cols := w.Rows, w.Cols
	ParallelFor(rows, threads, func(lo, hi int) {
		row := make([]float32, cols)
		for r := lo; r < hi; r++ {
			w.DequantizeRow(r, row)
			for t := 0; t < n; t++ {
				dst[t*rows+r] = Dot(row, x[t*cols:(t+1)*cols])
			}
		}
	})
}

// Dot is the float32 dot product of two equal-length vectors, summed in
// order in float32, as a scalar loop would.
func Dot(a, b []float32) float32 {
	var s float32
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

// RopeAngle is the angle by which RoPE turns pair i at position pos.
func RopeAngle(rc model.RopeConfig, freqs []float32, pos, i int) float64 {
	theta := float64(pos) * float64(rc.FreqScale) * math.Pow(float64(rc.Base), -2*float64(i)/float64(rc.Dims))
	if freqs != nil {
		theta /= float64(freqs[i])
	}
	return theta
}

// Rope rotates the first rc.Dims dimensions of each of heads heads of width
// headDim in x, for position pos. freqs, if not nil, holds llama3 per-pair
// frequency divisors.
func Rope(x []float32, heads, headDim, pos int, rc model.RopeConfig, freqs []float32) {
	half := rc.Dims / 2
	for i := 0; i < half; i++ {
		sin, cos := math.Sincos(RopeAngle(rc, freqs, pos, i))
		c, s := float32(cos), float32(sin)
		for h := 0; h < heads; h++ {
			v := x[h*headDim : (h+1)*headDim]
			a, b := 2*i, 2*i+1
			if rc.NeoX {
				a, b = i, i+half
			}
			x0, x1 := v[a], v[b]
			v[a] = x0*c - x1*s
			v[b] = x0*s + x1*c
		}
	}
}

// Softmax replaces x by exp(x - max) / sum.
func Softmax(x []float32) {
	m := x[0]
	for _, v := range x {
		m = max(m, v)
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v - m))
		x[i] = float32(e)
		sum += e
	}
	for i := range x {
		x[i] = float32(float64(x[i]) / sum)
	}
}

// SiLUGate sets dst[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g).
func SiLUGate(dst, gate, up []float32) {
	for i, g := range gate {
		dst[i] = g / (1 + float32(math.Exp(float64(-g)))) * up[i]
	}
}

// Attention computes causal attention for one query row q (heads × headDim)
// over the cached keys and values at slots (one cache row per earlier
// position, the query's own included, in position order). kCache and
// vCache rows are kvHeads × headDim wide; query head h reads KV head
// h / (heads/kvHeads). out receives heads × headDim values.
func Attention(out, q, kCache, vCache []float32, slots []int, heads, kvHeads, headDim int) {
	group := heads / kvHeads
	kvw := kvHeads * headDim
	scale := float32(1 / math.Sqrt(float64(headDim)))
	scores := make([]float32, len(slots))
	for h := 0; h < heads; h++ {
		qh := q[h*headDim : (h+1)*headDim]
		off := (h / group) * headDim
		for i, s := range slots {
			scores[i] = Dot(qh, kCache[s*kvw+off:s*kvw+off+headDim]) * scale
		}
		Softmax(scores)
		oh := out[h*headDim : (h+1)*headDim]
		clear(oh)
		for i, s := range slots {
			v := vCache[s*kvw+off : s*kvw+off+headDim]
			for d := range oh {
				oh[d] += scores[i] * v[d]
			}
		}
	}
}

// ParallelFor splits [0, n) into at most threads contiguous ranges and runs
// f on each in its own goroutine, returning when all are done.
func ParallelFor(n, threads int, f func(lo, hi int)) {
	if threads <= 1 || n < 2 {
		f(0, n)
		return
	}
	threads = min(threads, n)
	var wg sync.WaitGroup
	for t := 0; t < threads; t++ {
		lo, hi := n*t/threads, n*(t+1)/threads
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	wg.Wait()
}
