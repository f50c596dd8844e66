package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Engine runs the generation requests of one loaded model. The daemon
// talks to models only through it, so the continuous-batching scheduler can
// replace the serial one without the daemon changing.
type Engine interface {
	// Submit queues req. The channel carries a Started event when the
	// request leaves the queue, the generated text, and ends with one event
	// whose Done is set, then closes. If ctx ends first, the
	// generation stops, the final event carries ctx's error (when the
	// reader can still take it) and the channel closes. Submit fails with
	// ErrQueueFull when the queue is full and ErrClosed after Close.
	Submit(ctx context.Context, req Request) (<-chan Event, error)
	// Stats reports the engine's state now.
	Stats() EngineStats
	// Close stops the engine: queued requests end with ErrClosed, the
	// running one ends when its context does. It waits for the loop to exit.
	Close() error
}

// Sentinel errors of Submit.
var (
	ErrQueueFull = errors.New("scheduler: queue full")
	// ErrKeyQueueFull is ErrQueueFull for one API key: it has
	// max_queued_per_key requests waiting.
	ErrKeyQueueFull = fmt.Errorf("%w for this API key (max_queued_per_key)", ErrQueueFull)
	ErrClosed       = errors.New("scheduler: engine closed")
	// ErrDeadline ends a request whose Deadline passed while it waited in
	// the queue (it never ran).
	ErrDeadline = errors.New("scheduler: the request's deadline passed while it waited in the queue")
)

// Tunable is an Engine whose scheduling knobs change while it runs. The
// daemon calls Retune when tuning.toml changes (hot reload); an engine that
// is not Tunable needs a reload of the model to take new settings. Retune
// validates t and applies all of it or none: requests already queued or
// running keep going; the new bounds apply from the next step.
type Tunable interface {
	Retune(t Tuning) error
}

// Tuning holds the knobs of the batching engine that apply live. (The KV
// block size and memory budget size the runner and need a model reload.)
type Tuning struct {
	// MaxBatchTokens: most tokens in one forward step, prefill and decode
	// together; a prompt's last chunk may go over by as many as the step
	// decodes, and a prompt alone in a step may take its PrefillChunk.
	MaxBatchTokens int
	MaxRunning     int // most sequences running at once
	PrefillChunk   int // most prompt tokens of one sequence in one step (a request's own PrefillChunk may lower it)
	QueueLength    int // most requests waiting; more get ErrQueueFull
	Policy         Policy
	PrefixCache    bool          // share the KV blocks of common prompt prefixes
	PriorityAging  time.Duration // under PolicyPriority/PolicyFair, a waiting request gains one class per this much waiting (0: never)
	// Per API key (Request.Key) bounds; 0: none.
	MaxRunningPerKey int
	MaxQueuedPerKey  int
}

// Policy orders the waiting requests for admission.
type Policy string

const (
	// PolicyFCFS admits in arrival order.
	PolicyFCFS Policy = "fcfs"
	// PolicyPriority admits the lowest Request.Priority first (vLLM's
	// sense; with aging), then in arrival order.
	PolicyPriority Policy = "priority"
	// PolicyFair is PolicyPriority that, within a class, admits first the
	// API key with the fewest running sequences.
	PolicyFair Policy = "fair"
)

// Validate checks t's ranges.
func (t Tuning) Validate() error {
	switch {
	case t.MaxBatchTokens < 1:
		return errors.New("scheduler: max batch tokens must be at least 1")
	case t.MaxRunning < 1:
		return errors.New("scheduler: max running sequences must be at least 1")
	case t.PrefillChunk < 1:
		return errors.New("scheduler: prefill chunk must be at least 1")
	case t.QueueLength < 0, t.MaxRunningPerKey < 0, t.MaxQueuedPerKey < 0, t.PriorityAging < 0:
		return errors.New("scheduler: queue length, per-key limits and priority aging must not be negative")
	}
	switch t.Policy {
	case PolicyFCFS, PolicyPriority, PolicyFair:
		return nil
	}
	return errors.New("scheduler: unknown policy " + string(t.Policy))
}

// Clock tells the engine the time; tests pass a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Histogram is a cumulative distribution of observations: Counts[i]
// observations were at most Bounds[i] (non-cumulative per bucket, the last
// bucket being +Inf beyond the bounds).
type Histogram struct {
	Bounds []float64
	Counts []uint64 // len(Bounds)+1
	Sum    float64
	Count  uint64
}

func newHistogram(bounds ...float64) Histogram {
	return Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds)+1)}
}

func (h *Histogram) observe(v float64) {
	i := 0
	for i < len(h.Bounds) && v > h.Bounds[i] {
		i++
	}
	h.Counts[i]++
	h.Sum += v
	h.Count++
}

func (h Histogram) clone() Histogram {
	h.Counts = append([]uint64(nil), h.Counts...)
	return h
}

// plus is the histogram of h's and o's observations together: h when o
// has none, o when h has none, and h when their bounds differ.
func (h Histogram) plus(o Histogram) Histogram {
	switch {
	case o.Count == 0:
		return h
	case h.Count == 0:
		return o.clone()
	case !slices.Equal(h.Bounds, o.Bounds):
		return h
	}
	h = h.clone()
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.Sum += o.Sum
	h.Count += o.Count
	return h
}

// Event is one step of a request's stream.
type Event struct {
	// Started marks the first event of a request the engine took from its
	// queue, sent before its prefill (a request that ends while queued has
	// none): a server can wait for it before it commits to a streamed
	// answer's status.
	Started bool
	Text    string // text that became final with this step ("" on the last event)
	// Logprobs are those of the tokens generated since the previous event
	// (when Request.Logprobs): text held back by a stop string holds its
	// tokens back too.
	Logprobs []TokenLogprob
	// PromptLogprobs, on the first event after the prompt is read, are
	// those of the prompt's tokens after the first (Request.PromptLogprobs).
	PromptLogprobs []TokenLogprob
	// End, on the last event with text or logprobs, is the logprob of the
	// end-of-generation token that ended the answer (when Request.Logprobs;
	// the token adds no text and is not counted in Tokens).
	End *TokenLogprob
	// Tokens counts the tokens generated up to this event (text held back
	// by a stop string included): the count a reader keeps when the final
	// event is lost (its context ended with the stream's buffer full).
	Tokens int
	Done   bool
	Result Result // set when Done
}

// Result is how a request ended.
type Result struct {
	Stats
	Queued time.Duration // from Submit to the start of prefill
	Err    error         // nil, the context's error, or a backend failure
}

// EngineStats is a snapshot of an engine.
type EngineStats struct {
	Queued   int // waiting requests
	Running  int // running sequences
	Capacity int // queue length

	Served      uint64        // requests that ran
	MeanService time.Duration // moving average of the time one request holds the loop

	KVUsedBlocks, KVBlocks int
	KVCachedBlocks         int // blocks in the prefix cache (in use or not)

	// DrainRate is the measured rate at which requests finish, per second
	// (0 until measured).
	DrainRate float64

	// Counters of the batching engine (zero for Serial).
	Preemptions       uint64    // sequences pushed out of the KV cache, to be recomputed
	PrefixQueryTokens uint64    // prompt tokens looked up in the prefix cache
	PrefixHitTokens   uint64    // of which found
	Deadlines         uint64    // requests dropped from the queue at their deadline
	StepTokens        Histogram // tokens per forward step
	StepSeqs          Histogram // sequences per forward step
	StepTime          Histogram // seconds per forward step

	// Beat is the last time the loop showed progress: a forward step, or a
	// pass of its idle wait. A loop stuck in a step stops beating.
	Beat time.Time
	// StepDue is what the forward step in flight should take, at the time
	// per token of the slowest recent steps (0 between steps, and for
	// Serial): a long prompt's step on slow hardware is not a stall.
	StepDue time.Duration
}

// PlusCounters is s with o's counters and histograms added (Served and the
// batching engine's counters): the totals of a model over the engines of its
// versions. The gauges stay s's.
func (s EngineStats) PlusCounters(o EngineStats) EngineStats {
	s.Served += o.Served
	s.Preemptions += o.Preemptions
	s.PrefixQueryTokens += o.PrefixQueryTokens
	s.PrefixHitTokens += o.PrefixHitTokens
	s.Deadlines += o.Deadlines
	s.StepTokens = s.StepTokens.plus(o.StepTokens)
	s.StepSeqs = s.StepSeqs.plus(o.StepSeqs)
	s.StepTime = s.StepTime.plus(o.StepTime)
	return s
}

// RetryAfter estimates when a request refused now would be admitted: the
// requests queued ahead of it over the measured drain rate, or, before a
// rate is measured, the requests ahead times the mean service time; at
// least one second.
func (s EngineStats) RetryAfter() time.Duration {
	ahead := float64(s.Queued + s.Running)
	d := time.Duration(ahead * float64(s.MeanService) / float64(max(s.Running, 1)))
	if s.DrainRate > 0 {
		d = time.Duration(float64(s.Queued+1) / s.DrainRate * float64(time.Second))
	}
	if d < time.Second {
		return time.Second
	}
	return time.Duration(math.Ceil(d.Seconds())) * time.Second
}
