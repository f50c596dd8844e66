package scheduler

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/octet-dev/octet/model/constrain"
	"github.com/octet-dev/octet/model/sample"
)

// TestJSONAnswers: a JSON request's answer on either engine is one JSON
// object, ending "stop" when it closes (no end-of-generation token needed),
// or a prefix of one cut at max_tokens ("length"); the two engines give the
// same text for the same seed.
func TestJSONAnswers(t *testing.T) {
	m, r := tinyRef(t, 64)
	b := newBatcher(t, r, m, BatchOptions{Tuning: tuning()})
	_, r2 := tinyRef(t, 8)
	sr, err := NewSerial(r2, m.Tok, SerialOptions{QueueLength: 1, MaxContext: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	schema, err := constrain.CompileSchema([]byte(`{"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"integer"},"c":{"enum":["x","y"]}},"required":["a","b","c"]}`))
	if err != nil {
		t.Fatal(err)
	}
	shape := regexp.MustCompile(`^\{ ?"a": ?(true|false), ?"b": ?-?\d+, ?"c": ?"[xy]" ?\}$`)
	closed := 0
	for seed := range uint64(8) {
		req := Request{Prompt: m.Tok.Encode("Once upon a time", true, false), MaxTokens: 100, JSON: true, IgnoreEOS: true,
			Sample: sample.Params{Temperature: 0.8, TopP: 1, Seed: seed}}
		if seed%2 == 1 { // held to a schema's texts instead
			req.Schema = schema
		}
		text, res := collect(t, submit(t, b, context.Background(), req))
		text2, res2 := collect(t, submit(t, sr, context.Background(), req))
		if res.Err != nil || res2.Err != nil {
			t.Fatalf("seed %d: %v, %v", seed, res.Err, res2.Err)
		}
		if text != text2 || res.FinishReason != res2.FinishReason {
			t.Errorf("seed %d: batcher %q (%s), serial %q (%s)", seed, text, res.FinishReason, text2, res2.FinishReason)
		}
		switch res.FinishReason {
		case FinishStop:
			closed++
			if !json.Valid([]byte(text)) || !strings.HasPrefix(strings.TrimSpace(text), "{") || !strings.HasSuffix(text, "}") {
				t.Errorf("seed %d: %q is not one JSON object", seed, text)
			}
			if req.Schema != nil && !shape.MatchString(text) {
				t.Errorf("seed %d: %q is not one the schema allows", seed, text)
			}
		case FinishLength:
			if res.Generated != req.MaxTokens || !strings.HasPrefix(strings.TrimSpace(text), "{") {
				t.Errorf("seed %d: cut after %d tokens: %q", seed, res.Generated, text)
			}
		}
	}
	if closed == 0 {
		t.Error("no answer closed its object in 100 tokens")
	}
	t.Logf("%d of 8 answers closed", closed)
}
