package ref

import (
	"math"
	"testing"

	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol*math.Max(1, math.Abs(b)) }

func TestRMSNorm(t *testing.T) {
	x := []float32{1, 2, 3, 4}
	w := []float32{1, 1, 2, 0.5}
	dst := make([]float32, 4)
	RMSNorm(dst, x, w, 0)
	rms := math.Sqrt((1 + 4 + 9 + 16) / 4.0)
	for i := range x {
		if want := float64(x[i]) / rms * float64(w[i]); !near(float64(dst[i]), want, 1e-6) {
			t.Errorf("dst[%d] = %g, want %g", i, dst[i], want)
		}
	}
}

func TestRope(t *testing.T) {
	rc := model.RopeConfig{Dims: 4, Base: 10000, FreqScale: 1}
	x := []float32{1, 2, 3, 4, 5, 6}
	y := append([]float32(nil), x...)
	Rope(y, 1, 6, 0, rc, nil)
	for i := range x {
		if x[i] != y[i] {
			t.Fatalf("position 0 changed x: %v", y)
		}
	}
	// Normal order rotates (0,1) by pos·1 and (2,3) by pos·base^(-1/2).
	Rope(y, 1, 6, 3, rc, nil)
	rot := func(a, b, th float64) (float64, float64) {
		return a*math.Cos(th) - b*math.Sin(th), a*math.Sin(th) + b*math.Cos(th)
	}
	a, b := rot(1, 2, 3)
	c, d := rot(3, 4, 3/100.0)
	want := []float64{a, b, c, d, 5, 6}
	for i := range want {
		if !near(float64(y[i]), want[i], 1e-6) {
			t.Errorf("normal: y[%d] = %g, want %g", i, y[i], want[i])
		}
	}
	// NeoX order pairs (0,2) and (1,3).
	rc.NeoX = true
	y = append([]float32(nil), x...)
	Rope(y, 1, 6, 3, rc, nil)
	a, c = rot(1, 3, 3)
	b, d = rot(2, 4, 3/100.0)
	want = []float64{a, b, c, d, 5, 6}
	for i := range want {
		if !near(float64(y[i]), want[i], 1e-6) {
			t.Errorf("neox: y[%d] = %g, want %g", i, y[i], want[i])
		}
	}
	// Linear scaling by 2 at position 6 equals no scaling at position 3;
	// llama3 factors of 2 do the same.
	rc.NeoX = false
	s1 := append([]float32(nil), x...)
	Rope(s1, 1, 6, 3, rc, nil)
	s2 := append([]float32(nil), x...)
	rc.FreqScale = 0.5
	Rope(s2, 1, 6, 6, rc, nil)
	s3 := append([]float32(nil), x...)
	rc.FreqScale = 1
	Rope(s3, 1, 6, 6, rc, []float32{2, 2})
	for i := range s1 {
		if !near(float64(s1[i]), float64(s2[i]), 1e-6) || !near(float64(s1[i]), float64(s3[i]), 1e-6) {
			t.Errorf("scaling: %v %v %v", s1, s2, s3)
			break
		}
	}
}

func TestAttention(t *testing.T) {
	// Two query heads share one KV head; with one position the output is v.
	q := []float32{1, 0, 0, 1}
	k := []float32{0.5, 0.5}
	v := []float32{3, -2}
	out := make([]float32, 4)
	Attention(out, q, k, v, []int{0}, 2, 1, 2)
	for i, want := range []float32{3, -2, 3, -2} {
		if out[i] != want {
			t.Fatalf("out = %v", out)
		}
	}
	// Two positions with equal scores average their values.
	k = []float32{1, 1, 1, 1}
	v = []float32{2, 0, 0, 2}
	Attention(out[:2], []float32{1, 1}, k, v, []int{0, 1}, 1, 1, 2)
	if !near(float64(out[0]), 1, 1e-6) || !near(float64(out[1]), 1, 1e-6) {
		t.Fatalf("out = %v", out[:2])
	}
}

func TestMatMulTypes(t *testing.T) {
	w32 := make([]float32, 64)
	for i := range w32 {
		w32[i] = float32(i%7) / 7
	}
	x := make([]float32, 64)
	for i := range x {
		x[i] = float32(i%5) - 2
	}
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0} {
		tn := &model.Tensor{Type: typ, Rows: 2, Cols: 32, Data: gguf.Quantize(typ, nil, w32)}
		dst := make([]float32, 4)
		MatMul(dst, tn, x, 2, 2)
		for tk := 0; tk < 2; tk++ {
			for r := 0; r < 2; r++ {
				var want float64
				for c := 0; c < 32; c++ {
					want += float64(w32[r*32+c]) * float64(x[tk*32+c])
				}
				if !near(float64(dst[tk*2+r]), want, 0.02) {
					t.Errorf("%s: dst[%d][%d] = %g, want %g", typ, tk, r, dst[tk*2+r], want)
				}
			}
		}
	}
}

func TestSoftmaxAndSiLU(t *testing.T) {
	x := []float32{1, 2, 3, 1000}
	Softmax(x)
	if !near(float64(x[3]), 1, 1e-6) || x[0] < 0 {
		t.Errorf("softmax = %v", x)
	}
	dst := make([]float32, 2)
	SiLUGate(dst, []float32{0, 2}, []float32{5, 3})
	if dst[0] != 0 || !near(float64(dst[1]), 2/(1+math.Exp(-2))*3, 1e-6) {
		t.Errorf("silu = %v", dst)
	}
}
