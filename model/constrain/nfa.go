package constrain

import (
	"encoding/binary"
	"slices"
	"sync"
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
	// \uXXXX: a character of the BMP; a high surrogate's escape only
	// with a low one's after it, the two one character (as JSON Schema
	// counts them); a lone low surrogate's (decoded as U+FFFD).
	u := n.state()
	n.chain(esc, u, 'u', 'u')
	hex := func(from, to int32) {
		for _, r := range [][2]byte{{'0', '9'}, {'a', 'f'}, {'A', 'F'}} {
			n.chain(from, to, r[0], r[1])
		}
	}
	// hexes adds k hex digits from one state to another.
	hexes := func(from, to int32, k int) {
		for i := range k {
			next := to
			if i < k-1 {
				next = n.state()
			}
			hex(from, next)
			from = next
		}
	}
	other, d := n.state(), n.state()
	for _, r := range [][2]byte{{'0', '9'}, {'a', 'c'}, {'A', 'C'}, {'e', 'f'}, {'E', 'F'}} {
		n.chain(u, other, r[0], r[1])
	}
	hexes(other, to, 3)
	n.chain(u, d, 'd', 'd')
	n.chain(u, d, 'D', 'D')
	low := n.state() // D000-D7FF, or a lone low surrogate
	for _, r := range [][2]byte{{'0', '7'}, {'c', 'f'}, {'C', 'F'}} {
		n.chain(d, low, r[0], r[1])
	}
	hexes(low, to, 2)
	high := n.state()
	for _, r := range [][2]byte{{'8', '9'}, {'a', 'b'}, {'A', 'B'}} {
		n.chain(d, high, r[0], r[1])
	}
	pair := n.state()
	hexes(high, pair, 2)
	p1, p2, p3, p4 := n.state(), n.state(), n.state(), n.state()
	n.chain(pair, p1, '\\', '\\')
	n.chain(p1, p2, 'u', 'u')
	n.chain(p2, p3, 'd', 'd')
	n.chain(p2, p3, 'D', 'D')
	for _, r := range [][2]byte{{'c', 'f'}, {'C', 'F'}} {
		n.chain(p3, p4, r[0], r[1])
	}
	hexes(p4, to, 2)
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

// containing matches an object of any members, one of them with the key
// name (its value any value).
func (n *nfa) containing(name string) frag {
	key, _ := marshal(name)
	member := func() frag { return n.seq(n.str(), n.lit(":"), n.ws(), n.any(anyDepth)) }
	before := n.star(n.seq(member(), n.lit(","), n.ws()))
	keyed := n.seq(n.lit(string(key)+":"), n.ws(), n.any(anyDepth))
	after := n.star(n.seq(n.lit(","), n.ws(), member()))
	return n.seq(n.lit("{"), n.ws(), before, keyed, after, n.ws(), n.lit("}"))
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
// final; state 0 is the start, and every state can still reach an
// accepting one (prune). Bytes that no edge tells apart share a
// class, and a state's row has one entry per class.
type dfa struct {
	class   [256]uint8
	classes int
	next    []int32 // state*classes + class → the next state, -1: none
	accept  []bool
	final   []bool // accepting, and no byte may follow

	advanced sync.Map // state → [next, ok] of advance, as generations need them
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
	var keys []string // each state's set of NFA states, as its index key (kept once)
	size := 0         // bytes of keys
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
		if size += len(k); len(keys) == maxStates || size > maxSetBytes {
			return 0, errTooLarge
		}
		id := int32(len(keys))
		index[k] = id
		keys = append(keys, k)
		d.accept = append(d.accept, slices.Contains(set, final))
		d.next = append(d.next, make([]int32, d.classes)...)
		return id, nil
	}
	if _, err := add(n.closure([]int32{start}, seen)); err != nil {
		return nil, err
	}
	by := make([][]int32, d.classes)
	var set []int32
	for i := 0; i < len(keys); i++ {
		for c := range by {
			by[c] = by[c][:0]
		}
		set = set[:0]
		for j := 0; j < len(keys[i]); j += 4 {
			set = append(set, int32(binary.LittleEndian.Uint32([]byte(keys[i][j:j+4]))))
		}
		for _, s := range set {
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
	return d.prune()
}

// unitDFA takes one character of a string's content (as char makes it).
var unitDFA = sync.OnceValue(func() *dfa {
	var n nfa
	in, out := n.state(), n.state()
	n.char(in, out)
	d, err := n.dfa(in, out, 1024)
	if err != nil {
		panic(err)
	}
	return d
})

// advance reports where every character of a string's content leads from
// st: to one state next (ok), or nowhere (next -1, ok: the string may take
// no more); ok is false when characters lead apart or only some may come.
func (d *dfa) advance(st int32) (next int32, ok bool) {
	if v, hit := d.advanced.Load(st); hit {
		r := v.([2]int32)
		return r[0], r[1] == 1
	}
	next, ok = d.advanceOnce(st)
	r := [2]int32{next, 0}
	if ok {
		r[1] = 1
	}
	d.advanced.Store(st, r)
	return next, ok
}

func (d *dfa) advanceOnce(st int32) (next int32, ok bool) {
	u := unitDFA()
	type pair struct{ s, u int32 }
	next = -2 // none seen yet
	seen := map[pair]bool{{st, 0}: true}
	stack := []pair{{st, 0}}
	dead := false
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for x := range 256 {
			us := u.step(p.u, byte(x))
			if us < 0 {
				continue
			}
			ds := d.step(p.s, byte(x))
			switch {
			case ds < 0:
				dead = true
			case u.accept[us]: // a character complete (none is the start of another)
				if next != -2 && next != ds {
					return -1, false
				}
				next = ds
			case !seen[pair{ds, us}]:
				seen[pair{ds, us}] = true
				stack = append(stack, pair{ds, us})
			}
		}
	}
	switch {
	case dead && next == -2:
		return -1, true
	case dead:
		return -1, false
	}
	return next, true
}

// maxRun is the most characters stringRun follows a string for.
const maxRun = 64

// stringRun reports whether st stands inside a string whose every next
// character leads one way, and how many more characters it may take: r
// (at most maxRun: then perhaps more), or -1 for no bound.
func (d *dfa) stringRun(st int32) (r int, ok bool) {
	s := st
	for r = 0; r < maxRun; r++ {
		next, ok := d.advance(s)
		switch {
		case !ok:
			return 0, false
		case next == -1:
			return r, true
		case next == s:
			return -1, true
		}
		s = next
	}
	return maxRun, true
}

// stringLoop reports whether st stands inside a string without bound:
// every character leads back to st.
func (d *dfa) stringLoop(st int32) bool {
	next, ok := d.advance(st)
	return ok && next == st
}
