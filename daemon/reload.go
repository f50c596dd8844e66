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
	rescan   time.Duration // periodic pass, for events the watcher missed

	mu       sync.Mutex
	files    map[string]*fileState // by model name
	cfgErr   string                // the config error last reported
	reloaded bool                  // RELOADING=1 was sent in this pass
}

// fileState is what the reloader knows of one model file.
type fileState struct {
	seen    fileStat  // the version last observed
	since   time.Time // when it was first observed
	live    fileStat  // the version the live model came from (or has the same bytes as)
	failed  fileStat  // a version that failed, reported once and not retried
	side    *configs.Sidecar
	sideAt  fileStat // the sidecar version side came from
	sideBad fileStat // a sidecar version that failed, reported once
}

func newReloader(ctx context.Context, s *server, ld *loader, level *slog.LevelVar, load func() (*configs.Config, error), m *reloadMetrics) *reloader {
	return &reloader{ctx: ctx, s: s, ld: ld, level: level, load: load, metrics: m,
		debounce: 100 * time.Millisecond, settle: 500 * time.Millisecond, rescan: 5 * time.Second,
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
	if reflect.DeepEqual(cur, next) {
		if explicit {
			r.report("config", "unchanged", "config unchanged", "config", orDefaults(next.File))
		}
		return nil
	}
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
		f.failed = st
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
	if live != nil && l.SHA256 == live.SHA256 {
		l.discard()
		f.live = st
		r.report(kind, "unchanged", "model file rewritten with the same bytes; the live model stays", "model", name, "sha256", live.SHA256)
		return false
	}
	if live != nil && side.Gate.Enabled {
		v, rep, err := r.ld.checkGate(r.ctx, l, live, side.Gate)
		if err != nil || !v.Pass {
			l.discard()
			f.failed = st
			why := v.Reason
			if err != nil {
				why = err.Error()
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
