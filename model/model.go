package model

import (
	"fmt"

	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/tokenizer"
)

// Model is a loaded llama-family model: its hyperparameters, tokenizer and
// views of its weight tensors in the memory-mapped file.
type Model struct {
	Path   string
	File   *gguf.File
	Config Config
	Tok    *tokenizer.Tokenizer

	TokEmbd    *Tensor // Dim × VocabSize (one row per token)
	OutputNorm *Tensor
	Output     *Tensor // Dim × VocabSize; the embedding when tied
	// RopeFreqs holds llama3-style per-frequency divisors (Rope.Dims/2), or nil.
	RopeFreqs []float32
	Layers    []Layer
}

// Layer is one transformer block. Bq, Bk and Bv are nil unless the
// architecture has QKV bias (qwen2).
type Layer struct {
	Heads, KVHeads, FFN int

	AttnNorm   *Tensor
	Wq, Wk, Wv *Tensor
	Bq, Bk, Bv *Tensor
	Wo         *Tensor
	FFNNorm    *Tensor
	Gate, Up   *Tensor
	Down       *Tensor
}

// Load opens a GGUF model file and checks that it describes a model octet
// can run: a supported architecture, every tensor present with the shape the
// hyperparameters imply, and a tokenizer.
func Load(path string) (*Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := FromFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Path = path
	return m, nil
}

// FromFile builds a Model over an open GGUF file; the Model takes ownership
// of f and closes it in Close.
func FromFile(f *gguf.File) (*Model, error) {
	cfg, err := ReadConfig(f)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, err
	}
	emb, ok := f.Tensor("token_embd.weight")
	if !ok || len(emb.Dims) != 2 {
		return nil, fmt.Errorf("model: token_embd.weight is missing or not a matrix")
	}
	cfg.VocabSize = int(emb.Dims[1])
	if tok.Len() > cfg.VocabSize {
		return nil, fmt.Errorf("model: tokenizer has %d tokens but token_embd.weight only %d rows", tok.Len(), cfg.VocabSize)
	}
	m := &Model{File: f, Config: cfg, Tok: tok}
	if err := m.bindTensors(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Model) bindTensors() error {
	c := &m.Config
	f := m.File
	var err error
	view := func(name string, cols, rows int) *Tensor {
		if err != nil {
			return nil
		}
		var t *Tensor
		t, err = tensorView(f, name, cols, rows)
		return t
	}
	optional := func(name string, cols, rows int) *Tensor {
		if _, ok := f.Tensor(name); !ok || err != nil {
			return nil
		}
		return view(name, cols, rows)
	}
	m.TokEmbd = view("token_embd.weight", c.Dim, c.VocabSize)
	m.OutputNorm = view("output_norm.weight", c.Dim, 0)
	m.Output = optional("output.weight", c.Dim, c.VocabSize)
	if m.Output == nil {
		m.Output = m.TokEmbd // tied embeddings
	}
	if rf := optional("rope_freqs.weight", c.Rope.Dims/2, 0); rf != nil {
		m.RopeFreqs = rf.Float32s()
	}
	m.Layers = make([]Layer, c.Layers)
	for i := range m.Layers {
		l := &m.Layers[i]
		l.Heads, l.KVHeads, l.FFN = c.LayerHeads[i], c.LayerKVHeads[i], c.LayerFFN[i]
		q, kv := l.Heads*c.HeadDim, l.KVHeads*c.HeadDim
		p := fmt.Sprintf("blk.%d.", i)
		l.AttnNorm = view(p+"attn_norm.weight", c.Dim, 0)
		l.Wq = view(p+"attn_q.weight", c.Dim, q)
		l.Wk = view(p+"attn_k.weight", c.Dim, kv)
		l.Wv = view(p+"attn_v.weight", c.Dim, kv)
		l.Bq = optional(p+"attn_q.bias", q, 0)
		l.Bk = optional(p+"attn_k.bias", kv, 0)
		l.Bv = optional(p+"attn_v.bias", kv, 0)
		l.Wo = view(p+"attn_output.weight", q, c.Dim)
		l.FFNNorm = view(p+"ffn_norm.weight", c.Dim, 0)
		l.Gate = view(p+"ffn_gate.weight", c.Dim, l.FFN)
		l.Up = view(p+"ffn_up.weight", c.Dim, l.FFN)
		l.Down = view(p+"ffn_down.weight", l.FFN, c.Dim)
	}
	return err
}

// Close releases the model's file mapping; its tensors must not be used after.
func (m *Model) Close() error { return m.File.Close() }

// WeightBytes is the size of all weight tensors: the bytes a decode step reads.
func (m *Model) WeightBytes() int64 {
	var n int64
	for i := range m.File.Tensors {
		n += int64(m.File.Tensors[i].Size)
	}
	return n
}

// Matrices lists every weight matrix (the ones matrix products read), the
// output projection included once even when tied.
func (m *Model) Matrices() []*Tensor {
	var out []*Tensor
	for i := range m.Layers {
		l := &m.Layers[i]
		out = append(out, l.Wq, l.Wk, l.Wv, l.Wo, l.Gate, l.Up, l.Down)
	}
	return append(out, m.Output)
}
