package tokenizer

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

var storiesDir = filepath.Join(shared, "models", "stories260K")

// TestStories260K checks Encode(prompt, addSpecial=true) against llama.cpp's
// llama-tokenize output for the 512-token SentencePiece vocabulary of
// stories260K (BOS included), and that Decode gives the prompt back.
func TestStories260K(t *testing.T) {
	ref := string(readShared(t, filepath.Join(storiesDir, "reference", "llamacpp-tokenize-tok512.txt")))
	tk := loadGGUFTokenizer(t, filepath.Join(storiesDir, "stories260K-f32.gguf"))
	if tk.Len() != 512 {
		t.Fatalf("Len() = %d, want 512", tk.Len())
	}
	// stories260K stores seperator/padding ids of 0xFFFFFFFF: none.
	if v := tk.Vocab(); v.SEP != -1 || v.PAD != -1 || v.BOS != 1 || v.EOS != 2 || v.UNK != 0 {
		t.Errorf("special ids: SEP %d PAD %d BOS %d EOS %d UNK %d", v.SEP, v.PAD, v.BOS, v.EOS, v.UNK)
	}
	lines := strings.Split(strings.TrimSpace(ref), "\n")
	n := 0
	for i := 0; i+1 < len(lines); i += 2 {
		prompt, ok := strings.CutPrefix(lines[i], "== ")
		if !ok {
			t.Fatalf("line %d: want '== PROMPT', got %q", i+1, lines[i])
		}
		var want []int32
		if err := json.Unmarshal([]byte(lines[i+1]), &want); err != nil {
			t.Fatalf("line %d: %v", i+2, err)
		}
		got := tk.Encode(prompt, true, false)
		if !equalIDs(got, want) {
			t.Errorf("Encode(%q):\n got %v\nwant %v", prompt, got, want)
		}
		if back := tk.Decode(got, false); back != prompt {
			t.Errorf("Decode(Encode(%q)) = %q", prompt, back)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no prompts in the reference file")
	}
}
