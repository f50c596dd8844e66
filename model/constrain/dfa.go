package constrain

import (
	"errors"
	"slices"
)

// maxSetBytes bounds the memory of the sets of NFA states that making an
// automaton deterministic keeps (4 bytes an entry), so that one schema
// cannot cost a request gigabytes before it is refused.
const maxSetBytes = 16 << 20

var errTooLarge = errors.New("the schema makes too large an automaton: lower its maxLength or maxItems, or simplify it")

// prune removes the ways into states from which no accepting state can be
// reached (an intersection makes them: a string both at least 3 and at
// most 2 characters long), so that a mask never lets a generation into a
// dead end; it computes final. A start that cannot accept allows no text.
func (d *dfa) prune() (*dfa, error) {
	n := len(d.accept)
	back := make([][]int32, n) // reverse edges
	for i := range n {
		for _, to := range d.next[i*d.classes : (i+1)*d.classes] {
			if to >= 0 {
				back[to] = append(back[to], int32(i))
			}
		}
	}
	live := make([]bool, n)
	var queue []int32
	for i, a := range d.accept {
		if a {
			live[i] = true
			queue = append(queue, int32(i))
		}
	}
	for len(queue) > 0 {
		s := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		for _, from := range back[s] {
			if !live[from] {
				live[from] = true
				queue = append(queue, from)
			}
		}
	}
	if n == 0 || !live[0] {
		return nil, errors.New("its parts contradict each other: no value meets them all")
	}
	for i := range d.next {
		if to := d.next[i]; to >= 0 && !live[to] {
			d.next[i] = -1
		}
	}
	d.final = make([]bool, n)
	for i := range n {
		row := d.next[i*d.classes : (i+1)*d.classes]
		d.final[i] = d.accept[i] && !slices.ContainsFunc(row, func(to int32) bool { return to >= 0 })
	}
	return d, nil
}

// intersect is the automaton of the texts both a and b take (the product
// of their states, each byte class of it a pair of theirs).
func intersect(a, b *dfa, maxStates int) (*dfa, error) {
	d := &dfa{}
	pairs := map[[2]uint8]uint8{}
	var reps []byte // a byte of each class
	for x := range 256 {
		p := [2]uint8{a.class[x], b.class[x]}
		c, ok := pairs[p]
		if !ok {
			c = uint8(len(pairs))
			pairs[p] = c
			reps = append(reps, byte(x))
		}
		d.class[x] = c
	}
	d.classes = len(reps)
	index := map[[2]int32]int32{}
	var states [][2]int32
	add := func(p [2]int32) (int32, error) {
		if id, ok := index[p]; ok {
			return id, nil
		}
		if len(states) == maxStates {
			return 0, errTooLarge
		}
		id := int32(len(states))
		index[p] = id
		states = append(states, p)
		d.accept = append(d.accept, a.accept[p[0]] && b.accept[p[1]])
		d.next = append(d.next, make([]int32, d.classes)...)
		return id, nil
	}
	add([2]int32{0, 0})
	for i := 0; i < len(states); i++ {
		p := states[i]
		for c, x := range reps {
			to := int32(-1)
			if sa, sb := a.step(p[0], x), b.step(p[1], x); sa >= 0 && sb >= 0 {
				var err error
				if to, err = add([2]int32{sa, sb}); err != nil {
					return nil, err
				}
			}
			d.next[i*d.classes+c] = to
		}
	}
	return d.prune()
}

// embed adds d to n as a piece: a state of n for each of d's, an edge for
// each run of bytes of a class.
func (n *nfa) embed(d *dfa) frag {
	type run struct{ lo, hi byte }
	runs := make([][]run, d.classes)
	for x := 0; x < 256; {
		c, y := d.class[x], x
		for y+1 < 256 && d.class[y+1] == c {
			y++
		}
		runs[c] = append(runs[c], run{byte(x), byte(y)})
		x = y + 1
	}
	ids := make([]int32, len(d.accept))
	for i := range ids {
		ids[i] = n.state()
	}
	out := n.state()
	for i, from := range ids {
		for c, to := range d.next[i*d.classes : (i+1)*d.classes] {
			if to >= 0 {
				for _, r := range runs[c] {
					n.chain(from, ids[to], r.lo, r.hi)
				}
			}
		}
		if d.accept[i] {
			n.link(from, out)
		}
	}
	return frag{ids[0], out}
}
