package configs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// badFiles says, for each testdata/*.bad.toml, the line and key its error
// must name.
// badFile is what loading a bad file must say: the error starts with
// "configs: PATH:LINE: KEY: " and contains msg.
type badFile struct {
	line int
	key  string
	msg  string
}

var badFiles = map[string]badFile{
	"unknown-key.bad.toml":           {3, "listen.tcp_port", "unknown key"},
	"unknown-table.bad.toml":         {4, "model", "unknown key"},
	"syntax.bad.toml":                {2, "listen.tcp", "newlines"},
	"wrong-type.bad.toml":            {2, "limits.max_tokens", "incompatible types"},
	"max-tokens-zero.bad.toml":       {2, "limits.max_tokens", "out of range"},
	"default-above-max.bad.toml":     {3, "limits.default_max_tokens", "out of range [1, 100]"},
	"body-huge.bad.toml":             {2, "limits.max_body_bytes", "out of range"},
	"bad-duration.bad.toml":          {2, "limits.read_timeout", "not a duration"},
	"negative-duration.bad.toml":     {2, "limits.shutdown_grace", "out of range"},
	"bad-level.bad.toml":             {2, "log.level", `"loud"`},
	"bad-format.bad.toml":            {2, "log.format", `"xml"`},
	"bad-tcp.bad.toml":               {2, "listen.tcp", "host:port"},
	"bad-port.bad.toml":              {2, "listen.tcp", "99999"},
	"bad-mode.bad.toml":              {2, "listen.socket_mode", "file mode"},
	"plain-key.bad.toml":             {2, "auth.api_keys", "sha256"},
	"short-hash.bad.toml":            {2, "auth.api_keys", "64 hex digits"},
	"bad-origin.bad.toml":            {2, "auth.allowed_origins", `entry 2: "https://app.example.com/chat" is not an origin`},
	"upper-origin.bad.toml":          {2, "auth.allowed_origins", "lower case"},
	"wildcard-origin.bad.toml":       {2, "auth.allowed_origins", "no wildcards"},
	"empty-prefer.bad.toml":          {2, "backend.prefer", "at least one"},
	"negative-threads.bad.toml":      {2, "backend.threads", "out of range"},
	"empty-dir.bad.toml":             {2, "models.dir", "must not be empty"},
	"long-socket.bad.toml":           {2, "listen.socket", "longer than"},
	"missing-keys-file.bad.toml":     {2, "auth.api_keys_file", "no such file"},
	"duplicate-key.bad.toml":         {3, "log.level", "already been defined"},
	"tuning-unknown.bad.toml":        {2, "queue_len", "unknown key"},
	"tuning-block.bad.toml":          {1, "kv_block_size", "power of two"},
	"tuning-policy.bad.toml":         {1, "policy", `"lifo"`},
	"tuning-negative-queue.bad.toml": {2, "queue_length", "out of range"},
	"tuning-aging.bad.toml":          {2, "priority_aging", "out of range"},
	"tuning-per-key.bad.toml":        {2, "max_queued_per_key", "out of range"},
	"tuning-kv-type.bad.toml":        {2, "kv_type", `"q4_0"`},
}

func load(path string) error {
	if strings.HasPrefix(filepath.Base(path), "tuning") {
		_, err := LoadTuning(path)
		return err
	}
	_, err := Load(path)
	return err
}

func TestBadFiles(t *testing.T) { checkBadFiles(t, "testdata/*.bad.toml", badFiles, load) }

// checkBadFiles loads every file matching glob, each of which must be in
// table, and checks that it fails as the table says.
func checkBadFiles(t *testing.T, glob string, table map[string]badFile, load func(string) error) {
	t.Helper()
	files, _ := filepath.Glob(glob)
	if len(files) != len(table) {
		t.Errorf("%d files match %s, %d in the table", len(files), glob, len(table))
	}
	for _, path := range files {
		want, ok := table[filepath.Base(path)]
		if !ok {
			t.Errorf("%s: not in the table", path)
			continue
		}
		err := load(path)
		if err == nil {
			t.Errorf("%s: loaded", path)
			continue
		}
		prefix := fmt.Sprintf("configs: %s:%d: %s: ", path, want.line, want.key)
		if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, want.msg) {
			t.Errorf("%s:\n got %q\nwant %q…%q", path, msg, prefix, want.msg)
		}
	}
}

func TestGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.toml")
	if len(files) < 3 {
		t.Fatalf("only %d good files", len(files))
	}
	for _, path := range files {
		if err := load(path); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}

func TestFullFile(t *testing.T) {
	c, err := Load("testdata/full.good.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.TCP != "0.0.0.0:9000" || c.Listen.SocketMode != 0o600 || c.Models.Dir != abs(t, "testdata/models") ||
		c.Limits.ReadTimeout.D() != 10*time.Second || c.Log.Format != "json" || len(c.Auth.Hashes) != 1 || c.Auth.Hashes[0] != HashKey("foo") ||
		len(c.Auth.AllowedOrigins) != 3 || c.Auth.AllowedOrigins[1] != "http://localhost:5173" || !c.Auth.PublicMetrics {
		t.Errorf("%+v", c)
	}
	if c.Tuning != Defaults().Tuning {
		t.Errorf("tuning %+v, want the defaults", c.Tuning)
	}
}

// Keys missing from a file keep the embedded defaults; the embedded files
// are valid and their documented values are the running ones.
func TestDefaults(t *testing.T) {
	c, err := Load("testdata/dotted.good.toml")
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	if err := d.Validate("(defaults)"); err != nil {
		t.Fatal(err)
	}
	if c.Listen.TCP != "127.0.0.1:0" || c.Log.Level != "warn" || c.Listen.Socket != d.Listen.Socket || c.Limits != d.Limits {
		t.Errorf("%+v", c)
	}
	if d.Listen.TCP != "127.0.0.1:8080" || d.Listen.Socket != "/run/octet/octet.sock" || d.Models.Dir != "/var/lib/octet/models" || d.Listen.SocketMode != 0o660 {
		t.Errorf("defaults %+v", d)
	}
}

func TestTuningNextToConfig(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "octet.toml"), []byte("[log]\nlevel = \"warn\"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "tuning.toml"), []byte("queue_length = 3\n"), 0o644)
	c, err := Load(filepath.Join(dir, "octet.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Tuning.QueueLength != 3 || c.Tuning.PrefillChunk != Defaults().Tuning.PrefillChunk {
		t.Errorf("%+v", c.Tuning)
	}
	os.WriteFile(filepath.Join(dir, "tuning.toml"), []byte("queue_length = \"x\"\n"), 0o644)
	if _, err := Load(filepath.Join(dir, "octet.toml")); err == nil || !strings.Contains(err.Error(), "tuning.toml:1: queue_length") {
		t.Errorf("bad tuning.toml: %v", err)
	}
}

func TestKeysFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "keys"), []byte("# keys\nalpha\n\nsha256:"+fmt.Sprintf("%x", HashKey("beta"))+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "octet.toml"), []byte("[auth]\napi_keys_file = \"keys\"\n"), 0o644)
	c, err := Load(filepath.Join(dir, "octet.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Auth.Hashes) != 2 || c.Auth.Hashes[0] != HashKey("alpha") || c.Auth.Hashes[1] != HashKey("beta") {
		t.Errorf("hashes %x", c.Auth.Hashes)
	}
}

func TestValidateNamesSource(t *testing.T) {
	c := Defaults()
	c.Listen.TCP = "nope"
	err := c.Validate("command line")
	if err == nil || !strings.HasPrefix(err.Error(), "configs: command line: listen.tcp: ") {
		t.Errorf("%v", err)
	}
}

// FuzzParse: any input either fails with an *Error or yields a config that
// validates; nothing panics.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.toml")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(string(b))
	}
	f.Add(DefaultOctet())
	f.Add(DefaultTuning())
	f.Fuzz(func(t *testing.T, src string) {
		c := Defaults()
		if err := Parse("fuzz.toml", src, c); err == nil {
			if err := c.Validate("fuzz"); err != nil {
				t.Fatalf("parsed but invalid: %v", err)
			}
		}
		tn := Defaults().Tuning
		if err := ParseTuning("fuzz.toml", src, &tn); err == nil {
			if ps := tn.problems(); len(ps) > 0 {
				t.Fatalf("parsed but invalid: %v", ps)
			}
		}
	})
}

func abs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Every key of tuning.good.toml reaches the struct.
func TestTuningKeys(t *testing.T) {
	tn, err := LoadTuning("testdata/tuning.good.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := Tuning{QueueLength: 0, PrefillChunk: 64, KVBlockSize: 32, KVCacheMB: 256, KVType: "f16", MaxBatchTokens: 300, MaxRunning: 8,
		Policy: "fair", PriorityAging: Duration(2 * time.Second), PrefixCache: false, MaxRunningPerKey: 2, MaxQueuedPerKey: 8}
	if *tn != want {
		t.Errorf("got %+v\nwant %+v", *tn, want)
	}
}

// TestCheckOrigin: an origin a browser would send is taken; one it never
// sends (so CORS would silently stay off) is refused with the reason.
func TestCheckOrigin(t *testing.T) {
	for _, o := range []string{"*", "https://app.example.com", "http://localhost:8080", "https://xn--bcher-kva.example", "http://127.0.0.1:3000", "http://[::1]:5173"} {
		if err := checkOrigin(o); err != nil {
			t.Errorf("%q: %v", o, err)
		}
	}
	for o, why := range map[string]string{
		"https://*.example.com":       "no wildcards",
		"https://app.example.com:443": "default port",
		"http://localhost:80":         "default port",
		"https://bücher.example":      "punycode",
		"https://app.example.com.":    "trailing dot",
		"https://app.example.com/":    "not an origin",
		"ftp://app.example.com":       "not an origin",
		"HTTPS://app.example.com":     "lower case",
		"http://example.com:":         "port is empty",
		"http://localhost:080":        "leading zeros",
		"https://example.com:0443":    "leading zeros",
		"http://127.1":                "four decimal numbers",
		"https://[::1]:443":           `"https://[::1]"`,
	} {
		if err := checkOrigin(o); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: %v, want an error saying %q", o, err, why)
		}
	}
}
