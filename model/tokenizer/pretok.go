package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// bpePre describes one tokenizer.ggml.pre value of a "gpt2" (byte-level
// BPE) vocabulary: the regexes applied in sequence and the flags llama.cpp
// ties to the name.
type bpePre struct {
	regexes      []string
	ignoreMerges bool // a pre-tokenized word that is a token is emitted whole
	addBOS       bool // llama.cpp's add_bos default for this pre type
}

// Regex sets, verbatim from llama.cpp's llama-vocab.cpp.
var (
	preDefault = []string{
		`[\p{P}\$\+<=>\^~\|]+`,
		gpt2Regex,
		`\p{N}+`,
		`[0-9][0-9][0-9]`,
	}
	preGPT2      = []string{gpt2Regex}
	preStarcoder = []string{`\p{N}`, gpt2Regex}
	preFalcon    = []string{`[\p{P}\$\+<=>\^~\|` + "`" + `]+`, gpt2Regex, `[0-9][0-9][0-9]`}
	preLlama3    = []string{llama3Regex}
	preQwen2     = []string{qwen2Regex}
	preDSCoder   = []string{
		"[\r\n]",
		`\s?\p{L}+`,
		`\s?\p{P}+`,
		`[一-龥ࠀ-一가-퟿]+`,
		`\p{N}`,
	}
	preDSLLM = []string{
		"[\r\n]",
		// Letters of cased scripts; spelled with escapes because several
		// of them (U+1F7D, U+1FBE, U+2126, U+212A, ...) are NFC singletons
		// that editors and tools silently replace.
		"\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+",
		`\s?[!-/:-~！-／：-～‘-‟　-。]+`,
		`\s+$`,
		`[一-龥ࠀ-一가-퟿]+`,
		`\p{N}+`,
	}
	prePoro      = []string{` ?[^(\s|.,!?…。，、।۔،)]+`}
	preViking    = []string{` ?[^(\s|.,!?…。，、।۔،)]+`, `\p{N}`}
	preChameleon = []string{
		`<sentinel:[0-9]+>`,
		`(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z`,
		`([\t\n]|    |  )`,
		`\p{N}`,
		`[\p{P}!-/:-@\[-` + "`" + `{-~]`,
		gpt2Regex,
	}
	preBailing   = []string{`'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`}
	preSeedCoder = []string{`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+`}
)

// bpePres maps every supported tokenizer.ggml.pre name to its rules. The
// names and groupings follow llama.cpp; an unknown name is refused by New.
var bpePres = func() map[string]bpePre {
	m := map[string]bpePre{}
	add := func(p bpePre, names ...string) {
		for _, n := range names {
			m[n] = p
		}
	}
	add(bpePre{regexes: preDefault}, "default")
	add(bpePre{regexes: preLlama3, ignoreMerges: true, addBOS: true},
		"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano")
	add(bpePre{regexes: preLlama3}, "dbrx", "smaug-bpe")
	add(bpePre{regexes: preDSLLM}, "deepseek-llm")
	add(bpePre{regexes: preDSCoder}, "deepseek-coder")
	add(bpePre{regexes: preFalcon}, "falcon")
	add(bpePre{regexes: preGPT2},
		"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
		"modern-bert", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4",
		"jina-v1-en", "jina-v2-code", "roberta-bpe")
	add(bpePre{regexes: preStarcoder},
		"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2")
	add(bpePre{regexes: preQwen2},
		"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "hunyuan", "solar-open", "megrez", "grok-2")
	add(bpePre{regexes: prePoro}, "poro-chat", "bloom", "gpt3-finnish")
	add(bpePre{regexes: preViking}, "viking")
	add(bpePre{regexes: preChameleon, addBOS: true}, "chameleon")
	add(bpePre{regexes: preBailing}, "bailingmoe", "bailingmoe2", "llada-moe")
	add(bpePre{regexes: preSeedCoder}, "seed-coder")
	return m
}()

// splitStep is one regex of a pre-tokenizer: a hand-written splitter when
// one exists for the regex, otherwise a regexp2 program run over the
// collapsed (or widened) code points, as llama.cpp runs std::regex.
type splitStep struct {
	custom    func(cps []cp, lo, hi int, out []int) []int
	re        *regexp2.Regexp
	collapsed bool // re expects collapse()d runes, otherwise wide() runes
}

type preTokenizer struct {
	steps    []splitStep
	needColl bool // some step runs on collapse()d runes
	needWide bool // some step runs on wide() runes
}

func newPreTokenizer(regexes []string) (*preTokenizer, error) {
	p := &preTokenizer{}
	for _, expr := range regexes {
		st, err := compileStep(expr)
		if err != nil {
			return nil, err
		}
		if st.re != nil {
			if st.collapsed {
				p.needColl = true
			} else {
				p.needWide = true
			}
		}
		p.steps = append(p.steps, st)
	}
	return p, nil
}

func compileStep(expr string) (splitStep, error) {
	switch expr {
	case gpt2Regex:
		return splitStep{custom: splitGPT2}, nil
	case llama3Regex:
		return splitStep{custom: func(c []cp, lo, hi int, out []int) []int { return splitLlama3(c, lo, hi, 3, out) }}, nil
	case qwen2Regex:
		return splitStep{custom: func(c []cp, lo, hi int, out []int) []int { return splitLlama3(c, lo, hi, 1, out) }}, nil
	}
	if f, ok := simpleSplitters[expr]; ok {
		return splitStep{custom: f}, nil
	}
	re, collapsed, err := compileRegex(expr)
	if err != nil {
		return splitStep{}, err
	}
	return splitStep{re: re, collapsed: collapsed}, nil
}

// compileRegex translates a llama.cpp pre-tokenizer regex for regexp2. A
// regex that names Unicode categories (\p{L} ...) is rewritten for the
// collapsed alphabet: \p{X} becomes a class of its placeholder rune plus the
// ASCII members of the category, exactly as llama.cpp does. A final '$'
// (end of input in std::regex ECMAScript) becomes \z.
func compileRegex(expr string) (*regexp2.Regexp, bool, error) {
	collapsed := strings.Contains(expr, `\p{`)
	src := expr
	if collapsed {
		for _, r := range expr {
			if r >= utf8.RuneSelf {
				return nil, false, fmt.Errorf("tokenizer: regex %q mixes Unicode categories and non-ASCII characters", expr)
			}
		}
		var err error
		if src, err = rewriteCategories(expr); err != nil {
			return nil, false, err
		}
	}
	if strings.HasSuffix(src, "$") && !strings.HasSuffix(src, `\$`) {
		src = src[:len(src)-1] + `\z`
	}
	re, err := regexp2.Compile(src, regexp2.ECMAScript)
	if err != nil {
		return nil, false, fmt.Errorf("tokenizer: compiling pre-tokenizer regex %q: %v", expr, err)
	}
	return re, collapsed, nil
}

// categoryClass is the class body standing for \p{X} in collapsed text:
// the placeholder rune and the ASCII characters of the category (llama.cpp's
// k_ucat_map, which leaves '~' out of \p{S}).
var categoryClass = map[string]string{
	"N":  `\u00D1` + `0-9`,
	"L":  `\u00D2` + `A-Za-z`,
	"Lu": `\u00D2` + `A-Za-z`,
	"Ll": `\u00D2` + `A-Za-z`,
	"Lt": `\u00D2` + `A-Za-z`,
	"Lm": `\u00D2` + `A-Za-z`,
	"Lo": `\u00D2` + `A-Za-z`,
	"P":  `\u00D3` + `!-#%-*,-/:-;?-@\[-\]_\{\}`,
	"M":  `\u00D4`,
	"S":  `\u00D5` + `\$\+<->\^` + "`" + `\|`,
}

func rewriteCategories(expr string) (string, error) {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case c == '\\' && i+1 < len(expr) && expr[i+1] == 'p' && i+2 < len(expr) && expr[i+2] == '{':
			end := strings.IndexByte(expr[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("tokenizer: regex %q: unterminated \\p{", expr)
			}
			name := expr[i+3 : i+end]
			body, ok := categoryClass[name]
			if !ok {
				return "", fmt.Errorf("tokenizer: regex %q: unsupported category \\p{%s}", expr, name)
			}
			if inClass {
				b.WriteString(body)
			} else {
				b.WriteString("[" + body + "]")
			}
			i += end
		case c == '\\' && i+1 < len(expr):
			b.WriteByte(c)
			b.WriteByte(expr[i+1])
			i++
		case c == '[' && !inClass:
			inClass = true
			b.WriteByte(c)
		case c == ']' && inClass:
			inClass = false
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// preScratch holds the reusable buffers of one pre-tokenization.
type preScratch struct {
	cps    []cp
	coll   []rune
	wide   []rune
	bounds []int
	next   []int
}

// split returns the end offsets (in code points of s.cps) of the pieces of
// text. s.cps must already hold decodeCPs(text).
func (p *preTokenizer) split(s *preScratch) []int {
	n := len(s.cps)
	if n == 0 {
		return s.bounds[:0]
	}
	if p.needColl {
		s.coll = s.coll[:0]
		for _, c := range s.cps {
			s.coll = append(s.coll, collapse(c))
		}
	}
	if p.needWide {
		s.wide = s.wide[:0]
		for _, c := range s.cps {
			s.wide = append(s.wide, wide(c))
		}
	}
	s.bounds = append(s.bounds[:0], n)
	for _, st := range p.steps {
		s.next = s.next[:0]
		lo := 0
		for _, hi := range s.bounds {
			if st.custom != nil {
				s.next = st.custom(s.cps, lo, hi, s.next)
			} else {
				runes := s.wide
				if st.collapsed {
					runes = s.coll
				}
				s.next = regexSplit(st.re, runes[lo:hi], lo, s.next)
			}
			lo = hi
		}
		s.bounds, s.next = s.next, s.bounds
	}
	return s.bounds
}

// regexSplit cuts runes (which start at code point base) at every match of
// re: each match and each run of text between matches becomes a piece, as
// llama.cpp's std::regex_iterator loop does. Empty matches cut nothing.
func regexSplit(re *regexp2.Regexp, runes []rune, base int, out []int) []int {
	prev := 0
	m, err := re.FindRunesMatch(runes)
	for err == nil && m != nil {
		start, end := m.Index, m.Index+m.Length
		if end > start {
			if start > prev {
				out = append(out, base+start)
			}
			out = append(out, base+end)
			prev = end
		}
		m, err = re.FindNextMatch(m)
	}
	if prev < len(runes) {
		out = append(out, base+len(runes))
	}
	return out
}
