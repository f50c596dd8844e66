package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model/tokenizer"
)

// SerialOptions configure a Serial engine.
type SerialOptions struct {
	QueueLength  int // requests waiting beyond the running one (0: none)
	PrefillChunk int // default for requests that set none
	MaxContext   int // positions of the one sequence (0: the runner's whole cache)
	// Idle is how often the idle loop beats (default 1s).
	Idle   time.Duration
	Logger *slog.Logger
}

// Serial is the simplest Engine: one goroutine that runs one sequence at a
// time with Generate, fed by a bounded queue. It stands until the
// continuous-batching scheduler replaces it.
type Serial struct {
	tok   *tokenizer.Tokenizer
	seq   *backends.Sequence
	r     *beatRunner
	o     SerialOptions
	queue chan *job
	quit  chan struct{}
	done  chan struct{}

	mu      sync.Mutex // guards closed against Submit
	closed  bool
	queued  atomic.Int64
	running atomic.Int64
	served  atomic.Uint64
	service atomic.Int64 // moving average, ns
}

type job struct {
	ctx       context.Context
	req       Request
	out       chan Event
	submitted time.Time
}

// NewSerial starts a serial engine on r. The engine does not own r: close
// the engine before the runner.
func NewSerial(r backends.Runner, tok *tokenizer.Tokenizer, o SerialOptions) (*Serial, error) {
	if o.Idle <= 0 {
		o.Idle = time.Second
	}
	if o.PrefillChunk <= 0 {
		o.PrefillChunk = 512
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	br := &beatRunner{Runner: r}
	br.beat()
	n := o.MaxContext
	if n <= 0 {
		n = r.KVBlocks() * r.BlockSize()
	}
	seq, err := backends.NewSequence(br, n)
	if err != nil {
		return nil, err
	}
	s := &Serial{
		tok: tok, seq: seq, r: br, o: o,
		queue: make(chan *job, max(o.QueueLength, 0)),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go s.loop()
	return s, nil
}

// Context is the number of positions a request's prompt and answer share.
func (s *Serial) Context() int { return s.seq.Cap() }

// Submit implements Engine.
func (s *Serial) Submit(ctx context.Context, req Request) (<-chan Event, error) {
	if req.PrefillChunk <= 0 {
		req.PrefillChunk = s.o.PrefillChunk
	}
	j := &job{ctx: ctx, req: req, out: make(chan Event, 16), submitted: time.Now()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	select {
	case s.queue <- j:
		s.queued.Add(1)
		return j.out, nil
	default:
		return nil, ErrQueueFull
	}
}

// Stats implements Engine.
func (s *Serial) Stats() EngineStats {
	return EngineStats{
		Queued:       int(s.queued.Load()),
		Running:      int(s.running.Load()),
		Capacity:     cap(s.queue),
		Served:       s.served.Load(),
		MeanService:  time.Duration(s.service.Load()),
		KVUsedBlocks: int(s.r.used.Load()+int64(s.r.BlockSize())-1) / s.r.BlockSize(),
		KVBlocks:     s.r.KVBlocks(),
		Beat:         time.Unix(0, s.r.last.Load()),
	}
}

// Close implements Engine.
func (s *Serial) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.quit)
	}
	s.mu.Unlock()
	<-s.done
	return nil
}

func (s *Serial) loop() {
	defer close(s.done)
	tick := time.NewTicker(s.o.Idle)
	defer tick.Stop()
	for {
		select {
		case j := <-s.queue:
			s.queued.Add(-1)
			s.run(j)
		case <-tick.C:
			s.r.beat()
		case <-s.quit:
			for {
				select {
				case j := <-s.queue:
					s.queued.Add(-1)
					finish(j, Result{Err: ErrClosed})
				default:
					return
				}
			}
		}
	}
}

// run serves one request; a panic in the backend fails the request, not
// the daemon.
func (s *Serial) run(j *job) {
	if err := j.ctx.Err(); err != nil {
		finish(j, Result{Queued: time.Since(j.submitted), Err: context.Cause(j.ctx)})
		return
	}
	start := time.Now()
	s.running.Add(1)
	s.r.beat()
	res := Result{Queued: start.Sub(j.submitted)}
	j.out <- Event{Started: true} // the stream's first event: its buffer is empty
	defer func() {
		if p := recover(); p != nil {
			s.o.Logger.Error("generation panicked", "panic", p)
			res.Err = fmt.Errorf("scheduler: generation failed: %v", p)
		}
		s.r.used.Store(0)
		s.running.Add(-1)
		s.served.Add(1)
		s.observe(time.Since(start))
		finish(j, res)
	}()
	s.seq.Reset()
	str := newStreamer(j.req.Stop)
	send := func() error {
		if !str.ready() {
			return nil
		}
		select {
		case j.out <- str.take():
			return nil
		case <-j.ctx.Done():
			return context.Cause(j.ctx)
		}
	}
	st, err := GenerateTokens(j.ctx, s.seq, s.tok, j.req, func(t Token) error {
		hit := str.add(t)
		if t.End {
			return nil // on the last event, after the text a stop string holds back
		}
		if err := send(); err != nil {
			return err
		}
		if hit {
			return errStopString
		}
		return nil
	})
	res.Stats = st
	switch {
	case errors.Is(err, errStopString):
		res.FinishReason = FinishStop
	case j.ctx.Err() != nil:
		res.Err = context.Cause(j.ctx)
	case err != nil:
		res.Err = err
	default:
		str.flush()
		res.Err = send()
	}
}

// finish delivers the final event (without blocking once the reader's
// context has ended) and closes the stream.
func finish(j *job, res Result) {
	ev := Event{Done: true, Result: res}
	if j.ctx.Err() == nil {
		select {
		case j.out <- ev:
		case <-j.ctx.Done():
		}
	} else {
		select {
		case j.out <- ev:
		default:
		}
	}
	close(j.out)
}

// observe folds one service time into the moving average (weight 1/8).
func (s *Serial) observe(d time.Duration) {
	old := s.service.Load()
	if old == 0 {
		s.service.Store(int64(d))
		return
	}
	s.service.Store(old + (int64(d)-old)/8)
}

var errStopString = errors.New("stop string")

// beatRunner records each forward step's end as the loop's heartbeat and
// the positions the sequence holds.
type beatRunner struct {
	backends.Runner
	last atomic.Int64 // unix ns
	used atomic.Int64 // positions in use
}

func (b *beatRunner) beat() { b.last.Store(time.Now().UnixNano()) }

func (b *beatRunner) Forward(ctx context.Context, batch *backends.Batch) (*backends.Logits, error) {
	l, err := b.Runner.Forward(ctx, batch)
	b.beat()
	if err == nil && len(batch.Runs) > 0 {
		r := batch.Runs[0]
		b.used.Store(int64(r.Pos + len(r.Tokens)))
	}
	return l, err
}

// streamer turns generated tokens into events: it cuts the text at the
// first stop string, holds back text that may begin one, and holds each
// token's logprob back until its text goes out.
type streamer struct {
	stop *stopper
	held []TokenLogprob // logprobs of text held back
	ev   Event          // ready to send
	n    int            // generated tokens added (not the decoder's flushed text)
}

func newStreamer(stops []string) *streamer { return &streamer{stop: newStopper(stops)} }

// add takes the next token and reports whether a stop string ended the text.
func (s *streamer) add(t Token) bool {
	switch {
	case t.Prompt != nil:
		s.ev.PromptLogprobs = t.Prompt
		return false
	case t.End:
		s.ev.End = t.Logprob
		return false
	}
	if t.ID >= 0 {
		s.n++
	}
	if t.Logprob != nil {
		s.held = append(s.held, *t.Logprob)
	}
	out, hit := s.stop.add(t.Text)
	if out == "" && !hit {
		return false // nothing final yet: the logprobs wait for their text
	}
	s.ev.Text += out
	s.ev.Logprobs = append(s.ev.Logprobs, s.held...)
	s.held = nil
	return hit
}

// flush makes the held-back text and logprobs ready at the end of the stream.
func (s *streamer) flush() {
	s.ev.Text += s.stop.flush()
	s.ev.Logprobs = append(s.ev.Logprobs, s.held...)
	s.held = nil
}

// ready reports whether an event waits to be sent.
func (s *streamer) ready() bool {
	return s.ev.Text != "" || len(s.ev.Logprobs) > 0 || s.ev.PromptLogprobs != nil || s.ev.End != nil
}

// take returns the waiting event and forgets it.
func (s *streamer) take() Event {
	ev := s.ev
	ev.Tokens = s.n
	s.ev = Event{}
	return ev
}

// stopper cuts the stream at the first stop string and holds back text
// that may be the start of one.
type stopper struct {
	stops   []string
	pending string
}

func newStopper(stops []string) *stopper {
	var s []string
	for _, x := range stops {
		if x != "" {
			s = append(s, x)
		}
	}
	return &stopper{stops: s}
}

// add takes the next piece of text and returns what may be emitted, and
// whether a stop string was found (the text before it is returned).
func (s *stopper) add(text string) (string, bool) {
	if len(s.stops) == 0 {
		return text, false
	}
	s.pending += text
	cut := -1
	for _, x := range s.stops {
		if i := strings.Index(s.pending, x); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		out := s.pending[:cut]
		s.pending = ""
		return out, true
	}
	hold := 0
	for _, x := range s.stops {
		for n := min(len(x)-1, len(s.pending)); n > hold; n-- {
			if strings.HasSuffix(s.pending, x[:n]) {
				hold = n
				break
			}
		}
	}
	out := s.pending[:len(s.pending)-hold]
	s.pending = s.pending[len(s.pending)-hold:]
	return out, false
}

// flush returns the text held back at the end of the stream.
func (s *stopper) flush() string {
	out := s.pending
	s.pending = ""
	return out
}

var _ Engine = (*Serial)(nil)
