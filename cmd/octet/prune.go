package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/octet-dev/octet/eval"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/pruning"
	"github.com/octet-dev/octet/quant"
)

// parsePattern reads "N:M".
func parsePattern(s string) (n, m int, err error) {
	a, b, ok := strings.Cut(s, ":")
	if ok {
		n, err = strconv.Atoi(a)
		if err == nil {
			m, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("--pattern %q is not N:M (2:4, say)", s)
	}
	return n, m, nil
}

// maxRefitWidth bounds the widths whose Gram matrices calibration records
// for refitting (an n×n float64 matrix per layer).
const maxRefitWidth = 4096

func pruneCmd() *cobra.Command {
	var t toolFlags
	var o pruning.Options
	var pattern string
	var noRefit bool
	cmd := &cobra.Command{
		Use:   "prune --in PATH --out PATH (--sparsity S | --pattern 2:4 | --ffn-keep F --heads-keep H) [--method magnitude|wanda] [--calib TEXT]",
		Short: "Prune a model: zero weights (unstructured, N:M) or remove FFN neurons and attention heads",
		Long: `prune zeroes the lowest-scored weights of every row of the layer matrices
(--sparsity S, or --pattern N:M along the input dimension), or removes whole
feed-forward neurons (--ffn-keep F) and attention heads (--heads-keep H), ranked
by importance measured on --calib text (by weight norms without it), which
makes the model smaller and faster on every backend. Widths stay uniform across
layers, so llama.cpp loads the result too. Scores: magnitude |W|, or wanda
|W|·‖X‖ (needs --calib). The result is compared with the input on held-out
text and written only if it passes the quality gate (--no-gate writes it anyway).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := t.validate(); err != nil {
				return err
			}
			if pattern != "" {
				var err error
				if o.N, o.M, err = parsePattern(pattern); err != nil {
					return err
				}
			}
			if err := o.Validate(); err != nil {
				return err
			}
			m, err := model.Load(t.in)
			if err != nil {
				return err
			}
			defer m.Close()
			structured := (o.FFNKeep > 0 && o.FFNKeep < 1) || (o.HeadsKeep > 0 && o.HeadsKeep < 1)
			calibrated := t.calib != "" && (o.Method == pruning.Wanda || structured)
			if o.Method == pruning.Wanda && t.calib == "" {
				return fmt.Errorf("--method wanda needs --calib")
			}
			if calibrated {
				toks, err := t.calibTokens(m)
				if err != nil {
					return err
				}
				co := t.calibOptions(m)
				if structured && !noRefit {
					co.Gram = maxRefitWidth
				}
				if o.Stats, err = quant.Calibrate(cmd.Context(), m, toks, co); err != nil {
					return err
				}
				o.CalibName = filepath.Base(t.calib)
			}
			wo, err := t.writeOptions(m, calibrated)
			if err != nil {
				return err
			}
			prog, finish := byteBar("prune")
			o.Progress = prog
			w, info, err := pruning.Build(m, o)
			if err != nil {
				return err
			}
			res, err := eval.WriteGated(cmd.Context(), w, t.out, m, wo)
			finish()
			extra := map[string]any{
				"ffn": []int{info.FFNFrom, info.FFNTo}, "heads": []int{info.HeadsFrom, info.HeadsTo},
				"kv_heads": []int{info.KVFrom, info.KVTo}, "sparsity": info.Sparsity(), "kept": info.Kept, "refit": info.Refit,
			}
			if !t.jsonOut {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "feed-forward %d → %d, heads %d/%d → %d/%d (query/KV), %.1f%% of layer weights zeroed\n",
					info.FFNFrom, info.FFNTo, info.HeadsFrom, info.KVFrom, info.HeadsTo, info.KVTo, 100*info.Sparsity())
				if info.Refit > 0 {
					fmt.Fprintf(out, "%d matrices refitted to the kept neurons and heads (least squares on the calibration activations)\n", info.Refit)
				}
				for _, k := range info.Kept {
					fmt.Fprintf(out, "kept %s\n", k)
				}
			}
			return report(cmd.OutOrStdout(), &t, extra, res, err)
		},
	}
	f := cmd.Flags()
	t.register(f)
	f.StringVar(&o.Method, "method", pruning.Magnitude, "weight score: magnitude or wanda (needs --calib)")
	f.Float64Var(&o.Sparsity, "sparsity", 0, "share of each row's weights to zero, in [0, 0.99]")
	f.StringVar(&pattern, "pattern", "", "N:M sparsity: keep N of every M consecutive weights (2:4)")
	f.Float64Var(&o.FFNKeep, "ffn-keep", 0, "share of feed-forward neurons to keep, in (0, 1] (rounded to a multiple of 32)")
	f.Float64Var(&o.HeadsKeep, "heads-keep", 0, "share of attention heads to keep, in (0, 1]: the same number in every KV group, or whole KV groups, whichever is nearer")
	f.BoolVar(&noRefit, "no-refit", false, "with --calib, do not refit attn_output and ffn_down to the kept heads and neurons by least squares")
	cmd.MarkFlagRequired("in")
	cmd.MarkFlagRequired("out")
	return cmd
}
