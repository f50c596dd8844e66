package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/systemd/systemdtest"
)

// The tests here run the daemon in-process on "test-gate", the reference
// backend behind a gate the test opens and closes, to hold a generation
// inside a forward step for as long as a test needs; and whose steps may
// be made slow (stepDelay).

var gate struct {
	mu   sync.Mutex
	ch   chan struct{} // nil: open
	born int           // runners loaded so far
	upTo int           // the gate holds the runners loaded before it closed
}

// stepDelay is how long each forward step of "test-gate" takes, in
// nanoseconds (0: no longer than the reference backend's); a step ends
// early when its context does.
var stepDelay atomic.Int64

// closeGate holds the forward steps of the runners loaded so far (not of
// those loaded later: a hot swap's new model loads and runs).
func closeGate() { holdUpTo(-1) }

// holdAll holds the forward steps of every runner, those loaded later too.
func holdAll() { holdUpTo(math.MaxInt) }

// holdUpTo holds the runners up to the upTo-th loaded (-1: those loaded
// so far).
func holdUpTo(upTo int) {
	gate.mu.Lock()
	gate.ch = make(chan struct{})
	gate.upTo = upTo
	if upTo < 0 {
		gate.upTo = gate.born
	}
	gate.mu.Unlock()
}

func openGate() {
	gate.mu.Lock()
	if gate.ch != nil {
		close(gate.ch)
		gate.ch = nil
	}
	gate.mu.Unlock()
}

func init() {
	backends.Register("test-gate", -1, func() (backends.Backend, error) { return gateBackend{}, nil })
}

type gateBackend struct{}

func (gateBackend) Name() string { return "test-gate" }

func (gateBackend) Load(m *model.Model, o backends.LoadOptions) (backends.Runner, error) {
	r, err := ref.Backend{}.Load(m, o)
	gate.mu.Lock()
	gate.born++
	id := gate.born
	gate.mu.Unlock()
	return gateRunner{r, id}, err
}

type gateRunner struct {
	backends.Runner
	id int
}

func (g gateRunner) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	gate.mu.Lock()
	ch := gate.ch
	if g.id > gate.upTo {
		ch = nil
	}
	gate.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if d := time.Duration(stepDelay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Runner.Forward(ctx, b)
}

// inproc is a daemon running in this process.
type inproc struct {
	cancel context.CancelFunc
	done   chan error
	log    *logBuf
	addr   string
	sock   string
}

func runInProcess(t *testing.T, edit func(*configs.Config)) *inproc {
	t.Helper()
	dir, _ := modelsDir(t)
	cfg := configs.Defaults()
	cfg.Listen.TCP = "127.0.0.1:0"
	cfg.Listen.Socket = filepath.Join(shortTemp(t), "o.sock")
	cfg.Models.Dir = dir
	cfg.Backend.Prefer = []string{"test-gate"}
	if edit != nil {
		edit(cfg)
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	d := &inproc{cancel: cancel, done: make(chan error, 1), log: newLogBuf(pr), sock: cfg.Listen.Socket}
	go func() {
		d.done <- Run(ctx, Options{Config: cfg, Logs: pw, Version: "test"})
		pw.Close()
	}()
	t.Cleanup(func() {
		openGate()
		cancel()
		<-d.done
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log)
		}
	})
	d.addr = d.log.wait(t, `msg=listening network=tcp addr=(127\.0\.0\.1:\d+)`, 30*time.Second)[1]
	d.log.wait(t, `msg=ready`, 30*time.Second)
	return d
}

// stop shuts the daemon down as SIGTERM does and checks Run returns nil.
func (d *inproc) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	d.wait(t)
}

// wait checks that Run returns nil (after a shutdown began).
func (d *inproc) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		d.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
}

// streamReq opens a streaming chat request on a raw connection and returns
// a reader of its events after the first (the role chunk).
func streamReq(t *testing.T, addr, model string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c, streamReqOn(t, c, `{"model":"`+model+`","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":20,"temperature":0,"stream":true,"ignore_eos":true}`)
}

// streamReqOn sends a streaming chat request on c and waits for its role
// chunk (sent once the engine took the request from its queue).
func streamReqOn(t *testing.T, c net.Conn, body string) *bufio.Reader {
	t.Helper()
	postRaw(c, body)
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"role":"assistant"`) {
			return r
		}
	}
}

// postRaw writes a chat completion request on c.
func postRaw(c net.Conn, body string) {
	io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
}

// rest reads the stream to its end and returns its data payloads.
func rest(t *testing.T, r *bufio.Reader) []string {
	t.Helper()
	var out []string
	for {
		line, err := r.ReadString('\n')
		if d, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
			out = append(out, d)
			if d == "[DONE]" {
				return out
			}
		}
		if err != nil {
			t.Fatalf("stream ended without [DONE]: %v (%q)", err, out)
		}
	}
}

// TestWatchdogFollowsTheLoop: READY=1 after start; WATCHDOG=1 while the
// request loop progresses (idle or working); no pings while a forward step
// is stuck; pings again once it moves; STOPPING=1 at shutdown.
func TestWatchdogFollowsTheLoop(t *testing.T) {
	ch := systemdtest.Listen(t)
	t.Setenv("WATCHDOG_USEC", "300000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	d := runInProcess(t, nil)
	closeGate() // after the start: loading runs a test forward pass
	if m := systemdtest.Expect(t, ch, "READY=1", 5*time.Second); !strings.Contains(m, "STATUS=ready, 1 models") {
		t.Errorf("ready notification %q", m)
	}
	for range 3 {
		systemdtest.Expect(t, ch, "WATCHDOG=1", 5*time.Second)
	}
	model := d.model()
	c, r := streamReq(t, d.addr, model) // now stuck in its first step
	defer c.Close()
	// Its first step has no measured duration yet: ten watchdog periods.
	systemdtest.Expect(t, ch, "STATUS=stalled: "+model, 10*time.Second)
	// A probe outside systemd sees it too.
	if code, body := curl(t, "http://"+d.addr+"/health"); code != 503 || !strings.Contains(string(body), `"status":"stalled"`) || !strings.Contains(string(body), model) {
		t.Errorf("/health while stuck: %d %s", code, body)
	}
	quiet := time.After(time.Second) // more than three ping periods
	for waiting := true; waiting; {
		select {
		case m := <-ch:
			if strings.Contains(m, "WATCHDOG=1") {
				t.Fatal("a watchdog ping while the request loop is stuck")
			}
		case <-quiet:
			waiting = false
		}
	}
	openGate()
	if ev := rest(t, r); !strings.Contains(ev[len(ev)-2], `"finish_reason":"length"`) {
		t.Errorf("stream after the stall: %q", ev)
	}
	systemdtest.Expect(t, ch, "WATCHDOG=1", 5*time.Second)
	if code, body := curl(t, "http://"+d.addr+"/health"); code != 200 || !strings.Contains(string(body), `"status":"ok"`) {
		t.Errorf("/health after the stall: %d %s", code, body)
	}
	d.stop(t)
	systemdtest.Expect(t, ch, "STOPPING=1", 5*time.Second)
}

// model is the name of the model the daemon serves.
func (d *inproc) model() string {
	return regexpFind(d.log.String(), `msg="model loaded" model=(\S+)`)
}

// TestShutdownLetsGenerationsFinish: a stream running at SIGTERM finishes
// within the grace, and Run returns nil.
func TestShutdownLetsGenerationsFinish(t *testing.T) {
	d := runInProcess(t, func(c *configs.Config) { c.Limits.ShutdownGrace = configs.Duration(30 * time.Second) })
	closeGate() // after the start: loading runs a test forward pass
	model := d.model()
	c, r := streamReq(t, d.addr, model)
	defer c.Close()
	d.cancel() // SIGTERM
	d.log.wait(t, `msg="shutting down" running=1`, 5*time.Second)
	// No new generation starts: the connection is refused or closed, or
	// the request gets 503.
	if c2, err := net.DialTimeout("tcp", d.addr, 5*time.Second); err == nil {
		c2.SetDeadline(time.Now().Add(10 * time.Second))
		postRaw(c2, chatReq(model, ""))
		if resp, err := http.ReadResponse(bufio.NewReader(c2), nil); err == nil {
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 503 {
				t.Errorf("a request during shutdown: %d %s", resp.StatusCode, b)
			}
		}
		c2.Close()
	}
	openGate()
	ev := rest(t, r)
	if !strings.Contains(ev[len(ev)-2], `"finish_reason":"length"`) {
		t.Errorf("stream did not finish normally: %q", ev)
	}
	d.wait(t)
}

// TestShutdownCancelsAfterGrace: a stream still running when the grace
// ends gets a final error event and [DONE]; Run returns nil.
func TestShutdownCancelsAfterGrace(t *testing.T) {
	d := runInProcess(t, func(c *configs.Config) { c.Limits.ShutdownGrace = configs.Duration(200 * time.Millisecond) })
	closeGate() // after the start: loading runs a test forward pass
	model := d.model()
	c, r := streamReq(t, d.addr, model)
	defer c.Close()
	d.cancel()
	ev := rest(t, r)
	if len(ev) < 2 || !strings.Contains(ev[len(ev)-2], `"code":"shutting_down"`) {
		t.Errorf("final events %q, want an error event with code shutting_down", ev)
	}
	d.log.wait(t, `msg="shutdown grace over; cancelling running generations" running=1`, time.Second)
	d.wait(t)
}

// TestDisconnectCancels: a client that hangs up mid-stream, or while it
// waits for a whole answer, cancels its generation (logged as 499), and the
// loop serves the next request.
func TestDisconnectCancels(t *testing.T) {
	d := runInProcess(t, nil)
	closeGate() // after the start: loading runs a test forward pass
	model := d.model()
	c, _ := streamReq(t, d.addr, model)
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	d.log.wait(t, `msg=request endpoint=chat model=`+model+` status=499 .* stream=true .*completion_tokens=0`, 10*time.Second)

	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	postRaw(c, chatReq(model, ""))
	d.waitRunning(t, 1) // the request is in the engine, held by the gate
	c.Close()
	d.log.wait(t, `msg=request endpoint=chat model=`+model+` status=499 .* stream=false .*completion_tokens=0`, 10*time.Second)
	openGate()
	code, body := curl(t, "-d", chatReq(model, ""), "http://"+d.addr+"/v1/chat/completions")
	if code != 200 {
		t.Errorf("next request: %d %s", code, body)
	}
	d.stop(t)
}

// waitRunning polls /admin/status on the socket until the model's engine
// runs n sequences.
func (d *inproc) waitRunning(t *testing.T, n int) {
	t.Helper()
	d.waitEngine(t, fmt.Sprintf("run %d sequences", n), func(running, _ int) bool { return running == n })
}

// waitQueued polls until the model's engine has n requests queued.
func (d *inproc) waitQueued(t *testing.T, n int) {
	t.Helper()
	d.waitEngine(t, fmt.Sprintf("queue %d requests", n), func(_, queued int) bool { return queued == n })
}

func (d *inproc) waitEngine(t *testing.T, what string, ok func(running, queued int) bool) {
	t.Helper()
	hc := client(d.sock)
	for range 1000 {
		resp, err := hc.Get("http://octet/admin/status")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Engines []struct{ Running, Queued int }
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err == nil && len(st.Engines) == 1 && ok(st.Engines[0].Running, st.Engines[0].Queued) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the engine never came to %s", what)
}

// TestQueueFull: with the loop held and the queue full, the next request
// gets 429 with Retry-After.
func TestQueueFull(t *testing.T) {
	d := runInProcess(t, func(c *configs.Config) { c.Tuning.QueueLength, c.Tuning.MaxRunning = 1, 1 })
	closeGate() // after the start: loading runs a test forward pass
	model := d.model()
	c1, _ := streamReq(t, d.addr, model) // running: its role chunk came when it left the queue
	defer c1.Close()
	c2, err := net.Dial("tcp", d.addr) // queued
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	postRaw(c2, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true}`)
	d.waitQueued(t, 1)
	code, body := curlHeaders(t, "-d", chatReq(model, ""), "http://"+d.addr+"/v1/chat/completions")
	if code != 429 || !strings.Contains(body, "Retry-After: ") || !strings.Contains(body, `"code":"queue_full"`) {
		t.Errorf("third request: %d %s", code, body)
	}
	openGate()
	d.stop(t)
}

// TestKeyQueueFull: a client with max_queued_per_key requests waiting gets
// 429 key_queue_full, which names the limit, while the queue has room.
func TestKeyQueueFull(t *testing.T) {
	d := runInProcess(t, func(c *configs.Config) { c.Tuning.QueueLength, c.Tuning.MaxRunning, c.Tuning.MaxQueuedPerKey = 8, 1, 1 })
	closeGate()
	model := d.model()
	c1, _ := streamReq(t, d.addr, model) // running: its role chunk came when it left the queue
	defer c1.Close()
	c2, err := net.Dial("tcp", d.addr) // queued
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	postRaw(c2, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true}`)
	d.waitQueued(t, 1)
	code, body := curlHeaders(t, "-d", chatReq(model, ""), "http://"+d.addr+"/v1/chat/completions")
	if code != 429 || !strings.Contains(body, "Retry-After: ") || !strings.Contains(body, `"code":"key_queue_full"`) || !strings.Contains(body, "max_queued_per_key") {
		t.Errorf("third request: %d %s", code, body)
	}
	// More choices than a key may have queued could never be taken: a 400.
	code, body = curlBody(t, "-d", chatReq(model, `,"n":2`), "http://"+d.addr+"/v1/chat/completions")
	if code != 400 || !strings.Contains(body, `"param":"n"`) || !strings.Contains(body, "max_queued_per_key") {
		t.Errorf("n=2 over max_queued_per_key 1: %d %s", code, body)
	}
	openGate()
	d.stop(t)
}

// TestStreamRefusedInQueue: a streamed request whose queue deadline passes
// before it leaves the queue gets 429 with Retry-After and an error body,
// not a 200 stream ending in an error event, so that clients retry it.
func TestStreamRefusedInQueue(t *testing.T) {
	d := runInProcess(t, func(c *configs.Config) { c.Tuning.MaxRunning = 1 })
	closeGate()
	model := d.model()
	c1, _ := streamReq(t, d.addr, model) // running, held in its step
	defer c1.Close()
	got := curlAsync(t, "-d", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}],"stream":true,"queue_deadline_ms":100}`,
		"http://"+d.addr+"/v1/chat/completions")
	d.waitQueued(t, 1)
	time.Sleep(150 * time.Millisecond) // past its deadline; the loop sees it at its next step
	openGate()
	a := <-got
	if a.code != 429 || !strings.Contains(a.body, "Retry-After: ") || !strings.Contains(a.body, "Content-Type: application/json") ||
		!strings.Contains(a.body, `"code":"queue_deadline"`) || strings.Contains(a.body, "data: ") {
		t.Errorf("streamed request past its queue deadline: %d %s", a.code, a.body)
	}
	d.log.wait(t, `msg=request endpoint=chat model=`+model+` status=429 .*error=".*queue_deadline_ms`, 10*time.Second)
	d.stop(t)
}

// TestChoicesFailTogether: a request of n choices fails as a whole when one
// fails: here one left in the queue past its deadline (behind another
// request) while the other runs makes a streamed request a 429 before any
// byte, and the running one is cancelled. An n the engine could never run
// at once (over max_running) is a 400, not choices run in waves.
func TestChoicesFailTogether(t *testing.T) {
	d := runInProcess(t, func(c *configs.Config) { c.Tuning.MaxRunning = 2 })
	model := d.model()
	if code, body := curl(t, "-d", `{"model":"`+model+`","prompt":"hi","n":3}`, "http://"+d.addr+"/v1/completions"); code != 400 || !strings.Contains(string(body), "max_running") {
		t.Errorf("n=3 over max_running 2: %d %s", code, body)
	}
	t.Cleanup(func() { stepDelay.Store(0) })
	stepDelay.Store(int64(40 * time.Millisecond)) // the first request's 24 tokens take about a second
	blocker := curlAsync(t, "-d", `{"model":"`+model+`","prompt":"Once","ignore_eos":true}`, "http://"+d.addr+"/v1/completions")
	d.waitRunning(t, 1)
	got := curlAsync(t, "-d", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}],"n":2,"max_tokens":50,"ignore_eos":true,"stream":true,"queue_deadline_ms":100}`,
		"http://"+d.addr+"/v1/chat/completions")
	d.waitEngine(t, "run one choice and queue the other", func(running, queued int) bool { return running == 2 && queued == 1 })
	a := <-got
	if a.code != 429 || !strings.Contains(a.body, `"code":"queue_deadline"`) || strings.Contains(a.body, "data: ") {
		t.Errorf("n=2 with one choice past its queue deadline: %d %s", a.code, a.body)
	}
	if b := <-blocker; b.code != 200 {
		t.Errorf("the request before: %d %s", b.code, b.body)
	}
	d.log.wait(t, `msg=request endpoint=chat model=`+model+` status=429 .*completion_tokens=\d+ .* n=2 .*queue_deadline_ms`, 10*time.Second)
	d.waitRunning(t, 0) // the running choice was cancelled
	if code, body := curl(t, "-d", chatReq(model, ""), "http://"+d.addr+"/v1/chat/completions"); code != 200 {
		t.Errorf("next request: %d %s", code, body)
	}
	d.stop(t)
}

// curlAnswer is a status and the headers and body with it.
type curlAnswer struct {
	code int
	body string
}

// curlAsync runs curlHeaders in a goroutine; its answer always comes, a
// failure's too.
func curlAsync(t *testing.T, args ...string) <-chan curlAnswer {
	got := make(chan curlAnswer, 1)
	go func() {
		a := curlAnswer{code: -1, body: "curl did not finish"}
		defer func() { got <- a }()
		a.code, a.body = curlHeaders(t, args...)
	}()
	return got
}

func curlHeaders(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return curlBody(t, append([]string{"-i"}, args...)...)
}

// TestNotifyBinary: the real binary under a NOTIFY_SOCKET read by the test:
// READY=1 with STATUS= once serving, WATCHDOG=1 pings, STOPPING=1 on SIGTERM.
func TestNotifyBinary(t *testing.T) {
	ch := systemdtest.Listen(t)
	dir, _ := modelsDir(t)
	p := serve(t, []string{"WATCHDOG_USEC=400000"}, "--models", dir)
	if m := systemdtest.Expect(t, ch, "READY=1", 5*time.Second); !strings.Contains(m, "STATUS=ready, 1 models") {
		t.Errorf("ready notification %q", m)
	}
	for range 2 {
		systemdtest.Expect(t, ch, "WATCHDOG=1", 5*time.Second)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	systemdtest.Expect(t, ch, "STOPPING=1", 5*time.Second)
	if err := <-p.done; err != nil {
		t.Errorf("exit: %v", err)
	}
}

// TestDrain: POST /admin/drain refuses new generations with 503 while the
// running one finishes; /ready says draining; /admin/resume undoes it.
func TestDrain(t *testing.T) {
	d := runInProcess(t, nil)
	closeGate() // after the start: loading runs a test forward pass
	model := d.model()
	c, r := streamReq(t, d.addr, model)
	defer c.Close()
	admin := func(method, path string) (int, string) {
		t.Helper()
		return curlBody(t, "-X", method, "--unix-socket", d.sock, "http://octet"+path)
	}
	if code, body := admin("POST", "/admin/drain"); code != 202 || !strings.Contains(body, `"generations":1`) {
		t.Errorf("drain with a generation running: %d %s", code, body)
	}
	url := "http://" + d.addr
	if code, body := curlBody(t, "-d", chatReq(model, ""), url+"/v1/chat/completions"); code != 503 || !strings.Contains(body, `"code":"draining"`) {
		t.Errorf("chat while draining: %d %s", code, body)
	}
	if code, body := curlBody(t, url+"/ready"); code != 503 || !strings.Contains(body, `"draining"`) {
		t.Errorf("/ready while draining: %d %s", code, body)
	}
	openGate()
	if ev := rest(t, r); !strings.Contains(ev[len(ev)-2], `"finish_reason":"length"`) {
		t.Errorf("the running stream after drain: %q", ev)
	}
	d.log.wait(t, `msg=request endpoint=chat model=`+model+` status=200 .* stream=true`, 10*time.Second)
	for range 1000 { // the stream's end is counted just after its log line
		if code, _ := admin("POST", "/admin/drain"); code == 200 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, body := admin("POST", "/admin/drain"); code != 200 || !strings.Contains(body, `"drained"`) {
		t.Errorf("drain when idle: %d %s", code, body)
	}
	if code, body := admin("POST", "/admin/resume"); code != 200 {
		t.Errorf("resume: %d %s", code, body)
	}
	if code, body := curlBody(t, "-d", chatReq(model, ""), url+"/v1/chat/completions"); code != 200 {
		t.Errorf("chat after resume: %d %s", code, body)
	}
	if code, _ := curlBody(t, url+"/ready"); code != 200 {
		t.Errorf("/ready after resume: %d", code)
	}
	d.stop(t)
}

func curlBody(t *testing.T, args ...string) (int, string) {
	t.Helper()
	code, body := curl(t, args...)
	return code, string(body)
}

// TestShutdownDuringReload: a SIGTERM while a reload is under way (here a
// replacement's load, held in its test forward pass) starts the shutdown
// at once, and a SIGHUP that waits on that reload does not hold it either;
// the quality gate the shutdown cuts short records no refusal.
func TestShutdownDuringReload(t *testing.T) {
	notify := systemdtest.Listen(t)
	d := runInProcess(t, nil)
	name := d.model()
	dir := filepath.Dir(regexpFind(d.log.String(), `msg="model loaded" .*path=(\S+)`))
	systemdtest.Expect(t, notify, "READY=1", 10*time.Second) // the start's load is over
	holdAll()
	writeModel(t, filepath.Join(dir, name+".gguf"), variant(t, baseModel(t), 7, false), byRename)
	systemdtest.Expect(t, notify, "RELOADING=1", 10*time.Second) // the replacement's load has begun
	// Run's handler takes it; its reload waits on the one held.
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	d.log.wait(t, `msg="SIGHUP: reloading"`, 5*time.Second)
	d.cancel()
	d.log.wait(t, `msg="shutting down"`, 2*time.Second)
	openGate()
	d.wait(t)
	// The replacement's check, cut short by the shutdown, refused nothing.
	if rf, err := readRefusal(dir, name); rf != nil || err != nil {
		t.Errorf("a refusal recorded at shutdown: %+v %v", rf, err)
	}
}

// TestConnectionLimit: beyond limits.max_connections a connection gets 503
// with the API's error body and Retry-After (not fasthttp's plain-text 503
// closed before the request is read); once one closes, requests pass again.
func TestConnectionLimit(t *testing.T) {
	d := runInProcess(t, func(c *configs.Config) { c.Limits.MaxConnections = 2 })
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(50 * time.Millisecond) // both accepted
	code, body := curlHeaders(t, "-d", chatReq(d.model(), ""), "http://"+d.addr+"/v1/chat/completions")
	if code != 503 || !strings.Contains(body, "Retry-After: 1") || !strings.Contains(body, `"code":"too_many_connections"`) {
		t.Errorf("a third connection: %d %s", code, body)
	}
	held[0].Close()
	ok := false
	for i := 0; i < 100 && !ok; i++ {
		code, _ := curl(t, "-d", chatReq(d.model(), ""), "http://"+d.addr+"/v1/chat/completions")
		ok = code == 200
		time.Sleep(20 * time.Millisecond)
	}
	if !ok {
		t.Error("no request passed after a connection closed")
	}
	held[1].Close()
	if _, m := curl(t, "http://"+d.addr+"/metrics"); !strings.Contains(string(m), "octet_connections_rejected_total 1\n") {
		t.Errorf("metrics: %s", grepLines(string(m), "connections"))
	}
	d.stop(t)
}
