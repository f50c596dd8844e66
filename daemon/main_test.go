package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	_ "github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/model/synth"
)

// The integration tests build the real binary and talk to it with real
// clients: curl, Go's net/http, raw sockets and the openai npm package.

const stories = "../../shared/models/stories260K/stories260K-q8_0-f16mix.gguf"

var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// octet returns the real binary, built once per test process on first use
// (so that fuzzing workers and parser-only runs build nothing).
func octet(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "octet-daemon-test"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "octet")
		build := exec.Command("go", "build", "-o", built.path, "../cmd/octet")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	if code == 0 {
		// fasthttp keeps one global goroutine that refreshes its Date
		// header, and a stopped server's worker-pool cleaner notices the
		// stop only after its idle sleep (10 s); neither is ours to end.
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
			goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// modelsDir returns a folder holding one model: stories260K (Q8_0) from
// ../shared where present, else synth's "tiny" shape. It returns the
// model's name too.
func modelsDir(t *testing.T) (dir, name string) {
	t.Helper()
	dir = t.TempDir()
	if abs, err := filepath.Abs(stories); err == nil {
		if _, err := os.Stat(abs); err == nil {
			if err := os.Symlink(abs, filepath.Join(dir, "stories.gguf")); err != nil {
				t.Fatal(err)
			}
			return dir, "stories"
		}
	}
	t.Logf("%s is absent: serving synth's tiny shape instead", stories)
	if err := synth.Run(context.Background(), synth.Options{Shape: "tiny", Type: gguf.Q8_0, Out: filepath.Join(dir, "tiny.gguf"), Seed: 1}); err != nil {
		t.Fatal(err)
	}
	return dir, "tiny"
}

// logBuf collects a process's log lines and lets tests wait for one.
type logBuf struct {
	mu    sync.Mutex
	lines []string
	cond  *sync.Cond
	eof   bool
}

func newLogBuf(r io.Reader) *logBuf {
	b := &logBuf{}
	b.cond = sync.NewCond(&b.mu)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			b.mu.Lock()
			b.lines = append(b.lines, sc.Text())
			b.cond.Broadcast()
			b.mu.Unlock()
		}
		b.mu.Lock()
		b.eof = true
		b.cond.Broadcast()
		b.mu.Unlock()
	}()
	return b
}

// wait returns the first line matching re, or fails after d.
func (b *logBuf) wait(t *testing.T, re string, d time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	timer := time.AfterFunc(d, func() { b.mu.Lock(); b.cond.Broadcast(); b.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(d)
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := 0; ; {
		for ; i < len(b.lines); i++ {
			if m := rx.FindStringSubmatch(b.lines[i]); m != nil {
				return m
			}
		}
		if b.eof || time.Now().After(deadline) {
			t.Fatalf("no log line matching %q; log:\n%s", re, strings.Join(b.lines, "\n"))
		}
		b.cond.Wait()
	}
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// proc is a running `octet serve`.
type proc struct {
	cmd  *exec.Cmd
	log  *logBuf
	url  string // http://127.0.0.1:PORT
	sock string
	done chan error
}

// serve starts the binary with args (after "serve") and waits until it is
// ready. With tcp it listens on a loopback port 0, with a socket on a
// temporary Unix socket.
func serve(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	sock := filepath.Join(shortTemp(t), "octet.sock")
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--socket", sock}, args...)
	p := start(t, env, octet(t), args...)
	p.sock = sock
	p.waitReady(t)
	return p
}

// start runs prog (the daemon, or a program that runs it) and collects its
// log; the process is killed at the end of the test if still running.
func start(t *testing.T, env []string, prog string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: newLogBuf(stderr), done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.log)
		}
	})
	return p
}

func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	m := p.log.wait(t, `msg=listening network=tcp addr=(127\.0\.0\.1:\d+)`, 30*time.Second)
	p.url = "http://" + m[1]
	p.log.wait(t, `msg=ready`, 30*time.Second)
}

// stop sends SIGTERM and checks the daemon exits 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("daemon exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not exit within 30 s of SIGTERM")
	}
}

// shortTemp is a temporary folder with a path short enough for a Unix socket.
func shortTemp(t *testing.T) string {
	dir, err := os.MkdirTemp("", "oct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// curl runs curl and returns the HTTP status and the body.
func curl(t *testing.T, args ...string) (int, []byte) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is absent (.ci/setup.d/daemon.sh installs it)")
	}
	args = append([]string{"-sS", "--max-time", "60", "-w", "\n%{http_code}"}, args...)
	out, err := exec.Command("curl", args...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	i := bytes.LastIndexByte(out, '\n')
	var code int
	fmt.Sscan(string(out[i+1:]), &code)
	return code, out[:i]
}

// client is a Go HTTP client that dials the daemon's Unix socket when unix.
func client(sock string) *http.Client {
	tr := &http.Transport{DisableKeepAlives: false}
	if sock != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("response %q: %v", b, err)
	}
}

// chatBody is a small valid chat request.
func chatReq(model string, extra string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":8,"temperature":0` + extra + `}`
}

// sse splits a stream into its data payloads.
func sse(b []byte) []string {
	var out []string
	for _, ev := range strings.Split(string(b), "\n\n") {
		if d, ok := strings.CutPrefix(strings.TrimSpace(ev), "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func regexpFind(s, re string) string {
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}
