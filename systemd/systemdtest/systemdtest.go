// Package systemdtest plays the service manager's side of sd_notify for
// tests: a real datagram socket where NOTIFY_SOCKET points, read by the test.
package systemdtest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Listen opens a notify socket, points NOTIFY_SOCKET at it for the rest of
// the test (so the test must not be parallel), and returns its datagrams.
// The socket lives in a short temporary folder: its path must fit a Unix
// socket address.
func Listen(t testing.TB) <-chan string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	ch := make(chan string, 4096)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait(); os.RemoveAll(dir) })
	return ch
}

// Expect waits for a datagram that contains want, skipping others, and
// fails the test after within.
func Expect(t testing.TB, ch <-chan string, want string, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			t.Fatalf("no notification with %q within %s", want, within)
		}
	}
}
