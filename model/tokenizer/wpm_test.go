package tokenizer

import (
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// TestNFDFirst compares nfdFirst with the first code point of a full NFD
// normalisation, for every code point.
func TestNFDFirst(t *testing.T) {
	bad := 0
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue
		}
		want, _ := utf8.DecodeRuneInString(norm.NFD.String(string(r)))
		if got := nfdFirst(r); got != want {
			if bad++; bad < 10 {
				t.Errorf("nfdFirst(%U) = %U, want %U", r, got, want)
			}
		}
	}
}

func TestWordPieceSplit(t *testing.T) {
	tk := ggufTokenizer(t, "bert-bge")
	for _, c := range []struct{ in, want string }{
		{"Cửa Việt", " cua viet"},
		{"a\u200db\x00c", " abc"}, // format and NUL characters are dropped
		{"東京abc", " 東 京 abc"},     // CJK ideographs are words of their own
		{"x+y=z", " x + y = z"},   // ASCII symbols split
		{"€5", " €5"},             // non-ASCII symbols do not
		{"한국", " ᄒᄀ"},             // Hangul keeps only its leading consonant (llama.cpp's NFD table)
	} {
		got := tk.Decode(tk.Encode(c.in, false, false), false)
		if got != c.want {
			t.Errorf("%q -> %q, want %q", c.in, got, c.want)
		}
	}
}
