package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// spaceMark is SentencePiece's visible space, U+2581.
const spaceMark = "\u2581"

// spmScratch holds the reusable buffers of one SPM encoding.
type spmScratch struct {
	text []byte
	cur  []byte // the part of text being merged
	syms []symbol
	heap bigramHeap
}

// charLen is the length of the character at the start of b (len(b) > 0).
// llama.cpp takes the length from the lead byte alone; for valid UTF-8 that
// is the same, but on invalid input it can swallow the bytes of the next
// character (a U+2581 space mark, say) into a byte-fallback symbol. Here an
// invalid or truncated sequence is a symbol of one byte, so the tokens
// always render back to the input bytes.
func charLen(b []byte) int {
	if n, st := utf8Prefix(b); st == seqComplete {
		return n
	}
	return 1
}

// encodeSPM appends the tokens of one raw-text fragment. prefix adds the
// space prefix; spaces become U+2581 first.
func (t *Tokenizer) encodeSPM(text string, prefix bool, out []int32) []int32 {
	s := t.spmPool.Get().(*spmScratch)
	defer t.spmPool.Put(s)
	s.text = s.text[:0]
	if prefix {
		s.text = append(s.text, spaceMark...)
	}
	for i := 0; i < len(text); i++ {
		if text[i] == ' ' {
			s.text = append(s.text, spaceMark...)
		} else {
			s.text = append(s.text, text[i])
		}
	}
	if !t.spmSplit {
		return t.spmRun(s, s.text, out)
	}
	// Cut before every U+2581 that follows another character: no token
	// spans such a cut (checked in initSPM), so the pieces merge
	// independently and give what merging the whole text would.
	lo := 0
	for i := 1; i < len(s.text); i++ {
		if s.text[i] == spaceMark[0] && isSpaceMarkAt(s.text, i) && !isSpaceMarkAt(s.text, i-3) {
			out = t.spmRun(s, s.text[lo:i], out)
			lo = i
		}
	}
	return t.spmRun(s, s.text[lo:], out)
}

func isSpaceMarkAt[T string | []byte](b T, i int) bool {
	return i >= 0 && i+3 <= len(b) && b[i] == spaceMark[0] && b[i+1] == spaceMark[1] && b[i+2] == spaceMark[2]
}

// spmRun merges text (a slice of s.text) and appends its tokens.
func (t *Tokenizer) spmRun(s *spmScratch, text []byte, out []int32) []int32 {
	if len(text) == 0 {
		return out
	}
	s.cur = text
	s.syms = s.syms[:0]
	for off := 0; off < len(text); {
		n := charLen(text[off:])
		i := int32(len(s.syms))
		var id int32
		switch {
		case n == 1:
			id = t.charTok[text[off]]
		case n == 3 && isSpaceMarkAt(text, off):
			id = t.spaceTok
		default:
			var ok bool
			if id, ok = t.ids[string(text[off:off+n])]; !ok {
				id = -1
			}
		}
		s.syms = append(s.syms, symbol{off: int32(off), n: int32(n), prev: i - 1, next: i + 1, id: id})
		off += n
	}
	s.syms[len(s.syms)-1].next = -1
	s.heap = s.heap[:0]
	for i := 1; i < len(s.syms); i++ {
		t.spmTryPair(s, int32(i-1), int32(i))
	}
	for len(s.heap) > 0 {
		b := s.heap.pop()
		left := b.left()
		l := &s.syms[left]
		if l.n == 0 || l.next < 0 {
			continue
		}
		r := &s.syms[l.next]
		if l.n+r.n != b.size {
			continue
		}
		l.n += r.n
		l.id = b.merged
		r.n = 0
		l.next = r.next
		if l.next >= 0 {
			s.syms[l.next].prev = left
		}
		t.spmTryPair(s, l.prev, left)
		t.spmTryPair(s, left, l.next)
	}
	for i := int32(0); i != -1; i = s.syms[i].next {
		sym := &s.syms[i]
		if sym.id >= 0 {
			out = append(out, sym.id)
			continue
		}
		piece := text[sym.off : sym.off+sym.n]
		// Every merged symbol is a token, so only single characters get
		// here: emit their byte tokens, or one UNK when the vocabulary has
		// no byte fallback (llama.cpp throws there).
		hasBytes := true
		for _, c := range piece {
			hasBytes = hasBytes && t.spmByte[c] >= 0
		}
		switch {
		case hasBytes:
			for _, c := range piece {
				out = append(out, t.spmByte[c])
			}
		case t.vocab.UNK >= 0:
			out = append(out, t.vocab.UNK)
		}
	}
	return out
}

func (t *Tokenizer) spmTryPair(s *spmScratch, left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	l, r := &s.syms[left], &s.syms[right]
	var id int32
	var ok bool
	if l.id >= 0 && r.id >= 0 {
		id, ok = t.spmPairs[pairKey(l.id, r.id)]
	} else {
		id, ok = t.ids[string(s.cur[l.off:l.off+l.n+r.n])]
	}
	if !ok {
		return
	}
	s.heap.push(bigram{key: bigramKey(scorePrio(t.score(id)), left), size: l.n + r.n, merged: id})
}

func (t *Tokenizer) score(id int32) float32 {
	if int(id) < len(t.vocab.Scores) {
		return t.vocab.Scores[id]
	}
	return 0
}

// initSPM finds the byte-fallback tokens (<0xXX>, else the byte itself)
// and whether the text may be cut before each word's U+2581: only if no
// token has a U+2581 right after some other character.
func (t *Tokenizer) initSPM() {
	// spmPairs maps every two tokens that make up a third to it, so that
	// merging two symbols that are tokens needs no string lookup.
	t.spmPairs = map[uint64]int32{}
	for _, tok := range t.texts {
		whole, ok := t.ids[tok]
		if !ok {
			continue
		}
		for j := 1; j < len(tok); j++ {
			if !utf8.RuneStart(tok[j]) {
				continue
			}
			a, aok := t.ids[tok[:j]]
			b, bok := t.ids[tok[j:]]
			if aok && bok {
				t.spmPairs[pairKey(a, b)] = whole
			}
		}
	}
	for c := 0; c < 256; c++ {
		t.charTok[c] = -1
		if id, ok := t.ids[string([]byte{byte(c)})]; ok {
			t.charTok[c] = id
		}
	}
	t.spaceTok = -1
	if id, ok := t.ids[spaceMark]; ok {
		t.spaceTok = id
	}
	t.spmSplit = true
	for _, tok := range t.texts {
		for j := 1; j < len(tok); j++ {
			if isSpaceMarkAt(tok, j) && !isSpaceMarkAt(tok, j-3) {
				t.spmSplit = false
			}
		}
	}
	for b := 0; b < 256; b++ {
		t.spmByte[b] = -1
		if id, ok := t.ids[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.spmByte[b] = id
		} else if id, ok := t.ids[string([]byte{byte(b)})]; ok {
			t.spmByte[b] = id
		}
	}
}
