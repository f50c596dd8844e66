package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestUTF8Prefix(t *testing.T) {
	for _, c := range []struct {
		in    string
		n     int
		state seqState
	}{
		{"a", 1, seqComplete},
		{"é", 2, seqComplete},
		{"€x", 3, seqComplete},
		{"😀", 4, seqComplete},
		{"\xf0\x9f\x98", 3, seqTruncated},
		{"\xe2", 1, seqTruncated},
		{"\xe2\x82x", 2, seqInvalid},
		{"\x80", 1, seqInvalid},
		{"\xc0\x80", 1, seqInvalid},
		{"\xc1\xbf", 1, seqInvalid},
		{"\xe0\x80\x80", 1, seqInvalid},     // overlong
		{"\xed\xa0\x80", 1, seqInvalid},     // surrogate
		{"\xf4\x90\x80\x80", 1, seqInvalid}, // above U+10FFFF
		{"\xf5", 1, seqInvalid},
		{"\xff", 1, seqInvalid},
		{"\xf0\x90", 2, seqTruncated},
	} {
		n, st := utf8Prefix([]byte(c.in))
		if n != c.n || st != c.state {
			t.Errorf("utf8Prefix(%q) = %d, %d; want %d, %d", c.in, n, st, c.n, c.state)
		}
	}
}

func TestSanitize(t *testing.T) {
	for _, c := range []struct {
		in, out, rest string
		final         bool
	}{
		{"abc", "abc", "", false},
		{"ab\xe2\x82", "ab", "\xe2\x82", false},
		{"ab\xe2\x82", "ab\uFFFD", "", true},
		{"a\x80b", "a\uFFFDb", "", false},
		{"a\xe2\x82xb", "a\uFFFDxb", "", false},
		{"\xff", "\uFFFD", "", false},
		{"\xf0\x9f\x98\x80", "😀", "", false},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD", "", false},
	} {
		out, rest := sanitize([]byte(c.in), c.final)
		if out != c.out || string(rest) != c.rest {
			t.Errorf("sanitize(%q, %v) = %q, %q; want %q, %q", c.in, c.final, out, rest, c.out, c.rest)
		}
	}
}

// streamCheck feeds ids one at a time and checks every chunk is valid UTF-8
// and the chunks add up to Decode.
func streamCheck(t *testing.T, tk *Tokenizer, ids []int32, special bool) {
	t.Helper()
	d := tk.NewDecoder(special)
	var b strings.Builder
	for _, id := range ids {
		chunk := d.Add(id)
		if !utf8.ValidString(chunk) {
			t.Fatalf("chunk %q is not valid UTF-8", chunk)
		}
		b.WriteString(chunk)
	}
	tail := d.Flush()
	if !utf8.ValidString(tail) {
		t.Fatalf("flush %q is not valid UTF-8", tail)
	}
	b.WriteString(tail)
	if want := tk.Decode(ids, special); b.String() != want {
		t.Fatalf("stream %q != Decode %q", b.String(), want)
	}
}

func TestDecoderStream(t *testing.T) {
	texts := vectorTexts(t)
	for _, set := range losslessSets {
		t.Run(set.name, func(t *testing.T) {
			tk := set.load(t)
			for _, x := range texts {
				ids := tk.Encode(x, true, false)
				streamCheck(t, tk, ids, false)
				streamCheck(t, tk, ids, true)
			}
		})
	}
}

// TestDecoderHoldsPartial cuts an emoji, encoded as byte tokens, in the
// middle: nothing is emitted until it is complete, and a Flush in the middle
// yields U+FFFD.
func TestDecoderHoldsPartial(t *testing.T) {
	tk := ggufTokenizer(t, "llama-spm")
	ids := tk.Encode("😀!", false, false) // ▁ <0xF0> <0x9F> <0x98> <0x80> !
	if len(ids) != 6 {
		t.Fatalf("Encode = %v, want 6 tokens", ids)
	}
	d := tk.NewDecoder(false)
	for i, id := range ids[:4] {
		if got := d.Add(id); got != "" {
			t.Fatalf("token %d emitted %q before the character was complete", i, got)
		}
	}
	if got := d.Add(ids[4]); got != "😀" {
		t.Fatalf("completing token emitted %q", got)
	}
	if got := d.Add(ids[5]); got != "!" {
		t.Fatalf("got %q", got)
	}

	d = tk.NewDecoder(false)
	var b strings.Builder
	for _, id := range ids[:3] {
		b.WriteString(d.Add(id))
	}
	b.WriteString(d.Flush())
	if b.String() != "\uFFFD" {
		t.Fatalf("cut stream gave %q, want U+FFFD", b.String())
	}
	// The decoder carries on after a flush.
	if got := d.Add(ids[5]); got != "!" {
		t.Fatalf("after flush: %q", got)
	}
	// A stray continuation byte is replaced at once.
	if got := tk.Decode(ids[2:4], false, MidText); got != "\uFFFD\uFFFD" {
		t.Fatalf("stray continuation bytes: %q", got)
	}

	// Byte-level BPE splits the emoji over tokens too.
	gpt := ggufTokenizer(t, "gpt-2")
	gids := gpt.Encode("😀", false, false)
	if len(gids) < 2 {
		t.Fatalf("gpt-2 Encode(😀) = %v, want several tokens", gids)
	}
	gd := gpt.NewDecoder(false)
	if got := gd.Add(gids[0]); got != "" {
		t.Fatalf("gpt-2 first token emitted %q", got)
	}
	if got := gd.Flush(); got != "\uFFFD" {
		t.Fatalf("gpt-2 flush: %q", got)
	}
}

func TestTokenBytes(t *testing.T) {
	spm := ggufTokenizer(t, "llama-spm")
	gpt := ggufTokenizer(t, "gpt-2")
	for _, c := range []struct {
		tk      *Tokenizer
		id      int32
		special bool
		want    string
	}{
		{spm, 15043, false, " Hello"},
		{spm, 13, false, "\n"}, // <0x0A>
		{spm, 1, false, ""},    // <s> is control
		{spm, 1, true, "<s>"},  // ... rendered when asked
		{spm, 0, false, ""},    // <unk> is unknown
		{spm, -1, true, ""},    // out of range
		{spm, 32000, true, ""}, // out of range
		{gpt, 15496, false, "Hello"},
		{gpt, 18435, false, " Hello"},
		{gpt, 220, false, " "}, // "Ġ"
		{gpt, 50256, false, ""},
		{gpt, 50256, true, "<|endoftext|>"},
	} {
		if got := string(c.tk.TokenBytes(c.id, c.special)); got != c.want {
			t.Errorf("TokenBytes(%d, %v) = %q, want %q", c.id, c.special, got, c.want)
		}
	}
	if got := spm.Piece(15043); got != "▁Hello" {
		t.Errorf("Piece = %q", got)
	}
	if got := spm.Piece(99999); got != "" {
		t.Errorf("Piece(out of range) = %q", got)
	}
}
