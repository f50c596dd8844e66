package daemon

import (
	"unicode/utf8"

	"github.com/octet-dev/octet/model/tokenizer"
	"github.com/octet-dev/octet/scheduler"
)

// The two shapes of logprobs in OpenAI's API: chat's list of token entries,
// and the legacy completions' parallel arrays. A token's text is the text it
// renders to on its own; its bytes are the exact bytes (a byte token may be
// half of a UTF-8 character).

type chatLogprobs struct {
	Content []chatLogprob `json:"content"`
}

type chatLogprob struct {
	Token   string           `json:"token"`
	Logprob float32          `json:"logprob"`
	Bytes   []int            `json:"bytes"`
	Top     []chatLogprobAlt `json:"top_logprobs"`
}

type chatLogprobAlt struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []*float32           `json:"token_logprobs"` // null for an echoed prompt's first token
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

func tokenText(tok *tokenizer.Tokenizer, id int32) (string, []int) {
	b := tok.TokenBytes(id, false)
	ints := make([]int, len(b))
	for i, c := range b {
		ints[i] = int(c)
	}
	return string(b), ints
}

func newChatLogprobs(tok *tokenizer.Tokenizer, lps []scheduler.TokenLogprob) *chatLogprobs {
	out := &chatLogprobs{Content: make([]chatLogprob, 0, len(lps))}
	for _, lp := range lps {
		text, b := tokenText(tok, lp.ID)
		e := chatLogprob{Token: text, Logprob: lp.Logprob, Bytes: b, Top: make([]chatLogprobAlt, 0, len(lp.Top))}
		for _, a := range lp.Top {
			text, b := tokenText(tok, a.ID)
			e.Top = append(e.Top, chatLogprobAlt{Token: text, Logprob: a.Logprob, Bytes: b})
		}
		out.Content = append(out.Content, e)
	}
	return out
}

// newCompletionLogprobs formats lps; offset is where the first token's
// text starts in the completion, and the returned offset where the next
// one would. Offsets count characters (Unicode code points), as OpenAI's
// and vLLM's do, not bytes: a token's offset is the number of characters
// that begin before its first byte, so a token that ends a character split
// over byte tokens points just past that character.
func newCompletionLogprobs(tok *tokenizer.Tokenizer, lps []scheduler.TokenLogprob, offset int) (*completionLogprobs, int) {
	out := &completionLogprobs{
		Tokens: []string{}, TokenLogprobs: []*float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{},
	}
	for _, lp := range lps {
		text := out.add(tok, lp)
		out.TextOffset = append(out.TextOffset, offset)
		offset += runeStarts(text)
	}
	return out, offset
}

// add appends lp's token, logprob and alternatives, and returns its text.
func (out *completionLogprobs) add(tok *tokenizer.Tokenizer, lp scheduler.TokenLogprob) string {
	text, _ := tokenText(tok, lp.ID)
	out.Tokens = append(out.Tokens, text)
	out.TokenLogprobs = append(out.TokenLogprobs, &lp.Logprob)
	top := make(map[string]float32, len(lp.Top))
	for _, a := range lp.Top {
		t, _ := tokenText(tok, a.ID)
		if _, dup := top[t]; !dup { // two ids may render alike; keep the likelier
			top[t] = a.Logprob
		}
	}
	out.TopLogprobs = append(out.TopLogprobs, top)
	return text
}

// echoLogprobs formats an echoed prompt's logprobs (ids[k+1]'s at lps[k]):
// one entry per prompt token, the first's logprob and alternatives null
// (nothing comes before it), as OpenAI's and vLLM's echo give them. The
// offsets point into the prompt's text as Decode renders it (echoText):
// the characters the decoder had given before each token.
func echoLogprobs(tok *tokenizer.Tokenizer, ids []int32, lps []scheduler.TokenLogprob) *completionLogprobs {
	out := &completionLogprobs{Tokens: []string{}, TokenLogprobs: []*float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	d := tok.NewDecoder(false)
	chars := 0
	for i, id := range ids {
		out.TextOffset = append(out.TextOffset, chars)
		chars += utf8.RuneCountInString(d.Add(id))
		if i == 0 || i-1 >= len(lps) {
			text, _ := tokenText(tok, id)
			out.Tokens = append(out.Tokens, text)
			out.TokenLogprobs = append(out.TokenLogprobs, nil)
			out.TopLogprobs = append(out.TopLogprobs, nil)
			continue
		}
		out.add(tok, lps[i-1])
	}
	return out
}

// echoText is the prompt's text as an echo gives it, and its length in
// characters (where the completion's offsets start).
func echoText(tok *tokenizer.Tokenizer, ids []int32) (string, int) {
	text := tok.Decode(ids, false)
	return text, utf8.RuneCountInString(text)
}

// joinLogprobs appends b's entries to a's.
func joinLogprobs(a, b *completionLogprobs) *completionLogprobs {
	a.Tokens = append(a.Tokens, b.Tokens...)
	a.TokenLogprobs = append(a.TokenLogprobs, b.TokenLogprobs...)
	a.TopLogprobs = append(a.TopLogprobs, b.TopLogprobs...)
	a.TextOffset = append(a.TextOffset, b.TextOffset...)
	return a
}

// runeStarts counts the bytes of s that begin a character: the characters
// s adds to a text, even when a character is split across tokens.
func runeStarts(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if utf8.RuneStart(s[i]) {
			n++
		}
	}
	return n
}
