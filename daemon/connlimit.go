package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/valyala/fasthttp"
)

// connLimit is a listener that hands the server at most max open
// connections (limits.max_connections). fasthttp's own limit answers the
// next ones with a plain-text 503 and closes them before reading their
// request, which clients see as a broken pipe or a reset; here a connection
// beyond the limit gets the API's answer: its request is read (for at most
// rejectWait, its body up to the body limit), answered 503 with the error
// body and Retry-After: 1, and closed. At most maxRejecting are answered
// at once; beyond that a connection is closed at once, so that a flood
// costs no more than fasthttp's answer would.
type connLimit struct {
	net.Listener
	max       int64
	bodyLimit int
	log       *slog.Logger
	rejected  prometheus.Counter // connections answered 503 or closed at the limit

	open      atomic.Int64
	rejecting atomic.Int64
	warned    atomic.Int64 // unix ns of the last warning
}

const (
	maxRejecting = 256
	rejectWait   = 2 * time.Second
)

func newConnLimit(l net.Listener, max, bodyLimit int, log *slog.Logger, rejected prometheus.Counter) *connLimit {
	return &connLimit{Listener: l, max: int64(max), bodyLimit: bodyLimit, log: log, rejected: rejected}
}

// Accept returns the next connection within the limit, answering those
// beyond it.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &limitedConn{Conn: c, l: l}, nil
		}
		l.open.Add(-1)
		l.reject(c)
	}
}

func (l *connLimit) reject(c net.Conn) {
	l.rejected.Inc()
	if now := time.Now().UnixNano(); now-l.warned.Load() > int64(time.Minute) {
		l.warned.Store(now)
		l.log.Warn("connection limit reached: new connections get 503 until some close", "max_connections", l.max, "addr", l.Addr().String())
	}
	if l.rejecting.Add(1) > maxRejecting {
		l.rejecting.Add(-1)
		c.Close()
		return
	}
	go func() {
		defer l.rejecting.Add(-1)
		defer c.Close()
		c.SetDeadline(time.Now().Add(rejectWait))
		var req fasthttp.Request
		req.ReadLimitBody(bufio.NewReader(c), l.bodyLimit) // answered whatever it holds
		e := errUnavailable("too_many_connections",
			fmt.Sprintf("the server has limits.max_connections (%d) connections open; retry", l.max))
		e.RetryAfter = time.Second
		var resp fasthttp.Response
		e.fill(&resp)
		resp.SetConnectionClose()
		w := bufio.NewWriter(c)
		if resp.Write(w) == nil {
			w.Flush()
		}
	}()
}

// limitedConn gives its place back when closed.
type limitedConn struct {
	net.Conn
	l    *connLimit
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// SyscallConn exposes the socket, for peerGone's poll.
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("daemon: not a socket")
}
