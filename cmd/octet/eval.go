package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/octet-dev/octet/eval"
	"github.com/octet-dev/octet/model"
)

// evalFlags are the flags every evaluation shares.
type evalFlags struct {
	backend  string
	threads  int
	ctx      int
	chunks   int
	parallel int
	jsonOut  bool
	verbose  bool
	kv       kvFlag
}

func (e *evalFlags) register(f *pflag.FlagSet) {
	f.StringVar(&e.backend, "backend", "auto", "backend: auto, "+joinNames())
	f.IntVar(&e.threads, "threads", 0, "CPU threads (0: all)")
	f.IntVar(&e.ctx, "ctx", 0, "tokens per chunk, BOS included; the second half of each chunk is scored (0: the model's context, at most 512)")
	f.IntVar(&e.chunks, "chunks", 0, "evaluate at most this many chunks (0: the whole text)")
	f.IntVar(&e.parallel, "parallel", 0, "chunks run together in one forward step (0: about 512 tokens' worth)")
	f.BoolVar(&e.jsonOut, "json", false, "print one JSON object")
	f.BoolVarP(&e.verbose, "verbose", "v", false, "log backend selection")
	e.kv.register(f, "kv-type", "f32", "the KV cache's values: f32, f16 or q8")
}

// check refuses values out of range before any work.
func (e *evalFlags) check() error {
	if e.ctx != 0 && e.ctx < eval.MinCtx {
		return fmt.Errorf("--ctx must be at least %d tokens (or 0: the default), not %d", eval.MinCtx, e.ctx)
	}
	return nonNegative(intFlag{"--chunks", e.chunks}, intFlag{"--parallel", e.parallel}, intFlag{"--threads", e.threads})
}

// chunkLen is the chunk length of an evaluation: ctx, or when 0 the
// shortest trained context of ms, at most 512 (llama.cpp's default). A ctx
// past a model's trained context is run, with a warning on w: its scores
// there measure how the model extrapolates.
func chunkLen(w io.Writer, ctx int, ms ...*model.Model) int {
	trained := 512
	for _, m := range ms {
		trained = min(trained, m.Config.ContextLength)
	}
	if ctx <= 0 {
		return trained
	}
	for _, m := range ms {
		if ctx > m.Config.ContextLength {
			fmt.Fprintf(w, "octet: warning: --ctx %d runs past %s's trained context of %d tokens\n", ctx, filepath.Base(m.Path), m.Config.ContextLength)
		}
	}
	return ctx
}

// intFlag is a flag's name and value, for nonNegative.
type intFlag struct {
	name string
	v    int
}

// nonNegative fails on the first flag below 0.
func nonNegative(fs ...intFlag) error {
	for _, f := range fs {
		if f.v < 0 {
			return fmt.Errorf("%s must be 0 or more, not %d", f.name, f.v)
		}
	}
	return nil
}

// options are the evaluation's options for the models ms (the chunk
// length fits the shortest trained context of them).
func (e *evalFlags) options(w io.Writer, desc string, ms ...*model.Model) eval.Options {
	return eval.Options{
		Ctx: chunkLen(w, e.ctx, ms...), Chunks: e.chunks, Parallel: e.parallel,
		Prefer: []string{e.backend}, Threads: e.threads, KV: e.kv.resolve(nil), Logger: verboseLogger(e.verbose),
		Progress: progress(desc),
	}
}

// progress returns a callback drawing a progress bar on stderr when it is a
// terminal, and nil otherwise.
func progress(desc string) func(done, total int) {
	if !isTerminal(os.Stderr) {
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(done, total int) {
		if bar == nil {
			bar = progressbar.NewOptions(total,
				progressbar.OptionSetWriter(os.Stderr),
				progressbar.OptionSetDescription(desc),
				progressbar.OptionShowCount(),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionClearOnFinish())
		}
		bar.Set(done)
		if done >= total {
			bar.Finish()
		}
	}
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// gateFlags registers the bounds of the quality gate.
func gateFlags(f *pflag.FlagSet, g *eval.Gate) {
	*g = eval.DefaultGate
	f.Float64Var(&g.MinRelAccuracy, "gate-min-rel-acc", g.MinRelAccuracy, "least share of the baseline's accuracy to keep (0: off)")
	f.Float64Var(&g.MaxKLD, "gate-max-kld", g.MaxKLD, "greatest mean KL divergence from the baseline, nats/token (0: off)")
	f.Float64Var(&g.MaxPPLRatio, "gate-max-ppl-ratio", g.MaxPPLRatio, "greatest perplexity ratio to the baseline (0: off)")
	f.Float64Var(&g.MinTop1, "gate-min-top1", g.MinTop1, "least top-1 agreement with the baseline (0: off)")
}

func evalCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Measure a model: perplexity, KL divergence from a baseline, multiple-choice accuracy",
		// An unknown measure is an error, not a help text and success.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(perplexityCmd(), kldCmd(), choiceCmd("hellaswag"), choiceCmd("piqa"))
	return cmd
}

// loadWithText loads a model and reads an evaluation text.
func loadWithText(path, file string) (*model.Model, string, error) {
	text, err := eval.ReadText(file)
	if err != nil {
		return nil, "", err
	}
	m, err := model.Load(path)
	return m, text, err
}

func perplexityCmd() *cobra.Command {
	var path, file string
	var ef evalFlags
	cmd := &cobra.Command{
		Use:   "perplexity --model PATH --file TEXT [--ctx N] [--chunks K]",
		Short: "Perplexity of a model on a text, by llama.cpp's method",
		Long: `perplexity cuts the tokenized text into chunks of --ctx tokens, each starting
with BOS, and scores the prediction of every token of each chunk's second half,
as llama.cpp's perplexity tool does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ef.check(); err != nil {
				return err
			}
			m, text, err := loadWithText(path, file)
			if err != nil {
				return err
			}
			defer m.Close()
			res, err := eval.Perplexity(cmd.Context(), m, eval.Tokenize(m, text), ef.options(cmd.ErrOrStderr(), "perplexity", m))
			if err != nil {
				return err
			}
			if ef.jsonOut {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ppl = %.4f +/- %.4f  (%d chunks of %d, %d tokens scored of %d; next-token accuracy %.2f%%; backend %s, %.1f s)\n",
				res.PPL, res.PPLErr, res.Chunks, res.Ctx, res.TokensScored, res.TextTokens, 100*res.Accuracy, res.Backend, res.Seconds)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "model", "", "GGUF model (required)")
	f.StringVar(&file, "file", "", "text file (required)")
	ef.register(f)
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("file")
	return cmd
}

func kldCmd() *cobra.Command {
	var path, basePath, file string
	var ef evalFlags
	var baseKV kvFlag
	var g eval.Gate
	var gate bool
	cmd := &cobra.Command{
		Use:   "kld --model PATH --base PATH --file TEXT [--ctx N] [--chunks K]",
		Short: "KL divergence, top-1 agreement and perplexity ratio of a model against its baseline",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ef.check(); err != nil {
				return err
			}
			if gate {
				if err := g.Validate(); err != nil {
					return err
				}
			} else {
				for _, f := range []string{"gate-min-rel-acc", "gate-max-kld", "gate-max-ppl-ratio", "gate-min-top1"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--%s bounds the gate: pass --gate too", f)
					}
				}
			}
			m, text, err := loadWithText(path, file)
			if err != nil {
				return err
			}
			defer m.Close()
			base, err := model.Load(basePath)
			if err != nil {
				return err
			}
			defer base.Close()
			o := ef.options(cmd.ErrOrStderr(), "kld", m, base)
			if cmd.Flags().Changed("base-kv-type") {
				t := baseKV.resolve(nil)
				o.BaseKV = &t
			}
			rep, err := eval.Compare(cmd.Context(), m, base, text, eval.CompareOptions{Options: o})
			if err != nil {
				return err
			}
			var v *eval.Verdict
			if gate {
				vv := g.Check(rep)
				v = &vv
			}
			if ef.jsonOut {
				if err := printJSON(cmd.OutOrStdout(), struct {
					eval.Report
					Gate *eval.Verdict `json:"gate,omitempty"`
				}{rep, v}); err != nil {
					return err
				}
			} else {
				printReport(cmd.OutOrStdout(), rep)
				if v != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "gate: %s\n", v)
				}
			}
			if v != nil && !v.Pass {
				return fmt.Errorf("%w: %s", eval.ErrGateFailed, v.Reason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "model", "", "GGUF model to judge (required)")
	f.StringVar(&basePath, "base", "", "GGUF baseline model (required)")
	f.StringVar(&file, "file", "", "text file (required)")
	f.BoolVar(&gate, "gate", false, "also judge by the quality gate: print its verdict and exit 1 when the model fails it")
	ef.register(f)
	baseKV.register(f, "base-kv-type", "", "the baseline's KV cache values, f32, f16 or q8 (default: as --kv-type); with --base the same file, what a KV type costs")
	gateFlags(f, &g)
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("base")
	cmd.MarkFlagRequired("file")
	return cmd
}

func printReport(w io.Writer, r eval.Report) {
	fmt.Fprintf(w, "KLD mean %.6f  median %.6f  p99 %.6f  max %.6f  (nats/token)\n", r.KLDMean, r.KLDMedian, r.KLDP99, r.KLDMax)
	fmt.Fprintf(w, "top-1 agreement %.2f%%\n", 100*r.Top1)
	fmt.Fprintf(w, "ppl %.4f  base %.4f  ratio %.4f\n", r.PPL, r.BasePPL, r.PPLRatio)
	fmt.Fprintf(w, "next-token accuracy %.2f%%  base %.2f%%\n", 100*r.Accuracy, 100*r.BaseAccuracy)
	for _, t := range r.Tasks {
		fmt.Fprintf(w, "%s acc_norm %.2f%%  base %.2f%%  (%d tasks)\n", t.Name, 100*t.Acc, 100*t.BaseAcc, t.Tasks)
	}
	fmt.Fprintf(w, "%d chunks of %d, %d tokens scored; backend %s, %.1f s\n", r.Chunks, r.Ctx, r.TokensScored, r.Backend, r.Seconds)
}

// loadTasks reads the task set called name ("hellaswag" or "piqa").
func loadTasks(name, file, labels string, limit int) ([]eval.Task, error) {
	if name == "hellaswag" {
		return eval.LoadHellaSwag(file, limit)
	}
	if labels == "" {
		labels = eval.PIQALabels(file)
	}
	return eval.LoadPIQA(file, labels, limit)
}

func choiceCmd(name string) *cobra.Command {
	var path, file, labels string
	var tasks int
	var ef evalFlags
	defFile := map[string]string{
		"hellaswag": filepath.Join("..", "shared", "eval", "hellaswag", "hellaswag_val_full.txt.bz2"),
		"piqa":      filepath.Join("..", "shared", "eval", "piqa", "valid.jsonl"),
	}[name]
	cmd := &cobra.Command{
		Use:   name + " --model PATH [--file F] [--tasks K]",
		Short: "Multiple-choice accuracy (acc_norm) on " + name,
		Long: `The ending with the highest mean log-likelihood per token wins, as in
llama.cpp's multiple-choice scoring; tasks are taken in file order.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ef.check(); err != nil {
				return err
			}
			if tasks < 0 {
				return fmt.Errorf("--tasks must be 0 or more, not %d", tasks)
			}
			m, err := model.Load(path)
			if err != nil {
				return err
			}
			defer m.Close()
			ts, err := loadTasks(name, file, labels, tasks)
			if errors.Is(err, fs.ErrNotExist) && !cmd.Flags().Changed("file") {
				return fmt.Errorf("%w (the default --file, relative to the current folder: run from the repository, or pass --file)", err)
			}
			if err != nil {
				return err
			}
			res, err := eval.Choice(cmd.Context(), m, ts, ef.options(cmd.ErrOrStderr(), name, m))
			if err != nil {
				return err
			}
			if ef.jsonOut {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s acc_norm = %.2f%% +/- %.2f%%  (acc %.2f%%; %d tasks; backend %s, %.1f s)\n",
				name, 100*res.AccNorm, 100*res.AccNormErr, 100*res.Acc, res.Tasks, res.Backend, res.Seconds)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "model", "", "GGUF model (required)")
	f.StringVar(&file, "file", defFile, "task file")
	if name == "piqa" {
		f.StringVar(&labels, "labels", "", "labels file (default: the items file's -labels.lst)")
	}
	f.IntVar(&tasks, "tasks", 0, "score the first K tasks (0: all)")
	ef.register(f)
	f.MarkHidden("ctx")
	f.MarkHidden("chunks")
	f.MarkHidden("parallel")
	cmd.MarkFlagRequired("model")
	return cmd
}
