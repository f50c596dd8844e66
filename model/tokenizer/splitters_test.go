package tokenizer

import (
	"slices"
	"testing"
)

// genericSplit runs expr through the regexp2 engine over collapsed code
// points, the way llama.cpp runs std::regex for regexes without a
// hand-written splitter.
func genericSplit(t testing.TB, expr, text string) []int {
	re, collapsed, err := compileRegex(expr)
	if err != nil {
		t.Fatal(err)
	}
	cps := decodeCPs(text, nil)
	runes := make([]rune, len(cps))
	for i, c := range cps {
		if collapsed {
			runes[i] = collapse(c)
		} else {
			runes[i] = wide(c)
		}
	}
	return regexSplit(re, runes, 0, nil)
}

func customSplit(t testing.TB, expr, text string) []int {
	st, err := compileStep(expr)
	if err != nil || st.custom == nil {
		t.Fatalf("no hand-written splitter for %q (%v)", expr, err)
	}
	cps := decodeCPs(text, nil)
	if len(cps) == 0 {
		return nil
	}
	return st.custom(cps, 0, len(cps), nil)
}

var handWritten = func() []string {
	list := []string{gpt2Regex, llama3Regex, qwen2Regex}
	for expr := range simpleSplitters {
		list = append(list, expr)
	}
	slices.Sort(list)
	return list
}()

// TestSplittersMatchRegex checks the hand-written splitters against the
// regexes they implement.
func TestSplittersMatchRegex(t *testing.T) {
	texts := append(vectorTexts(t),
		"'S 'T 'Re 'VE 'm 'LL 'd 'x '",
		"a  b   c\t\td \n\n e \r\n\r\nf  ",
		"1234567 x12 ١٢٣٤ ½",
		"   ", " ", "\n", "a", "!!", " !!\n\n", "x \u00a0 y\u3000z",
		"\u0378\u0379 unassigned", "\xff\xfe\x80 invalid",
		"1234 12 123456 ١٢٣", "a\u3000b\u00a0 \ufeff\u0085x", "Ωmega KELVIN ŉ ῼ ∑ 'x' ‘y’ ！", "trail \t\n ",
	)
	for _, expr := range handWritten {
		for _, x := range texts {
			c, g := customSplit(t, expr, x), genericSplit(t, expr, x)
			if !slices.Equal(c, g) {
				t.Errorf("%.20q on %q:\nhand-written %v\nregex        %v", expr, x, c, g)
			}
		}
	}
}

func TestRegexRewrite(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`\p{N}+`, `[\u00D10-9]+`},
		{`[^\s\p{L}\p{N}]+`, `[^\s\u00D2A-Za-z\u00D10-9]+`},
		{`\s?\p{P}+`, `\s?[\u00D3!-#%-*,-/:-;?-@\[-\]_\{\}]+`},
		{`[\p{P}\$]`, `[\u00D3!-#%-*,-/:-;?-@\[-\]_\{\}\$]`},
		{`\[\p{M}`, `\[[\u00D4]`},
	} {
		got, err := rewriteCategories(c.in)
		if err != nil || got != c.want {
			t.Errorf("rewrite(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`\p{Han}`, `\p{L`} {
		if _, err := rewriteCategories(bad); err == nil {
			t.Errorf("rewrite(%q) accepted", bad)
		}
	}
	if _, _, err := compileRegex(`\p{L}é`); err == nil {
		t.Error("category mixed with non-ASCII accepted")
	}
	if _, _, err := compileRegex(`(`); err == nil {
		t.Error("bad regex accepted")
	}
	// A final $ is the end of the piece, never "before a final newline".
	if got := genericSplit(t, `\s+$`, "a \n"); !slices.Equal(got, []int{1, 3}) {
		t.Errorf(`\s+$ split = %v`, got)
	}
}

// TestAllPresCompile compiles every known pre-tokenizer and splits a
// sample with it.
func TestAllPresCompile(t *testing.T) {
	for name, p := range bpePres {
		pt, err := newPreTokenizer(p.regexes)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		s := &preScratch{}
		text := "Hello, world! 12345 <sentinel:3> IMGIMGABZ 中文 — ok\n"
		s.cps = decodeCPs(text, nil)
		b := pt.split(s)
		if len(b) == 0 || b[len(b)-1] != len(s.cps) {
			t.Errorf("%s: bad bounds %v", name, b)
		}
	}
}

func TestCollapse(t *testing.T) {
	for _, c := range []struct {
		r    rune
		want rune
	}{
		{'a', 'a'}, {' ', ' '}, {'\u00a0', '\v'}, {'\u3000', '\v'}, {'é', collL}, {'中', collL},
		{'٣', collN}, {'½', collN}, {'—', collP}, {'\u0301', collM}, {'€', collS}, {'\u200d', collOther},
		{'\u0378', collOther},
	} {
		if got := collapse(cp{r: c.r, size: 2, f: flagsOf(c.r)}); got != c.want {
			t.Errorf("collapse(%U) = %U, want %U", c.r, got, c.want)
		}
	}
}
