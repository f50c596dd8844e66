package cpu

import (
	"bytes"
	"context"
	"errors"
	"github.com/octet-dev/octet/backends/backendtest"
	"io/fs"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

var storiesDir = backendtest.StoriesDir

var (
	loadShared = backendtest.LoadShared
	synthModel = backendtest.SynthModel
	loadRunner = backendtest.LoadRunner
)

// Whole-model tests: the cpu backend against ref on the real stories260K
// model and on synthetic models of every weight type, through batches that
// mix prefill chunks and decode steps of several sequences.

type testModel struct {
	name string
	load func(t testing.TB) *model.Model
	// tol bounds rms(cpu − ref) / rms(ref) over each step's logits.
	//
	// Float weights (F32, F16, BF16): both sides compute in f32 and differ
	// only in summation order, ~1e-6 relative per product; 1e-4 leaves room
	// for growth through the layers.
	//
	// Q8_0 weights: cpu quantizes activations to int8 blocks (W8A8), ref
	// keeps them in f32. Rounding moves each activation by up to 1/254 of
	// its block's largest value: about 0.2% relative noise per product,
	// adding over ~7 products per layer. We allow 5%, several times the
	// measured 0.3–1.5% (logged), and require the same next token nearly
	// everywhere: that is what decoding sees.
	tol float64
	// mmap: the runner reads the weights where the file is mapped and
	// packs Q8_0 panels per step ($OCTET_CPU_WEIGHTS=mmap).
	mmap bool
	// kv: the KV cache's type, on both sides (ref rounds to the same f16
	// values the cpu backend stores).
	kv backends.KVType
}

func testModels() []testModel {
	syn := func(shape string, typ gguf.TensorType) func(t testing.TB) *model.Model {
		return func(t testing.TB) *model.Model { return synthModel(t, shape, typ) }
	}
	shared := func(name string) func(t testing.TB) *model.Model {
		return func(t testing.TB) *model.Model { return loadShared(t, name) }
	}
	return []testModel{
		{"stories-f32", shared("stories260K-f32.gguf"), 1e-4, false, backends.KVF32},
		{"stories-q8_0-f16mix", shared("stories260K-q8_0-f16mix.gguf"), 0.05, false, backends.KVF32},
		{"tiny-q8_0", syn("tiny", gguf.Q8_0), 0.05, false, backends.KVF32},
		{"tiny-q8_0-mmap", syn("tiny", gguf.Q8_0), 0.05, true, backends.KVF32},
		{"stories-q8_0-f16mix-mmap", shared("stories260K-q8_0-f16mix.gguf"), 0.05, true, backends.KVF32},
		{"tiny-f16", syn("tiny", gguf.F16), 1e-4, false, backends.KVF32},
		{"tiny-qwen2-bf16", syn("tiny-qwen2", gguf.BF16), 1e-4, false, backends.KVF32},
		{"tiny-qwen2-q8_0", syn("tiny-qwen2", gguf.Q8_0), 0.05, false, backends.KVF32},
		// 4 heads of 16 on one KV head: the attention tasks quantize their own
		// output (whole pairs of blocks), read by the direct kernels here.
		{"tiny-qwen2-q8_0-mmap", syn("tiny-qwen2", gguf.Q8_0), 0.05, true, backends.KVF32},
		// f16 KV caches: with f32 weights, both sides round values that
		// differ in their last f32 bits, so now and then one lands on the
		// neighbouring f16 value (2^-11 relative): measured up to 4.8e-4 in
		// a row of logits, so 2e-3 here.
		{"stories-f32-kvf16", shared("stories260K-f32.gguf"), 2e-3, false, backends.KVF16},
		{"tiny-qwen2-q8_0-kvf16", syn("tiny-qwen2", gguf.Q8_0), 0.05, false, backends.KVF16},
		// q8 KV caches: both sides round each cached row (and the query)
		// to int8 steps of 1/127 of its largest value, from inputs that
		// differ in their last f32 bits, so now and then a value lands
		// one step away.
		{"stories-f32-kvq8", shared("stories260K-f32.gguf"), 1e-2, false, backends.KVQ8},
		{"tiny-qwen2-q8_0-kvq8", syn("tiny-qwen2", gguf.Q8_0), 0.05, false, backends.KVQ8},
	}
}

// batchSteps is a schedule of batches over a shared, shuffled KV cache:
// the first step prefills a chunk of each sequence (with every logits
// mode), later steps decode one token of each running sequence, and one
// sequence joins late with a long prefill while the others decode.
func batchSteps(rng *rand.Rand, vocab, bs, kvBlocks int) [][]backends.Run {
	lens := []int{37, 5, 19, 23}
	seqs := make([][]int32, len(lens))
	for i, n := range lens {
		seqs[i] = backendtest.RandTokens(rng, vocab, n)
	}
	perm := rng.Perm(kvBlocks)
	tables := make([][]int32, len(seqs))
	next := 0
	for i, n := range lens {
		for j := 0; j < (n+bs-1)/bs; j++ {
			tables[i] = append(tables[i], int32(perm[next]))
			next++
		}
	}
	pos := make([]int, len(seqs))
	first := []int{17, 1, 9, 0} // sequence 3 joins at step 3
	modes := []backends.LogitsMode{backends.LogitsAll, backends.LogitsLast, backends.LogitsNone, backends.LogitsAll}
	var steps [][]backends.Run
	for step := 0; ; step++ {
		var runs []backends.Run
		for i, s := range seqs {
			if pos[i] >= len(s) || (i == 3 && step < 3) {
				continue
			}
			n, mode := 1, backends.LogitsLast
			switch {
			case step == 0:
				n, mode = first[i], modes[i]
			case i == 3 && step == 3:
				n, mode = 15, backends.LogitsAll
			case step%4 == 2:
				mode = backends.LogitsNone
			}
			n = min(n, len(s)-pos[i])
			runs = append(runs, backends.Run{Tokens: s[pos[i] : pos[i]+n], Pos: pos[i], Blocks: tables[i], Logits: mode})
			pos[i] += n
		}
		if len(runs) == 0 {
			return steps
		}
		steps = append(steps, runs)
	}
}

func rmsRel(got, want []float32) float64 {
	var d, w float64
	for i := range want {
		e := float64(got[i]) - float64(want[i])
		d += e * e
		w += float64(want[i]) * float64(want[i])
	}
	if w == 0 {
		return math.Sqrt(d)
	}
	return math.Sqrt(d / w)
}

// TestForwardMatchesRef runs the same batches on ref and on every variant.
func TestForwardMatchesRef(t *testing.T) {
	for _, tm := range testModels() {
		t.Run(tm.name, func(t *testing.T) {
			if tm.mmap {
				t.Setenv(EnvWeights, "mmap")
			}
			m := tm.load(t)
			const bs, kvBlocks = 4, 40
			o := backends.LoadOptions{BlockSize: bs, KVBlocks: kvBlocks, MaxContext: 64, Threads: 3, KV: tm.kv} // 3 threads on 2 cores: uneven shares, and work taken from a preempted thread
			steps := batchSteps(rand.New(rand.NewPCG(3, 4)), m.Config.VocabSize, bs, kvBlocks)
			rr := loadRunner(t, ref.Backend{}, m, o)
			var want []*backends.Logits
			for _, runs := range steps {
				l, err := rr.Forward(context.Background(), &backends.Batch{Runs: runs})
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, l)
			}
			eachVariant(t, func(t *testing.T, b *Backend) {
				r := loadRunner(t, b, m, o)
				var worst float64
				rows, agree := 0, 0
				var prev *backends.Logits // each step reuses the last one's logits, spoilt first
				for si, runs := range steps {
					backendtest.Spoil(prev)
					got, err := r.Forward(context.Background(), &backends.Batch{Runs: runs, Reuse: prev})
					if err != nil {
						t.Fatal(err)
					}
					prev = got
					w := want[si]
					if len(got.Data) != len(w.Data) || len(got.Offsets) != len(w.Offsets) {
						t.Fatalf("step %d: %d logits in %d runs, ref %d in %d", si, len(got.Data), len(got.Offsets)-1, len(w.Data), len(w.Offsets)-1)
					}
					for i := range w.Offsets {
						if got.Offsets[i] != w.Offsets[i] {
							t.Fatalf("step %d: offsets %v, ref %v", si, got.Offsets, w.Offsets)
						}
					}
					for row := 0; row < len(w.Data)/w.Vocab; row++ {
						g, e := got.Row(row), w.Row(row)
						rel := rmsRel(g, e)
						worst = max(worst, rel)
						if rel > tm.tol || math.IsNaN(rel) {
							t.Fatalf("step %d row %d: rms(cpu−ref)/rms(ref) = %.3g > %.3g", si, row, rel, tm.tol)
						}
						rows++
						if backendtest.Argmax(g) == backendtest.Argmax(e) {
							agree++
						}
					}
				}
				t.Logf("%d steps, %d logit rows: worst relative rms error %.3g (bound %.3g), top-1 agreement %d/%d", len(steps), rows, worst, tm.tol, agree, rows)
				if float64(agree) < 0.95*float64(rows) {
					t.Errorf("top-1 agreement %d/%d below 95%%", agree, rows)
				}
			})
		})
	}
}

// greedy generates n tokens after prompt and returns prompt + text.
func greedy(t testing.TB, b backends.Backend, m *model.Model, prompt string, n int) string {
	t.Helper()
	return backendtest.Greedy(t, loadRunner(t, b, m, backends.LoadOptions{MaxContext: 512, Threads: 2}), m, prompt, n)
}

// TestStoriesGreedy: on the f32 stories260K model every variant's greedy
// text is ref's, character for character, and starts with llama2.c's
// reference output, for the reference prompts. On the Q8_0 file the cpu
// backend quantizes activations (W8A8) where ref keeps them in f32, so the
// texts agree for a long stretch and then may take another equally fluent
// path: we require the first 120 characters to agree.
func TestStoriesGreedy(t *testing.T) {
	cases := []struct{ file, prompt string }{
		{"runc-greedy-once-upon-a-time-n256.txt", "Once upon a time"},
		{"runc-greedy-Zoo-n60.txt", "Zoo"},
		{"runc-greedy-empty-prompt-n200.txt", ""},
	}
	for _, file := range []string{"stories260K-f32.gguf", "stories260K-q8_0-f16mix.gguf"} {
		t.Run(file, func(t *testing.T) {
			m := loadShared(t, file)
			exact := strings.Contains(file, "f32")
			want := make([]string, len(cases))
			for i, c := range cases {
				want[i] = greedy(t, ref.Backend{}, m, c.prompt, 200)
			}
			eachVariant(t, func(t *testing.T, b *Backend) {
				for i, c := range cases {
					got := greedy(t, b, m, c.prompt, 200)
					n := backendtest.CommonPrefix(got, want[i])
					switch {
					case exact && got != want[i]:
						t.Errorf("prompt %q: cpu text differs from ref's after %d characters:\n cpu: %q\n ref: %q", c.prompt, n, got, want[i])
					case !exact && n < min(120, len(want[i])):
						t.Errorf("prompt %q: cpu text differs from ref's after %d characters:\n cpu: %q\n ref: %q", c.prompt, n, got, want[i])
					case !exact:
						t.Logf("prompt %q: same text as ref for %d of %d characters", c.prompt, n, len(want[i]))
					}
					if !exact {
						continue
					}
					llama2c, err := os.ReadFile(filepath.Join(storiesDir, "reference", c.file))
					if err != nil {
						t.Fatal(err)
					}
					if r := strings.TrimRight(string(llama2c), "\n"); !strings.HasPrefix(got, r[:min(len(r), len(got))]) {
						t.Errorf("prompt %q: cpu text differs from llama2.c's after %d characters", c.prompt, backendtest.CommonPrefix(got, r))
					}
				}
			})
		})
	}
}

// A KV cache larger than the memory left is refused at load with a clear
// error, before any of it is written (writing it would wake the OOM killer).
func TestLoadRefusesCacheBeyondMemory(t *testing.T) {
	m := synthModel(t, "tiny", gguf.Q8_0)
	eachVariant(t, func(t *testing.T, b *Backend) {
		// 2 layers × K and V × 16 positions × 32 floats: 8 KiB a block, 512 GiB in all.
		r, err := b.Load(m, backends.LoadOptions{BlockSize: 16, KVBlocks: 1 << 26, MaxContext: 256, Threads: 2})
		if err == nil {
			r.Close()
			t.Fatal("a 512 GiB KV cache loaded")
		}
		if !strings.Contains(err.Error(), "does not fit in the") {
			t.Errorf("error %q does not say the cache does not fit", err)
		}
		t.Log(err)
	})
}

func TestForwardRejectsBadBatches(t *testing.T) {
	m := synthModel(t, "tiny", gguf.Q8_0)
	eachVariant(t, func(t *testing.T, b *Backend) {
		r := loadRunner(t, b, m, backends.LoadOptions{BlockSize: 4, KVBlocks: 4})
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
			// Two runs of one sequence in one step: the second reads the
			// position the first writes.
			"same sequence twice": {Runs: []backends.Run{{Tokens: []int32{1}, Pos: 1, Blocks: []int32{0}}, {Tokens: []int32{2}, Pos: 2, Blocks: []int32{0}}}},
			"shared write":        {Runs: []backends.Run{{Tokens: []int32{1}, Pos: 4, Blocks: []int32{0, 2}}, {Tokens: []int32{2}, Pos: 4, Blocks: []int32{1, 2}}}},
		}
		for name, bt := range cases {
			if _, err := r.Forward(context.Background(), &bt); !errors.Is(err, backends.ErrBadBatch) {
				t.Errorf("%s: error %v, want ErrBadBatch", name, err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		one := &backends.Batch{Runs: []backends.Run{{Tokens: []int32{1}, Blocks: []int32{0}}}}
		if _, err := r.Forward(ctx, one); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled context: error %v", err)
		}
		if _, err := r.Forward(context.Background(), one); err != nil {
			t.Errorf("after a refused batch: %v", err)
		}
		r.Close()
		if _, err := r.Forward(context.Background(), one); !errors.Is(err, ErrClosed) {
			t.Errorf("closed runner: error %v, want ErrClosed", err)
		}
		if err := r.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// TestCancelMidStep: a context cancelled while a long prefill runs stops
// the step at a layer boundary with the context's error, and the runner
// keeps working.
func TestCancelMidStep(t *testing.T) {
	m := synthModel(t, "tiny", gguf.Q8_0)
	eachVariant(t, func(t *testing.T, b *Backend) {
		r := loadRunner(t, b, m, backends.LoadOptions{BlockSize: 16, MaxContext: 4096})
		blocks := make([]int32, r.KVBlocks())
		for i := range blocks {
			blocks[i] = int32(i)
		}
		long := backendtest.RandTokens(rand.New(rand.NewPCG(1, 1)), m.Config.VocabSize, 4096)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		// Already cancelled: refused before the step starts.
		if _, err := r.Forward(ctx, &backends.Batch{Runs: []backends.Run{{Tokens: long, Blocks: blocks}}}); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		ctx, cancel = context.WithCancel(context.Background())
		h := r.(*runner).nh
		h.cancel() // a cancellation that lands before the step is cleared
		go cancel()
		_, err := r.Forward(ctx, &backends.Batch{Runs: []backends.Run{{Tokens: long, Blocks: blocks}}})
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want nil or context.Canceled", err)
		}
		if _, err := r.Forward(context.Background(), &backends.Batch{Runs: []backends.Run{{Tokens: long[:3], Blocks: blocks}}}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFallback: a library that is missing or does not load is passed over
// for the next variant, with the reason; with none, Auto falls back to ref
// and logs why.
func TestFallback(t *testing.T) {
	vs := Variants()
	if len(vs) < 2 {
		t.Skipf("this CPU runs only %v", vs)
	}
	good, err := fs.ReadFile(embedded, "native/lib/"+libName(vs[1]))
	if err != nil {
		skipOrFail(t, "the libraries are not embedded: %v", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, libName(vs[0])), []byte("\x7fELF not really"), 0o644)
	os.WriteFile(filepath.Join(dir, libName(vs[1])), good, 0o644)
	t.Setenv(EnvDir, dir)
	b, err := Open("")
	if err != nil {
		t.Fatal(err)
	}
	if b.Variant() != vs[1] || !strings.Contains(b.Reason, "passed over "+vs[0]) {
		t.Errorf("got %s (%s), want %s after passing over %s", b.Variant(), b.Reason, vs[1], vs[0])
	}

	t.Setenv(EnvDir, t.TempDir()) // no library at all
	if _, err := Open(""); !errors.Is(err, backends.ErrNoDevice) {
		t.Fatalf("Open with no library: %v, want ErrNoDevice", err)
	}
	var log bytes.Buffer
	b2, err := backends.Auto([]string{"auto"}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if b2.Name() != "ref" || !strings.Contains(log.String(), "backend=cpu") || !strings.Contains(log.String(), "no kernel library loads") {
		t.Errorf("Auto chose %s; log:\n%s", b2.Name(), log.String())
	}
}

// TestRegistered: "cpu" is registered above ref, so Auto prefers it.
func TestRegistered(t *testing.T) {
	names := backends.Names()
	ci, ri := slices.Index(names, "cpu"), slices.Index(names, "ref")
	if ci < 0 || ri < 0 || ci > ri {
		t.Fatalf("backends %v: want cpu before ref", names)
	}
	if _, err := Open(""); err != nil {
		skipOrFail(t, "%v", err)
	}
	b, err := backends.Auto(nil, nil)
	if err != nil || !strings.HasPrefix(b.Name(), "cpu-") {
		t.Fatalf("Auto: %v, %v", b, err)
	}
	// kv_type = "auto": f16 here, f32 on ref (which keeps f16 values as f32).
	if kv, rkv := backends.PreferredKV(b), backends.PreferredKV(ref.Backend{}); kv != backends.KVF16 || rkv != backends.KVF32 {
		t.Errorf("preferred KV types: cpu %s, ref %s; want f16, f32", kv, rkv)
	}
}
