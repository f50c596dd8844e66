package daemon

import "sync"

// tracker counts running generations and refuses new ones while closed
// (draining or shutting down).
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   []chan struct{}
}

func (t *tracker) begin() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) end() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		for _, c := range t.idle {
			close(c)
		}
		t.idle = nil
	}
}

// close refuses new generations; the channel closes once none runs.
func (t *tracker) close() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	c := make(chan struct{})
	if t.n == 0 {
		close(c)
	} else {
		t.idle = append(t.idle, c)
	}
	return c
}

// open accepts generations again (after an admin drain).
func (t *tracker) open() {
	t.mu.Lock()
	t.closed = false
	t.mu.Unlock()
}

func (t *tracker) state() (running int, closed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n, t.closed
}
