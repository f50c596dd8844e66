package daemon

import (
	"path/filepath"
	"testing"

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
