package tokenizer

// Hand-written equivalents of the two hottest pre-tokenizer regexes. They
// work on decoded code points and append the end index (exclusive, in code
// points) of every piece of cps[lo:hi] to out. Positions outside [lo, hi)
// have no flags, exactly like the text outside the piece being split.

// gpt2Regex is GPT-2's pre-tokenizer regex as llama.cpp spells it; the
// splitter below follows it (plus a final \s+ for lone whitespace).
const gpt2Regex = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`

// llama3Regex and qwen2Regex are llama.cpp's case-insensitive-free spellings
// of the Llama 3 and Qwen 2 regexes; they differ only in \p{N}{1,3} vs \p{N}.
const (
	llama3Regex = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Regex  = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// span gives bounded access to cps[lo:hi].
type span struct {
	cps    []cp
	lo, hi int
}

func (s span) r(i int) rune {
	if i < s.lo || i >= s.hi {
		return -1
	}
	return s.cps[i].r
}

func (s span) f(i int) cpFlags {
	if i < s.lo || i >= s.hi {
		return 0
	}
	return s.cps[i].f
}

// contraction reports the length (2 or 3) of an English contraction
// ('s 't 'm 'd 're 've 'll) starting at i, or 0. fold makes the letters
// case-insensitive.
func (s span) contraction(i int, fold bool) int {
	if s.r(i) != '\'' || i+1 >= s.hi {
		return 0
	}
	lower := func(r rune) rune {
		if fold && r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	a := lower(s.r(i + 1))
	switch a {
	case 's', 't', 'm', 'd':
		return 2
	}
	if i+2 >= s.hi {
		return 0
	}
	b := lower(s.r(i + 2))
	if (a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l') {
		return 3
	}
	return 0
}

// other reports a code point that is in the piece and is none of
// whitespace, letter or number: [^\s\p{L}\p{N}].
func other(f cpFlags) bool {
	return f != 0 && f&(fSpace|fLetter|fNumber) == 0
}

// spaceRun counts the whitespace code points from i and returns the count
// and the index just past the last \r or \n among them (0 if none).
func (s span) spaceRun(i int) (n, lastNL int) {
	for s.f(i+n)&fSpace != 0 {
		if r := s.r(i + n); r == '\r' || r == '\n' {
			lastNL = i + n + 1
		}
		n++
	}
	return n, lastNL
}

func splitGPT2(cps []cp, lo, hi int, out []int) []int {
	s := span{cps, lo, hi}
	for pos := lo; pos < hi; {
		if n := s.contraction(pos, false); n > 0 {
			pos += n
			out = append(out, pos)
			continue
		}
		r := s.r(pos)
		f2 := s.f(pos)
		lead := 0
		if r == ' ' {
			f2 = s.f(pos + 1)
			lead = 1
		}
		switch {
		case f2&fLetter != 0: // ' ?\p{L}+'
			pos += lead
			for s.f(pos)&fLetter != 0 {
				pos++
			}
			out = append(out, pos)
			continue
		case f2&fNumber != 0: // ' ?\p{N}+'
			pos += lead
			for s.f(pos)&fNumber != 0 {
				pos++
			}
			out = append(out, pos)
			continue
		case other(f2): // ' ?[^\s\p{L}\p{N}]+'
			pos += lead
			for other(s.f(pos)) {
				pos++
			}
			out = append(out, pos)
			continue
		}
		n, _ := s.spaceRun(pos)
		switch {
		case n > 1 && pos+n < hi: // '\s+(?!\S)': leave the last space for the next word
			pos += n - 1
		case n > 0: // '\s+'
			pos += n
		default:
			pos++
		}
		out = append(out, pos)
	}
	return out
}

// splitLlama3 implements llama3Regex (maxDigits 3) and qwen2Regex
// (maxDigits 1).
func splitLlama3(cps []cp, lo, hi, maxDigits int, out []int) []int {
	s := span{cps, lo, hi}
	for pos := lo; pos < hi; {
		if n := s.contraction(pos, true); n > 0 {
			pos += n
			out = append(out, pos)
			continue
		}
		r := s.r(pos)
		f := s.f(pos)
		// '[^\r\n\p{L}\p{N}]?\p{L}+'
		if r != '\r' && r != '\n' && f&fNumber == 0 && (f&fLetter != 0 || s.f(pos+1)&fLetter != 0) {
			pos++
			for s.f(pos)&fLetter != 0 {
				pos++
			}
			out = append(out, pos)
			continue
		}
		// '\p{N}{1,maxDigits}'
		if f&fNumber != 0 {
			start := pos
			for s.f(pos)&fNumber != 0 {
				pos++
				if pos-start == maxDigits {
					out = append(out, pos)
					start = pos
				}
			}
			if pos > start {
				out = append(out, pos)
			}
			continue
		}
		// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
		lead := 0
		f2 := f
		if r == ' ' {
			f2 = s.f(pos + 1)
			lead = 1
		}
		if other(f2) {
			pos += lead
			for other(s.f(pos)) {
				pos++
			}
			for c := s.r(pos); c == '\r' || c == '\n'; c = s.r(pos) {
				pos++
			}
			out = append(out, pos)
			continue
		}
		n, lastNL := s.spaceRun(pos)
		switch {
		case lastNL > 0: // '\s*[\r\n]+'
			pos = lastNL
		case n > 1 && pos+n < hi: // '\s+(?!\S)'
			pos += n - 1
		case n > 0: // '\s+'
			pos += n
		default:
			pos++
		}
		out = append(out, pos)
	}
	return out
}
