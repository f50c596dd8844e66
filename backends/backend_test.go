package backends

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/octet-dev/octet/model"
)

// Validate accepts the batches the scheduler builds (runs of different
// sequences, sharing read-only prefix blocks) and refuses runs that read or
// write what another run of the same step writes.
func TestValidateCrossRunBlocks(t *testing.T) {
	const vocab, bs, blocks = 10, 4, 8
	ok := map[string]Batch{
		"one run":                  {Runs: []Run{{Tokens: []int32{1, 2}, Blocks: []int32{0}}}},
		"two sequences":            {Runs: []Run{{Tokens: []int32{1}, Pos: 2, Blocks: []int32{0}}, {Tokens: []int32{2}, Pos: 2, Blocks: []int32{1}}}},
		"shared read-only prefix":  {Runs: []Run{{Tokens: []int32{1}, Pos: 4, Blocks: []int32{0, 2}}, {Tokens: []int32{2, 3}, Pos: 4, Blocks: []int32{0, 3}}}},
		"unused blocks past a run": {Runs: []Run{{Tokens: []int32{1}, Blocks: []int32{0, 1}}, {Tokens: []int32{2}, Blocks: []int32{1}}}},
	}
	for name, b := range ok {
		if err := b.Validate(vocab, bs, blocks); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]Batch{
		"same sequence twice": {Runs: []Run{{Tokens: []int32{1}, Pos: 1, Blocks: []int32{0}}, {Tokens: []int32{2}, Pos: 2, Blocks: []int32{0}}}},
		"both write a block":  {Runs: []Run{{Tokens: []int32{1}, Pos: 4, Blocks: []int32{0, 2}}, {Tokens: []int32{2}, Pos: 4, Blocks: []int32{1, 2}}}},
		"reads a written one": {Runs: []Run{{Tokens: []int32{1}, Pos: 4, Blocks: []int32{0, 2}}, {Tokens: []int32{2}, Pos: 1, Blocks: []int32{0}}}},
	}
	for name, b := range bad {
		if err := b.Validate(vocab, bs, blocks); !errors.Is(err, ErrBadBatch) {
			t.Errorf("%s: error %v, want ErrBadBatch", name, err)
		}
	}
}

// The KV cache types parse from their names, and size a position's cache.
func TestKVType(t *testing.T) {
	for _, c := range []struct {
		name  string
		t     KVType
		bytes int
	}{{"f32", KVF32, 4}, {"f16", KVF16, 2}, {"q8", KVQ8, 1}} {
		got, err := ParseKVType(c.name)
		if err != nil || got != c.t || got.String() != c.name || got.Bytes() != c.bytes {
			t.Errorf("%s: %v %v, %s, %d bytes", c.name, got, err, got, got.Bytes())
		}
		// JSON (a JSON log line's kv_type) names it too.
		if b, err := json.Marshal(c.t); err != nil || string(b) != `"`+c.name+`"` {
			t.Errorf("%s in JSON: %s %v", c.name, b, err)
		}
	}
	for _, bad := range []string{"", "F16", "q8_0", "Q8", "bf16"} {
		if _, err := ParseKVType(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	m := &model.Model{Config: model.Config{HeadDim: 64}, Layers: []model.Layer{{KVHeads: 3}, {KVHeads: 1}}}
	if got := KVBytesPerPosition(m, KVF16); got != 2*(3+1)*64*2 {
		t.Errorf("KVBytesPerPosition = %d, want %d", got, 2*(3+1)*64*2)
	}
	// q8: a byte per value and a float32 scale per KV head, keys and values.
	if got := KVBytesPerPosition(m, KVQ8); got != 2*(3+1)*(64+4) {
		t.Errorf("KVBytesPerPosition(q8) = %d, want %d", got, 2*(3+1)*(64+4))
	}
}

func TestQ8Round(t *testing.T) {
	for _, c := range []struct {
		x, want []float32
		d       float32
	}{
		{[]float32{0, 0, 0}, []float32{0, 0, 0}, 0},
		// the largest value is exact; the others land on multiples of 1/127
		{[]float32{-2.54, 1, 0.011, 0.029}, []float32{-2.54, 1, 0.02, 0.02}, 0.02},
		// ties: 0.5 and 1.5 steps round to even (0 and 2)
		{[]float32{127, 0.5, 1.5, -0.5, -2.5}, []float32{127, 0, 2, 0, -2}, 1},
		// rows too small to scale, or with a NaN or an infinity: zeros
		{[]float32{1e-31, -1e-32}, []float32{0, 0}, 0},
		{[]float32{1, float32(math.NaN()), 2}, []float32{0, 0, 0}, 0},
		{[]float32{1, float32(math.Inf(-1))}, []float32{0, 0}, 0},
	} {
		x := slices.Clone(c.x)
		d := Q8Round(x)
		if math.Abs(float64(d-c.d)) > 1e-7 {
			t.Errorf("%v: scale %g, want %g", c.x, d, c.d)
		}
		for i := range x {
			if math.Abs(float64(x[i]-c.want[i])) > 1e-6 {
				t.Errorf("%v: rounded to %v, want %v", c.x, x, c.want)
				break
			}
		}
	}
	// Every rounded value is an integer multiple of the scale within ±127
	// of it, and within half a step of the value it replaces.
	rng := rand.New(rand.NewPCG(1, 1))
	for range 200 {
		n := 1 + rng.IntN(300)
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()*3))
		}
		y := slices.Clone(x)
		d := Q8Round(y)
		for i := range y {
			q := float64(y[i]) / float64(d)
			if math.Abs(q-math.Round(q)) > 1e-3 || math.Abs(q) > 127.001 || math.Abs(float64(y[i]-x[i])) > 0.5001*float64(d) {
				t.Fatalf("x[%d] = %g → %g, scale %g", i, x[i], y[i], d)
			}
		}
	}
}

type holder struct {
	Backend
	holds KVType
}

type plain struct{ Backend }

func (h holder) HoldsKV(t KVType) bool { return t == KVF32 || t == h.holds }

// prefers holds f16 and names f32 as what it serves best.
type prefers struct{ holder }

func (prefers) PreferredKV() KVType { return KVF32 }

// kv_type = "auto" is what a backend names, else f16 only where it says it
// holds f16; a named type is itself whatever the backend.
func TestPreferredKV(t *testing.T) {
	for _, c := range []struct {
		name string
		b    Backend
		want KVType
	}{
		{"holds f16", holder{holds: KVF16}, KVF16},
		{"holds f32 only", holder{holds: KVF32}, KVF32},
		{"says nothing", plain{}, KVF32},
		{"holds f16, prefers f32", prefers{holder{holds: KVF16}}, KVF32},
	} {
		if got := PreferredKV(c.b); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
		if got, err := ResolveKVType("auto", c.b); got != c.want || err != nil {
			t.Errorf("%s: auto resolves to %s (%v), want %s", c.name, got, err, c.want)
		}
		if got, err := ResolveKVType("f16", c.b); got != KVF16 || err != nil {
			t.Errorf("%s: f16 resolves to %s (%v)", c.name, got, err)
		}
		if _, err := ResolveKVType("f64", c.b); err == nil {
			t.Errorf("%s: f64 accepted", c.name)
		}
	}
}

// NewLogits lays out the rows a batch asks for, in the memory of the Logits
// it may reuse when that is large enough.
func TestNewLogitsReuse(t *testing.T) {
	const vocab = 5
	two := &Batch{Runs: []Run{{Tokens: []int32{1, 2, 3}, Logits: LogitsAll}, {Tokens: []int32{4}, Logits: LogitsNone}, {Tokens: []int32{5, 6}, Logits: LogitsLast}}}
	l := NewLogits(two, vocab)
	if want := []int{0, 3, 3, 4}; !slices.Equal(l.Offsets, want) || len(l.Data) != 4*vocab || l.Vocab != vocab {
		t.Fatalf("offsets %v (want %v), %d values", l.Offsets, want, len(l.Data))
	}
	one := &Batch{Runs: []Run{{Tokens: []int32{7}, Logits: LogitsLast}}, Reuse: l}
	got := NewLogits(one, vocab)
	if got != l || &got.Data[0] != &l.Data[0] || len(got.Data) != vocab || !slices.Equal(got.Offsets, []int{0, 1}) {
		t.Errorf("smaller step: %d values, offsets %v, reused %v", len(got.Data), got.Offsets, got == l && &got.Data[0] == &l.Data[0])
	}
	five := &Batch{Runs: []Run{{Tokens: []int32{1, 2, 3, 4, 5}, Logits: LogitsAll}}, Reuse: got}
	if big := NewLogits(five, vocab); len(big.Data) != 5*vocab || !slices.Equal(big.Offsets, []int{0, 5}) {
		t.Errorf("larger step: %d values, offsets %v", len(big.Data), big.Offsets)
	}
}
