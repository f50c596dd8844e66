// Package sample picks the next token from a model's logits.
//
// The chain, in order: repetition, frequency and presence penalties on the
// raw logits; the logit bias (added, as OpenAI's logit_bias); then, unless greedy, temperature; top-k; top-p (nucleus);
// min-p; and a draw from the remaining distribution. This is the order of
// Hugging Face transformers and vLLM (temperature before the truncations),
// so that top_p means what the OpenAI API documents. Temperature 0 is greedy
// (argmax, ties to the lowest id) and ignores the truncations.
//
// Each Sampler owns a PCG generator seeded from Params.Seed: the same seed,
// logits and history give the same tokens on every run and machine.
package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Params are the sampling settings of one request.
type Params struct {
	Temperature float32 // ≤ 0: greedy
	TopK        int     // 0: no limit
	TopP        float32 // 1 (or 0): no limit
	MinP        float32 // 0: no limit

	RepeatPenalty    float32 // 1 (or 0): off; >1 discourages repeats (llama.cpp / CTRL style)
	RepeatLastN      int     // how many recent tokens the penalties look at; 0: all
	FrequencyPenalty float32 // OpenAI: subtracted once per earlier occurrence
	PresencePenalty  float32 // OpenAI: subtracted once if the token occurred

	// LogitBias is added to the logits of its tokens after the penalties
	// (OpenAI's logit_bias: -100 all but bans a token, 100 all but forces
	// it), greedy or not.
	LogitBias []Bias

	Seed uint64
}

// Bias is one token's logit bias.
type Bias struct {
	ID    int32
	Value float32 // in [-100, 100]
}

// Greedy returns parameters for deterministic argmax decoding.
func Greedy() Params { return Params{TopP: 1, RepeatPenalty: 1} }

// Validate checks the ranges the OpenAI API and llama.cpp accept.
func (p Params) Validate() error {
	switch {
	case p.Temperature < 0 || p.Temperature > 100 || isNaN(p.Temperature):
		return fmt.Errorf("sample: temperature %g must be in [0, 100]", p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("sample: top_k %d must not be negative", p.TopK)
	case p.TopP < 0 || p.TopP > 1 || isNaN(p.TopP):
		return fmt.Errorf("sample: top_p %g must be in [0, 1]", p.TopP)
	case p.MinP < 0 || p.MinP > 1 || isNaN(p.MinP):
		return fmt.Errorf("sample: min_p %g must be in [0, 1]", p.MinP)
	case p.RepeatPenalty < 0 || p.RepeatPenalty > 10 || isNaN(p.RepeatPenalty):
		return fmt.Errorf("sample: repeat_penalty %g must be in [0, 10]", p.RepeatPenalty)
	case p.RepeatLastN < 0:
		return fmt.Errorf("sample: repeat_last_n %d must not be negative", p.RepeatLastN)
	case p.FrequencyPenalty < -2 || p.FrequencyPenalty > 2 || isNaN(p.FrequencyPenalty):
		return fmt.Errorf("sample: frequency_penalty %g must be in [-2, 2]", p.FrequencyPenalty)
	case p.PresencePenalty < -2 || p.PresencePenalty > 2 || isNaN(p.PresencePenalty):
		return fmt.Errorf("sample: presence_penalty %g must be in [-2, 2]", p.PresencePenalty)
	}
	for _, b := range p.LogitBias {
		switch {
		case b.ID < 0:
			return fmt.Errorf("sample: logit_bias names token %d; token ids are not negative", b.ID)
		case b.Value < -100 || b.Value > 100 || isNaN(b.Value):
			return fmt.Errorf("sample: logit_bias %g for token %d must be in [-100, 100]", b.Value, b.ID)
		}
	}
	return nil
}

func isNaN(f float32) bool { return f != f }

// Sampler draws tokens for one sequence. It is not safe for concurrent use.
type Sampler struct {
	p       Params
	rng     *rand.Rand
	history []int32 // tokens seen, for the penalties
	cands   []cand  // scratch
	counts  map[int32]int
}

type cand struct {
	id    int32
	logit float32
	p     float32
}

// New returns a sampler for p (which should have passed Validate).
func New(p Params) *Sampler {
	return &Sampler{
		p:      p,
		rng:    rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15)),
		counts: map[int32]int{},
	}
}

// Accept records a token of the sequence (prompt or generated) for the penalties.
func (s *Sampler) Accept(id int32) { s.history = append(s.history, id) }

// Sample returns the next token for logits (one row, left unchanged).
//
// It costs one pass over the vocabulary when greedy without penalties, and
// otherwise a copy, the penalties, one exp per token and, with top-k or
// top-p, a selection of the best candidates rather than a sort of them all.
// A draw is on every token's path: the backend's threads wait while the
// scheduler samples a step's sequences. At a 49152-token vocabulary (a 135M
// model) on the 2-core dev VM, top-p sorting every token took 6.6-6.9 ms a
// draw, longer than a forward step of eight sequences; selecting, 0.6 ms.
func (s *Sampler) Sample(logits []float32) int32 {
	if s.p.Temperature <= 0 && !s.penalizes() && len(s.p.LogitBias) == 0 {
		return argmaxRow(logits)
	}
	cs := s.cands[:0]
	for i, l := range logits {
		cs = append(cs, cand{id: int32(i), logit: l})
	}
	s.cands = cs
	s.penalize(cs)
	for _, b := range s.p.LogitBias {
		if int(b.ID) < len(cs) { // (the server checks ids against the vocabulary)
			cs[b.ID].logit += b.Value
		}
	}
	if s.p.Temperature <= 0 {
		return argmax(cs)
	}
	t := s.p.Temperature
	for i := range cs {
		cs[i].logit /= t
	}
	tp := s.p.TopP
	switch {
	case s.p.TopK > 0 && s.p.TopK < len(cs):
		cs = topK(cs, s.p.TopK)
		s.softmax(cs)
		cs = nucleusOfSorted(cs, tp)
	case tp > 0 && tp < 1:
		cs = s.nucleus(cs, tp)
	default:
		s.weigh(cs) // draw divides by the sum itself
	}
	if mp := s.p.MinP; mp > 0 {
		var top float32
		for _, c := range cs {
			top = max(top, c.p)
		}
		kept := cs[:0]
		for _, c := range cs {
			if c.p >= top*mp {
				kept = append(kept, c)
			}
		}
		cs = kept
	}
	return s.draw(cs)
}

// penalizes reports whether any penalty is on.
func (s *Sampler) penalizes() bool {
	p := s.p
	return (p.RepeatPenalty != 0 && p.RepeatPenalty != 1) || p.FrequencyPenalty != 0 || p.PresencePenalty != 0
}

// argmaxRow is argmax over a row of logits: the first of the largest (a
// NaN is never larger). Four lanes, each with its running maximum and
// where it is, let the comparisons overlap instead of waiting on one
// another: at 49k logits on the 2-vCPU dev VM, 33-49 µs with one running
// index, 19-21 µs so (BenchmarkSample49k/greedy, alternated).
func argmaxRow(logits []float32) int32 {
	if len(logits) == 0 {
		return 0
	}
	m0 := logits[0]
	m1, m2, m3 := m0, m0, m0
	var a0, a1, a2, a3 int
	i := 0
	for ; i+4 <= len(logits); i += 4 {
		v := logits[i : i+4 : i+4]
		if v[0] > m0 {
			m0, a0 = v[0], i
		}
		if v[1] > m1 {
			m1, a1 = v[1], i+1
		}
		if v[2] > m2 {
			m2, a2 = v[2], i+2
		}
		if v[3] > m3 {
			m3, a3 = v[3], i+3
		}
	}
	for ; i < len(logits); i++ {
		if logits[i] > m3 { // after every lane's index: a tie keeps theirs
			m3, a3 = logits[i], i
		}
	}
	best, at := m0, a0
	for _, l := range [...]struct {
		m float32
		a int
	}{{m1, a1}, {m2, a2}, {m3, a3}} {
		if l.m > best || (l.m == best && l.a < at) {
			best, at = l.m, l.a
		}
	}
	return int32(at)
}

// nucleusOfSorted keeps the fewest leading candidates (sorted by byLogit,
// p set) whose probabilities reach tp (all of them unless 0 < tp < 1).
func nucleusOfSorted(cs []cand, tp float32) []cand {
	if tp <= 0 || tp >= 1 {
		return cs
	}
	var cum float32
	for i := range cs {
		cum += cs[i].p
		if cum >= tp {
			return cs[:i+1]
		}
	}
	return cs
}

// nucleus is top-p over all of cs: it sets p (softmax over every
// candidate), then takes the best 64 candidates, 512, 4096, ... (topK,
// sorted) until their probabilities reach tp, and sorts all of cs instead
// once the next selection would take a quarter of them or more. The result
// is what sorting all of cs and keeping its nucleus gives.
func (s *Sampler) nucleus(cs []cand, tp float32) []cand {
	s.softmax(cs)
	for k := 64; k < len(cs)/4; k *= 8 {
		// (a nucleus of all k is taken again from the next, larger selection)
		if h := nucleusOfSorted(topK(cs, k), tp); len(h) < k {
			return h
		}
	}
	slices.SortFunc(cs, byLogit)
	return nucleusOfSorted(cs, tp)
}

// penalize applies the repetition, frequency and presence penalties over the
// last RepeatLastN tokens of the history.
func (s *Sampler) penalize(cs []cand) {
	p := s.p
	rep := p.RepeatPenalty != 0 && p.RepeatPenalty != 1
	if !rep && p.FrequencyPenalty == 0 && p.PresencePenalty == 0 {
		return
	}
	window := s.history
	if n := p.RepeatLastN; n > 0 && len(window) > n {
		window = window[len(window)-n:]
	}
	clear(s.counts)
	for _, id := range window {
		if id >= 0 && int(id) < len(cs) {
			s.counts[id]++
		}
	}
	for id, n := range s.counts {
		l := cs[id].logit
		if rep {
			if l > 0 {
				l /= p.RepeatPenalty
			} else {
				l *= p.RepeatPenalty
			}
		}
		l -= float32(n)*p.FrequencyPenalty + p.PresencePenalty
		cs[id].logit = l
	}
}

// byLogit orders candidates by descending logit, ties by id, so the order
// is total and results do not depend on the sort algorithm.
func byLogit(a, b cand) int {
	switch {
	case a.logit > b.logit:
		return -1
	case a.logit < b.logit:
		return 1
	}
	return int(a.id - b.id)
}

// topK returns the k best candidates, sorted by byLogit, in cs[:k] (the
// rest of cs holds the others), selecting with a min-heap of size k in
// O(n log k) rather than sorting all n.
func topK(cs []cand, k int) []cand {
	h := cs[:k]
	less := func(i, j int) bool { return byLogit(h[i], h[j]) > 0 } // worst on top
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= k {
				return
			}
			if r := l + 1; r < k && less(r, l) {
				l = r
			}
			if !less(l, i) {
				return
			}
			h[i], h[l] = h[l], h[i]
			i = l
		}
	}
	for i := k/2 - 1; i >= 0; i-- {
		down(i)
	}
	rest := cs[k:]
	for i := range rest {
		if byLogit(rest[i], h[0]) < 0 {
			h[0], rest[i] = rest[i], h[0] // cs stays a permutation of its candidates
			down(0)
		}
	}
	slices.SortFunc(h, byLogit)
	return h
}

func argmax(cs []cand) int32 {
	best := 0
	for i := range cs {
		if cs[i].logit > cs[best].logit {
			best = i
		}
	}
	return cs[best].id
}

// softmax fills p from the logits.
func (s *Sampler) softmax(cs []cand) {
	sum := s.weigh(cs)
	for i := range cs {
		cs[i].p = float32(float64(cs[i].p) / sum)
	}
}

// weigh sets each p to exp(logit - the largest logit), the softmax before
// its division by the sum, which it returns. The differences of each block
// of 256 go to a float64 array first: converting a float32 inside the exp
// loop made each iteration wait for the one before (the conversion writes
// only part of a register the loop keeps), 4× slower at 49152 tokens.
func (s *Sampler) weigh(cs []cand) float64 {
	top := cs[0].logit
	for _, c := range cs {
		if c.logit > top {
			top = c.logit
		}
	}
	var xs [256]float64
	var sum float64
	for len(cs) > 0 {
		blk := cs[:min(len(cs), len(xs))]
		for i := range blk {
			xs[i] = float64(blk[i].logit - top)
		}
		for i := range blk {
			e := expNeg(xs[i])
			blk[i].p = float32(e)
			sum += e
		}
		cs = cs[len(blk):]
	}
	return sum
}

// LogSumExp is log Σ e^l over logits, the log-softmax's normalizer: -Inf
// for none, NaN when a logit is NaN, the largest +Inf or all -Inf. Its
// exponentials are expNeg's, of differences converted to float64 in blocks
// of 256 first, as in weigh.
func LogSumExp(logits []float32) float64 {
	hi := float32(math.Inf(-1))
	for _, l := range logits {
		hi = max(hi, l)
	}
	var xs [256]float64
	var sum float64
	for len(logits) > 0 {
		n := min(len(logits), len(xs))
		for i, l := range logits[:n] {
			xs[i] = float64(l - hi)
		}
		for _, x := range xs[:n] {
			sum += expNeg(x)
		}
		logits = logits[n:]
	}
	return float64(hi) + math.Log(sum)
}

// expNeg is e^x for x ≤ 0 (0 below -700, NaN for NaN), within 1e-12 of
// math.Exp and twice as fast (3.8 against 7.6 ns on the dev VM): x =
// (64m + j)·ln2/64 + r with |r| ≤ ln2/128, e^x = 2^m · 2^(j/64) · e^r,
// 2^(j/64) from a table and e^r by its Taylor series to r^4. Every product is rounded on its own (the
// conversions), so that no machine fuses a multiply and an add into a
// different result: the same logits draw the same tokens on every machine.
func expNeg(x float64) float64 {
	if !(x >= -700) {
		if x != x {
			return x
		}
		return 0
	}
	const (
		n      = 64
		invL   = n / math.Ln2
		ln2hi  = 6.93147180369123816490e-01 / n
		ln2lo  = 1.90821492927058770002e-10 / n
		round  = 6755399441055744.0 // 1.5·2^52: adding it rounds to an integer
		third  = 1.0 / 3
		fourth = 1.0 / 4
	)
	k := float64(x*invL) + round - round
	r := float64(x-float64(k*ln2hi)) - float64(k*ln2lo)
	// 1 + r + r²/2 + r³/6 + r⁴/24
	p := 1 + float64(r*(1+float64(float64(r*0.5)*(1+float64(float64(r*third)*(1+float64(r*fourth)))))))
	ki := int64(k)
	m, j := ki>>6, ki&(n-1) // floor division: m·64 + j = k, 0 ≤ j < 64
	return math.Float64frombits(math.Float64bits(float64(p*exp2Table[j])) + uint64(m)<<52)
}

// exp2Table holds 2^(j/64), correctly rounded.
var exp2Table = [64]float64{
	1.0, 1.0108892860517005, 1.0218971486541166, 1.0330248790212284,
	1.0442737824274138, 1.0556451783605572, 1.0671404006768237, 1.0787607977571199,
	1.0905077326652577, 1.102382583307841, 1.1143867425958924, 1.1265216186082418,
	1.1387886347566916, 1.1511892299529827, 1.1637248587775775, 1.1763969916502812,
	1.189207115002721, 1.202156731452703, 1.215247359980469, 1.22848053610687,
	1.241857812073484, 1.255380757024691, 1.2690509571917332, 1.2828700160787783,
	1.2968395546510096, 1.3109612115247644, 1.3252366431597413, 1.339667524053303,
	1.3542555469368927, 1.3690024229745905, 1.383909881963832, 1.3989796725383112,
	1.4142135623730951, 1.42961333839197, 1.4451808069770467, 1.460917794180647,
	1.4768261459394993, 1.4929077282912648, 1.5091644275934228, 1.5255981507445384,
	1.5422108254079407, 1.559004400237837, 1.5759808451078865, 1.593142151342267,
	1.6104903319492543, 1.6280274218573478, 1.645755478153965, 1.6636765803267364,
	1.681792830507429, 1.7001063537185235, 1.718619298122478, 1.7373338352737062,
	1.7562521603732995, 1.7753764925265212, 1.7947090750031072, 1.8142521755003989,
	1.8340080864093424, 1.8539791250833855, 1.8741676341103, 1.8945759815869656,
	1.9152065613971474, 1.9360617934922943, 1.9571441241754002, 1.978456026387951,
}

// draw picks one candidate in proportion to p (renormalised over cs).
func (s *Sampler) draw(cs []cand) int32 {
	var sum float32
	for _, c := range cs {
		sum += c.p
	}
	u := s.rng.Float32() * sum
	last := -1 // the last candidate that may be drawn
	for i, c := range cs {
		if c.p <= 0 {
			continue
		}
		u -= c.p
		if u < 0 {
			return c.id
		}
		last = i
	}
	// Rounding left u at or above 0: the last candidate of weight, never
	// one of none (a token a mask or a logit bias ruled out).
	if last < 0 {
		return cs[0].id
	}
	return cs[last].id
}
