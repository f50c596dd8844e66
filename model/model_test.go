package model_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/synth"
)

const stories = "../../shared/models/stories260K/stories260K-q8_0-f16mix.gguf"

func TestLoadStories(t *testing.T) {
	if _, err := os.Stat(stories); err != nil {
		t.Skipf("%s is absent: %v", stories, err)
	}
	m, err := model.Load(stories)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config
	want := model.Config{Arch: "llama", Dim: 64, Layers: 5, Heads: 8, KVHeads: 4, HeadDim: 8, FFN: 172, VocabSize: 512, ContextLength: 128}
	if c.Arch != want.Arch || c.Dim != want.Dim || c.Layers != want.Layers || c.Heads != want.Heads ||
		c.KVHeads != want.KVHeads || c.HeadDim != want.HeadDim || c.FFN != want.FFN || c.VocabSize != want.VocabSize ||
		c.ContextLength != want.ContextLength {
		t.Errorf("config %+v", c)
	}
	if c.Rope.NeoX || c.Rope.Dims != 8 || c.Rope.Base != 10000 || c.NormEps != 1e-5 {
		t.Errorf("rope %+v eps %g", c.Rope, c.NormEps)
	}
	// Mixed types: Q8_0 matrices, F16 ffn_down (172-wide rows), F32 norms.
	l := m.Layers[0]
	if l.Wq.Type != gguf.Q8_0 || l.Down.Type != gguf.F16 || l.AttnNorm.Type != gguf.F32 {
		t.Errorf("types %s %s %s", l.Wq.Type, l.Down.Type, l.AttnNorm.Type)
	}
	if m.Output == m.TokEmbd {
		t.Error("stories260K has its own output.weight, not tied")
	}
}

// writeModel writes a synthetic model, applying edit to its writer first.
func writeModel(t testing.TB, shape string, edit func(w *gguf.Writer)) string {
	t.Helper()
	w, err := synth.Build(context.Background(), synth.Options{Shape: shape, Type: gguf.Q8_0, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(w)
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestQwen2Shape(t *testing.T) {
	m, err := model.Load(writeModel(t, "tiny-qwen2", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.Config.Rope.NeoX || m.Layers[0].Bq == nil || m.Output != m.TokEmbd {
		t.Errorf("qwen2: neox %v, bias %v, tied %v", m.Config.Rope.NeoX, m.Layers[0].Bq != nil, m.Output == m.TokEmbd)
	}
}

func TestBadModels(t *testing.T) {
	cases := []struct {
		name string
		edit func(w *gguf.Writer)
		want string
	}{
		{"unknown arch", func(w *gguf.Writer) { w.Set("general.architecture", gguf.String("mamba")) }, `architecture "mamba" is not supported`},
		{"no arch", func(w *gguf.Writer) { w.Delete("general.architecture") }, "general.architecture is missing"},
		{"no heads", func(w *gguf.Writer) { w.Delete("llama.attention.head_count") }, "head_count"},
		{"heads not multiple of kv", func(w *gguf.Writer) { w.Set("llama.attention.head_count_kv", gguf.Uint32(3)) }, "multiple of KV heads"},
		{"wrong dim", func(w *gguf.Writer) { w.Set("llama.embedding_length", gguf.Uint32(128)) }, "has shape"},
		{"wrong ffn", func(w *gguf.Writer) { w.Set("llama.feed_forward_length", gguf.Uint32(64)) }, "has shape"},
		{"string where number", func(w *gguf.Writer) { w.Set("llama.block_count", gguf.String("two")) }, "unusable value"},
		{"layers array wrong length", func(w *gguf.Writer) { w.Set("llama.feed_forward_length", gguf.Int32s([]int32{96})) }, "unusable value"},
		{"more layers than tensors", func(w *gguf.Writer) { w.Set("llama.block_count", gguf.Uint32(3)) }, `"blk.2.attn_norm.weight" is missing`},
		{"odd rope dims", func(w *gguf.Writer) { w.Set("llama.rope.dimension_count", gguf.Uint32(7)) }, "must be even"},
		{"yarn", func(w *gguf.Writer) { w.Set("llama.rope.scaling.type", gguf.String("yarn")) }, `rope scaling "yarn" is not supported`},
		{"zero eps", func(w *gguf.Writer) { w.Set("llama.attention.layer_norm_rms_epsilon", gguf.Float32(0)) }, "epsilon"},
		{"no tokenizer", func(w *gguf.Writer) { w.Delete("tokenizer.ggml.tokens") }, "tokenizer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := model.Load(writeModel(t, "tiny", c.edit))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

func TestPerLayerWidths(t *testing.T) {
	// A layer list of FFN widths that matches the tensors loads; the
	// synthetic tiny model has FFN 96 in both layers.
	m, err := model.Load(writeModel(t, "tiny", func(w *gguf.Writer) {
		w.Set("llama.feed_forward_length", gguf.Int32s([]int32{96, 96}))
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Layers[1].FFN != 96 {
		t.Errorf("layer 1 FFN %d", m.Layers[1].FFN)
	}
}

func TestInspect(t *testing.T) {
	path := writeModel(t, "tiny", func(w *gguf.Writer) { w.Set("octet.quant.type", gguf.String("q8_0")) })
	var out bytes.Buffer
	if err := model.Inspect(&out, path, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"arch", "llama", "heads / kv heads / head dim", "4 / 2 / 16", "blk.1.ffn_down.weight", "Q8_0", "octet.quant.type", "tokens / merges"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out.String())
		}
	}
}

// FuzzFromFile: whatever bytes a model file holds, loading it either fails
// with an error or gives a model whose forward pass runs.
func FuzzFromFile(f *testing.F) {
	path := writeModel(f, "tiny", nil)
	good, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := gguf.Parse(data)
		if err != nil {
			return
		}
		m, err := model.FromFile(file)
		if err != nil {
			return
		}
		c := m.Config
		if int64(c.Dim)*int64(c.Layers)*int64(c.VocabSize) > 1<<22 {
			return // too large to run quickly
		}
		r, err := ref.Backend{}.Load(m, backends.LoadOptions{MaxContext: 4, Threads: 1})
		if err != nil {
			return
		}
		seq, _ := backends.NewSequence(r, 4)
		if _, err := seq.Forward(context.Background(), []int32{0, 1}, backends.LogitsAll); err != nil {
			t.Fatalf("forward on a loaded model: %v", err)
		}
	})
}
