// Package chat turns a conversation into the prompt text a model was
// fine-tuned on, in Go, without a Jinja engine.
//
// A GGUF file carries its chat template as a Jinja string
// (tokenizer.chat_template). Detect recognises the family of that string by
// its marker tokens and Render writes the same text the Hugging Face template
// writes with add_generation_prompt = true. The families are llama-2
// ([INST] with <<SYS>>), mistral ([INST] without <<SYS>>), llama-3
// (<|start_header_id|>), chatml (<|im_start|>: Qwen, Yi, many others),
// zephyr (<|user|> … </s>), phi-3 (<|user|> … <|end|>) and gemma
// (<start_of_turn>), with the later versions whose text differs: llama-3.1
// (a system header with the knowledge cutoff and a date, always: 3.1 and
// 3.3 date it 26 Jul 2024, 3.2 today), Mistral's later templates (mistral.go
// lists them: v0.1's first one, the revised v0.1/v0.2 one, v0.3's with and
// without trimmed answers, Nemo's, and the [SYSTEM_PROMPT] ones of Large
// 2411 and Small 2501), gemma-3 (the system prompt at the head of the first
// user turn) and phi-3.5 (an empty system prompt left out).
//
// Decisions where the templates or the design are silent:
//   - The rendered text does not start with the BOS token: the caller
//     encodes it with the tokenizer's own BOS rule (llama.cpp does the same).
//     BOS and EOS inside the text (llama-2's later turns, zephyr's turn ends)
//     are written as the tokenizer's BOS and EOS pieces, and the caller must
//     encode with special-token parsing on.
//   - An absent or unrecognised template falls back to chatml (llama.cpp's
//     default); Detect reports whether it recognised the string.
//   - "developer" is a synonym of "system" (OpenAI's newer name). A system
//     message in a family that has no system turn (llama-2 puts it in <<SYS>>;
//     mistral and gemma have none) is folded into the first user message.
//   - Conversations a template refuses (roles that do not alternate, a system
//     message where it takes none) are rendered anyway, in the family's
//     shape: a system message is folded into the user turn after it (the
//     [SYSTEM_PROMPT] families write it where it stands). A system prompt
//     alone, of which some templates write nothing, becomes a user turn.
//   - No family adds a default system prompt of its own (Qwen's and Mistral
//     Small's templates do; octet leaves that to the client).
package chat

import (
	"fmt"
	"strings"
	"time"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string // system, developer, user or assistant
	Content string
}

// Family names a chat format.
type Family string

// The families Render knows.
const (
	Llama2  Family = "llama2"
	Mistral Family = "mistral"
	Llama3  Family = "llama3"
	ChatML  Family = "chatml"
	Zephyr  Family = "zephyr"
	Phi3    Family = "phi3"
	Gemma   Family = "gemma"
	// Llama31 is Llama 3.1's and 3.3's template, Llama32 3.2's (the same
	// but dated today).
	Llama31 Family = "llama3.1"
	Llama32 Family = "llama3.2"
	// Mistral's later templates; mistral.go says which models carry each.
	Mistral01          Family = "mistral-v0.1"
	MistralV1          Family = "mistral-v1"
	MistralV3          Family = "mistral-v3"
	MistralV3Untrimmed Family = "mistral-v3-untrimmed"
	MistralTekken      Family = "mistral-v3-tekken"
	MistralV7          Family = "mistral-v7"
	MistralV7Tekken    Family = "mistral-v7-tekken"
	// Gemma3 is Gemma 3's template: Gemma 2's turns, with the system prompt
	// at the head of the first user turn.
	Gemma3 Family = "gemma3"
	// Phi35 is Phi-3.5's template: Phi-3's turns, without a system turn
	// when the system prompt is empty.
	Phi35 Family = "phi3.5"
)

// Default is the family used when a model has no template or an unknown one.
const Default = ChatML

// Families lists every family, in detection order.
var Families = []Family{
	Llama32, Llama31, Llama3, ChatML, Llama2,
	MistralV7, MistralV7Tekken, MistralTekken, MistralV1, MistralV3Untrimmed, MistralV3, Mistral01, Mistral,
	Gemma3, Gemma, Phi35, Phi3, Zephyr,
}

// Detect returns the family of a GGUF chat template string. The string may
// also be a family name itself. ok is false when nothing matched (and the
// family is Default).
func Detect(template string) (f Family, ok bool) {
	t := strings.TrimSpace(template)
	for _, f := range Families {
		if t == string(f) {
			return f, true
		}
	}
	switch {
	case strings.Contains(t, "<|start_header_id|>") && strings.Contains(t, "Cutting Knowledge Date"):
		if strings.Contains(t, "strftime_now") {
			return Llama32, true
		}
		return Llama31, true
	case strings.Contains(t, "<|start_header_id|>"):
		return Llama3, true
	case strings.Contains(t, "<|im_start|>"):
		return ChatML, true
	case strings.Contains(t, "[INST]") && strings.Contains(t, "<<SYS>>"):
		return Llama2, true
	case strings.Contains(t, "[INST]"):
		return detectMistral(t), true
	case strings.Contains(t, "<start_of_turn>") && strings.Contains(t, "first_user_prefix"):
		return Gemma3, true
	case strings.Contains(t, "<start_of_turn>"):
		return Gemma, true
	case strings.Contains(t, "<|end|>") && (strings.Contains(t, "<|user|>") || strings.Contains(t, "<|assistant|>")):
		// (Phi-3's generic form writes '<|' + role + '|>' and names only
		// <|assistant|>, for the generation prompt.)
		if strings.Contains(t, "'system' and message['content']") {
			return Phi35, true
		}
		return Phi3, true
	case strings.Contains(t, "<|user|>"):
		return Zephyr, true
	}
	return Default, false
}

// Template renders conversations of one family.
type Template struct {
	Family Family
	BOS    string // the tokenizer's BOS piece ("<s>"), written inside later turns
	EOS    string // the tokenizer's EOS piece ("</s>"), written after turns that end with it
	// Today dates llama3.2's system header (zero: the time of Render).
	Today time.Time
}

// Render writes msgs as the model's prompt, ending where the assistant's
// next answer begins. It fails on an empty conversation or an unknown role.
func (t Template) Render(msgs []Message) (string, error) {
	norm, err := normalize(msgs)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	switch t.Family {
	case Llama2:
		t.llama2(&b, norm)
	case Mistral, Mistral01, MistralV1, MistralV3, MistralV3Untrimmed, MistralTekken, MistralV7, MistralV7Tekken:
		t.mistral(&b, norm)
	case Llama3, Llama31, Llama32:
		t.llama3(&b, norm)
	case ChatML, "":
		for _, m := range norm {
			b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
		}
		b.WriteString("<|im_start|>assistant\n")
	case Zephyr:
		for _, m := range norm {
			b.WriteString("<|" + m.Role + "|>\n" + m.Content + t.EOS + "\n")
		}
		b.WriteString("<|assistant|>\n")
	case Phi3, Phi35:
		t.phi3(&b, norm)
	case Gemma, Gemma3:
		t.gemma(&b, norm)
	default:
		return "", fmt.Errorf("chat: unknown template family %q", t.Family)
	}
	return b.String(), nil
}

// normalize checks the roles of msgs and writes "developer" as "system".
func normalize(msgs []Message) ([]Message, error) {
	if len(msgs) == 0 {
		return nil, fmt.Errorf("chat: no messages")
	}
	norm := make([]Message, len(msgs))
	for i, m := range msgs {
		switch m.Role {
		case "system", "developer":
			m.Role = "system"
		case "user", "assistant":
		default:
			return nil, fmt.Errorf("chat: message %d: unknown role %q (system, developer, user and assistant are)", i, m.Role)
		}
		norm[i] = m
	}
	return norm, nil
}

// llama3 follows Meta's templates: every message trimmed in its own header
// block; 3.1 and later always open with a system header that carries the
// knowledge cutoff, a date and the system prompt (the first message's).
func (t Template) llama3(b *strings.Builder, msgs []Message) {
	if t.Family != Llama3 {
		date := "26 Jul 2024"
		if t.Family == Llama32 {
			today := t.Today
			if today.IsZero() {
				today = time.Now()
			}
			date = today.Format("02 Jan 2006")
		}
		sys := ""
		if msgs[0].Role == "system" {
			sys, msgs = strings.TrimSpace(msgs[0].Content), msgs[1:]
		}
		b.WriteString("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: " + date + "\n\n" + sys + "<|eot_id|>")
	}
	for _, m := range msgs {
		b.WriteString("<|start_header_id|>" + m.Role + "<|end_header_id|>\n\n" + strings.TrimSpace(m.Content) + "<|eot_id|>")
	}
	b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
}

// phi3 follows Microsoft's templates: every message as it is in its own
// <|role|> block. Phi-3.5's leaves out a system message whose text is
// empty (its template tests the content's truth).
func (t Template) phi3(b *strings.Builder, msgs []Message) {
	for _, m := range msgs {
		if t.Family == Phi35 && m.Role == "system" && m.Content == "" {
			continue
		}
		b.WriteString("<|" + m.Role + "|>\n" + m.Content + "<|end|>\n")
	}
	b.WriteString("<|assistant|>\n")
}

// gemma follows Google's templates: turns trimmed, the assistant's named
// "model". Gemma 2's template refuses a system prompt; it is folded into the
// first user turn. Gemma 3's writes it, untrimmed and followed by a blank
// line, at the head of the first turn, whose own text alone is trimmed. A
// system prompt alone (Gemma 3's template writes nothing of it) and later
// system messages are folded into user turns.
func (t Template) gemma(b *strings.Builder, msgs []Message) {
	prefix := ""
	if t.Family == Gemma3 && len(msgs) > 1 && msgs[0].Role == "system" {
		prefix, msgs = msgs[0].Content+"\n\n", msgs[1:]
	}
	for _, m := range foldSystem(msgs, "\n\n") {
		role := m.Role
		if role == "assistant" {
			role = "model"
		}
		b.WriteString("<start_of_turn>" + role + "\n" + prefix + strings.TrimSpace(m.Content) + "<end_of_turn>\n")
		prefix = ""
	}
	b.WriteString("<start_of_turn>model\n")
}

// llama2 follows Meta's template: the system prompt inside the first
// [INST] between <<SYS>> markers; every user turn after the first starts
// with BOS; an assistant turn ends with EOS.
func (t Template) llama2(b *strings.Builder, msgs []Message) {
	sys := ""
	if msgs[0].Role == "system" {
		sys = "<<SYS>>\n" + msgs[0].Content + "\n<</SYS>>\n\n"
		msgs = msgs[1:]
	}
	first := true
	for _, m := range msgs {
		switch m.Role {
		case "user":
			if !first {
				b.WriteString(t.BOS)
			}
			// The template strips the system block and the message as one
			// string: the message keeps its leading space after a system
			// block.
			b.WriteString("[INST] " + strings.TrimSpace(sys+m.Content) + " [/INST]")
			sys, first = "", false
		case "assistant":
			b.WriteString(" " + strings.TrimSpace(m.Content) + " " + t.EOS)
			first = false
		case "system": // a later system message: as its own instruction
			b.WriteString("[INST] <<SYS>>\n" + m.Content + "\n<</SYS>>\n\n [/INST]")
		}
	}
	if sys != "" { // a conversation of only a system prompt
		b.WriteString("[INST] " + sys + " [/INST]")
	}
}

// foldSystem merges system messages into the user message that follows
// them (or makes a user message of them when none follows), for families
// without a system turn. An empty system message still brings its sep, as
// the templates that take a system prompt write it.
func foldSystem(msgs []Message, sep string) []Message {
	var out []Message
	pending, held := "", false
	for _, m := range msgs {
		switch {
		case m.Role == "system" && held:
			pending += sep + m.Content
		case m.Role == "system":
			pending, held = m.Content, true
		case m.Role == "user" && held:
			out = append(out, Message{Role: "user", Content: pending + sep + m.Content})
			pending, held = "", false
		default:
			out = append(out, m)
		}
	}
	if held {
		out = append(out, Message{Role: "user", Content: pending})
	}
	return out
}
