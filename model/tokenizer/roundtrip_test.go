package tokenizer

import (
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// losslessSets are the vector sets whose tokenizer is lossless: SentencePiece
// with byte fallback and byte-level BPE. WordPiece (bert-bge) is not: it
// lowercases, strips accents, drops control characters and whitespace
// runs, and maps unknown words to [UNK].
var losslessSets = []struct {
	name string
	load func(t testing.TB) *Tokenizer
}{
	{"llama-spm", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "llama-spm") }},
	{"phi-3", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "phi-3") }},
	{"gpt-2", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "gpt-2") }},
	{"falcon", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "falcon") }},
	{"starcoder", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "starcoder") }},
	{"refact", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "refact") }},
	{"mpt", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "mpt") }},
	{"deepseek-coder", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "deepseek-coder") }},
	{"deepseek-llm", func(t testing.TB) *Tokenizer { return ggufTokenizer(t, "deepseek-llm") }},
	{"llama-bpe", func(t testing.TB) *Tokenizer { return hfTok(t, "llama3") }},
	{"qwen2", func(t testing.TB) *Tokenizer { return hfTok(t, "qwen3") }},
}

// extraTexts exercise multi-byte characters beyond the vector inputs.
var extraTexts = []string{
	"Hello",
	" Hello",
	"😀 emoji 👩‍👩‍👧 and flags 🇫🇷",
	"中文字符和日本語のテキスト、한국어",
	"Ünïcödé àçcéñts — “quotes” …",
	"tabs\tand\nnewlines\r\n  indented",
	"<s> </s> <unk> <|endoftext|> written as text",
	"ঃ ஃ ๏ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u0301 combining",
}

func vectorTexts(t testing.TB) []string {
	var texts []string
	for _, c := range loadVectors(t, filepath.Join(vocabDir, "ggml-vocab-gpt-2.gguf")) {
		texts = append(texts, c.text)
	}
	return append(texts, extraTexts...)
}

// TestRoundTrip checks Decode(Encode(x)) == x for every vector input on the
// lossless vocabularies, with and without BOS.
func TestRoundTrip(t *testing.T) {
	texts := vectorTexts(t)
	for _, set := range losslessSets {
		t.Run(set.name, func(t *testing.T) {
			tk := set.load(t)
			for _, x := range texts {
				for _, add := range []bool{false, true} {
					ids := tk.Encode(x, add, false)
					// special = true: "<s>" written in SentencePiece text merges
					// into the control token <s>, as in llama.cpp.
					if got := tk.Decode(ids, true); got != x {
						if add && tk.AddBOS() {
							got = strings.TrimPrefix(got, tk.Piece(tk.BOS()))
						}
						if got != x {
							t.Errorf("add=%v: Decode(Encode(%q)) = %q", add, x, got)
						}
					}
				}
			}
		})
	}
}

// TestRoundTripBytes checks that the token bytes of an encoding are exactly
// the input, invalid UTF-8 included (llama.cpp would have turned invalid
// bytes into U+FFFD in BPE vocabularies). Not so for vocabularies such as
// deepseek's, which map the bytes that never occur in UTF-8 (0xC0, 0xFF,
// ...) to user-defined tokens whose text is the character ("ÿ"), not the
// byte, or starcoder's, which has no token at all for them (they are
// dropped, as in llama.cpp).
func TestRoundTripBytes(t *testing.T) {
	inputs := []string{"\xff\xfe invalid \xc3", "a\x80b", "\xe2\x96", " \xe2\x96 ", "a\x00b", "ok"}
	for _, name := range []string{"llama-spm", "gpt-2"} {
		tk := ggufTokenizer(t, name)
		for _, x := range inputs {
			var b []byte
			for i, id := range tk.Encode(x, false, false) {
				p := tk.TokenBytes(id, true)
				if i == 0 && tk.stripSpace {
					p = []byte(strings.TrimPrefix(string(p), " "))
				}
				b = append(b, p...)
			}
			if string(b) != x {
				t.Errorf("%s: bytes of Encode(%q) = %q", name, x, b)
			}
			if got, want := tk.Decode(tk.Encode(x, false, false), true), strings.ToValidUTF8(x, "\uFFFD"); !utf8.ValidString(got) || (x == "ok" && got != want) {
				t.Errorf("%s: Decode(Encode(%q)) = %q", name, x, got)
			}
		}
	}
}

// TestWordPieceDecode documents what survives a WordPiece round trip: the
// words, lowercased and without accents, each with a leading space.
func TestWordPieceDecode(t *testing.T) {
	tk := ggufTokenizer(t, "bert-bge")
	for _, c := range []struct{ in, want string }{
		{"Hello World", " hello world"},
		{"Héllo,   WORLD!", " hello , world !"},
		{"", ""},
	} {
		if got := tk.Decode(tk.Encode(c.in, false, false), false); got != c.want {
			t.Errorf("Decode(Encode(%q)) = %q, want %q", c.in, got, c.want)
		}
	}
	ids := tk.Encode("Hello", true, false)
	if len(ids) < 3 || ids[0] != 101 || ids[len(ids)-1] != 102 {
		t.Errorf("Encode(Hello, addSpecial) = %v, want [CLS] ... [SEP]", ids)
	}
}

// TestSPMSpacePrefix covers the leading-space rule of SentencePiece decoding.
func TestSPMSpacePrefix(t *testing.T) {
	tk := ggufTokenizer(t, "llama-spm")
	ids := tk.Encode("Hello", true, false)
	if want := []int32{1, 15043}; !equalIDs(ids, want) {
		t.Fatalf("Encode(Hello) = %v, want %v", ids, want)
	}
	for _, c := range []struct {
		ids  []int32
		opts []DecoderOption
		want string
	}{
		{[]int32{1, 15043}, nil, "Hello"},
		{[]int32{15043}, nil, "Hello"},
		{[]int32{15043}, []DecoderOption{MidText}, " Hello"},
		{[]int32{15043, 15043}, nil, "Hello Hello"},
		{[]int32{15043, 2, 1, 15043}, nil, "HelloHello"},       // the space after BOS is the prefix
		{[]int32{1, 29871, 13}, nil, "\n"},                     // "▁" then a newline byte
		{[]int32{1, 259}, nil, " "},                            // "▁▁": one space is the prefix
		{[]int32{1, 15043}, []DecoderOption{MidText}, "Hello"}, // BOS re-arms the rule
	} {
		if got := tk.Decode(c.ids, false, c.opts...); got != c.want {
			t.Errorf("Decode(%v, %v) = %q, want %q", c.ids, c.opts, got, c.want)
		}
	}
	if got := tk.Decode([]int32{1, 15043}, true); got != "<s>Hello" {
		t.Errorf("Decode special = %q", got)
	}
	// BPE adds no prefix, so nothing is stripped.
	gpt := ggufTokenizer(t, "gpt-2")
	if got := gpt.Decode(gpt.Encode(" Hello", false, false), false); got != " Hello" {
		t.Errorf("gpt-2: %q", got)
	}
}
