package constrain

import (
	"math"
	"slices"
	"sync"

	"github.com/octet-dev/octet/model/tokenizer"
)

// maxMasks bounds the masks a compiled schema keeps per vocabulary: one
// bit per token each (16 KiB at a 128k vocabulary).
const maxMasks = 256

// masks are a compiled schema's allowed-token sets for one vocabulary, by
// automaton state, made by the first generation that reaches the state.
type masks struct {
	mu sync.Mutex
	by map[int32][]uint64
}

// Schema constrains a generation to the JSON texts of a compiled schema.
// It is not safe for concurrent use (the Compiled it runs is).
type Schema struct {
	c      *Compiled
	v      *vocabTable
	m      *masks
	st     int32
	broken bool
	saved  []float32 // scratch of Mask: the end-of-generation tokens' logits
}

// Start returns a constraint at the start of the answer, for tok.
func (c *Compiled) Start(tok *tokenizer.Tokenizer) *Schema {
	v := tableOf(tok)
	c.mu.Lock()
	if c.masks == nil {
		c.masks = map[*vocabTable]*masks{}
	}
	m := c.masks[v]
	if m == nil {
		m = &masks{by: map[int32][]uint64{}}
		c.masks[v] = m
	}
	c.mu.Unlock()
	return &Schema{c: c, v: v, m: m}
}

// Done reports whether the text is complete and nothing may follow it.
func (s *Schema) Done() bool { return s.c.d.final[s.st] }

// Over reports whether the answer must end: it is Done, or no token could
// continue it.
func (s *Schema) Over() bool { return s.Done() || s.broken }

// Mask sets the logits of the tokens that cannot come next to -Inf. An
// end-of-generation token may come where the text is complete (a number
// at the top level may go on or end), or when nothing else may.
func (s *Schema) Mask(logits []float32) {
	var allow []uint64
	if !s.Over() {
		allow = s.allowed()
	}
	found := false
	for _, w := range allow {
		if w != 0 {
			found = true
			break
		}
	}
	if !s.Over() && !found {
		s.broken = true
	}
	eog := s.c.d.accept[s.st] || !found
	s.saved = s.saved[:0]
	for _, id := range s.v.eog {
		if int(id) < len(logits) {
			s.saved = append(s.saved, logits[id])
		}
	}
	inf := float32(math.Inf(-1))
	for id := range logits {
		if id/64 >= len(allow) || allow[id/64]&(1<<(id%64)) == 0 {
			logits[id] = inf
		}
	}
	for i, id := range s.v.eog {
		if int(id) < len(logits) {
			if eog {
				logits[id] = s.saved[i]
			} else {
				logits[id] = inf
			}
		}
	}
}

// allowed is the set of tokens that may come in the current state.
func (s *Schema) allowed() []uint64 {
	s.m.mu.Lock()
	a, ok := s.m.by[s.st]
	s.m.mu.Unlock()
	if ok {
		return a
	}
	if r, ok := s.c.d.stringRun(s.st); ok {
		// Inside a string nearly every token of up to r characters may
		// come: those made of whole characters as a block by their count,
		// the others run alone (as JSON's Mask).
		u := s.v.unitTable()
		switch {
		case r < 0:
			a = slices.Clone(u.upTo[maxRun])
			for _, id := range u.long {
				a = setBit(a, id)
			}
		default:
			a = slices.Clone(u.upTo[r])
			if r == maxRun {
				for _, id := range u.long {
					if runsFrom(s.c.d, s.st, s.v.bytes[id]) {
						a = setBit(a, id)
					}
				}
			}
		}
		for _, id := range u.other {
			if runsFrom(s.c.d, s.st, s.v.bytes[id]) {
				a = setBit(a, id)
			}
		}
	} else {
		a = make([]uint64, (len(s.v.bytes)+63)/64)
		s.walk(a, 0, s.st)
	}
	s.m.mu.Lock()
	if len(s.m.by) < maxMasks {
		s.m.by[s.st] = a
	}
	s.m.mu.Unlock()
	return a
}

// walk marks in a the tokens allowed below trie node n, reached in state st.
func (s *Schema) walk(a []uint64, n, st int32) {
	for _, id := range s.v.trie.Ends(n) {
		setBit(a, id)
	}
	d := s.c.d
	next := d.next[int(st)*d.classes : int(st+1)*d.classes]
	for _, e := range s.v.trie.Edges(n) {
		if to := next[d.class[e.Byte]]; to >= 0 {
			s.walk(a, e.Node, to)
		}
	}
}

// Accept advances past the token taken.
func (s *Schema) Accept(id int32) {
	if int(id) >= len(s.v.bytes) || len(s.v.bytes[id]) == 0 {
		return // a control token renders to nothing
	}
	st := s.st
	for _, b := range s.v.bytes[id] {
		if st = s.c.d.step(st, b); st < 0 {
			s.broken = true
			return
		}
	}
	s.st = st
}

// runsFrom reports whether bytes b (at least one) run from st.
func runsFrom(d *dfa, st int32, b []byte) bool {
	for _, x := range b {
		if st = d.step(st, x); st < 0 {
			return false
		}
	}
	return len(b) > 0
}

func setBit(set []uint64, id int32) []uint64 {
	set[id/64] |= 1 << (id % 64)
	return set
}

// units are a vocabulary's tokens by the characters of a string's content
// they hold whole (unitDFA): upTo[k] those of 1 to k characters, long
// those of more than maxRun, other the rest (a quote, a part of a
// character, a control token).
type units struct {
	upTo  [maxRun + 1][]uint64
	long  []int32
	other []int32
}

// unitTable makes v's units once.
func (v *vocabTable) unitTable() *units {
	v.unitsOnce.Do(func() {
		u := &units{}
		d := unitDFA()
		count := make([]int, len(v.bytes))
		for id, b := range v.bytes {
			st, n := int32(0), 0
			for _, x := range b {
				if st = d.step(st, x); st < 0 {
					break
				}
				if d.accept[st] {
					st, n = 0, n+1
				}
			}
			switch {
			case len(b) == 0 || st != 0:
				u.other = append(u.other, int32(id))
			case n > maxRun:
				u.long = append(u.long, int32(id))
			default:
				count[id] = n
			}
		}
		words := (len(v.bytes) + 63) / 64
		for k := range u.upTo {
			u.upTo[k] = make([]uint64, words)
			if k > 0 {
				copy(u.upTo[k], u.upTo[k-1])
			}
			for id, n := range count {
				if n == k && k > 0 {
					setBit(u.upTo[k], int32(id))
				}
			}
		}
		v.units = u
	})
	return v.units
}
