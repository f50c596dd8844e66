package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends"
)

// TestBenchModel: `octet bench --model` on a synthetic model, on the
// native CPU backend and on ref, prints the figures it promises, as JSON
// and as text.
func TestBenchModel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if _, stderr, err := octet(t, "synth", "--shape", "tiny", "--type", "q8_0", "--out", path); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	for _, backend := range []string{"cpu", "ref", "auto"} {
		out, stderr, err := octet(t, "bench", "--model", path, "--backend", backend,
			"--prompt-tokens", "24", "--gen-tokens", "5", "--batch", "3", "--reps", "1", "--json")
		if err != nil {
			if backend == "cpu" && os.Getenv("OCTET_NATIVE_REQUIRED") == "" && strings.Contains(stderr, "no kernel library") {
				t.Logf("cpu backend unavailable in this build (no make native): %s", stderr)
				continue
			}
			t.Fatalf("%s: %v: %s", backend, err, stderr)
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%s: output is not one JSON object: %v\n%s", backend, err, out)
		}
		for _, k := range []string{"prefill_tokens_per_s", "decode_tokens_per_s", "batch_decode_tokens_per_s", "model_bytes", "bandwidth_gb_per_s", "decode_roofline_fraction"} {
			if v, ok := r[k].(float64); !ok || v <= 0 {
				t.Errorf("%s: %s = %v, want a positive number", backend, k, r[k])
			}
		}
		name, _ := r["backend"].(string)
		if want := map[string]string{"cpu": "cpu-", "ref": "ref", "auto": ""}[backend]; !strings.HasPrefix(name, want) || name == "" {
			t.Errorf("%s: backend %q", backend, name)
		}
		if r["batch"] != 3.0 || r["prompt_tokens"] != 24.0 || r["gen_tokens"] != 5.0 {
			t.Errorf("%s: settings not echoed: %v", backend, r)
		}
	}
	out, stderr, err := octet(t, "bench", "--model", path, "--backend", "ref", "--prompt-tokens", "8", "--gen-tokens", "2", "--batch", "2", "--reps", "1")
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	for _, want := range []string{"pp8 ", "tg2 ", "tg2×2", "of the roofline", "backend  ref"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchBadInput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if _, stderr, err := octet(t, "synth", "--shape", "tiny", "--type", "q8_0", "--out", path); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench"}, "--model"},
		{[]string{"bench", "--model", path, "--prompt-tokens", "8", "--backend", "nope"}, "unknown backend"},
		{[]string{"bench", "--model", path, "--prompt-tokens", "8", "--batch", "0"}, "--batch"},
		{[]string{"bench", "--model", path, "--prompt-tokens", "0", "--gen-tokens", "0"}, "nothing to measure"},
		{[]string{"bench", "--model", path, "--gen-tokens", "100000"}, "positions, past the model's context"},
		{[]string{"bench", "--model", filepath.Join(t.TempDir(), "missing.gguf")}, "missing.gguf"},
	} {
		_, stderr, err := octet(t, c.args...)
		if err == nil {
			t.Errorf("%v: succeeded", c.args)
			continue
		}
		if strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: stderr %q, want one line mentioning %q", c.args, stderr, c.want)
		}
	}
}

// probing is a backend with its own bandwidth probe, as the cuda one has
// (which needs a GPU): bandwidth must take its figure, or none when it
// fails, never the host's.
type probing struct {
	backends.Backend
	bw  float64
	err error
}

func (p probing) MemoryBandwidth() (float64, error) { return p.bw, p.err }

func TestBandwidthPrefersTheBackendsProbe(t *testing.T) {
	ref, err := backends.Open("ref")
	if err != nil {
		t.Fatal(err)
	}
	if bw, from := bandwidth(probing{ref, 3e12, nil}, 1); bw != 3e12 || !strings.Contains(from, "device") {
		t.Errorf("working probe: %g, %q", bw, from)
	}
	if bw, from := bandwidth(probing{ref, 0, errors.New("out of memory")}, 1); bw != 0 || !strings.Contains(from, "out of memory") {
		t.Errorf("failing probe: %g, %q; want 0 and the error", bw, from)
	}
}
