package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// The tests here build the real binary and run it as a user would.

const shared = "../../../shared"

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "octet-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "octet")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func octet(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func needShared(t *testing.T, rel string) string {
	path := filepath.Join(shared, rel)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is absent: %v", path, err)
	}
	return path
}

// TestTokenizeMatchesLlamaCpp: `octet tokenize` on stories260K gives the ids
// llama.cpp's tokenizer gives (the reference file: "== PROMPT" then ids).
func TestTokenizeMatchesLlamaCpp(t *testing.T) {
	model := needShared(t, "models/stories260K/stories260K-f32.gguf")
	ref, err := os.ReadFile(needShared(t, "models/stories260K/reference/llamacpp-tokenize-tok512.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(ref)), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		prompt := strings.TrimPrefix(lines[i], "== ")
		var want, got []int
		if err := json.Unmarshal([]byte(lines[i+1]), &want); err != nil {
			t.Fatal(err)
		}
		out, stderr, err := octet(t, "tokenize", "--model", model, prompt)
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%q: got %v, want %v", prompt, got, want)
		}
	}
}

func TestGenerateGreedy(t *testing.T) {
	model := needShared(t, "models/stories260K/stories260K-f32.gguf")
	want, err := os.ReadFile(needShared(t, "models/stories260K/reference/runc-greedy-Zoo-n60.txt"))
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := octet(t, "generate", "--model", model, "--prompt", "Zoo", "--temperature", "0", "--max-tokens", "60", "--backend", "ref")
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	if ref := strings.TrimSpace(string(want)); !strings.HasPrefix(out, ref) {
		t.Errorf("stdout %q\ndoes not start with llama2.c's %q", out, ref)
	}
	timing := regexp.MustCompile(`prompt: \d+ tok, [\d.]+ tok/s; gen: \d+ tok, [\d.]+ tok/s`)
	if !timing.MatchString(stderr) {
		t.Errorf("stderr lacks the timing line: %q", stderr)
	}
}

func TestSynthInspectGenerate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if _, stderr, err := octet(t, "synth", "--shape", "tiny", "--type", "q8_0", "--out", path); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	out, _, err := octet(t, "inspect", path)
	if err != nil || !strings.Contains(out, "octet.synth.shape") || !strings.Contains(out, "blk.1.ffn_up.weight") {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	// Same seed, same text.
	a, _, err1 := octet(t, "generate", "--model", path, "--prompt", "hi", "--seed", "5", "--max-tokens", "8", "--ignore-eos")
	b, _, err2 := octet(t, "generate", "--model", path, "--prompt", "hi", "--seed", "5", "--max-tokens", "8", "--ignore-eos")
	if err1 != nil || err2 != nil || a != b {
		t.Errorf("seeded runs differ or failed: %v %v %q %q", err1, err2, a, b)
	}
}

func TestBadInputIsOneLine(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	os.WriteFile(bad, []byte("GGUF\x03\x00\x00\x00garbage"), 0o644)
	for _, args := range [][]string{
		{"generate", "--model", bad, "--prompt", "x"},
		{"inspect", bad},
		{"tokenize", "--model", bad, "x"},
		{"generate", "--model", filepath.Join(t.TempDir(), "missing.gguf")},
		{"synth", "--shape", "nope", "--out", bad},
		{"generate", "--model", bad, "--temperature", "-1"},
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
	if _, stderr, err := octet(t, "generate", "--model", bad, "--max-tokens", "-5"); err == nil || !strings.Contains(stderr, "--max-tokens must be at least 1") {
		t.Errorf("--max-tokens -5: %v %q", err, stderr)
	}
}

// TestExitCode: an interrupt ends with 128 + the signal (130 for SIGINT,
// 143 for SIGTERM), as a shell's job stopped by it; other errors, a
// cancellation no signal caused among them, with 1.
func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		sig  os.Signal
		want int
	}{{nil, nil, 0}, {nil, os.Interrupt, 0}, {fmt.Errorf("eval: %w", context.Canceled), os.Interrupt, 130},
		{context.Canceled, syscall.SIGTERM, 143}, {context.Canceled, nil, 1}, {errors.New("x"), os.Interrupt, 1}} {
		if got := exitCode(c.err, c.sig); got != c.want {
			t.Errorf("exitCode(%v, %v) = %d, want %d", c.err, c.sig, got, c.want)
		}
	}
}
