package tokenizer

import (
	"sync"
	"testing"
)

var (
	wholeOnce sync.Once
	wholeTok  *Tokenizer
)

// wholeSPM is llama-spm merging each fragment as a whole, as llama.cpp does,
// without the word-by-word shortcut.
func wholeSPM(t testing.TB) *Tokenizer {
	tk := ggufTokenizer(t, "llama-spm")
	wholeOnce.Do(func() {
		w, err := New(tk.Vocab())
		if err != nil {
			panic(err)
		}
		w.spmSplit = false
		wholeTok = w
	})
	return wholeTok
}

// TestSPMWordSplit checks that merging word by word gives what merging the
// whole text gives.
func TestSPMWordSplit(t *testing.T) {
	tk := ggufTokenizer(t, "llama-spm")
	if !tk.spmSplit {
		t.Fatal("llama-spm should allow word-by-word merging")
	}
	whole := wholeSPM(t)
	for _, x := range append(vectorTexts(t), benchText) {
		a, b := tk.Encode(x, true, false), whole.Encode(x, true, false)
		if !equalIDs(a, b) {
			t.Errorf("%q: word by word %v, whole %v", x, a, b)
		}
	}
	// A vocabulary with a token that has U+2581 inside may not be split.
	v := &Vocab{Model: "llama", Tokens: []string{"<unk>", "a▁b", "a", "b", "▁", "a▁"}, BOS: -1, EOS: -1, EOT: -1, EOM: -1, UNK: 0, PAD: -1, SEP: -1, CLS: -1, MASK: -1}
	nt, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	if nt.spmSplit {
		t.Error("a▁b allows splitting")
	}
	if got := nt.Encode("a b", false, false); !equalIDs(got, []int32{1}) {
		t.Errorf("Encode(a b) = %v, want [a▁b]", got)
	}
}
