package scheduler

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model/sample"
)

// startedYet drains ch without blocking and notes whether a Started event came.
func startedYet(ch <-chan Event, seen *bool) {
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if ev.Started {
				*seen = true
			}
		default:
			return
		}
	}
}

// prefixWaitOrder submits A (long prompt p, 40 tokens), B (p, 2 tokens)
// and C (another prompt, 40 tokens) under FCFS with max_running 2, and
// returns the pass by which B and C had started (-1: not in 10 passes).
func prefixWaitOrder(t *testing.T, prefixCache bool) (bAt, cAt int) {
	return prefixWaitOrderP(t, prefixCache, PolicyFCFS, 0, 0)
}

func prefixWaitOrderP(t *testing.T, prefixCache bool, policy Policy, bPrio, cPrio int) (bAt, cAt int) {
	m, r := tinyRef(t, 64)
	gate := newStepper(t)
	o := BatchOptions{Tuning: tuning(), Idle: time.Millisecond, beforeStep: gate.wait}
	o.MaxBatchTokens = 512
	o.MaxRunning = 2
	o.PrefixCache = prefixCache
	o.Policy = policy
	e := newBatcher(t, r, m, o)
	p := prompt(4, 74)
	long := func(pr []int32) Request {
		return Request{Prompt: pr, MaxTokens: 40, Sample: sample.Greedy(), IgnoreEOS: true}
	}
	ar := long(p)
	ar.Priority = bPrio
	a := submit(t, e, context.Background(), ar)
	b := submit(t, e, context.Background(), Request{Prompt: p, MaxTokens: 2, Sample: sample.Greedy(), IgnoreEOS: true, Priority: bPrio})
	cr := long(prompt(9, 20))
	cr.Priority = cPrio
	c := submit(t, e, context.Background(), cr)
	var sa, sb, sc bool
	bAt, cAt = -1, -1
	for step := 1; step <= 10; step++ {
		gate.step()
		startedYet(a, &sa)
		startedYet(b, &sb)
		startedYet(c, &sc)
		if sb && bAt < 0 {
			bAt = step
		}
		if sc && cAt < 0 {
			cAt = step
		}
	}
	gate.release()
	for _, ch := range []<-chan Event{a, b, c} {
		for range ch {
		}
	}
	return bAt, cAt
}

// TestPrefixWaitJumped: B (same prompt as running A, arrived
// before C) waits for A's blocks while C takes the last running slot; B
// then waits for A's or C's whole answer. FCFS is broken.
func TestPrefixWaitJumped(t *testing.T) {
	bAt, cAt := prefixWaitOrder(t, true)
	t.Logf("prefix cache on: B started by pass %d, C by pass %d (-1: not within 10)", bAt, cAt)
	if bAt < 0 || (cAt >= 0 && cAt < bAt) {
		t.Errorf("FCFS broken: B not admitted within 10 passes while C (arrived after B) was admitted by pass %d", cAt)
	}
}

// Control: without the prefix cache (no wait) B goes first, as FCFS says.
func TestPrefixWaitJumpedControl(t *testing.T) {
	bAt, cAt := prefixWaitOrder(t, false)
	t.Logf("prefix cache off: B started by pass %d, C by pass %d", bAt, cAt)
	if bAt < 0 || (cAt >= 0 && cAt < bAt) {
		t.Errorf("control failed")
	}
}

// Under the priority policy, B (priority -5, as A) waits for A's blocks while C
// (priority 5) takes the last slot.
func TestPrefixWaitPriorityInversion(t *testing.T) {
	bAt, cAt := prefixWaitOrderP(t, true, PolicyPriority, -5, 5)
	t.Logf("priority: B (-5) started by pass %d, C (+5) by pass %d", bAt, cAt)
	if bAt < 0 || (cAt >= 0 && cAt < bAt) {
		t.Errorf("priority inversion: B (priority -5) not admitted within 10 passes while C (priority 5) was by pass %d", cAt)
	}
}

// idleDeadline submits two requests with one 200-token prompt on an idle
// engine (prefill chunk 64, budget 512), both with a queue deadline of
// 25 ms; each pass of the loop is 10 ms of a fake clock. It returns the
// second's result.
func idleDeadline(t *testing.T, prefixCache bool) Result {
	m, r := tinyRef(t, 64)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	o := BatchOptions{Tuning: tuning(), Idle: time.Millisecond, Clock: clk, beforeStep: func() { clk.advance(10 * time.Millisecond) }}
	o.MaxBatchTokens = 512
	o.PrefixCache = prefixCache
	e := newBatcher(t, r, m, o)
	p := prompt(6, 200)
	req := Request{Prompt: p, MaxTokens: 2, Sample: sample.Greedy(), IgnoreEOS: true, Deadline: clk.Now().Add(25 * time.Millisecond)}
	a := submit(t, e, context.Background(), req)
	b := submit(t, e, context.Background(), req)
	_, ra := collect(t, a)
	_, rb := collect(t, b)
	if ra.Err != nil {
		t.Fatalf("first: %v", ra.Err)
	}
	return rb
}

// TestPrefixWaitDeadline: on an idle engine, the second request
// (a request's choice 1) waits for the first's prompt blocks past its
// queue deadline and fails with ErrDeadline ("the model is busy", 429 with
// Retry-After), every time it is retried.
func TestPrefixWaitDeadline(t *testing.T) {
	if rb := idleDeadline(t, true); rb.Err != nil {
		t.Errorf("idle engine, second request: %v (queued %v)", rb.Err, rb.Queued)
	}
}

func TestPrefixWaitDeadlineControl(t *testing.T) {
	if rb := idleDeadline(t, false); rb.Err != nil {
		t.Errorf("control: %v", rb.Err)
	}
}

// stepCounter counts forward steps.
type stepCounter struct {
	backends.Runner
	mu sync.Mutex
	n  int
}

func (c *stepCounter) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.Runner.Forward(ctx, b)
}

// TestPrefixWaitLonePrompt: the default tuning (budget 64, prefill
// chunk 256) reads a prompt alone in whole chunks, but a sibling waiting
// for that very prompt's blocks (n=2) counts as "another waiting", so the
// prompt is read 64 tokens a step: 4 steps instead of 1 before anything is
// generated.
func TestPrefixWaitLonePrompt(t *testing.T) {
	steps := func(n int) int {
		m, r := tinyRef(t, 64)
		sc := &stepCounter{Runner: r}
		o := BatchOptions{Tuning: tuning()}
		o.MaxBatchTokens, o.PrefillChunk = 64, 256
		e := newBatcher(t, sc, m, o)
		req := Request{Prompt: prompt(7, 200), MaxTokens: 1, Sample: sample.Greedy(), IgnoreEOS: true}
		var chans []<-chan Event
		for range n {
			chans = append(chans, submit(t, e, context.Background(), req))
		}
		for _, ch := range chans {
			collect(t, ch)
		}
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.n
	}
	one, two := steps(1), steps(2)
	t.Logf("steps: n=1 %d, n=2 %d", one, two)
	if two > one+1 {
		t.Errorf("two requests of one prompt took %d steps, one alone %d", two, one)
	}
}
