package scheduler

import (
	"context"
	"errors"
	"math"
	"time"
)

// Engine runs the generation requests of one loaded model. The daemon
// talks to models only through it, so the continuous-batching scheduler can
// replace the serial one without the daemon changing.
type Engine interface {
	// Submit queues req. The channel carries the generated text and ends
	// with one event whose Done is set, then closes. If ctx ends first, the
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
	ErrClosed    = errors.New("scheduler: engine closed")
)

// Event is one step of a request's stream.
type Event struct {
	Text string // text that became final with this step ("" on the last event)
	// Logprobs are those of the tokens generated since the previous event
	// (when Request.Logprobs): text held back by a stop string holds its
	// tokens back too.
	Logprobs []TokenLogprob
	Done     bool
	Result   Result // set when Done
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

	// Beat is the last time the loop showed progress: a forward step, or a
	// pass of its idle wait. A loop stuck in a step stops beating.
	Beat time.Time
}

// RetryAfter estimates when a request refused now would be admitted: the
// requests ahead of it times the mean service time, at least one second.
func (s EngineStats) RetryAfter() time.Duration {
	ahead := float64(s.Queued + s.Running)
	d := time.Duration(ahead * float64(s.MeanService) / float64(max(s.Running, 1)))
	if d < time.Second {
		return time.Second
	}
	return time.Duration(math.Ceil(d.Seconds())) * time.Second
}
