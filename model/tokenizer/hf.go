package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// hfTokenizer is the part of a Hugging Face tokenizer.json that is read.
type hfTokenizer struct {
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	PreTokenizer *hfPreTok `json:"pre_tokenizer"`
	Model        struct {
		Type         string            `json:"type"`
		Vocab        map[string]int    `json:"vocab"`
		Merges       []json.RawMessage `json:"merges"`
		ByteFallback bool              `json:"byte_fallback"`
	} `json:"model"`
}

type hfPreTok struct {
	Type          string      `json:"type"`
	Pretokenizers []*hfPreTok `json:"pretokenizers"`
	Pattern       *struct {
		Regex  *string `json:"Regex"`
		String *string `json:"String"`
	} `json:"pattern"`
	UseRegex *bool `json:"use_regex"`
}

// hfConfig is the part of tokenizer_config.json that is read. Token fields
// may be a string or an AddedToken object.
type hfConfig struct {
	BOS          json.RawMessage `json:"bos_token"`
	EOS          json.RawMessage `json:"eos_token"`
	UNK          json.RawMessage `json:"unk_token"`
	PAD          json.RawMessage `json:"pad_token"`
	AddBOS       *bool           `json:"add_bos_token"`
	AddEOS       *bool           `json:"add_eos_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
}

// hfPreByRegex maps the Split regex of a tokenizer.json pre-tokenizer to the
// llama.cpp pre-tokenizer name.
var hfPreByRegex = map[string]string{
	`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`: "llama-bpe",
	`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`:      "qwen2",
}

// looksSpecial matches added tokens that llama.cpp's converter treats as
// control tokens even when they are not flagged special: <|...|> and
// <｜...｜>.
var looksSpecial = regexp.MustCompile(`^(<\|.*\|>|<｜.*｜>)$`)

// VocabFromHF imports a Hugging Face tokenizer.json (and, if not empty,
// tokenizer_config.json for bos/eos/add_bos/add_eos/chat_template). Only
// byte-level BPE tokenizers are supported; their pre-tokenizer is recognised
// from its Split regex (Llama 3 -> "llama-bpe", Qwen 2/3 -> "qwen2") or,
// for a bare ByteLevel pre-tokenizer, as "gpt-2". Added tokens become
// CONTROL when flagged special (or shaped like <|...|>) and USER_DEFINED
// otherwise; gaps in the id space are filled with "[PADn]" user-defined
// tokens, as llama.cpp's converter does.
func VocabFromHF(tokenizerJSON, tokenizerConfigJSON string) (*Vocab, error) {
	var tj hfTokenizer
	if err := json.Unmarshal([]byte(tokenizerJSON), &tj); err != nil {
		return nil, fmt.Errorf("tokenizer: parsing tokenizer.json: %v", err)
	}
	if tj.Model.Type != "BPE" {
		return nil, fmt.Errorf("tokenizer: unsupported tokenizer.json model type %q (only byte-level BPE)", tj.Model.Type)
	}
	if tj.Model.ByteFallback {
		return nil, errors.New("tokenizer: unsupported tokenizer.json: BPE with byte_fallback (SentencePiece-style)")
	}
	pre, err := hfPre(tj.PreTokenizer)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, id := range tj.Model.Vocab {
		n = max(n, id+1)
	}
	for _, a := range tj.AddedTokens {
		n = max(n, a.ID+1)
	}
	if n <= 0 || n > 1<<24 {
		return nil, fmt.Errorf("tokenizer: tokenizer.json: implausible vocabulary size %d", n)
	}
	v := &Vocab{Model: "gpt2", Pre: pre, Tokens: make([]string, n), Types: make([]TokenType, n)}
	for tok, id := range tj.Model.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("tokenizer: tokenizer.json: negative id for %q", tok)
		}
		v.Tokens[id] = tok
		v.Types[id] = TypeNormal
	}
	for _, a := range tj.AddedTokens {
		if a.ID < 0 {
			return nil, fmt.Errorf("tokenizer: tokenizer.json: negative id for added token %q", a.Content)
		}
		v.Tokens[a.ID] = a.Content
		if a.Special || looksSpecial.MatchString(a.Content) {
			v.Types[a.ID] = TypeControl
		} else {
			v.Types[a.ID] = TypeUserDefined
		}
	}
	for i := range v.Tokens {
		if v.Types[i] == TypeUndefined {
			v.Tokens[i] = fmt.Sprintf("[PAD%d]", i)
			v.Types[i] = TypeUserDefined
		}
	}
	v.Merges = make([]string, 0, len(tj.Model.Merges))
	for _, raw := range tj.Model.Merges {
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			v.Merges = append(v.Merges, s)
			continue
		}
		var pair []string
		if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
			return nil, fmt.Errorf("tokenizer: tokenizer.json: bad merge %s", raw)
		}
		v.Merges = append(v.Merges, pair[0]+" "+pair[1])
	}
	v.setDefaults()
	if strings.TrimSpace(tokenizerConfigJSON) != "" {
		if err := v.applyHFConfig(tokenizerConfigJSON); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// hfPre names the llama.cpp pre-tokenizer of a tokenizer.json pre_tokenizer.
func hfPre(p *hfPreTok) (string, error) {
	if p == nil {
		return "", errors.New("tokenizer: tokenizer.json has no pre_tokenizer")
	}
	steps := []*hfPreTok{p}
	if p.Type == "Sequence" {
		steps = p.Pretokenizers
	}
	var split string
	byteLevelRegex := false
	for _, s := range steps {
		if s == nil {
			continue
		}
		switch s.Type {
		case "Split":
			if s.Pattern == nil || s.Pattern.Regex == nil {
				return "", errors.New("tokenizer: tokenizer.json: Split pre-tokenizer without a regex")
			}
			if split != "" {
				return "", errors.New("tokenizer: tokenizer.json: more than one Split pre-tokenizer")
			}
			split = *s.Pattern.Regex
		case "ByteLevel":
			byteLevelRegex = s.UseRegex == nil || *s.UseRegex
		default:
			return "", fmt.Errorf("tokenizer: tokenizer.json: unsupported pre-tokenizer %q", s.Type)
		}
	}
	switch {
	case split != "" && !byteLevelRegex:
		if name, ok := hfPreByRegex[split]; ok {
			return name, nil
		}
		return "", fmt.Errorf("tokenizer: tokenizer.json: unrecognised pre-tokenizer regex %q", split)
	case split == "" && byteLevelRegex:
		return "gpt-2", nil
	}
	return "", errors.New("tokenizer: tokenizer.json: unrecognised pre-tokenizer")
}

func (v *Vocab) applyHFConfig(cfgJSON string) error {
	var c hfConfig
	if err := json.Unmarshal([]byte(cfgJSON), &c); err != nil {
		return fmt.Errorf("tokenizer: parsing tokenizer_config.json: %v", err)
	}
	ids := make(map[string]int32, len(v.Tokens))
	for i, s := range v.Tokens {
		if _, dup := ids[s]; !dup {
			ids[s] = int32(i)
		}
	}
	for _, f := range []struct {
		raw json.RawMessage
		dst *int32
	}{{c.BOS, &v.BOS}, {c.EOS, &v.EOS}, {c.UNK, &v.UNK}, {c.PAD, &v.PAD}} {
		content, set, err := hfTokenContent(f.raw)
		if err != nil {
			return err
		}
		if !set {
			continue
		}
		*f.dst = -1
		if id, ok := ids[content]; ok && content != "" {
			*f.dst = id
		}
	}
	if c.AddBOS != nil {
		v.AddBOS = *c.AddBOS
	}
	if c.AddEOS != nil {
		v.AddEOS = *c.AddEOS
	}
	if len(c.ChatTemplate) > 0 && string(c.ChatTemplate) != "null" {
		var s string
		if err := json.Unmarshal(c.ChatTemplate, &s); err == nil {
			v.ChatTemplate = s
		} else {
			var named []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if err := json.Unmarshal(c.ChatTemplate, &named); err != nil {
				return fmt.Errorf("tokenizer: tokenizer_config.json: bad chat_template: %v", err)
			}
			for _, t := range named {
				if t.Name == "default" || v.ChatTemplate == "" {
					v.ChatTemplate = t.Template
				}
			}
		}
	}
	return nil
}

// hfTokenContent reads a token field of tokenizer_config.json: absent (not
// set), null (set, none), a string, or an object with "content".
func hfTokenContent(raw json.RawMessage) (string, bool, error) {
	if len(raw) == 0 {
		return "", false, nil
	}
	if string(raw) == "null" {
		return "", true, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", false, fmt.Errorf("tokenizer: tokenizer_config.json: bad token %s", raw)
	}
	return obj.Content, true, nil
}
