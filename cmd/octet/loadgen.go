package main

import (
	"errors"
	"fmt"
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
	f.IntVar(&s.vocab, "vocab", 32000, "server mode: prompt token ids are drawn below this")
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
	o := loadgen.Options{
		URL: s.url, Unix: s.unix, Model: model, APIKey: s.apiKey, Concurrency: levels, Requests: s.requests,
		PromptTokens: prompt, MaxTokens: s.maxTokens, SharedPrefix: s.sharedPrefix, Vocab: s.vocab, Temperature: s.temperature, Timeout: s.timeout, Seed: 1,
	}
	if err := o.Validate(); err != nil {
		return err
	}
	if isTerminal(os.Stderr) && !s.noProgress {
		bar := progressbar.NewOptions(len(levels)*s.requests, progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription("requests"), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
		defer bar.Finish()
		o.Progress = func() { bar.Add(1) }
	}
	res, err := loadgen.Run(cmd.Context(), o)
	if err != nil {
		return err
	}
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
