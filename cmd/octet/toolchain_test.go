package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The model toolchain on the real binary: eval, quantize, prune, with
// stories260K and the evaluation sets in ../shared.

func runJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out, stderr, err := octet(t, args...)
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, stderr)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%v: output %q: %v", args, out, err)
	}
}

func TestEvalPerplexity(t *testing.T) {
	model := needShared(t, "models/stories260K/stories260K-f32.gguf")
	text := needShared(t, "eval/wikitext-2/wiki.test.raw")
	var auto, ref struct {
		PPL          float64 `json:"ppl"`
		TokensScored int     `json:"tokens_scored"`
		Backend      string  `json:"backend"`
	}
	args := []string{"eval", "perplexity", "--model", model, "--file", text, "--ctx", "128", "--chunks", "6", "--json"}
	runJSON(t, &auto, args...)
	runJSON(t, &ref, append(args, "--backend", "ref")...)
	if auto.TokensScored != 6*63 || ref.TokensScored != 6*63 {
		t.Errorf("tokens scored %d, %d; want 6 chunks × 63", auto.TokensScored, ref.TokensScored)
	}
	if ref.Backend != "ref" || math.Abs(auto.PPL/ref.PPL-1) > 0.01 || auto.PPL < 20 || auto.PPL > 500 {
		t.Errorf("ppl %v on %s, %v on %s", auto.PPL, auto.Backend, ref.PPL, ref.Backend)
	}
}

// Without --ctx, chunks are the model's trained context (128 tokens for
// stories260K) when it is under 512; a --ctx past it runs, with a warning.
func TestEvalCtxDefault(t *testing.T) {
	model := needShared(t, "models/stories260K/stories260K-f32.gguf")
	text := needShared(t, "eval/wikitext-2/wiki.test.raw")
	var res struct {
		Ctx int `json:"ctx"`
	}
	runJSON(t, &res, "eval", "perplexity", "--model", model, "--file", text, "--chunks", "1", "--json", "--backend", "ref")
	if res.Ctx != 128 {
		t.Errorf("default chunk length %d, want the model's 128", res.Ctx)
	}
	_, stderr, err := octet(t, "eval", "perplexity", "--model", model, "--file", text, "--chunks", "1", "--ctx", "160", "--backend", "ref")
	if err != nil || !strings.Contains(stderr, "--ctx 160 runs past stories260K-f32.gguf's trained context of 128 tokens") {
		t.Errorf("--ctx past the trained context: %v, stderr %q", err, stderr)
	}
}

func TestEvalKLDAndChoice(t *testing.T) {
	f32 := needShared(t, "models/stories260K/stories260K-f32.gguf")
	q8 := needShared(t, "models/stories260K/stories260K-q8_0-f16mix.gguf")
	text := needShared(t, "eval/wikitext-2/wiki.test.raw")
	var rep map[string]any
	runJSON(t, &rep, "eval", "kld", "--model", q8, "--base", f32, "--file", text, "--ctx", "128", "--chunks", "8", "--json", "--gate")
	for _, k := range []string{"kld_mean", "kld_p99", "kld_median", "top1", "ppl_ratio"} {
		if _, ok := rep[k].(float64); !ok {
			t.Errorf("kld output lacks %s: %v", k, rep)
		}
	}
	if k := rep["kld_mean"].(float64); k <= 0 || k > 0.02 {
		t.Errorf("Q8_0 kld_mean %v", k)
	}
	if g, _ := rep["gate"].(map[string]any); g == nil || g["pass"] != true {
		t.Errorf("gate %v", rep["gate"])
	}
	needShared(t, "eval/hellaswag/hellaswag_val_full.txt.bz2")
	needShared(t, "eval/piqa/valid.jsonl")
	for _, set := range []string{"hellaswag", "piqa"} {
		var res struct {
			Tasks   int     `json:"tasks"`
			AccNorm float64 `json:"acc_norm"`
		}
		runJSON(t, &res, "eval", set, "--model", f32, "--tasks", "12", "--json", "--file", filepath.Join(shared, "eval", set, map[string]string{"hellaswag": "hellaswag_val_full.txt.bz2", "piqa": "valid.jsonl"}[set]))
		if res.Tasks != 12 || res.AccNorm < 0 || res.AccNorm > 1 {
			t.Errorf("%s: %+v", set, res)
		}
	}
}

// TestQuantizePruneGate: quantize writes an int8 model that passes the gate
// and says so in its metadata; a harsh prune is refused and writes nothing;
// a 2:4 prune without the gate is written.
func TestQuantizePruneGate(t *testing.T) {
	f32 := needShared(t, "models/stories260K/stories260K-f32.gguf")
	text := needShared(t, "eval/wikitext-2/wiki.test.raw")
	dir := t.TempDir()
	q8 := filepath.Join(dir, "q8.gguf")
	var q struct {
		Written bool `json:"written"`
		Gate    struct {
			Pass bool `json:"pass"`
		} `json:"gate"`
		Report struct {
			KLDMean float64 `json:"kld_mean"`
			Top1    float64 `json:"top1"`
		} `json:"report"`
	}
	runJSON(t, &q, "quantize", "--in", f32, "--out", q8, "--eval-file", text, "--ctx", "128", "--eval-chunks", "16", "--json")
	if !q.Written || !q.Gate.Pass || q.Report.KLDMean > 0.02 || q.Report.Top1 < 0.9 {
		t.Errorf("quantize: %+v", q)
	}
	out, _, err := octet(t, "inspect", q8)
	for _, k := range []string{"octet.quant.type", "octet.quality.gate", "octet.quality.kld_mean", "Q8_0"} {
		if err != nil || !strings.Contains(out, k) {
			t.Errorf("inspect lacks %s: %v", k, err)
		}
	}

	harsh := filepath.Join(dir, "harsh.gguf")
	_, stderr, err := octet(t, "prune", "--in", f32, "--out", harsh, "--ffn-keep", "0.25", "--heads-keep", "0.5",
		"--eval-file", text, "--ctx", "128", "--eval-chunks", "16")
	if err == nil || !strings.Contains(stderr, "quality gate failed") {
		t.Errorf("harsh prune: %v: %s", err, stderr)
	}
	if _, err := os.Stat(harsh); !os.IsNotExist(err) {
		t.Errorf("the refused model was written: %v", err)
	}

	sparse := filepath.Join(dir, "sparse.gguf")
	if _, stderr, err := octet(t, "prune", "--in", q8, "--out", sparse, "--pattern", "2:4", "--no-gate"); err != nil {
		t.Fatalf("2:4 prune: %v: %s", err, stderr)
	}
	out, _, err = octet(t, "inspect", sparse)
	if err != nil || !strings.Contains(out, "octet.pruning.pattern") || !strings.Contains(out, "octet.quality.gate") {
		t.Errorf("inspect of the 2:4 model: %v\n%s", err, out)
	}

	// Structured prune with calibration and the gate off: smaller, runs.
	narrow := filepath.Join(dir, "narrow.gguf")
	if _, stderr, err := octet(t, "prune", "--in", f32, "--out", narrow, "--ffn-keep", "0.75", "--heads-keep", "0.5",
		"--calib", text, "--calib-chunks", "4", "--ctx", "128", "--eval-chunks", "4", "--no-gate"); err != nil {
		t.Fatalf("structured prune: %v: %s", err, stderr)
	}
	a, _ := os.Stat(f32)
	b, err := os.Stat(narrow)
	if err != nil || b.Size() >= a.Size()*17/20 {
		t.Fatalf("pruned file: %v; %d bytes of %d", err, b.Size(), a.Size())
	}
	var p struct {
		PPL float64 `json:"ppl"`
	}
	runJSON(t, &p, "eval", "perplexity", "--model", narrow, "--file", text, "--ctx", "128", "--chunks", "2", "--json", "--backend", "ref")
	if math.IsNaN(p.PPL) || p.PPL < 1 {
		t.Errorf("pruned model ppl %v", p.PPL)
	}
}

func TestToolchainBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.gguf")
	os.WriteFile(bad, []byte("GGUF\x03\x00\x00\x00garbage"), 0o644)
	text := filepath.Join(dir, "t.txt")
	os.WriteFile(text, []byte("hello"), 0o644)
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	tiny := filepath.Join(dir, "tiny.gguf")
	if _, stderr, err := octet(t, "synth", "--shape", "tiny", "--type", "f32", "--out", tiny); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	out := filepath.Join(dir, "out.gguf")
	link := filepath.Join(dir, "link.gguf")
	os.Symlink(tiny, link)
	sum := func() string { b, _ := os.ReadFile(tiny); return string(b) }
	before := sum()
	for _, args := range [][]string{
		{"eval", "perplexity", "--model", bad, "--file", text},
		{"eval", "perplexity", "--model", tiny, "--file", empty},
		{"eval", "perplexity", "--model", tiny, "--file", text, "--ctx", "128"},
		{"eval", "hellaswag", "--model", tiny, "--file", text},
		{"quantize", "--in", bad, "--out", out, "--no-gate"},
		{"quantize", "--in", tiny, "--out", out, "--type", "q4_k", "--no-gate"},
		{"quantize", "--in", tiny, "--out", out},
		{"prune", "--in", tiny, "--out", out, "--pattern", "2-4", "--no-gate"},
		{"prune", "--in", tiny, "--out", out, "--sparsity", "1.5", "--no-gate"},
		{"prune", "--in", tiny, "--out", out, "--method", "wanda", "--sparsity", "0.5", "--no-gate"},
		{"prune", "--in", tiny, "--out", out, "--no-gate"},
	} {
		_, stderr, err := octet(t, args...)
		if err == nil {
			t.Errorf("%v: succeeded", args)
			continue
		}
		if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 || !strings.HasPrefix(stderr, "octet: ") {
			t.Errorf("%v: stderr is not one octet: line: %q", args, stderr)
		}
	}
	// Refusals made before any work, each for its reason.
	for _, c := range []struct {
		args []string
		want string
	}{
		// The output would overwrite an input (itself, through a link, or
		// the evaluation text).
		{[]string{"quantize", "--in", tiny, "--out", tiny, "--no-gate"}, "is the --in file"},
		{[]string{"quantize", "--in", tiny, "--out", link, "--no-gate"}, "is the --in file"},
		{[]string{"prune", "--in", tiny, "--out", tiny, "--sparsity", "0.5", "--no-gate"}, "is the --in file"},
		{[]string{"quantize", "--in", tiny, "--out", text, "--eval-file", text}, "is the --eval-file file"},
		// An output that cannot be written.
		{[]string{"quantize", "--in", tiny, "--out", filepath.Join(dir, "nodir", "o.gguf"), "--no-gate"}, "does not exist"},
		{[]string{"quantize", "--in", tiny, "--out", dir, "--no-gate"}, "is a folder"},
		{[]string{"quantize", "--in", tiny, "--no-gate"}, `required flag(s) "out" not set`},
		// Values out of range (a negative chunk count panicked).
		{[]string{"quantize", "--in", tiny, "--out", out, "--smooth", "0.5", "--calib", text, "--calib-chunks", "-4"}, "--calib-chunks must be at least 1"},
		{[]string{"quantize", "--in", tiny, "--out", out, "--calib-chunks", "0", "--calib", text}, "--calib-chunks must be at least 1"},
		{[]string{"quantize", "--in", tiny, "--out", out, "--ctx", "1", "--eval-file", text}, "--ctx must be at least 4"},
		{[]string{"prune", "--in", tiny, "--out", out, "--sparsity", "0.5", "--gate-max-kld", "-1", "--eval-file", text}, "KLD bound -1"},
		{[]string{"prune", "--in", tiny, "--out", out, "--sparsity", "0.5", "--threads", "-1", "--no-gate"}, "--threads must be 0 or more"},
		{[]string{"eval", "perplexity", "--model", tiny, "--file", text, "--ctx", "-5"}, "--ctx must be at least 4"},
		{[]string{"eval", "perplexity", "--model", tiny, "--file", text, "--chunks", "-1"}, "--chunks must be 0 or more"},
		{[]string{"eval", "kld", "--model", tiny, "--base", tiny, "--file", text, "--gate-max-kld", "0.1"}, "pass --gate too"},
		{[]string{"eval", "hellaswag", "--model", tiny, "--tasks", "-1"}, "--tasks must be 0 or more"},
		{[]string{"eval", "nope"}, `unknown command "nope"`},
	} {
		_, stderr, err := octet(t, c.args...)
		if err == nil || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: %v %q, want one line with %q", c.args, err, stderr, c.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed command wrote %s", out)
	}
	if sum() != before {
		t.Errorf("a refused command changed its input %s", tiny)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

// TestEvalKLDGateExitCode: `eval kld --gate` prints the report and the
// verdict, and exits 1 when the model fails the gate, so that a script or
// CI can use it.
func TestEvalKLDGateExitCode(t *testing.T) {
	dir := t.TempDir()
	tiny, q := filepath.Join(dir, "tiny.gguf"), filepath.Join(dir, "q.gguf")
	text := filepath.Join(dir, "t.txt")
	os.WriteFile(text, []byte(strings.Repeat("the cat sat on the mat and looked at the dog. ", 60)), 0o644)
	for _, args := range [][]string{
		{"synth", "--shape", "tiny", "--type", "f32", "--out", tiny},
		{"quantize", "--in", tiny, "--out", q, "--no-gate"},
	} {
		if _, stderr, err := octet(t, args...); err != nil {
			t.Fatalf("%v: %v: %s", args, err, stderr)
		}
	}
	kld := []string{"eval", "kld", "--model", q, "--base", tiny, "--file", text, "--ctx", "32", "--chunks", "4", "--gate"}
	stdout, stderr, err := octet(t, append(kld, "--gate-max-kld", "0.000000000001")...)
	if err == nil || !strings.Contains(stdout, "gate: fail") || !strings.Contains(stderr, "quality gate failed") {
		t.Errorf("a failing gate: %v\n%s%s", err, stdout, stderr)
	}
	if stdout, stderr, err := octet(t, kld...); err != nil || !strings.Contains(stdout, "gate: pass") {
		t.Errorf("a passing gate: %v\n%s%s", err, stdout, stderr)
	}
}
