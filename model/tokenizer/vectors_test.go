package tokenizer

import (
	"path/filepath"
	"testing"
)

// checkVectors encodes every case with add_special = false and
// parse_special = false (as llama.cpp's test-tokenizer-0 produced them).
func checkVectors(t *testing.T, tk *Tokenizer, base string) {
	t.Helper()
	cases := loadVectors(t, base)
	if len(cases) == 0 {
		t.Fatalf("%s: no cases", base)
	}
	bad := 0
	for i, c := range cases {
		got := tk.Encode(c.text, false, false)
		if !equalIDs(got, c.ids) {
			bad++
			t.Errorf("%s case %d %q:\n got %v\nwant %v", filepath.Base(base), i, c.text, got, c.ids)
		}
	}
	t.Logf("%s: %d/%d cases match", filepath.Base(base), len(cases)-bad, len(cases))
}

func TestVectorsGGUF(t *testing.T) {
	for _, name := range []string{
		"llama-spm", "phi-3", "gpt-2", "falcon", "starcoder", "refact", "mpt",
		"deepseek-coder", "deepseek-llm", "bert-bge",
	} {
		t.Run(name, func(t *testing.T) {
			tk := ggufTokenizer(t, name)
			checkVectors(t, tk, filepath.Join(vocabDir, "ggml-vocab-"+name+".gguf"))
		})
	}
}

func TestVectorsHF(t *testing.T) {
	for _, c := range []struct{ dir, vectors string }{
		{"llama3", "llama-bpe"},
		{"qwen3", "qwen2"},
		{"qwen3", "deepseek-r1-qwen"},
	} {
		t.Run(c.vectors, func(t *testing.T) {
			tk := hfTok(t, c.dir)
			checkVectors(t, tk, filepath.Join(vocabDir, "ggml-vocab-"+c.vectors+".gguf"))
		})
	}
}
