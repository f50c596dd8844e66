package constrain

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/tokenizer"
)

// vocab loads a tokenizer of ../shared's llama.cpp vocabularies.
func vocab(t testing.TB, name string) *tokenizer.Tokenizer {
	t.Helper()
	path := filepath.Join("..", "..", "..", "shared", "testdata", "tokenizer", "llama.cpp-vocab", "ggml-vocab-"+name+".gguf")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("shared test data %s is absent", path)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// allowedAlone is Mask's twin: a token's bytes b run alone from st.
func allowedAlone(b []byte, st jsonState) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		next, ok := st.step(c)
		if !ok {
			return false
		}
		st = next
	}
	return true
}

// TestMaskGenerates: on two real vocabularies (SentencePiece and byte-level
// BPE), answers drawn from random logits under the mask are JSON objects:
// every step allows exactly the tokens that run alone from its state (and
// an end-of-generation token once done), and every answer that ends is
// valid for encoding/json.
func TestMaskGenerates(t *testing.T) {
	for _, name := range []string{"llama-spm", "deepseek-llm"} {
		t.Run(name, func(t *testing.T) {
			tok := vocab(t, name)
			rng := rand.New(rand.NewPCG(1, 2))
			logits := make([]float32, tok.Len())
			noise := make([]float32, 2*tok.Len()) // each step's logits: a window of it
			for i := range noise {
				noise[i] = float32(rng.NormFloat64() * 3)
			}
			done := 0
			for answer := range 12 {
				j := NewJSON(tok)
				var text []byte
				for step := 0; step < 400; step++ {
					copy(logits, noise[rng.IntN(tok.Len()):])
					j.Mask(logits)
					if answer < 2 && step < 30 && step%2 == 0 { // the twin is slow: some steps of two answers
						for id := range int32(tok.Len()) {
							want := allowedAlone(j.v.bytes[id], j.st) || j.Done() && tok.IsEOG(id)
							if got := !math.IsInf(float64(logits[id]), -1); got != want {
								t.Fatalf("step %d after %q: token %d (%q) allowed %v, alone %v", step, text, id, tok.TokenBytes(id, false), got, want)
							}
						}
					}
					id := argmax(logits)
					if math.IsInf(float64(logits[id]), -1) {
						t.Fatalf("after %q nothing is allowed", text)
					}
					if tok.IsEOG(id) {
						if !j.Done() {
							t.Fatalf("an end of generation after %q, not done", text)
						}
						break
					}
					j.Accept(id)
					text = append(text, tok.TokenBytes(id, false)...)
				}
				if j.Done() {
					done++
					if !json.Valid(text) {
						t.Errorf("answer %d is not valid JSON: %q", answer, text)
					}
				}
			}
			if done == 0 {
				t.Error("no answer closed its object in 400 tokens")
			}
			t.Logf("%d of 12 answers closed; trie of %d nodes for %d tokens", done, tok.Trie().Nodes(), tok.Len())
		})
	}
}

func argmax(xs []float32) int32 {
	best := 0
	for i, x := range xs {
		if x > xs[best] {
			best = i
		}
	}
	return int32(best)
}

// BenchmarkMask: one step's mask at a value's start and inside a string
// (where nearly every token is allowed, so the walk visits most of the
// trie).
func BenchmarkMask(b *testing.B) {
	for _, name := range []string{"llama-spm", "deepseek-llm"} {
		tok := vocab(b, name)
		for _, at := range []struct{ name, text string }{{"value", `{"a":`}, {"string", `{"a":"b`}} {
			b.Run(name+"/"+at.name, func(b *testing.B) {
				j := NewJSON(tok)
				_, j.st = run([]byte(at.text))
				logits := make([]float32, tok.Len())
				for b.Loop() {
					j.Mask(logits)
				}
			})
		}
	}
}

// BenchmarkNewJSON: a request's set-up (the tokenizer's tables made once
// before the loop).
func BenchmarkNewJSON(b *testing.B) {
	for _, name := range []string{"llama-spm", "deepseek-llm"} {
		tok := vocab(b, name)
		NewJSON(tok)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				NewJSON(tok)
			}
		})
	}
}

// BenchmarkTables: making a vocabulary's tables, the trie included, as the
// first JSON request for a model does (in its request's goroutine:
// Prepare).
func BenchmarkTables(b *testing.B) {
	for _, name := range []string{"llama-spm", "deepseek-llm"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				tok := vocab(b, name)
				b.StartTimer()
				Prepare(tok)
			}
		})
	}
}
