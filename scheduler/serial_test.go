package scheduler

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/sample"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tinyModel is tinyRef with the KV blocks of one 128-position sequence.
func tinyModel(t *testing.T) (*model.Model, backends.Runner) { return tinyRef(t, 8) }

func collect(t *testing.T, ch <-chan Event) (string, Result) {
	t.Helper()
	return collectFrom(t, ch, false)
}

// collectRest is collect for a stream whose first events were read.
func collectRest(t *testing.T, ch <-chan Event) (string, Result) {
	t.Helper()
	return collectFrom(t, ch, true)
}

func collectFrom(t *testing.T, ch <-chan Event, partial bool) (string, Result) {
	t.Helper()
	var b strings.Builder
	tokens, n, started := 0, 0, false
	for ev := range ch {
		n++
		if ev.Started {
			if n != 1 {
				t.Errorf("Started came as event %d, not first", n)
			}
			started = true
		}
		b.WriteString(ev.Text)
		if ev.Text != "" && ev.Tokens < tokens {
			t.Errorf("event token count fell from %d to %d", tokens, ev.Tokens)
		}
		tokens = max(tokens, ev.Tokens)
		if ev.Done {
			// The text events count the tokens the result counts (the
			// count a reader keeps when the final event is lost).
			if ev.Result.Err == nil && tokens != ev.Result.Generated && b.Len() > 0 {
				t.Errorf("text events counted %d tokens, the result %d", tokens, ev.Result.Generated)
			}
			// A request that ran (it generated, or ended well) said when
			// it started, unless its first events were read before.
			if !started && !partial && (ev.Result.Generated > 0 || ev.Result.Err == nil) {
				t.Errorf("a request that ran (%+v) had no Started event", ev.Result)
			}
			return b.String(), ev.Result
		}
	}
	t.Fatal("stream closed without a final event")
	return "", Result{}
}

// The serial engine gives the text Generate gives for the same request.
func TestSerialMatchesGenerate(t *testing.T) {
	m, r := tinyModel(t)
	req := Request{Prompt: m.Tok.Encode("hello", true, false), MaxTokens: 12, Sample: sample.Params{Temperature: 0.9, TopP: 1, Seed: 7}, IgnoreEOS: true}
	seq, err := backends.NewSequence(r, 128)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	if _, err := Generate(context.Background(), seq, m.Tok, req, func(_ int32, s string) error { want.WriteString(s); return nil }); err != nil {
		t.Fatal(err)
	}
	e, err := NewSerial(r, m.Tok, SerialOptions{QueueLength: 2, MaxContext: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for range 2 { // the sequence is reused: the second run must match too
		ch, err := e.Submit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		got, res := collect(t, ch)
		if res.Err != nil || got != want.String() || res.Generated != 12 || res.FinishReason != FinishLength {
			t.Fatalf("got %q %+v, want %q", got, res, want.String())
		}
	}
	if st := e.Stats(); st.Served != 2 || st.MeanService <= 0 || st.Queued != 0 || st.Running != 0 {
		t.Errorf("stats %+v", st)
	}
}

// gate blocks every Forward until the test lets one through.
type gate struct {
	backends.Runner
	entered chan struct{}
	pass    chan struct{}
}

func (g *gate) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	g.entered <- struct{}{}
	<-g.pass
	return g.Runner.Forward(ctx, b)
}

// A full queue refuses with ErrQueueFull and a Retry-After estimate; a
// stuck step stops the heartbeat; a cancelled request ends with its
// context's error and frees the loop for the next.
func TestSerialQueueCancelHeartbeat(t *testing.T) {
	m, r := tinyModel(t)
	g := &gate{Runner: r, entered: make(chan struct{}), pass: make(chan struct{})}
	e, err := NewSerial(g, m.Tok, SerialOptions{QueueLength: 1, MaxContext: 128, Idle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	req := Request{Prompt: m.Tok.Encode("a", true, false), MaxTokens: 3, Sample: sample.Greedy(), IgnoreEOS: true}
	ctxA, cancelA := context.WithCancel(context.Background())
	a, err := e.Submit(ctxA, req)
	if err != nil {
		t.Fatal(err)
	}
	<-g.entered // A is in its first step, and stays there
	b, err := e.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Submit(context.Background(), req); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third submit: %v, want ErrQueueFull", err)
	}
	st := e.Stats()
	if st.Queued != 1 || st.Running != 1 || st.RetryAfter() < time.Second {
		t.Errorf("stats %+v, retry after %s", st, st.RetryAfter())
	}
	beat := st.Beat
	time.Sleep(20 * time.Millisecond) // twenty idle periods: a live loop would beat
	if now := e.Stats().Beat; !now.Equal(beat) {
		t.Errorf("heartbeat moved from %v to %v while the loop was stuck", beat, now)
	}
	cancelA()
	g.pass <- struct{}{} // A's step ends; A sees its cancellation
	for ev := range a {
		if ev.Done && !errors.Is(ev.Result.Err, context.Canceled) {
			t.Errorf("A ended with %v", ev.Result.Err)
		}
	}
	go func() {
		for range g.entered {
			g.pass <- struct{}{}
		}
	}()
	if _, res := collect(t, b); res.Err != nil || res.Generated != 3 {
		t.Errorf("B: %+v", res)
	}
	if !e.Stats().Beat.After(beat) {
		t.Error("heartbeat did not move after the loop was freed")
	}
	e.Close()
	close(g.entered)
	if _, err := e.Submit(context.Background(), req); !errors.Is(err, ErrClosed) {
		t.Errorf("submit after Close: %v", err)
	}
}

func TestStopper(t *testing.T) {
	for _, c := range []struct {
		stops  []string
		pieces []string
		want   string
		hit    bool
	}{
		{nil, []string{"a", "b"}, "ab", false},
		{[]string{"END"}, []string{"hello E", "N", "D more"}, "hello ", true},
		{[]string{"END"}, []string{"hello E", "N", "x"}, "hello ENx", false},
		{[]string{"\n\n", "."}, []string{"one", ".", "two"}, "one", true},
		{[]string{"b", "ab"}, []string{"xab"}, "x", true}, // the earliest occurrence wins
		{[]string{"é!"}, []string{"caf", "é", "!"}, "caf", true},
	} {
		s := newStopper(c.stops)
		var b strings.Builder
		hit := false
		for _, p := range c.pieces {
			out, h := s.add(p)
			b.WriteString(out)
			if h {
				hit = true
				break
			}
		}
		if !hit {
			b.WriteString(s.flush())
		}
		if b.String() != c.want || hit != c.hit {
			t.Errorf("%q over %q: got %q %v, want %q %v", c.stops, c.pieces, b.String(), hit, c.want, c.hit)
		}
	}
}

// Logprobs is the log-softmax of the logits, with the likeliest tokens in
// order (ties to the lower id).
func TestLogprobs(t *testing.T) {
	logits := []float32{1, 3, 3, -2, 0.5}
	var z float64
	for _, l := range logits {
		z += math.Exp(float64(l))
	}
	lp := Logprobs(logits, 3, 3)
	if want := float32(-2 - math.Log(z)); math.Abs(float64(lp.Logprob-want)) > 1e-5 || lp.ID != 3 {
		t.Errorf("logprob %+v, want %g", lp, want)
	}
	if len(lp.Top) != 3 || lp.Top[0].ID != 1 || lp.Top[1].ID != 2 || lp.Top[2].ID != 0 ||
		math.Abs(float64(lp.Top[0].Logprob)-(3-math.Log(z))) > 1e-5 {
		t.Errorf("top %+v", lp.Top)
	}
	if lp := Logprobs(logits, 0, 99); len(lp.Top) != len(logits) {
		t.Errorf("top clamped to %d", len(lp.Top))
	}
	if lp := Logprobs(logits, 0, 0); lp.Top != nil {
		t.Errorf("top %+v with top 0", lp.Top)
	}
}

// BenchmarkLogprobs49k: a token's logprob and top 5 at a 135M model's
// vocabulary (a request with logprobs pays it on every token).
func BenchmarkLogprobs49k(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	logits := make([]float32, 49152)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64() * 3)
	}
	for b.Loop() {
		Logprobs(logits, 7, 5)
	}
}

// The serial engine delivers one logprob per generated token; under greedy
// sampling each token is the likeliest of its step.
func TestSerialLogprobs(t *testing.T) {
	m, r := tinyModel(t)
	e, err := NewSerial(r, m.Tok, SerialOptions{QueueLength: 1, MaxContext: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	req := Request{Prompt: m.Tok.Encode("hello", true, false), MaxTokens: 10, Sample: sample.Greedy(), IgnoreEOS: true, Logprobs: true, TopLogprobs: 2}
	ch, err := e.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var lps []TokenLogprob
	var res Result
	for ev := range ch {
		lps = append(lps, ev.Logprobs...)
		if ev.Done {
			res = ev.Result
		}
	}
	if res.Err != nil || len(lps) != res.Generated || res.Generated != 10 {
		t.Fatalf("%d logprobs for %+v", len(lps), res)
	}
	for i, lp := range lps {
		if lp.ID != res.CompletionToken[i] || len(lp.Top) != 2 || lp.Top[0].ID != lp.ID || lp.Top[0].Logprob != lp.Logprob ||
			lp.Logprob > 0 || lp.Top[1].Logprob > lp.Logprob {
			t.Errorf("token %d: %+v", i, lp)
		}
	}
}
