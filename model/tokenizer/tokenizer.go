package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/octet-dev/octet/model/gguf"
)

// tokenAttr is llama.cpp's per-token attribute bit set.
type tokenAttr uint16

const (
	attrUnknown tokenAttr = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	attrNormalized
	attrLStrip
	attrRStrip
	attrSingleWord
)

func typeAttr(t TokenType) tokenAttr {
	switch t {
	case TypeNormal:
		return attrNormal
	case TypeUnknown:
		return attrUnknown
	case TypeControl:
		return attrControl
	case TypeUserDefined:
		return attrUserDefined
	case TypeUnused:
		return attrUnused
	case TypeByte:
		return attrByte
	}
	return 0
}

type modelKind int

const (
	kindSPM modelKind = iota
	kindBPE
	kindWPM
)

// Tokenizer encodes text to token ids and back. It is immutable after New
// and safe for concurrent use.
type Tokenizer struct {
	vocab *Vocab
	kind  modelKind

	texts    []string // token texts (empty ones renamed as llama.cpp does)
	ids      map[string]int32
	attrs    []tokenAttr
	pieces   []string // rendering of each token with special = true
	specials []int32  // CONTROL, USER_DEFINED and UNKNOWN tokens, longest first
	eog      map[int32]bool

	maxTokenLen int
	stripSpace  bool // decoding drops the space prefix that encoding adds

	spmByte  [256]int32
	spmSplit bool // SPM text may be merged word by word (see initSPM)
	spmPairs map[uint64]int32
	charTok  [256]int32 // token of each one-byte string, or -1
	spaceTok int32      // token of U+2581, or -1
	bpe      *bpeData

	spmPool sync.Pool
	bpePool sync.Pool

	trie     *Trie // built on first use (Trie)
	trieOnce sync.Once

	derivedMu sync.Mutex
	derived   map[any]any // Derived's tables
}

// FromGGUF builds a tokenizer from the metadata of f.
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	v, err := VocabFromGGUF(f)
	if err != nil {
		return nil, err
	}
	return New(v)
}

// New builds a tokenizer for v. It refuses a model or (for BPE) a
// pre-tokenizer it does not know, naming it. v is copied; later changes to
// it do not affect the tokenizer.
func New(v *Vocab) (*Tokenizer, error) {
	if v == nil {
		return nil, errors.New("tokenizer: nil vocabulary")
	}
	cp := *v
	cp.Tokens = slices.Clone(v.Tokens)
	cp.Scores = slices.Clone(v.Scores)
	cp.Types = slices.Clone(v.Types)
	cp.Merges = slices.Clone(v.Merges)
	t := &Tokenizer{vocab: &cp}
	n := len(cp.Tokens)
	if n == 0 {
		return nil, errors.New("tokenizer: empty vocabulary")
	}
	if n > 1<<31-1 {
		return nil, errors.New("tokenizer: vocabulary too large")
	}
	if cp.Scores != nil && len(cp.Scores) < n {
		return nil, fmt.Errorf("tokenizer: %d scores for %d tokens", len(cp.Scores), n)
	}
	if cp.Types != nil && len(cp.Types) < n {
		return nil, fmt.Errorf("tokenizer: %d token types for %d tokens", len(cp.Types), n)
	}
	for _, id := range []*int32{&cp.BOS, &cp.EOS, &cp.EOT, &cp.EOM, &cp.UNK, &cp.PAD, &cp.SEP, &cp.CLS, &cp.MASK} {
		if *id < -1 || int(*id) >= n {
			*id = -1
		}
	}

	t.texts = make([]string, n)
	t.ids = make(map[string]int32, n)
	t.attrs = make([]tokenAttr, n)
	for i, s := range cp.Tokens {
		if s == "" {
			s = fmt.Sprintf("[EMPTY_%d]", i)
		}
		t.texts[i] = s
		if _, dup := t.ids[s]; !dup {
			t.ids[s] = int32(i)
		}
		t.maxTokenLen = max(t.maxTokenLen, len(s))
		t.attrs[i] = attrNormal
		if cp.Types != nil {
			t.attrs[i] = typeAttr(cp.Types[i])
		}
	}

	switch cp.Model {
	case "llama":
		t.kind = kindSPM
		t.stripSpace = cp.AddSpacePrefix
		t.initSPM()
		t.spmPool.New = func() any { return new(spmScratch) }
	case "gpt2":
		t.kind = kindBPE
		pre, ok := bpePres[cp.preName()]
		if !ok {
			return nil, fmt.Errorf("tokenizer: unknown pre-tokenizer %q for model %q", cp.Pre, cp.Model)
		}
		if err := t.initBPE(pre); err != nil {
			return nil, err
		}
		t.bpePool.New = func() any { return new(bpeScratch) }
	case "bert":
		t.kind = kindWPM
	default:
		return nil, fmt.Errorf("tokenizer: unknown tokenizer model %q", cp.Model)
	}

	t.fixAttrs()
	for i := range t.attrs {
		if t.attrs[i]&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.specials = append(t.specials, int32(i))
		}
	}
	sort.SliceStable(t.specials, func(a, b int) bool {
		return len(t.texts[t.specials[a]]) > len(t.texts[t.specials[b]])
	})
	t.modelAttrs()
	t.pieces = make([]string, n)
	for i := range t.pieces {
		t.pieces[i] = t.render(int32(i))
	}
	return t, nil
}

// eogTexts are the token texts llama.cpp treats as end of generation (and
// forces to CONTROL if the vocabulary says otherwise).
var eogTexts = []string{
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
	"<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
	"<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
	"<｜end▁of▁sentence｜>", "[e~[",
}

// fimTexts are llama.cpp's FIM prefix/suffix/middle tokens, forced to
// CONTROL.
var fimTexts = []string{
	"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>",
	"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>",
	"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>",
}

// fimEOGTexts are llama.cpp's FIM pad/repo/file-separator tokens, which also
// end generation.
var fimEOGTexts = []string{
	"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
	"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
	"<|file_sep|>",
}

// fixAttrs applies llama.cpp's load-time attribute fixes that are keyed on
// token text: end-of-generation tokens become CONTROL, CONTROL tokens named
// "unused" become UNUSED, gpt-oss's channel tokens become USER_DEFINED. It
// also builds the end-of-generation set.
func (t *Tokenizer) fixAttrs() {
	v := t.vocab
	t.eog = map[int32]bool{}
	for _, s := range fimEOGTexts {
		if id, ok := t.ids[s]; ok {
			t.eog[id] = true
			t.attrs[id] |= attrControl
		}
	}
	for _, s := range eogTexts {
		if id, ok := t.ids[s]; ok {
			t.eog[id] = true
			t.attrs[id] |= attrControl
		}
	}
	for _, s := range fimTexts {
		if id, ok := t.ids[s]; ok {
			t.attrs[id] |= attrControl
		}
	}
	for i, s := range t.texts {
		if t.attrs[i]&attrControl != 0 && strings.Contains(s, "unused") {
			t.attrs[i] |= attrUnused
		}
	}
	for _, s := range []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"} {
		if id, ok := t.ids[s]; ok {
			t.attrs[id] = attrUserDefined
		}
	}
	for _, id := range []int32{v.EOS, v.EOT, v.EOM} {
		if id >= 0 {
			t.eog[id] = true
		}
	}
	// gpt-oss / solar-open: <|end|> ends a message, not the generation.
	has := func(s string) bool { id, ok := t.ids[s]; return ok && t.eog[id] }
	if end, ok := t.ids["<|end|>"]; ok && t.eog[end] &&
		((has("<|return|>") && has("<|call|>")) || (has("<|calls|>") && has("<|flush|>"))) {
		delete(t.eog, end)
		t.attrs[end] = attrUserDefined
	}
	// gemma4 / paddleocr: </s> is not an end of generation there.
	if s, ok := t.ids["</s>"]; ok && t.eog[s] && has("<|tool_response>") {
		delete(t.eog, s)
		t.attrs[s] = attrNormal
	}
}

// modelAttrs applies llama.cpp's per-model lstrip/rstrip attributes, keyed
// on general.name and tokenizer.ggml.pre.
func (t *Tokenizer) modelAttrs() {
	v := t.vocab
	name := strings.ToLower(v.Name)
	set := func(s string, a tokenAttr, on bool) {
		id, ok := t.ids[s]
		if !ok {
			return
		}
		if on {
			t.attrs[id] |= a
		} else {
			t.attrs[id] &^= a
		}
	}
	switch {
	case strings.Contains(v.Pre, "jina-v2-de") || strings.Contains(v.Pre, "jina-v2-es") || strings.Contains(v.Pre, "jina-v2-code"):
		set("<mask>", attrLStrip, true)
	case strings.Contains(name, "phi-3") || strings.Contains(name, "phi3"):
		for _, id := range t.specials {
			t.attrs[id] |= attrRStrip
		}
		set("</s>", attrRStrip, true)
		for _, s := range []string{"<unk>", "<s>", "<|endoftext|>"} {
			set(s, attrRStrip, false)
		}
	case strings.Contains(name, "modern-bert"):
		set("[MASK]", attrLStrip, true)
	}
}

// Vocab returns the tokenizer's vocabulary. It must not be modified.
func (t *Tokenizer) Vocab() *Vocab { return t.vocab }

// Len is the number of tokens.
func (t *Tokenizer) Len() int { return len(t.texts) }

// BOS is the beginning-of-sequence token, or -1.
func (t *Tokenizer) BOS() int32 { return t.vocab.BOS }

// EOS is the end-of-sequence token, or -1.
func (t *Tokenizer) EOS() int32 { return t.vocab.EOS }

// AddBOS reports whether Encode with addSpecial prepends BOS.
func (t *Tokenizer) AddBOS() bool { return t.vocab.AddBOS && t.vocab.BOS >= 0 }

// IsEOG reports whether id ends generation: EOS, EOT, EOM, and the tokens
// llama.cpp recognises by text (<|eot_id|>, <|im_end|>, <|endoftext|>,
// <|end|>, <end_of_turn>, FIM pad/repo/separator tokens, ...).
func (t *Tokenizer) IsEOG(id int32) bool { return t.eog[id] }

// Lookup returns the id of the token whose text is piece.
func (t *Tokenizer) Lookup(piece string) (int32, bool) {
	id, ok := t.ids[piece]
	return id, ok
}

// Piece returns the raw vocabulary string of id ("" when out of range).
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.texts) {
		return ""
	}
	return t.vocab.Tokens[id]
}

// Encode tokenizes text. addSpecial adds BOS/EOS (and SEP for WordPiece) as
// the vocabulary asks; parseSpecial makes control tokens written in the text
// (such as "<|im_start|>") encode as themselves. User-defined tokens are
// always recognised, as in llama.cpp.
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) []int32 {
	v := t.vocab
	out := make([]int32, 0, len(text)/3+4)
	if addSpecial && v.AddBOS && v.BOS >= 0 {
		out = append(out, v.BOS)
	}
	prevSpecial := true
	for _, fr := range t.partition(text, parseSpecial) {
		if fr.id >= 0 {
			out = append(out, fr.id)
			prevSpecial = true
			continue
		}
		raw := text[fr.lo:fr.hi]
		switch t.kind {
		case kindSPM:
			out = t.encodeSPM(raw, v.AddSpacePrefix && prevSpecial, out)
		case kindBPE:
			out = t.encodeBPE(raw, out)
		case kindWPM:
			out = t.encodeWPM(raw, out)
		}
		prevSpecial = false
	}
	if addSpecial {
		if t.kind == kindWPM && v.AddSEP && v.SEP >= 0 {
			out = append(out, v.SEP)
		}
		if v.AddEOS && v.EOS >= 0 {
			out = append(out, v.EOS)
		}
	}
	return out
}
