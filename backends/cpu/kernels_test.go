package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// Every kernel is compared with its twin in backends/ref on random inputs of
// awkward sizes, for every library variant this machine can execute, with
// guard bands around each output to catch writes past its end.

// eachVariant runs f for every variant this CPU can execute whose library
// loads; it skips, saying why, when none does (a clean clone without
// `make native`).
func eachVariant(t *testing.T, f func(t *testing.T, b *Backend)) {
	t.Helper()
	ran := 0
	var why []string
	for _, v := range Variants() {
		b, err := Open(v)
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		ran++
		t.Run(v, func(t *testing.T) { f(t, b) })
	}
	if ran == 0 {
		skipOrFail(t, "no kernel library loads (run make native): %v", why)
	}
}

// EnvRequired, set by make's test targets (native.mk), turns the skips of
// a build without kernel libraries into failures.
const EnvRequired = "OCTET_NATIVE_REQUIRED"

func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(EnvRequired) != "" {
		t.Fatalf(format+" ($"+EnvRequired+" is set)", args...)
	}
	t.Skipf(format, args...)
}

func eachKernels(t *testing.T, threads int, f func(t *testing.T, k *kernels)) {
	eachVariant(t, func(t *testing.T, b *Backend) {
		k, err := newKernels(b.lib, threads, 8192, 4096, 16)
		if err != nil {
			t.Fatal(err)
		}
		defer k.close()
		f(t, k)
	})
}

// guarded is a slice with guard bands of a bit pattern no kernel writes.
type guarded struct {
	buf  []float32
	n    int
	pre  int
	mark float32
}

const guard = 37

func newGuarded(n int) *guarded {
	g := &guarded{buf: make([]float32, n+2*guard), n: n, pre: guard, mark: math.Float32frombits(0x7fc0dead)}
	for i := range g.buf {
		g.buf[i] = g.mark
	}
	return g
}

func (g *guarded) s() []float32 { return g.buf[g.pre : g.pre+g.n] }

func (g *guarded) check(t *testing.T) {
	t.Helper()
	for i, v := range g.buf {
		if (i < g.pre || i >= g.pre+g.n) && math.Float32bits(v) != math.Float32bits(g.mark) {
			t.Fatalf("write outside the output: element %d of the guard band (output %d…%d) is %g", i, g.pre, g.pre+g.n-1, v)
		}
	}
}

func randVec(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

func randTensor(rng *rand.Rand, typ gguf.TensorType, rows, cols int) *model.Tensor {
	w := randVec(rng, rows*cols, 0.05)
	return &model.Tensor{Name: "w", Type: typ, Rows: rows, Cols: cols, Data: gguf.Quantize(typ, nil, w)}
}

// q8Bound is the most a W8A8 product may differ from ref.MatMul's f32 one
// for output (t, r): quantizing activation block b (scale dx = amax/127,
// round to nearest) moves each value by at most dx/2, so the exact sum
// moves by at most Σ_b dx_b/2 · Σ_{i∈b} |w_i|. Both sides add f32 rounding,
// at most a few K·2⁻²⁴·Σ|w_i·x_i|; we allow 1e-5·Σ|w_i·x_i|.
func q8Bound(w []float32, x []float32) float64 {
	var b, abs float64
	for blk := 0; blk < len(x)/32; blk++ {
		var amax, wsum float64
		for i := blk * 32; i < blk*32+32; i++ {
			amax = math.Max(amax, math.Abs(float64(x[i])))
			wsum += math.Abs(float64(w[i]))
			abs += math.Abs(float64(w[i]) * float64(x[i]))
		}
		b += amax / 127 / 2 * wsum
	}
	return b*(1+1e-5) + 1e-5*abs + 1e-7
}

// floatBound allows for f32 summation in another order.
func floatBound(w []float32, x []float32) float64 {
	var abs float64
	for i := range x {
		abs += math.Abs(float64(w[i]) * float64(x[i]))
	}
	return 1e-5*abs + 1e-7
}

func TestABILayout(t *testing.T) {
	eachVariant(t, func(t *testing.T, b *Backend) {
		if err := b.lib.checkLayout(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestQuantizeActivations(t *testing.T) {
	eachKernels(t, 1, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(1, 1))
		for _, c := range []struct{ n, cols int }{{1, 32}, {3, 96}, {5, 2048}, {2, 160}} {
			x := randVec(rng, c.n*c.cols, 1)
			x[0] = 0 // a zero and a whole zero block
			if c.cols >= 64 {
				clear(x[32:64])
			}
			if err := k.prepare(x, c.n, c.cols); err != nil {
				t.Fatal(err)
			}
			y := newGuarded(c.n * c.cols)
			k.dequant(y.s())
			y.check(t)
			for i, v := range y.s() {
				blk := x[i/32*32 : i/32*32+32]
				var amax float64
				for _, e := range blk {
					amax = math.Max(amax, math.Abs(float64(e)))
				}
				if d := math.Abs(float64(v) - float64(x[i])); d > amax/254*(1+1e-5) {
					t.Fatalf("%d×%d: element %d: %g quantized to %g (block max %g)", c.n, c.cols, i, x[i], v, amax)
				}
			}
		}
	})
}

type mmCase struct {
	typ           gguf.TensorType
	rows, cols, n int
}

func mmCases() []mmCase {
	var cs []mmCase
	for _, rc := range [][2]int{{1, 32}, {5, 64}, {17, 96}, {33, 160}, {64, 64}, {100, 2048}, {130, 288}, {7, 544}} {
		for _, n := range []int{1, 2, 3, 5, 13, 29} {
			cs = append(cs, mmCase{gguf.Q8_0, rc[0], rc[1], n})
		}
	}
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.F16, gguf.BF16} {
		for _, rc := range [][2]int{{1, 1}, {3, 7}, {17, 31}, {9, 172}, {70, 100}} {
			for _, n := range []int{1, 4, 11} {
				cs = append(cs, mmCase{typ, rc[0], rc[1], n})
			}
		}
	}
	return cs
}

func TestMatMul(t *testing.T) {
	eachKernels(t, 2, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(2, 2))
		var worst float64 // largest |Δ| / bound seen, for the log
		for _, c := range mmCases() {
			w := randTensor(rng, c.typ, c.rows, c.cols)
			x := randVec(rng, c.n*c.cols, 1)
			if c.n > 2 {
				clear(x[c.cols : 2*c.cols]) // an all-zero row
			}
			want := make([]float32, c.n*c.rows)
			ref.MatMul(want, w, x, c.n, 1)
			wf := w.Float32s()
			bounds := make([]float64, len(want))
			for tk := 0; tk < c.n; tk++ {
				for r := 0; r < c.rows; r++ {
					wr, xr := wf[r*c.cols:(r+1)*c.cols], x[tk*c.cols:(tk+1)*c.cols]
					if c.typ == gguf.Q8_0 {
						bounds[tk*c.rows+r] = q8Bound(wr, xr)
					} else {
						bounds[tk*c.rows+r] = floatBound(wr, xr)
					}
				}
			}
			paths := []int{pathAuto}
			if c.typ == gguf.Q8_0 {
				if err := k.prepare(x, c.n, c.cols); err != nil {
					t.Fatal(err)
				}
				if err := k.prepack(w); err != nil {
					t.Fatal(err)
				}
				paths = []int{pathDirect, pathPacked, pathPrepack}
			}
			for i, path := range paths {
				// accumulate on one path, store on the other; the pool on
				// one, two row ranges (as two threads split it) on the other
				acc, pool := i%2 == 1, (i+c.n+c.rows)%2 == 0
				name := fmt.Sprintf("%s %d×%d n=%d path=%d acc=%v pool=%v", c.typ, c.rows, c.cols, c.n, path, acc, pool)
				y := newGuarded(c.n * c.rows)
				base := randVec(rng, c.n*c.rows, 1)
				copy(y.s(), base)
				var err error
				if pool {
					err = k.matmulPool(w, x, c.n, y.s(), path, acc)
				} else {
					mid := c.rows / 2
					if path == pathPrepack {
						mid = mid / prepackAlign * prepackAlign
					}
					err = k.matmulRange(w, x, c.n, y.s(), 0, mid, 0, path, acc)
					if err == nil {
						err = k.matmulRange(w, x, c.n, y.s(), mid, c.rows, 1, path, acc)
					}
				}
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				y.check(t)
				for j, got := range y.s() {
					exp, bound := float64(want[j]), bounds[j]
					if acc {
						exp += float64(base[j])
						bound += 1e-6 * math.Abs(exp)
					}
					d := math.Abs(float64(got) - exp)
					if d > bound {
						t.Fatalf("%s: y[%d][%d] = %g, ref %g (bound %g)", name, j/c.rows, j%c.rows, got, exp, bound)
					}
					worst = math.Max(worst, d/bound)
				}
			}
		}
		t.Logf("largest error: %.3f of the bound", worst)
	})
}

func near(got, want, rel, abs float64) bool {
	return math.Abs(got-want) <= rel*math.Abs(want)+abs
}

// checkNear fails when got[i] is not within rel·|want[i]| + abs of want[i].
func checkNear(t *testing.T, what string, got, want []float32, rel, abs float64) {
	t.Helper()
	for i := range want {
		if !near(float64(got[i]), float64(want[i]), rel, abs) {
			t.Fatalf("%s: [%d] = %g, ref %g", what, i, got[i], want[i])
		}
	}
}

func TestRMSNorm(t *testing.T) {
	eachKernels(t, 1, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(3, 3))
		for _, cols := range []int{1, 17, 64, 100, 2049} {
			n := 3
			x := randVec(rng, n*cols, 2)
			w := randVec(rng, cols, 1)
			y := newGuarded(n * cols)
			k.rmsnorm(y.s(), x, w, n, cols, 1e-5)
			y.check(t)
			want := make([]float32, cols)
			for r := 0; r < n; r++ {
				ref.RMSNorm(want, x[r*cols:(r+1)*cols], w, 1e-5)
				checkNear(t, fmt.Sprintf("cols %d: row %d", cols, r), y.s()[r*cols:(r+1)*cols], want, 1e-6, 1e-7)
			}
		}
	})
}

func TestSoftmax(t *testing.T) {
	eachKernels(t, 1, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(4, 4))
		for _, n := range []int{1, 5, 16, 17, 100, 1000} {
			x := randVec(rng, n, 8)
			if n > 3 {
				x[2] = -1000 // underflows to 0
			}
			want := append([]float32(nil), x...)
			ref.Softmax(want)
			y := newGuarded(n)
			copy(y.s(), x)
			k.softmax(y.s())
			y.check(t)
			checkNear(t, fmt.Sprintf("n %d", n), y.s(), want, 2e-6, 1e-9)
		}
	})
}

func TestSiLUGate(t *testing.T) {
	eachKernels(t, 1, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(5, 5))
		for _, n := range []int{1, 7, 16, 33, 1000} {
			g, u := randVec(rng, n, 5), randVec(rng, n, 1)
			if n > 4 {
				g[1], g[2], g[3] = 100, -100, 0
			}
			want := make([]float32, n)
			ref.SiLUGate(want, g, u)
			y := newGuarded(n)
			k.siluGate(y.s(), g, u)
			y.check(t)
			checkNear(t, fmt.Sprintf("n %d: silu(gate)·up", n), y.s(), want, 2e-6, 1e-30)
		}
	})
}

func TestRope(t *testing.T) {
	eachKernels(t, 1, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(6, 6))
		for _, c := range []struct {
			heads, hd, dims, pos int
			neox                 bool
			scale                float32
			freqs                bool
		}{
			{1, 8, 8, 0, false, 1, false}, {3, 64, 64, 17, false, 1, false}, {2, 64, 32, 1000, true, 1, false},
			{5, 10, 6, 4095, false, 0.25, false}, {4, 128, 128, 77, true, 1, true}, {1, 6, 4, 3, false, 1, true},
		} {
			rc := model.RopeConfig{Dims: c.dims, Base: 10000, FreqScale: c.scale, NeoX: c.neox}
			var freqs []float32
			if c.freqs {
				freqs = make([]float32, c.dims/2)
				for i := range freqs {
					freqs[i] = 1 + float32(i%4)
				}
			}
			x := randVec(rng, c.heads*c.hd, 1)
			want := append([]float32(nil), x...)
			ref.Rope(want, c.heads, c.hd, c.pos, rc, freqs)
			y := newGuarded(len(x))
			copy(y.s(), x)
			if err := k.rope(y.s(), c.heads, c.hd, c.pos, rc, freqs); err != nil {
				t.Fatal(err)
			}
			y.check(t)
			checkNear(t, fmt.Sprintf("%+v", c), y.s(), want, 1e-6, 1e-6)
		}
	})
}

func TestAttention(t *testing.T) {
	eachKernels(t, 1, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(7, 7))
		for _, c := range []struct{ heads, kv, hd, bs, pos int }{
			{1, 1, 8, 4, 0}, {8, 4, 8, 4, 37}, {4, 1, 64, 16, 100}, {6, 3, 12, 5, 23}, {32, 4, 64, 16, 300},
			{8, 2, 128, 32, 70}, {2, 1, 80, 8, 40}, {3, 1, 100, 64, 130},
		} {
			nblk := c.pos/c.bs + 1
			total := nblk + 3
			perm := rng.Perm(total)
			blocks := make([]int32, nblk)
			for i := range blocks {
				blocks[i] = int32(perm[i])
			}
			kvw := c.kv * c.hd
			kc := randVec(rng, total*c.bs*kvw, 1)
			vc := randVec(rng, total*c.bs*kvw, 1)
			q := randVec(rng, c.heads*c.hd, 1)
			slots := make([]int, c.pos+1)
			for p := range slots {
				slots[p] = int(blocks[p/c.bs])*c.bs + p%c.bs
			}
			// check compares the library's attention (run) with ref's
			// over caches kr, vr and query qr.
			check := func(name string, qr, kr, vr []float32, run func(y []float32) error) {
				t.Helper()
				want := make([]float32, c.heads*c.hd)
				ref.Attention(want, qr, kr, vr, slots, c.heads, c.kv, c.hd)
				y := newGuarded(len(want))
				if err := run(y.s()); err != nil {
					t.Fatal(err)
				}
				y.check(t)
				checkNear(t, fmt.Sprintf("%s %+v", name, c), y.s(), want, 1e-5, 1e-6)
			}
			check("f32", q, kc, vc, func(y []float32) error {
				return attention(k, y, q, keysBlocked(kc, c.bs, kvw), vc, blocks, c.bs, c.pos, c.heads, c.kv, c.hd, false)
			})
			// A cache of f16 values: ref over the same values rounded.
			k16, kr := halves(kc)
			v16, vr := halves(vc)
			check("f16", q, kr, vr, func(y []float32) error {
				return attention(k, y, q, keysBlocked(k16, c.bs, kvw), v16, blocks, c.bs, c.pos, c.heads, c.kv, c.hd, false)
			})
			// A q8 cache: ref over the keys, values and query rounded
			// as backends.Q8Round rounds them. The products are exact
			// in int32 on the library's side, so only the scaling and
			// the softmax's sums differ in float order.
			// Rows it cannot scale become zeros on both sides: one of
			// keys too small, one of values with a NaN, one with an
			// infinity (positions 0 and pos, KV head 0).
			kq, vq := slices.Clone(kc), slices.Clone(vc)
			for d := range c.hd {
				kq[slots[0]*kvw+d] = 1e-35
			}
			vq[slots[0]*kvw+1] = float32(math.NaN())
			vq[slots[c.pos]*kvw] = float32(math.Inf(1))
			check("q8", q8Rows(q, c.hd), q8Rows(kq, c.hd), q8Rows(vq, c.hd), func(y []float32) error {
				return attention(k, y, q, keysBlocked(kq, c.bs, kvw), vq, blocks, c.bs, c.pos, c.heads, c.kv, c.hd, true)
			})
		}
	})
}

// TestQ8HeadLimit: the library takes q8 heads up to backends.Q8MaxHeadDim
// wide and refuses wider ones (its OC_KV8_MAX_HD is the same bound).
func TestQ8HeadLimit(t *testing.T) {
	eachKernels(t, 1, func(t *testing.T, k *kernels) {
		rng := rand.New(rand.NewPCG(8, 8))
		for _, hd := range []int{backends.Q8MaxHeadDim, backends.Q8MaxHeadDim + 4} {
			const bs = 16
			kc, vc, q := randVec(rng, bs*hd, 1), randVec(rng, bs*hd, 1), randVec(rng, hd, 1)
			out := make([]float32, hd)
			err := attention(k, out, q, keysBlocked(kc, bs, hd), vc, []int32{0}, bs, 3, 1, 1, hd, true)
			if (err == nil) != (hd <= backends.Q8MaxHeadDim) {
				t.Errorf("heads of %d: %v", hd, err)
			}
		}
	})
}

// q8Rows returns x with each row of n values rounded as a q8 KV cache
// holds it.
func q8Rows(x []float32, n int) []float32 {
	out := slices.Clone(x)
	for i := 0; i < len(out); i += n {
		backends.Q8Round(out[i : i+n])
	}
	return out
}

// halves returns x rounded to f16: the bits, and the values as float32.
func halves(x []float32) ([]uint16, []float32) {
	bits, vals := make([]uint16, len(x)), make([]float32, len(x))
	for i, v := range x {
		bits[i] = gguf.F32ToF16(v)
		vals[i] = gguf.F16ToF32(bits[i])
	}
	return bits, vals
}

// keysBlocked is kc (a row of kvw floats per slot, ref's layout) in the
// layout of the library's K cache: each block's keys transposed, dimension
// c of the key at slot at slot/bs·bs·kvw + c·bs + slot%bs (oc_k_index).
func keysBlocked[T any](kc []T, bs, kvw int) []T {
	out := make([]T, len(kc))
	for slot := range len(kc) / kvw {
		for c := range kvw {
			out[slot/bs*bs*kvw+c*bs+slot%bs] = kc[slot*kvw+c]
		}
	}
	return out
}

// TestLibrariesCurrent: the libraries in native/lib (the ones go build
// embeds) are newer than every source they are built from, so a test run
// never checks stale kernels. make rebuilds them; plain `go test` after an
// edit of the C sources fails here until `make native` runs.
func TestLibrariesCurrent(t *testing.T) {
	libs, _ := filepath.Glob("native/lib/*.so")
	if len(libs) == 0 {
		skipOrFail(t, "no libraries in native/lib (run make native)")
	}
	srcs, _ := filepath.Glob("native/*.[ch]")
	srcs = append(srcs, "native/native.mk")
	var newest time.Time
	var newestSrc string
	for _, s := range srcs {
		st, err := os.Stat(s)
		if err != nil {
			t.Fatal(err)
		}
		if st.ModTime().After(newest) {
			newest, newestSrc = st.ModTime(), s
		}
	}
	for _, l := range libs {
		st, err := os.Stat(l)
		if err != nil {
			t.Fatal(err)
		}
		if st.ModTime().Before(newest) {
			t.Errorf("%s is older than %s: run make native", l, newestSrc)
		}
	}
}
