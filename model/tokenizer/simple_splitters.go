package tokenizer

import (
	"regexp/syntax"
	"sort"
	"strings"
)

// Hand-written equivalents of the simple regexes (a character class, a
// run of one, optionally after one whitespace character) that several
// pre-tokenizers chain. They give what regexSplit gives with the regex over
// collapsed or widened text, only without a regex engine; a test and a fuzz
// target hold them to that.

// runSplitter matches opt? cls+ (or a single cls when one is set).
type runSplitter struct {
	opt func(c cp) bool
	cls func(c cp) bool
	one bool
}

func (rs runSplitter) split(cps []cp, lo, hi int, out []int) []int {
	prev := lo
	for p := lo; p < hi; {
		var start int
		switch {
		case rs.opt != nil && rs.opt(cps[p]) && p+1 < hi && rs.cls(cps[p+1]):
			start = p
			p += 2
		case rs.cls(cps[p]):
			start = p
			p++
		default:
			p++
			continue
		}
		if !rs.one {
			for p < hi && rs.cls(cps[p]) {
				p++
			}
		}
		if start > prev {
			out = append(out, start)
		}
		out = append(out, p)
		prev = p
	}
	if prev < hi {
		out = append(out, hi)
	}
	return out
}

// splitDigits3 implements [0-9][0-9][0-9].
func splitDigits3(cps []cp, lo, hi int, out []int) []int {
	digit := func(i int) bool { return cps[i].r >= '0' && cps[i].r <= '9' }
	prev := lo
	for p := lo; p+3 <= hi; {
		if !digit(p) || !digit(p+1) || !digit(p+2) {
			p++
			continue
		}
		if p > prev {
			out = append(out, p)
		}
		p += 3
		out = append(out, p)
		prev = p
	}
	if prev < hi {
		out = append(out, hi)
	}
	return out
}

// splitTrailingSpace implements \s+$: the whitespace that ends the piece.
func splitTrailingSpace(cps []cp, lo, hi int, out []int) []int {
	q := hi
	for q > lo && isSpaceCP(cps[q-1]) {
		q--
	}
	if q > lo && q < hi {
		out = append(out, q)
	}
	return append(out, hi)
}

func isSpaceCP(c cp) bool  { return c.f&fSpace != 0 }
func isNumberCP(c cp) bool { return c.f&fNumber != 0 }
func isLetterCP(c cp) bool { return c.f&fLetter != 0 }
func isPunctCP(c cp) bool  { return c.f&fPunct != 0 }
func isCRLF(c cp) bool     { return c.r == '\r' || c.r == '\n' }

// punctOr is \p{P} plus some ASCII characters, over collapsed text.
func punctOr(extra string) func(c cp) bool {
	return func(c cp) bool {
		return c.f&fPunct != 0 || (c.r < 0x80 && strings.ContainsRune(extra, c.r))
	}
}

// wideClass compiles a bracket expression without categories to a test on
// widened code points.
func wideClass(class string) func(c cp) bool {
	re, err := syntax.Parse(class, syntax.Perl)
	if err != nil || re.Op != syntax.OpCharClass {
		panic("tokenizer: bad built-in class " + class)
	}
	ranges := re.Rune // sorted lo, hi pairs
	return func(c cp) bool {
		w := wide(c)
		// the first pair whose hi is >= w
		i := sort.Search(len(ranges)/2, func(k int) bool { return ranges[2*k+1] >= w })
		return i < len(ranges)/2 && ranges[2*i] <= w
	}
}

// simpleSplitters maps regexes of llama.cpp's pre-tokenizers to their
// hand-written splitters.
var simpleSplitters = func() map[string]func(cps []cp, lo, hi int, out []int) []int {
	m := map[string]func(cps []cp, lo, hi int, out []int) []int{
		`[0-9][0-9][0-9]`: splitDigits3,
		`\s+$`:            splitTrailingSpace,
	}
	runs := map[string]runSplitter{
		`\p{N}`:                           {cls: isNumberCP, one: true},
		`\p{N}+`:                          {cls: isNumberCP},
		"[\r\n]":                          {cls: isCRLF, one: true},
		`\s?\p{L}+`:                       {opt: isSpaceCP, cls: isLetterCP},
		`\s?\p{P}+`:                       {opt: isSpaceCP, cls: isPunctCP},
		`[\p{P}\$\+<=>\^~\|]+`:            {cls: punctOr("$+<=>^~|")},
		`[\p{P}\$\+<=>\^~\|` + "`" + `]+`: {cls: punctOr("$+<=>^~|`")},
		`[一-龥ࠀ-一가-퟿]+`:                    {cls: wideClass(`[一-龥ࠀ-一가-퟿]`)},
		`\s?[!-/:-~！-／：-～‘-‟　-。]+`: {opt: isSpaceCP, cls: wideClass(`[!-/:-~！-／：-～‘-‟　-。]`)},
	}
	letters := preDSLLM[1] // \s?[...]+ with deepseek-llm's letter class
	runs[letters] = runSplitter{opt: isSpaceCP, cls: wideClass(letters[len(`\s?`) : len(letters)-1])}
	for expr, rs := range runs {
		m[expr] = rs.split
	}
	return m
}()
