//go:build linux

package cuda

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/backendtest"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// The benchmarks run on GPU 0 and skip without one. OCTET_BENCH_MODELS
// names GGUF files (comma-separated) to run; by default a small synthetic
// model. Speeds are reported as tokens/s, weight bytes streamed per second,
// and as a fraction of the HBM copy bandwidth measured in the same process
// (BenchmarkCopyBandwidth): decode reads every weight once per step, so
// weight bytes ÷ copy bandwidth is its floor.

var copyBW struct {
	once sync.Once
	bps  float64
	err  error
}

// hbmBandwidth measures device-to-device copy bandwidth once per process.
func hbmBandwidth(b *Backend) (float64, error) {
	copyBW.once.Do(func() { copyBW.bps, copyBW.err = b.MemoryBandwidth() })
	return copyBW.bps, copyBW.err
}

// OCTET_CUDA_GEMV_BLOCKS sets gemv_q8_1's blocks per SM, so that one
// binary compares grids.
func init() {
	gemvBlocksPerSM = envInt("OCTET_CUDA_GEMV_BLOCKS", gemvBlocksPerSM)
	// OCTET_CUDA_GEMM_TOKENS=16 takes gemm_q8's 16-token tiles.
	if envInt("OCTET_CUDA_GEMM_TOKENS", 32) == 16 {
		gemmTokens = 16
	}
}

// benchKV is the KV cache the benchmarks load: OCTET_BENCH_KV (f32, the
// default, or f16).
func benchKV(b *testing.B) backends.KVType {
	v := os.Getenv("OCTET_BENCH_KV")
	if v == "" {
		return backends.KVF32
	}
	kv, err := backends.ParseKVType(v)
	if err != nil {
		b.Fatalf("OCTET_BENCH_KV: %v", err)
	}
	return kv
}

func BenchmarkCopyBandwidth(b *testing.B) {
	bk := openOrSkip(b)
	var bps float64
	for i := 0; i < b.N; i++ {
		var err error
		if bps, err = bk.MemoryBandwidth(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(bps/1e9, "GB/s")
}

func benchModels(b *testing.B) []*model.Model {
	env := os.Getenv("OCTET_BENCH_MODELS")
	if env == "" {
		return []*model.Model{backendtest.SynthModel(b, "tiny", gguf.Q8_0)}
	}
	var ms []*model.Model
	for _, p := range strings.Split(env, ",") {
		ms = append(ms, backendtest.Load(b, p))
	}
	return ms
}

func modelName(m *model.Model) string {
	if m.Path == "" {
		return m.Config.Name
	}
	return strings.TrimSuffix(filepath.Base(m.Path), ".gguf")
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkDecode: one step of B sequences, one token each, after a
// 128-token prompt per sequence (decodeSteps).
func BenchmarkDecode(b *testing.B) {
	bk := openOrSkip(b)
	bw, err := hbmBandwidth(bk)
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range benchModels(b) {
		for _, batch := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/batch=%d", modelName(m), batch), func(b *testing.B) {
				step := decodeSteps(b, bk, m, batch)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					step()
				}
				steps := float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(steps*float64(batch), "tok/s")
				b.ReportMetric(1e3/steps, "ms/step")
				b.ReportMetric(steps*float64(m.WeightBytes())/1e9, "GB/s")
				b.ReportMetric(steps*float64(m.WeightBytes())/bw*100, "%roofline")
				if pdl(bk) {
					b.ReportMetric(1, "pdl")
				}
			})
		}
	}
}

// decodeSteps loads m for batch sequences, prefills each with a 128-token
// prompt (OCTET_BENCH_DECODE_PROMPT sets it) and returns a function that
// runs the next decode step of all of them, one token each.
func decodeSteps(b *testing.B, bk *Backend, m *model.Model, batch int) func() {
	// Room for the prompt and a run of steps after it.
	const bs = 16
	prompt := envInt("OCTET_BENCH_DECODE_PROMPT", 128)
	ctxLen := max(512, (prompt+256+bs-1)/bs*bs)
	r := loadRunner(b, bk, m, backends.LoadOptions{BlockSize: bs, KVBlocks: batch * ctxLen / bs, MaxContext: ctxLen, KV: benchKV(b)})
	ctx := context.Background()
	runs := make([]backends.Run, batch)
	for i := range runs {
		tb := make([]int32, ctxLen/bs)
		for j := range tb {
			tb[j] = int32(i*ctxLen/bs + j)
		}
		toks := make([]int32, prompt)
		for j := range toks {
			toks[j] = int32((i*7 + j) % m.Config.VocabSize)
		}
		if _, err := r.Forward(ctx, &backends.Batch{Runs: []backends.Run{{Tokens: toks, Blocks: tb, Logits: backends.LogitsLast}}}); err != nil {
			b.Fatal(err)
		}
		runs[i] = backends.Run{Tokens: []int32{1}, Pos: prompt, Blocks: tb, Logits: backends.LogitsLast}
	}
	batchRuns := &backends.Batch{Runs: runs}
	return func() {
		if _, err := r.Forward(ctx, batchRuns); err != nil {
			b.Fatal(err)
		}
		for j := range runs {
			runs[j].Pos++
			if runs[j].Pos == ctxLen {
				runs[j].Pos = prompt
			}
		}
	}
}

// BenchmarkDecodeTimeline prints the timeline (trace.go) of the last of
// b.N decode steps of one sequence and of 32. It needs the timeline build
// of the kernels (OCTET_CUDA_PTX=kernels/octet.trace.sm90.ptx) and skips
// without it; its tok/s are not the product's (each step is captured
// afresh and its blocks note the time).
func BenchmarkDecodeTimeline(b *testing.B) {
	bk := openOrSkip(b)
	var t *tracer
	bk.dev.do(func() error { t = bk.dev.trace; return nil })
	if t == nil {
		b.Skip("the timeline build of the kernels is not loaded (OCTET_CUDA_PTX=kernels/octet.trace.sm90.ptx)")
	}
	for _, m := range benchModels(b) {
		for _, batch := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/batch=%d", modelName(m), batch), func(b *testing.B) {
				step := decodeSteps(b, bk, m, batch)
				for i := 0; i < b.N; i++ {
					step()
				}
				var tab string
				bk.dev.do(func() error { tab = timeline(t.last, t.tick); return nil })
				fmt.Printf("\n### %s, batch %d (pdl %v)\n\n%s\n", modelName(m), batch, pdl(bk), tab)
			})
		}
	}
}

// BenchmarkPrefill: one prompt of OCTET_BENCH_PROMPT tokens (default 512).
func BenchmarkPrefill(b *testing.B) {
	bk := openOrSkip(b)
	p := envInt("OCTET_BENCH_PROMPT", 512)
	for _, m := range benchModels(b) {
		b.Run(fmt.Sprintf("%s/prompt=%d", modelName(m), p), func(b *testing.B) {
			r := loadRunner(b, bk, m, backends.LoadOptions{MaxContext: p, KV: benchKV(b)})
			seq, err := backends.NewSequence(r, p)
			if err != nil {
				b.Fatal(err)
			}
			toks := make([]int32, p)
			for j := range toks {
				toks[j] = int32(j % m.Config.VocabSize)
			}
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seq.Reset()
				if _, err := seq.Forward(ctx, toks, backends.LogitsLast); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(p*b.N)/b.Elapsed().Seconds(), "tok/s")
			b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/prompt")
		})
	}
}
