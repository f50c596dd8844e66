package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/cpu"
	"github.com/octet-dev/octet/model"
)

// benchCmd is `octet bench`. --model selects the in-process mode (like
// llama-bench): a backend runs the model's forward steps directly. A
// server mode (--url / --unix, a load generator against a running daemon)
// is a separate mode of the same command; its flags do not overlap these.
func benchCmd() *cobra.Command {
	var o modelBench
	var srv serverBench
	var asJSON, verbose bool
	cmd := &cobra.Command{
		Use:   "bench --model PATH [--backend NAME] [--prompt-tokens P] [--gen-tokens G] [--batch B] [--json]",
		Short: "Measure prefill and decode speed of a model on a backend",
		Long: `bench --model runs a model in this process and measures, like llama-bench:

  prefill  P prompt tokens in one step (pp P), tokens/s
  decode   G steps of one token after the prompt (tg G), tokens/s
  batch    G steps of B sequences at once, each after the same prompt, tokens/s

and the host's memory read bandwidth (a probe run in the same process before
and after, the better of the two), from which the decode roofline follows:
bandwidth ÷ the weight bytes one decode step reads. Each figure is the median of --reps runs. Random token ids are used: speed
does not depend on them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if srv.active() {
				return srv.run(cmd, o.path, o.prompt, asJSON)
			}
			if o.path == "" {
				return errors.New("bench: --model PATH is required")
			}
			o.log = verboseLogger(verbose)
			res, err := o.run(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			res.print(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.path, "model", "", "GGUF model file: benchmark it in this process")
	f.StringVar(&o.backend, "backend", "auto", "backend: auto, "+joinNames())
	f.IntVar(&o.prompt, "prompt-tokens", 512, "prompt tokens of the prefill step (0: skip prefill)")
	f.IntVar(&o.gen, "gen-tokens", 64, "decode steps (0: skip decode)")
	f.IntVar(&o.batch, "batch", 1, "sequences decoded together in the batched measurement (1: skip it)")
	f.IntVar(&o.reps, "reps", 3, "repetitions of each measurement (the median is reported)")
	f.IntVar(&o.threads, "threads", 0, "CPU threads (0: all)")
	o.kv.register(f, "kv-type", "auto", "the KV cache's values: auto (the backend's preferred, as the daemon), f32, f16 or q8")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	srv.flags(f)
	f.BoolVarP(&verbose, "verbose", "v", false, "log backend selection and loading")
	return cmd
}

// modelBench is the in-process benchmark's settings.
type modelBench struct {
	path, backend                     string
	prompt, gen, batch, reps, threads int
	kv                                kvFlag
	log                               *slog.Logger
}

// benchResult is what `octet bench --model --json` prints.
type benchResult struct {
	Backend       string  `json:"backend"`
	Model         string  `json:"model"`
	Threads       int     `json:"threads"`
	KVType        string  `json:"kv_type"`
	PromptTokens  int     `json:"prompt_tokens"`
	GenTokens     int     `json:"gen_tokens"`
	Batch         int     `json:"batch"`
	Reps          int     `json:"reps"`
	PrefillTokS   float64 `json:"prefill_tokens_per_s"`
	DecodeTokS    float64 `json:"decode_tokens_per_s"`
	BatchTokS     float64 `json:"batch_decode_tokens_per_s"`
	BatchSpeedup  float64 `json:"batch_speedup"` // batch tokens/s ÷ decode tokens/s
	ModelBytes    int64   `json:"model_bytes"`   // every weight tensor
	StepBytes     int64   `json:"step_bytes"`    // the matrices one decode step reads
	BandwidthGBs  float64 `json:"bandwidth_gb_per_s"`
	BandwidthFrom string  `json:"bandwidth_probe"`
	RooflineTokS  float64 `json:"decode_roofline_tokens_per_s"` // bandwidth ÷ step bytes
	RooflineFrac  float64 `json:"decode_roofline_fraction"`
	LoadSeconds   float64 `json:"load_s"`
}

func (o *modelBench) validate() error {
	switch {
	case o.prompt < 0 || o.gen < 0:
		return errors.New("bench: --prompt-tokens and --gen-tokens must not be negative")
	case o.prompt == 0 && o.gen == 0:
		return errors.New("bench: nothing to measure: --prompt-tokens and --gen-tokens are both 0")
	case o.batch < 1 || o.batch > 1024:
		return fmt.Errorf("bench: --batch %d: want 1…1024", o.batch)
	case o.reps < 1:
		return fmt.Errorf("bench: --reps %d: want at least 1", o.reps)
	}
	return nil
}

const benchBlockSize = 16

func (o *modelBench) run(ctx context.Context) (*benchResult, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	threads := o.threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	m, err := model.Load(o.path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if n := max(o.prompt, 1) + o.gen; n > m.Config.ContextLength {
		return nil, fmt.Errorf("bench: %d prompt and %d generated tokens need %d positions, past the model's context of %d", o.prompt, o.gen, n, m.Config.ContextLength)
	}
	b, err := backends.Auto([]string{o.backend}, o.log)
	if err != nil {
		return nil, err
	}
	// The bandwidth probe runs before the load and again after the
	// measurements; the better of the two is the roofline's denominator
	// (the machine may be busy for one of them).
	bw0, from0 := bandwidth(b, threads)
	// The KV cache: the prompt's blocks (shared by every sequence of the
	// batched measurement, which only reads them), then each sequence's
	// own blocks for the rest of the prompt's last block and its decode.
	seqLen := max(o.prompt, 1) + o.gen
	shared := o.prompt / benchBlockSize
	own := (seqLen+benchBlockSize-1)/benchBlockSize - shared
	kv := o.kv.resolve(b)
	lo := backends.LoadOptions{BlockSize: benchBlockSize, KVBlocks: shared + o.batch*own, MaxContext: seqLen, Threads: threads, KV: kv, Logger: o.log}
	t0 := time.Now()
	r, err := b.Load(m, lo)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res := &benchResult{
		Backend: b.Name(), Model: o.path, Threads: threads, KVType: kv.String(), PromptTokens: o.prompt, GenTokens: o.gen,
		Batch: o.batch, Reps: o.reps, ModelBytes: m.WeightBytes(), StepBytes: stepBytes(m),
		LoadSeconds: time.Since(t0).Seconds(),
	}
	tables := make([][]int32, o.batch)
	for s := range tables {
		for i := 0; i < shared; i++ {
			tables[s] = append(tables[s], int32(i))
		}
		for i := 0; i < own; i++ {
			tables[s] = append(tables[s], int32(shared+s*own+i))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	vocab := m.Config.VocabSize
	tokens := func(n int) []int32 {
		t := make([]int32, n)
		for i := range t {
			t[i] = int32(rng.IntN(vocab))
		}
		return t
	}
	prompt := tokens(max(o.prompt, 1))
	// Each step reuses the last one's logits, as the scheduler does.
	var logits *backends.Logits
	step := func(runs []backends.Run) error {
		var err error
		logits, err = r.Forward(ctx, &backends.Batch{Runs: runs, Reuse: logits})
		return err
	}
	// Warm up: page the weights in and let the backend size its buffers.
	if err := step([]backends.Run{{Tokens: prompt[:min(len(prompt), 8)], Blocks: tables[0]}}); err != nil {
		return nil, err
	}
	// Prefill writes the shared prompt blocks, and the first sequence's
	// tail, on every repetition. (Without a prompt, the warm-up has
	// written the one token the decode starts after.)
	if o.prompt > 0 {
		if res.PrefillTokS, err = median(o.reps, func() (float64, error) {
			t := time.Now()
			if err := step([]backends.Run{{Tokens: prompt, Blocks: tables[0]}}); err != nil {
				return 0, err
			}
			return float64(len(prompt)) / time.Since(t).Seconds(), nil
		}); err != nil {
			return nil, err
		}
	}
	// decode runs G steps of n sequences, each after the prompt, and
	// returns tokens/s. The prompt's tail past its last whole block is
	// written into each sequence's own block first (untimed).
	decode := func(n int) (float64, error) {
		start := shared * benchBlockSize
		var runs []backends.Run
		for s := 0; s < n; s++ {
			if start < len(prompt) {
				runs = append(runs, backends.Run{Tokens: prompt[start:], Pos: start, Blocks: tables[s]})
			}
		}
		if len(runs) > 0 {
			if err := step(runs); err != nil {
				return 0, err
			}
		}
		next := tokens(n)
		runs = make([]backends.Run, n)
		t := time.Now()
		for g := 0; g < o.gen; g++ {
			for s := range runs {
				runs[s] = backends.Run{Tokens: next[s : s+1], Pos: len(prompt) + g, Blocks: tables[s]}
			}
			if err := step(runs); err != nil {
				return 0, err
			}
		}
		return float64(n*o.gen) / time.Since(t).Seconds(), nil
	}
	if o.gen > 0 {
		if res.DecodeTokS, err = median(o.reps, func() (float64, error) { return decode(1) }); err != nil {
			return nil, err
		}
		if o.batch > 1 {
			if res.BatchTokS, err = median(o.reps, func() (float64, error) { return decode(o.batch) }); err != nil {
				return nil, err
			}
			res.BatchSpeedup = res.BatchTokS / res.DecodeTokS
		}
	}
	bw, from := bandwidth(b, threads)
	if bw0 > bw {
		bw, from = bw0, from0
	}
	res.BandwidthGBs, res.BandwidthFrom = bw/1e9, from
	if bw > 0 && res.StepBytes > 0 {
		res.RooflineTokS = bw / float64(res.StepBytes)
		res.RooflineFrac = res.DecodeTokS / res.RooflineTokS
	}
	return res, nil
}

// stepBytes is what one decode step must read: every matrix (the output
// projection once, even when tied to the embedding) and the norms. The
// embedding table is read one row per token.
func stepBytes(m *model.Model) int64 {
	var n int64
	for _, t := range m.Matrices() {
		n += int64(t.Rows * t.RowBytes())
	}
	for i := range m.Layers {
		n += int64(len(m.Layers[i].AttnNorm.Data) + len(m.Layers[i].FFNNorm.Data))
	}
	return n
}

// median runs f reps times and returns the median of its results.
func median(reps int, f func() (float64, error)) (float64, error) {
	v := make([]float64, reps)
	for i := range v {
		var err error
		if v[i], err = f(); err != nil {
			return 0, err
		}
	}
	slices.Sort(v)
	if reps%2 == 1 {
		return v[reps/2], nil
	}
	return (v[reps/2-1] + v[reps/2]) / 2, nil
}

// bandwidth measures the memory that b's kernels stream weights from: the
// backend's own probe where it has one (a GPU's device memory, through
// device-to-device copies), else the host's. A backend whose probe fails
// (no room for its buffers beside a loaded model, say) gets 0: the host's
// figure would be a roofline for the wrong memory.
func bandwidth(b backends.Backend, threads int) (float64, string) {
	if p, ok := b.(interface{ MemoryBandwidth() (float64, error) }); ok {
		bw, err := p.MemoryBandwidth()
		if err != nil {
			return 0, "device probe failed: " + err.Error()
		}
		return bw, "device-to-device copies of 1 GiB, read + written"
	}
	return hostBandwidth(threads)
}

// hostBandwidth measures the host's memory read bandwidth with threads
// threads over a buffer far larger than the caches: with the CPU kernel
// library's SIMD probe where it loads, else with a plain Go loop (which
// underestimates it).
func hostBandwidth(threads int) (float64, string) {
	const bytes = 512 << 20
	if bw, variant, err := cpu.MemoryBandwidth(threads, bytes); err == nil {
		return bw, "cpu-" + variant + " SIMD read probe, 512 MiB"
	}
	buf := make([]uint64, bytes/8)
	for i := range buf {
		buf[i] = uint64(i)
	}
	var best float64
	for pass := 0; pass < 4; pass++ {
		var wg sync.WaitGroup
		sums := make([]uint64, threads)
		t := time.Now()
		for w := 0; w < threads; w++ {
			wg.Go(func() {
				var s uint64
				for _, v := range buf[len(buf)*w/threads : len(buf)*(w+1)/threads] {
					s += v
				}
				sums[w] = s
			})
		}
		wg.Wait()
		if bw := float64(bytes) / time.Since(t).Seconds(); pass > 0 && bw > best {
			best = bw
		}
	}
	return best, "Go read loop, 512 MiB (the CPU library did not load)"
}

func (r *benchResult) print(w io.Writer) {
	fmt.Fprintf(w, "model    %s (%.2f GB of weights; a decode step reads %.2f GB)\n", r.Model, float64(r.ModelBytes)/1e9, float64(r.StepBytes)/1e9)
	fmt.Fprintf(w, "backend  %s, %d threads, %s KV cache, loaded in %.0f ms\n", r.Backend, r.Threads, r.KVType, r.LoadSeconds*1e3)
	if r.PromptTokens > 0 {
		fmt.Fprintf(w, "pp%-5d  %8.1f tok/s\n", r.PromptTokens, r.PrefillTokS)
	}
	if r.GenTokens > 0 {
		fmt.Fprintf(w, "tg%-5d  %8.1f tok/s", r.GenTokens, r.DecodeTokS)
		if r.RooflineTokS > 0 {
			fmt.Fprintf(w, "   %.0f%% of the roofline %.1f tok/s (%.1f GB/s, %s)", 100*r.RooflineFrac, r.RooflineTokS, r.BandwidthGBs, r.BandwidthFrom)
		}
		fmt.Fprintln(w)
		if r.Batch > 1 {
			fmt.Fprintf(w, "tg%d×%-3d %8.1f tok/s   %.2f× one sequence\n", r.GenTokens, r.Batch, r.BatchTokS, r.BatchSpeedup)
		}
	}
	fmt.Fprintf(w, "(median of %d runs each)\n", r.Reps)
}
