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
// 3.3 date it 26 Jul 2024, 3.2 today), and mistral-v3 (v0.3, Large 2407: no
// space before [/INST], the system prompt in the last user turn) and
// mistral-v3-tekken (Nemo: no spaces at all).
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
//   - No family adds a default system prompt of its own (Qwen's template
//     does; octet leaves that to the client).
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
	// MistralV3 is Mistral v0.3's template (and Large 2407's),
	// MistralTekken Nemo's.
	MistralV3     Family = "mistral-v3"
	MistralTekken Family = "mistral-v3-tekken"
)

// Default is the family used when a model has no template or an unknown one.
const Default = ChatML

// Families lists every family, in detection order.
var Families = []Family{Llama32, Llama31, Llama3, ChatML, Llama2, MistralTekken, MistralV3, Mistral, Gemma, Phi3, Zephyr}

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
	case strings.Contains(t, `"[INST]" +`) || strings.Contains(t, `'[INST]' +`):
		return MistralTekken, true
	case strings.Contains(t, "[INST]") && (strings.Contains(t, `+ "[/INST]"`) || strings.Contains(t, `+ '[/INST]'`)):
		return MistralV3, true
	case strings.Contains(t, "[INST]"):
		return Mistral, true
	case strings.Contains(t, "<start_of_turn>"):
		return Gemma, true
	case strings.Contains(t, "<|end|>") && (strings.Contains(t, "<|user|>") || strings.Contains(t, "<|assistant|>")):
		// (Phi-3's generic form writes '<|' + role + '|>' and names only
		// <|assistant|>, for the generation prompt.)
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
	if len(msgs) == 0 {
		return "", fmt.Errorf("chat: no messages")
	}
	norm := make([]Message, len(msgs))
	for i, m := range msgs {
		switch m.Role {
		case "system", "developer":
			m.Role = "system"
		case "user", "assistant":
		default:
			return "", fmt.Errorf("chat: message %d: unknown role %q (system, developer, user and assistant are)", i, m.Role)
		}
		norm[i] = m
	}
	var b strings.Builder
	switch t.Family {
	case Llama2:
		t.llama2(&b, norm)
	case Mistral:
		t.mistral(&b, foldSystem(norm, "\n\n"))
	case MistralV3:
		t.mistralV3(&b, norm, "[INST] ", " ")
	case MistralTekken:
		t.mistralV3(&b, norm, "[INST]", "")
	case Llama3, Llama31, Llama32:
		if t.Family != Llama3 {
			// The header always, with the first message when it is the
			// system prompt.
			date := "26 Jul 2024"
			if t.Family == Llama32 {
				today := t.Today
				if today.IsZero() {
					today = time.Now()
				}
				date = today.Format("02 Jan 2006")
			}
			sys := ""
			if norm[0].Role == "system" {
				sys, norm = strings.TrimSpace(norm[0].Content), norm[1:]
			}
			b.WriteString("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: " + date + "\n\n" + sys + "<|eot_id|>")
		}
		for _, m := range norm {
			b.WriteString("<|start_header_id|>" + m.Role + "<|end_header_id|>\n\n" + strings.TrimSpace(m.Content) + "<|eot_id|>")
		}
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
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
	case Phi3:
		for _, m := range norm {
			b.WriteString("<|" + m.Role + "|>\n" + m.Content + "<|end|>\n")
		}
		b.WriteString("<|assistant|>\n")
	case Gemma:
		for _, m := range foldSystem(norm, "\n\n") {
			role := m.Role
			if role == "assistant" {
				role = "model"
			}
			b.WriteString("<start_of_turn>" + role + "\n" + strings.TrimSpace(m.Content) + "<end_of_turn>\n")
		}
		b.WriteString("<start_of_turn>model\n")
	default:
		return "", fmt.Errorf("chat: unknown template family %q", t.Family)
	}
	return b.String(), nil
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

// mistral follows the template of Mixtral-8x7B-Instruct-v0.1 and the first
// Mistral-7B-Instruct-v0.2: no spaces around the answer, EOS after it, no
// BOS between turns. (Mistral-7B-Instruct-v0.1's writes a space after EOS;
// this family leaves it out.)
func (t Template) mistral(b *strings.Builder, msgs []Message) {
	for _, m := range msgs {
		if m.Role == "assistant" {
			b.WriteString(m.Content + t.EOS)
		} else {
			b.WriteString("[INST] " + m.Content + " [/INST]")
		}
	}
}

// mistralV3 follows Mistral's v3 templates (v0.3 with inst "[INST] " and
// sp " ", Nemo's tekken with "[INST]" and ""): the system prompt (the first
// message's) goes into the last message when that is the user's, and is
// left out otherwise, as the templates do; answers are written after sp,
// trimmed (tekken: as they are), with EOS. Later system messages, which
// the templates refuse, are folded into the user turn after them.
func (t Template) mistralV3(b *strings.Builder, msgs []Message, inst, sp string) {
	sys, hasSys := "", false
	if msgs[0].Role == "system" {
		sys, hasSys, msgs = msgs[0].Content, true, msgs[1:]
	}
	msgs = foldSystem(msgs, "\n\n")
	for i, m := range msgs {
		switch {
		case m.Role == "assistant" && sp == "":
			b.WriteString(m.Content + t.EOS)
		case m.Role == "assistant":
			b.WriteString(sp + strings.TrimSpace(m.Content) + t.EOS)
		case i == len(msgs)-1 && hasSys:
			b.WriteString(inst + sys + "\n\n" + m.Content + "[/INST]")
		default:
			b.WriteString(inst + m.Content + "[/INST]")
		}
	}
	if len(msgs) == 0 { // a conversation of only a system prompt
		b.WriteString(inst + sys + "[/INST]")
	}
}

// foldSystem merges system messages into the user message that follows
// them (or makes a user message of them when none follows), for families
// without a system turn.
func foldSystem(msgs []Message, sep string) []Message {
	var out []Message
	pending := ""
	for _, m := range msgs {
		switch {
		case m.Role == "system":
			if pending != "" {
				pending += sep
			}
			pending += m.Content
		case m.Role == "user" && pending != "":
			out = append(out, Message{Role: "user", Content: pending + sep + m.Content})
			pending = ""
		default:
			out = append(out, m)
		}
	}
	if pending != "" {
		out = append(out, Message{Role: "user", Content: pending})
	}
	return out
}
