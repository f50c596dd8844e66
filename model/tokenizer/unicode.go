package tokenizer

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// cpFlags classifies a code point the way llama.cpp's Unicode tables do: one
// general category (N, L, Z, M, P, S, C, or "undefined" for unassigned code
// points) plus the White_Space property. The categories come from Go's
// unicode package (Unicode 15.0), which is what llama.cpp's generated tables
// are derived from as well.
type cpFlags uint16

const (
	fUndefined cpFlags = 1 << iota
	fNumber
	fLetter
	fSeparator
	fMark
	fPunct
	fSymbol
	fControl
	fSpace // White_Space property, independent of the category

	fCategories = fUndefined | fNumber | fLetter | fSeparator | fMark | fPunct | fSymbol | fControl
)

// bmpFlags caches the flags of every BMP code point; it is built on first use.
var (
	bmpOnce  sync.Once
	bmpFlags []cpFlags
)

func buildBMP() {
	t := make([]cpFlags, 0x10000)
	for r := rune(0); r < 0x10000; r++ {
		t[r] = computeFlags(r)
	}
	bmpFlags = t
}

// flagsOf returns the flags of r. Runes outside Unicode get fUndefined.
func flagsOf(r rune) cpFlags {
	if r >= 0 && r < 0x10000 {
		bmpOnce.Do(buildBMP)
		return bmpFlags[r]
	}
	return computeFlags(r)
}

func computeFlags(r rune) cpFlags {
	if r < 0 || r > unicode.MaxRune {
		return fUndefined
	}
	var f cpFlags
	switch {
	case unicode.IsLetter(r):
		f = fLetter
	case unicode.IsNumber(r):
		f = fNumber
	case unicode.IsMark(r):
		f = fMark
	case unicode.IsPunct(r):
		f = fPunct
	case unicode.IsSymbol(r):
		f = fSymbol
	case unicode.In(r, unicode.Zs, unicode.Zl, unicode.Zp):
		f = fSeparator
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Cs, unicode.Co):
		f = fControl
	default:
		f = fUndefined
	}
	if unicode.IsSpace(r) {
		f |= fSpace
	}
	return f
}

// cp is one decoded code point of a text: its rune (utf8.RuneError for an
// invalid byte), its byte offset and size in the text, and its flags.
type cp struct {
	r    rune
	off  int32
	size int32
	f    cpFlags
}

// decodeCPs splits text into code points. An invalid byte becomes one code
// point with rune U+FFFD and size 1, as llama.cpp does; the caller keeps the
// original bytes, so nothing is lost.
func decodeCPs(text string, out []cp) []cp {
	out = out[:0]
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			out = append(out, cp{r: rune(c), off: int32(i), size: 1, f: asciiFlags[c]})
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(text[i:])
		out = append(out, cp{r: r, off: int32(i), size: int32(n), f: flagsOf(r)})
		i += n
	}
	return out
}

var asciiFlags = func() (t [utf8.RuneSelf]cpFlags) {
	for i := range t {
		t[i] = computeFlags(rune(i))
	}
	return t
}()

// isCSpace is C's isspace in the "C" locale, which llama.cpp uses for the
// lstrip/rstrip attributes of special tokens.
func isCSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

// collapse maps a code point to the single character that stands for its
// category in llama.cpp's "collapsed" regex text: ASCII stays, non-ASCII
// whitespace becomes \v, and every other non-ASCII code point becomes one of
// U+00D0..U+00D5 by category.
func collapse(c cp) rune {
	if c.r < utf8.RuneSelf {
		return c.r
	}
	if c.f&fSpace != 0 {
		return '\v'
	}
	switch c.f & fCategories {
	case fNumber:
		return collN
	case fLetter:
		return collL
	case fPunct:
		return collP
	case fMark:
		return collM
	case fSymbol:
		return collS
	}
	return collOther
}

const (
	collOther rune = 0xD0
	collN     rune = 0xD1
	collL     rune = 0xD2
	collP     rune = 0xD3
	collM     rune = 0xD4
	collS     rune = 0xD5
)

// wide maps a code point for regexes that name no Unicode category: the
// rune itself, except that non-ASCII whitespace becomes \v (llama.cpp's
// std::wregex \s only knows ASCII whitespace).
func wide(c cp) rune {
	if c.r >= utf8.RuneSelf && c.f&fSpace != 0 {
		return '\v'
	}
	return c.r
}
