//go:build linux

package cuda

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/backendtest"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

var (
	loadRunner = backendtest.LoadRunner
)

// openOrSkip opens GPU 0, or skips the test where none answers.
func openOrSkip(t testing.TB) *Backend {
	t.Helper()
	b, err := Open(0)
	if errors.Is(err, backends.ErrNoDevice) {
		t.Skipf("no CUDA device here (GPU tests run under `make gpu-check`): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randVec(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (rng.Float32()*2 - 1) * scale
	}
	return v
}

// harness is a runner that holds only what a kernel test uploads.
func harness(b *Backend) *runner {
	return &runner{dev: b.dev, m: &model.Model{Config: model.Config{NormEps: 1e-5}}}
}

func tensor(rng *rand.Rand, typ gguf.TensorType, rows, cols int) *model.Tensor {
	return &model.Tensor{Name: "w", Type: typ, Rows: rows, Cols: cols, Data: gguf.Quantize(typ, nil, randVec(rng, rows*cols, 1))}
}

const guard = float32(-12345.5)

// TestGEMVMatchesRef compares the GEMV kernels (gemv_q8_1 for one token,
// quant_q8 and gemm_q8 for more, gemv_f32 for float matrices) with
// ref.RMSNorm, ref.MatMul and ref.SiLUGate on random inputs, with guard
// columns and rows around the output. For Q8_0 the activations are
// quantized to int8 per 32 values: each is off by at most half its block's
// step d = amax/127, so a dot product is off by at most Σ|w_i|·d_i/2 (plus
// float rounding).
func TestGEMVMatchesRef(t *testing.T) {
	b := openOrSkip(t)
	rng := rand.New(rand.NewPCG(5, 6))
	cases := []gemvCase{
		{"q8", gguf.Q8_0, 37, 96, 1, true, false, false, false},
		{"q8 tiles", gguf.Q8_0, 67, 2080, 19, true, false, true, false},
		{"q8 long rows", gguf.Q8_0, 9, 5632, 3, false, false, true, false},
		{"q8 silu", gguf.Q8_0, 40, 256, 9, true, true, false, false},
		{"q8 gather", gguf.Q8_0, 33, 64, 3, true, false, false, true},
		{"q8 many rows", gguf.Q8_0, 2203, 64, 40, true, true, true, false},
		{"q8 two tokens", gguf.Q8_0, 50, 128, 2, true, false, false, false},
		{"q8 one silu", gguf.Q8_0, 40, 2080, 1, true, true, true, false},
		{"q8 one gather", gguf.Q8_0, 33, 64, 1, true, false, false, true},
		{"q8 one long rows", gguf.Q8_0, 9, 5632, 1, false, false, true, false},
		{"q8 one many rows", gguf.Q8_0, 4500, 2080, 1, true, true, false, false},
		{"q8 ragged", gguf.Q8_0, 13, 8224, 45, true, true, true, true},
		{"q8 one ragged", gguf.Q8_0, 13, 8224, 1, true, true, true, true},
		{"f32", gguf.F32, 37, 100, 10, true, false, false, false},
		{"f32 many rows", gguf.F32, 2203, 40, 33, true, false, true, false},
		{"f16 silu acc", gguf.F16, 21, 72, 4, true, true, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { testGEMV(t, b, rng, c) })
	}
	// The Q8_0 cases of two tokens or more again on gemm_q8's 16-token
	// tiles (partial tiles: 19, 45, 33 tokens).
	defer func(was int) { gemmTokens = was }(gemmTokens)
	gemmTokens = 16
	for _, c := range cases {
		if c.typ == gguf.Q8_0 && c.ntok > 1 {
			t.Run("t16 "+c.name, func(t *testing.T) { testGEMV(t, b, rng, c) })
		}
	}
}

type gemvCase struct {
	name                      string
	typ                       gguf.TensorType
	rows, K, ntok             int
	norm, gateUp, acc, gather bool
}

// testGEMV runs one case of TestGEMVMatchesRef on r.gemv's kernels.
func testGEMV(t *testing.T, b *Backend, rng *rand.Rand, c gemvCase) {
	r := harness(b)
	w, w2 := tensor(rng, c.typ, c.rows, c.K), tensor(rng, c.typ, c.rows, c.K)
	xrowsN := c.ntok
	if c.gather {
		xrowsN = 2*c.ntok + 1
	}
	x := randVec(rng, xrowsN*c.K, 2)
	normw := randVec(rng, c.K, 1)
	var xrows []int32
	for i := 0; i < c.ntok; i++ {
		xrows = append(xrows, int32(2*i+1))
	}
	ldy := c.rows + 3
	y := make([]float32, (c.ntok+2)*ldy)
	for i := range y {
		y[i] = guard
	}
	init := randVec(rng, len(y), 1)
	for tk := 0; tk < c.ntok; tk++ {
		for j := 0; j < c.rows; j++ {
			if c.acc {
				y[tk*ldy+j] = init[tk*ldy+j]
			}
		}
	}
	got := make([]float32, len(y))
	err := b.dev.do(func() error {
		defer r.release()
		mw, err := r.matrix(w)
		if err != nil {
			return err
		}
		var mw2 matrix
		if c.gateUp {
			if mw2, err = r.matrix(w2); err != nil {
				return err
			}
		}
		var px, pn, py, pr devPtr
		for _, u := range []struct {
			dst *devPtr
			v   []float32
		}{{&px, x}, {&pn, normw}, {&py, y}} {
			if *u.dst, err = allocCopy(r.dev, u.v); err != nil {
				return err
			}
			r.allocs = append(r.allocs, *u.dst)
		}
		if c.gather {
			if pr, err = allocCopy(r.dev, xrows); err != nil {
				return err
			}
			r.allocs = append(r.allocs, pr)
		}
		if !c.norm {
			pn = 0
		}
		if err := r.gemv(mw, mw2, px, c.K, pr, pn, py, ldy, c.acc, c.ntok); err != nil {
			return err
		}
		if err := r.dev.sync(); err != nil {
			return err
		}
		return download(r.dev, got, py)
	})
	if err != nil {
		t.Fatal(err)
	}
	for tk := 0; tk < c.ntok; tk++ {
		row := tk
		if c.gather {
			row = int(xrows[tk])
		}
		xn := slices.Clone(x[row*c.K : (row+1)*c.K])
		if c.norm {
			ref.RMSNorm(xn, xn, normw, 1e-5)
		}
		g, eg := refDot(w, xn, c.typ == gguf.Q8_0)
		want, tol := g, eg
		if c.gateUp {
			u, eu := refDot(w2, xn, c.typ == gguf.Q8_0)
			want = make([]float32, c.rows)
			ref.SiLUGate(want, g, u)
			tol = make([]float64, c.rows)
			for j := range tol {
				sg := float64(g[j]) / (1 + math.Exp(-float64(g[j])))
				tol[j] = 1.1*eg[j]*math.Abs(float64(u[j])) + math.Abs(sg)*eu[j] + eg[j]*eu[j]
			}
		}
		for j := 0; j < c.rows; j++ {
			w := float64(want[j])
			if c.acc {
				w += float64(init[tk*ldy+j])
			}
			if d := math.Abs(float64(got[tk*ldy+j]) - w); !(d <= tol[j]+1e-4*math.Abs(w)+1e-5) {
				t.Fatalf("token %d row %d: %g, ref %g (|Δ| %.3g > bound %.3g)", tk, j, got[tk*ldy+j], w, d, tol[j])
			}
		}
		for j := c.rows; j < ldy; j++ {
			if got[tk*ldy+j] != guard {
				t.Fatalf("token %d: guard column %d overwritten", tk, j)
			}
		}
	}
	for i := c.ntok * ldy; i < len(got); i++ {
		if got[i] != guard {
			t.Fatalf("guard row element %d overwritten", i)
		}
	}
}

// refDot is ref.MatMul of w and x for one token, with the error bound of
// the device's activation quantization (q8) or of float32 summation.
func refDot(w *model.Tensor, x []float32, q8 bool) ([]float32, []float64) {
	out := make([]float32, w.Rows)
	ref.MatMul(out, w, x, 1, 1)
	bound := make([]float64, w.Rows)
	row := make([]float32, w.Cols)
	for r := range bound {
		w.DequantizeRow(r, row)
		for i, v := range row {
			e := 1e-6 * math.Abs(float64(v*x[i]))
			if q8 {
				var amax float64
				for _, a := range x[i/32*32 : i/32*32+32] {
					amax = max(amax, math.Abs(float64(a)))
				}
				e += math.Abs(float64(v)) * amax / 127 / 2
			}
			bound[r] += e
		}
	}
	return out, bound
}

// TestRopeAttentionMatchRef runs rope_kv and attention, then rope_kv16
// and each attention kernel of an f16 cache (per query head with 16 and 4
// warps, grouped per KV head), against ref.Rope and ref.Attention: one
// step of three sequences over shuffled cache blocks, at positions 299 and
// 300 of one (more than a grouped block's warps take in one round), 40 of
// another (a partial round of 32) and 0 of the third.
func TestRopeAttentionMatchRef(t *testing.T) {
	b := openOrSkip(t)
	rng := rand.New(rand.NewPCG(7, 8))
	type variant struct {
		name string
		f16  bool
		mode attnMode
		sms  int // 0: 4 warps per head; large: 16
	}
	variants := []variant{
		{"f32/w16", false, attnAuto, 1 << 30}, {"f32/w4", false, attnAuto, 0},
		{"f16/w16", true, attnHeads, 1 << 30}, {"f16/w4", true, attnHeads, 0}, {"f16/grouped", true, attnGrouped, 0},
	}
	for _, c := range []struct {
		H, KVH, hd int
		neox       bool
	}{{4, 2, 64, false}, {6, 1, 8, true}, {2, 2, 128, false}, {3, 1, 256, true}, {2, 1, 40, false}, {10, 1, 64, false}, {32, 4, 64, true}} {
		for _, v := range variants {
			t.Run(fmt.Sprintf("H%d_KV%d_hd%d/%s", c.H, c.KVH, c.hd, v.name), func(t *testing.T) {
				testRopeAttention(t, b, rng, attnShape{hd: c.hd, heads: c.H, kvHeads: c.KVH, sms: v.sms, f16: v.f16, mode: v.mode}, c.neox)
			})
		}
	}
}

// testRopeAttention runs the kernels that shape chooses (its tokens are
// the test's).
func testRopeAttention(t *testing.T, b *Backend, rng *rand.Rand, shape attnShape, neox bool) {
	H, KVH, hd, f16 := shape.heads, shape.kvHeads, shape.hd, shape.f16
	const bs, ctx = 4, 304
	rc := model.RopeConfig{Dims: hd, Base: 10000, FreqScale: 1, NeoX: neox}
	qw, kvw := H*hd, KVH*hd
	ld := qw + 2*kvw
	// Block tables: 76, 11 and 1 shuffled blocks.
	perm := rng.Perm(96)
	tables := [][]int32{{}, {}, {}}
	for i, n := range []int{76, 11, 1} {
		for _, blk := range perm[:n] {
			tables[i] = append(tables[i], int32(blk))
		}
		perm = perm[n:]
	}
	nblocks := 96
	// The cache's values before the step (rounded to f16 for an f16 cache).
	cacheType, es := gguf.F32, 4
	if f16 {
		cacheType, es = gguf.F16, 2
	}
	round := func(v []float32) []float32 {
		gguf.Dequantize(cacheType, gguf.Quantize(cacheType, nil, v), v)
		return v
	}
	kc := round(randVec(rng, nblocks*bs*kvw, 1))
	vc := round(randVec(rng, nblocks*bs*kvw, 1))
	type tok struct{ seq, pos int }
	toks := []tok{{0, 299}, {0, 300}, {1, 40}, {2, 0}}
	qkv := randVec(rng, len(toks)*ld, 1)
	var pos, btoff, blocks []int32
	for _, tb := range tables {
		btoff = append(btoff, int32(len(blocks)))
		blocks = append(blocks, tb...)
	}
	tokOff := make([]int32, len(toks))
	for i, tk := range toks {
		pos = append(pos, int32(tk.pos))
		tokOff[i] = btoff[tk.seq]
	}
	slot := func(seq, p int) int { return int(tables[seq][p/bs])*bs + p%bs }

	// The reference rotation and cache writes, as ref's step does them.
	wantK, wantV := slices.Clone(kc), slices.Clone(vc)
	wantQ := slices.Clone(qkv)
	for i, tk := range toks {
		row := wantQ[i*ld : (i+1)*ld]
		ref.Rope(row[:qw], H, hd, tk.pos, rc, nil)
		ref.Rope(row[qw:qw+kvw], KVH, hd, tk.pos, rc, nil)
		s := slot(tk.seq, tk.pos)
		copy(wantK[s*kvw:(s+1)*kvw], round(slices.Clone(row[qw:qw+kvw])))
		copy(wantV[s*kvw:(s+1)*kvw], round(slices.Clone(row[qw+kvw:])))
	}

	r := harness(b)
	gotQ, gotK, gotV := make([]float32, len(qkv)), make([]float32, len(kc)), make([]float32, len(vc))
	gotAtt := make([]float32, (len(toks)+1)*qw)
	shape.tokens = len(toks)
	err := b.dev.do(func() error {
		defer r.release()
		ptrs := map[string]devPtr{}
		put := func(name string, p devPtr, err error) error {
			if err == nil {
				r.allocs = append(r.allocs, p)
				ptrs[name] = p
			}
			return err
		}
		for name, v := range map[string][]float32{"qkv": qkv, "cs": ropeTable(rc, nil, ctx), "att": make([]float32, len(gotAtt))} {
			p, err := allocCopy(r.dev, v)
			if err := put(name, p, err); err != nil {
				return err
			}
		}
		for name, v := range map[string][]float32{"kc": kc, "vc": vc} {
			p, err := allocCopy(r.dev, gguf.Quantize(cacheType, nil, v))
			if err := put(name, p, err); err != nil {
				return err
			}
		}
		for name, v := range map[string][]int32{"pos": pos, "btoff": tokOff, "blocks": blocks} {
			p, err := allocCopy(r.dev, v)
			if err := put(name, p, err); err != nil {
				return err
			}
		}
		d, k := r.dev, r.dev.mod
		rope := k.ropeKV[0]
		if f16 {
			rope = k.ropeKV[1]
		}
		// A rope grid of 3 blocks per token beside the 4-warp attention.
		ropeGrid := 1
		if shape.sms == 0 {
			ropeGrid = 3
		}
		if err := d.launch(rope, [2]int{len(toks), ropeGrid}, 128, 0, ptrArg(ptrs["qkv"]), intArg(ld), ptrArg(ptrs["pos"]), ptrArg(ptrs["btoff"]), ptrArg(ptrs["blocks"]),
			intArg(bs), intArg(H), intArg(KVH), intArg(hd), intArg(rc.Dims), intArg(b2i(neox)), ptrArg(ptrs["cs"]), 0, 0, 0, ptrArg(ptrs["kc"]), ptrArg(ptrs["vc"])); err != nil {
			return err
		}
		att, err := k.attentionFor(shape)
		if err != nil {
			return err
		}
		if c, _ := shape.choose(); c.grouped != (shape.mode == attnGrouped) {
			return fmt.Errorf("attention kernel %s for %+v", att.k.name, shape)
		}
		scale := float32(1 / math.Sqrt(float64(hd)))
		if err := d.launch(att.k, att.grid, att.threads, 0, ptrArg(ptrs["qkv"]), intArg(ld), ptrArg(ptrs["pos"]), ptrArg(ptrs["btoff"]), ptrArg(ptrs["blocks"]),
			intArg(bs), intArg(H), intArg(KVH), intArg(hd), floatArg(scale), ptrArg(ptrs["kc"]), ptrArg(ptrs["vc"]), ptrArg(ptrs["att"]), intArg(qw)); err != nil {
			return err
		}
		if err := d.sync(); err != nil {
			return err
		}
		if err := download(r.dev, gotQ, ptrs["qkv"]); err != nil {
			return err
		}
		if err := download(r.dev, gotAtt, ptrs["att"]); err != nil {
			return err
		}
		for _, dl := range []struct {
			dst []float32
			p   devPtr
		}{{gotK, ptrs["kc"]}, {gotV, ptrs["vc"]}} {
			raw := make([]byte, es*len(dl.dst))
			if err := download(r.dev, raw, dl.p); err != nil {
				return err
			}
			gguf.Dequantize(cacheType, raw, dl.dst)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range toks {
		closeTo(t, "rotated query", gotQ[i*ld:i*ld+qw], wantQ[i*ld:i*ld+qw], 1e-5)
	}
	// A rotated key may round to the neighbouring f16 value of ref's.
	ktol := 1e-5
	if f16 {
		ktol = 1e-3
	}
	closeTo(t, "key cache", gotK, wantK, ktol)
	closeTo(t, "value cache", gotV, wantV, 0)
	// Attention over the cache the kernels wrote (checked above).
	wantAtt := make([]float32, len(toks)*qw)
	for i, tk := range toks {
		var slots []int
		for p := 0; p <= tk.pos; p++ {
			slots = append(slots, slot(tk.seq, p))
		}
		ref.Attention(wantAtt[i*qw:(i+1)*qw], wantQ[i*ld:i*ld+qw], gotK, gotV, slots, H, KVH, hd)
	}
	closeTo(t, "attention", gotAtt[:len(wantAtt)], wantAtt, 1e-5)
	for _, v := range gotAtt[len(wantAtt):] {
		if v != 0 {
			t.Fatal("attention wrote past its output")
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func closeTo(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > tol*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d] = %g, ref %g", what, i, got[i], want[i])
		}
	}
}

// logitsTol is how far a logit may be from ref's, relative to the row's
// largest magnitude: W8A8 models quantize activations (see
// TestGEMVMatchesRef); float32 models only reorder sums.
func logitsTol(m *model.Model) float64 {
	if m.Layers[0].Wq.Type == gguf.Q8_0 {
		return 0.03
	}
	return 2e-4
}

func compareLogits(t *testing.T, what string, got, want []float32, vocab int, tol float64) {
	t.Helper()
	for r := 0; r < len(want)/vocab; r++ {
		g, w := got[r*vocab:(r+1)*vocab], want[r*vocab:(r+1)*vocab]
		var scale, worst float64
		for i := range w {
			scale = max(scale, math.Abs(float64(w[i])))
			worst = max(worst, math.Abs(float64(g[i]-w[i])))
		}
		if worst > tol*max(scale, 1) {
			t.Fatalf("%s row %d: logits differ from ref by %.4g (largest logit %.3g, tolerance %.2g of it)", what, r, worst, scale, tol)
		}
	}
}

// TestForwardMatchesRef runs a prompt (in steps larger than the device step
// where it is long) and a few decode steps, replayed from a CUDA graph after
// the second, on the GPU and on ref, and compares every logits row.
func TestForwardMatchesRef(t *testing.T) {
	b := openOrSkip(t)
	models := map[string]func(t *testing.T) *model.Model{
		"tiny-q8_0":       func(t *testing.T) *model.Model { return backendtest.SynthModel(t, "tiny", gguf.Q8_0) },
		"tiny-f32":        func(t *testing.T) *model.Model { return backendtest.SynthModel(t, "tiny", gguf.F32) },
		"tiny-qwen2-q8_0": func(t *testing.T) *model.Model { return backendtest.SynthModel(t, "tiny-qwen2", gguf.Q8_0) },
		"stories260K-q8":  func(t *testing.T) *model.Model { return backendtest.LoadShared(t, "stories260K-q8_0-f16mix.gguf") },
		"stories260K-f32": func(t *testing.T) *model.Model { return backendtest.LoadShared(t, "stories260K-f32.gguf") },
	}
	for name, open := range models {
		for _, v := range kvVariants {
			t.Run(name+"/"+v.name, func(t *testing.T) {
				defer setAttn(b, v.mode)()
				testForward(t, b, open(t), v.kv)
			})
		}
	}
}

func testForward(t *testing.T, b *Backend, m *model.Model, kv backends.KVType) {
	prompt := maxStepTokens + 88
	o := backends.LoadOptions{MaxContext: prompt + 8, BlockSize: 16, KV: kv}
	rg := loadRunner(t, b, m, o)
	rr := loadRunner(t, ref.Backend{}, m, o)
	rng := rand.New(rand.NewPCG(9, 10))
	toks := make([]int32, prompt)
	for i := range toks {
		toks[i] = int32(rng.IntN(m.Config.VocabSize))
	}
	sg, _ := backends.NewSequence(rg, o.MaxContext)
	sr, _ := backends.NewSequence(rr, o.MaxContext)
	ctx := context.Background()
	tol := logitsTol(m)
	step := func(tk []int32, mode backends.LogitsMode) {
		lg, err := sg.Forward(ctx, tk, mode)
		if err != nil {
			t.Fatal(err)
		}
		lr, err := sr.Forward(ctx, tk, mode)
		if err != nil {
			t.Fatal(err)
		}
		compareLogits(t, fmt.Sprintf("pos %d", sg.Pos()), lg.Data, lr.Data, m.Config.VocabSize, tol)
	}
	step(toks, backends.LogitsAll)
	for i := 0; i < 5; i++ {
		step([]int32{int32(rng.IntN(m.Config.VocabSize))}, backends.LogitsLast)
	}
	if run := rg.(*runner); run.dev.graphs() && run.graphs[stepShape{1, 1}] == 0 {
		t.Error("decode steps were not captured as a CUDA graph")
	}
}

// TestBatchedPagedMatchesRef runs three sequences together over a shared
// cache with shuffled blocks: each step prefills a chunk of one sequence
// while the others decode, at different positions.
func TestBatchedPagedMatchesRef(t *testing.T) {
	b := openOrSkip(t)
	m := backendtest.SynthModel(t, "tiny-qwen2", gguf.Q8_0)
	for _, v := range kvVariants {
		t.Run(v.name, func(t *testing.T) {
			defer setAttn(b, v.mode)()
			testBatchedPaged(t, b, m, v.kv)
		})
	}
}

// kvVariants are the caches and attention kernels the model tests run:
// f32, f16 with the kernels' own choice, f16 with every attention step
// per query head and grouped per KV head.
var kvVariants = []struct {
	name string
	kv   backends.KVType
	mode attnMode
}{{"f32", backends.KVF32, attnAuto}, {"f16", backends.KVF16, attnAuto}, {"f16-heads", backends.KVF16, attnHeads}, {"f16-grouped", backends.KVF16, attnGrouped}}

// setAttn sets the attention kernels b's device chooses for an f16 cache
// and returns what restores them.
func setAttn(b *Backend, mode attnMode) func() {
	var was attnMode
	b.dev.do(func() error { was, b.dev.attn = b.dev.attn, mode; return nil })
	return func() { b.dev.do(func() error { b.dev.attn = was; return nil }) }
}

func testBatchedPaged(t *testing.T, b *Backend, m *model.Model, kv backends.KVType) {
	const bs, nblocks = 4, 24
	o := backends.LoadOptions{BlockSize: bs, KVBlocks: nblocks, MaxContext: 64, KV: kv}
	rg := loadRunner(t, b, m, o)
	rr := loadRunner(t, ref.Backend{}, m, o)
	rng := rand.New(rand.NewPCG(11, 12))
	perm := rng.Perm(nblocks)
	lens := []int{13, 7, 18}
	var seqs [][]int32
	var tables [][]int32
	for i, n := range lens {
		s := make([]int32, n)
		for j := range s {
			s[j] = int32(rng.IntN(m.Config.VocabSize))
		}
		seqs = append(seqs, s)
		var tb []int32
		for j := 0; j < 6; j++ {
			tb = append(tb, int32(perm[i*6+j]))
		}
		tables = append(tables, tb)
	}
	pos := make([]int, len(seqs))
	chunk := []int{5, 1, 9}
	ctx := context.Background()
	var prev *backends.Logits // each GPU step reuses its last logits, spoilt first
	for step := 0; ; step++ {
		var batch backends.Batch
		for i, s := range seqs {
			if pos[i] >= len(s) {
				continue
			}
			n := 1
			if step == 0 || step == 3 {
				n = chunk[i]
			}
			n = min(n, len(s)-pos[i])
			mode := backends.LogitsLast
			if i == 1 {
				mode = backends.LogitsAll
			}
			batch.Runs = append(batch.Runs, backends.Run{Tokens: s[pos[i] : pos[i]+n], Pos: pos[i], Blocks: tables[i], Logits: mode})
			pos[i] += n
		}
		if len(batch.Runs) == 0 {
			break
		}
		backendtest.Spoil(prev)
		batch.Reuse = prev
		lg, err := rg.Forward(ctx, &batch)
		if err != nil {
			t.Fatal(err)
		}
		prev, batch.Reuse = lg, nil
		lr, err := rr.Forward(ctx, &batch)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(lg.Offsets, lr.Offsets) {
			t.Fatalf("step %d: offsets %v, ref %v", step, lg.Offsets, lr.Offsets)
		}
		compareLogits(t, fmt.Sprintf("step %d", step), lg.Data, lr.Data, m.Config.VocabSize, logitsTol(m))
	}
}

// greedyIDs generates n tokens greedily after prompt.
func greedyIDs(t *testing.T, r backends.Runner, prompt []int32, n int) []int32 {
	t.Helper()
	seq, err := backends.NewSequence(r, len(prompt)+n)
	if err != nil {
		t.Fatal(err)
	}
	out := slices.Clone(prompt)
	next := prompt
	for i := 0; i < n; i++ {
		l, err := seq.Forward(context.Background(), next, backends.LogitsLast)
		if err != nil {
			t.Fatal(err)
		}
		next = []int32{int32(backendtest.Argmax(l.Last(0)))}
		out = append(out, next...)
	}
	return out
}

// TestGreedyStoriesMatchesRef: the greedy text of the real model on the GPU
// is ref's, token for token, with programmatic dependent launch and (where
// the device has it) without, and over an f16 cache (ref's rounded alike).
func TestGreedyStoriesMatchesRef(t *testing.T) {
	b := openOrSkip(t)
	modes := []bool{false}
	if pdl(b) {
		modes = []bool{true, false}
	}
	for _, name := range []string{"stories260K-q8_0-f16mix.gguf", "stories260K-f32.gguf"} {
		for _, kv := range []backends.KVType{backends.KVF32, backends.KVF16} {
			for _, mode := range modes {
				if kv == backends.KVF16 && mode != modes[0] {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/pdl=%v", name, kv, mode), func(t *testing.T) {
					testGreedyStories(t, b, name, kv, mode)
				})
			}
		}
	}
}

func testGreedyStories(t *testing.T, b *Backend, name string, kv backends.KVType, mode bool) {
	defer setPDL(b, mode)()
	m := backendtest.LoadShared(t, name)
	o := backends.LoadOptions{MaxContext: 256, KV: kv}
	prompt := m.Tok.Encode("Once upon a time, there was a little girl", true, false)
	want := greedyIDs(t, loadRunner(t, ref.Backend{}, m, o), prompt, 100)
	got := greedyIDs(t, loadRunner(t, b, m, o), prompt, 100)
	if !slices.Equal(got, want) {
		t.Fatalf("greedy text differs from ref:\n gpu: %q\n ref: %q", m.Tok.Decode(got, false), m.Tok.Decode(want, false))
	}
	if pdl(b) != mode {
		t.Errorf("programmatic dependent launch %v after the run, want %v (a capture fell back to plain launches)", pdl(b), mode)
	}
	t.Logf("%q", m.Tok.Decode(got, false))
}

// pdl reports whether b's device launches with programmatic dependent
// launch.
func pdl(b *Backend) bool {
	var on bool
	b.dev.do(func() error { on = b.dev.pdl; return nil })
	return on
}

// setPDL turns b's programmatic dependent launch on or off and returns what
// restores it.
func setPDL(b *Backend, on bool) func() {
	was := pdl(b)
	b.dev.do(func() error { b.dev.pdl = on; return nil })
	return func() { b.dev.do(func() error { b.dev.pdl = was; return nil }) }
}

func TestForwardRejects(t *testing.T) {
	b := openOrSkip(t)
	m := backendtest.SynthModel(t, "tiny", gguf.Q8_0)
	r, err := b.Load(m, backends.LoadOptions{BlockSize: 4, KVBlocks: 8, MaxContext: 16})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bad := []backends.Batch{
		{},
		{Runs: []backends.Run{{Tokens: []int32{int32(m.Config.VocabSize)}, Blocks: []int32{0}}}},
		{Runs: []backends.Run{{Tokens: []int32{1}, Blocks: []int32{8}}}},
		{Runs: []backends.Run{{Tokens: []int32{1}, Pos: 16, Blocks: []int32{0, 1, 2, 3, 4}}}}, // past MaxContext
	}
	for i := range bad {
		if _, err := r.Forward(ctx, &bad[i]); !errors.Is(err, backends.ErrBadBatch) {
			t.Errorf("batch %d: %v", i, err)
		}
	}
	if _, err := b.Load(m, backends.LoadOptions{BlockSize: 16, KVBlocks: 1<<27 - 1}); err == nil {
		t.Error("a KV cache larger than the GPU: no error")
	}
	if _, err := b.Load(m, backends.LoadOptions{BlockSize: 16, KVBlocks: 1 << 27}); err == nil || !strings.Contains(err.Error(), "slots") {
		t.Errorf("a KV cache of 2^31 slots: %v, want an error about its slots", err)
	}
	if _, err := b.Load(m, backends.LoadOptions{BlockSize: 4, KVBlocks: 8, KV: backends.KVQ8}); err == nil {
		t.Error("a q8 KV cache: no error")
	}
	r.Close()
	if _, err := r.Forward(ctx, &backends.Batch{Runs: []backends.Run{{Tokens: []int32{1}, Blocks: []int32{0}}}}); err == nil {
		t.Error("Forward after Close: no error")
	}
}
