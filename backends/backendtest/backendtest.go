// Package backendtest holds the test helpers the backends share: the real
// stories260K model from ../shared, small synthetic models, and runners
// closed at the end of the test.
package backendtest

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/sample"
	"github.com/octet-dev/octet/model/synth"
	"github.com/octet-dev/octet/scheduler"
)

// StoriesDir is the stories260K folder of ../shared beside the repository,
// wherever the test runs from, or of $OCTET_SHARED when it is set (a test
// binary copied to another machine).
var StoriesDir = func() string {
	if d := os.Getenv("OCTET_SHARED"); d != "" {
		return filepath.Join(d, "models", "stories260K")
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "models", "stories260K")
}()

// LoadShared loads a stories260K file, or skips the test when ../shared
// is absent.
func LoadShared(t testing.TB, name string) *model.Model {
	t.Helper()
	path := filepath.Join(StoriesDir, name)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is absent (../shared not here): %v", path, err)
	}
	return Load(t, path)
}

// Synth writes a model of the named synth shape with matrices of type typ
// into a temporary directory and returns its path.
func Synth(t testing.TB, shape string, typ gguf.TensorType, seed uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), shape+".gguf")
	if err := synth.Run(context.Background(), synth.Options{Shape: shape, Type: typ, Out: path, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	return path
}

// SynthModel writes a random model of the given shape and type (seed 7)
// and loads it.
func SynthModel(t testing.TB, shape string, typ gguf.TensorType) *model.Model {
	t.Helper()
	return Load(t, Synth(t, shape, typ, 7))
}

// Load loads a model and closes it when the test ends.
func Load(t testing.TB, path string) *model.Model {
	t.Helper()
	m, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// RandTokens is n token ids drawn from [3, vocab) (past the usual special
// tokens).
func RandTokens(rng *rand.Rand, vocab, n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(3 + rng.IntN(vocab-3))
	}
	return out
}

// CommonPrefix is the length of the longest common prefix of a and b, in bytes.
func CommonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// Argmax is the index of the largest value (the first of equals).
func Argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// LoadRunner loads m on b and closes the runner at the end of the test.
func LoadRunner(t testing.TB, b backends.Backend, m *model.Model, o backends.LoadOptions) backends.Runner {
	t.Helper()
	r, err := b.Load(m, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Greedy generates n tokens after prompt on r with greedy sampling and
// returns prompt + text.
func Greedy(t testing.TB, r backends.Runner, m *model.Model, prompt string, n int) string {
	t.Helper()
	seq, err := backends.NewSequence(r, 512)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	sb.WriteString(prompt)
	req := scheduler.Request{Prompt: m.Tok.Encode(prompt, true, false), MaxTokens: n, Sample: sample.Greedy()}
	if _, err := scheduler.Generate(context.Background(), seq, m.Tok, req, func(_ int32, s string) error {
		sb.WriteString(s)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// Spoil fills all of l's memory, to its capacity, with NaN: a Forward that
// reuses it (Batch.Reuse) and leaves a value unwritten returns a NaN there.
func Spoil(l *backends.Logits) {
	if l == nil {
		return
	}
	d := l.Data[:cap(l.Data)]
	for i := range d {
		d[i] = float32(math.NaN())
	}
}
