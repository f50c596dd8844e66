package tokenizer

import (
	"bytes"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/octet-dev/octet/model/gguf"
)

func TestVocabFromHFFields(t *testing.T) {
	l3 := hfVocab(t, "llama3")
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"Model", l3.Model, "gpt2"},
		{"Pre", l3.Pre, "llama-bpe"},
		{"Len", len(l3.Tokens), 128256},
		{"BOS", l3.BOS, int32(128000)},
		{"EOS", l3.EOS, int32(128001)},
		{"AddBOS", l3.AddBOS, true},
		{"AddEOS", l3.AddEOS, false},
		{"type of <|eot_id|>", l3.Types[128009], TypeControl},
		{"type of a word", l3.Types[9906], TypeNormal},
		{"template", strings.Contains(l3.ChatTemplate, "<|start_header_id|>"), true},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("llama3 %s = %v, want %v", c.name, c.got, c.want)
		}
	}

	q := hfVocab(t, "qwen3")
	think := int32(151667)
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"Pre", q.Pre, "qwen2"},
		{"BOS", q.BOS, int32(-1)}, // bos_token: null
		{"EOS", q.EOS, int32(151645)},
		{"PAD", q.PAD, int32(151643)},
		{"AddBOS", q.AddBOS, false},
		{"<think> text", q.Tokens[think], "<think>"},
		{"<think> type", q.Types[think], TypeUserDefined}, // "special": false
		{"<|im_start|> type", q.Types[151644], TypeControl},
		{"merges", len(q.Merges), 151387},
		{"merge 0", q.Merges[0], "Ġ Ġ"},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("qwen3 %s = %v, want %v", c.name, c.got, c.want)
		}
	}

	tk := hfTok(t, "qwen3")
	for _, id := range []int32{151643, 151645} {
		if !tk.IsEOG(id) {
			t.Errorf("qwen3: %q is not EOG", tk.Piece(id))
		}
	}
	if tk.IsEOG(151644) {
		t.Error("qwen3: <|im_start|> is EOG")
	}
	// A user-defined token is recognised even without parseSpecial.
	if ids := tk.Encode("a<think>b", false, false); !equalIDs(ids, []int32{64, think, 65}) {
		t.Errorf("qwen3 Encode(a<think>b) = %v", ids)
	}
}

// TestHFGGUFRoundTrip writes an imported vocabulary to GGUF, reads it back
// and checks the vocabulary and every vector encoding survive.
func TestHFGGUFRoundTrip(t *testing.T) {
	for _, c := range []struct{ dir, vectors string }{{"llama3", "llama-bpe"}, {"qwen3", "qwen2"}} {
		t.Run(c.dir, func(t *testing.T) {
			v := hfVocab(t, c.dir)
			w := gguf.NewWriter()
			v.WriteGGUF(w)
			var buf bytes.Buffer
			if _, err := w.WriteTo(&buf); err != nil {
				t.Fatal(err)
			}
			f, err := gguf.Parse(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			v2, err := VocabFromGGUF(f)
			if err != nil {
				t.Fatal(err)
			}
			// An absent BOS is written as no key; llama.cpp (and
			// VocabFromGGUF) then use the BPE default, 11.
			if v.BOS < 0 {
				v2.BOS = v.BOS
			}
			if !reflect.DeepEqual(v, v2) {
				t.Errorf("vocabulary changed in the round trip")
				compareVocabs(t, v, v2)
			}
			tk2, err := New(v2)
			if err != nil {
				t.Fatal(err)
			}
			tk := hfTok(t, c.dir)
			for _, vc := range loadVectors(t, filepath.Join(vocabDir, "ggml-vocab-"+c.vectors+".gguf")) {
				a, b := tk.Encode(vc.text, true, true), tk2.Encode(vc.text, true, true)
				if !equalIDs(a, b) || !equalIDs(tk2.Encode(vc.text, false, false), vc.ids) {
					t.Errorf("%q: %v after the round trip, %v before", vc.text, b, a)
				}
			}
		})
	}
}

func compareVocabs(t *testing.T, a, b *Vocab) {
	t.Helper()
	va, vb := reflect.ValueOf(*a), reflect.ValueOf(*b)
	for i := 0; i < va.NumField(); i++ {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			t.Errorf("field %s differs", va.Type().Field(i).Name)
		}
	}
}

func TestVocabFromHFErrors(t *testing.T) {
	byteLevel := `{"type":"ByteLevel","use_regex":true}`
	for _, c := range []struct{ name, tj, cfg, want string }{
		{"bad json", `{`, ``, "parsing tokenizer.json"},
		{"unigram", `{"model":{"type":"Unigram"}}`, ``, `model type "Unigram"`},
		{"byte fallback", `{"model":{"type":"BPE","byte_fallback":true}}`, ``, "byte_fallback"},
		{"no pre", `{"model":{"type":"BPE","vocab":{"a":0}}}`, ``, "no pre_tokenizer"},
		{"unknown regex", `{"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"x+"}},{"type":"ByteLevel","use_regex":false}]},"model":{"type":"BPE","vocab":{"a":0}}}`, ``, "unrecognised pre-tokenizer regex"},
		{"unknown step", `{"pre_tokenizer":{"type":"Whitespace"},"model":{"type":"BPE","vocab":{"a":0}}}`, ``, `unsupported pre-tokenizer "Whitespace"`},
		{"negative id", `{"pre_tokenizer":` + byteLevel + `,"model":{"type":"BPE","vocab":{"a":-1,"b":0}}}`, ``, "negative id"},
		{"bad merge", `{"pre_tokenizer":` + byteLevel + `,"model":{"type":"BPE","vocab":{"a":0},"merges":[1]}}`, ``, "bad merge"},
		{"bad config", `{"pre_tokenizer":` + byteLevel + `,"model":{"type":"BPE","vocab":{"a":0}}}`, `[`, "tokenizer_config.json"},
		{"bad token", `{"pre_tokenizer":` + byteLevel + `,"model":{"type":"BPE","vocab":{"a":0}}}`, `{"bos_token":5}`, "bad token"},
	} {
		_, err := VocabFromHF(c.tj, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "tokenizer: ") {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func TestVocabFromHFSmall(t *testing.T) {
	tj := `{
	  "added_tokens": [{"id": 5, "content": "<|end|>", "special": false}, {"id": 4, "content": "<x>", "special": true}],
	  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
	  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}
	}`
	cfg := `{"bos_token": {"content": "<x>"}, "eos_token": "<|end|>", "add_eos_token": true,
	  "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}`
	v, err := VocabFromHF(tj, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := &Vocab{
		Model: "gpt2", Pre: "gpt-2",
		Tokens: []string{"a", "b", "ab", "[PAD3]", "<x>", "<|end|>"},
		Types:  []TokenType{TypeNormal, TypeNormal, TypeNormal, TypeUserDefined, TypeControl, TypeControl},
		Merges: []string{"a b"},
		BOS:    4, EOS: 5, EOT: -1, EOM: -1, UNK: -1, PAD: -1, SEP: -1, CLS: -1, MASK: -1,
		AddEOS: true, ChatTemplate: "D",
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %+v\nwant %+v", v, want)
	}
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	if ids := tk.Encode("ab", true, false); !equalIDs(ids, []int32{2, 5}) {
		t.Errorf("Encode(ab) = %v", ids)
	}
}
