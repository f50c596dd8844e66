package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
)

// journalHandler writes each record through the handler of its level's
// syslog priority, whose writer starts the line with the "<N>" prefix that
// journald reads as the line's priority (SyslogLevelPrefix=, on by
// default): `journalctl -p err` then finds the errors. Without it every
// line of a service's stderr is stored at the unit's default priority.
type journalHandler struct {
	hs [4]slog.Handler // debug, info, warn, error
}

// newJournalHandler makes a journalHandler over w; mk builds the inner
// handler (text or JSON) on a writer.
func newJournalHandler(w io.Writer, mk func(io.Writer) slog.Handler) slog.Handler {
	mu := new(sync.Mutex)
	var j journalHandler
	for i, p := range [...]string{"<7>", "<6>", "<4>", "<3>"} {
		j.hs[i] = mk(&prefixWriter{mu: mu, w: w, prefix: p})
	}
	return j
}

func (j journalHandler) of(l slog.Level) slog.Handler {
	switch {
	case l >= slog.LevelError:
		return j.hs[3]
	case l >= slog.LevelWarn:
		return j.hs[2]
	case l >= slog.LevelInfo:
		return j.hs[1]
	}
	return j.hs[0]
}

func (j journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return j.of(l).Enabled(ctx, l)
}

func (j journalHandler) Handle(ctx context.Context, r slog.Record) error {
	return j.of(r.Level).Handle(ctx, r)
}

func (j journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for i, h := range j.hs {
		j.hs[i] = h.WithAttrs(as)
	}
	return j
}

func (j journalHandler) WithGroup(name string) slog.Handler {
	for i, h := range j.hs {
		j.hs[i] = h.WithGroup(name)
	}
	return j
}

// prefixWriter writes each line (one Write per record, as slog's
// handlers do) after its prefix, in one write.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	line := make([]byte, 0, len(p.prefix)+len(b))
	line = append(append(line, p.prefix...), b...)
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.w.Write(line); err != nil {
		return 0, err
	}
	return len(b), nil
}

// toJournal reports whether f is the journal's stream: systemd sets
// JOURNAL_STREAM to the "device:inode" of the stream it connected to a
// service's stdout and stderr.
func toJournal(f *os.File) bool {
	env := os.Getenv("JOURNAL_STREAM")
	return env != "" && env == fileID(f)
}
