package pruning

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends/backendtest"
	"github.com/octet-dev/octet/eval/evaltest"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/quant"
)

func loadModel(t *testing.T, path string) *model.Model { return backendtest.Load(t, path) }

func prune(t *testing.T, m *model.Model, o Options) (*model.Model, Info) {
	t.Helper()
	w, info, err := Build(m, o)
	if err != nil {
		t.Fatal(err)
	}
	return evaltest.WriteLoad(t, w), info
}

func logits(t *testing.T, m *model.Model, tokens []int32) []float32 {
	return evaltest.Logits(t, m, tokens).Data
}

var prompt = []int32{1, 40, 41, 42, 50, 60, 70, 80, 90, 100, 110, 120}

func TestKeptWidths(t *testing.T) {
	for _, tc := range []struct {
		w    int
		keep float64
		want int
	}{{172, 0.75, 128}, {172, 0.9, 160}, {5632, 0.75, 4224}, {48, 0.5, 24}, {96, 0.01, 32}, {96, 1, 96}, {96, 0, 96}} {
		if got := keptFFN(tc.w, tc.keep); got != tc.want {
			t.Errorf("keptFFN(%d, %g) = %d, want %d", tc.w, tc.keep, got, tc.want)
		}
	}
	for _, tc := range []struct {
		h, kv      int
		keep       float64
		wantH, wKV int
	}{{32, 4, 0.75, 24, 4}, {8, 4, 0.5, 4, 4}, {8, 4, 0.75, 6, 3}, {8, 8, 0.5, 4, 4}, {9, 3, 0.34, 3, 3}, {9, 3, 0.67, 6, 3}, {4, 4, 0.1, 1, 1}, {4, 1, 0.5, 2, 1}} {
		if h, kv := keptHeads(tc.h, tc.kv, tc.keep); h != tc.wantH || kv != tc.wKV {
			t.Errorf("keptHeads(%d, %d, %g) = %d, %d; want %d, %d", tc.h, tc.kv, tc.keep, h, kv, tc.wantH, tc.wKV)
		}
	}
}

// TestStructuredShapes prunes heads and neurons of a GQA model with QKV
// bias: every tensor has the shape its new widths imply (model.Load checks
// them all), the metadata says so, and the model runs.
func TestStructuredShapes(t *testing.T) {
	for _, shape := range []string{"tiny", "tiny-qwen2"} {
		for _, typ := range []gguf.TensorType{gguf.F32, gguf.Q8_0} {
			src := loadModel(t, backendtest.Synth(t, shape, typ, 11))
			p, info := prune(t, src, Options{FFNKeep: 0.5, HeadsKeep: 0.5})
			c, sc := p.Config, src.Config
			wantFFN := keptFFN(sc.FFN, 0.5)
			wantH, wantKV := keptHeads(sc.Heads, sc.KVHeads, 0.5)
			if c.FFN != wantFFN || c.Heads != wantH || c.KVHeads != wantKV || c.HeadDim != sc.HeadDim || c.Rope.Dims != sc.Rope.Dims {
				t.Errorf("%s %s: FFN %d heads %d/%d head dim %d; want %d, %d/%d, %d", shape, typ, c.FFN, c.Heads, c.KVHeads, c.HeadDim, wantFFN, wantH, wantKV, sc.HeadDim)
			}
			if info.FFNTo != wantFFN || info.HeadsTo != wantH {
				t.Errorf("info %+v", info)
			}
			if p.Layers[0].Bq != nil && p.Layers[0].Bq.Cols != wantH*c.HeadDim {
				t.Errorf("q bias of %d", p.Layers[0].Bq.Cols)
			}
			if p.WeightBytes() >= src.WeightBytes() {
				t.Errorf("%s %s: %d weight bytes, not fewer than %d", shape, typ, p.WeightBytes(), src.WeightBytes())
			}
			if _, ok := p.File.String("octet.pruning.ffn"); !ok {
				t.Error("octet.pruning.ffn is missing")
			}
			for _, v := range logits(t, p, prompt) {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatal("pruned model computes non-finite logits")
				}
			}
		}
	}
}

// TestStructuredRemovesDeadUnits: neurons whose up rows are zero and heads
// whose output columns are zero contribute nothing, score lowest, and are
// the ones removed: the pruned model computes the same logits.
func TestStructuredRemovesDeadUnits(t *testing.T) {
	base := backendtest.Synth(t, "tiny", gguf.F32, 12)
	ref0 := loadModel(t, base)
	dim, hd, ffn := ref0.Config.Dim, ref0.Config.HeadDim, ref0.Config.FFN
	heads := ref0.Config.Heads
	dead := loadModel(t, evaltest.Rewrite(t, base, func(name string, cols int, v []float32) {
		switch {
		case strings.HasSuffix(name, "ffn_up.weight"):
			clear(v[32*dim:]) // all but the first 32 neurons
		case strings.HasSuffix(name, "attn_output.weight"):
			for r := 0; r < dim; r++ { // the second head of each KV group
				for h := 1; h < heads; h += 2 {
					clear(v[r*cols+h*hd : r*cols+(h+1)*hd])
				}
			}
		}
	}))
	p, _ := prune(t, dead, Options{FFNKeep: 32.0 / float64(ffn), HeadsKeep: 0.5})
	if p.Config.FFN != 32 || p.Config.Heads != heads/2 {
		t.Fatalf("FFN %d heads %d", p.Config.FFN, p.Config.Heads)
	}
	want, got := logits(t, dead, prompt), logits(t, p, prompt)
	for i := range want {
		if math.Abs(float64(want[i]-got[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("logit %d: %v after pruning dead units, %v before", i, got[i], want[i])
		}
	}
}

// TestUnstructured: every row of every layer matrix has its share of zeros
// (N:M: at most N nonzero of every M), other tensors are untouched.
func TestUnstructured(t *testing.T) {
	src := loadModel(t, backendtest.Synth(t, "tiny", gguf.F32, 13))
	toks := src.Tok.Encode(strings.Repeat("a small test of the wanda scores ", 10), true, false)
	st, err := quant.Calibrate(context.Background(), src, toks, quant.CalibOptions{Ctx: 32, Chunks: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{
		{Sparsity: 0.5},
		{Sparsity: 0.3, Method: Wanda, Stats: st},
		{N: 2, M: 4},
		{N: 2, M: 4, Method: Wanda, Stats: st},
		{N: 1, M: 8, FFNKeep: 0.5},
	} {
		p, info := prune(t, src, o)
		for l := range p.Layers {
			for _, kind := range []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"} {
				mt := tensorOf(&p.Layers[l], kind)
				v := mt.Float32s()
				if o.M > 0 {
					if !ValidNM(v, mt.Cols, o.N, o.M) {
						t.Fatalf("%+v: %s breaks %d:%d", o, mt.Name, o.N, o.M)
					}
					continue
				}
				for r := 0; r < mt.Rows; r++ {
					zeros := 0
					for _, x := range v[r*mt.Cols : (r+1)*mt.Cols] {
						if x == 0 {
							zeros++
						}
					}
					if zeros < perRow(mt.Cols, o) {
						t.Fatalf("%+v: %s row %d has %d zeros", o, mt.Name, r, zeros)
					}
				}
			}
		}
		want := 0.5
		if o.Sparsity > 0 {
			want = o.Sparsity
		} else if o.M == 8 {
			want = 7.0 / 8
		}
		if math.Abs(info.Sparsity()-want) > 0.02 {
			t.Errorf("%+v: sparsity %v", o, info.Sparsity())
		}
		if !slices.Equal(p.TokEmbd.Float32s(), src.TokEmbd.Float32s()) {
			t.Errorf("%+v: the embedding changed", o)
		}
	}
}

// TestWandaKeepsBigActivations: with one input column's activations far
// larger than the rest, Wanda keeps that column's weights where magnitude
// pruning would drop the smaller ones.
func TestScores(t *testing.T) {
	row := []float32{0.1, -0.5, 0.2, 0.05}
	s := make([]float64, 4)
	rowScores(s, row, []float64{100, 1, 1, 1})
	r := slices.Clone(row)
	zeroLowest(r, s, 2, nil)
	if !slices.Equal(r, []float32{0.1, -0.5, 0, 0}) {
		t.Errorf("wanda kept %v", r)
	}
	rowScores(s, row, nil)
	r = slices.Clone(row)
	zeroLowest(r, s, 2, nil)
	if !slices.Equal(r, []float32{0, -0.5, 0.2, 0}) {
		t.Errorf("magnitude kept %v", r)
	}
	// Ties: exactly n zeroed.
	r = []float32{1, 1, 1, 1, 1}
	rowScores(s[:0:0], nil, nil)
	ts := []float64{1, 1, 1, 1, 1}
	if n := zeroLowest(r, ts, 3, nil); n != 3 || slices.Index(r, 0) < 0 || countZeros(r) != 3 {
		t.Errorf("ties: %v", r)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		a := make([]float64, 1+rng.IntN(40))
		for i := range a {
			a[i] = float64(rng.IntN(10))
		}
		k := rng.IntN(len(a))
		sorted := slices.Sorted(slices.Values(a))
		if got := nthSmallest(slices.Clone(a), k); got != sorted[k] {
			t.Fatalf("nthSmallest(%v, %d) = %v, want %v", a, k, got, sorted[k])
		}
	}
}

func countZeros(v []float32) int {
	n := 0
	for _, x := range v {
		if x == 0 {
			n++
		}
	}
	return n
}

// TestRefit: when a removed column is a multiple of a kept one over the
// calibration data, refitting moves its weight onto the kept column.
func TestRefit(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, tokens = 4, 200
	gram := make([]float64, n*n)
	for range tokens {
		x := []float64{rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64(), 0}
		x[3] = 2 * x[1]
		for i := range x {
			for j := range x {
				gram[i*n+j] += x[i] * x[j]
			}
		}
	}
	r, err := refit(gram, n, []int{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	w := []float64{1, 1, 1, 1} // the row; column 3 goes
	got := make([]float64, 3)
	for j := range got {
		for c := range w {
			got[j] += r[j*n+c] * w[c]
		}
	}
	want := []float64{1, 3, 1}
	for j := range want {
		if math.Abs(got[j]-want[j]) > 0.05 {
			t.Errorf("refitted row %v, want about %v", got, want)
			break
		}
	}
	if _, err := refit(make([]float64, n*n), n, []int{0}); err == nil {
		t.Error("zero activations accepted")
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{
		{},
		{Sparsity: 1.5},
		{Sparsity: 0.5, N: 2, M: 4},
		{N: 4, M: 4},
		{N: 0, M: 4},
		{FFNKeep: 1.5},
		{HeadsKeep: math.NaN()},
		{Method: "random", Sparsity: 0.5},
		{Method: Wanda, Sparsity: 0.5},
	} {
		if o.validate() == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}

// TestDropGroups prunes whole KV groups of the real stories260K (8 heads
// in 4 groups; 0.75 keeps 3 groups) and checks shapes and that it runs.
func TestDropGroups(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "models", "stories260K", "stories260K-f32.gguf")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is absent: %v", path, err)
	}
	src := loadModel(t, path)
	p, info := prune(t, src, Options{HeadsKeep: 0.75})
	if p.Config.Heads != 6 || p.Config.KVHeads != 3 || info.KVTo != 3 || p.Layers[0].Wk.Rows != 3*src.Config.HeadDim {
		t.Fatalf("heads %d/%d, wk rows %d", p.Config.Heads, p.Config.KVHeads, p.Layers[0].Wk.Rows)
	}
	for _, v := range logits(t, p, prompt) {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite logits")
		}
	}
}
