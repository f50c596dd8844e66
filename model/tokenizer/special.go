package tokenizer

import "strings"

// fragment is a piece of the input: either a special token (id >= 0) or raw
// text[lo:hi] (id == -1).
type fragment struct {
	id     int32
	lo, hi int
}

// partition splits text on the special tokens, longest first, as llama.cpp's
// tokenizer_st_partition: each special token in turn cuts every raw fragment
// at all its occurrences. Without parseSpecial, CONTROL and UNKNOWN tokens
// are left in the text but USER_DEFINED ones are still cut out. A token with
// the LSTRIP (RSTRIP) attribute eats the whitespace before (after) it.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	frags := []fragment{{id: -1, lo: 0, hi: len(text)}}
	if len(text) == 0 {
		return frags[:0]
	}
	var next []fragment
	for _, sid := range t.specials {
		a := t.attrs[sid]
		if !parseSpecial && a&(attrControl|attrUnknown) != 0 {
			continue
		}
		tok := t.texts[sid]
		found := false
		for _, fr := range frags {
			if fr.id < 0 && strings.Contains(text[fr.lo:fr.hi], tok) {
				found = true
				break
			}
		}
		if !found {
			continue
		}
		next = next[:0]
		for _, fr := range frags {
			if fr.id >= 0 {
				next = append(next, fr)
				continue
			}
			lo, hi := fr.lo, fr.hi
			for lo < hi {
				k := strings.Index(text[lo:hi], tok)
				if k < 0 {
					next = append(next, fragment{id: -1, lo: lo, hi: hi})
					break
				}
				m := lo + k
				if m > lo {
					left := m
					if a&attrLStrip != 0 {
						for left > lo && isCSpace(text[left-1]) {
							left--
						}
					}
					if left > lo {
						next = append(next, fragment{id: -1, lo: lo, hi: left})
					}
				}
				next = append(next, fragment{id: sid})
				lo = m + len(tok)
				if a&attrRStrip != 0 {
					for lo < hi && isCSpace(text[lo]) {
						lo++
					}
				}
			}
		}
		frags, next = next, frags
	}
	return frags
}
