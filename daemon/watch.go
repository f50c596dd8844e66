package daemon

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/octet-dev/octet/configs"
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
			if ev.Has(fsnotify.Remove|fsnotify.Rename) && watched[name] {
				delete(watched, name) // a watched folder went; the rescan adds it back when it returns
			}
			models, config := fileEvent(name, ev.Op, modelsDir, cfgDir, r.s.cfg.Load())
			if !models && !config {
				continue
			}
			cfgDirty = cfgDirty || config
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

// fileEvent sorts a file event (op on name): whether it may change the
// served models (any event in the models folder, or on a watched folder
// itself), and whether it may change the configuration: any event on a file
// it is read from (the config file, the tuning.toml beside it,
// api_keys_file), or a file created, removed or renamed beside the config
// (editors and Kubernetes' config maps swap files and links that way). A
// mere write to another file beside the config starts no pass: a log
// written there, for one, would otherwise wake a pass whose report it
// records, and so on forever (seen with `octet serve --config
// dir/octet.toml 2> dir/octet.log`: a reload pass and a "config unchanged"
// line every 100 ms).
func fileEvent(name string, op fsnotify.Op, modelsDir, cfgDir string, c *configs.Config) (models, config bool) {
	models = name == modelsDir || name == cfgDir || filepath.Dir(name) == modelsDir
	if cfgDir == "" || c == nil || c.File == "" {
		return models, false
	}
	if filepath.Dir(name) == cfgDir && op.Has(fsnotify.Create|fsnotify.Remove|fsnotify.Rename) {
		return models, true
	}
	for _, f := range []string{c.File, filepath.Join(filepath.Dir(c.File), "tuning.toml"), c.Auth.APIKeysFile} {
		if f == "" {
			continue
		}
		if a, err := filepath.Abs(f); err == nil && a == name {
			return models, true
		}
	}
	return models, false
}
