package tokenizer

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// encodeWPM appends the WordPiece tokens of one raw-text fragment, the way
// llama.cpp's BERT tokenizer does: normalise and split into words, then
// match each word greedily, longest piece first, against the vocabulary,
// where word-initial pieces carry a U+2581 prefix. A word that cannot be
// covered completely becomes UNK.
func (t *Tokenizer) encodeWPM(text string, out []int32) []int32 {
	word := make([]byte, 0, 64)
	word = append(word, spaceMark...)
	flush := func() {
		if len(word) > len(spaceMark) {
			out = t.wpmWord(word, out)
		}
		word = word[:len(spaceMark)]
	}
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		i += n
		if t.vocab.StripAccents {
			r = nfdFirst(r)
		}
		f := flagsOf(r)
		if f&fSpace != 0 {
			flush()
			continue
		}
		if r == 0 || r == utf8.RuneError || f&fControl != 0 {
			continue
		}
		if t.vocab.StripAccents && f&fMark != 0 {
			continue
		}
		lr := r
		if t.vocab.Lowercase {
			lr = unicode.ToLower(r)
		}
		if f&fPunct != 0 || (r < 0x7F && f&fSymbol != 0) || isCJK(r) {
			flush()
			word = utf8.AppendRune(word, lr)
			flush()
			continue
		}
		word = utf8.AppendRune(word, lr)
	}
	flush()
	return out
}

// wpmWord matches one word (with its U+2581 prefix).
func (t *Tokenizer) wpmWord(w []byte, out []int32) []int32 {
	start := len(out)
	for i := 0; i < len(w); {
		j := min(len(w), i+t.maxTokenLen)
		for ; j > i; j-- {
			if id, ok := t.ids[string(w[i:j])]; ok {
				out = append(out, id)
				break
			}
		}
		if j == i {
			out = out[:start]
			break
		}
		i = j
	}
	if len(out) == start && t.vocab.UNK >= 0 {
		out = append(out, t.vocab.UNK)
	}
	return out
}

// nfdFirst is the first code point of r's canonical decomposition: with the
// combining marks dropped afterwards, this is how llama.cpp strips accents
// (it maps each code point to one code point).
func nfdFirst(r rune) rune {
	const sBase, sLast, lBase, perL = 0xAC00, 0xD7A3, 0x1100, 21 * 28
	switch {
	case r < 0xC0:
		return r
	case r >= sBase && r <= sLast: // Hangul syllable: its leading consonant
		return lBase + (r-sBase)/perL
	}
	var buf [utf8.UTFMax]byte
	n := utf8.EncodeRune(buf[:], r)
	d := norm.NFD.Properties(buf[:n]).Decomposition()
	if len(d) == 0 {
		return r
	}
	first, _ := utf8.DecodeRune(d)
	return first
}

// isCJK reports the CJK ideograph blocks that BERT splits into single-character
// words (the ranges of the original BERT tokenizer as llama.cpp has them).
func isCJK(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FFF) ||
		(r >= 0x3400 && r <= 0x4DBF) ||
		(r >= 0x20000 && r <= 0x2A6DF) ||
		(r >= 0x2A700 && r <= 0x2B73F) ||
		(r >= 0x2B740 && r <= 0x2B81F) ||
		(r >= 0x2B920 && r <= 0x2CEAF) ||
		(r >= 0xF900 && r <= 0xFAFF) ||
		(r >= 0x2F800 && r <= 0x2FA1F)
}
