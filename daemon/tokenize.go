package daemon

import "github.com/valyala/fasthttp"

// tokenizeBody is POST /tokenize's body, as vLLM's server takes it (and
// llama.cpp's: content for prompt): a prompt, or chat messages rendered
// by the model's template as a chat request's are.
type tokenizeBody struct {
	Model            string  `json:"model"`
	Prompt           *string `json:"prompt"`
	Content          *string `json:"content"`
	AddSpecialTokens *bool   `json:"add_special_tokens"` // vLLM's: the BOS a completion's prompt gets (default true)
	AddSpecial       *bool   `json:"add_special"`        // llama.cpp's (default false)
	AddGenPrompt     *bool   `json:"add_generation_prompt"`
	Messages         any     `json:"messages"`
}

// tokenize serves POST /tokenize: the token ids a completion's prompt, or a
// chat request's messages, would be given, with their count and the
// model's context: {"count", "max_model_len", "tokens"}.
func (s *server) tokenize(ctx *fasthttp.RequestCtx) {
	var b tokenizeBody
	if e := decode(ctx.PostBody(), &b); e != nil {
		e.write(ctx)
		return
	}
	prompt := b.Prompt
	if prompt == nil {
		prompt = b.Content
	}
	var e *apiError
	switch {
	case b.Prompt != nil && b.Content != nil:
		e = badRequest("content", "send prompt or content (the same field by two names), not both")
	case prompt != nil && b.Messages != nil:
		e = badRequest("messages", "send a prompt or messages, not both")
	case prompt == nil && b.Messages == nil:
		e = badRequest("prompt", "prompt (or content) or messages is required")
	case b.AddSpecialTokens != nil && b.AddSpecial != nil && *b.AddSpecialTokens != *b.AddSpecial:
		e = badRequest("add_special", "add_special_tokens and add_special (the same switch by two names) differ")
	case b.AddGenPrompt != nil && !*b.AddGenPrompt:
		e = badRequest("add_generation_prompt", "add_generation_prompt must be true: octet's chat prompts end where the answer begins")
	}
	if e != nil {
		e.write(ctx)
		return
	}
	l, e := s.acquire(b.Model)
	if e != nil {
		e.write(ctx)
		return
	}
	defer l.Release()
	tok := l.Model.Tok
	var ids []int32
	if prompt != nil {
		ids = tok.Encode(*prompt, addSpecial(b), false)
	} else {
		g, e := parseChat(ctx.PostBody(), 1) // its messages, read as a chat request's
		if e != nil {
			e.write(ctx)
			return
		}
		text, err := l.Chat.Render(g.Messages)
		if err != nil {
			badRequest("messages", "%v", err).write(ctx)
			return
		}
		ids = tok.Encode(text, true, true)
	}
	if ids == nil {
		ids = []int32{}
	}
	writeJSON(ctx, 200, map[string]any{"count": len(ids), "max_model_len": l.Context, "tokens": ids})
}

// addSpecial is whether a prompt to tokenize gets its BOS: as asked, else
// each server's default for its own field name (vLLM's prompt: yes;
// llama.cpp's content: no).
func addSpecial(b tokenizeBody) bool {
	switch {
	case b.AddSpecialTokens != nil:
		return *b.AddSpecialTokens
	case b.AddSpecial != nil:
		return *b.AddSpecial
	}
	return b.Content == nil
}

// detokenize serves POST /detokenize: the text of token ids, control
// tokens written out, as {"prompt": …} (vLLM's key) and {"content": …}
// (llama.cpp's).
func (s *server) detokenize(ctx *fasthttp.RequestCtx) {
	var b struct {
		Model  string   `json:"model"`
		Tokens *[]int64 `json:"tokens"`
	}
	if e := decode(ctx.PostBody(), &b); e != nil {
		e.write(ctx)
		return
	}
	if b.Tokens == nil {
		badRequest("tokens", "tokens is required: an array of token ids").write(ctx)
		return
	}
	l, e := s.acquire(b.Model)
	if e != nil {
		e.write(ctx)
		return
	}
	defer l.Release()
	tok := l.Model.Tok
	ids := make([]int32, len(*b.Tokens))
	for i, id := range *b.Tokens {
		if id < 0 || id >= int64(tok.Len()) {
			badRequest("tokens", "tokens[%d] = %d is outside the model's vocabulary of %d", i, id, tok.Len()).write(ctx)
			return
		}
		ids[i] = int32(id)
	}
	text := tok.Decode(ids, true)
	writeJSON(ctx, 200, map[string]string{"prompt": text, "content": text})
}
