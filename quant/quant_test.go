package quant

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends/backendtest"
	"github.com/octet-dev/octet/eval/evaltest"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// roundTripBound is the largest error int8 with scale d may make on a value
// of magnitude ≤ amax: half a step, plus what storing d as fp16 costs at
// the extremes: 127 times half an fp16 ulp of d (relative 2⁻¹¹, or 2⁻²⁵
// absolute where d is subnormal in fp16).
func roundTripBound(d, amax float64) float64 {
	return d/2 + 127*max(d*math.Pow(2, -11), math.Pow(2, -25)) + 1e-9*amax
}

func TestEncodeRowRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, scheme := range []Scheme{Block, Channel} {
		for trial := 0; trial < 50; trial++ {
			row := make([]float32, 128)
			scale := math.Pow(10, rng.Float64()*6-4)
			for i := range row {
				row[i] = float32(rng.NormFloat64() * scale)
			}
			if trial%5 == 0 {
				row[rng.IntN(len(row))] *= 50 // an outlier
			}
			if trial%7 == 0 {
				clear(row[32:64]) // an all-zero block
			}
			enc := EncodeRow(nil, gguf.Q8_0, scheme, row)
			if len(enc) != gguf.Q8_0.RowBytes(len(row)) {
				t.Fatalf("encoded %d bytes", len(enc))
			}
			got := make([]float32, len(row))
			gguf.Dequantize(gguf.Q8_0, enc, got)
			rowMax := 0.0
			for _, v := range row {
				rowMax = max(rowMax, math.Abs(float64(v)))
			}
			for b := 0; b < len(row)/32; b++ {
				amax := 0.0
				for _, v := range row[b*32 : (b+1)*32] {
					amax = max(amax, math.Abs(float64(v)))
				}
				if scheme == Channel {
					amax = rowMax
				}
				bound := roundTripBound(amax/127, amax)
				for i := b * 32; i < (b+1)*32; i++ {
					if e := math.Abs(float64(got[i] - row[i])); e > bound {
						t.Fatalf("scheme %d: element %d: %g → %g, error %g > %g", scheme, i, row[i], got[i], e, bound)
					}
				}
			}
		}
	}
}

func loadModel(t *testing.T, path string) *model.Model { return backendtest.Load(t, path) }

func build(t *testing.T, m *model.Model, o Options) (*model.Model, Info) {
	t.Helper()
	w, info, err := Build(m, o)
	if err != nil {
		t.Fatal(err)
	}
	return evaltest.WriteLoad(t, w), info
}

// TestBuildBounds quantizes a synthesized F32 model: every matrix becomes
// Q8_0, norms stay F32, and every weight is within the round-trip bound.
func TestBuildBounds(t *testing.T) {
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.F16, gguf.BF16} {
		testBuildBounds(t, loadModel(t, backendtest.Synth(t, "tiny", typ, 7)))
	}
}

func testBuildBounds(t *testing.T, src *model.Model) {
	for _, scheme := range []string{TypeQ8_0, TypeInt8Channel} {
		q, info := build(t, src, Options{Type: scheme})
		if info.Quantized != len(src.Matrices())+1 || len(info.Kept) != 0 { // + token_embd
			t.Errorf("%s: %d quantized, kept %v", scheme, info.Quantized, info.Kept)
		}
		if v, _ := q.File.String("octet.quant.type"); v != scheme {
			t.Errorf("octet.quant.type = %q", v)
		}
		for i, mt := range src.Matrices() {
			qt := q.Matrices()[i]
			if qt.Type != gguf.Q8_0 {
				t.Fatalf("%s is %s", qt.Name, qt.Type)
			}
			a, b := make([]float32, mt.Cols), make([]float32, mt.Cols)
			for r := 0; r < mt.Rows; r++ {
				mt.DequantizeRow(r, a)
				qt.DequantizeRow(r, b)
				amax := 0.0
				for _, v := range a {
					amax = max(amax, math.Abs(float64(v)))
				}
				for j := range a {
					if e := math.Abs(float64(a[j] - b[j])); e > roundTripBound(amax/127, amax) {
						t.Fatalf("%s: %s[%d,%d] error %g", scheme, mt.Name, r, j, e)
					}
				}
			}
		}
		if q.Layers[0].AttnNorm.Type != gguf.F32 {
			t.Errorf("norm became %s", q.Layers[0].AttnNorm.Type)
		}
	}
	if _, _, err := Build(src, Options{Type: "q4_0"}); err == nil {
		t.Error("unknown type accepted")
	}
	if _, _, err := Build(src, Options{Smooth: 0.5}); err == nil {
		t.Error("smoothing without statistics accepted")
	}
}

// TestPadFFN pads the real stories260K (feed-forward 172) to 192: the new
// neurons are zero, the rest within bounds, and ffn_down is Q8_0; without
// padding ffn_down stays F16.
func TestPadFFN(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "models", "stories260K", "stories260K-f32.gguf")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is absent: %v", path, err)
	}
	src := loadModel(t, path)
	q, info := build(t, src, Options{PadFFN: true})
	if q.Config.FFN != 192 || info.FFNTo[0] != 192 || q.Layers[0].Down.Type != gguf.Q8_0 {
		t.Fatalf("padded FFN %d, down %s", q.Config.FFN, q.Layers[0].Down.Type)
	}
	up := q.Layers[0].Up.Float32s()
	for _, v := range up[172*q.Config.Dim:] {
		if v != 0 {
			t.Fatal("padding neuron is not zero")
		}
	}
	down := q.Layers[0].Down
	row := make([]float32, down.Cols)
	for r := 0; r < down.Rows; r++ {
		down.DequantizeRow(r, row)
		for _, v := range row[172:] {
			if v != 0 {
				t.Fatal("padding column of ffn_down is not zero")
			}
		}
	}
	plain, info := build(t, src, Options{})
	if plain.Layers[0].Down.Type != gguf.F16 || len(info.Kept) != src.Config.Layers {
		t.Errorf("unpadded ffn_down is %s, kept %v", plain.Layers[0].Down.Type, info.Kept)
	}
}

// TestSmoothingKeepsFunction: dividing a norm by s and multiplying the
// columns that read it by s leaves every layer's input unchanged.
func TestSmoothingKeepsFunction(t *testing.T) {
	m := loadModel(t, backendtest.Synth(t, "tiny", gguf.F32, 9))
	toks := m.Tok.Encode(strings.Repeat("the quick brown fox jumps over the lazy dog ", 8), true, false)
	st, err := Calibrate(context.Background(), m, toks, CalibOptions{Ctx: 32, Chunks: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.Tokens != 64 || len(st.HeadOut) != m.Config.Layers {
		t.Fatalf("stats of %d tokens, %d layers", st.Tokens, len(st.HeadOut))
	}
	sm := newSmoothing(m, st, 0.5)
	l := m.Layers[0]
	norm := make([]float32, m.Config.Dim)
	if err := sm.norm(l.AttnNorm.Name, func(_ int, dst []float32) error { l.AttnNorm.DequantizeRow(0, dst); return nil })(0, norm); err != nil {
		t.Fatal(err)
	}
	orig, smoothed := make([]float32, l.Wq.Cols), make([]float32, l.Wq.Cols)
	src := func(r int, dst []float32) error { l.Wq.DequantizeRow(r, dst); return nil }
	w := l.AttnNorm.Float32s()
	for r := 0; r < l.Wq.Rows; r++ {
		l.Wq.DequantizeRow(r, orig)
		sm.matrix(l.Wq.Name, src, l.Wq.Cols)(r, smoothed)
		var a, b float64 // the row's product with the norm weights
		for j := range orig {
			a += float64(orig[j] * w[j])
			b += float64(smoothed[j] * norm[j])
		}
		if math.Abs(a-b) > 1e-4*(1+math.Abs(a)) {
			t.Fatalf("row %d: %v before, %v after smoothing", r, a, b)
		}
	}
}

// BenchmarkEncodeRow measures quantization throughput (input GB/s) on a
// tinyllama-1.1b feed-forward row.
func BenchmarkEncodeRow(b *testing.B) {
	row := make([]float32, 5632)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range row {
		row[i] = float32(rng.NormFloat64() * 0.02)
	}
	for _, s := range []struct {
		name   string
		scheme Scheme
	}{{"q8_0", Block}, {"int8-channel", Channel}} {
		b.Run(s.name, func(b *testing.B) {
			buf := make([]byte, 0, gguf.Q8_0.RowBytes(len(row)))
			b.SetBytes(int64(4 * len(row)))
			for b.Loop() {
				buf = EncodeRow(buf[:0], gguf.Q8_0, s.scheme, row)
			}
		})
	}
}
