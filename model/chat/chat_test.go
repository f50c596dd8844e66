package chat

import (
	"strings"
	"testing"
	"time"
)

var conv = []Message{
	{Role: "system", Content: "Be brief."},
	{Role: "user", Content: "Hi"},
	{Role: "assistant", Content: "Hello!"},
	{Role: "user", Content: "Name a color."},
}

// The expected strings are what each family's Hugging Face template writes
// for conv with add_generation_prompt, less the leading BOS.
func TestRender(t *testing.T) {
	checkRender(t, []renderCase{
		{Llama2, conv, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Name a color. [/INST]"},
		{Llama2, conv[1:2], "[INST] Hi [/INST]"},
		{Llama2, []Message{{Role: "system", Content: "  Be brief.\n"}, {Role: "user", Content: "\n  Hello  "}, {Role: "assistant", Content: " Hi there "}, {Role: "user", Content: " Next? "}},
			"[INST] <<SYS>>\n  Be brief.\n\n<</SYS>>\n\n\n  Hello [/INST] Hi there </s><s>[INST] Next? [/INST]"},
		{Mistral, conv, "[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Name a color. [/INST]"},
		{Mistral, conv[1:2], "[INST] Hi [/INST]"},
		{Llama3, conv, "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{Llama3, []Message{{Role: "user", Content: "  padded \n"}}, "<|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{ChatML, conv, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
			"<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n"},
		{Zephyr, conv, "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nName a color.</s>\n<|assistant|>\n"},
		{Phi3, conv, "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nName a color.<|end|>\n<|assistant|>\n"},
		{Gemma, conv, "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n" +
			"<start_of_turn>user\nName a color.<end_of_turn>\n<start_of_turn>model\n"},
		{ChatML, []Message{{Role: "developer", Content: "d"}, {Role: "user", Content: "u"}}, "<|im_start|>system\nd<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"},
		{Mistral, []Message{{Role: "system", Content: "only"}}, "[INST] only [/INST]"},
	})
}

// TestRenderRefused: conversations the templates refuse (a system prompt
// where they take none, a system message after the first) render in the
// family's shape, the system text folded into the user turn after it or,
// in the [SYSTEM_PROMPT] families, written where it stands.
func TestRenderRefused(t *testing.T) {
	later := []Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello!"}, {Role: "system", Content: "Be brief."}, {Role: "user", Content: "Name a color."}}
	checkRender(t, []renderCase{
		{Mistral01, conv, "[INST] Be brief.\n\nHi [/INST]Hello!</s> [INST] Name a color. [/INST]"},
		{MistralV1, later, " [INST] Hi [/INST] Hello!</s> [INST] Be brief.\n\nName a color. [/INST]"},
		{MistralV3Untrimmed, later, "[INST] Hi[/INST] Hello!</s>[INST] Be brief.\n\nName a color.[/INST]"},
		{MistralV7Tekken, later, "[INST]Hi[/INST]Hello!</s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]Name a color.[/INST]"},
		{Gemma3, later, "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n" +
			"<start_of_turn>user\nBe brief.\n\nName a color.<end_of_turn>\n<start_of_turn>model\n"},
		{Gemma, []Message{{Role: "system", Content: " Be brief. "}, {Role: "user", Content: " Hi"}}, "<start_of_turn>user\nBe brief. \n\n Hi<end_of_turn>\n<start_of_turn>model\n"},
		{Phi35, []Message{{Role: "system", Content: " "}, {Role: "user", Content: "Hi"}}, "<|system|>\n <|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"},
	})
}

type renderCase struct {
	f    Family
	msgs []Message
	want string
}

// checkRender renders each case's conversation with BOS "<s>" and EOS
// "</s>" and compares.
func checkRender(t *testing.T, cases []renderCase) {
	t.Helper()
	for i, c := range cases {
		got, err := Template{Family: c.f, BOS: "<s>", EOS: "</s>"}.Render(c.msgs)
		if err != nil || got != c.want {
			t.Errorf("%s, case %d: %v\n got %q\nwant %q", c.f, i, err, got, c.want)
		}
	}
}

// TestRenderLaterVersions: Llama 3.1/3.3's, Mistral v0.3's and Mistral
// Nemo's templates, as jinja2 renders them (Hugging Face's sandboxed
// environment with trim_blocks and lstrip_blocks, add_generation_prompt,
// bos_token "<s>" taken off the front, tools left out), for five
// conversations: the system prompt goes where each template puts it, and
// is left out of Mistral v3's when the last message is the assistant's.
func TestRenderLaterVersions(t *testing.T) {
	checkRender(t, []renderCase{
		{Llama31, conv, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{Llama31, []Message{{Role: "user", Content: "Hi"}}, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{Llama31, []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{Llama31, []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "  Hello! "}}, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{Llama31, []Message{{Role: "system", Content: ""}, {Role: "user", Content: " padded \n"}}, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{MistralV3, conv, "[INST] Hi[/INST] Hello!</s>[INST] Be brief.\n\nName a color.[/INST]"},
		{MistralV3, []Message{{Role: "user", Content: "Hi"}}, "[INST] Hi[/INST]"},
		{MistralV3, []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}, "[INST] Be brief.\n\nHi[/INST]"},
		{MistralV3, []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "  Hello! "}}, "[INST] Hi[/INST] Hello!</s>"},
		{MistralV3, []Message{{Role: "system", Content: ""}, {Role: "user", Content: " padded \n"}}, "[INST] \n\n padded \n[/INST]"},
		{MistralTekken, conv, "[INST]Hi[/INST]Hello!</s>[INST]Be brief.\n\nName a color.[/INST]"},
		{MistralTekken, []Message{{Role: "user", Content: "Hi"}}, "[INST]Hi[/INST]"},
		{MistralTekken, []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}, "[INST]Be brief.\n\nHi[/INST]"},
		{MistralTekken, []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "  Hello! "}}, "[INST]Hi[/INST]  Hello! </s>"},
		{MistralTekken, []Message{{Role: "system", Content: ""}, {Role: "user", Content: " padded \n"}}, "[INST]\n\n padded \n[/INST]"},
	})
	// Llama 3.2 dates the header today.
	day := time.Date(2026, 11, 5, 12, 0, 0, 0, time.UTC)
	got, _ := Template{Family: Llama32, Today: day}.Render(conv[1:2])
	if !strings.HasPrefix(got, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 05 Nov 2026\n\n<|eot_id|>") {
		t.Errorf("llama3.2: %q", got)
	}
}

func TestRenderErrors(t *testing.T) {
	tm := Template{Family: ChatML}
	if _, err := tm.Render(nil); err == nil {
		t.Error("empty conversation rendered")
	}
	if _, err := tm.Render([]Message{{Role: "tool", Content: "x"}}); err == nil || !strings.Contains(err.Error(), `"tool"`) {
		t.Errorf("unknown role: %v", err)
	}
	if _, err := (Template{Family: "nope"}).Render(conv); err == nil {
		t.Error("unknown family rendered")
	}
}

// Abridged forms of the templates shipped in real GGUF files.
func TestDetect(t *testing.T) {
	for _, c := range []struct {
		tmpl string
		want Family
		ok   bool
	}{
		{"{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + messages[0]['content'] %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}", Llama2, true},
		{"{{ bos_token }}{% for message in messages %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endfor %}", Mistral, true},
		{"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}", Llama3, true},
		{"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}", ChatML, true},
		{"{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token }}", Zephyr, true},
		{"{% if message['role'] == 'user' %}{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n'}}", Phi3, true},
		{"{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}", Gemma, true},
		{"llama3", Llama3, true},
		// Later versions, by what their templates write.
		{`{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}{{- "Cutting Knowledge Date: December 2023\n" }}{%- set date_string = "26 Jul 2024" %}`, Llama31, true},
		{`{%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}{%- endif %}{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}{{- "Cutting Knowledge Date: December 2023\n" }}`, Llama32, true},
		{`{%- if loop.last and system_message is defined %}{{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}`, MistralV3, true},
		{`{%- if loop.last and system_message is defined %}{{- "[INST]" + system_message + "\n\n" + message["content"] + "[/INST]" }}`, MistralTekken, true},
		{"{{ bos_token }}{% for message in messages %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token}}{% endfor %}", Mistral, true},
		// Phi-3's generic form names the roles only through message['role'].
		{"{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}", Phi3, true},
		// Mistral's other templates, Gemma 3's and Phi-3.5's, by what tells
		// them apart (testdata holds them whole).
		{"{{ message['content'] + eos_token + ' ' }}{{ '[INST] ' + message['content'] + ' [/INST]' }}", Mistral01, true},
		{"{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}", MistralV1, true},
		{"{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}{{- ' ' + message['content'] + eos_token}}", MistralV3Untrimmed, true},
		{"{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{{ '[INST] ' + message['content'] + '[/INST]' }}", MistralV7, true},
		{"{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}{{- '[INST]' + message['content'] + '[/INST]' }}", MistralV7Tekken, true},
		{"{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}", Gemma3, true},
		{"{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n'}}", Phi35, true},
		{"", ChatML, false},
		{"{{ messages }}", ChatML, false},
	} {
		f, ok := Detect(c.tmpl)
		if f != c.want || ok != c.ok {
			t.Errorf("Detect(%.40q) = %s, %v; want %s, %v", c.tmpl, f, ok, c.want, c.ok)
		}
	}
	// A family's name is a template of its own, and renders.
	for _, want := range Families {
		if f, ok := Detect(string(want)); f != want || !ok {
			t.Errorf("Detect(%q) = %s, %v", want, f, ok)
		}
		if _, err := (Template{Family: want}).Render(conv); err != nil {
			t.Errorf("%s: %v", want, err)
		}
	}
}
