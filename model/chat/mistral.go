package chat

import "strings"

// Mistral's templates differ in the spaces around [INST] and the answer, in
// whether the answer is trimmed, and in where the system prompt goes:
//
//	mistral               Mixtral-8x7B-Instruct-v0.1, the first Mistral-7B-Instruct-v0.2:
//	                      "[INST] u [/INST]a</s>", no system prompt
//	mistral-v0.1          Mistral-7B-Instruct-v0.1's first template: the same with a
//	                      space after EOS ("a</s> [INST] …")
//	mistral-v1            the revised template of Mistral-7B-Instruct-v0.1 and v0.2:
//	                      " [INST] u [/INST] a</s>", the system prompt in the first user turn
//	mistral-v3            Mistral-7B-Instruct-v0.3, Large 2407: "[INST] u[/INST] a</s>",
//	                      the answer trimmed, the system prompt in the last user turn
//	mistral-v3-untrimmed  the same form without tools, the answer as it is
//	mistral-v3-tekken     Nemo 2407: "[INST]u[/INST]a</s>", the system prompt in the
//	                      last user turn
//	mistral-v7            Large 2411: "[SYSTEM_PROMPT] s[/SYSTEM_PROMPT][INST] u[/INST] a</s>"
//	mistral-v7-tekken     Small 2501 and later: "[SYSTEM_PROMPT]s[/SYSTEM_PROMPT][INST]u[/INST]a</s>"
//
// Where a template takes no system prompt (mistral, mistral-v0.1) it is
// folded into the first user turn, as mistral-v1's template does.

// mistralForm is how one Mistral template writes its turns.
type mistralForm struct {
	inst, close string // what a user turn is written between
	sysOpen     string // what opens a [SYSTEM_PROMPT] turn (systemInPlace)
	answer      string // what an answer starts with
	afterEOS    string // what follows an answer's EOS
	trim        bool   // whether the answer is trimmed
	system      systemPlace
}

// systemPlace says where a Mistral template puts the system prompt.
type systemPlace int

const (
	systemFirst   systemPlace = iota // at the head of the user turn after it
	systemLast                       // at the head of the last message, when that is the user's
	systemInPlace                    // in a [SYSTEM_PROMPT] turn where it stands
)

var mistralForms = map[Family]mistralForm{
	Mistral:            {inst: "[INST] ", close: " [/INST]"},
	Mistral01:          {inst: "[INST] ", close: " [/INST]", afterEOS: " "},
	MistralV1:          {inst: " [INST] ", close: " [/INST]", answer: " "},
	MistralV3:          {inst: "[INST] ", close: "[/INST]", answer: " ", trim: true, system: systemLast},
	MistralV3Untrimmed: {inst: "[INST] ", close: "[/INST]", answer: " ", system: systemLast},
	MistralTekken:      {inst: "[INST]", close: "[/INST]", system: systemLast},
	MistralV7:          {inst: "[INST] ", close: "[/INST]", sysOpen: "[SYSTEM_PROMPT] ", answer: " ", system: systemInPlace},
	MistralV7Tekken:    {inst: "[INST]", close: "[/INST]", sysOpen: "[SYSTEM_PROMPT]", system: systemInPlace},
}

// detectMistral tells Mistral's templates apart by how they write their
// turns (t holds [INST] and no <<SYS>>). The checks go from the most
// particular text to the least.
func detectMistral(t string) Family {
	has := func(s ...string) bool {
		for _, x := range s {
			if strings.Contains(t, x) {
				return true
			}
		}
		return false
	}
	switch {
	case has("[SYSTEM_PROMPT] '", `[SYSTEM_PROMPT] "`):
		return MistralV7
	case has("[SYSTEM_PROMPT]"):
		return MistralV7Tekken
	case has(`"[INST]" +`, `'[INST]' +`):
		return MistralTekken
	case has(`' [INST] '`, `" [INST] "`):
		return MistralV1
	case has(`+ "[/INST]"`, `+ '[/INST]'`) && has(`' ' + message['content'] + eos_token`, `" " + message["content"] + eos_token`):
		return MistralV3Untrimmed
	case has(`+ "[/INST]"`, `+ '[/INST]'`):
		return MistralV3
	case has(`eos_token + ' '`, `eos_token + " "`):
		return Mistral01
	}
	return Mistral
}

// mistral writes msgs in the form of t's Mistral family. Later system
// messages, which the templates refuse (v7's excepted), are folded into the
// user turn after them; a system prompt alone becomes a user turn.
func (t Template) mistral(b *strings.Builder, msgs []Message) {
	f := mistralForms[t.Family]
	switch f.system {
	case systemFirst:
		msgs = foldSystem(msgs, "\n\n")
	case systemLast:
		msgs = systemToLast(msgs)
	}
	for _, m := range msgs {
		switch m.Role {
		case "system":
			b.WriteString(f.sysOpen + m.Content + "[/SYSTEM_PROMPT]")
		case "user":
			b.WriteString(f.inst + m.Content + f.close)
		default:
			answer := m.Content
			if f.trim {
				answer = strings.TrimSpace(answer)
			}
			b.WriteString(f.answer + answer + t.EOS + f.afterEOS)
		}
	}
}

// systemToLast moves the system prompt (the first message's) to the head of
// the last message when that is the user's, and leaves it out when the last
// message is the assistant's, as the v3 templates do.
func systemToLast(msgs []Message) []Message {
	if msgs[0].Role != "system" {
		return foldSystem(msgs, "\n\n")
	}
	sys, rest := msgs[0], foldSystem(msgs[1:], "\n\n")
	last := len(rest) - 1
	switch {
	case last < 0: // a conversation of only a system prompt
		return []Message{{Role: "user", Content: sys.Content}}
	case rest[last].Role == "user":
		rest[last].Content = sys.Content + "\n\n" + rest[last].Content
	}
	return rest
}
