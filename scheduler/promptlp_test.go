package scheduler

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
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
	all := twinRows(t, m, p)
	want := make([]TokenLogprob, len(p)-1)
	for k := range want {
		want[k] = *Logprobs(all.Row(k), p[k+1], 2)
	}
	b, sr := bothEngines(t, m, r)
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

// TestEndLogprob: an answer that an end-of-generation token ends reports
// that token's logprob (from the logits before any bias) on its last
// event, after all its text, in both engines; without Logprobs it has none.
func TestEndLogprob(t *testing.T) {
	m, r := tinyRef(t, 64)
	p := prompt(5, 20)
	eos := m.Tok.EOS()
	want := Logprobs(twinRows(t, m, p).Row(len(p)-1), eos, 1)
	b, sr := bothEngines(t, m, r)
	sp := sample.Greedy()
	sp.LogitBias = []sample.Bias{{ID: eos, Value: 100}}
	for name, e := range map[string]Engine{"batcher": b, "serial": sr} {
		for _, logprobs := range []bool{true, false} {
			req := Request{Prompt: p, MaxTokens: 4, Sample: sp, Logprobs: logprobs, TopLogprobs: 1}
			var ends []*TokenLogprob
			var res Result
			afterEnd := false
			for ev := range submit(t, e, context.Background(), req) {
				if len(ends) > 0 && (ev.Text != "" || len(ev.Logprobs) > 0 || ev.End != nil) {
					afterEnd = true
				}
				if ev.End != nil {
					ends = append(ends, ev.End)
				}
				if ev.Done {
					res = ev.Result
				}
			}
			if res.Err != nil || res.FinishReason != FinishStop || res.Generated != 0 || afterEnd {
				t.Fatalf("%s: %+v, events after the end: %v", name, res, afterEnd)
			}
			switch {
			case !logprobs && len(ends) != 0:
				t.Errorf("%s: an end logprob not asked for", name)
			case logprobs && (len(ends) != 1 || ends[0].ID != eos || math.Abs(float64(ends[0].Logprob-want.Logprob)) > 1e-4 || len(ends[0].Top) != 1 || ends[0].Top[0].ID != want.Top[0].ID):
				t.Errorf("%s: end logprobs %+v, want %+v", name, ends, want)
			}
		}
	}
}

// TestPromptLogprobsPreempted: scored prompts in a cache too small for all
// of them are preempted and recomputed; each still gets every prompt
// token's logprob once (none scored twice across the recompute) and the
// answer it would have alone.
func TestPromptLogprobsPreempted(t *testing.T) {
	m, r := tinyRef(t, 10)
	o := BatchOptions{Tuning: tuning()}
	o.MaxBatchTokens = 16
	e := newBatcher(t, r, m, o)
	type job struct {
		req    Request
		want   []TokenLogprob
		answer []int32
		events <-chan Event
	}
	var jobs []job
	for i, n := range []int{20, 90, 20, 90} {
		p := prompt(i, n)
		all := twinRows(t, m, p)
		want := make([]TokenLogprob, len(p)-1)
		for k := range want {
			want[k] = *Logprobs(all.Row(k), p[k+1], 0)
		}
		req := Request{Prompt: p, MaxTokens: 60, Sample: sample.Params{Temperature: 0.9, TopP: 1, Seed: uint64(10 + i)}, IgnoreEOS: true}
		jobs = append(jobs, job{req: req, want: want, answer: alone(t, m, req)})
	}
	for i := range jobs {
		req := jobs[i].req
		req.PromptLogprobs = true
		jobs[i].events = submit(t, e, context.Background(), req)
	}
	for i, j := range jobs {
		var got []TokenLogprob
		scored := 0
		var res Result
		for ev := range j.events {
			if ev.PromptLogprobs != nil {
				scored++
				got = ev.PromptLogprobs
			}
			if ev.Done {
				res = ev.Result
			}
		}
		if res.Err != nil || scored != 1 || len(got) != len(j.want) {
			t.Fatalf("request %d: %d events with prompt logprobs, %d of %d; %v", i, scored, len(got), len(j.want), res.Err)
		}
		for k := range j.want {
			if got[k].ID != j.want[k].ID || math.Abs(float64(got[k].Logprob-j.want[k].Logprob)) > 1e-4 {
				t.Fatalf("request %d, prompt token %d: %+v, want %+v", i, k+1, got[k], j.want[k])
			}
		}
		if !slices.Equal(res.CompletionToken, j.answer) {
			t.Errorf("request %d: answer %v, alone %v", i, res.CompletionToken, j.answer)
		}
	}
	if e.Stats().Preemptions == 0 {
		t.Error("no preemption: the test does not test it")
	}
}

// twinRows is the reference backend's logits for every row of p, read in
// one step of a fresh sequence.
func twinRows(t *testing.T, m *model.Model, p []int32) *backends.Logits {
	t.Helper()
	tr, err := ref.Backend{}.Load(m, backends.LoadOptions{MaxContext: 256, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	seq, err := backends.NewSequence(tr, 256)
	if err != nil {
		t.Fatal(err)
	}
	all, err := seq.Forward(context.Background(), p, backends.LogitsAll)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// bothEngines is a batcher on r and a serial engine on a runner of its own.
func bothEngines(t *testing.T, m *model.Model, r backends.Runner) (*Batcher, *Serial) {
	t.Helper()
	b := newBatcher(t, r, m, BatchOptions{Tuning: tuning()})
	_, r2 := tinyRef(t, 16)
	sr, err := NewSerial(r2, m.Tok, SerialOptions{QueueLength: 1, MaxContext: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sr.Close() })
	return b, sr
}
