package constrain

import (
	"math"
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
	if s.c.d.stringLoop(s.st) {
		// Inside a free string nearly every token may come: the plain
		// ones as a block, the others run alone (as JSON's Mask).
		a = append([]uint64(nil), s.v.plainSet...)
		for _, id := range s.v.nonPlain {
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
