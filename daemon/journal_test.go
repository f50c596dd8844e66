package daemon

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestJournalHandler: each line starts with its level's syslog priority,
// and attributes and groups added to the logger reach every level.
func TestJournalHandler(t *testing.T) {
	var buf bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	log := slog.New(newJournalHandler(&buf, func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) })).With("model", "m")
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	log.WithGroup("g").Error("x", "k", 1)
	want := "<7>level=DEBUG msg=d model=m\n<6>level=INFO msg=i model=m\n<4>level=WARN msg=w model=m\n<3>level=ERROR msg=e model=m\n<3>level=ERROR msg=x model=m g.k=1\n"
	if buf.String() != want {
		t.Errorf("journal lines:\n%s\nwant:\n%s", buf.String(), want)
	}
}

// TestJournalStream: the daemon writes priority prefixes when its stderr is
// the stream JOURNAL_STREAM names (as under systemd), and plain lines when
// it is not.
func TestJournalStream(t *testing.T) {
	dir, _ := modelsDir(t)
	for _, journal := range []bool{true, false} {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(octet(t), "serve", "--models", dir, "--listen", "127.0.0.1:0", "--socket", filepath.Join(shortTemp(t), "o.sock"))
		id := "0:0"
		if journal {
			id = fileID(pw)
		}
		cmd.Env = append(os.Environ(), "JOURNAL_STREAM="+id)
		cmd.Stdout, cmd.Stderr = pw, pw
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		log := newLogBuf(pr)
		prefix := ""
		if journal {
			prefix = "<6>"
		}
		log.wait(t, `^`+prefix+`time=\S+ level=INFO msg=ready`, 30*time.Second)
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("daemon: %v", err)
		}
		log.wait(t, `msg=stopped`, 10*time.Second)
		for _, l := range strings.Split(log.String(), "\n") {
			if l != "" && strings.HasPrefix(l, "<") != journal {
				t.Errorf("journal %v: line %q", journal, l)
			}
		}
	}
}
