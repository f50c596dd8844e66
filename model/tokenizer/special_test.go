package tokenizer

import (
	"sync"
	"testing"
)

func concat(parts ...[]int32) []int32 {
	var out []int32
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestParseSpecial(t *testing.T) {
	l3 := hfTok(t, "llama3")
	text := "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
	want := concat([]int32{128006}, l3.Encode("user", false, false), []int32{128007},
		l3.Encode("\n\nHi", false, false), []int32{128009})
	if got := l3.Encode(text, false, true); !equalIDs(got, want) {
		t.Errorf("parseSpecial: %v, want %v", got, want)
	}
	got := l3.Encode(text, false, false)
	for _, id := range got {
		if id >= 128000 {
			t.Errorf("without parseSpecial a control token was produced: %v", got)
		}
	}
	if s := l3.Decode(got, false); s != text {
		t.Errorf("text tokens decode to %q", s)
	}
	if s := l3.Decode(want, false); s != "user\n\nHi" {
		t.Errorf("Decode without special = %q", s)
	}
	if s := l3.Decode(want, true); s != text {
		t.Errorf("Decode with special = %q", s)
	}
	if ids := l3.Encode("hi", true, false); ids[0] != 128000 {
		t.Errorf("llama3 addSpecial: %v", ids)
	}
}

// TestPhi3RStrip: llama.cpp gives Phi-3's special tokens the RSTRIP
// attribute (keyed on general.name), so whitespace after them is dropped;
// <s>, <unk> and <|endoftext|> are exempt. </s> is user-defined in this
// vocabulary, but it is on llama.cpp's end-of-generation list, which forces
// it to CONTROL: it is split out only with parseSpecial.
func TestPhi3RStrip(t *testing.T) {
	tk := ggufTokenizer(t, "phi-3")
	hello := tk.Encode("Hello", false, false) // ▁Hello after a special token
	for _, c := range []struct {
		text    string
		special bool
		want    []int32
	}{
		{"<|user|>\n Hello", true, concat([]int32{32010}, hello)},
		{"<|user|>Hello", true, concat([]int32{32010}, hello)},
		{"</s>  Hello", true, concat([]int32{2}, hello)},
		{"<s> Hello", true, concat([]int32{1}, tk.Encode(" Hello", false, false))},
	} {
		if got := tk.Encode(c.text, false, c.special); !equalIDs(got, c.want) {
			t.Errorf("Encode(%q, parseSpecial=%v) = %v, want %v", c.text, c.special, got, c.want)
		}
	}
	if got := tk.Encode("</s>", false, false); len(got) < 2 {
		t.Errorf("</s> without parseSpecial: %v", got)
	}
	for _, id := range []int32{32000, 32007, 2} { // <|endoftext|>, <|end|>, </s>
		if !tk.IsEOG(id) {
			t.Errorf("%q is not EOG", tk.Piece(id))
		}
	}
}

// TestUserDefinedWithoutParseSpecial: mpt's whitespace runs and deepseek's
// byte characters are USER_DEFINED tokens; llama.cpp splits them out even
// with parseSpecial = false, and the vectors depend on it.
func TestUserDefinedWithoutParseSpecial(t *testing.T) {
	mpt := ggufTokenizer(t, "mpt")
	if got := mpt.Encode("a    b", false, false); !equalIDs(got, []int32{66, 50274, 67}) {
		t.Errorf("mpt: %v", got)
	}
	ds := ggufTokenizer(t, "deepseek-coder")
	ü, ok := ds.Lookup("ü")
	if !ok {
		t.Fatal("deepseek-coder has no ü token")
	}
	got := ds.Encode("Führer", false, false)
	found := false
	for _, id := range got {
		found = found || id == ü
	}
	if !found {
		t.Errorf("deepseek-coder Encode(Führer) = %v, want the user-defined ü (%d)", got, ü)
	}
}

func TestPartitionStrip(t *testing.T) {
	v := &Vocab{
		Model: "gpt2", Pre: "gpt-2",
		Tokens: []string{"a", "b", " ", "<L>", "<R>", "<C>", "<LR>"},
		Types:  []TokenType{1, 1, 1, TypeUserDefined, TypeUserDefined, TypeControl, TypeUserDefined},
		BOS:    -1, EOS: -1, EOT: -1, EOM: -1, UNK: -1, PAD: -1, SEP: -1, CLS: -1, MASK: -1,
	}
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	tk.attrs[3] |= attrLStrip
	tk.attrs[4] |= attrRStrip
	tk.attrs[6] |= attrLStrip | attrRStrip
	text := "a \t<L> b<R> \n a<C> b <LR> a<L>"
	type frag struct {
		id   int32
		text string
	}
	var got []frag
	for _, fr := range tk.partition(text, true) {
		f := frag{id: fr.id}
		if fr.id < 0 {
			f.text = text[fr.lo:fr.hi]
		}
		got = append(got, f)
	}
	want := []frag{{-1, "a"}, {3, ""}, {-1, " b"}, {4, ""}, {-1, "a"}, {5, ""}, {-1, " b"}, {6, ""}, {-1, "a"}, {3, ""}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	// Without parseSpecial the control token stays text.
	n := 0
	for _, fr := range tk.partition(text, false) {
		if fr.id == 5 {
			n++
		}
	}
	if n != 0 {
		t.Error("control token split out without parseSpecial")
	}
	if fr := tk.partition("", true); len(fr) != 0 {
		t.Errorf("partition of empty text: %v", fr)
	}
}

func TestEOG(t *testing.T) {
	for _, c := range []struct {
		name    string
		eog     []int32
		not     []int32
		bos     int32
		eos     int32
		addBOS  bool
		special string
	}{
		{"llama-spm", []int32{2}, []int32{0, 1, 13}, 1, 2, true, ""},
		{"gpt-2", []int32{50256}, []int32{0, 220}, 50256, 50256, false, ""},
		{"starcoder", []int32{0, 4}, []int32{1, 2, 3, 6}, 0, 0, false, "(<fim_pad> ends generation, as in llama.cpp)"},
		{"deepseek-coder", []int32{32014}, []int32{32013}, 32013, 32014, true, ""},
		{"bert-bge", nil, []int32{101, 102}, 101, -1, true, ""},
	} {
		tk := ggufTokenizer(t, c.name)
		for _, id := range c.eog {
			if !tk.IsEOG(id) {
				t.Errorf("%s: %d %q is not EOG %s", c.name, id, tk.Piece(id), c.special)
			}
		}
		for _, id := range c.not {
			if tk.IsEOG(id) {
				t.Errorf("%s: %d %q is EOG", c.name, id, tk.Piece(id))
			}
		}
		if tk.BOS() != c.bos || tk.EOS() != c.eos || tk.AddBOS() != c.addBOS {
			t.Errorf("%s: BOS %d EOS %d AddBOS %v", c.name, tk.BOS(), tk.EOS(), tk.AddBOS())
		}
	}
	l3 := hfTok(t, "llama3")
	for _, s := range []string{"<|eot_id|>", "<|end_of_text|>"} {
		id, ok := l3.Lookup(s)
		if !ok || !l3.IsEOG(id) {
			t.Errorf("llama3: %s not EOG", s)
		}
	}
	if l3.IsEOG(-1) || l3.IsEOG(1<<30) {
		t.Error("out-of-range id is EOG")
	}
}

// TestConcurrentEncode runs Encode and Decode from several goroutines on
// shared tokenizers and compares with sequential results.
func TestConcurrentEncode(t *testing.T) {
	texts := vectorTexts(t)
	for _, set := range losslessSets[:3] {
		tk := set.load(t)
		want := make([][]int32, len(texts))
		for i, x := range texts {
			want[i] = tk.Encode(x, true, false)
		}
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i, x := range texts {
					if got := tk.Encode(x, true, false); !equalIDs(got, want[i]) {
						t.Errorf("%s: concurrent Encode(%q) differs", set.name, x)
					}
					_ = tk.Decode(want[i], false)
				}
			}()
		}
		wg.Wait()
	}
}
