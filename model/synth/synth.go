// Package synth writes GGUF models with random weights at the shapes of
// real ones, for speed work: a decode step's cost depends on the shapes and
// types of the weights, not on their values.
//
// Weights are drawn from a normal distribution (σ = 0.02, the usual
// initialisation scale) by a PCG generator seeded from the tensor's name and
// the seed, so the same command writes the same bytes. Norm weights are 1.
// The tokenizer is a real one: the vocabulary of a GGUF file given with
// Options.VocabFrom (the Llama-2 vocab in ../shared, say), or a built-in
// SentencePiece vocabulary of byte tokens, ASCII pieces and unused slots,
// which tokenizes any text through byte fallback.
package synth

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/tokenizer"
)

// Shape is the architecture of a real model.
type Shape struct {
	Name     string
	Arch     string
	Dim      int
	Layers   int
	Heads    int
	KVHeads  int
	FFN      int
	Context  int
	RopeBase float32
	Tied     bool // output projection shares the embedding
	QKVBias  bool
	Vocab    int // vocabulary of the built-in tokenizer
}

// Shapes are the models synth knows, by name.
var Shapes = map[string]Shape{
	"tinyllama-1.1b": {Name: "tinyllama-1.1b", Arch: "llama", Dim: 2048, Layers: 22, Heads: 32, KVHeads: 4, FFN: 5632, Context: 2048, RopeBase: 10000, Vocab: 32000},
	"smollm-135m":    {Name: "smollm-135m", Arch: "llama", Dim: 576, Layers: 30, Heads: 9, KVHeads: 3, FFN: 1536, Context: 2048, RopeBase: 10000, Tied: true, Vocab: 32000},
	"smollm-360m":    {Name: "smollm-360m", Arch: "llama", Dim: 960, Layers: 32, Heads: 15, KVHeads: 5, FFN: 2560, Context: 2048, RopeBase: 10000, Tied: true, Vocab: 32000},
	"qwen2-0.5b":     {Name: "qwen2-0.5b", Arch: "qwen2", Dim: 896, Layers: 24, Heads: 14, KVHeads: 2, FFN: 4864, Context: 4096, RopeBase: 1000000, Tied: true, QKVBias: true, Vocab: 32000},
	"tiny":           {Name: "tiny", Arch: "llama", Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 96, Context: 256, RopeBase: 10000, Vocab: 320},
	"tiny-qwen2":     {Name: "tiny-qwen2", Arch: "qwen2", Dim: 64, Layers: 2, Heads: 4, KVHeads: 1, FFN: 128, Context: 256, RopeBase: 1000000, Tied: true, QKVBias: true, Vocab: 320},
}

// ShapeNames lists the known shapes, sorted.
func ShapeNames() []string {
	var names []string
	for n := range Shapes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Options say what to write.
type Options struct {
	Shape     string
	Type      gguf.TensorType // type of the weight matrices: Q8_0, F16, BF16 or F32
	Out       string
	Seed      uint64
	VocabFrom string // a GGUF file whose tokenizer to use; "" for the built-in one
	// Progress, if set, is called with the bytes of tensor data written so far and the total.
	Progress func(done, total int64)
}

// Run writes the model described by o to o.Out.
func Run(ctx context.Context, o Options) error {
	w, err := Build(ctx, o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return w.WriteFile(o.Out)
}

// Build prepares a writer for the model described by o; nothing is drawn
// until the writer writes.
func Build(ctx context.Context, o Options) (*gguf.Writer, error) {
	sh, ok := Shapes[o.Shape]
	if !ok {
		return nil, fmt.Errorf("synth: unknown shape %q (have %s)", o.Shape, strings.Join(ShapeNames(), ", "))
	}
	if !o.Type.Supported() {
		return nil, fmt.Errorf("synth: unsupported type %s", o.Type)
	}
	voc, err := vocab(o.VocabFrom, sh.Vocab)
	if err != nil {
		return nil, err
	}
	if o.Type == gguf.Q8_0 && (sh.Dim%gguf.QK8_0 != 0 || sh.FFN%gguf.QK8_0 != 0) {
		return nil, fmt.Errorf("synth: shape %s has widths that are not multiples of %d", sh.Name, gguf.QK8_0)
	}
	w := gguf.NewWriter()
	a := sh.Arch + "."
	w.Set("general.architecture", gguf.String(sh.Arch))
	w.Set("general.name", gguf.String("synth-"+sh.Name))
	w.Set("general.file_type", gguf.Uint32(fileType(o.Type)))
	w.Set("general.quantization_version", gguf.Uint32(2))
	w.Set(a+"context_length", gguf.Uint32(uint32(sh.Context)))
	w.Set(a+"embedding_length", gguf.Uint32(uint32(sh.Dim)))
	w.Set(a+"block_count", gguf.Uint32(uint32(sh.Layers)))
	w.Set(a+"feed_forward_length", gguf.Uint32(uint32(sh.FFN)))
	w.Set(a+"attention.head_count", gguf.Uint32(uint32(sh.Heads)))
	w.Set(a+"attention.head_count_kv", gguf.Uint32(uint32(sh.KVHeads)))
	w.Set(a+"rope.dimension_count", gguf.Uint32(uint32(sh.Dim/sh.Heads)))
	w.Set(a+"rope.freq_base", gguf.Float32(sh.RopeBase))
	w.Set(a+"attention.layer_norm_rms_epsilon", gguf.Float32(1e-5))
	w.Set("octet.synth.shape", gguf.String(sh.Name))
	w.Set("octet.synth.seed", gguf.Uint64(o.Seed))
	voc.WriteGGUF(w)

	g := &gen{ctx: ctx, seed: o.Seed, progress: o.Progress}
	nv := len(voc.Tokens)
	hd := sh.Dim / sh.Heads
	g.matrix(w, "token_embd.weight", o.Type, sh.Dim, nv)
	g.norm(w, "output_norm.weight", sh.Dim)
	if !sh.Tied {
		g.matrix(w, "output.weight", o.Type, sh.Dim, nv)
	}
	for l := 0; l < sh.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		g.norm(w, p+"attn_norm.weight", sh.Dim)
		g.matrix(w, p+"attn_q.weight", o.Type, sh.Dim, sh.Heads*hd)
		g.matrix(w, p+"attn_k.weight", o.Type, sh.Dim, sh.KVHeads*hd)
		g.matrix(w, p+"attn_v.weight", o.Type, sh.Dim, sh.KVHeads*hd)
		if sh.QKVBias {
			g.matrix(w, p+"attn_q.bias", gguf.F32, sh.Heads*hd, 1)
			g.matrix(w, p+"attn_k.bias", gguf.F32, sh.KVHeads*hd, 1)
			g.matrix(w, p+"attn_v.bias", gguf.F32, sh.KVHeads*hd, 1)
		}
		g.matrix(w, p+"attn_output.weight", o.Type, sh.Heads*hd, sh.Dim)
		g.norm(w, p+"ffn_norm.weight", sh.Dim)
		g.matrix(w, p+"ffn_gate.weight", o.Type, sh.Dim, sh.FFN)
		g.matrix(w, p+"ffn_up.weight", o.Type, sh.Dim, sh.FFN)
		g.matrix(w, p+"ffn_down.weight", o.Type, sh.FFN, sh.Dim)
	}
	return w, g.err
}

func fileType(t gguf.TensorType) uint32 {
	switch t {
	case gguf.F32:
		return 0
	case gguf.F16:
		return 1
	case gguf.Q8_0:
		return 7
	case gguf.BF16:
		return 32
	}
	return 0
}

// gen adds tensors whose data is drawn when the file is written.
type gen struct {
	ctx      context.Context
	seed     uint64
	err      error
	done     int64
	total    int64
	progress func(done, total int64)
}

func (g *gen) rng(name string) *rand.Rand {
	h := fnv.New64a()
	io.WriteString(h, name)
	return rand.New(rand.NewPCG(g.seed, h.Sum64()))
}

func (g *gen) add(w *gguf.Writer, name string, t gguf.TensorType, cols, rows int, fill func(rng *rand.Rand, row []float32)) {
	if g.err != nil {
		return
	}
	dims := []uint64{uint64(cols)}
	if rows > 1 {
		dims = append(dims, uint64(rows))
	}
	g.total += int64(t.RowBytes(cols)) * int64(rows)
	g.err = w.AddTensorFunc(name, t, dims, func(out io.Writer) error {
		rng := g.rng(name)
		row := make([]float32, cols)
		var buf []byte
		for r := 0; r < rows; r++ {
			if err := g.ctx.Err(); err != nil {
				return err
			}
			fill(rng, row)
			buf = gguf.Quantize(t, buf[:0], row)
			if _, err := out.Write(buf); err != nil {
				return err
			}
			g.done += int64(len(buf))
			if g.progress != nil && r%64 == 0 {
				g.progress(g.done, g.total)
			}
		}
		if g.progress != nil {
			g.progress(g.done, g.total)
		}
		return nil
	})
}

func (g *gen) matrix(w *gguf.Writer, name string, t gguf.TensorType, cols, rows int) {
	g.add(w, name, t, cols, rows, func(rng *rand.Rand, row []float32) {
		for i := range row {
			row[i] = float32(rng.NormFloat64() * 0.02)
		}
	})
}

func (g *gen) norm(w *gguf.Writer, name string, n int) {
	g.add(w, name, gguf.F32, n, 1, func(_ *rand.Rand, row []float32) {
		for i := range row {
			row[i] = 1
		}
	})
}

// vocab reads the tokenizer of path, or builds the built-in one of n tokens.
func vocab(path string, n int) (*tokenizer.Vocab, error) {
	if path == "" {
		return BuiltinVocab(n), nil
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("synth: vocabulary: %w", err)
	}
	defer f.Close()
	v, err := tokenizer.VocabFromGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("synth: vocabulary of %s: %w", path, err)
	}
	return v, nil
}

// BuiltinVocab is a SentencePiece vocabulary of n tokens (at least 400):
// <unk>, <s>, </s>, the 256 byte tokens, the printable ASCII characters
// alone and after "▁", and unused slots up to n.
func BuiltinVocab(n int) *tokenizer.Vocab {
	n = max(n, 400)
	v := &tokenizer.Vocab{
		Model: "llama", Pre: "default",
		BOS: 1, EOS: 2, UNK: 0, EOT: -1, EOM: -1, PAD: -1, SEP: -1, CLS: -1, MASK: -1,
		AddBOS: true, AddSpacePrefix: true,
	}
	add := func(s string, score float32, t tokenizer.TokenType) {
		v.Tokens = append(v.Tokens, s)
		v.Scores = append(v.Scores, score)
		v.Types = append(v.Types, t)
	}
	add("<unk>", 0, tokenizer.TypeUnknown)
	add("<s>", 0, tokenizer.TypeControl)
	add("</s>", 0, tokenizer.TypeControl)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), 0, tokenizer.TypeByte)
	}
	for c := byte('!'); c <= '~'; c++ {
		add("▁"+string(c), -1, tokenizer.TypeNormal)
		add(string(c), -2, tokenizer.TypeNormal)
	}
	add("▁", -3, tokenizer.TypeNormal)
	for i := len(v.Tokens); i < n; i++ {
		add(fmt.Sprintf("<unused%d>", i), 0, tokenizer.TypeUnused)
	}
	return v
}
