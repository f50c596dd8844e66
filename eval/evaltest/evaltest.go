// Package evaltest makes small real GGUF models for the tests of eval,
// quant and pruning: a copy of a model file with some tensors rewritten, and
// models written from scratch (backendtest synthesizes and loads them).
package evaltest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/backendtest"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// Rewrite copies the model at src to a new temporary file, passing every
// tensor's values to edit (rows of cols, ggml order) before it is written
// back in its own type, and returns the new file's path. edit may change
// the values in place.
func Rewrite(t testing.TB, src string, edit func(name string, cols int, values []float32)) string {
	t.Helper()
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := gguf.NewWriter()
	w.Alignment = f.Alignment
	for _, kv := range f.KV {
		w.Set(kv.Key, kv.Value)
	}
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		vals := make([]float32, ti.Elements())
		gguf.Dequantize(ti.Type, f.TensorData(ti), vals)
		edit(ti.Name, int(ti.Dims[0]), vals)
		if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, gguf.Quantize(ti.Type, nil, vals)); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "rewritten.gguf")
	if err := w.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	return out
}

// WriteLoad writes w to a temporary file and loads it (model.Load checks
// every tensor's shape against the metadata).
func WriteLoad(t testing.TB, w *gguf.Writer) *model.Model {
	t.Helper()
	out := filepath.Join(t.TempDir(), "written.gguf")
	if err := w.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	return backendtest.Load(t, out)
}

// Logits runs tokens through m from position 0 on the reference backend
// and returns the logits of every position.
func Logits(t testing.TB, m *model.Model, tokens []int32) *backends.Logits {
	t.Helper()
	r, err := ref.Backend{}.Load(m, backends.LoadOptions{MaxContext: len(tokens)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seq, err := backends.NewSequence(r, len(tokens))
	if err != nil {
		t.Fatal(err)
	}
	l, err := seq.Forward(context.Background(), tokens, backends.LogitsAll)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
