package loadgen

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/daemon"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/synth"
)

// serve runs the real daemon in this process on synth's tiny model with
// the ref backend and returns its Unix socket.
func serve(t *testing.T, edit func(*configs.Config)) string {
	t.Helper()
	dir := t.TempDir()
	if err := synth.Run(context.Background(), synth.Options{Shape: "tiny", Type: gguf.Q8_0, Out: filepath.Join(dir, "tiny.gguf"), Seed: 1}); err != nil {
		t.Fatal(err)
	}
	sock, err := os.MkdirTemp("", "lg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	cfg := configs.Defaults()
	cfg.Listen.TCP = ""
	cfg.Listen.Socket = filepath.Join(sock, "s")
	cfg.Models.Dir = dir
	cfg.Backend.Prefer = []string{"ref"}
	cfg.Log.Requests = false
	if edit != nil {
		edit(cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, daemon.Options{Config: cfg, Logs: io.Discard, Version: "test"}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	c := newClient(Options{Unix: cfg.Listen.Socket})
	for range 1000 {
		if resp, err := c.hc.Get(c.base + "/v1/models"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"tiny"`) {
				return cfg.Listen.Socket
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the daemon did not serve its model")
	return ""
}

func opts(sock string) Options {
	return Options{Unix: sock, Model: "tiny", Concurrency: []int{1, 3}, Requests: 6, PromptTokens: 12, MaxTokens: 5, SharedPrefix: 4, Vocab: 300, Seed: 1}
}

// Against the real daemon: every request is measured, and the figures
// hang together.
func TestRunAgainstDaemon(t *testing.T) {
	sock := serve(t, nil)
	o := opts(sock)
	progress := 0
	o.Progress = func() { progress++ }
	levels, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(levels) != 2 || progress != 12 {
		t.Fatalf("%d levels, %d progress calls", len(levels), progress)
	}
	for _, l := range levels {
		if l.Requests != 6 || l.Errors != 0 || l.Completion != 6*5 || l.TTFTP50 <= 0 || l.TTFTP99 < l.TTFTP50 ||
			l.ITLP50 <= 0 || l.E2EP50 < l.TTFTP50 || l.TokensPerS <= 0 || l.PerReqTokS <= 0 {
			t.Errorf("level %+v", l)
		}
	}
	var table, svg bytes.Buffer
	if err := WriteTable(&table, levels); err != nil || !strings.Contains(table.String(), "TTFT p50") {
		t.Errorf("table %q: %v", table.String(), err)
	}
	if err := WriteSVG(&svg, levels); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&svg)
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v", err)
		}
	}
}

// A server that refuses is counted by status, not a failure of the run.
func TestRunCountsErrors(t *testing.T) {
	sock := serve(t, func(c *configs.Config) { c.Tuning.QueueLength = 0; c.Tuning.MaxRunning = 1 })
	o := opts(sock)
	o.Concurrency = []int{6}
	o.Requests = 30
	o.MaxTokens = 30
	levels, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	l := levels[0]
	if l.Errors == 0 || l.ErrorsBy["429"] != l.Errors || l.Requests != 30 || l.Completion != (30-l.Errors)*30 {
		t.Errorf("level %+v", l)
	}
	var table bytes.Buffer
	WriteTable(&table, levels)
	if !strings.Contains(table.String(), "429 ×") {
		t.Errorf("table does not list the errors: %s", table.String())
	}
	o.Model = "nope"
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown model: %v", err)
	}
}

func TestValidateAndPercentile(t *testing.T) {
	for _, o := range []Options{
		{},
		{URL: "http://x", Unix: "/s", Concurrency: []int{1}, Requests: 1, PromptTokens: 2, MaxTokens: 1, Vocab: 100},
		{URL: "ftp://x", Concurrency: []int{1}, Requests: 1, PromptTokens: 2, MaxTokens: 1, Vocab: 100},
		{URL: "http://x", Concurrency: []int{0}, Requests: 1, PromptTokens: 2, MaxTokens: 1, Vocab: 100},
		{URL: "http://x", Concurrency: []int{1}, Requests: 1, PromptTokens: 2, SharedPrefix: 2, MaxTokens: 1, Vocab: 100},
		{URL: "http://x", Concurrency: []int{1}, Requests: 1, PromptTokens: 2, MaxTokens: 1, Vocab: 100, Temperature: -1},
		{URL: "http://x", Concurrency: []int{1}, Requests: 1, PromptTokens: 2, MaxTokens: 1, Vocab: 100, Temperature: math.NaN()},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	xs := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ p, want float64 }{{50, 3}, {99, 5}, {0, 1}, {20, 1}, {21, 2}} {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("p%g = %g, want %g", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty percentile")
	}
}

// The stream parser takes whatever a server sends without panicking, and
// a well-formed stream is measured.
func FuzzReadStream(f *testing.F) {
	f.Add("data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":{\"completion_tokens\":2}}\n\ndata: [DONE]\n\n")
	f.Add("data: {\"error\":{\"code\":\"x\"}}\n\n")
	f.Add("data: {\"choices\":[{\"text\":\"\"}]}\ndata: [DONE]\n")
	f.Add("data: [1,2\n")
	f.Fuzz(func(t *testing.T, s string) {
		smp, _ := readStream(strings.NewReader(s), time.Now())
		if smp.status == "" && (smp.tokens < 0 || smp.e2e < smp.ttft) {
			t.Errorf("%q: %+v", s, smp)
		}
	})
}

// A server that cannot be reached, or that refuses the warm-up, is named
// in the error with what went wrong.
func TestWarmUpErrorSaysWhy(t *testing.T) {
	o := Options{Unix: filepath.Join(t.TempDir(), "none.sock"), Concurrency: []int{1}, Requests: 1, PromptTokens: 4, MaxTokens: 1, Vocab: 300}
	_, err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), o.Unix) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("a missing socket: %v", err)
	}
	o.Unix, o.Model = serve(t, nil), "nope"
	_, err = Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "failed: 404: ") || !strings.Contains(err.Error(), "model_not_found") {
		t.Errorf("an unknown model: %v", err)
	}
}
