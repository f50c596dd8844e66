package tokenizer

import (
	"errors"
	"fmt"

	"github.com/octet-dev/octet/model/gguf"
)

// TokenType is a token's type as stored in GGUF tokenizer.ggml.token_type.
type TokenType int32

// Token types.
const (
	TypeUndefined   TokenType = 0
	TypeNormal      TokenType = 1
	TypeUnknown     TokenType = 2
	TypeControl     TokenType = 3
	TypeUserDefined TokenType = 4
	TypeUnused      TokenType = 5
	TypeByte        TokenType = 6
)

// Vocab is the raw tokenizer data, as stored in GGUF metadata
// (tokenizer.ggml.*).
type Vocab struct {
	Model  string // "llama" (SentencePiece), "gpt2" (byte-level BPE), "bert" (WordPiece)
	Pre    string // tokenizer.ggml.pre: "default", "llama-bpe", "qwen2", "gpt-2", "starcoder", ...
	Tokens []string
	Scores []float32   // may be nil
	Types  []TokenType // may be nil (all Normal)
	Merges []string    // BPE merges "a b", rank = index

	BOS, EOS, EOT, EOM, UNK, PAD, SEP, CLS, MASK int32 // -1 when absent

	AddBOS, AddEOS, AddSpacePrefix bool
	AddSEP                         bool // append SEP after a WordPiece sequence (bert)

	// WordPiece normaliser options (tokenizer.ggml.normalizer.*).
	Lowercase, StripAccents bool

	// Name is general.name. It is not tokenizer data, but llama.cpp keys
	// some per-model token attributes on it (Phi-3's rstrip); WriteGGUF
	// leaves it to the model writer.
	Name string

	ChatTemplate string // tokenizer.chat_template, passed through
}

// GGUF metadata keys.
const (
	keyModel        = "tokenizer.ggml.model"
	keyPre          = "tokenizer.ggml.pre"
	keyTokens       = "tokenizer.ggml.tokens"
	keyScores       = "tokenizer.ggml.scores"
	keyTypes        = "tokenizer.ggml.token_type"
	keyMerges       = "tokenizer.ggml.merges"
	keyAddBOS       = "tokenizer.ggml.add_bos_token"
	keyAddEOS       = "tokenizer.ggml.add_eos_token"
	keyAddSEP       = "tokenizer.ggml.add_sep_token"
	keyAddPrefix    = "tokenizer.ggml.add_space_prefix"
	keyLowercase    = "tokenizer.ggml.normalizer.lowercase"
	keyStripAccents = "tokenizer.ggml.normalizer.strip_accents"
	keyChatTemplate = "tokenizer.chat_template"
	keyName         = "general.name"
)

// idKeys lists the special-token id keys with a pointer into v.
func (v *Vocab) idKeys() []struct {
	key string
	id  *int32
} {
	return []struct {
		key string
		id  *int32
	}{
		{"tokenizer.ggml.bos_token_id", &v.BOS},
		{"tokenizer.ggml.eos_token_id", &v.EOS},
		{"tokenizer.ggml.eot_token_id", &v.EOT},
		{"tokenizer.ggml.eom_token_id", &v.EOM},
		{"tokenizer.ggml.unknown_token_id", &v.UNK},
		{"tokenizer.ggml.seperator_token_id", &v.SEP}, // sic, as in every GGUF
		{"tokenizer.ggml.padding_token_id", &v.PAD},
		{"tokenizer.ggml.cls_token_id", &v.CLS},
		{"tokenizer.ggml.mask_token_id", &v.MASK},
	}
}

// setDefaults applies llama.cpp's defaults for the model type; the GGUF
// keys, when present, override them afterwards.
func (v *Vocab) setDefaults() {
	v.BOS, v.EOS, v.EOT, v.EOM, v.UNK, v.PAD, v.SEP, v.CLS, v.MASK = -1, -1, -1, -1, -1, -1, -1, -1, -1
	v.AddBOS, v.AddEOS, v.AddSEP, v.AddSpacePrefix = false, false, false, false
	v.Lowercase, v.StripAccents = false, false
	switch v.Model {
	case "llama":
		v.BOS, v.EOS, v.UNK = 1, 2, 0
		v.AddBOS, v.AddSpacePrefix = true, true
	case "bert":
		v.BOS, v.UNK, v.SEP, v.PAD, v.MASK = 101, 100, 102, 0, 103
		v.AddBOS, v.AddSEP = true, true
		v.Lowercase, v.StripAccents = true, true
	case "gpt2":
		v.BOS, v.EOS = 11, 11
		if p, ok := bpePres[v.preName()]; ok {
			v.AddBOS = p.addBOS
		}
	}
	// A default id outside the vocabulary is disabled.
	for _, k := range v.idKeys() {
		if int(*k.id) >= len(v.Tokens) {
			*k.id = -1
		}
	}
}

// preName is the pre-tokenizer name in effect: llama.cpp treats a missing
// tokenizer.ggml.pre of a BPE vocabulary as "default".
func (v *Vocab) preName() string {
	if v.Pre == "" {
		return "default"
	}
	return v.Pre
}

// VocabFromGGUF reads the tokenizer metadata of f. Keys that are absent get
// llama.cpp's defaults for the model type (see setDefaults). A special-token
// id of 0xFFFFFFFF (or a negative one) means "none"; any other id outside
// the vocabulary is ignored in favour of the default, as llama.cpp does.
func VocabFromGGUF(f *gguf.File) (*Vocab, error) {
	if f == nil {
		return nil, errors.New("tokenizer: nil GGUF file")
	}
	v := &Vocab{}
	var ok bool
	if v.Model, ok = f.String(keyModel); !ok {
		return nil, fmt.Errorf("tokenizer: GGUF has no string %s", keyModel)
	}
	v.Pre, _ = f.String(keyPre)
	v.Name, _ = f.String(keyName)
	v.ChatTemplate, _ = f.String(keyChatTemplate)
	tv, ok := f.Get(keyTokens)
	if !ok {
		return nil, fmt.Errorf("tokenizer: GGUF has no %s", keyTokens)
	}
	if v.Tokens, ok = tv.Strings(); !ok {
		return nil, fmt.Errorf("tokenizer: %s is not an array of strings", keyTokens)
	}
	n := len(v.Tokens)
	if sv, ok := f.Get(keyScores); ok {
		if v.Scores, ok = sv.Float32s(); !ok {
			return nil, fmt.Errorf("tokenizer: %s is not a numeric array", keyScores)
		}
		if len(v.Scores) < n {
			return nil, fmt.Errorf("tokenizer: %s has %d entries for %d tokens", keyScores, len(v.Scores), n)
		}
		v.Scores = v.Scores[:n]
	}
	if tyv, ok := f.Get(keyTypes); ok {
		ts, ok := tyv.Int64s()
		if !ok {
			return nil, fmt.Errorf("tokenizer: %s is not an integer array", keyTypes)
		}
		if len(ts) < n {
			return nil, fmt.Errorf("tokenizer: %s has %d entries for %d tokens", keyTypes, len(ts), n)
		}
		v.Types = make([]TokenType, n)
		for i := range v.Types {
			v.Types[i] = TokenType(ts[i])
		}
	}
	if mv, ok := f.Get(keyMerges); ok {
		if v.Merges, ok = mv.Strings(); !ok {
			return nil, fmt.Errorf("tokenizer: %s is not an array of strings", keyMerges)
		}
	}
	v.setDefaults()
	for _, k := range v.idKeys() {
		val, ok := f.Get(k.key)
		if !ok {
			continue
		}
		id, ok := val.Int()
		if !ok {
			return nil, fmt.Errorf("tokenizer: %s is not an integer", k.key)
		}
		switch {
		case id < 0 || id == 0xFFFFFFFF:
			*k.id = -1
		case id < int64(n):
			*k.id = int32(id)
		}
	}
	for _, b := range []struct {
		key string
		dst *bool
	}{
		{keyAddBOS, &v.AddBOS}, {keyAddEOS, &v.AddEOS}, {keyAddSEP, &v.AddSEP},
		{keyAddPrefix, &v.AddSpacePrefix}, {keyLowercase, &v.Lowercase},
	} {
		if x, ok := f.Bool(b.key); ok {
			*b.dst = x
		}
	}
	if v.Model == "bert" {
		v.StripAccents = v.Lowercase
	}
	if x, ok := f.Bool(keyStripAccents); ok {
		v.StripAccents = x
	}
	return v, nil
}

// WriteGGUF sets the tokenizer.ggml.* keys (and tokenizer.chat_template) of
// v on w, in the form llama.cpp loads. Ids of -1 are left out (llama.cpp then
// applies its default for the model type); the add_* flags are always
// written so that they do not depend on those defaults.
func (v *Vocab) WriteGGUF(w *gguf.Writer) {
	w.Set(keyModel, gguf.String(v.Model))
	if v.Pre != "" {
		w.Set(keyPre, gguf.String(v.Pre))
	}
	w.Set(keyTokens, gguf.Strings(v.Tokens))
	if v.Scores != nil {
		w.Set(keyScores, gguf.Float32s(v.Scores))
	}
	if v.Types != nil {
		ts := make([]int32, len(v.Types))
		for i, t := range v.Types {
			ts[i] = int32(t)
		}
		w.Set(keyTypes, gguf.Int32s(ts))
	}
	if len(v.Merges) > 0 {
		w.Set(keyMerges, gguf.Strings(v.Merges))
	}
	for _, k := range v.idKeys() {
		if *k.id >= 0 {
			w.Set(k.key, gguf.Uint32(uint32(*k.id)))
		}
	}
	w.Set(keyAddBOS, gguf.Bool(v.AddBOS))
	w.Set(keyAddEOS, gguf.Bool(v.AddEOS))
	w.Set(keyAddPrefix, gguf.Bool(v.AddSpacePrefix))
	if v.Model == "bert" || v.AddSEP {
		w.Set(keyAddSEP, gguf.Bool(v.AddSEP))
	}
	if v.Model == "bert" {
		w.Set(keyLowercase, gguf.Bool(v.Lowercase))
		w.Set(keyStripAccents, gguf.Bool(v.StripAccents))
	}
	if v.ChatTemplate != "" {
		w.Set(keyChatTemplate, gguf.String(v.ChatTemplate))
	}
}
