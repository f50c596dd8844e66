package ref

import (
	"context"
	"github.com/octet-dev/octet/backends/backendtest"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

var storiesDir = backendtest.StoriesDir

var (
	loadShared = backendtest.LoadShared
	synthModel = backendtest.SynthModel
	loadRunner = backendtest.LoadRunner
)

// greedy generates n tokens after prompt and returns prompt + text.
func greedy(t testing.TB, m *model.Model, prompt string, n int) string {
	t.Helper()
	return backendtest.Greedy(t, loadRunner(t, Backend{}, m, backends.LoadOptions{MaxContext: 512}), m, prompt, n)
}

// TestStoriesGreedyMatchesLlama2c: greedy decoding of the f32 model
// reproduces llama2.c's output (the reference files) — the whole of each
// file, which is at least 160 characters and up to 566.
func TestStoriesGreedyMatchesLlama2c(t *testing.T) {
	m := loadShared(t, "stories260K-f32.gguf")
	cases := []struct{ file, prompt string }{
		{"runc-greedy-once-upon-a-time-n256.txt", "Once upon a time"},
		{"runc-greedy-Zoo-n60.txt", "Zoo"},
		{"runc-greedy-empty-prompt-n200.txt", ""},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(storiesDir, "reference", c.file))
			if err != nil {
				t.Skip(err)
			}
			ref := strings.TrimRight(string(want), "\n")
			// llama2.c's step count includes the prompt; generate enough.
			got := greedy(t, m, c.prompt, 256)
			if !strings.HasPrefix(got, ref) {
				t.Errorf("greedy text differs from llama2.c after %d of %d characters:\n got: %q\nwant: %q",
					backendtest.CommonPrefix(got, ref), len(ref), clip(got, len(ref)), ref)
			}
		})
	}
}

func clip(s string, n int) string { return s[:min(n, len(s))] }

// TestStoriesQ8Fluent: the Q8_0 file (with F16 ffn_down) predicts the f32
// model's greedy text almost as the f32 model does: its argmax agrees on
// ≥ 90% of the next tokens of the f32 model's own continuation.
func TestStoriesQ8Fluent(t *testing.T) {
	f32 := loadShared(t, "stories260K-f32.gguf")
	q8 := loadShared(t, "stories260K-q8_0-f16mix.gguf")
	text := greedy(t, f32, "Once upon a time", 200)
	ids := f32.Tok.Encode(text, true, false)
	lf := allLogits(t, f32, ids)
	lq := allLogits(t, q8, ids)
	agree := 0
	var maxDiff float64
	for i := 0; i < len(ids)-1; i++ {
		a, b := lf[i*f32.Config.VocabSize:(i+1)*f32.Config.VocabSize], lq[i*q8.Config.VocabSize:(i+1)*q8.Config.VocabSize]
		if backendtest.Argmax(a) == backendtest.Argmax(b) {
			agree++
		}
		for j := range a {
			maxDiff = math.Max(maxDiff, math.Abs(float64(a[j]-b[j])))
		}
	}
	rate := float64(agree) / float64(len(ids)-1)
	t.Logf("q8_0 vs f32: top-1 agreement %.3f over %d tokens, max |Δlogit| %.3f", rate, len(ids)-1, maxDiff)
	if rate < 0.9 {
		t.Errorf("q8_0 top-1 agreement %.3f < 0.9", rate)
	}
	q8text := greedy(t, q8, "Once upon a time", 100)
	t.Logf("q8_0 greedy: %q", q8text)
	if n := backendtest.CommonPrefix(q8text, text); n < 40 {
		t.Errorf("q8_0 greedy text diverges from f32 after %d characters: %q", n, q8text)
	}
}

func allLogits(t testing.TB, m *model.Model, ids []int32) []float32 {
	r := loadRunner(t, Backend{}, m, backends.LoadOptions{MaxContext: 512})
	seq, err := backends.NewSequence(r, 512)
	if err != nil {
		t.Fatal(err)
	}
	l, err := seq.Forward(context.Background(), ids, backends.LogitsAll)
	if err != nil {
		t.Fatal(err)
	}
	return l.Data
}

// TestBatchEqualsSingle: sequences run together in one batch, at different
// positions, with shuffled non-contiguous block tables, give bit-identical
// logits to each sequence run alone, token by token.
func TestBatchEqualsSingle(t *testing.T) {
	for _, tc := range []struct {
		shape string
		typ   gguf.TensorType
	}{{"tiny", gguf.Q8_0}, {"tiny", gguf.F16}, {"tiny-qwen2", gguf.BF16}} {
		t.Run(tc.shape+"-"+tc.typ.String(), func(t *testing.T) {
			m := synthModel(t, tc.shape, tc.typ)
			testBatchEqualsSingle(t, m)
		})
	}
	t.Run("stories", func(t *testing.T) { testBatchEqualsSingle(t, loadShared(t, "stories260K-q8_0-f16mix.gguf")) })
}

func testBatchEqualsSingle(t *testing.T, m *model.Model) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	const bs = 4
	vocab := m.Config.VocabSize
	seqs := [][]int32{backendtest.RandTokens(rng, vocab, 13), backendtest.RandTokens(rng, vocab, 5), backendtest.RandTokens(rng, vocab, 9)}

	// Alone: one token per step, logits of every step.
	alone := make([][]float32, len(seqs))
	for i, s := range seqs {
		r := loadRunner(t, Backend{}, m, backends.LoadOptions{BlockSize: bs, MaxContext: 64})
		seq, _ := backends.NewSequence(r, 64)
		for _, tok := range s {
			l, err := seq.Forward(ctx, []int32{tok}, backends.LogitsLast)
			if err != nil {
				t.Fatal(err)
			}
			alone[i] = append(alone[i], l.Data...)
		}
	}

	// Together: a shared cache with shuffled blocks; each step prefills a
	// chunk of one sequence while the others decode.
	r := loadRunner(t, Backend{}, m, backends.LoadOptions{BlockSize: bs, KVBlocks: 16})
	perm := rng.Perm(16)
	tables := [][]int32{}
	for i := range seqs {
		var tb []int32
		for j := 0; j < 5; j++ {
			tb = append(tb, int32(perm[i*5+j]))
		}
		tables = append(tables, tb)
	}
	pos := make([]int, len(seqs))
	chunk := []int{5, 1, 3}
	for step := 0; ; step++ {
		var b backends.Batch
		var who []int
		for i, s := range seqs {
			if pos[i] >= len(s) {
				continue
			}
			n := 1
			if step == 0 {
				n = chunk[i]
			}
			n = min(n, len(s)-pos[i])
			b.Runs = append(b.Runs, backends.Run{Tokens: s[pos[i] : pos[i]+n], Pos: pos[i], Blocks: tables[i], Logits: backends.LogitsAll})
			who = append(who, i)
		}
		if len(who) == 0 {
			break
		}
		l, err := r.Forward(ctx, &b)
		if err != nil {
			t.Fatal(err)
		}
		for ri, i := range who {
			got := l.Run(ri)
			n := len(b.Runs[ri].Tokens)
			want := alone[i][pos[i]*vocab : (pos[i]+n)*vocab]
			for j := range got {
				if got[j] != want[j] {
					t.Fatalf("seq %d pos %d: batched logit %d = %g, alone %g", i, pos[i]+j/vocab, j%vocab, got[j], want[j])
				}
			}
			pos[i] += n
		}
	}
}

func TestForwardRejectsBadBatches(t *testing.T) {
	m := synthModel(t, "tiny", gguf.Q8_0)
	r := loadRunner(t, Backend{}, m, backends.LoadOptions{BlockSize: 4, KVBlocks: 4})
	v := int32(m.Config.VocabSize)
	cases := map[string]backends.Batch{
		"empty":          {},
		"no tokens":      {Runs: []backends.Run{{Blocks: []int32{0}}}},
		"token too big":  {Runs: []backends.Run{{Tokens: []int32{v}, Blocks: []int32{0}}}},
		"negative token": {Runs: []backends.Run{{Tokens: []int32{-1}, Blocks: []int32{0}}}},
		"past blocks":    {Runs: []backends.Run{{Tokens: []int32{1, 2}, Pos: 3, Blocks: []int32{0}}}},
		"bad block":      {Runs: []backends.Run{{Tokens: []int32{1}, Blocks: []int32{4}}}},
		"negative pos":   {Runs: []backends.Run{{Tokens: []int32{1}, Pos: -1, Blocks: []int32{0}}}},
		"logits mode":    {Runs: []backends.Run{{Tokens: []int32{1}, Blocks: []int32{0}, Logits: 9}}},
	}
	for name, b := range cases {
		if _, err := r.Forward(context.Background(), &b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Forward(ctx, &backends.Batch{Runs: []backends.Run{{Tokens: []int32{1}, Blocks: []int32{0}}}}); err == nil {
		t.Error("cancelled context: no error")
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, shape := range []string{"tiny", "smollm-135m"} {
		b.Run(shape, func(b *testing.B) {
			if shape != "tiny" && testing.Short() {
				b.Skip("short")
			}
			m := synthModel(b, shape, gguf.Q8_0)
			r := loadRunner(b, Backend{}, m, backends.LoadOptions{MaxContext: 256})
			seq, _ := backends.NewSequence(r, 256)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if seq.Pos() >= seq.Cap() {
					seq.Reset()
				}
				if _, err := seq.Forward(ctx, []int32{5}, backends.LogitsLast); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
			b.ReportMetric(float64(m.WeightBytes())*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}
