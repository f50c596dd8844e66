package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/systemd"
)

// Options configure Run.
type Options struct {
	Config *configs.Config
	// Reload re-reads the configuration (SIGHUP, POST /admin/reload); nil
	// when there is nothing to re-read.
	Reload  func() (*configs.Config, error)
	Logs    io.Writer // default os.Stderr
	Version string
}

// Run serves until ctx ends (SIGTERM, SIGINT), then shuts down gracefully
// and returns nil.
func Run(ctx context.Context, o Options) error {
	cfg := o.Config
	if o.Logs == nil {
		o.Logs = os.Stderr
	}
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Log.Level))
	hopts := &slog.HandlerOptions{Level: level}
	mk := func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, hopts) }
	if cfg.Log.Format == "json" {
		mk = func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, hopts) }
	}
	h := mk(o.Logs)
	if f, ok := o.Logs.(*os.File); ok && toJournal(f) {
		h = newJournalHandler(o.Logs, mk)
	}
	log := slog.New(h)
	// SIGHUP is taken from the start: its default action would end the
	// daemon, and systemd may send one (ExecReload) once READY=1 is out.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	s := &server{log: log, models: NewRegistry(), started: time.Now(), version: o.Version, stallLimit: 30 * time.Second}
	s.cfg.Store(cfg)
	s.metrics = newMetrics(s.models)
	// A removed model's series go when its last request has ended.
	s.models.gone = s.metrics.forget
	wd := systemd.WatchdogInterval()
	if wd > 0 {
		s.stallLimit = wd
	}
	s.genCtx, s.genCancel = context.WithCancelCause(context.Background())
	defer s.genCancel(nil)
	log.Info("octet starting", "version", o.Version, "config", orDefaults(cfg.File), "tuning", orDefaults(cfg.TuningFile),
		"models", cfg.Models.Dir, "api_keys", len(cfg.Auth.Hashes))
	systemd.Status("loading models")

	// Listeners first: a port in use fails fast, before models load.
	lns, err := s.listen(cfg)
	if err != nil {
		return err
	}
	backend, err := backends.Auto(cfg.Backend.Prefer, log)
	if err != nil {
		closeAll(lns)
		return err
	}
	s.backend = backend.Name()
	s.metrics.build.WithLabelValues(o.Version, runtime.Version(), s.backend).Set(1)
	ld := &loader{backend: backend, cfg: cfg, log: log}
	if wd > 0 {
		ld.idle = min(time.Second, wd/4) // idle loops beat well within the watchdog's limit
	}
	watchCtx, watchStop := context.WithCancel(context.Background())
	rl := newReloader(watchCtx, s, ld, level, o.Reload, newReloadMetrics(s.metrics.reg, s.models))
	rl.reconcile(true)
	defer s.models.Close()
	if s.models.Len() == 0 {
		log.Warn("no models yet: drop GGUF files (int8, Q8_0) into the models folder; they go live as they arrive", "dir", cfg.Models.Dir)
	}
	s.reload = func() error { return rl.reloadAll("admin") }
	var watchWG sync.WaitGroup
	watchWG.Go(func() { rl.watch(watchCtx) })
	defer watchWG.Wait()
	defer watchStop()
	var servers []*fasthttp.Server
	var wg sync.WaitGroup
	for _, ln := range lns {
		// connLimit holds the connections to max_connections;
		// fasthttp's own limit (Concurrency), with room for connections
		// it is still closing, stays out of its way.
		srv := &fasthttp.Server{
			Handler:                      s.handler(ln.unix),
			ErrorHandler:                 s.errorHandler,
			Name:                         "octet",
			MaxRequestBodySize:           cfg.Limits.MaxBodyBytes,
			ReadTimeout:                  cfg.Limits.ReadTimeout.D(),
			IdleTimeout:                  cfg.Limits.IdleTimeout.D(),
			Concurrency:                  cfg.Limits.MaxConnections + 64,
			CloseOnShutdown:              true,
			NoDefaultDate:                false,
			DisablePreParseMultipartForm: true,
			Logger:                       fasthttpLogger{log},
		}
		servers = append(servers, srv)
		limited := newConnLimit(ln.l, cfg.Limits.MaxConnections, cfg.Limits.MaxBodyBytes, log, s.metrics.rejectedConns)
		wg.Go(func() {
			if err := srv.Serve(limited); err != nil && !s.stopping.Load() {
				log.Error("listener stopped", "addr", ln.name, "err", err)
			}
		})
	}
	status := s.statusLine()
	systemd.Ready(status)
	log.Info("ready", "status", status)
	if s.models.Len() == 0 {
		log.Warn("no model to serve: /v1 completions answer 503 until one is added", "hint", s.noModelsMessage())
	}

	wdCtx, wdStop := context.WithCancel(context.Background())
	var wdWG sync.WaitGroup
	wdWG.Go(func() { systemd.Watchdog(wdCtx, s.alive, log) })

	// A SIGHUP's reload runs beside this loop, which must see a SIGTERM at
	// once even while a reload waits on a quality gate; SIGHUPs that come
	// meanwhile make one more reload, not one each.
	hupReload := make(chan struct{}, 1)
	watchWG.Go(func() {
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-hupReload:
				rl.reloadAll("SIGHUP")
			}
		}
	})
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-hup:
			select {
			case hupReload <- struct{}{}:
				log.Info("SIGHUP: reloading")
			default: // one is due already
			}
		}
	}

	// Shutdown: stop taking work, let running generations finish within the
	// grace, cancel the rest, close the listeners and the models.
	s.stopping.Store(true)
	watchStop() // no more reloads; a quality gate still running stops
	idle := s.gens.close()
	grace := s.cfg.Load().Limits.ShutdownGrace.D()
	running, _ := s.gens.state()
	systemd.Stopping(fmt.Sprintf("stopping: %d generations finishing (grace %s)", running, grace))
	log.Info("shutting down", "running", running, "grace", grace)
	shutdownDone := make(chan struct{})
	go func() {
		defer close(shutdownDone)
		var swg sync.WaitGroup
		for _, srv := range servers {
			swg.Go(func() { srv.Shutdown() })
		}
		swg.Wait()
		// A SIGTERM right after the start can reach Shutdown before a
		// Serve has registered its listener: fasthttp's Shutdown then has
		// nothing to close, and that Serve would accept on forever (the
		// daemon hung at wg.Wait below). Closing the listeners ends every
		// Serve.
		closeAll(lns)
	}()
	select {
	case <-idle:
	case <-time.After(grace):
		running, _ := s.gens.state()
		log.Warn("shutdown grace over; cancelling running generations", "running", running)
		s.genCancel(errShutdown)
		select {
		case <-idle:
		case <-time.After(10 * time.Second):
			log.Error("generations did not end after cancellation")
		}
	}
	select {
	case <-shutdownDone:
	case <-time.After(5 * time.Second):
		log.Warn("connections still open after shutdown; closing")
	}
	wg.Wait()
	wdStop()
	wdWG.Wait()
	for _, ln := range lns {
		if ln.unix && ln.path != "" {
			os.Remove(ln.path)
		}
	}
	log.Info("stopped")
	return nil
}

func orDefaults(p string) string {
	if p == "" {
		return "(built-in defaults)"
	}
	return p
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	l.UnmarshalText([]byte(s))
	return l
}

type listener struct {
	l    net.Listener
	unix bool
	name string
	path string // a socket file this process created (removed at exit)
}

func closeAll(lns []listener) {
	for _, ln := range lns {
		ln.l.Close()
	}
}

// listen opens the TCP and Unix listeners, or takes them from systemd's
// socket activation, which then replaces the configured addresses.
func (s *server) listen(cfg *configs.Config) ([]listener, error) {
	inh, err := systemd.Inherited()
	if err != nil {
		return nil, err
	}
	var lns []listener
	add := func(l net.Listener, unix bool, path, how string) {
		name := l.Addr().String()
		lns = append(lns, listener{l: l, unix: unix, name: name, path: path})
		network := "tcp"
		if unix {
			network = "unix"
		}
		s.listeners = append(s.listeners, network+":"+name)
		s.log.Info("listening", "network", network, "addr", name, "from", how)
	}
	if inh.TCP != nil || inh.Unix != nil {
		s.log.Info("listeners come from systemd's socket activation; listen.tcp and listen.socket are not used")
		if inh.TCP != nil {
			add(inh.TCP, false, "", "systemd")
		}
		if inh.Unix != nil {
			add(inh.Unix, true, "", "systemd")
		}
		return lns, nil
	}
	if a := cfg.Listen.TCP; a != "" {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return nil, fmt.Errorf("daemon: listen on %s: %w", a, err)
		}
		add(l, false, "", "config")
	}
	if p := cfg.Listen.Socket; p != "" {
		l, err := listenUnix(p, os.FileMode(cfg.Listen.SocketMode), cfg.Listen.SocketGroup)
		if err != nil {
			closeAll(lns)
			return nil, err
		}
		add(l, true, p, "config")
	}
	if len(lns) == 0 {
		return nil, errors.New("daemon: no listener: set listen.tcp or listen.socket (or use socket activation)")
	}
	return lns, nil
}

// listenUnix creates the socket file with its mode and group. A stale
// socket left by a crash is replaced; one that answers is not.
func listenUnix(path string, mode os.FileMode, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("daemon: socket folder: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("daemon: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("daemon: %s is in use by another process", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("daemon: listen on %s: %w", path, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		os.Remove(path)
		return nil, err
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return fail(fmt.Errorf("daemon: listen.socket_group: %w", err))
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(path, -1, gid); err != nil {
			return fail(fmt.Errorf("daemon: listen.socket_group: %w", err))
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		return fail(fmt.Errorf("daemon: listen.socket_mode: %w", err))
	}
	return l, nil
}

// alive is the watchdog's and /health's check: every model's loop that has
// work beat within limit, or within four times what its step in flight
// should take (at most ten limits: a step that long is stuck, whatever it
// holds). It returns the stalled models, or "".
func (s *server) alive(limit time.Duration) string {
	var stalled []string
	s.models.Each(func(l *Loaded) {
		st := l.Engine.Stats()
		if st.Queued+st.Running == 0 {
			return // no work to make progress on
		}
		due := st.StepDue
		if due == 0 { // no step measured yet: a first prefill may be long
			due = 10 * limit
		}
		if age := time.Since(st.Beat); age > min(max(limit, 4*due), 10*limit) {
			stalled = append(stalled, fmt.Sprintf("%s (no progress for %s)", l.Name, age.Round(time.Millisecond)))
		}
	})
	return strings.Join(stalled, ", ")
}

func (s *server) statusLine() string {
	n := s.models.Len()
	line := "ready, no models: add GGUF files to " + s.cfg.Load().Models.Dir
	if n > 0 {
		line = fmt.Sprintf("ready, %d models: %s", n, strings.Join(s.models.Names(), ", "))
	}
	if last := s.lastReload.Load(); last != nil {
		line += "; last reload: " + *last
	}
	return line
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp: " + fmt.Sprintf(format, args...))
}
