package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/synth"
	"github.com/octet-dev/octet/model/tokenizer"
)

func joinNames() string { return strings.Join(backends.Names(), ", ") }

// kvFlag is a KV cache type flag (bench's and eval's --kv-type, kld's
// --base-kv-type): "f32", "f16" or "q8", and "auto" (the backend's preferred
// type, as the daemon's kv_type = "auto") where it starts as "auto".
type kvFlag struct {
	name      string // checked by Set
	allowAuto bool
}

// register adds the flag to f, starting at def.
func (k *kvFlag) register(f *pflag.FlagSet, flag, def, usage string) {
	k.name, k.allowAuto = def, def == "auto"
	f.Var(k, flag, usage)
}

func (k *kvFlag) String() string { return k.name }

func (k *kvFlag) Type() string {
	if k.allowAuto {
		return "auto|f32|f16|q8"
	}
	return "f32|f16|q8"
}

func (k *kvFlag) Set(s string) error {
	if s != "auto" || !k.allowAuto {
		if _, err := backends.ParseKVType(s); err != nil {
			return err
		}
	}
	k.name = s
	return nil
}

// resolve is the type for backend b (which only "auto" consults).
func (k *kvFlag) resolve(b backends.Backend) backends.KVType {
	t, _ := backends.ResolveKVType(k.name, b) // Set checked the name
	return t
}

func tokenizeCmd() *cobra.Command {
	var path string
	var noSpecial bool
	cmd := &cobra.Command{
		Use:   "tokenize --model PATH TEXT",
		Short: "Print the token ids of a text as a JSON array",
		Long:  "tokenize prints the ids the model's tokenizer gives TEXT, BOS included where the model adds it.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := gguf.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			tok, err := tokenizer.FromGGUF(f)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			ids := tok.Encode(args[0], true, !noSpecial)
			if ids == nil {
				ids = []int32{}
			}
			out, _ := json.Marshal(ids)
			fmt.Fprintln(cmd.OutOrStdout(), string(out))
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "model", "", "GGUF file with a tokenizer (required)")
	cmd.Flags().BoolVar(&noSpecial, "no-parse-special", false, "treat control-token text (<s>, <|eot_id|>) as plain text")
	cmd.MarkFlagRequired("model")
	return cmd
}

func inspectCmd() *cobra.Command {
	var full bool
	cmd := &cobra.Command{
		Use:   "inspect PATH",
		Short: "Describe a GGUF model: architecture, tokenizer, tensors, provenance",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return model.Inspect(cmd.OutOrStdout(), args[0], full)
		},
	}
	cmd.Flags().BoolVar(&full, "all", false, "print every metadata value in full")
	return cmd
}

func synthCmd() *cobra.Command {
	var o synth.Options
	var typ string
	var seed uint64
	cmd := &cobra.Command{
		Use:   "synth --shape NAME --type q8_0|f16|bf16|f32 --out PATH",
		Short: "Write a model with random weights at the shape of a real one (for speed work)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := gguf.ParseTensorType(typ)
			if err != nil {
				return err
			}
			o.Type, o.Seed = t, seed
			bar := progressbar.NewOptions64(-1,
				progressbar.OptionSetWriter(os.Stderr),
				progressbar.OptionSetDescription("synth "+o.Shape),
				progressbar.OptionShowBytes(true),
				progressbar.OptionClearOnFinish(),
				progressbar.OptionSetVisibility(isTerminal(os.Stderr)))
			o.Progress = func(done, total int64) {
				bar.ChangeMax64(total)
				bar.Set64(done)
			}
			if err := synth.Run(cmd.Context(), o); err != nil {
				return err
			}
			bar.Finish()
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (%s, %s)\n", o.Out, o.Shape, t)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Shape, "shape", "", "model shape: "+strings.Join(synth.ShapeNames(), ", "))
	f.StringVar(&typ, "type", "q8_0", "weight type: q8_0, f16, bf16 or f32")
	f.StringVar(&o.Out, "out", "", "output GGUF file")
	f.Uint64Var(&seed, "seed", 1, "random seed of the weights")
	f.StringVar(&o.VocabFrom, "vocab", "", "GGUF file whose tokenizer to use (default: a built-in byte-fallback SentencePiece vocabulary)")
	cmd.MarkFlagRequired("shape")
	cmd.MarkFlagRequired("out")
	return cmd
}

// verboseLogger logs to stderr when verbose is set, and nowhere otherwise.
func verboseLogger(verbose bool) *slog.Logger {
	if verbose {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
