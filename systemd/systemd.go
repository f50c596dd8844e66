// Package systemd is octet's side of the systemd protocols: readiness and
// status notifications, the watchdog, and socket activation. Everything here
// is silent outside systemd: without NOTIFY_SOCKET, notifications are
// dropped; without WATCHDOG_USEC, there is no watchdog; without LISTEN_FDS,
// there are no inherited listeners.
//
// The unit files octet.service and octet.socket live in this folder too,
// with the make fragment that installs them.
//
// Decisions where the design is silent:
//   - Inherited sockets are told apart by their FileDescriptorName: "http"
//     (or "tcp") is the TCP listener, "unix" (or "socket") the Unix one.
//     Unnamed ones are classified by address family.
//   - The watchdog pings at half of WatchdogSec, and only while the
//     caller's liveness check passes; the daemon's check is that every
//     model's request loop beat within the watchdog interval. When the check
//     fails the pings stop (and systemd restarts the service), and STATUS=
//     says which loop stalled.
package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends a state line ("READY=1", "STATUS=…") to the service
// manager. It reports whether one was listening; outside systemd it does
// nothing and returns false, nil.
func Notify(state string) (bool, error) {
	return daemon.SdNotify(false, state)
}

// Ready says that the service is up, with a one-line status.
func Ready(status string) { Notify("READY=1\nSTATUS=" + oneLine(status)) }

// Status updates the one-line status.
func Status(status string) { Notify("STATUS=" + oneLine(status)) }

// Stopping says that the service is shutting down.
func Stopping(status string) { Notify("STOPPING=1\nSTATUS=" + oneLine(status)) }

// Reloading says that a reload started; call Ready when it ends. systemd
// 253 and later want the monotonic time with it.
func Reloading(status string) {
	// SdNotifyMonotonicUsec is the whole "MONOTONIC_USEC=…\n" line.
	Notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=" + oneLine(status))
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// Watchdog pings the service manager's watchdog every half interval for as
// long as alive returns "" (a problem otherwise), until ctx ends. Outside a
// unit with WatchdogSec it returns at once.
func Watchdog(ctx context.Context, alive func(limit time.Duration) string, log *slog.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("watchdog settings unusable", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	log.Info("watchdog enabled", "interval", interval)
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	stalled := false
	for {
		if problem := alive(interval); problem == "" {
			if stalled {
				log.Info("request loops progress again; watchdog pings resume")
				stalled = false
			}
			Notify("WATCHDOG=1")
		} else if !stalled {
			stalled = true
			log.Error("request loop stalled; withholding watchdog pings", "problem", problem)
			Status("stalled: " + problem)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// WatchdogInterval is the service's WatchdogSec, or 0 when there is no
// watchdog.
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// Listeners are the sockets systemd passed in (socket activation); either
// may be nil.
type Listeners struct {
	TCP, Unix net.Listener
}

// Inherited returns the listeners passed by socket activation, and clears
// the LISTEN_* variables so children do not see them. Sockets that are not
// stream listeners, and extra ones, are an error.
func Inherited() (Listeners, error) {
	var ls Listeners
	for _, f := range activation.Files(true) {
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return ls, fmt.Errorf("systemd: inherited socket %q is not a stream listener: %w", f.Name(), err)
		}
		kind := strings.ToLower(f.Name())
		unix := l.Addr().Network() == "unix"
		switch kind {
		case "http", "tcp":
		case "unix", "socket":
			// The Unix socket's role serves the admin API: a socket of
			// another family must not take it by its name.
			if !unix {
				l.Close()
				return ls, fmt.Errorf("systemd: inherited socket %q is named for the Unix socket (which serves the admin API) but is a %s socket", f.Name(), l.Addr().Network())
			}
		default:
			kind = "tcp"
			if unix {
				kind = "unix"
			}
		}
		slot := &ls.TCP
		if kind == "unix" || kind == "socket" {
			slot = &ls.Unix
		}
		if *slot != nil {
			l.Close()
			return ls, fmt.Errorf("systemd: more than one inherited %s socket (%s)", kind, f.Name())
		}
		*slot = l
	}
	return ls, nil
}

// UnderSystemd reports whether a service manager listens for notifications.
func UnderSystemd() bool { return os.Getenv("NOTIFY_SOCKET") != "" }
