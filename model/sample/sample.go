// Package sample picks the next token from a model's logits.
//
// The chain, in order: repetition, frequency and presence penalties on the
// raw logits; then, unless greedy, temperature; top-k; top-p (nucleus);
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

	Seed uint64
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
func (s *Sampler) Sample(logits []float32) int32 {
	cs := s.cands[:0]
	for i, l := range logits {
		cs = append(cs, cand{id: int32(i), logit: l})
	}
	s.cands = cs
	s.penalize(cs)
	if s.p.Temperature <= 0 {
		return argmax(cs)
	}
	t := s.p.Temperature
	for i := range cs {
		cs[i].logit /= t
	}
	switch {
	case s.p.TopK > 0 && s.p.TopK < len(cs):
		cs = topK(cs, s.p.TopK)
	case s.p.TopP > 0 && s.p.TopP < 1:
		slices.SortFunc(cs, byLogit)
	}
	softmax(cs)
	if tp := s.p.TopP; tp > 0 && tp < 1 {
		var cum float32
		for i := range cs {
			cum += cs[i].p
			if cum >= tp {
				cs = cs[:i+1]
				break
			}
		}
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

// topK returns the k best candidates, sorted by byLogit, selecting with a
// min-heap of size k in O(n log k) rather than sorting all n.
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
	for _, c := range cs[k:] {
		if byLogit(c, h[0]) < 0 {
			h[0] = c
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
func softmax(cs []cand) {
	top := cs[0].logit
	for _, c := range cs {
		top = max(top, c.logit)
	}
	var sum float64
	for i := range cs {
		e := math.Exp(float64(cs[i].logit - top))
		cs[i].p = float32(e)
		sum += e
	}
	for i := range cs {
		cs[i].p = float32(float64(cs[i].p) / sum)
	}
}

// draw picks one candidate in proportion to p (renormalised over cs).
func (s *Sampler) draw(cs []cand) int32 {
	var sum float32
	for _, c := range cs {
		sum += c.p
	}
	u := s.rng.Float32() * sum
	for _, c := range cs {
		u -= c.p
		if u < 0 {
			return c.id
		}
	}
	return cs[len(cs)-1].id
}
