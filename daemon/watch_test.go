package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/octet-dev/octet/configs"
)

func TestFileEvent(t *testing.T) {
	dir := t.TempDir()
	cfgDir, models := filepath.Join(dir, "etc"), filepath.Join(dir, "models")
	c := &configs.Config{File: filepath.Join(cfgDir, "octet.toml")}
	c.Auth.APIKeysFile = filepath.Join(dir, "keys", "api.keys")
	w, cr := fsnotify.Write, fsnotify.Create
	for _, e := range []struct {
		name           string
		op             fsnotify.Op
		models, config bool
	}{
		{filepath.Join(cfgDir, "octet.toml"), w, false, true},
		{filepath.Join(cfgDir, "tuning.toml"), cr, false, true},
		{filepath.Join(cfgDir, "tuning.toml"), w, false, true},
		{filepath.Join(dir, "keys", "api.keys"), w, false, true},
		{filepath.Join(cfgDir, "octet.log"), w, false, false}, // a log beside the config
		{filepath.Join(cfgDir, "octet.log"), fsnotify.Chmod, false, false},
		// files swapped in beside the config: an editor's rename, a config
		// map's link
		{filepath.Join(cfgDir, ".octet.toml.swp"), fsnotify.Rename, false, true},
		{filepath.Join(cfgDir, "..data"), cr, false, true},
		{filepath.Join(models, "m.gguf"), w, true, false},
		{filepath.Join(models, "m.toml"), cr, true, false},
		{models, fsnotify.Remove, true, false},
		{cfgDir, cr, true, false}, // the folder itself went or came back
	} {
		m, cf := fileEvent(e.name, e.op, models, cfgDir, c)
		if m != e.models || cf != e.config {
			t.Errorf("%s %s: models %v config %v, want %v %v", e.op, e.name, m, cf, e.models, e.config)
		}
	}
	// Models beside the config: their files are models' events, the
	// config's files config events.
	if m, cf := fileEvent(filepath.Join(cfgDir, "m.gguf"), fsnotify.Write, cfgDir, cfgDir, c); !m || cf {
		t.Errorf("a model beside the config: models %v config %v", m, cf)
	}
	// No config file: nothing is a config event.
	if _, cf := fileEvent(filepath.Join(cfgDir, "tuning.toml"), cr, models, "", &configs.Config{}); cf {
		t.Error("a config event without a config file")
	}
}

// A changed setting that needs a restart is reported once: the periodic
// passes that read the same files again find them unchanged.
func TestConfigRestartSettingReportedOnce(t *testing.T) {
	cur := configs.Defaults()
	next := *cur
	next.Listen.TCP = "127.0.0.1:1"
	rl, s, logs := testReloader(cur, func() (*configs.Config, error) { c := next; return &c, nil })
	for range 3 {
		rl.reloadConfig(false)
	}
	if n := strings.Count(logs.String(), "apply only after a restart"); n != 1 {
		t.Errorf("the restart warning came %d times:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `msg="config reloaded"`); n != 1 {
		t.Errorf("%d reloads reported:\n%s", n, logs.String())
	}
	if got := s.cfg.Load().Listen.TCP; got != cur.Listen.TCP {
		t.Errorf("listen.tcp in force %q, want the running %q", got, cur.Listen.TCP)
	}
}

// testReloader is a reloader over an empty registry, with its log.
func testReloader(cfg *configs.Config, load func() (*configs.Config, error)) (*reloader, *server, *strings.Builder) {
	logs := &strings.Builder{}
	s := &server{log: slog.New(slog.NewTextHandler(logs, nil)), models: NewRegistry()}
	s.cfg.Store(cfg)
	s.metrics = newMetrics(s.models)
	rl := newReloader(context.Background(), s, &loader{cfg: cfg}, new(slog.LevelVar), load, newReloadMetrics(s.metrics.reg, s.models))
	return rl, s, logs
}

// A model file that is not whole yet, and was written to moments ago, is
// taken as still being copied (a pause longer than the settle time): it
// is refused only once it has not changed for a while.
func TestPartialFileWaitsForWriter(t *testing.T) {
	cfg := configs.Defaults()
	cfg.Models.Dir = t.TempDir()
	rl, _, logs := testReloader(cfg, nil)
	path := filepath.Join(cfg.Models.Dir, "m.gguf")
	if err := os.WriteFile(path, []byte("GGUF\x03\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rl.consider("m", path, now, false) // first seen: settling
	if !rl.consider("m", path, now.Add(time.Second), false) || strings.Contains(logs.String(), "not a whole GGUF file") {
		t.Fatalf("a file written a second ago was refused:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "model file is not whole yet; waiting for its writer") {
		t.Errorf("no word of the wait:\n%s", logs)
	}
	// A file that is wrong, not short, is refused at once.
	bad := filepath.Join(cfg.Models.Dir, "bad.gguf")
	os.WriteFile(bad, []byte("GGML\x03\x00\x00\x00\x00\x00\x00\x00"), 0o644)
	rl.consider("bad", bad, now, false)
	if rl.consider("bad", bad, now.Add(time.Second), false) || !strings.Contains(logs.String(), `msg="model file is not a whole GGUF file; not loaded (it is retried when the file changes)" model=bad`) {
		t.Errorf("a fresh file with a wrong magic was not refused at once:\n%s", logs)
	}
	old := now.Add(-time.Minute)
	os.Chtimes(path, old, old)
	rl.consider("m", path, now, false) // a new version: settling
	if rl.consider("m", path, now.Add(time.Second), false) || !strings.Contains(logs.String(), `level=ERROR msg="model file is not a whole GGUF file; not loaded (it is retried when the file changes)" model=m`) {
		t.Errorf("a file unchanged for a minute was not refused:\n%s", logs)
	}
}
