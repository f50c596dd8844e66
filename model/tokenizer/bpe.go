package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// GPT-2's reversible byte-to-unicode mapping: printable Latin-1 bytes map to
// themselves, the other 68 bytes to U+0100.. in order.
var (
	byteToRune [256]rune
	runeToByte = map[rune]byte{}
)

func init() {
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(256 + n)
			n++
		}
		runeToByte[byteToRune[b]] = byte(b)
	}
}

// bpeData is the part of a Tokenizer used by byte-level BPE.
type bpeData struct {
	pre          *preTokenizer
	ignoreMerges bool
	// pairRank holds every merge whose two halves are tokens, keyed by
	// their ids: the rank in the high half, the merged token (or -1) in
	// the low half. strRank holds the rest, keyed by "left right".
	pairRank map[uint64]uint64
	strRank  map[string]int32
	// byteTok is the token of each byte's mapped character, or -1.
	byteTok [256]int32
	// byteEnc is the UTF-8 of each byte's mapped character.
	byteEnc [256]string
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func (t *Tokenizer) initBPE(pre bpePre) error {
	p, err := newPreTokenizer(pre.regexes)
	if err != nil {
		return err
	}
	d := &bpeData{pre: p, ignoreMerges: pre.ignoreMerges, pairRank: make(map[uint64]uint64, len(t.vocab.Merges))}
	for i, m := range t.vocab.Merges {
		// llama.cpp splits at the first space after the first byte.
		sp := strings.IndexByte(m[min(1, len(m)):], ' ')
		if sp < 0 {
			continue
		}
		sp += min(1, len(m))
		l, r := m[:sp], m[sp+1:]
		li, lok := t.ids[l]
		ri, rok := t.ids[r]
		if lok && rok {
			k := pairKey(li, ri)
			if _, dup := d.pairRank[k]; !dup {
				merged, ok := t.ids[l+r]
				if !ok {
					merged = -1
				}
				d.pairRank[k] = uint64(i)<<32 | uint64(uint32(merged))
			}
			continue
		}
		if d.strRank == nil {
			d.strRank = map[string]int32{}
		}
		if _, dup := d.strRank[m]; !dup {
			d.strRank[m] = int32(i)
		}
	}
	for b := 0; b < 256; b++ {
		d.byteEnc[b] = string(byteToRune[b])
		d.byteTok[b] = -1
		if id, ok := t.ids[d.byteEnc[b]]; ok {
			d.byteTok[b] = id
		}
	}
	t.bpe = d
	return nil
}

// bpeScratch holds the reusable buffers of one BPE encoding.
type bpeScratch struct {
	pre    preScratch
	mapped []byte
	starts []int32 // byte offset in mapped of each original byte, plus the end
	syms   []symbol
	heap   bigramHeap
	key    []byte
}

// encodeBPE appends the tokens of one raw-text fragment.
func (t *Tokenizer) encodeBPE(text string, out []int32) []int32 {
	s := t.bpePool.Get().(*bpeScratch)
	defer t.bpePool.Put(s)
	s.pre.cps = decodeCPs(text, s.pre.cps)
	bounds := t.bpe.pre.split(&s.pre)
	lo := 0
	for _, hi := range bounds {
		start := int(s.pre.cps[lo].off)
		end := len(text)
		if hi < len(s.pre.cps) {
			end = int(s.pre.cps[hi].off)
		}
		out = t.bpeWord(s, text[start:end], out)
		lo = hi
	}
	return out
}

// bpeWord maps one pre-tokenized word to GPT-2's byte alphabet and merges
// it.
func (t *Tokenizer) bpeWord(s *bpeScratch, word string, out []int32) []int32 {
	d := t.bpe
	if len(word) == 0 {
		return out
	}
	if len(word) == 1 {
		if id := d.byteTok[word[0]]; id >= 0 {
			return append(out, id)
		}
	}
	s.mapped = s.mapped[:0]
	s.starts = s.starts[:0]
	for i := 0; i < len(word); i++ {
		s.starts = append(s.starts, int32(len(s.mapped)))
		s.mapped = append(s.mapped, d.byteEnc[word[i]]...)
	}
	s.starts = append(s.starts, int32(len(s.mapped)))
	if d.ignoreMerges {
		if id, ok := t.ids[string(s.mapped)]; ok {
			return append(out, id)
		}
	}
	s.syms = s.syms[:0]
	for i := 0; i < len(word); i++ {
		off, end := s.starts[i], s.starts[i+1]
		s.syms = append(s.syms, symbol{off: off, n: end - off, prev: int32(i - 1), next: int32(i + 1), id: d.byteTok[word[i]]})
	}
	s.syms[len(s.syms)-1].next = -1
	s.heap = s.heap[:0]
	for i := 1; i < len(s.syms); i++ {
		t.bpeTryPair(s, int32(i-1), int32(i))
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
		merged := b.merged
		l.n += r.n
		r.n = 0
		l.next = r.next
		if l.next >= 0 {
			s.syms[l.next].prev = left
		}
		if merged == -2 {
			var ok bool
			if merged, ok = t.ids[string(s.mapped[l.off:l.off+l.n])]; !ok {
				merged = -1
			}
		}
		l.id = merged
		t.bpeTryPair(s, l.prev, left)
		t.bpeTryPair(s, left, l.next)
	}
	for i := int32(0); i != -1; i = s.syms[i].next {
		sym := &s.syms[i]
		if sym.id >= 0 {
			out = append(out, sym.id)
			continue
		}
		// Not a token: fall back to the token of each byte's mapped
		// character, dropping bytes that have none (as llama.cpp drops them).
		for b := sym.off; b < sym.off+sym.n; {
			r, size := utf8.DecodeRune(s.mapped[b:])
			if by, ok := runeToByte[r]; ok && d.byteTok[by] >= 0 {
				out = append(out, d.byteTok[by])
			}
			b += int32(size)
		}
	}
	return out
}

func (t *Tokenizer) bpeTryPair(s *bpeScratch, left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	d := t.bpe
	l, r := &s.syms[left], &s.syms[right]
	var rank int32
	var ok bool
	merged := int32(-2) // not known from the merge table
	if l.id >= 0 && r.id >= 0 {
		var v uint64
		v, ok = d.pairRank[pairKey(l.id, r.id)]
		rank, merged = int32(v>>32), int32(uint32(v))
	} else if d.strRank != nil {
		s.key = append(s.key[:0], s.mapped[l.off:l.off+l.n]...)
		s.key = append(s.key, ' ')
		s.key = append(s.key, s.mapped[r.off:r.off+r.n]...)
		rank, ok = d.strRank[string(s.key)]
	}
	if !ok {
		return
	}
	s.heap.push(bigram{key: bigramKey(uint32(rank), left), size: l.n + r.n, merged: merged})
}
