package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/octet-dev/octet/eval"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/quant"
)

// toolFlags are what quantize and prune share: calibration text, held-out
// evaluation text, the gate, the backend.
type toolFlags struct {
	in, out      string
	calib        string
	calibChunks  int
	evalFile     string
	evalChunks   int
	ctx          int
	noGate       bool
	gate         eval.Gate
	backend      string
	threads      int
	jsonOut      bool
	verbose      bool
	hellaswag    int
	hellaswagSet string
}

func (t *toolFlags) register(f *pflag.FlagSet) {
	f.StringVar(&t.in, "in", "", "input GGUF model (required)")
	f.StringVar(&t.out, "out", "", "output GGUF file (required)")
	f.StringVar(&t.calib, "calib", "", "calibration text file")
	f.IntVar(&t.calibChunks, "calib-chunks", 32, "calibration chunks of --ctx tokens")
	f.StringVar(&t.evalFile, "eval-file", "", "held-out text for the quality gate (default: --calib, after the calibration chunks)")
	f.IntVar(&t.evalChunks, "eval-chunks", 100, "chunks of the evaluation text the gate scores (0: all)")
	f.IntVar(&t.ctx, "ctx", 0, "tokens per calibration and evaluation chunk (0: the model's context, at most 512)")
	f.IntVar(&t.hellaswag, "gate-hellaswag", 0, "also score this many HellaSwag tasks in the gate (0: none)")
	f.StringVar(&t.hellaswagSet, "hellaswag-file", filepath.Join("..", "shared", "eval", "hellaswag", "hellaswag_val_full.txt.bz2"), "HellaSwag file for --gate-hellaswag")
	f.BoolVar(&t.noGate, "no-gate", false, "write the model even if it fails the quality gate (figures are still recorded when there is an evaluation text)")
	gateFlags(f, &t.gate)
	f.StringVar(&t.backend, "backend", "auto", "backend that runs the gate's evaluation: auto, "+joinNames())
	f.IntVar(&t.threads, "threads", 0, "CPU threads (0: all)")
	f.BoolVar(&t.jsonOut, "json", false, "print the result as one JSON object")
	f.BoolVarP(&t.verbose, "verbose", "v", false, "log backend selection")
}

func (t *toolFlags) logger() *slog.Logger { return verboseLogger(t.verbose) }

// validate checks the flags before any work is done: a value out of range,
// or an output that is a folder, lies in no folder or would overwrite one
// of the inputs, fails at once.
func (t *toolFlags) validate() error {
	switch {
	case t.in == "":
		return errors.New("--in is required")
	case t.out == "":
		return errors.New("--out is required")
	case t.calibChunks < 1:
		return fmt.Errorf("--calib-chunks must be at least 1, not %d", t.calibChunks)
	case t.ctx != 0 && t.ctx < eval.MinCtx:
		return fmt.Errorf("--ctx must be at least %d tokens (or 0: the model's context, at most 512), not %d", eval.MinCtx, t.ctx)
	}
	if err := nonNegative(intFlag{"--eval-chunks", t.evalChunks}, intFlag{"--threads", t.threads}, intFlag{"--gate-hellaswag", t.hellaswag}); err != nil {
		return err
	}
	if err := t.gate.Validate(); err != nil {
		return err
	}
	if st, err := os.Stat(t.out); err == nil && st.IsDir() {
		return fmt.Errorf("--out %s is a folder: name the file to write", t.out)
	}
	if st, err := os.Stat(filepath.Dir(t.out)); err != nil || !st.IsDir() {
		return fmt.Errorf("--out %s: the folder %s does not exist", t.out, filepath.Dir(t.out))
	}
	inputs := []struct{ flag, path string }{{"--in", t.in}, {"--calib", t.calib}, {"--eval-file", t.evalFile}}
	if t.hellaswag > 0 {
		inputs = append(inputs, struct{ flag, path string }{"--hellaswag-file", t.hellaswagSet})
	}
	for _, in := range inputs {
		if sameFile(t.out, in.path) {
			return fmt.Errorf("--out %s is the %s file: writing there would destroy it", t.out, in.flag)
		}
	}
	return nil
}

func (t *toolFlags) chunkLen(m *model.Model) int { return chunkLen(io.Discard, t.ctx, m) }

// calibTokens reads and tokenizes the calibration text ("" when none).
func (t *toolFlags) calibTokens(m *model.Model) ([]int32, error) {
	if t.calib == "" {
		return nil, nil
	}
	text, err := eval.ReadText(t.calib)
	if err != nil {
		return nil, err
	}
	return eval.Tokenize(m, text), nil
}

func (t *toolFlags) calibOptions(m *model.Model) quant.CalibOptions {
	return quant.CalibOptions{Ctx: t.chunkLen(m), Chunks: t.calibChunks, Threads: t.threads, Progress: progress("calibrate")}
}

// writeOptions builds the gate's options. Text used for calibration is not
// used to judge: when the evaluation text is the calibration text, the
// calibration chunks are skipped.
func (t *toolFlags) writeOptions(m *model.Model, calibrated bool) (eval.WriteOptions, error) {
	wo := eval.WriteOptions{Gate: t.gate, NoGate: t.noGate}
	file := t.evalFile
	if file == "" {
		file = t.calib
	}
	if file == "" {
		if t.noGate {
			return wo, nil
		}
		return wo, fmt.Errorf("the quality gate needs held-out text: pass --eval-file (or --calib), or --no-gate")
	}
	text, err := eval.ReadText(file)
	if err != nil {
		return wo, err
	}
	wo.Text, wo.TextName = text, filepath.Base(file)
	wo.Ctx = t.chunkLen(m)
	wo.Chunks = t.evalChunks
	if calibrated && sameFile(file, t.calib) {
		wo.Skip = t.calibChunks
	}
	wo.Prefer = []string{t.backend}
	wo.Threads = t.threads
	wo.Logger = t.logger()
	wo.Progress = progress("gate")
	if t.hellaswag > 0 {
		tasks, err := eval.LoadHellaSwag(t.hellaswagSet, t.hellaswag)
		if err != nil {
			return wo, err
		}
		wo.Choice = []eval.ChoiceSet{{Name: "hellaswag", Tasks: tasks}}
	}
	return wo, nil
}

func sameFile(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// byteBar draws a progress bar of bytes written on a terminal.
func byteBar(desc string) (func(done, total int64), func()) {
	if !isTerminal(os.Stderr) {
		return nil, func() {}
	}
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionClearOnFinish())
	return func(done, total int64) {
		bar.ChangeMax64(total)
		bar.Set64(done)
	}, func() { bar.Finish() }
}

// report prints what a tool wrote and the gate's verdict.
func report(w io.Writer, t *toolFlags, extra map[string]any, res eval.WriteResult, err error) error {
	if errors.Is(err, context.Canceled) {
		return err // interrupted: nothing was written, nothing to report
	}
	if t.jsonOut {
		out := map[string]any{"out": t.out, "written": err == nil, "bytes": res.Bytes}
		for k, v := range extra {
			out[k] = v
		}
		if res.Evaluated {
			out["report"] = res.Report
			out["gate"] = res.Verdict
		}
		if err != nil {
			out["error"] = err.Error()
		}
		if perr := printJSON(w, out); perr != nil {
			return perr
		}
		return err
	}
	if res.Evaluated {
		printReport(w, res.Report)
		v := res.Verdict.String()
		if !res.Verdict.Pass && t.noGate {
			v += " (not enforced: --no-gate)"
		}
		fmt.Fprintf(w, "gate: %s\n", v)
	}
	if err == nil {
		fmt.Fprintf(w, "wrote %s (%s)\n", t.out, human(res.Bytes))
	}
	return err
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func quantizeCmd() *cobra.Command {
	var t toolFlags
	var o quant.Options
	cmd := &cobra.Command{
		Use:   "quantize --in PATH --out PATH [--type q8_0|int8-channel] [--calib TEXT]",
		Short: "Quantize an F32/F16/BF16 model to int8 (Q8_0 blocks, or per-channel int8 stored as Q8_0)",
		Long: `quantize writes every weight matrix as int8. A feed-forward width that is not a
multiple of 32 is padded with zero neurons (the same function) so that ffn_down
takes Q8_0 too (--pad-ffn=false leaves such matrices F16, as llama.cpp does).
The result is compared with the input on held-out text and written only if it
passes the quality gate (--no-gate writes it anyway).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := t.validate(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			m, err := model.Load(t.in)
			if err != nil {
				return err
			}
			defer m.Close()
			if o.Smooth > 0 {
				toks, err := t.calibTokens(m)
				if err != nil {
					return err
				}
				if toks == nil {
					return fmt.Errorf("--smooth needs --calib")
				}
				if o.Stats, err = quant.Calibrate(cmd.Context(), m, toks, t.calibOptions(m)); err != nil {
					return err
				}
				o.CalibName = filepath.Base(t.calib)
			}
			wo, err := t.writeOptions(m, o.Smooth > 0)
			if err != nil {
				return err
			}
			var smooth *quant.SmoothDecision
			if o.Smooth > 0 {
				var d quant.SmoothDecision
				if o, d, err = quant.ChooseSmoothing(cmd.Context(), m, o, t.out, wo); err != nil {
					return err
				}
				smooth = &d
			}
			prog, finish := byteBar("quantize")
			o.Progress = prog
			w, info, err := quant.Build(m, o)
			if err != nil {
				return err
			}
			res, err := eval.WriteGated(cmd.Context(), w, t.out, m, wo)
			finish()
			extra := map[string]any{"int8_matrices": info.Quantized, "kept": info.Kept}
			if info.FFNFrom != nil {
				extra["ffn_padded"] = map[string]any{"from": info.FFNFrom, "to": info.FFNTo}
			}
			if smooth != nil {
				extra["smoothing"] = map[string]any{"kept": smooth.Kept, "kld_plain": smooth.KLDPlain, "kld_smoothed": smooth.KLDSmoothed,
					"kld_plain_err": smooth.ErrPlain, "kld_smoothed_err": smooth.ErrSmoothed}
			}
			if !t.jsonOut {
				if smooth != nil {
					verb := "dropped: it does not measurably lower"
					if smooth.Kept {
						verb = "kept: it lowers"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "smoothing %s the KLD (%.6f ± %.6f smoothed, %.6f ± %.6f plain)\n",
						verb, smooth.KLDSmoothed, smooth.ErrSmoothed, smooth.KLDPlain, smooth.ErrPlain)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d matrices int8 (%s)", info.Quantized, o.Type)
				if info.FFNFrom != nil {
					fmt.Fprintf(cmd.OutOrStdout(), ", feed-forward padded %v → %v", info.FFNFrom[0], info.FFNTo[0])
				}
				fmt.Fprintln(cmd.OutOrStdout())
				for _, k := range info.Kept {
					fmt.Fprintf(cmd.OutOrStdout(), "kept %s\n", k)
				}
			}
			return report(cmd.OutOrStdout(), &t, extra, res, err)
		},
	}
	f := cmd.Flags()
	t.register(f)
	f.StringVar(&o.Type, "type", quant.TypeQ8_0, "q8_0 (a scale per 32 weights) or int8-channel (one scale per output channel, stored as Q8_0)")
	f.BoolVar(&o.PadFFN, "pad-ffn", true, "pad a feed-forward width that is not a multiple of 32 with zero neurons so every matrix is int8")
	f.Float64Var(&o.Smooth, "smooth", 0, "SmoothQuant migration strength α in [0, 1] (needs --calib; kept only where it measurably lowers the KLD on the held-out text; 0: off)")
	cmd.MarkFlagRequired("in")
	cmd.MarkFlagRequired("out")
	return cmd
}
