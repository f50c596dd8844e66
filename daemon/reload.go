package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/scheduler"
	"github.com/octet-dev/octet/systemd"
)

// reloader keeps the served models in step with the models folder and the
// running configuration in step with its files. One reload runs at a time:
// the watcher's, a SIGHUP's and an admin call's take turns on mu.
type reloader struct {
	ctx     context.Context // ends at shutdown: a quality gate running then stops
	s       *server
	ld      *loader
	level   *slog.LevelVar
	load    func() (*configs.Config, error) // nil: no config file
	metrics *reloadMetrics

	debounce time.Duration // quiet time after a file event before a pass
	settle   time.Duration // a file written in place is taken once unchanged this long
	writing  time.Duration // a file not whole yet, modified this recently, is taken as still being written
	rescan   time.Duration // periodic pass, for events the watcher missed

	mu       sync.Mutex
	files    map[string]*fileState // by model name
	cfgErr   string                // the config error last reported
	cfgRead  *configs.Config       // the config last read from the files (before keeping what needs a restart)
	reloaded bool                  // RELOADING=1 was sent in this pass
}

// fileState is what the reloader knows of one model file.
type fileState struct {
	seen    fileStat  // the version last observed
	since   time.Time // when it was first observed
	live    fileStat  // the version the live model came from (or has the same bytes as)
	failed  fileStat  // a version that failed, reported once and not retried
	partial fileStat  // a version not whole yet, taken as being written (said once)
	side    *configs.Sidecar
	sideAt  fileStat // the sidecar version side came from
	sideBad fileStat // a sidecar version that failed, reported once
}

func newReloader(ctx context.Context, s *server, ld *loader, level *slog.LevelVar, load func() (*configs.Config, error), m *reloadMetrics) *reloader {
	return &reloader{ctx: ctx, s: s, ld: ld, level: level, load: load, metrics: m, cfgRead: s.cfg.Load(),
		debounce: 100 * time.Millisecond, settle: 500 * time.Millisecond, writing: 3 * time.Second, rescan: 5 * time.Second,
		files: map[string]*fileState{}}
}

// report makes an outcome visible: a log line, the reload counter and the
// last-reload note in the status line.
func (r *reloader) report(kind, result string, msg string, args ...any) {
	r.metrics.reloads.WithLabelValues(kind, result).Inc()
	level := slog.LevelInfo
	switch result {
	case "failed":
		level = slog.LevelError
	case "refused":
		level = slog.LevelWarn
	}
	r.s.log.Log(context.Background(), level, msg, append(args, "kind", kind, "result", result)...)
	note := kind + " " + result
	for i := 0; i+1 < len(args); i += 2 {
		if args[i] == "model" {
			note = fmt.Sprintf("%s %v %s", kind, args[i+1], result)
		}
	}
	r.s.lastReload.Store(&note)
}

// begin tells systemd a reload started (once per pass); end says it is over.
func (r *reloader) begin(what string) {
	if !r.reloaded {
		r.reloaded = true
		systemd.Reloading("reloading: " + what)
	}
}

func (r *reloader) end() {
	if r.reloaded {
		r.reloaded = false
		systemd.Ready(r.s.statusLine())
	}
}

// reloadAll re-reads the configuration and the models folder now (SIGHUP,
// POST /admin/reload). It returns the configuration's error, if any.
func (r *reloader) reloadAll(why string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return nil // shutting down: no more reloads
	}
	defer r.end()
	r.begin(why)
	r.s.log.Info("reload requested", "by", why)
	for _, f := range r.files {
		f.failed, f.sideBad = fileStat{}, fileStat{} // asked for: retry what failed
	}
	var err error
	if r.load != nil {
		err = r.reloadConfig(true)
	}
	r.reconcile(false)
	return err
}

// pass is one watcher-driven reload; it reports whether a file is still
// settling (another pass is due soon).
func (r *reloader) pass(config, explicit bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return false
	}
	defer r.end()
	if config && r.load != nil {
		r.reloadConfig(explicit)
	}
	return r.reconcile(false)
}

// reloadConfig re-reads the configuration and applies it when its parsed
// form changed. A file that does not parse or validate changes nothing.
// explicit reports an unchanged config too (else only changes and new
// errors are reported, for the periodic pass).
func (r *reloader) reloadConfig(explicit bool) error {
	next, err := r.load()
	if err != nil {
		if explicit || err.Error() != r.cfgErr {
			r.begin("configuration")
			r.report("config", "failed", "config reload failed; keeping the running config", "err", err)
		}
		r.cfgErr = err.Error()
		return err
	}
	r.cfgErr = ""
	cur := r.s.cfg.Load()
	// Compared with the files' last reading, not with the config in force:
	// a setting that needs a restart differs from the running one until
	// then, and is reported once, not at every pass.
	if reflect.DeepEqual(r.cfgRead, next) {
		if explicit {
			r.report("config", "unchanged", "config unchanged", "config", orDefaults(next.File))
		}
		return nil
	}
	r.cfgRead = next
	r.begin("configuration")
	var restart []string
	if next.Listen != cur.Listen {
		restart = append(restart, "listen")
	}
	if !reflect.DeepEqual(next.Models, cur.Models) {
		restart = append(restart, "models")
	}
	if !reflect.DeepEqual(next.Backend, cur.Backend) {
		restart = append(restart, "backend")
	}
	if next.Limits.MaxBodyBytes != cur.Limits.MaxBodyBytes || next.Limits.ReadTimeout != cur.Limits.ReadTimeout ||
		next.Limits.IdleTimeout != cur.Limits.IdleTimeout || next.Limits.MaxConnections != cur.Limits.MaxConnections {
		restart = append(restart, "limits (connection settings)")
	}
	if next.Log.Format != cur.Log.Format {
		restart = append(restart, "log.format")
	}
	if len(restart) > 0 {
		r.s.log.Warn("these settings changed but apply only after a restart; the running values stay", "settings", strings.Join(restart, ", "))
	}
	// What cannot change live keeps its running value, so that the
	// config in force is what is reported (and compared next time).
	applied := *next
	applied.Listen, applied.Models, applied.Backend = cur.Listen, cur.Models, cur.Backend
	applied.Limits.MaxBodyBytes, applied.Limits.ReadTimeout = cur.Limits.MaxBodyBytes, cur.Limits.ReadTimeout
	applied.Limits.IdleTimeout, applied.Limits.MaxConnections = cur.Limits.IdleTimeout, cur.Limits.MaxConnections
	applied.Log.Format = cur.Log.Format
	r.level.Set(parseLevel(next.Log.Level))
	r.s.cfg.Store(&applied)
	r.report("config", "ok", "config reloaded", "config", orDefaults(next.File), "api_keys", len(next.Auth.Hashes),
		"log_level", next.Log.Level, "needs_restart", strings.Join(restart, ", "))
	if next.Tuning != cur.Tuning {
		r.retune(&applied, cur.Tuning)
	}
	return nil
}

// retune applies a changed tuning.toml. An engine that is
// scheduler.Tunable takes the scheduling knobs live; a change of the KV
// cache's shape (kv_block_size, kv_cache_mb, or the type kv_type resolves
// to against the model's), or an engine that cannot
// retune, starts the model again off to the side with the new settings,
// from the same bytes, and swaps it in: running requests finish on the
// engine they started on.
func (r *reloader) retune(cfg *configs.Config, prev configs.Tuning) {
	ld := *r.ld
	ld.cfg = cfg
	shape := cfg.Tuning.KVBlockSize != prev.KVBlockSize || cfg.Tuning.KVCacheMB != prev.KVCacheMB
	kv, kvErr := backends.ResolveKVType(cfg.Tuning.KVType, ld.backend)
	failed, live, reloaded := 0, 0, 0
	for _, name := range r.s.models.Names() {
		old := r.s.models.Get(name)
		if old == nil {
			continue
		}
		if t, ok := old.Engine.(scheduler.Tunable); ok && !shape && kvErr == nil && old.KV == kv {
			if err := t.Retune(EngineTuning(cfg.Tuning)); err != nil {
				failed++
				r.report("tuning", "failed", "tuning not applied to a model; it keeps the previous settings", "model", name, "err", err)
				continue
			}
			live++
			continue
		}
		l, err := ld.load(name, old.Path)
		if err == nil && l.SHA256 != old.SHA256 {
			l.discard()
			err = errors.New("the model file changed meanwhile; it is reloaded as a new version")
		}
		if err != nil {
			failed++
			r.report("tuning", "failed", "tuning not applied to a model; it keeps the previous settings", "model", name, "err", err)
			continue
		}
		r.s.models.Swap(name, l)
		reloaded++
	}
	*r.ld = ld
	if failed == 0 {
		r.report("tuning", "ok", "tuning applied", "tuning", orDefaults(cfg.TuningFile), "engines_retuned", live,
			"models_reloaded", reloaded, "kv_type", kv, "settings", fmt.Sprintf("%+v", cfg.Tuning))
	}
}

// reconcile brings the registry in step with the models folder: new and
// changed files that are whole and stable are loaded, checked and swapped
// in; removed files retire their models. initial takes every file as
// settled (the start). It reports whether a file is still settling.
func (r *reloader) reconcile(initial bool) (pending bool) {
	dir := r.ld.cfg.Models.Dir
	files, err := modelFiles(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if initial {
			r.s.log.Warn("models folder does not exist; create it and drop GGUF files (int8, Q8_0) into it", "dir", dir)
		}
		files = map[string]string{}
	case err != nil:
		r.s.log.Error("cannot read the models folder", "dir", dir, "err", err)
		return false
	}
	if initial {
		if err := tidyRefusals(dir, files); err != nil {
			r.s.log.Warn("cannot tidy the records of refused models", "dir", dir, "err", err)
		}
	}
	now := time.Now()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if r.consider(name, files[name], now, initial) {
			pending = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.files)) {
		if _, ok := files[name]; ok {
			continue
		}
		delete(r.files, name)
		r.forget(name)
		if old := r.s.models.Get(name); old != nil {
			r.begin("model " + name + " removed")
			r.s.models.Swap(name, nil)
			r.report("model_remove", "ok", "model removed: its file is gone; running requests finish on it", "model", name, "sha256", old.SHA256)
		}
	}
	return pending
}

// consider handles one model file; it reports whether the file is still
// settling.
func (r *reloader) consider(name, path string, now time.Time, initial bool) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false // gone since the listing: the next pass retires it
	}
	st := statOf(fi)
	f := r.files[name]
	if f == nil {
		f = &fileState{}
		r.files[name] = f
	}
	side := r.sidecar(name, path, f)
	live := r.s.models.Get(name)
	if live != nil && st == f.live {
		return false
	}
	if st != f.seen {
		f.seen, f.since = st, now
		if !initial {
			return true
		}
	}
	if !initial && now.Sub(f.since) < r.settle {
		return true
	}
	if st == f.failed {
		return false
	}
	kind := "model_add"
	if live != nil {
		kind = "model_replace"
	}
	if err := complete(path); errors.Is(err, errChanging) {
		f.seen = fileStat{}
		return true
	} else if err != nil {
		// A copy that pauses longer than the settle time (a slow disk or
		// network) is not a broken file yet.
		if age := now.Sub(st.MTime); endsTooSoon(err) && age >= 0 && age < r.writing {
			if f.partial != st {
				f.partial = st
				r.s.log.Info("model file is not whole yet; waiting for its writer", "model", name, "err", err, "refused_if_unchanged_for", r.writing)
			}
			return true
		}
		f.failed = st
		r.begin("model " + name) // the failure shows in systemd's STATUS too
		r.report(kind, "failed", "model file is not a whole GGUF file; not loaded (it is retried when the file changes)", "model", name, "err", err)
		return false
	}
	r.begin("model " + name)
	l, err := r.ld.load(name, path)
	if errors.Is(err, errChanging) {
		f.seen = fileStat{}
		return true
	}
	if err != nil {
		f.failed = st
		r.report(kind, "failed", "model not loaded", "model", name, "err", err)
		return false
	}
	if live == nil && side.Gate.Enabled { // with the gate off now, the file goes live and the record goes
		if rf := r.refusalOf(name); rf != nil && rf.SHA256 == l.SHA256 {
			l.discard()
			r.serveKept(name, st, f, rf, kind, side)
			return false
		}
	}
	if live != nil && l.SHA256 == live.SHA256 {
		l.discard()
		f.live = st
		r.report(kind, "unchanged", "model file rewritten with the same bytes; the live model stays", "model", name, "sha256", live.SHA256)
		return false
	}
	if live != nil && side.Gate.Enabled {
		v, rep, err := r.ld.checkGate(r.ctx, l, live, side.Gate)
		if r.ctx.Err() != nil { // shutting down: not checked, not refused
			l.discard()
			r.s.log.Info("replacement not checked: the daemon is stopping", "model", name, "sha256", l.SHA256)
			return false
		}
		if err != nil || !v.Pass {
			l.discard()
			f.failed = st
			why := v.Reason
			if err != nil {
				why = err.Error()
			}
			rf := refusal{SHA256: l.SHA256, Reason: why, At: time.Now().UTC(), KeptSHA256: live.SHA256}
			if err := recordRefusal(r.ld.cfg.Models.Dir, name, rf, live.bytes); err != nil {
				r.s.log.Warn("the refusal could not be recorded: after a restart the refused file would be served", "model", name, "err", err)
			}
			r.report(kind, "refused", "replacement refused by the quality gate; the live model stays", "model", name,
				"sha256", l.SHA256, "live_sha256", live.SHA256, "reason", why, "kld_mean", rep.KLDMean, "top1", rep.Top1, "ppl_ratio", rep.PPLRatio)
			return false
		}
		l.log.Info("replacement passed the quality gate", "model", name, "verdict", v.Reason, "seconds", rep.Seconds)
	}
	r.s.models.SetAliases(name, side.Aliases)
	r.s.models.Swap(name, l)
	f.live = st
	r.forget(name)
	args := []any{"model", name, "sha256", l.SHA256, "path", path, "arch", l.Model.Config.Arch, "context", l.Context, "kv_type", l.KV,
		"chat_template", l.Chat.Family, "int8", l.Quantized, "load_ms", l.LoadTime.Milliseconds()}
	if live != nil {
		args = append(args, "replaced_sha256", live.SHA256, "live_after_ms", time.Since(now).Milliseconds())
		r.report(kind, "ok", "model replaced; running requests finish on the previous version", args...)
	} else {
		r.report(kind, "ok", "model loaded", args...)
	}
	if sh := r.s.models.Shadowed(name); len(sh) > 0 {
		r.s.log.Warn("aliases taken by another model's name or alias are not served for this model", "model", name, "aliases", strings.Join(sh, ", "))
	}
	return false
}

// refusalOf returns model name's recorded refusal (refusal.go), nil when
// there is none or it cannot be read (which is said).
func (r *reloader) refusalOf(name string) *refusal {
	rf, err := readRefusal(r.ld.cfg.Models.Dir, name)
	if err != nil {
		r.s.log.Warn("a recorded refusal cannot be read; the file is taken as never refused", "model", name, "err", err)
	}
	return rf
}

// forget drops model name's recorded refusal, if any: its file went, or a
// version of it went live.
func (r *reloader) forget(name string) {
	if err := forgetRefusal(r.ld.cfg.Models.Dir, name); err != nil {
		r.s.log.Warn("a recorded refusal cannot be removed", "model", name, "err", err)
	}
}

// serveKept serves, in place of a file the quality gate refused before
// this start, the copy of the version served then.
func (r *reloader) serveKept(name string, st fileStat, f *fileState, rf *refusal, kind string, side *configs.Sidecar) {
	record, kept := refusalPaths(r.ld.cfg.Models.Dir, name)
	args := []any{"model", name, "sha256", rf.SHA256, "reason", rf.Reason, "refused_at", rf.At.Format(time.RFC3339),
		"hint", "replace the file, or delete " + record + " and restart to serve it anyway"}
	k, err := r.ld.load(name, kept)
	if err == nil && k.SHA256 != rf.KeptSHA256 {
		k.discard()
		err = fmt.Errorf("%s holds sha256 %s, not the recorded %s", kept, k.SHA256, rf.KeptSHA256)
	}
	if err != nil {
		f.failed = st
		r.report(kind, "refused", "model file was refused by the quality gate before this start, and the version served then is not at hand; not served",
			append(args, "err", err)...)
		return
	}
	r.s.models.SetAliases(name, side.Aliases)
	r.s.models.Swap(name, k)
	f.live = st
	r.report(kind, "refused", "model file was refused by the quality gate before this start; serving the version kept then",
		append(args, "served_sha256", k.SHA256)...)
}

// sidecar returns the model's sidecar settings, re-reading NAME.toml when it
// changed. A sidecar that fails keeps the last good settings (the defaults
// when there were none) and is reported once.
func (r *reloader) sidecar(name, path string, f *fileState) *configs.Sidecar {
	sp := strings.TrimSuffix(path, filepath.Ext(path)) + ".toml"
	var st fileStat
	if fi, err := os.Stat(sp); err == nil {
		st = statOf(fi)
	}
	if f.side != nil && st == f.sideAt || st == f.sideBad && st != (fileStat{}) {
		if f.side == nil {
			d := configs.DefaultSidecar()
			return &d
		}
		return f.side
	}
	sc, err := configs.LoadSidecar(sp)
	if err != nil {
		f.sideBad = st
		r.report("sidecar", "failed", "model sidecar not applied; the previous settings stay", "model", name, "err", err)
		if f.side == nil {
			d := configs.DefaultSidecar()
			return &d
		}
		return f.side
	}
	changed := f.side != nil && !reflect.DeepEqual(f.side, sc)
	f.side, f.sideAt = sc, st
	if r.s.models.Get(name) != nil && changed {
		r.s.models.SetAliases(name, sc.Aliases)
		r.report("sidecar", "ok", "model sidecar applied", "model", name, "aliases", strings.Join(sc.Aliases, ","), "gate", fmt.Sprintf("%+v", sc.Gate))
	}
	return sc
}
