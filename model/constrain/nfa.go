package constrain

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// nfa is a nondeterministic automaton over bytes, built from fragments
// (Thompson's construction) and made deterministic by dfa.
type nfa struct {
	eps   [][]int32 // by state: the states reached without a byte
	edges [][]edge  // by state: the states reached by a byte in a range
}

type edge struct {
	lo, hi byte
	to     int32
}

// frag is a piece of the automaton with one way in and one way out; out
// has no edges until the piece is joined to what follows.
type frag struct{ in, out int32 }

// maxNFA bounds the automaton built from one schema.
const maxNFA = 200_000

func (n *nfa) state() int32 {
	n.eps = append(n.eps, nil)
	n.edges = append(n.edges, nil)
	return int32(len(n.eps) - 1)
}

func (n *nfa) link(from, to int32) { n.eps[from] = append(n.eps[from], to) }

// empty matches nothing, as a piece.
func (n *nfa) empty() frag {
	s := n.state()
	return frag{s, s}
}

// ranges matches one byte in any of the ranges (pairs lo, hi).
func (n *nfa) ranges(r ...byte) frag {
	f := frag{n.state(), n.state()}
	for i := 0; i+1 < len(r); i += 2 {
		n.edges[f.in] = append(n.edges[f.in], edge{r[i], r[i+1], f.out})
	}
	return f
}

// lit matches the bytes of s.
func (n *nfa) lit(s string) frag {
	f := n.empty()
	for i := range len(s) {
		next := n.state()
		n.edges[f.out] = append(n.edges[f.out], edge{s[i], s[i], next})
		f.out = next
	}
	return f
}

// seq matches the pieces one after another.
func (n *nfa) seq(fs ...frag) frag {
	f := n.empty()
	for _, g := range fs {
		n.link(f.out, g.in)
		f.out = g.out
	}
	return f
}

// alt matches any one of the pieces.
func (n *nfa) alt(fs ...frag) frag {
	f := n.empty()
	f.out = n.state()
	for _, g := range fs {
		n.link(f.in, g.in)
		n.link(g.out, f.out)
	}
	return f
}

func (n *nfa) opt(f frag) frag { return n.alt(f, n.empty()) }

// star matches the piece any number of times.
func (n *nfa) star(f frag) frag {
	g := n.empty()
	g.out = n.state()
	n.link(g.in, f.in)
	n.link(g.in, g.out)
	n.link(f.out, g.in)
	return g
}

// ws is the whitespace allowed between a JSON text's tokens: one space or
// none (compact JSON, or OpenAI's style), which keeps the automaton small.
func (n *nfa) ws() frag { return n.opt(n.lit(" ")) }

// str matches a JSON string: well-formed UTF-8 (RFC 3629), no control
// characters, escapes as RFC 8259 has them. Every piece of its content
// leads straight to the next state (no empty moves), so that the automaton
// stands in one state between any two characters of a string without
// bounds (stringLoop).
func (n *nfa) str() frag { return n.boundedStr(0, -1) }

// boundedStr is str of min to max characters (max -1: no bound), each
// escape one character.
func (n *nfa) boundedStr(min, max int) frag {
	in, out, q := n.state(), n.state(), n.state()
	n.chain(in, q, '"', '"')
	for range min {
		next := n.state()
		n.char(q, next)
		q = next
	}
	n.chain(q, out, '"', '"')
	if max < 0 {
		n.char(q, q)
		return frag{in, out}
	}
	for range max - min {
		next := n.state()
		n.char(q, next)
		n.chain(next, out, '"', '"')
		q = next
	}
	return frag{in, out}
}

// char adds the ways of one character of a string's content from one
// state to another.
func (n *nfa) char(from, to int32) {
	n.chain(from, to, 0x20, 0x21)
	n.chain(from, to, 0x23, 0x5b)
	n.chain(from, to, 0x5d, 0x7f)
	esc := n.state()
	n.chain(from, esc, '\\', '\\')
	for _, c := range []byte(`"\/bfnrt`) {
		n.chain(esc, to, c, c)
	}
	u := n.state()
	n.chain(esc, u, 'u', 'u')
	hex := []byte{'0', '9', 'a', 'f', 'A', 'F'}
	for k := range 4 {
		next := to
		if k < 3 {
			next = n.state()
		}
		for i := 0; i < len(hex); i += 2 {
			n.chain(u, next, hex[i], hex[i+1])
		}
		u = next
	}
	c := [2]byte{0x80, 0xbf}
	for _, seq := range [][][2]byte{
		{{0xc2, 0xdf}, c},
		{{0xe0, 0xe0}, {0xa0, 0xbf}, c}, {{0xe1, 0xec}, c, c}, {{0xed, 0xed}, {0x80, 0x9f}, c}, {{0xee, 0xef}, c, c},
		{{0xf0, 0xf0}, {0x90, 0xbf}, c, c}, {{0xf1, 0xf3}, c, c, c}, {{0xf4, 0xf4}, {0x80, 0x8f}, c, c},
	} {
		at := from
		for i, r := range seq {
			next := to
			if i < len(seq)-1 {
				next = n.state()
			}
			n.chain(at, next, r[0], r[1])
			at = next
		}
	}
}

// chain adds an edge from one state to another on the bytes lo to hi.
func (n *nfa) chain(from, to int32, lo, hi byte) {
	n.edges[from] = append(n.edges[from], edge{lo, hi, to})
}

func (n *nfa) digits() frag {
	d := n.ranges('0', '9')
	return n.seq(d, n.star(n.ranges('0', '9')))
}

// number matches a JSON number, or only an integer.
func (n *nfa) number(integer bool) frag {
	i := n.seq(n.opt(n.lit("-")), n.alt(n.lit("0"), n.seq(n.ranges('1', '9'), n.star(n.ranges('0', '9')))))
	if integer {
		return i
	}
	frac := n.opt(n.seq(n.lit("."), n.digits()))
	exp := n.opt(n.seq(n.ranges('e', 'e', 'E', 'E'), n.opt(n.ranges('+', '+', '-', '-')), n.digits()))
	return n.seq(i, frac, exp)
}

// any matches any JSON value whose objects and arrays nest at most depth
// deep (scalars only at 0).
func (n *nfa) any(depth int) frag {
	alts := []frag{n.str(), n.number(false), n.lit("true"), n.lit("false"), n.lit("null")}
	if depth > 0 {
		alts = append(alts, n.object(func() frag { return n.any(depth - 1) }), n.array(func() frag { return n.any(depth - 1) }, 0, -1))
	}
	return n.alt(alts...)
}

// object matches an object of any keys whose values value matches.
func (n *nfa) object(value func() frag) frag {
	member := n.seq(n.str(), n.lit(":"), n.ws(), value())
	open := n.seq(n.lit("{"), n.ws())
	more := n.star(n.seq(n.lit(","), n.ws(), member))
	return n.seq(open, n.opt(n.seq(member, more, n.ws())), n.lit("}"))
}

// array matches an array of min to max items (max -1: no bound), each
// made by item (a copy for each place the bounds tell apart).
func (n *nfa) array(item func() frag, min, max int) frag {
	open := n.seq(n.lit("["), n.ws())
	if max == 0 {
		return n.seq(open, n.lit("]"))
	}
	end := n.state()
	closing := func(at int32) {
		c := n.seq(n.ws(), n.lit("]"))
		n.link(at, c.in)
		n.link(c.out, end)
	}
	if min == 0 {
		e := n.lit("]")
		n.link(open.out, e.in)
		n.link(e.out, end)
	}
	at := open.out
	copies := max
	if max < 0 {
		copies = min
	}
	for i := range copies {
		f := item()
		if i > 0 {
			f = n.seq(n.lit(","), n.ws(), f)
		}
		n.link(at, f.in)
		at = f.out
		if i+1 >= min {
			closing(at)
		}
	}
	if max < 0 { // one more copy, entered again after each comma
		f := item()
		if copies > 0 {
			c := n.seq(n.lit(","), n.ws())
			n.link(at, c.in)
			n.link(c.out, f.in)
		} else {
			n.link(at, f.in)
		}
		again := n.seq(n.lit(","), n.ws())
		n.link(f.out, again.in)
		n.link(again.out, f.in)
		closing(f.out)
	}
	return frag{open.in, end}
}

// closure adds to set the states reached from it without a byte, and
// returns it sorted.
func (n *nfa) closure(set []int32, seen []bool) []int32 {
	for _, s := range set {
		seen[s] = true
	}
	for i := 0; i < len(set); i++ {
		for _, t := range n.eps[set[i]] {
			if !seen[t] {
				seen[t] = true
				set = append(set, t)
			}
		}
	}
	for _, s := range set {
		seen[s] = false
	}
	slices.Sort(set)
	return slices.Compact(set)
}

// dfa is the deterministic automaton of an nfa from start that accepts in
// final; state 0 is the start. Bytes that no edge tells apart share a
// class, and a state's row has one entry per class.
type dfa struct {
	class   [256]uint8
	classes int
	next    []int32 // state*classes + class → the next state, -1: none
	accept  []bool
	final   []bool // accepting, and no byte may follow
}

// step is the state after byte b from st, -1 when b cannot come.
func (d *dfa) step(st int32, b byte) int32 { return d.next[int(st)*d.classes+int(d.class[b])] }

// classes partitions the bytes by the edges' ranges: two bytes share a
// class when every edge takes both or neither.
func (n *nfa) classes() (class [256]uint8, count int) {
	var cut [257]bool
	for _, es := range n.edges {
		for _, e := range es {
			cut[e.lo], cut[int(e.hi)+1] = true, true
		}
	}
	c := -1
	for b := range 256 {
		if cut[b] || b == 0 {
			c++
		}
		class[b] = uint8(c)
	}
	return class, c + 1
}

func (n *nfa) dfa(start, final int32, maxStates int) (*dfa, error) {
	seen := make([]bool, len(n.eps))
	d := &dfa{}
	d.class, d.classes = n.classes()
	index := map[string]int32{}
	var sets [][]int32
	key := func(set []int32) string {
		b := make([]byte, 4*len(set))
		for i, s := range set {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(s))
		}
		return string(b)
	}
	add := func(set []int32) (int32, error) {
		k := key(set)
		if id, ok := index[k]; ok {
			return id, nil
		}
		if len(sets) == maxStates {
			return 0, fmt.Errorf("the schema makes an automaton of more than %d states: lower its maxLength or maxItems, or simplify it", maxStates)
		}
		id := int32(len(sets))
		index[k] = id
		sets = append(sets, set)
		d.accept = append(d.accept, slices.Contains(set, final))
		d.next = append(d.next, make([]int32, d.classes)...)
		return id, nil
	}
	if _, err := add(n.closure([]int32{start}, seen)); err != nil {
		return nil, err
	}
	by := make([][]int32, d.classes)
	for i := 0; i < len(sets); i++ {
		for c := range by {
			by[c] = by[c][:0]
		}
		for _, s := range sets[i] {
			for _, e := range n.edges[s] {
				for c := d.class[e.lo]; ; c++ {
					by[c] = append(by[c], e.to)
					if c == d.class[e.hi] {
						break
					}
				}
			}
		}
		targets := map[string]int32{} // classes that reach the same states (a string's characters) share a closure
		for c := range by {
			to := int32(-1)
			if len(by[c]) > 0 {
				slices.Sort(by[c])
				raw := slices.Compact(by[c])
				k := key(raw)
				var ok bool
				if to, ok = targets[k]; !ok {
					var err error
					if to, err = add(n.closure(slices.Clone(raw), seen)); err != nil {
						return nil, err
					}
					targets[k] = to
				}
			}
			d.next[i*d.classes+c] = to
		}
	}
	d.final = make([]bool, len(sets))
	for i := range sets {
		row := d.next[i*d.classes : (i+1)*d.classes]
		d.final[i] = d.accept[i] && !slices.ContainsFunc(row, func(to int32) bool { return to >= 0 })
	}
	return d, nil
}

// stringLoop reports whether st stands inside a free string: every unit of
// a string's content (a character other than a control, '"' or '\\', an
// escape, a well-formed UTF-8 character) leads from st back to st. Each
// byte range is tried with a byte of each of its classes, which the
// automaton cannot tell from the class's others.
func (d *dfa) stringLoop(st int32) bool {
	reps := func(lo, hi byte) []byte {
		var out []byte
		seen := map[uint8]bool{}
		for b := int(lo); b <= int(hi); b++ {
			if c := d.class[b]; !seen[c] {
				seen[c] = true
				out = append(out, byte(b))
			}
		}
		return out
	}
	// back runs every sequence of a byte of each range in turn from at,
	// and reports whether each ends at st.
	var back func(at int32, ranges [][2]byte) bool
	back = func(at int32, ranges [][2]byte) bool {
		if at < 0 {
			return false
		}
		if len(ranges) == 0 {
			return at == st
		}
		for _, b := range reps(ranges[0][0], ranges[0][1]) {
			if !back(d.step(at, b), ranges[1:]) {
				return false
			}
		}
		return true
	}
	one := func(lo, hi byte) [2]byte { return [2]byte{lo, hi} }
	cont := one(0x80, 0xbf)
	hex := [][2]byte{one('0', '9'), one('a', 'f'), one('A', 'F')}
	units := [][][2]byte{
		{one(0x20, 0x21)}, {one(0x23, 0x5b)}, {one(0x5d, 0x7f)},
		{one(0xc2, 0xdf), cont},
		{one(0xe0, 0xe0), one(0xa0, 0xbf), cont}, {one(0xe1, 0xec), cont, cont},
		{one(0xed, 0xed), one(0x80, 0x9f), cont}, {one(0xee, 0xef), cont, cont},
		{one(0xf0, 0xf0), one(0x90, 0xbf), cont, cont}, {one(0xf1, 0xf3), cont, cont, cont},
		{one(0xf4, 0xf4), one(0x80, 0x8f), cont, cont},
	}
	for _, e := range `"\/bfnrt` {
		units = append(units, [][2]byte{one('\\', '\\'), one(byte(e), byte(e))})
	}
	for _, a := range hex {
		for _, b := range hex {
			for _, c := range hex {
				for _, x := range hex {
					units = append(units, [][2]byte{one('\\', '\\'), one('u', 'u'), a, b, c, x})
				}
			}
		}
	}
	for _, u := range units {
		if !back(st, u) {
			return false
		}
	}
	return true
}
