package tokenizer

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// render is the text of token id as llama.cpp's token_to_piece with
// special = true: CONTROL, UNKNOWN and USER_DEFINED tokens verbatim, NORMAL
// tokens with U+2581 as space (SentencePiece, WordPiece) or with GPT-2's
// byte alphabet reversed (BPE), BYTE tokens <0xNN> as the byte. Tokens of
// other types render empty.
func (t *Tokenizer) render(id int32) string {
	a := t.attrs[id]
	text := t.vocab.Tokens[id]
	switch {
	case a&(attrUnknown|attrControl|attrUserDefined) != 0:
		return text
	case a&attrNormal != 0:
		if t.kind == kindBPE {
			return decodeByteLevel(text)
		}
		return strings.ReplaceAll(text, spaceMark, " ")
	case a&attrByte != 0:
		if b, ok := parseByteToken(text); ok {
			return string([]byte{b})
		}
		return text
	}
	return ""
}

// parseByteToken parses "<0xNN>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(s[3:5], 16, 8)
	return byte(v), err == nil
}

// decodeByteLevel maps a byte-level BPE token back to its bytes. A
// character outside GPT-2's byte alphabet is kept as its own UTF-8 (llama.cpp
// writes an "[UNK_BYTE_...]" marker instead).
func decodeByteLevel(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if c, ok := runeToByte[r]; ok {
			b = append(b, c)
		} else {
			b = utf8.AppendRune(b, r)
		}
	}
	return string(b)
}

// piece is the rendering of id for the special flag: control and unknown
// tokens are empty unless special.
func (t *Tokenizer) piece(id int32, special bool) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	if !special && t.attrs[id]&(attrUnknown|attrControl) != 0 {
		return ""
	}
	return t.pieces[id]
}

// TokenBytes returns the bytes token id renders to: U+2581 becomes a
// space, <0xNN> the byte, GPT-2's byte alphabet is reversed. Control and
// unknown tokens render empty unless special. Out-of-range ids render empty.
// The leading-space rule of Decode is not applied here.
func (t *Tokenizer) TokenBytes(id int32, special bool) []byte {
	p := t.piece(id, special)
	if p == "" {
		return nil
	}
	return []byte(p)
}

// DecoderOption modifies a Decoder (and Decode).
type DecoderOption int

const (
	// MidText decodes tokens that continue earlier text: the leading space
	// of the first token is kept. Without it, for vocabularies that add a
	// space prefix when encoding (SentencePiece), the first piece of the
	// stream loses one leading space.
	MidText DecoderOption = iota + 1
)

// Decode renders ids as text; special renders control tokens too. For
// vocabularies that add a space prefix (SentencePiece), one leading space is
// dropped from the first token of the text and from the token right after
// each BOS, undoing the prefix that Encode adds; pass MidText to keep it.
// Invalid UTF-8 is replaced by U+FFFD, one per maximal invalid subsequence.
func (t *Tokenizer) Decode(ids []int32, special bool, opts ...DecoderOption) string {
	d := t.NewDecoder(special, opts...)
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(d.Add(id))
	}
	b.WriteString(d.Flush())
	return b.String()
}

// Decoder turns a token stream into text incrementally and never emits
// broken UTF-8: bytes of an incomplete sequence are held until complete; an
// invalid sequence becomes U+FFFD. The concatenation of its output equals
// Decode of the same ids. A Decoder is not safe for concurrent use.
type Decoder struct {
	t       *Tokenizer
	special bool
	strip   bool   // drop one leading space from the next piece
	held    []byte // an incomplete UTF-8 sequence (at most 3 bytes)
	buf     []byte
}

// NewDecoder returns a Decoder at the start of a text (see Decode for the
// leading-space rule and MidText).
func (t *Tokenizer) NewDecoder(special bool, opts ...DecoderOption) *Decoder {
	d := &Decoder{t: t, special: special, strip: t.stripSpace}
	for _, o := range opts {
		if o == MidText {
			d.strip = false
		}
	}
	return d
}

// Add feeds one token and returns the text that became complete with it
// (maybe "").
func (d *Decoder) Add(id int32) string {
	p := d.t.piece(id, d.special)
	if d.t.stripSpace && id == d.t.vocab.BOS {
		d.strip = true
	} else if d.strip {
		d.strip = false
		p = strings.TrimPrefix(p, " ")
	}
	if len(d.held) == 0 && validComplete(p) {
		return p
	}
	d.buf = append(append(d.buf[:0], d.held...), p...)
	d.held = d.held[:0]
	out, rest := sanitize(d.buf, false)
	d.held = append(d.held, rest...)
	return out
}

// Flush returns whatever is held; an incomplete sequence becomes U+FFFD.
func (d *Decoder) Flush() string {
	if len(d.held) == 0 {
		return ""
	}
	out, _ := sanitize(d.held, true)
	d.held = d.held[:0]
	return out
}

// validComplete reports whether p is valid UTF-8 (so nothing needs holding).
func validComplete(p string) bool {
	return utf8.ValidString(p)
}

// sanitize returns the valid UTF-8 text of b, each maximal invalid
// subsequence replaced by U+FFFD. Unless final, a trailing incomplete (but so
// far valid) sequence is returned separately as rest instead.
func sanitize(b []byte, final bool) (string, []byte) {
	var out strings.Builder
	out.Grow(len(b))
	for i := 0; i < len(b); {
		n, st := utf8Prefix(b[i:])
		switch {
		case st == seqComplete:
			out.Write(b[i : i+n])
		case st == seqTruncated && !final:
			return out.String(), b[i:]
		default:
			out.WriteRune(utf8.RuneError)
		}
		i += n
	}
	return out.String(), nil
}

type seqState int

const (
	seqComplete  seqState = iota // a whole valid character
	seqTruncated                 // a valid start cut short by the end of b
	seqInvalid                   // a maximal invalid subsequence
)

// utf8Prefix examines the UTF-8 sequence at the start of b (len(b) > 0). It
// returns the length of the longest prefix that is a valid character or the
// start of one (at least 1), and which of the three cases it is.
func utf8Prefix(b []byte) (int, seqState) {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF) // range of the second byte
	switch {
	case c < 0x80:
		return 1, seqComplete
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c == 0xED:
		need, hi = 2, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90
	case c == 0xF4:
		need, hi = 3, 0x8F
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	default:
		return 1, seqInvalid
	}
	for k := 1; k <= need; k++ {
		if k >= len(b) {
			return k, seqTruncated
		}
		if b[k] < lo || b[k] > hi {
			return k, seqInvalid
		}
		lo, hi = 0x80, 0xBF
	}
	return need + 1, seqComplete
}
