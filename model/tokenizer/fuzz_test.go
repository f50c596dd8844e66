package tokenizer

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// addSeeds adds the vector inputs and the extra texts to the corpus.
func addSeeds(f *testing.F) {
	for _, x := range vectorTexts(f) {
		f.Add(x)
	}
	f.Add("")
	f.Add("\xff\xfe\x80 \xe2\x96")
	f.Add("<s></s><unk><|endoftext|><|im_start|>")
	f.Add(strings.Repeat(" ", 40) + strings.Repeat("9", 40))
}

// checkEncode checks ids are in range and, for valid UTF-8 input, that
// Decode gives the text back (special tokens rendered, since text such as
// "<s>" may merge into the control token <s>, as in llama.cpp; SentencePiece's
// U+2581 as a space), and that the token bytes add up to the input even when
// it is not valid UTF-8.
func checkEncode(t *testing.T, tk *Tokenizer, name, s string) {
	for _, parse := range []bool{false, true} {
		for _, add := range []bool{false, true} {
			for _, id := range tk.Encode(s, add, parse) {
				if id < 0 || int(id) >= tk.Len() {
					t.Fatalf("%s: Encode(%q) produced id %d out of range", name, s, id)
				}
			}
		}
	}
	if !covered(tk, s) {
		return // bytes without a token are dropped, as in llama.cpp
	}
	ids := tk.Encode(s, false, false)
	want := s
	if tk.kind == kindSPM {
		// SentencePiece writes each space as U+2581 before it tokenizes,
		// so a U+2581 of the text is a space to it (as in llama.cpp).
		want = strings.ReplaceAll(s, "\u2581", " ")
	}
	if utf8.ValidString(s) {
		if got := tk.Decode(ids, true); got != want {
			t.Fatalf("%s: Decode(Encode(%q)) = %q", name, s, got)
		}
	}
	var b []byte
	for i, id := range ids {
		p := tk.TokenBytes(id, true)
		if i == 0 && tk.stripSpace && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		b = append(b, p...)
	}
	if string(b) != want {
		t.Fatalf("%s: token bytes of Encode(%q) = %q", name, s, b)
	}
}

// covered reports whether every byte of s has a token of its own. Some
// byte-level vocabularies lack a few: falcon has none for several control
// characters (\v among them), starcoder none for 0xF1 or the bytes that never
// occur in UTF-8.
func covered(tk *Tokenizer, s string) bool {
	for i := 0; i < len(s); i++ {
		if (tk.bpe != nil && tk.bpe.byteTok[s[i]] < 0) || (tk.bpe == nil && tk.spmByte[s[i]] < 0) {
			return false
		}
	}
	return true
}

func FuzzEncodeSPM(f *testing.F) {
	tk := ggufTokenizer(f, "llama-spm")
	whole := wholeSPM(f)
	addSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		checkEncode(t, tk, "llama-spm", s)
		if a, b := tk.Encode(s, false, true), whole.Encode(s, false, true); !equalIDs(a, b) {
			t.Fatalf("Encode(%q): word by word %v, whole %v", s, a, b)
		}
	})
}

func FuzzEncodeBPE(f *testing.F) {
	// gpt-2: GPT-2's splitter; falcon: a chain of three; deepseek-coder:
	// five simple ones and user-defined tokens.
	gpt := ggufTokenizer(f, "gpt-2")
	falcon := ggufTokenizer(f, "falcon")
	ds := ggufTokenizer(f, "deepseek-coder")
	addSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		checkEncode(t, gpt, "gpt-2", s)
		checkEncode(t, falcon, "falcon", s)
		if utf8.ValidString(s) {
			// deepseek's user-defined byte characters do not give invalid
			// bytes back (see TestRoundTripBytes).
			checkEncode(t, ds, "deepseek-coder", s)
		} else {
			for _, id := range ds.Encode(s, true, true) {
				if id < 0 || int(id) >= ds.Len() {
					t.Fatalf("deepseek-coder: id %d out of range", id)
				}
			}
		}
	})
}

func FuzzEncodeWPM(f *testing.F) {
	tk := ggufTokenizer(f, "bert-bge")
	addSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		for _, id := range tk.Encode(s, true, true) {
			if id < 0 || int(id) >= tk.Len() {
				t.Fatalf("Encode(%q) produced id %d out of range", s, id)
			}
		}
		if d := tk.Decode(tk.Encode(s, false, false), false); !utf8.ValidString(d) {
			t.Fatalf("Decode gave invalid UTF-8 %q", d)
		}
	})
}

// FuzzDecoder feeds arbitrary ids (including out-of-range ones) through the
// incremental decoder: every chunk must be valid UTF-8 and the chunks must
// add up to Decode, also when the stream is flushed at an arbitrary point.
func FuzzDecoder(f *testing.F) {
	spm := ggufTokenizer(f, "llama-spm")
	gpt := ggufTokenizer(f, "gpt-2")
	for _, x := range extraTexts {
		for _, tk := range []*Tokenizer{spm, gpt} {
			var b []byte
			for _, id := range tk.Encode(x, true, false) {
				b = binary.LittleEndian.AppendUint16(b, uint16(id))
			}
			f.Add(b, uint8(3), true)
		}
	}
	f.Add([]byte{0xff, 0xff, 0x00, 0x80}, uint8(1), false)
	f.Fuzz(func(t *testing.T, raw []byte, cut uint8, special bool) {
		for _, tk := range []*Tokenizer{spm, gpt} {
			var ids []int32
			for i := 0; i+1 < len(raw); i += 2 {
				v := int32(binary.LittleEndian.Uint16(raw[i:]))
				if v >= 0xFFF0 {
					v = -1 // also try ids out of range
				}
				ids = append(ids, v%int32(tk.Len()+2))
			}
			want := tk.Decode(ids, special)
			if !utf8.ValidString(want) {
				t.Fatalf("Decode gave invalid UTF-8 %q", want)
			}
			d := tk.NewDecoder(special)
			var got strings.Builder
			for _, id := range ids {
				c := d.Add(id)
				if !utf8.ValidString(c) {
					t.Fatalf("chunk %q is not valid UTF-8", c)
				}
				got.WriteString(c)
			}
			got.WriteString(d.Flush())
			if got.String() != want {
				t.Fatalf("stream %q != Decode %q", got.String(), want)
			}
			// Flush after an arbitrary prefix.
			k := int(cut) % (len(ids) + 1)
			d = tk.NewDecoder(special)
			var part strings.Builder
			for _, id := range ids[:k] {
				part.WriteString(d.Add(id))
			}
			if fl := d.Flush(); !utf8.ValidString(fl) {
				t.Fatalf("flush %q is not valid UTF-8", fl)
			}
		}
	})
}

// FuzzSplitters compares the hand-written pre-tokenizer splitters with the
// regexes they stand for.
func FuzzSplitters(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		for _, expr := range handWritten {
			c, g := customSplit(t, expr, s), genericSplit(t, expr, s)
			if !slices.Equal(c, g) {
				t.Fatalf("%.20q on %q:\nhand-written %v\nregex        %v", expr, s, c, g)
			}
		}
	})
}
