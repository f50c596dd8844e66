package scheduler

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model/sample"
)

// TestPromptLogprobs: with PromptLogprobs, both engines give each prompt
// token after the first its logprob under one forward pass of the whole
// prompt (the twin, computed here on a fresh sequence), whatever the
// prefill chunking, and though the prompt's prefix is in the batcher's
// prefix cache; the answer is the one given without them.
func TestPromptLogprobs(t *testing.T) {
	m, r := tinyRef(t, 64)
	p := prompt(3, 150) // longer than the prefill chunk of 64
	// The twin: every row of the prompt in one step.
	tr, err := ref.Backend{}.Load(m, backends.LoadOptions{MaxContext: 256, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	seq, err := backends.NewSequence(tr, 256)
	if err != nil {
		t.Fatal(err)
	}
	all, err := seq.Forward(context.Background(), p, backends.LogitsAll)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]TokenLogprob, len(p)-1)
	for k := range want {
		want[k] = *Logprobs(all.Row(k), p[k+1], 2)
	}

	b := newBatcher(t, r, m, BatchOptions{Tuning: tuning()})
	_, r2 := tinyRef(t, 16)
	sr, err := NewSerial(r2, m.Tok, SerialOptions{QueueLength: 1, MaxContext: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	req := Request{Prompt: p, MaxTokens: 4, Sample: sample.Greedy(), IgnoreEOS: true, TopLogprobs: 2, PrefillChunk: 64}
	// The prompt's blocks go into the prefix cache first.
	if _, res := collect(t, submit(t, b, context.Background(), req)); res.Err != nil {
		t.Fatal(res.Err)
	}
	plain := alone(t, m, req)
	req.PromptLogprobs = true
	for name, e := range map[string]Engine{"batcher": b, "serial": sr} {
		var got []TokenLogprob
		events := 0
		var res Result
		for ev := range submit(t, e, context.Background(), req) {
			if ev.PromptLogprobs != nil {
				events++
				got = ev.PromptLogprobs
			}
			if ev.Done {
				res = ev.Result
			}
		}
		if res.Err != nil || events != 1 || len(got) != len(want) {
			t.Fatalf("%s: %d events with prompt logprobs, %d of %d; %v", name, events, len(got), len(want), res.Err)
		}
		for k := range want {
			g, w := got[k], want[k]
			if g.ID != w.ID || math.Abs(float64(g.Logprob-w.Logprob)) > 1e-4 || len(g.Top) != 2 || g.Top[0].ID != w.Top[0].ID {
				t.Fatalf("%s: prompt token %d: %+v, want %+v", name, k+1, g, w)
			}
		}
		if !slices.Equal(res.CompletionToken, plain) {
			t.Errorf("%s: answer %v with prompt logprobs, %v without", name, res.CompletionToken, plain)
		}
	}
}
