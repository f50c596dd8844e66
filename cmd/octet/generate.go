package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/spf13/cobra"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/sample"
	"github.com/octet-dev/octet/scheduler"
)

func generateCmd() *cobra.Command {
	var (
		path, prompt, backend string
		maxTokens, ctxSize    int
		threads               int
		seed                  int64
		ignoreEOS, verbose    bool
		sp                    = sample.Params{RepeatLastN: 64}
	)
	cmd := &cobra.Command{
		Use:   "generate --model PATH --prompt TEXT",
		Short: "Continue a prompt with a model and print the text",
		Long: `generate prints the prompt, then streams the model's continuation to stdout.
A timing line goes to stderr. --temperature 0 decodes greedily.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if seed < 0 {
				sp.Seed = rand.Uint64()
			} else {
				sp.Seed = uint64(seed)
			}
			if err := sp.Validate(); err != nil {
				return err
			}
			if maxTokens < 1 {
				return fmt.Errorf("--max-tokens must be at least 1, not %d", maxTokens)
			}
			log := verboseLogger(verbose)
			m, err := model.Load(path)
			if err != nil {
				return err
			}
			defer m.Close()
			b, err := backends.Auto([]string{backend}, log)
			if err != nil {
				return err
			}
			if ctxSize <= 0 {
				ctxSize = m.Config.ContextLength
			}
			r, err := b.Load(m, backends.LoadOptions{MaxContext: ctxSize, Threads: threads, Logger: log})
			if err != nil {
				return err
			}
			defer r.Close()
			seq, err := backends.NewSequence(r, ctxSize)
			if err != nil {
				return err
			}
			ids := m.Tok.Encode(prompt, true, true)
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			fmt.Fprint(out, prompt)
			out.Flush()
			req := scheduler.Request{Prompt: ids, MaxTokens: maxTokens, Sample: sp, IgnoreEOS: ignoreEOS}
			st, err := scheduler.Generate(cmd.Context(), seq, m.Tok, req, func(_ int32, text string) error {
				_, err := out.WriteString(text)
				out.Flush()
				return err
			})
			fmt.Fprintln(out)
			out.Flush()
			fmt.Fprintf(cmd.ErrOrStderr(), "prompt: %d tok, %.1f tok/s; gen: %d tok, %.1f tok/s (backend %s)\n",
				st.PromptTokens, perSecond(st.PromptTokens, st.PromptTime),
				st.Generated, perSecond(st.Generated, st.GenerateTime), b.Name())
			if err == nil && st.FinishReason == scheduler.FinishLength && st.Generated < maxTokens {
				fmt.Fprintf(cmd.ErrOrStderr(), "stopped before --max-tokens %d: the context of %d positions is full (--ctx-size)\n", maxTokens, seq.Cap())
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "model", "", "GGUF model file (required)")
	f.StringVar(&prompt, "prompt", "", "text to continue")
	f.IntVar(&maxTokens, "max-tokens", 128, "tokens to generate at most")
	f.Float32Var(&sp.Temperature, "temperature", 0.8, "sampling temperature; 0 is greedy")
	f.IntVar(&sp.TopK, "top-k", 40, "keep the k most likely tokens (0: all)")
	f.Float32Var(&sp.TopP, "top-p", 0.95, "keep the smallest set of tokens whose probability reaches p (1: all)")
	f.Float32Var(&sp.MinP, "min-p", 0.05, "drop tokens less likely than p × the most likely one")
	f.Float32Var(&sp.RepeatPenalty, "repeat-penalty", 1, "penalty on tokens of the last --repeat-last-n (1: off)")
	f.IntVar(&sp.RepeatLastN, "repeat-last-n", 64, "tokens the penalties look back over (0: all)")
	f.Float32Var(&sp.FrequencyPenalty, "frequency-penalty", 0, "OpenAI frequency penalty")
	f.Float32Var(&sp.PresencePenalty, "presence-penalty", 0, "OpenAI presence penalty")
	f.Int64Var(&seed, "seed", -1, "random seed (-1: a random one)")
	f.StringVar(&backend, "backend", "auto", "backend: auto, "+joinNames())
	f.IntVar(&ctxSize, "ctx-size", 0, "context length to allocate (0: the model's trained context)")
	f.IntVar(&threads, "threads", 0, "CPU threads (0: all)")
	f.BoolVar(&ignoreEOS, "ignore-eos", false, "keep generating past end-of-generation tokens")
	f.BoolVarP(&verbose, "verbose", "v", false, "log backend selection and loading")
	cmd.MarkFlagRequired("model")
	return cmd
}

func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
