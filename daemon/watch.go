package daemon

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watch runs the reloader's passes until ctx ends: after file events in the
// models folder or the config folder (debounced: a burst of events makes one
// pass), again while a file is settling, and every rescan interval as a
// backstop for events the watcher missed (an overflow, a folder created
// later, a network file system). Folders are watched, not files: editors
// and `mv` replace files.
func (r *reloader) watch(ctx context.Context) {
	modelsDir := filepath.Clean(r.ld.cfg.Models.Dir)
	cfgDir := ""
	if f := r.s.cfg.Load().File; f != "" && r.load != nil {
		cfgDir = filepath.Dir(f)
		if a, err := filepath.Abs(cfgDir); err == nil {
			cfgDir = a
		}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.s.log.Warn("cannot watch folders; changes are seen by the periodic rescan only", "every", r.rescan, "err", err)
	}
	var events chan fsnotify.Event
	var errs chan error
	if w != nil {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	watched := map[string]bool{}
	addDirs := func() {
		for _, d := range []string{modelsDir, cfgDir} {
			if d == "" || watched[d] || w == nil {
				continue
			}
			if err := w.Add(d); err == nil {
				watched[d] = true
				r.s.log.Debug("watching", "dir", d)
			}
		}
	}
	addDirs()
	tick := time.NewTicker(r.rescan)
	defer tick.Stop()
	wake := time.NewTimer(time.Hour)
	wake.Stop()
	defer wake.Stop()
	cfgDirty := false
	for {
		pending := false
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			name := filepath.Clean(ev.Name)
			if cfgDir != "" && filepath.Dir(name) == cfgDir {
				cfgDirty = true
			}
			if ev.Has(fsnotify.Remove|fsnotify.Rename) && watched[name] {
				delete(watched, name) // a watched folder went; the rescan adds it back when it returns
			}
			wake.Reset(r.debounce)
			continue
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			r.s.log.Warn("folder watch error; rescanning", "err", err)
			wake.Reset(r.debounce)
			continue
		case <-tick.C:
			addDirs()
			pending = r.pass(true, false)
		case <-wake.C:
			pending = r.pass(cfgDirty, cfgDirty)
			cfgDirty = false
		}
		if pending {
			wake.Reset(r.settle / 2)
		}
	}
}
