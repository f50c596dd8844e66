package scheduler

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model/tokenizer"
)

// BatchOptions configure a Batcher.
type BatchOptions struct {
	Tuning
	// MaxContext bounds the positions of one sequence (0, or more than the
	// whole cache: the whole cache).
	MaxContext int
	// Idle is how often the idle loop beats (default 1s).
	Idle   time.Duration
	Clock  Clock // default: the system clock
	Logger *slog.Logger

	// beforeStep, when set (by tests), runs at the top of every pass of
	// the loop, before the step is planned.
	beforeStep func()
}

// Batcher is the continuous-batching Engine. One goroutine runs steps: each
// step drops what was cancelled, admits waiting requests while KV blocks,
// running slots and the step's token budget allow, and runs one forward
// pass over every running sequence's next token together with chunks of
// the prompts being prefilled; then it samples, streams and frees what
// finished. The runner's KV cache is paged: each sequence has a block table
// of blocks taken from a shared pool, full blocks of a known prefix are
// shared through the prefix cache, and when a step needs a block and none
// is free, the youngest running sequence is preempted: its blocks go back,
// and it returns to the head of the queue to be recomputed later (its
// sampler is kept, so its output is the one it would have given).
type Batcher struct {
	r     backends.Runner
	tok   *tokenizer.Tokenizer
	clock Clock
	log   *slog.Logger
	idle  time.Duration
	gate  func()
	ctx   int // positions of one sequence at most
	wake  chan struct{}
	quit  chan struct{}
	done  chan struct{}
	beat  atomic.Int64     // unix ns
	spare *backends.Logits // the last step's logits, for the next to reuse (the loop's own)
	// The watchdog's measure of a step: the time per token of the slowest
	// recent steps (the loop's own: it rises at once and falls by 1/16 a
	// step, so one stray slow step is soon forgotten), and what the step
	// in flight should take at that rate (ns; 0 between steps).
	perToken time.Duration
	stepDue  atomic.Int64

	mu       sync.Mutex // guards everything below
	t        Tuning
	closed   bool
	pool     *blockPool
	waiting  []*seq // arrival order (preempted ones first)
	running  []*seq // admission order
	nextID   uint64
	keys     map[string]*keyCount
	stats    EngineStats
	finished []time.Duration // busy time at the end of each of the last requests, for the drain rate
	busy     time.Duration   // time the loop has had work, up to mark
	mark     time.Time       // when the loop last looked for work
	working  bool            // whether it found some then
	service  time.Duration
}

// seq is one request in the engine.
type seq struct {
	*job
	id       uint64
	admitted time.Time // first admission
	// The time it waited for a running sequence's prompt blocks
	// (waitsForPrefix), which its Deadline does not count: the wait that
	// goes on since prefixFrom, the ones before in prefixWait.
	prefixFrom time.Time
	prefixWait time.Duration
	firstTok   time.Time
	toks       []int32 // prompt, then generated tokens
	computed   int     // positions in the KV cache
	blocks     []int32
	hashes     []uint64 // prefix hash of each keyed full block, in order
	chunk      int
	g          *gen
	str        *streamer
	unwatch    func() bool
}

type keyCount struct{ queued, running int }

// NewBatcher starts a batching engine on r. The engine does not own r:
// close the engine before the runner.
func NewBatcher(r backends.Runner, tok *tokenizer.Tokenizer, o BatchOptions) (*Batcher, error) {
	if err := o.Tuning.Validate(); err != nil {
		return nil, err
	}
	if o.Idle <= 0 {
		o.Idle = time.Second
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	whole := r.KVBlocks() * r.BlockSize()
	if o.MaxContext <= 0 || o.MaxContext > whole {
		o.MaxContext = whole
	}
	e := &Batcher{
		r: r, tok: tok, clock: o.Clock, log: o.Logger, idle: o.Idle, gate: o.beforeStep, ctx: o.MaxContext, t: o.Tuning,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
		pool: newBlockPool(r.KVBlocks(), r.BlockSize()), keys: map[string]*keyCount{},
	}
	e.stats.StepTokens = newHistogram(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
	e.stats.StepSeqs = newHistogram(1, 2, 4, 8, 16, 32, 64, 128, 256)
	e.stats.StepTime = newHistogram(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5)
	e.beat.Store(time.Now().UnixNano())
	go e.loop()
	return e, nil
}

// Context is the number of positions a request's prompt and answer share.
func (e *Batcher) Context() int { return e.ctx }

// Submit implements Engine.
func (e *Batcher) Submit(ctx context.Context, req Request) (<-chan Event, error) {
	s := &seq{job: &job{ctx: ctx, req: req, out: make(chan Event, 16), submitted: e.clock.Now()}}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	// The queue holds QueueLength requests beyond those the free running
	// slots will take at the next step.
	if room := e.t.QueueLength + max(e.t.MaxRunning-len(e.running), 0); len(e.waiting) >= room {
		return nil, ErrQueueFull
	}
	if c := e.keys[req.Key]; e.t.MaxQueuedPerKey > 0 && c != nil && c.queued >= e.t.MaxQueuedPerKey {
		return nil, ErrKeyQueueFull
	}
	if err := e.check(req); err != nil {
		go finish(s.job, Result{Err: err})
		return s.out, nil
	}
	// A key's count is made only for a request that joins the queue: the
	// keys of refused requests (any bearer key when none are configured)
	// would otherwise pile up.
	k := e.key(req.Key)
	e.nextID++
	s.id = e.nextID
	s.toks = slices.Clone(req.Prompt)
	s.chunk = e.t.PrefillChunk
	if req.PrefillChunk > 0 {
		s.chunk = min(s.chunk, req.PrefillChunk)
	}
	if req.PromptLogprobs {
		s.chunk = min(s.chunk, scoredChunk) // each token a row of logits
	}
	s.g = newGen(e.tok, req)
	s.str = newStreamer(req.Stop)
	s.unwatch = context.AfterFunc(ctx, e.signal)
	k.queued++
	e.waiting = append(e.waiting, s)
	e.signal()
	return s.out, nil
}

func (e *Batcher) check(req Request) error {
	switch {
	case len(req.Prompt) == 0:
		return fmt.Errorf("scheduler: empty prompt")
	case len(req.Prompt) >= e.ctx:
		return fmt.Errorf("scheduler: prompt of %d tokens does not fit the context of %d", len(req.Prompt), e.ctx)
	}
	return nil
}

func (e *Batcher) key(k string) *keyCount {
	c, ok := e.keys[k]
	if !ok {
		c = &keyCount{}
		e.keys[k] = c
	}
	return c
}

// dropKey forgets a key nobody uses any more, so the map stays bounded.
func (e *Batcher) dropKey(k string) {
	if c := e.keys[k]; c != nil && c.queued == 0 && c.running == 0 {
		delete(e.keys, k)
	}
}

func (e *Batcher) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Retune implements Tunable.
func (e *Batcher) Retune(t Tuning) error {
	if err := t.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	if e.t.PrefixCache && !t.PrefixCache {
		e.pool.dropCache()
	}
	e.t = t
	e.mu.Unlock()
	e.signal()
	return nil
}

// Stats implements Engine.
func (e *Batcher) Stats() EngineStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Queued, s.Running, s.Capacity = len(e.waiting), len(e.running), e.t.QueueLength
	s.MeanService = e.service
	s.KVUsedBlocks, s.KVBlocks, s.KVCachedBlocks = e.pool.used(), e.pool.total(), e.pool.cached()
	if n := len(e.finished); n >= 2 {
		if span := e.finished[n-1] - e.finished[0]; span > 0 {
			s.DrainRate = float64(n-1) / span.Seconds()
		}
	}
	s.StepTokens, s.StepSeqs, s.StepTime = s.StepTokens.clone(), s.StepSeqs.clone(), s.StepTime.clone()
	s.Beat = time.Unix(0, e.beat.Load())
	s.StepDue = time.Duration(e.stepDue.Load())
	return s
}

// Close implements Engine: queued requests end with ErrClosed, running
// ones run to their end (or their context's), then the loop exits.
func (e *Batcher) Close() error {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.quit)
		for _, s := range e.waiting {
			e.end(s, Result{Err: ErrClosed})
		}
		e.waiting = nil
	}
	e.mu.Unlock()
	<-e.done
	return nil
}

func (e *Batcher) loop() {
	defer close(e.done)
	tick := time.NewTicker(e.idle)
	defer tick.Stop()
	for {
		if e.gate != nil {
			e.gate()
		}
		e.mu.Lock()
		plan := e.schedule()
		// The drain rate counts the time with work only: a burst after
		// an idle hour drains at the rate of its own steps.
		now := e.clock.Now()
		e.busy, e.mark, e.working = e.busyAt(now), now, plan != nil
		if plan == nil && e.closed && len(e.running) == 0 {
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		if plan == nil {
			select {
			case <-e.wake:
			case <-tick.C:
				e.beat.Store(time.Now().UnixNano())
			case <-e.quit:
			}
			continue
		}
		n := 0
		for _, p := range plan {
			n += p.n
		}
		start, t0 := e.clock.Now(), time.Now()
		e.stepDue.Store(int64(time.Duration(max(n, 1)) * e.perToken))
		logits, err := e.forward(plan)
		t1 := time.Now()
		e.beat.Store(t1.UnixNano())
		e.stepDue.Store(0)
		per := t1.Sub(t0) / time.Duration(max(n, 1))
		e.perToken = max(per, e.perToken-(e.perToken-per)/16)
		e.mu.Lock()
		e.stats.StepTime.observe(e.clock.Now().Sub(start).Seconds())
		e.stats.StepSeqs.observe(float64(len(plan)))
		e.stats.StepTokens.observe(float64(n))
		e.commit(plan, logits, err)
		e.mu.Unlock()
		e.spare = logits // nil after a failed step
		if logits != nil && len(logits.Data) > spareMax*logits.Vocab {
			e.spare = nil // a scored prompt's rows (PromptLogprobs): not kept
		}
	}
}

// scoredChunk bounds the prompt tokens a step reads of a prompt scored row
// by row (Request.PromptLogprobs): 64 rows of a 128k vocabulary are 32 MB.
const scoredChunk = 64

// spareMax bounds the logits rows the loop keeps for the next step: those
// of any step of decodes, not those of a prompt scored row by row.
const spareMax = 256

// busyAt is the time the loop has had work, up to now.
func (e *Batcher) busyAt(now time.Time) time.Duration {
	if e.working {
		return e.busy + now.Sub(e.mark)
	}
	return e.busy
}

// step is one sequence's share of a forward step.
type step struct {
	s *seq
	n int // tokens
}

// schedule drops what ended, admits what fits and returns the next step's
// work (nil when there is none).
func (e *Batcher) schedule() []step {
	now := e.clock.Now()
	e.waiting = slices.DeleteFunc(e.waiting, func(s *seq) bool {
		switch waits := e.waitsForPrefix(s); {
		case waits && s.prefixFrom.IsZero():
			s.prefixFrom = now
		case !waits && !s.prefixFrom.IsZero():
			s.prefixWait += now.Sub(s.prefixFrom)
			s.prefixFrom = time.Time{}
		}
		switch {
		case s.ctx.Err() != nil:
			e.end(s, Result{Queued: now.Sub(s.submitted), Err: context.Cause(s.ctx)})
		case !s.req.Deadline.IsZero() && !now.Before(s.req.Deadline.Add(s.prefixWait)) && s.admitted.IsZero() && s.prefixFrom.IsZero():
			e.stats.Deadlines++
			e.end(s, Result{Queued: now.Sub(s.submitted), Err: ErrDeadline})
		default:
			return false
		}
		e.keys[s.req.Key].queued--
		e.dropKey(s.req.Key)
		return true
	})
	e.running = slices.DeleteFunc(e.running, func(s *seq) bool {
		if s.ctx.Err() == nil {
			return false
		}
		e.retire(s)
		s.g.st.FinishReason = ""
		e.end(s, Result{Stats: s.g.st, Queued: s.admitted.Sub(s.submitted), Err: context.Cause(s.ctx)})
		return true
	})

	budget := e.t.MaxBatchTokens
	var plan []step
	over := 0 // what prompts' last chunks may still take beyond the budget
	// Running sequences first, oldest first: decode tokens, then prefill
	// chunks. A sequence that needs a block when none is free preempts the
	// youngest.
	for _, decode := range []bool{true, false} {
		if !decode {
			over = len(plan)
			if over == 0 && e.prompts() == 1 {
				// A prompt alone (nothing decodes, nothing else waits)
				// delays no one: it may take its whole chunk per step,
				// and fewer, larger steps read it sooner.
				budget = max(budget, e.t.PrefillChunk)
			}
		}
		for i := 0; i < len(e.running) && budget > 0; i++ {
			s := e.running[i]
			pending := len(s.toks) - s.computed
			if (pending == 1) != decode {
				continue
			}
			n := 1
			if !decode {
				n = s.take(budget, &over)
			}
			if !e.grow(s, n, &plan, &budget, &over, &i) {
				i-- // s itself was preempted: the next one moved into its place
				continue
			}
			plan = append(plan, step{s, n})
			budget -= n
		}
	}
	// Then newcomers, while they fit.
	for budget > 0 && len(e.running) < e.t.MaxRunning && !e.closed {
		i := e.pick(now)
		if i < 0 {
			break
		}
		s := e.waiting[i]
		if !e.admit(s) {
			break // the head of the queue waits for blocks; nobody jumps it
		}
		e.waiting = slices.Delete(e.waiting, i, i+1)
		k := e.keys[s.req.Key]
		k.queued--
		k.running++
		e.running = append(e.running, s)
		if s.admitted.IsZero() {
			s.admitted = now
			s.out <- Event{Started: true} // the stream's first event: its buffer is empty
		}
		n := s.take(budget, &over)
		at := len(e.running) - 1
		if !e.grow(s, n, &plan, &budget, &over, &at) {
			continue // (admit saw the blocks free: not reached)
		}
		plan = append(plan, step{s, n})
		budget -= n
	}
	return plan
}

// prompts counts the sequences with prompt tokens to read: running ones
// part-way through their prompt, and every waiting one but those that
// will take their prompt's blocks from another's (waitsForPrefix; one
// sharing its first block with a prompt counted before it).
func (e *Batcher) prompts() int {
	n := 0
	var firsts [][]int32 // the first blocks of the prompts counted
	bs := e.pool.size
	count := func(s *seq) {
		shares := e.t.PrefixCache && !s.req.PromptLogprobs && len(s.toks) > bs
		if shares && slices.ContainsFunc(firsts, func(f []int32) bool { return slices.Equal(f, s.toks[:bs]) }) {
			return
		}
		n++
		if shares {
			firsts = append(firsts, s.toks[:bs])
		}
	}
	for _, s := range e.running {
		if len(s.toks)-s.computed > 1 {
			count(s)
		}
	}
	for _, s := range e.waiting {
		if s.prefixFrom.IsZero() {
			count(s)
		}
	}
	return n
}

// take returns how many of s's pending prompt tokens a step takes: up to
// its chunk and the budget left, or all of them when no more than *over
// would be left, which *over then loses. A step may thus exceed the budget
// by as many tokens as it decodes, and a prompt beside a few decodes is
// read in one step instead of waiting a whole step for its last tokens:
// two 64-token prompts arriving beside three decodes under a 128-token
// budget were read as 64 + 61, then 3, the second's first token one step
// (~30 ms with smollm on 2 cores) late.
func (s *seq) take(budget int, over *int) int {
	pending := len(s.toks) - s.computed
	n := min(pending, budget, s.chunk)
	if rest := pending - n; rest > 0 && rest <= *over && pending <= s.chunk {
		*over -= rest
		n = pending
	}
	return n
}

// grow gives s (at index *at of running) the blocks for n more positions,
// preempting victims while none is free: a victim's share of the plan goes
// back to *budget (and a decode's token out of *over), and *at stays on s
// when a victim before it leaves running. It reports false when s itself
// was the victim.
func (e *Batcher) grow(s *seq, n int, plan *[]step, budget, over, at *int) bool {
	need := (s.computed+n+e.pool.size-1)/e.pool.size - len(s.blocks)
	for range need {
		b, ok := e.pool.alloc()
		for !ok {
			v := e.victim()
			victim := e.running[v]
			if i := slices.IndexFunc(*plan, func(p step) bool { return p.s == victim }); i >= 0 {
				*budget += (*plan)[i].n
				if len(victim.toks)-victim.computed == 1 && *over > 0 {
					*over--
				}
				*plan = slices.Delete(*plan, i, i+1)
			}
			e.preempt(v)
			if victim == s {
				return false
			}
			if v < *at {
				(*at)--
			}
			b, ok = e.pool.alloc()
		}
		s.blocks = append(s.blocks, b)
	}
	return true
}

// victim returns the index of the running sequence to preempt: the one
// admission ranks last. Under FCFS that is the youngest arrival; under the
// priority policies the lowest by priority with aging, as pick ranks, so a
// request that waited its way up past newer higher-priority ones is not then
// the first pushed back out. The aged rank is compared unrounded (arrival
// plus Priority·PriorityAging, later ranks lower), so two running sequences
// never trade places as they age (which would preempt each in turn). The
// one ranked highest is never preempted while another runs, so it always
// finishes.
func (e *Batcher) victim() int {
	v := 0
	for i, s := range e.running[1:] {
		if e.below(s, e.running[v]) {
			v = i + 1
		}
	}
	return v
}

// below reports whether running sequence a ranks below b for preemption.
func (e *Batcher) below(a, b *seq) bool {
	if e.t.Policy != PolicyFCFS {
		if e.t.PriorityAging > 0 {
			ka := a.submitted.Add(time.Duration(a.req.Priority) * e.t.PriorityAging)
			kb := b.submitted.Add(time.Duration(b.req.Priority) * e.t.PriorityAging)
			if !ka.Equal(kb) {
				return ka.After(kb)
			}
		} else if a.req.Priority != b.req.Priority {
			return a.req.Priority > b.req.Priority
		}
	}
	return a.id > b.id
}

// class is s's rank for admission under the policy (higher goes first): 0
// under FCFS; else minus its Request.Priority, plus one per PriorityAging
// since it arrived. Requests of one class are then ordered by arrival, or
// under the fair policy by their key's running sequences first.
func (e *Batcher) class(s *seq, now time.Time) int {
	if e.t.Policy == PolicyFCFS {
		return 0
	}
	c := -s.req.Priority
	if e.t.PriorityAging > 0 {
		c += int(now.Sub(s.submitted) / e.t.PriorityAging)
	}
	return c
}

// preempt takes running sequence i out of the cache and puts it back in
// the queue, ahead of the requests that arrived after it.
func (e *Batcher) preempt(i int) {
	s := e.running[i]
	e.running = slices.Delete(e.running, i, i+1)
	e.pool.release(s.blocks)
	s.blocks, s.hashes, s.computed = nil, nil, 0
	k := e.keys[s.req.Key]
	k.running--
	k.queued++
	at, _ := slices.BinarySearchFunc(e.waiting, s.id, func(w *seq, id uint64) int { return cmp.Compare(w.id, id) })
	e.waiting = slices.Insert(e.waiting, at, s)
	e.stats.Preemptions++
	e.log.Debug("sequence preempted", "id", s.id, "tokens", len(s.toks))
}

// pick returns the index of the waiting request to admit next, or -1. One
// that waits for a running sequence's prompt blocks (waitsForPrefix) keeps
// its place: those ranked below it go first only while a running slot is
// left for it.
func (e *Batcher) pick(now time.Time) int {
	var held []int
	for {
		best := -1
		var bestClass, bestRunning int
		for i, s := range e.waiting {
			k := e.keys[s.req.Key]
			if e.t.MaxRunningPerKey > 0 && k.running >= e.t.MaxRunningPerKey || slices.Contains(held, i) {
				continue
			}
			class, running := e.class(s, now), 0
			if e.t.Policy == PolicyFair {
				running = k.running
			}
			// The queue is in arrival order (preempted ones first), so the
			// first best wins ties.
			if best < 0 || class > bestClass || (class == bestClass && running < bestRunning) {
				best, bestClass, bestRunning = i, class, running
			}
		}
		if best < 0 || !e.waitsForPrefix(e.waiting[best]) {
			return best
		}
		if s := e.waiting[best]; s.prefixFrom.IsZero() {
			s.prefixFrom = now // its wait begins
		}
		if held = append(held, best); len(e.running)+len(held) >= e.t.MaxRunning {
			return -1
		}
	}
}

// waitsForPrefix reports whether waiting s should let a running sequence
// finish reading the full prompt blocks they share before it is admitted:
// it then takes them from the prefix cache instead of reading them again
// into blocks of its own (the n choices of a request, or clients with one
// long system prompt, arriving together). Only the first block is compared
// with each running sequence unless it matches.
func (e *Batcher) waitsForPrefix(s *seq) bool {
	bs := e.pool.size
	if !e.t.PrefixCache || s.req.PromptLogprobs || len(s.toks) <= bs || !s.admitted.IsZero() {
		return false
	}
	for _, r := range e.running {
		if r.computed >= len(r.toks)-1 || len(r.toks) <= bs || !slices.Equal(r.toks[:bs], s.toks[:bs]) {
			continue // r is past its prompt, or they start apart
		}
		common := bs
		for limit := min(len(r.toks), len(s.toks)-1); common < limit && r.toks[common] == s.toks[common]; common++ {
		}
		if r.computed < common/bs*bs {
			return true
		}
	}
	return false
}

// admit takes s's cached prefix blocks and reports whether the blocks for
// the rest of its tokens (and the next one) are free.
func (e *Batcher) admit(s *seq) bool {
	bs := e.pool.size
	first := s.admitted.IsZero()
	if e.t.PrefixCache && !s.req.PromptLogprobs { // (a scored prompt computes every row)
		// At least one token must be computed, for the logits.
		var parent uint64
		for i := 0; (i+1)*bs <= len(s.toks)-1; i++ {
			b, h, ok := e.pool.lookup(parent, s.toks[i*bs:(i+1)*bs])
			if !ok {
				break
			}
			s.blocks = append(s.blocks, b)
			s.hashes = append(s.hashes, h)
			parent = h
		}
	}
	need := (min(len(s.toks)+1, e.ctx)+bs-1)/bs - len(s.blocks)
	if need > e.pool.available() {
		e.pool.release(s.blocks)
		s.blocks, s.hashes = nil, nil
		return false
	}
	s.computed = len(s.blocks) * bs
	if first && e.t.PrefixCache && !s.req.PromptLogprobs { // (only prompts looked up)
		e.stats.PrefixQueryTokens += uint64(len(s.toks))
		e.stats.PrefixHitTokens += uint64(s.computed)
	}
	return true
}

// forward runs the plan as one batch. A panic in the backend fails the
// step, not the daemon.
func (e *Batcher) forward(plan []step) (l *backends.Logits, err error) {
	b := &backends.Batch{Runs: make([]backends.Run, len(plan)), Reuse: e.spare}
	e.spare = nil
	for i, p := range plan {
		mode := backends.LogitsNone
		switch {
		case p.s.req.PromptLogprobs && p.s.computed < len(p.s.req.Prompt):
			mode = backends.LogitsAll // the prompt is scored row by row
		case p.s.computed+p.n == len(p.s.toks):
			mode = backends.LogitsLast
		}
		b.Runs[i] = backends.Run{Tokens: p.s.toks[p.s.computed : p.s.computed+p.n], Pos: p.s.computed, Blocks: p.s.blocks, Logits: mode}
	}
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("forward step panicked", "panic", p)
			err = fmt.Errorf("scheduler: forward step failed: %v", p)
		}
	}()
	// The step is cancelled when every sequence in it is.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var left atomic.Int64
	left.Store(int64(len(plan)))
	for _, p := range plan {
		stop := context.AfterFunc(p.s.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	return e.r.Forward(ctx, b)
}

// commit takes a step's logits: it advances each sequence, keys its new
// full blocks, samples and streams, and ends what finished.
func (e *Batcher) commit(plan []step, logits *backends.Logits, err error) {
	now := e.clock.Now()
	if err != nil && slices.ContainsFunc(plan, func(p step) bool { return p.s.ctx.Err() == nil }) {
		e.log.Error("forward step failed", "err", err, "sequences", len(plan))
	}
	var ended map[*seq]bool // made at the first end: most steps end nothing
	end := func(s *seq, res Result) {
		e.retire(s)
		e.end(s, res)
		if ended == nil {
			ended = map[*seq]bool{}
		}
		ended[s] = true
	}
	var ids []int32
	var lps []*TokenLogprob
	if err == nil {
		ids, lps = e.draw(plan, logits)
	}
	for i, p := range plan {
		s := p.s
		if err != nil {
			why := err
			if s.ctx.Err() != nil {
				why = context.Cause(s.ctx)
			}
			end(s, Result{Stats: s.g.st, Queued: s.admitted.Sub(s.submitted), Err: why})
			continue
		}
		if s.req.PromptLogprobs && logits.Offsets[i+1]-logits.Offsets[i] == p.n {
			s.g.scorePrompt(s.computed, logits.Run(i), logits.Vocab)
		}
		s.computed += p.n
		e.index(s)
		if s.computed < len(s.toks) {
			continue // more of the prompt (or of the recompute) to go
		}
		if s.g.st.Generated == 0 && s.g.st.PromptTokens == 0 {
			s.g.st.PromptTokens = len(s.req.Prompt)
			s.g.st.PromptTime = now.Sub(s.admitted)
			if s.req.PromptLogprobs {
				s.str.add(Token{ID: -1, Prompt: s.g.promptLP})
			}
		}
		if e.sample(s, ids[i], lps[i], now) {
			end(s, Result{Stats: s.g.st, Queued: s.admitted.Sub(s.submitted)})
			continue
		}
		e.send(s)
	}
	if len(ended) > 0 {
		e.running = slices.DeleteFunc(e.running, func(s *seq) bool { return ended[s] })
	}
}

// index enters s's newly full blocks into the prefix cache.
func (e *Batcher) index(s *seq) {
	if !e.t.PrefixCache {
		return
	}
	bs := e.pool.size
	for i := len(s.hashes); (i+1)*bs <= s.computed; i++ {
		var parent uint64
		if i > 0 {
			parent = s.hashes[i-1]
		}
		s.hashes = append(s.hashes, e.pool.register(s.blocks[i], parent, s.toks[i*bs:(i+1)*bs]))
	}
}

// draw samples the next token of each sequence of the step that takes one
// (its prompt read, its answer not yet at max_tokens), on up to GOMAXPROCS
// goroutines: the backend's threads are idle until the next step, and at a
// large vocabulary one draw takes long (49152 tokens: 0.02 ms greedy, 0.34 ms
// at a temperature, 0.4-0.5 ms more for a logprob, on the 2-core dev VM).
// ids[i] is plan[i]'s token, -1 where it takes none; lps[i] its logprob
// when the request asks for them.
func (e *Batcher) draw(plan []step, logits *backends.Logits) (ids []int32, lps []*TokenLogprob) {
	ids = make([]int32, len(plan))
	lps = make([]*TokenLogprob, len(plan))
	todo := make([]int, 0, len(plan))
	for i, p := range plan {
		ids[i] = -1
		if s := p.s; s.computed+p.n >= len(s.toks) && s.g.st.Generated < s.req.MaxTokens {
			todo = append(todo, i)
		}
	}
	one := func(i int) {
		g, row := plan[i].s.g, logits.Last(i)
		ids[i] = g.sample(row)
		lps[i] = g.logprob(row, ids[i])
	}
	workers := min(runtime.GOMAXPROCS(0), len(todo))
	if workers <= 1 {
		for _, i := range todo {
			one(i)
		}
		return ids, lps
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for k := next.Add(1) - 1; k < int64(len(todo)); k = next.Add(1) - 1 {
				one(todo[k])
			}
		})
	}
	wg.Wait()
	return ids, lps
}

// sample takes s's next token, as draw drew it: id -1 when draw took none
// (the answer being at max_tokens), lp nil unless the request asks for
// logprobs. It streams the token and reports whether s is finished.
func (e *Batcher) sample(s *seq, id int32, lp *TokenLogprob, now time.Time) bool {
	if id < 0 {
		return e.flush(s, now, true)
	}
	t, ok := s.g.take(id, lp)
	if s.firstTok.IsZero() {
		s.firstTok = now
		s.g.st.TimeToFirstTok = now.Sub(s.admitted)
	}
	if !ok {
		return e.flush(s, now, true)
	}
	s.toks = append(s.toks, t.ID)
	if s.str.add(t) {
		s.g.st.FinishReason = FinishStop
		return e.flush(s, now, false)
	}
	if s.g.closed() || s.g.st.Generated >= s.req.MaxTokens || s.computed >= e.ctx {
		return e.flush(s, now, true)
	}
	return false
}

// flush ends s's text: the decoder's rest (unless a stop string ended the
// text), then what the stop strings held back.
func (e *Batcher) flush(s *seq, now time.Time, rest bool) bool {
	if !s.firstTok.IsZero() {
		s.g.st.GenerateTime = now.Sub(s.firstTok)
	}
	if rest {
		if r := s.g.flush(); r != "" && s.str.add(Token{ID: -1, Text: r}) {
			s.g.st.FinishReason = FinishStop
		}
	}
	if s.g.end != nil {
		s.str.add(Token{ID: s.g.end.ID, Logprob: s.g.end, End: true})
	}
	s.str.flush()
	return true
}

// send hands s's ready text to its reader without waiting: a slow reader
// gets the text of several steps in one event, and never holds up the loop.
func (e *Batcher) send(s *seq) {
	if !s.str.ready() {
		return
	}
	ev := s.str.take()
	select {
	case s.out <- ev:
	default:
		s.str.ev = ev // the reader is behind: try again after the next step
	}
}

// retire gives a running sequence's blocks back.
func (e *Batcher) retire(s *seq) {
	e.pool.release(s.blocks)
	s.blocks = nil
	e.keys[s.req.Key].running--
	e.dropKey(s.req.Key)
}

// end finishes s: its last text and final event are delivered by a
// goroutine of their own (the reader may be slow), and the drain rate and
// mean service time take it into account.
func (e *Batcher) end(s *seq, res Result) {
	now := e.clock.Now()
	if s.unwatch != nil {
		s.unwatch()
	}
	if !s.admitted.IsZero() {
		d := now.Sub(s.admitted)
		if e.service == 0 {
			e.service = d
		} else {
			e.service += (d - e.service) / 8
		}
		e.stats.Served++
	}
	e.finished = append(e.finished, e.busyAt(now))
	if len(e.finished) > 32 {
		e.finished = slices.Delete(e.finished, 0, len(e.finished)-32)
	}
	var last *Event
	if s.str != nil && s.str.ready() {
		ev := s.str.take()
		last = &ev
	}
	go func() {
		if last != nil {
			// Into the stream's buffer when it has room, even after the
			// request's context ended (a reader cut off by a timeout
			// still reads): a select would drop it half the time.
			select {
			case s.out <- *last:
			default:
				select {
				case s.out <- *last:
				case <-s.ctx.Done():
				}
			}
		}
		finish(s.job, res)
	}()
}

var (
	_ Engine  = (*Batcher)(nil)
	_ Tunable = (*Batcher)(nil)
)
