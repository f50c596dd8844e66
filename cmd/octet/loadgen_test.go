package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `octet bench --unix` drives a real `octet serve` and prints one JSON
// object per concurrency level with the documented keys, and the plot.
func TestBenchAgainstServe(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, err := octet(t, "synth", "--shape", "tiny", "--type", "q8_0", "--out", filepath.Join(dir, "tiny.gguf")); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	sockDir, err := os.MkdirTemp("", "ob")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "s")
	cfg := filepath.Join(sockDir, "octet.toml")
	if err := os.WriteFile(cfg, []byte("[log]\nrequests = false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command(binary, "serve", "--config", cfg, "--models", dir, "--listen", "", "--socket", sock, "--backend", "ref")
	var log strings.Builder
	srv.Stderr = &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Signal(os.Interrupt)
		srv.Wait()
		if t.Failed() {
			t.Logf("serve's log:\n%s", log.String())
		}
	}()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 500 {
			t.Fatal("no socket")
		}
		time.Sleep(10 * time.Millisecond)
	}
	plot := filepath.Join(dir, "plot.svg")
	var out, stderr string
	for range 100 { // the model may still be loading: the warm-up request then fails
		if out, stderr, err = octet(t, "bench", "--unix", sock, "--model", "tiny", "--concurrency", "1,2", "--requests", "4",
			"--prompt-tokens", "8", "--max-tokens", "4", "--shared-prefix", "3", "--vocab", "300", "--json", "--plot", plot); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	var levels []map[string]any
	if err := json.Unmarshal([]byte(out), &levels); err != nil || len(levels) != 2 {
		t.Fatalf("%v: %s", err, out)
	}
	for _, l := range levels {
		for _, k := range []string{"concurrency", "requests", "errors", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "tokens_per_s"} {
			if _, ok := l[k]; !ok {
				t.Errorf("level %v lacks %s", l, k)
			}
		}
		if l["errors"].(float64) != 0 || l["tokens_per_s"].(float64) <= 0 {
			t.Errorf("level %v", l)
		}
	}
	if b, err := os.ReadFile(plot); err != nil || !strings.HasPrefix(string(b), "<svg") {
		t.Errorf("plot: %v", err)
	}
	if _, stderr, err := octet(t, "bench", "--unix", sock, "--url", "http://x", "--model", "tiny"); err == nil || !strings.Contains(stderr, "exactly one") {
		t.Errorf("--url with --unix: %v %s", err, stderr)
	}
	// The in-process mode's flags do nothing against a server: refused.
	if _, stderr, err := octet(t, "bench", "--unix", sock, "--model", "tiny", "--gen-tokens", "16"); err == nil || !strings.Contains(stderr, "--gen-tokens is for a model run in this process") {
		t.Errorf("--gen-tokens in server mode: %v %s", err, stderr)
	}
	// A run names its prompts' seed, and the seed repeats them.
	_, stderr, err = octet(t, "bench", "--unix", sock, "--model", "tiny", "--concurrency", "1", "--requests", "1", "--prompt-tokens", "8", "--max-tokens", "2", "--vocab", "300", "--seed", "42")
	if err != nil || !strings.Contains(stderr, "prompts from --seed 42") {
		t.Errorf("--seed 42: %v %s", err, stderr)
	}
}
