package tokenizer

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/octet-dev/octet/model/gguf"
)

// parseWritten writes w to memory and parses it back.
func parseWritten(t *testing.T, w *gguf.Writer) *gguf.File {
	t.Helper()
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func nTokens(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("t%d", i)
	}
	return s
}

func TestVocabFromGGUFDefaults(t *testing.T) {
	type ids struct{ bos, eos, unk, sep, pad, mask int32 }
	for _, c := range []struct {
		name   string
		keys   map[string]gguf.Value
		ids    ids
		addBOS bool
		prefix bool
	}{
		{"llama", map[string]gguf.Value{keyModel: gguf.String("llama")}, ids{1, 2, 0, -1, -1, -1}, true, true},
		{"bert", map[string]gguf.Value{keyModel: gguf.String("bert")}, ids{101, -1, 100, 102, 0, 103}, true, false},
		{"gpt2", map[string]gguf.Value{keyModel: gguf.String("gpt2")}, ids{11, 11, -1, -1, -1, -1}, false, false},
		{"llama-bpe", map[string]gguf.Value{keyModel: gguf.String("gpt2"), keyPre: gguf.String("llama-bpe")}, ids{11, 11, -1, -1, -1, -1}, true, false},
		{"keys", map[string]gguf.Value{
			keyModel:                          gguf.String("llama"),
			"tokenizer.ggml.bos_token_id":     gguf.Uint32(5),
			"tokenizer.ggml.eos_token_id":     gguf.Uint32(0xFFFFFFFF), // none
			"tokenizer.ggml.unknown_token_id": gguf.Uint32(1 << 20),    // out of range: default kept
			"tokenizer.ggml.padding_token_id": gguf.Int32(-1),
			keyAddBOS:                         gguf.Bool(false),
			keyAddPrefix:                      gguf.Bool(false),
		}, ids{5, -1, 0, -1, -1, -1}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := gguf.NewWriter()
			w.Set(keyTokens, gguf.Strings(nTokens(200)))
			if c.keys[keyModel].Any() == "gpt2" {
				w.Set(keyMerges, gguf.Strings([]string{"t1 t2"}))
			}
			for k, v := range c.keys {
				w.Set(k, v)
			}
			v, err := VocabFromGGUF(parseWritten(t, w))
			if err != nil {
				t.Fatal(err)
			}
			got := ids{v.BOS, v.EOS, v.UNK, v.SEP, v.PAD, v.MASK}
			if got != c.ids || v.AddBOS != c.addBOS || v.AddSpacePrefix != c.prefix {
				t.Errorf("ids %+v addBOS %v prefix %v; want %+v %v %v", got, v.AddBOS, v.AddSpacePrefix, c.ids, c.addBOS, c.prefix)
			}
			if v.EOT != -1 || v.EOM != -1 || v.CLS != -1 {
				t.Errorf("EOT %d EOM %d CLS %d, want -1", v.EOT, v.EOM, v.CLS)
			}
		})
	}

	// Default ids outside a small vocabulary are disabled.
	w := gguf.NewWriter()
	w.Set(keyModel, gguf.String("bert"))
	w.Set(keyTokens, gguf.Strings(nTokens(50)))
	v, err := VocabFromGGUF(parseWritten(t, w))
	if err != nil {
		t.Fatal(err)
	}
	if v.BOS != -1 || v.UNK != -1 || v.PAD != 0 || !v.Lowercase || !v.StripAccents {
		t.Errorf("small bert: %+v", v)
	}
}

func TestVocabFromGGUFErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		keys map[string]gguf.Value
		want string
	}{
		{"no model", map[string]gguf.Value{keyTokens: gguf.Strings([]string{"a"})}, keyModel},
		{"no tokens", map[string]gguf.Value{keyModel: gguf.String("llama")}, keyTokens},
		{"tokens not strings", map[string]gguf.Value{keyModel: gguf.String("llama"), keyTokens: gguf.Int32s([]int32{1})}, "not an array of strings"},
		{"short scores", map[string]gguf.Value{keyModel: gguf.String("llama"), keyTokens: gguf.Strings([]string{"a", "b"}), keyScores: gguf.Float32s([]float32{1})}, "1 entries for 2 tokens"},
		{"bad scores", map[string]gguf.Value{keyModel: gguf.String("llama"), keyTokens: gguf.Strings([]string{"a"}), keyScores: gguf.Strings([]string{"x"})}, "not a numeric array"},
		{"short types", map[string]gguf.Value{keyModel: gguf.String("llama"), keyTokens: gguf.Strings([]string{"a", "b"}), keyTypes: gguf.Int32s([]int32{1})}, "1 entries for 2 tokens"},
		{"bad merges", map[string]gguf.Value{keyModel: gguf.String("gpt2"), keyTokens: gguf.Strings([]string{"a"}), keyMerges: gguf.Int32s([]int32{1})}, "not an array of strings"},
		{"bad id", map[string]gguf.Value{keyModel: gguf.String("llama"), keyTokens: gguf.Strings([]string{"a"}), "tokenizer.ggml.bos_token_id": gguf.String("x")}, "not an integer"},
	} {
		w := gguf.NewWriter()
		for k, v := range c.keys {
			w.Set(k, v)
		}
		_, err := VocabFromGGUF(parseWritten(t, w))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "tokenizer: ") {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, err := VocabFromGGUF(nil); err == nil {
		t.Error("nil file accepted")
	}
}

func TestWriteGGUFRoundTrip(t *testing.T) {
	for _, v := range []*Vocab{
		{
			Model: "llama", Pre: "default", Tokens: []string{"<unk>", "<s>", "</s>", "▁a"},
			Scores: []float32{0, 0, 0, -1.5}, Types: []TokenType{TypeUnknown, TypeControl, TypeControl, TypeNormal},
			BOS: 1, EOS: 2, EOT: -1, EOM: -1, UNK: 0, PAD: -1, SEP: -1, CLS: -1, MASK: -1,
			AddBOS: true, AddSpacePrefix: true, ChatTemplate: "{{ x }}",
		},
		{
			Model: "bert", Tokens: nTokens(110), BOS: 101, EOS: -1, EOT: -1, EOM: -1, UNK: 100, PAD: 0,
			SEP: 102, CLS: 101, MASK: 103, AddBOS: true, AddSEP: true, Lowercase: true, StripAccents: false,
		},
		{
			Model: "gpt2", Pre: "qwen2", Tokens: nTokens(20), Merges: []string{"t1 t2"},
			BOS: 3, EOS: 4, EOT: 5, EOM: 6, UNK: -1, PAD: 7, SEP: -1, CLS: -1, MASK: -1, AddEOS: true,
		},
	} {
		w := gguf.NewWriter()
		v.WriteGGUF(w)
		got, err := VocabFromGGUF(parseWritten(t, w))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Errorf("%s: round trip changed the vocabulary", v.Model)
			compareVocabs(t, v, got)
		}
	}
}

func TestNewErrors(t *testing.T) {
	base := func() *Vocab {
		return &Vocab{Model: "llama", Tokens: []string{"a", "b"}, BOS: -1, EOS: -1, EOT: -1, EOM: -1, UNK: -1, PAD: -1, SEP: -1, CLS: -1, MASK: -1}
	}
	for _, c := range []struct {
		name string
		edit func(v *Vocab)
		want string
	}{
		{"unknown model", func(v *Vocab) { v.Model = "t5" }, `unknown tokenizer model "t5"`},
		{"unknown pre", func(v *Vocab) { v.Model, v.Pre = "gpt2", "nonesuch" }, `unknown pre-tokenizer "nonesuch"`},
		{"empty", func(v *Vocab) { v.Tokens = nil }, "empty vocabulary"},
		{"short scores", func(v *Vocab) { v.Scores = []float32{1} }, "1 scores for 2 tokens"},
		{"short types", func(v *Vocab) { v.Types = []TokenType{1} }, "1 token types for 2 tokens"},
	} {
		v := base()
		c.edit(v)
		_, err := New(v)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "tokenizer: ") {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, err := New(nil); err == nil {
		t.Error("nil vocabulary accepted")
	}
	// A missing pre of a BPE vocabulary is llama.cpp's "default".
	v := base()
	v.Model = "gpt2"
	if _, err := New(v); err != nil {
		t.Errorf("gpt2 without pre: %v", err)
	}
	// Out-of-range special ids are disabled rather than trusted.
	v = base()
	v.BOS, v.EOS = 7, -5
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	if tk.BOS() != -1 || tk.EOS() != -1 || tk.AddBOS() {
		t.Errorf("BOS %d EOS %d AddBOS %v", tk.BOS(), tk.EOS(), tk.AddBOS())
	}
	if ids := tk.Encode("ab", true, true); len(ids) != 2 {
		t.Errorf("Encode = %v", ids)
	}
}

// TestSPMNoByteFallback: a SentencePiece vocabulary without <0xNN> tokens
// encodes an unknown character as one UNK.
func TestSPMNoByteFallback(t *testing.T) {
	v := &Vocab{
		Model: "llama", Tokens: []string{"<unk>", "<s>", "</s>", "▁", "a", "▁a"},
		Scores: []float32{0, 0, 0, -1, -2, -0.5},
		Types:  []TokenType{TypeUnknown, TypeControl, TypeControl, TypeNormal, TypeNormal, TypeNormal},
		BOS:    1, EOS: 2, EOT: -1, EOM: -1, UNK: 0, PAD: -1, SEP: -1, CLS: -1, MASK: -1,
		AddBOS: true, AddSpacePrefix: true,
	}
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tk.Encode("a€a", true, false), []int32{1, 5, 0, 4}; !equalIDs(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
	if got := tk.Decode([]int32{1, 5, 0, 4}, false); got != "aa" {
		t.Errorf("Decode = %q", got)
	}
}
