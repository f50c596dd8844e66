package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/octet-dev/octet/systemd/systemdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSilentOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	if sent, err := Notify("READY=1"); sent || err != nil {
		t.Errorf("Notify outside systemd: %v, %v", sent, err)
	}
	os.Unsetenv("WATCHDOG_USEC")
	done := make(chan struct{})
	go func() {
		Watchdog(context.Background(), func(time.Duration) string { return "" }, slog.New(slog.DiscardHandler))
		close(done)
	}()
	<-done // returns at once without WATCHDOG_USEC
}

// TestWatchdog: pings flow while the check passes, stop while it fails
// (after one STATUS= naming the problem), and resume.
func TestWatchdog(t *testing.T) {
	ch := systemdtest.Listen(t)
	t.Setenv("WATCHDOG_USEC", "100000") // 100 ms: pings every 50 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	var problem atomic.Value
	problem.Store("")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Watchdog(ctx, func(limit time.Duration) string {
			if limit != 100*time.Millisecond {
				t.Errorf("limit %s", limit)
			}
			return problem.Load().(string)
		}, slog.New(slog.DiscardHandler))
		close(done)
	}()
	for range 3 {
		systemdtest.Expect(t, ch, "WATCHDOG=1", 5*time.Second)
	}
	problem.Store("m (no progress for 1s)")
	systemdtest.Expect(t, ch, "STATUS=stalled: m (no progress for 1s)", 5*time.Second)
	// No ping may come while stalled: wait for several ping periods.
	quiet := time.After(400 * time.Millisecond)
	for stalled := true; stalled; {
		select {
		case m := <-ch:
			if strings.Contains(m, "WATCHDOG=1") {
				t.Fatal("a watchdog ping while the loop is stalled")
			}
		case <-quiet:
			stalled = false
		}
	}
	problem.Store("")
	systemdtest.Expect(t, ch, "WATCHDOG=1", 5*time.Second)
	cancel()
	<-done
}

func TestReadyStoppingStatus(t *testing.T) {
	ch := systemdtest.Listen(t)
	Ready("ready, 1 models:\nx")
	if m := systemdtest.Expect(t, ch, "READY=1", time.Second); m != "READY=1\nSTATUS=ready, 1 models: x" {
		t.Errorf("%q", m)
	}
	Reloading("r")
	if m := systemdtest.Expect(t, ch, "RELOADING=1", time.Second); !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[0-9]+\nSTATUS=r$`).MatchString(m) {
		t.Errorf("%q", m)
	}
	Stopping("bye")
	systemdtest.Expect(t, ch, "STOPPING=1\nSTATUS=bye", time.Second)
}

// unitCopies writes the unit files with ExecStart pointing at an existing
// program, as systemd-analyze verify requires.
func unitCopies(t *testing.T) string {
	dir := t.TempDir()
	for _, f := range []string{"octet.service", "octet.socket", "octet-http.socket"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "/usr/local/bin/octet", "/bin/true")
		if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func analyze(t *testing.T) string {
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is absent (Debian package systemd; .ci/setup.d/daemon.sh installs it)")
	}
	return p
}

func TestUnitsVerify(t *testing.T) {
	sa := analyze(t)
	dir := unitCopies(t)
	cmd := exec.Command(sa, "verify", "octet.service", "octet.socket", "octet-http.socket")
	cmd.Dir = dir
	cmd.Args[2] = "./octet.service"
	cmd.Args[3] = "./octet.socket"
	cmd.Args[4] = "./octet-http.socket"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitSecurity reports systemd's exposure score of the service (0 is
// best, 10 worst) and holds it at or below 1 (it is 0.9 with systemd 252).
func TestUnitSecurity(t *testing.T) {
	sa := analyze(t)
	dir := unitCopies(t)
	cmd := exec.Command(sa, "security", "--offline=true", "--no-pager", "./octet.service")
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for octet.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security --offline=true: exposure %.1f", score)
	if score > 1 {
		t.Errorf("exposure %.1f > 1:\n%s", score, out)
	}
}

// TestInheritedRoleByFamily: a TCP socket named "unix" would take the Unix
// socket's role, which serves the admin API; Inherited refuses it. The
// test runs itself under systemd-socket-activate.
func TestInheritedRoleByFamily(t *testing.T) {
	if os.Getenv("OCTET_INHERITED_CHILD") == "1" {
		ls, err := Inherited()
		fmt.Printf("tcp=%v unix=%v err=%v\n", ls.TCP != nil, ls.Unix != nil, err)
		return
	}
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is absent (Debian package systemd; .ci/setup.d/daemon.sh installs it)")
	}
	for _, c := range []struct{ name, want string }{
		{"unix", `tcp=false unix=false err=systemd: inherited socket "unix" is named for the Unix socket (which serves the admin API) but is a tcp socket`},
		{"http", "tcp=true unix=false err=<nil>"},
	} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, sa, "-l", addr, "--fdname="+c.name, "-E", "OCTET_INHERITED_CHILD=1",
			os.Args[0], "-test.run=^TestInheritedRoleByFamily$")
		var out strings.Builder
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The first connection starts the child.
		for i := 0; i < 100; i++ {
			if conn, err := net.Dial("tcp", addr); err == nil {
				conn.Close()
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("--fdname=%s: %q, want %q", c.name, out.String(), c.want)
		}
	}
}
