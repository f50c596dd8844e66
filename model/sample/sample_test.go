package sample

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

var logits = []float32{1, 3, 2.5, -1, 0, 2.9}

func draws(p Params, n int) []int32 {
	s := New(p)
	out := make([]int32, n)
	for i := range out {
		out[i] = s.Sample(logits)
	}
	return out
}

func TestGreedy(t *testing.T) {
	for _, p := range []Params{
		Greedy(),
		{Temperature: 0, TopK: 3, TopP: 0.1, Seed: 9},
		{Temperature: 1, TopK: 1, Seed: 1},
		{Temperature: 1, TopP: 1e-6, Seed: 2},
		{Temperature: 1, MinP: 1, Seed: 3},
	} {
		for _, id := range draws(p, 50) {
			if id != 1 {
				t.Fatalf("%+v drew %d, want the argmax 1", p, id)
			}
		}
	}
}

func TestSeedDeterminism(t *testing.T) {
	p := Params{Temperature: 1, TopP: 1, Seed: 42}
	a, b := draws(p, 200), draws(p, 200)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed differs at %d", i)
		}
	}
	p.Seed = 43
	c := draws(p, 200)
	same := 0
	for i := range a {
		if a[i] == c[i] {
			same++
		}
	}
	if same == len(a) {
		t.Error("different seeds gave identical draws")
	}
}

// TestDistribution: with temperature T the draw frequencies follow
// softmax(logits/T). The seed is fixed, so the test is deterministic; the
// tolerance is five standard deviations of a binomial count.
func TestDistribution(t *testing.T) {
	const n = 20000
	for _, temp := range []float32{0.5, 1, 2} {
		counts := make([]int, len(logits))
		for _, id := range draws(Params{Temperature: temp, TopP: 1, Seed: 7}, n) {
			counts[id]++
		}
		var z float64
		for _, l := range logits {
			z += math.Exp(float64(l / temp))
		}
		for i, l := range logits {
			p := math.Exp(float64(l/temp)) / z
			sd := math.Sqrt(n * p * (1 - p))
			if d := math.Abs(float64(counts[i]) - n*p); d > 5*sd+1 {
				t.Errorf("T=%g token %d: %d draws, expected %.0f ± %.0f", temp, i, counts[i], n*p, sd)
			}
		}
	}
}

func TestTruncations(t *testing.T) {
	allowed := func(p Params) map[int32]bool {
		m := map[int32]bool{}
		for _, id := range draws(p, 3000) {
			m[id] = true
		}
		return m
	}
	// top-k 2 keeps tokens 1 (3.0) and 5 (2.9).
	if got := allowed(Params{Temperature: 1, TopK: 2, Seed: 1}); len(got) != 2 || !got[1] || !got[5] {
		t.Errorf("top-k 2 drew %v", got)
	}
	// min-p 0.6 relative to p(1): p(5)/p(1)=e^-0.1≈0.90 stays, p(2)/p(1)=e^-0.5≈0.61 stays, p(0)/p(1)=e^-2 goes.
	if got := allowed(Params{Temperature: 1, MinP: 0.6, Seed: 1}); len(got) != 3 || !got[2] {
		t.Errorf("min-p 0.6 drew %v", got)
	}
	// top-p 0.5: p(1)≈0.37, p(5)≈0.33 reach it together.
	if got := allowed(Params{Temperature: 1, TopP: 0.5, Seed: 1}); len(got) != 2 || !got[1] || !got[5] {
		t.Errorf("top-p 0.5 drew %v", got)
	}
}

func TestPenalties(t *testing.T) {
	// Repetition penalty divides positive logits: token 1 (3.0) / 2 = 1.5
	// falls below token 5 (2.9).
	s := New(Params{RepeatPenalty: 2, RepeatLastN: 4})
	s.Accept(1)
	if id := s.Sample(logits); id != 5 {
		t.Errorf("repeat penalty: drew %d, want 5", id)
	}
	// Outside the window the penalty no longer applies.
	for _, id := range []int32{0, 0, 0, 0} {
		s.Accept(id)
	}
	if id := s.Sample(logits); id != 1 {
		t.Errorf("repeat window: drew %d, want 1", id)
	}
	// Frequency penalty counts occurrences: 3.0 - 0.06 = 2.94 > 2.9, 3.0 - 2×0.06 = 2.88 < 2.9.
	s = New(Params{FrequencyPenalty: 0.06})
	s.Accept(1)
	if id := s.Sample(logits); id != 1 {
		t.Errorf("frequency penalty once: drew %d, want 1", id)
	}
	s.Accept(1)
	if id := s.Sample(logits); id != 5 {
		t.Errorf("frequency penalty twice: drew %d, want 5", id)
	}
	// Presence penalty applies once, whatever the count.
	s = New(Params{PresencePenalty: 0.5})
	s.Accept(5)
	s.Accept(5)
	if id := s.Sample([]float32{0, 1, 0, 0, 0, 1.4}); id != 1 {
		t.Errorf("presence penalty: drew %d, want 1", id)
	}
	// The logits passed in are not modified.
	before := append([]float32(nil), logits...)
	s.Sample(logits)
	for i := range logits {
		if logits[i] != before[i] {
			t.Fatal("Sample modified its input")
		}
	}
}

// The logit bias is added after the penalties, greedy or sampled: -100
// bans a token, 100 forces one, and a small bias reorders close logits.
func TestLogitBias(t *testing.T) {
	// Greedy: token 1 (3.0) leads token 5 (2.9).
	if id := New(Params{LogitBias: []Bias{{ID: 5, Value: 0.2}}}).Sample(logits); id != 5 {
		t.Errorf("greedy, +0.2 on token 5: drew %d, want 5", id)
	}
	if id := New(Params{LogitBias: []Bias{{ID: 1, Value: -100}}}).Sample(logits); id != 5 {
		t.Errorf("greedy, token 1 banned: drew %d, want 5", id)
	}
	// After the penalties: 3.0 / 2 + 1.5 = 3.0 leads 2.9 (the bias first
	// would give (3.0 + 1.5) / 2 = 2.25).
	s := New(Params{RepeatPenalty: 2, LogitBias: []Bias{{ID: 1, Value: 1.5}}})
	s.Accept(1)
	if id := s.Sample(logits); id != 1 {
		t.Errorf("repeat penalty then bias: drew %d, want 1", id)
	}
	// Sampled: a banned token never comes, a forced one always.
	ban := New(Params{Temperature: 1, TopP: 1, Seed: 3, LogitBias: []Bias{{ID: 1, Value: -100}, {ID: 5, Value: -100}}})
	force := New(Params{Temperature: 1.5, TopP: 1, Seed: 4, LogitBias: []Bias{{ID: 2, Value: 100}}})
	for range 500 {
		if id := ban.Sample(logits); id == 1 || id == 5 {
			t.Fatalf("drew banned token %d", id)
		}
		if id := force.Sample(logits); id != 2 {
			t.Fatalf("drew %d, not the forced token 2", id)
		}
	}
	// A bias on an id past the row is ignored (the server refuses it first).
	if id := New(Params{LogitBias: []Bias{{ID: 1 << 20, Value: 100}}}).Sample(logits); id != 1 {
		t.Errorf("bias past the row: drew %d", id)
	}
}

func TestValidate(t *testing.T) {
	nan := float32(math.NaN())
	bad := []Params{
		{Temperature: -0.1}, {Temperature: nan}, {TopK: -1}, {TopP: 1.5}, {TopP: -0.1},
		{MinP: 2}, {RepeatPenalty: -1}, {RepeatLastN: -1}, {FrequencyPenalty: 3}, {PresencePenalty: -2.5},
		{LogitBias: []Bias{{ID: -1, Value: 1}}}, {LogitBias: []Bias{{ID: 3, Value: 100.5}}}, {LogitBias: []Bias{{ID: 3, Value: nan}}},
	}
	for _, p := range bad {
		if p.Validate() == nil {
			t.Errorf("%+v validated", p)
		}
	}
	if err := (Params{Temperature: 0.7, TopK: 40, TopP: 0.9, MinP: 0.05, RepeatPenalty: 1.1}).Validate(); err != nil {
		t.Error(err)
	}
}

// top-p by selection (nucleus) keeps exactly the candidates, in the same
// order, that sorting every candidate keeps: over flat and peaked
// distributions, small and large vocabularies.
func TestNucleusMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{10, 300, 5000, 49152} {
		for _, scale := range []float64{0.1, 1, 5, 20} {
			for _, tp := range []float32{0.05, 0.5, 0.9, 0.99, 0.999} {
				cs := make([]cand, n)
				for i := range cs {
					cs[i] = cand{id: int32(i), logit: float32(rng.NormFloat64() * scale)}
				}
				cs[rng.IntN(n)].logit = cs[rng.IntN(n)].logit // a tie
				ref := slices.Clone(cs)
				New(Params{}).softmax(ref)
				slices.SortFunc(ref, byLogit)
				want := nucleusOfSorted(ref, tp)
				got := New(Params{}).nucleus(cs, tp)
				if !slices.Equal(got, want) {
					t.Fatalf("n %d scale %g top-p %g: %d candidates, want %d", n, scale, tp, len(got), len(want))
				}
			}
		}
	}
}

// topK leaves cs a permutation of its candidates (nucleus selects again
// from it), with the k best first.
func TestTopKPermutes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cs := make([]cand, 1000)
	for i := range cs {
		cs[i] = cand{id: int32(i), logit: float32(rng.NormFloat64())}
	}
	ref := slices.Clone(cs)
	slices.SortFunc(ref, byLogit)
	for _, k := range []int{1, 7, 64, 512} {
		if h := topK(cs, k); !slices.Equal(h, ref[:k]) {
			t.Fatalf("top %d: not the %d best", k, k)
		}
		ids := make([]int32, len(cs))
		for i, c := range cs {
			ids[i] = c.id
		}
		slices.Sort(ids)
		for i, id := range ids {
			if id != int32(i) {
				t.Fatalf("after top %d: candidate %d lost", k, i)
			}
		}
	}
}

// Greedy without penalties reads the row directly: the same token as the
// candidates' argmax, ties to the lowest id, NaN and infinities included.
func TestGreedyRow(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	rows := [][]float32{
		{1, 3, 3, 2}, {-inf, -inf}, {nan, 1, 2}, {1, nan, 2}, {0, inf, inf}, {-1}, {2, 1, -inf, 2},
	}
	// and rows of every length up to 40 (the four running maxima and the
	// tail), of few distinct values, so that the largest is often tied
	rng := rand.New(rand.NewPCG(9, 10))
	vals := []float32{-inf, -2, 0, 1, 5, inf, nan}
	for n := 1; n <= 40; n++ {
		for range 50 {
			r := make([]float32, n)
			for i := range r {
				r[i] = vals[rng.IntN(len(vals))]
			}
			rows = append(rows, r)
		}
	}
	for _, r := range rows {
		cs := make([]cand, len(r))
		for i, l := range r {
			cs[i] = cand{id: int32(i), logit: l}
		}
		if got, want := New(Greedy()).Sample(r), argmax(cs); got != want {
			t.Errorf("%v: %d, want %d", r, got, want)
		}
	}
}

// expNeg is math.Exp to 1e-12 (relative) over the range it serves.
func TestExpNeg(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	xs := []float64{0, math.Copysign(0, -1), -1e-300, -1e-17, -0.0054, -0.34657359027997264, -1, -50, -87.3, -103.9, -699.99, -700}
	for range 200000 {
		xs = append(xs, -rng.ExpFloat64()*30, -rng.Float64()*700)
	}
	for _, x := range xs {
		if got, want := expNeg(x), math.Exp(x); math.Abs(got-want) > 1e-12*want {
			t.Fatalf("expNeg(%g) = %g, want %g", x, got, want)
		}
	}
	for _, x := range []float64{-700.0000001, -1e6, math.Inf(-1)} {
		if got := expNeg(x); got != 0 {
			t.Errorf("expNeg(%g) = %g, want 0", x, got)
		}
	}
	if got := expNeg(math.NaN()); !math.IsNaN(got) {
		t.Errorf("expNeg(NaN) = %g", got)
	}
}

// LogSumExp is log Σ e^l computed with math.Exp, for rows of every length
// around its blocks.
func TestLogSumExp(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{1, 2, 255, 256, 257, 600, 49152} {
		row := make([]float32, n)
		for i := range row {
			row[i] = float32(rng.NormFloat64() * 4)
		}
		hi := float64(slices.Max(row))
		var z float64
		for _, l := range row {
			z += math.Exp(float64(l) - hi)
		}
		if got, want := LogSumExp(row), hi+math.Log(z); math.Abs(got-want) > 1e-9 {
			t.Errorf("%d logits: %.12g, want %.12g", n, got, want)
		}
	}
	if got := LogSumExp(nil); !math.IsInf(got, -1) {
		t.Errorf("no logits: %g, want -Inf", got)
	}
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	if got, want := LogSumExp([]float32{-inf, 2, -inf, 2}), 2+math.Log(2); math.Abs(got-want) > 1e-12 {
		t.Errorf("with -Inf: %g, want %g", got, want)
	}
	for _, row := range [][]float32{{1, inf}, {-inf, -inf}, {1, nan, 2}} {
		if got := LogSumExp(row); !math.IsNaN(got) {
			t.Errorf("%v: %g, want NaN", row, got)
		}
	}
}

// BenchmarkSample49k: one draw at a 135M model's vocabulary, for each path
// of the chain.
func BenchmarkSample49k(b *testing.B) {
	l := make([]float32, 49152)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range l {
		l[i] = float32(rng.NormFloat64() * 3)
	}
	for _, c := range []struct {
		name string
		p    Params
	}{
		{"greedy", Greedy()},
		{"temperature", Params{Temperature: 1, TopP: 1, RepeatPenalty: 1, Seed: 1}},
		{"top_p", Params{Temperature: 0.8, TopP: 0.9, RepeatPenalty: 1, Seed: 1}},
		{"top_k", Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1, Seed: 1}},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := New(c.p)
			for b.Loop() {
				s.Sample(l)
			}
		})
	}
}

// maxSource is a random source at its largest value: draws land on the
// end of the distribution, where float32 rounding is.
type maxSource struct{}

func (maxSource) Uint64() uint64 { return ^uint64(0) }

// A draw whose running sum rounds away (many tiny weights before a large
// one) falls back on the last candidate of weight, never on one of none:
// under a JSON mask or a -100 bias that one is ruled out.
func TestDrawNeverPicksZeroWeight(t *testing.T) {
	s := &Sampler{rng: rand.New(maxSource{})}
	var cs []cand
	for i := range 100 {
		cs = append(cs, cand{id: int32(i), p: 1e-8})
	}
	cs = append(cs, cand{id: 500, p: 1}, cand{id: 501, p: 0})
	if id := s.draw(cs); id != 500 {
		t.Errorf("drew %d, want 500 (501 has no weight)", id)
	}
}
