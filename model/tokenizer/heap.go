package tokenizer

import "math"

// bigram is a candidate merge of a symbol and its right neighbour. key
// orders the candidates: its high half is the priority (BPE: the merge
// rank, lower first; SPM: the merged token's score, higher first), its low
// half the index of the left symbol, so that ties go to the leftmost pair.
// size is the two symbols' total length when the entry was made. An entry
// is stale, and skipped, when the left symbol is gone or the size of it and
// its current right neighbour differs: a live symbol only grows, by
// absorbing its right neighbour, so any change to either shows in the sum.
// merged is the token the merge makes (BPE; -2 when not known).
type bigram struct {
	key    uint64
	size   int32
	merged int32
}

func (b bigram) left() int32 { return int32(uint32(b.key)) }

func bigramKey(prio uint32, left int32) uint64 { return uint64(prio)<<32 | uint64(uint32(left)) }

// scorePrio maps a score to a priority that sorts higher scores first.
func scorePrio(score float32) uint32 {
	if score == 0 {
		score = 0 // -0 ties with +0, as in a float comparison
	}
	u := math.Float32bits(score)
	if u&(1<<31) != 0 {
		u = ^u // negative: reverse the order of the magnitude bits
	} else {
		u |= 1 << 31
	}
	return ^u // ascending key order = descending score
}

// bigramHeap is a binary min-heap of bigrams by key.
type bigramHeap []bigram

func (h *bigramHeap) push(b bigram) {
	*h = append(*h, b)
	q := *h
	i := len(q) - 1
	for i > 0 {
		p := (i - 1) / 2
		if q[p].key <= b.key {
			break
		}
		q[i] = q[p]
		i = p
	}
	q[i] = b
}

func (h *bigramHeap) pop() bigram {
	q := *h
	top := q[0]
	last := q[len(q)-1]
	q = q[:len(q)-1]
	n := len(q)
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && q[r].key < q[l].key {
			m = r
		}
		if last.key <= q[m].key {
			break
		}
		q[i] = q[m]
		i = m
	}
	if n > 0 {
		q[i] = last
	}
	*h = q
	return top
}

// symbol is a piece of the text being merged, linked to its neighbours.
// n == 0 marks a symbol that was merged into its left neighbour.
type symbol struct {
	off, n     int32
	prev, next int32
	id         int32 // token of the symbol's text, or -1
}
