package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/octet-dev/octet/loadgen"
)

// serverBench is `octet bench --url URL | --unix PATH`: the load generator
// against a running OpenAI-compatible server. --model (the model's name
// there), --prompt-tokens and --json are the flags it shares with the
// in-process mode.
type serverBench struct {
	url, unix, apiKey, concurrency, plot string
	requests, maxTokens, sharedPrefix    int
	vocab                                int
	seed                                 uint64
	temperature                          float64
	timeout                              time.Duration
	noProgress                           bool
}

func (s *serverBench) flags(f *pflag.FlagSet) {
	f.StringVar(&s.url, "url", "", "server mode: base URL of an OpenAI-compatible server (http://host:port)")
	f.StringVar(&s.unix, "unix", "", "server mode: Unix socket of the server")
	f.StringVar(&s.apiKey, "api-key", os.Getenv("OCTET_API_KEY"), "server mode: bearer key (default $OCTET_API_KEY)")
	f.StringVar(&s.concurrency, "concurrency", "1,4,8,16", "server mode: concurrency levels, comma-separated")
	f.IntVar(&s.requests, "requests", 32, "server mode: requests per concurrency level")
	f.IntVar(&s.maxTokens, "max-tokens", 64, "server mode: tokens per answer")
	f.IntVar(&s.sharedPrefix, "shared-prefix", 0, "server mode: leading prompt tokens every request shares (a system prompt)")
	f.IntVar(&s.vocab, "vocab", 32000, "server mode: prompt token ids are drawn below this (at most the model's vocabulary size)")
	f.Uint64Var(&s.seed, "seed", 0, "server mode: seed of the prompts (0: a new one each run, printed; the same seed sends the same prompts, which a prefix cache holds)")
	f.Float64Var(&s.temperature, "temperature", 0, "server mode: sampling temperature of each request (0: greedy)")
	f.DurationVar(&s.timeout, "timeout", 10*time.Minute, "server mode: longest one request may take")
	f.StringVar(&s.plot, "plot", "", "server mode: write an SVG plot of latency vs throughput to this file")
	f.BoolVar(&s.noProgress, "no-progress", false, "server mode: no progress bar")
}

func (s *serverBench) active() bool { return s.url != "" || s.unix != "" }

// run runs the load test. prompt is --prompt-tokens (512 when not given
// is the in-process default; the server mode's default is 64).
func (s *serverBench) run(cmd *cobra.Command, model string, prompt int, asJSON bool) error {
	if !cmd.Flags().Changed("prompt-tokens") {
		prompt = 64
	}
	var levels []int
	for _, f := range strings.Split(s.concurrency, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("bench: --concurrency %q: %q is not a number", s.concurrency, f)
		}
		levels = append(levels, c)
	}
	for _, f := range []string{"gen-tokens", "batch", "backend", "reps", "threads", "kv-type"} {
		if cmd.Flags().Changed(f) {
			return fmt.Errorf("bench: --%s is for a model run in this process (--model PATH without --url or --unix); the server mode takes --max-tokens, --concurrency, …", f)
		}
	}
	seed := s.seed
	if seed == 0 {
		seed = rand.Uint64() | 1
	}
	o := loadgen.Options{
		URL: s.url, Unix: s.unix, Model: model, APIKey: s.apiKey, Concurrency: levels, Requests: s.requests,
		PromptTokens: prompt, MaxTokens: s.maxTokens, SharedPrefix: s.sharedPrefix, Vocab: s.vocab, Temperature: s.temperature, Timeout: s.timeout, Seed: seed,
	}
	if err := o.Validate(); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "prompts from --seed %d\n", seed)
	if isTerminal(os.Stderr) && !s.noProgress {
		bar := progressbar.NewOptions(len(levels)*s.requests, progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription("requests"), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
		defer bar.Finish()
		o.Progress = func() { bar.Add(1) }
	}
	res, err := loadgen.Run(cmd.Context(), o)
	if err != nil {
		if len(res) > 0 { // interrupted: the levels that finished still count
			s.write(cmd, res, asJSON)
		}
		return err
	}
	return s.write(cmd, res, asJSON)
}

// write prints the levels (JSON or a table) and writes the plot.
func (s *serverBench) write(cmd *cobra.Command, res []loadgen.Level, asJSON bool) error {
	if s.plot != "" {
		f, err := os.Create(s.plot)
		if err != nil {
			return err
		}
		if err := errors.Join(loadgen.WriteSVG(f, res), f.Close()); err != nil {
			return err
		}
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), res)
	}
	return loadgen.WriteTable(cmd.OutOrStdout(), res)
}
