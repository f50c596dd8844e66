package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/sample"
	"github.com/octet-dev/octet/model/synth"
)

// tinyRef loads synth's "tiny" shape with ref and a KV cache of kvBlocks
// blocks of 16 positions.
func tinyRef(t *testing.T, kvBlocks int) (*model.Model, backends.Runner) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := synth.Run(context.Background(), synth.Options{Shape: "tiny", Type: gguf.Q8_0, Out: path, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ref.Backend{}.Load(m, backends.LoadOptions{MaxContext: 256, KVBlocks: kvBlocks, BlockSize: 16, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); m.Close() })
	return m, r
}

func tuning() Tuning {
	return Tuning{MaxBatchTokens: 256, MaxRunning: 8, PrefillChunk: 64, QueueLength: 64, Policy: PolicyFCFS, PrefixCache: true}
}

// prompt is a prompt of n tokens, distinct per tag.
func prompt(tag, n int) []int32 {
	p := []int32{1}
	for i := 1; i < n; i++ {
		p = append(p, int32(3+(tag*7+i*13)%300))
	}
	return p
}

// alone is what Generate gives for req on a fresh sequence: the output a
// batched run must reproduce.
func alone(t *testing.T, m *model.Model, req Request) []int32 {
	t.Helper()
	r, err := ref.Backend{}.Load(m, backends.LoadOptions{MaxContext: 256, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seq, err := backends.NewSequence(r, 256)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Generate(context.Background(), seq, m.Tok, req, func(int32, string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return st.CompletionToken
}

// runAlongside submits n requests at once and checks that each gives the
// tokens it gives alone.
func runAlongside(t *testing.T, e Engine, m *model.Model, n int, req func(int) Request) {
	t.Helper()
	var chans []<-chan Event
	for i := range n {
		chans = append(chans, submit(t, e, context.Background(), req(i)))
	}
	for i, ch := range chans {
		_, res := collect(t, ch)
		if want := alone(t, m, req(i)); res.Err != nil || !slices.Equal(res.CompletionToken, want) {
			t.Errorf("request %d: %v\n got %v\nwant %v", i, res.Err, res.CompletionToken, want)
		}
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// stepper holds the loop at the top of each pass until the test lets one
// pass through, so the test decides what each step sees.
type stepper struct {
	pass chan struct{}
	open chan struct{}
	once sync.Once
}

// newStepper returns a stepper that lets the loop run free when the test
// ends (before the engine closes).
func newStepper(t *testing.T) *stepper {
	s := &stepper{pass: make(chan struct{}), open: make(chan struct{})}
	t.Cleanup(s.release)
	return s
}

func (s *stepper) wait() {
	select {
	case <-s.pass:
	case <-s.open:
	}
}

// step lets one pass of the loop through (and waits until it is taken).
func (s *stepper) step() { s.pass <- struct{}{} }

// release lets the loop run freely from now on.
func (s *stepper) release() { s.once.Do(func() { close(s.open) }) }

// recorder notes the order in which prompts start (their position-0 runs).
type recorder struct {
	backends.Runner
	mu     sync.Mutex
	starts []int32 // the second token of each prompt started, in order
	first  []int   // the tokens of each prompt's first run, in that order
	steps  int
}

func (r *recorder) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	r.mu.Lock()
	r.steps++
	for _, run := range b.Runs {
		if run.Pos == 0 && len(run.Tokens) > 1 {
			r.starts = append(r.starts, run.Tokens[1])
			r.first = append(r.first, len(run.Tokens))
		}
	}
	r.mu.Unlock()
	return r.Runner.Forward(ctx, b)
}

// reuser checks that every step is offered the logits of the step before
// to reuse, and spoils them first: were a backend to leave a value of them
// unwritten, or the engine to read them after the next step began, the
// tokens would change.
type reuser struct {
	backends.Runner
	mu               sync.Mutex
	last             *backends.Logits
	steps, offered   int
	wrong, overwrote int
}

func (r *reuser) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	r.mu.Lock()
	r.steps++
	if b.Reuse != nil {
		r.offered++
		if b.Reuse != r.last {
			r.wrong++
		}
		d := b.Reuse.Data[:cap(b.Reuse.Data)]
		for i := range d {
			d[i] = float32(math.NaN())
		}
	}
	r.mu.Unlock()
	l, err := r.Runner.Forward(ctx, b)
	r.mu.Lock()
	if l != nil {
		if b.Reuse != nil && l == b.Reuse {
			r.overwrote++
		}
		r.last = l
	}
	r.mu.Unlock()
	return l, err
}

func newBatcher(t *testing.T, r backends.Runner, m *model.Model, o BatchOptions) *Batcher {
	t.Helper()
	e, err := NewBatcher(r, m.Tok, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func submit(t *testing.T, e Engine, ctx context.Context, req Request) <-chan Event {
	t.Helper()
	ch, err := e.Submit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// Requests run together give each the tokens it gives alone (same seed),
// whatever the chunking and the company; the stop strings and logprobs are
// those of the serial engine.
func TestBatcherMatchesAlone(t *testing.T) {
	m, r := tinyRef(t, 64)
	o := BatchOptions{Tuning: tuning()}
	o.PrefillChunk = 7 // prompts prefill over several steps, beside decodes
	o.MaxBatchTokens = 20
	ru := &reuser{Runner: r}
	e := newBatcher(t, ru, m, o)
	runAlongside(t, e, m, 6, func(i int) Request {
		return Request{Prompt: prompt(i, 5+i*9), MaxTokens: 10 + i, Sample: sample.Params{Temperature: 0.8, TopP: 0.95, Seed: uint64(i)}, IgnoreEOS: true}
	})
	ru.mu.Lock()
	if ru.offered != ru.steps-1 || ru.wrong != 0 || ru.overwrote == 0 {
		t.Errorf("%d steps: %d offered the last step's logits to reuse (%d others offered), %d reused them", ru.steps, ru.offered, ru.wrong, ru.overwrote)
	}
	ru.mu.Unlock()
	st := e.Stats()
	if st.KVUsedBlocks != 0 || st.Running != 0 || st.Served != 6 || st.StepSeqs.Count == 0 || st.StepTokens.Sum == 0 {
		t.Errorf("stats after the run: %+v", st)
	}

	// Stop strings and logprobs: event for event what Serial sends.
	sr, err := NewSerial(r, m.Tok, SerialOptions{QueueLength: 1, MaxContext: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	req := Request{Prompt: prompt(9, 12), MaxTokens: 30, Sample: sample.Params{Temperature: 1, TopP: 1, Seed: 3}, IgnoreEOS: true, Logprobs: true, TopLogprobs: 2}
	full, _ := collect(t, submit(t, sr, context.Background(), req))
	if len(full) < 8 {
		t.Fatalf("text %q too short to cut", full)
	}
	req.Stop = []string{full[len(full)/2 : len(full)/2+3]}
	events := func(e Engine) (string, []TokenLogprob, Result) {
		var text strings.Builder
		var lps []TokenLogprob
		for ev := range submit(t, e, context.Background(), req) {
			text.WriteString(ev.Text)
			lps = append(lps, ev.Logprobs...)
			if ev.Done {
				return text.String(), lps, ev.Result
			}
		}
		return "", nil, Result{}
	}
	wt, wl, wr := events(sr)
	gt, gl, gr := events(e)
	if gt != wt || gr.FinishReason != FinishStop || wr.FinishReason != FinishStop || fmt.Sprint(gl) != fmt.Sprint(wl) {
		t.Errorf("batcher %q %s %v\nserial  %q %s %v", gt, gr.FinishReason, gl, wt, wr.FinishReason, wl)
	}
}

// firstRuns submits reqs one per step of the loop (each after the previous
// ones' first step) under a step budget of budget tokens, checks that each
// gives the tokens it gives alone, and returns the tokens of each prompt's
// first run, in the order the prompts started.
func firstRuns(t *testing.T, budget int, reqs []Request) []int {
	t.Helper()
	m, r := tinyRef(t, 64)
	rec := &recorder{Runner: r}
	gate := newStepper(t)
	o := BatchOptions{Tuning: tuning(), Idle: time.Millisecond, beforeStep: gate.wait}
	o.MaxBatchTokens = budget
	e := newBatcher(t, rec, m, o)
	var chans []<-chan Event
	for _, rq := range reqs {
		chans = append(chans, submit(t, e, context.Background(), rq))
		// one pass, and wait for its step to start: the next request must
		// not be seen by this step's plan
		rec.mu.Lock()
		n := rec.steps
		rec.mu.Unlock()
		gate.step()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			rec.mu.Lock()
			started := rec.steps > n
			rec.mu.Unlock()
			if started {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the step did not start")
			}
		}
	}
	gate.release()
	for i, ch := range chans {
		if _, res := collect(t, ch); res.Err != nil || !slices.Equal(res.CompletionToken, alone(t, m, reqs[i])) {
			t.Errorf("request %d: %v, tokens differ from alone", i, res.Err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, rq := range reqs {
		if i >= len(rec.starts) || rec.starts[i] != rq.Prompt[1] {
			t.Errorf("prompts started in the order %v", rec.starts)
			break
		}
	}
	return rec.first
}

// A prompt whose last chunk would leave no more tokens than the step
// decodes is read whole, over the step's budget by at most that; a longer
// one is cut at the budget.
func TestBatcherLastChunk(t *testing.T) {
	req := func(tag, n int) Request {
		return Request{Prompt: prompt(tag, n), MaxTokens: 12, Sample: sample.Params{Temperature: 0.8, TopP: 1, Seed: uint64(tag)}, IgnoreEOS: true}
	}
	// the second beside one decode (budget 19 left, 1 over: read whole),
	// the third beside two (budget 18 left, 5 over: cut)
	if got := firstRuns(t, 20, []Request{req(1, 4), req(2, 20), req(3, 23)}); !slices.Equal(got, []int{4, 20, 18}) {
		t.Errorf("first runs of %v tokens, want 4, 20, 18", got)
	}
}

// A prompt alone (nothing decoding, nothing else waiting) takes its whole
// prefill chunk (64) in one step, over the step budget; beside a decode it
// gets the budget.
func TestBatcherLonePrompt(t *testing.T) {
	reqs := []Request{
		{Prompt: prompt(1, 50), MaxTokens: 6, Sample: sample.Greedy(), IgnoreEOS: true},
		{Prompt: prompt(2, 30), MaxTokens: 6, Sample: sample.Greedy(), IgnoreEOS: true},
	}
	if got := firstRuns(t, 20, reqs); !slices.Equal(got, []int{50, 19}) {
		t.Errorf("first runs of %v tokens, want 50 (alone) and 19 (beside a decode)", got)
	}
}

// With too few KV blocks for everyone, sequences are preempted and
// recomputed, and each still gives exactly the tokens it gives alone.
func TestBatcherPreemption(t *testing.T) {
	m, r := tinyRef(t, 10) // 160 positions for 4 sequences of up to 100
	o := BatchOptions{Tuning: tuning()}
	o.PrefixCache = false
	e := newBatcher(t, r, m, o)
	runAlongside(t, e, m, 4, func(i int) Request {
		return Request{Prompt: prompt(i, 20), MaxTokens: 80, Sample: sample.Params{Temperature: 0.9, TopP: 1, Seed: uint64(10 + i)}, IgnoreEOS: true}
	})
	st := e.Stats()
	if st.Preemptions == 0 {
		t.Error("no preemption: the test does not test it")
	}
	if st.KVUsedBlocks != 0 {
		t.Errorf("%d blocks still used", st.KVUsedBlocks)
	}
	t.Logf("%d preemptions", st.Preemptions)
}

// A prompt that starts with another's blocks takes them from the prefix
// cache, shared with a sequence still running, and gives the same tokens
// as alone.
func TestBatcherPrefixSharing(t *testing.T) {
	m, r := tinyRef(t, 64)
	rec := &recorder{Runner: r}
	e := newBatcher(t, rec, m, BatchOptions{Tuning: tuning()})
	system := prompt(1, 48) // three full blocks
	a := Request{Prompt: append(slices.Clone(system), 7, 8, 9), MaxTokens: 40, Sample: sample.Greedy(), IgnoreEOS: true}
	b := Request{Prompt: append(slices.Clone(system), 10, 11), MaxTokens: 20, Sample: sample.Params{Temperature: 0.7, TopP: 1, Seed: 5}, IgnoreEOS: true}
	chA := submit(t, e, context.Background(), a)
	<-chA // Started
	<-chA // its first text: a's prompt is computed and its blocks keyed; a keeps running
	chB := submit(t, e, context.Background(), b)
	_, resB := collect(t, chB)
	_, resA := collectRest(t, chA)
	if want := alone(t, m, a); !slices.Equal(resA.CompletionToken, want) {
		t.Errorf("a: %v, alone %v", resA.CompletionToken, want)
	}
	if want := alone(t, m, b); !slices.Equal(resB.CompletionToken, want) {
		t.Errorf("b: %v, alone %v", resB.CompletionToken, want)
	}
	st := e.Stats()
	if st.PrefixHitTokens != 48 || st.PrefixQueryTokens != uint64(len(a.Prompt)+len(b.Prompt)) {
		t.Errorf("prefix hits %d of %d tokens, want 48", st.PrefixHitTokens, st.PrefixQueryTokens)
	}
	if st.KVUsedBlocks != 0 || st.KVCachedBlocks == 0 {
		t.Errorf("after both: %d blocks used, %d cached", st.KVUsedBlocks, st.KVCachedBlocks)
	}
	// The cached blocks are evicted, oldest first, when fresh ones run out:
	// a prompt needing the whole cache still runs.
	big := Request{Prompt: prompt(2, 64*16-8), MaxTokens: 4, Sample: sample.Greedy(), IgnoreEOS: true}
	if _, res := collect(t, submit(t, e, context.Background(), big)); res.Err != nil || res.Generated != 4 {
		t.Errorf("big prompt: %+v", res)
	}
	// Without the prefix cache (turned off live), nothing is shared.
	tu := tuning()
	tu.PrefixCache = false
	if err := e.Retune(tu); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.KVCachedBlocks != 0 {
		t.Errorf("%d blocks cached after the cache was turned off", st.KVCachedBlocks)
	}
	collect(t, submit(t, e, context.Background(), a))
	if st2 := e.Stats(); st2.PrefixHitTokens != st.PrefixHitTokens {
		t.Errorf("prefix hits grew with the cache off")
	}
}

// Requests with one prompt that arrive together (a request's n choices)
// read it once: the others wait for the first to key its blocks, then take
// them from the prefix cache, even where the budget would read them all in
// one step; their answers are those of each alone.
func TestBatcherPrefixTogether(t *testing.T) {
	m, r := tinyRef(t, 64)
	gate := newStepper(t)
	o := BatchOptions{Tuning: tuning(), Idle: time.Millisecond, beforeStep: gate.wait}
	o.MaxBatchTokens = 512
	e := newBatcher(t, r, m, o)
	p := prompt(4, 74) // four full blocks and 10 tokens
	var chans []<-chan Event
	var reqs []Request
	for i := range 4 {
		req := Request{Prompt: p, MaxTokens: 6, Sample: sample.Params{Temperature: 0.8, TopP: 1, Seed: uint64(i)}, IgnoreEOS: true}
		reqs = append(reqs, req)
		chans = append(chans, submit(t, e, context.Background(), req))
	}
	gate.release()
	for i, ch := range chans {
		_, res := collect(t, ch)
		if want := alone(t, m, reqs[i]); res.Err != nil || !slices.Equal(res.CompletionToken, want) {
			t.Errorf("request %d: %v (%v), alone %v", i, res.CompletionToken, res.Err, want)
		}
	}
	if st := e.Stats(); st.PrefixHitTokens != 3*64 || st.PrefixQueryTokens != 4*74 {
		t.Errorf("prefix hits %d of %d tokens, want %d", st.PrefixHitTokens, st.PrefixQueryTokens, 3*64)
	}
	// A scored prompt reads its every row: it neither waits nor counts as looked up.
	req := Request{Prompt: p, MaxTokens: 1, Sample: sample.Greedy(), PromptLogprobs: true}
	before := e.Stats()
	if _, res := collect(t, submit(t, e, context.Background(), req)); res.Err != nil {
		t.Fatal(res.Err)
	}
	if st := e.Stats(); st.PrefixQueryTokens != before.PrefixQueryTokens || st.PrefixHitTokens != before.PrefixHitTokens {
		t.Errorf("a scored prompt changed the prefix counts: %d/%d, before %d/%d", st.PrefixHitTokens, st.PrefixQueryTokens, before.PrefixHitTokens, before.PrefixQueryTokens)
	}
}

// A cancelled request ends with its context's error and gives its blocks
// back, queued or running.
func TestBatcherCancelFreesBlocks(t *testing.T) {
	m, r := tinyRef(t, 32)
	o := BatchOptions{Tuning: tuning()}
	o.PrefixCache = false
	o.MaxRunning = 1
	e := newBatcher(t, r, m, o)
	req := Request{Prompt: prompt(3, 40), MaxTokens: 200, Sample: sample.Greedy(), IgnoreEOS: true}
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	a := submit(t, e, ctxA, req)
	b := submit(t, e, ctxB, req) // waits: one running at most
	<-a
	if st := e.Stats(); st.KVUsedBlocks == 0 || st.Running != 1 || st.Queued != 1 {
		t.Errorf("while running: %+v", st)
	}
	cancelB()
	cancelA()
	for _, ch := range []<-chan Event{a, b} {
		for ev := range ch {
			if ev.Done && !errors.Is(ev.Result.Err, context.Canceled) {
				t.Errorf("ended with %v", ev.Result.Err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := e.Stats()
		if st.KVUsedBlocks == 0 && st.Running == 0 && st.Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blocks not freed: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
}

// admissionOrder runs reqs (submitted while the loop is held) and returns
// the order in which they started, by tag.
func admissionOrder(t *testing.T, tu Tuning, clock *fakeClock, reqs []Request, between func(step int)) []int32 {
	t.Helper()
	m, r := tinyRef(t, 64)
	rec := &recorder{Runner: r}
	gate := newStepper(t)
	e := newBatcher(t, rec, m, BatchOptions{Tuning: tu, Clock: clock, Idle: time.Millisecond, beforeStep: gate.wait})
	var chans []<-chan Event
	for _, req := range reqs {
		chans = append(chans, submit(t, e, context.Background(), req))
	}
	for i := 0; i < 200 && e.Stats().Served < uint64(len(reqs)); i++ {
		if between != nil {
			between(i)
		}
		gate.step()
	}
	gate.release()
	for _, ch := range chans {
		collect(t, ch)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.starts
}

func keyed(key string, tag, prio int) Request {
	return Request{Prompt: []int32{1, int32(tag), 5, 6}, MaxTokens: 3, Sample: sample.Greedy(), IgnoreEOS: true, Key: key, Priority: prio}
}

// When blocks run out, the sequence preempted is the one the queue would
// admit last, aging counted: a low-priority request that waited its way up
// keeps running beside a newer high-priority one, which goes back instead.
func TestBatcherPreemptsLowestAgedClass(t *testing.T) {
	tu := tuning()
	tu.Policy = PolicyPriority
	tu.PriorityAging = time.Second
	tu.PrefixCache = false
	clock := &fakeClock{t: time.Unix(1000, 0)}
	m, r := tinyRef(t, 6) // 96 positions; each request needs 74
	rec := &recorder{Runner: r}
	gate := newStepper(t)
	e := newBatcher(t, rec, m, BatchOptions{Tuning: tu, Clock: clock, Idle: time.Millisecond, beforeStep: gate.wait})
	low, high := keyed("", 1, 0), keyed("", 2, -5)
	low.MaxTokens, high.MaxTokens = 70, 70
	chLow := submit(t, e, context.Background(), low)
	gate.step()
	clock.advance(10 * time.Second) // low's class 0+10 is now above high's 5+0
	chHigh := submit(t, e, context.Background(), high)
	gate.release()
	_, resLow := collect(t, chLow)
	_, resHigh := collect(t, chHigh)
	if resLow.Err != nil || resHigh.Err != nil || !slices.Equal(resLow.CompletionToken, alone(t, m, low)) ||
		!slices.Equal(resHigh.CompletionToken, alone(t, m, high)) {
		t.Fatalf("low %v, high %v, or tokens differ from alone", resLow.Err, resHigh.Err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if e.Stats().Preemptions == 0 || rec.starts[0] != 1 || slices.Index(rec.starts[1:], 1) >= 0 {
		t.Errorf("%d preemptions; prompts started %v: the aged low-priority one (1) should start once", e.Stats().Preemptions, rec.starts)
	}
}

// The preemption order: under FCFS the youngest goes first; under a
// priority policy the lowest priority, or with aging the latest arrival
// plus Priority·PriorityAging, which does not change as both age (an order
// by rounded classes let two sequences trade places every aging period).
func TestBatcherVictimOrder(t *testing.T) {
	t0 := time.Unix(1000, 0)
	seqOf := func(id uint64, at time.Duration, prio int) *seq {
		return &seq{id: id, job: &job{submitted: t0.Add(at), req: Request{Priority: prio}}}
	}
	old, young := seqOf(1, 0, 0), seqOf(2, 4500*time.Millisecond, -5)
	for _, c := range []struct {
		policy Policy
		aging  time.Duration
		want   *seq // the one that ranks below
	}{
		{PolicyFCFS, 0, young},
		{PolicyPriority, 0, old},                        // priority 0 against -5
		{PolicyPriority, time.Second, old},              // 1000 s against 1004.5 - 5 s
		{PolicyPriority, 500 * time.Millisecond, young}, // 1000 s against 1004.5 - 2.5 s
	} {
		e := &Batcher{t: Tuning{Policy: c.policy, PriorityAging: c.aging}}
		other := old
		if c.want == old {
			other = young
		}
		if !e.below(c.want, other) || e.below(other, c.want) {
			t.Errorf("%s, aging %v: want sequence %d below %d", c.policy, c.aging, c.want.id, other.id)
		}
	}
}

// Under the fair policy, a key with nothing running goes before a key
// that already runs; under FCFS, arrival order rules.
func TestBatcherFairShare(t *testing.T) {
	reqs := []Request{keyed("a", 11, 0), keyed("a", 12, 0), keyed("a", 13, 0), keyed("a", 14, 0), keyed("b", 21, 0), keyed("b", 22, 0)}
	tu := tuning()
	tu.MaxRunning = 2
	if got := admissionOrder(t, tu, &fakeClock{}, reqs, nil); !slices.Equal(got, []int32{11, 12, 13, 14, 21, 22}) {
		t.Errorf("fcfs order %v", got)
	}
	tu.Policy = PolicyFair
	if got := admissionOrder(t, tu, &fakeClock{}, reqs, nil); !slices.Equal(got, []int32{11, 21, 12, 22, 13, 14}) {
		t.Errorf("fair order %v", got)
	}
	// A per-key bound holds a key back even with slots free.
	tu.Policy = PolicyFCFS
	tu.MaxRunningPerKey = 1
	if got := admissionOrder(t, tu, &fakeClock{}, reqs, nil); !slices.Equal(got, []int32{11, 21, 12, 22, 13, 14}) {
		t.Errorf("per-key bound order %v", got)
	}
}

// Under the priority policy, the lower value goes first (vLLM's sense); a low request
// under a steady stream of high ones still runs, once it has aged.
func TestBatcherPriorityNoStarvation(t *testing.T) {
	tu := tuning()
	tu.MaxRunning = 1
	tu.Policy = PolicyPriority
	reqs := []Request{keyed("", 1, 0), keyed("", 2, -5), keyed("", 3, -9)}
	if got := admissionOrder(t, tu, &fakeClock{}, reqs, nil); !slices.Equal(got, []int32{3, 2, 1}) {
		t.Errorf("priority order %v", got)
	}

	// A stream of priority -5 requests, one more arriving each second (one
	// step of the fake clock per step of the loop), while a priority-0 one
	// waits from the start. With aging of one class a second it runs after
	// about five; without aging it would wait for the stream to end.
	tu.PriorityAging = time.Second
	clock := &fakeClock{t: time.Unix(1000, 0)}
	m, r := tinyRef(t, 64)
	rec := &recorder{Runner: r}
	gate := newStepper(t)
	e := newBatcher(t, rec, m, BatchOptions{Tuning: tu, Clock: clock, Idle: time.Millisecond, beforeStep: gate.wait})
	low := submit(t, e, context.Background(), keyed("", 1, 0))
	var highs []<-chan Event
	for i := range 40 {
		hi := keyed("", 100+i, -5)
		hi.MaxTokens = 1
		highs = append(highs, submit(t, e, context.Background(), hi))
		clock.advance(time.Second)
		gate.step()
	}
	gate.release()
	collect(t, low)
	for _, ch := range highs {
		collect(t, ch)
	}
	rec.mu.Lock()
	at := slices.Index(rec.starts, 1)
	rec.mu.Unlock()
	if at < 0 || at > 10 {
		t.Errorf("the low-priority request started %dth of %v", at, rec.starts)
	}
}

// A request still queued at its deadline leaves the queue with
// ErrDeadline; a full queue refuses with ErrQueueFull, per key too.
func TestBatcherDeadlineAndQueueFull(t *testing.T) {
	m, r := tinyRef(t, 64)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	gate := newStepper(t)
	tu := tuning()
	tu.MaxRunning, tu.QueueLength, tu.MaxQueuedPerKey = 1, 3, 2
	e := newBatcher(t, r, m, BatchOptions{Tuning: tu, Clock: clock, Idle: time.Millisecond, beforeStep: gate.wait})
	long := keyed("a", 1, 0)
	long.MaxTokens = 20
	a := submit(t, e, context.Background(), long)
	late := keyed("b", 2, 0)
	late.Deadline = clock.Now().Add(time.Second)
	b := submit(t, e, context.Background(), late)
	c := submit(t, e, context.Background(), keyed("a", 3, 0))
	if _, err := e.Submit(context.Background(), keyed("a", 4, 0)); !errors.Is(err, ErrQueueFull) {
		t.Errorf("third request of key a: %v, want ErrQueueFull", err)
	}
	d := submit(t, e, context.Background(), keyed("c", 4, 0))
	if _, err := e.Submit(context.Background(), keyed("d", 5, 0)); !errors.Is(err, ErrQueueFull) {
		t.Errorf("fifth request: %v, want ErrQueueFull", err)
	}
	gate.step() // a starts
	clock.advance(2 * time.Second)
	gate.step() // b's deadline has passed
	// It never started: its only event is the last.
	if ev := <-b; !ev.Done || !errors.Is(ev.Result.Err, ErrDeadline) {
		t.Errorf("late request's first event: %+v", ev)
	}
	for i := 0; i < 200 && e.Stats().Served < 3; i++ {
		clock.advance(100 * time.Millisecond)
		gate.step()
	}
	gate.release()
	for _, ch := range []<-chan Event{a, c, d} {
		if _, res := collect(t, ch); res.Err != nil {
			t.Error(res.Err)
		}
	}
	st := e.Stats()
	if st.Deadlines != 1 || st.DrainRate <= 0 || st.RetryAfter() < time.Second {
		t.Errorf("stats %+v", st)
	}
}

// A refused request leaves nothing behind: were each refused key's count
// kept, requests with made-up keys would grow the engine's memory.
func TestBatcherRefusalsKeepNoKeys(t *testing.T) {
	m, r := tinyRef(t, 64)
	gate := newStepper(t)
	tu := tuning()
	tu.MaxRunning, tu.QueueLength, tu.MaxQueuedPerKey = 1, 2, 1
	e := newBatcher(t, r, m, BatchOptions{Tuning: tu, beforeStep: gate.wait})
	a := submit(t, e, context.Background(), keyed("a", 1, 0))
	b := submit(t, e, context.Background(), keyed("b", 2, 0))
	if _, err := e.Submit(context.Background(), keyed("b", 3, 0)); !errors.Is(err, ErrKeyQueueFull) || !errors.Is(err, ErrQueueFull) {
		t.Errorf("b's second request: %v, want ErrKeyQueueFull", err)
	}
	c := submit(t, e, context.Background(), keyed("c", 4, 0)) // the queue is full now
	for i := range 1000 {
		if _, err := e.Submit(context.Background(), keyed(fmt.Sprint("k", i), 10+i%100, 0)); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("request %d: %v, want ErrQueueFull", i, err)
		}
	}
	e.mu.Lock()
	n := len(e.keys)
	e.mu.Unlock()
	if n != 3 {
		t.Errorf("%d keys counted after 1000 refusals, want 3 (a, b and c)", n)
	}
	gate.release()
	for _, ch := range []<-chan Event{a, b, c} {
		collect(t, ch)
	}
}

// ticking is a runner whose forward steps take 10 ms of the fake clock.
type ticking struct {
	backends.Runner
	clock *fakeClock
}

func (r ticking) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	r.clock.advance(10 * time.Millisecond)
	return r.Runner.Forward(ctx, b)
}

// The drain rate, behind Retry-After, counts the time the loop had work: a
// burst after an idle hour drains at the rate of its own steps, not at
// requests per hour.
func TestBatcherDrainRateBusyTime(t *testing.T) {
	m, r := tinyRef(t, 64)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	e := newBatcher(t, ticking{r, clock}, m, BatchOptions{Tuning: tuning(), Clock: clock, Idle: time.Millisecond})
	burst := func(from int) {
		var chs []<-chan Event
		for i := range 4 {
			chs = append(chs, submit(t, e, context.Background(), keyed("", from+i, 0)))
		}
		for _, ch := range chs {
			if _, res := collect(t, ch); res.Err != nil {
				t.Fatal(res.Err)
			}
		}
	}
	burst(10)
	// The hour passes once the loop has found nothing to do.
	for idle := false; !idle; time.Sleep(time.Millisecond) {
		e.mu.Lock()
		idle = !e.working && len(e.waiting)+len(e.running) == 0
		e.mu.Unlock()
	}
	clock.advance(time.Hour)
	burst(20)
	// When each burst's four requests share their steps, they finish
	// together at its third step, and the last eight ends span the second
	// burst's three steps of 10 ms: 7 in 30 ms, 233 per second. A request
	// admitted a step after the others adds a step or two (117 to 175 per
	// second seen). Over the idle hour it would be 0.002.
	if st := e.Stats(); st.DrainRate < 50 || st.DrainRate > 250 {
		t.Errorf("drain rate %.3g requests/s, want 100 to 233", st.DrainRate)
	}
}

// slowSteps is a runner whose steps take 20 ms each, and which holds a step
// of more than 16 tokens until hold is closed.
type slowSteps struct {
	backends.Runner
	hold chan struct{}
}

func (r slowSteps) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	n := 0
	for _, run := range b.Runs {
		n += len(run.Tokens)
	}
	if n > 16 {
		<-r.hold
	}
	time.Sleep(20 * time.Millisecond)
	return r.Runner.Forward(ctx, b)
}

// StepDue, the watchdog's allowance for the step in flight, is its tokens
// at the slowest time per token seen: a long prompt's step is not a stall.
func TestBatcherStepDue(t *testing.T) {
	m, r := tinyRef(t, 64)
	run := slowSteps{r, make(chan struct{})}
	e := newBatcher(t, run, m, BatchOptions{Tuning: tuning()})
	if _, res := collect(t, submit(t, e, context.Background(), keyed("", 1, 0))); res.Err != nil {
		t.Fatal(res.Err)
	}
	if d := e.Stats().StepDue; d != 0 {
		t.Errorf("between steps: StepDue %s", d)
	}
	ch := submit(t, e, context.Background(), Request{Prompt: prompt(2, 60), MaxTokens: 1, Sample: sample.Greedy()})
	var due time.Duration
	for i := 0; i < 200 && due == 0; i++ {
		time.Sleep(5 * time.Millisecond)
		due = e.Stats().StepDue
	}
	close(run.hold)
	collect(t, ch)
	// Decode steps took 20 ms a token or more: 60 tokens, 1.2 s or more.
	if due < 60*20*time.Millisecond || due > 60*time.Second {
		t.Errorf("StepDue of a 60-token step %s, want 1.2 s or more", due)
	}
}

// Retune applies valid settings live and refuses invalid ones whole.
func TestBatcherRetune(t *testing.T) {
	m, r := tinyRef(t, 16)
	e := newBatcher(t, r, m, BatchOptions{Tuning: tuning()})
	bad := tuning()
	bad.Policy = "lottery"
	if err := e.Retune(bad); err == nil {
		t.Error("unknown policy accepted")
	}
	tu := tuning()
	tu.QueueLength, tu.MaxRunning = 0, 1
	if err := e.Retune(tu); err != nil {
		t.Fatal(err)
	}
	long := keyed("", 1, 0)
	long.MaxTokens = 150
	a := submit(t, e, context.Background(), long) // the free slot takes it
	if ev := <-a; !ev.Started {
		t.Errorf("first event %+v, not Started", ev)
	}
	if _, err := e.Submit(context.Background(), keyed("", 1, 0)); !errors.Is(err, ErrQueueFull) {
		t.Errorf("submit with the slot taken and a queue of 0: %v", err)
	}
	collectRest(t, a)
	if e.Stats().Capacity != 0 {
		t.Error("capacity not retuned")
	}
	e.Close()
	if _, err := e.Submit(context.Background(), keyed("", 1, 0)); !errors.Is(err, ErrClosed) {
		t.Errorf("submit after Close: %v", err)
	}
}

// BenchmarkBatcher measures a served batch end to end on ref's tiny model:
// 8 concurrent requests of 16 prompt and 32 generated tokens (the model is
// so small that the scheduler's own work is a visible part of the time).
func BenchmarkBatcher(b *testing.B) {
	path := filepath.Join(b.TempDir(), "tiny.gguf")
	if err := synth.Run(context.Background(), synth.Options{Shape: "tiny", Type: gguf.Q8_0, Out: path, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	m, err := model.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	r, err := ref.Backend{}.Load(m, backends.LoadOptions{MaxContext: 256, KVBlocks: 64, Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	e, err := NewBatcher(r, m.Tok, BatchOptions{Tuning: tuning()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.ResetTimer()
	for range b.N {
		var chans []<-chan Event
		for i := range 8 {
			ch, err := e.Submit(context.Background(), Request{Prompt: prompt(i, 16), MaxTokens: 32, Sample: sample.Greedy(), IgnoreEOS: true})
			if err != nil {
				b.Fatal(err)
			}
			chans = append(chans, ch)
		}
		for _, ch := range chans {
			for range ch {
			}
		}
	}
	b.ReportMetric(float64(8*32*b.N)/b.Elapsed().Seconds(), "tokens/s")
}
