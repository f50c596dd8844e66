// Package configs holds octet's configuration: the schema of octet.toml and
// tuning.toml, their defaults, loading and validation.
//
// The defaults are the files octet.toml and tuning.toml in this folder,
// embedded in the binary, so the documented default and the running default
// are the same bytes. Load decodes the embedded file first and the
// operator's file on top of it: a key the operator leaves out keeps its
// default.
//
// Every error names the file, the line and the key: TOML syntax and type
// errors carry the position the TOML decoder reports; unknown keys and
// out-of-range values are located by a small scan of the file for the key
// (tables, dotted and quoted keys; not keys inside inline tables, which then
// have no line).
//
// Decisions where the design is silent:
//   - Relative paths in a file are relative to that file's folder (as in
//     Prometheus), so a config and its models can move together.
//   - tuning.toml is the file of that name next to octet.toml; when it is
//     absent, the embedded defaults apply.
//   - API keys in octet.toml are written only as "sha256:<hex>", so the
//     config file holds no secret; plain keys may come from api_keys_file.
//   - An api_keys_file that cannot be read is an error, not an open door.
package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Config is octet.toml, with tuning.toml beside it.
type Config struct {
	Listen  Listen  `toml:"listen"`
	Models  Models  `toml:"models"`
	Backend Backend `toml:"backend"`
	Auth    Auth    `toml:"auth"`
	Limits  Limits  `toml:"limits"`
	Log     Log     `toml:"log"`

	Tuning Tuning `toml:"-"`

	// File is the path Load read ("" for the embedded defaults alone);
	// TuningFile likewise for tuning.toml.
	File       string `toml:"-"`
	TuningFile string `toml:"-"`
}

// Listen says where the daemon accepts connections.
type Listen struct {
	TCP         string   `toml:"tcp"`
	Socket      string   `toml:"socket"`
	SocketMode  FileMode `toml:"socket_mode"`
	SocketGroup string   `toml:"socket_group"`
}

// Models says which model files are served and how.
type Models struct {
	Dir              string `toml:"dir"`
	AllowUnquantized bool   `toml:"allow_unquantized"`
	Context          int    `toml:"context"`
}

// Backend says which backend runs the models.
type Backend struct {
	Prefer  []string `toml:"prefer"`
	Threads int      `toml:"threads"`
}

// Auth holds the API keys accepted on TCP.
type Auth struct {
	APIKeys     []string `toml:"api_keys"`
	APIKeysFile string   `toml:"api_keys_file"`
	// AllowedOrigins are the web origins (scheme://host[:port], or "*")
	// whose pages may call the API from a browser (CORS); none by default.
	AllowedOrigins []string `toml:"allowed_origins"`
	// PublicMetrics serves GET /metrics on TCP without a key, for a
	// Prometheus that scrapes without credentials (the metrics name models
	// and count requests; they hold no prompt or answer).
	PublicMetrics bool `toml:"public_metrics"`

	// Hashes are the SHA-256 hashes of every accepted key, from both
	// sources; Load fills it.
	Hashes [][sha256.Size]byte `toml:"-"`
}

// Limits bound what one request or connection may take.
type Limits struct {
	MaxBodyBytes     int      `toml:"max_body_bytes"`
	MaxTokens        int      `toml:"max_tokens"`
	DefaultMaxTokens int      `toml:"default_max_tokens"`
	ReadTimeout      Duration `toml:"read_timeout"`
	IdleTimeout      Duration `toml:"idle_timeout"`
	RequestTimeout   Duration `toml:"request_timeout"`
	ShutdownGrace    Duration `toml:"shutdown_grace"`
	MaxConnections   int      `toml:"max_connections"`
}

// Log configures logging.
type Log struct {
	Level    string `toml:"level"`
	Format   string `toml:"format"`
	Requests bool   `toml:"requests"`
}

// Tuning is tuning.toml: the scheduler's knobs. KVBlockSize, KVCacheMB and
// KVType shape the runner's KV cache (a change applies when the model
// reloads); the rest apply live.
type Tuning struct {
	QueueLength      int      `toml:"queue_length"`
	PrefillChunk     int      `toml:"prefill_chunk"`
	KVBlockSize      int      `toml:"kv_block_size"`
	KVCacheMB        int      `toml:"kv_cache_mb"`
	KVType           string   `toml:"kv_type"`
	MaxBatchTokens   int      `toml:"max_batch_tokens"`
	MaxRunning       int      `toml:"max_running"`
	Policy           string   `toml:"policy"`
	PriorityAging    Duration `toml:"priority_aging"`
	PrefixCache      bool     `toml:"prefix_cache"`
	MaxRunningPerKey int      `toml:"max_running_per_key"`
	MaxQueuedPerKey  int      `toml:"max_queued_per_key"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like \"30s\" or \"2m\")", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// FileMode is a permission mode written as an octal string ("0660").
type FileMode uint32

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *FileMode) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(string(b), 8, 32)
	if err != nil || v > 0o777 {
		return fmt.Errorf("%q is not a file mode (an octal string such as \"0660\")", b)
	}
	*m = FileMode(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (m FileMode) MarshalText() ([]byte, error) { return []byte(fmt.Sprintf("%04o", uint32(m))), nil }

// problem is one invalid value, by key.
type problem struct {
	key, msg string
}

// problems collects the invalid values of a file.
type problems []problem

func (ps *problems) add(key, format string, args ...any) {
	*ps = append(*ps, problem{key, fmt.Sprintf(format, args...)})
}

func (ps *problems) intRange(key string, v, lo, hi int) {
	if v < lo || v > hi {
		ps.add(key, "%d is out of range [%d, %d]", v, lo, hi)
	}
}

func (ps *problems) durRange(key string, d Duration, lo, hi time.Duration) {
	if d.D() < lo || d.D() > hi {
		ps.add(key, "%s is out of range [%s, %s]", d.D(), lo, hi)
	}
}

func (c *Config) problems() []problem {
	var ps problems
	add, intRange, durRange := ps.add, ps.intRange, ps.durRange
	if a := c.Listen.TCP; a != "" {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			add("listen.tcp", "%q is not host:port", a)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			add("listen.tcp", "port %q is not a number in [0, 65535]", port)
		} else if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
			add("listen.tcp", "host %q is neither an IP address nor a host name", host)
		}
	}
	if s := c.Listen.Socket; len(s) > 107 {
		add("listen.socket", "path of %d bytes is longer than a Unix socket path may be (107)", len(s))
	}
	if c.Models.Dir == "" {
		add("models.dir", "must not be empty")
	}
	intRange("models.context", c.Models.Context, 0, 1<<20)
	if len(c.Backend.Prefer) == 0 {
		add("backend.prefer", "must name at least one backend (or \"auto\")")
	}
	for _, b := range c.Backend.Prefer {
		if strings.TrimSpace(b) == "" {
			add("backend.prefer", "has an empty name")
		}
	}
	intRange("backend.threads", c.Backend.Threads, 0, 4096)
	for i, k := range c.Auth.APIKeys {
		if _, err := parseHash(k); err != nil {
			add("auth.api_keys", "entry %d: %v", i+1, err)
		}
	}
	for i, o := range c.Auth.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			add("auth.allowed_origins", "entry %d: %v", i+1, err)
		}
	}
	l := &c.Limits
	intRange("limits.max_body_bytes", l.MaxBodyBytes, 1024, 64<<20)
	intRange("limits.max_tokens", l.MaxTokens, 1, 1<<20)
	intRange("limits.default_max_tokens", l.DefaultMaxTokens, 1, max(l.MaxTokens, 1))
	durRange("limits.read_timeout", l.ReadTimeout, 100*time.Millisecond, time.Hour)
	durRange("limits.idle_timeout", l.IdleTimeout, time.Second, 24*time.Hour)
	durRange("limits.request_timeout", l.RequestTimeout, time.Second, 24*time.Hour)
	durRange("limits.shutdown_grace", l.ShutdownGrace, 0, time.Hour)
	intRange("limits.max_connections", l.MaxConnections, 1, 1<<20)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "%q is not one of text, json", c.Log.Format)
	}
	return ps
}

func (t *Tuning) problems() []problem {
	var ps problems
	add, intRange := ps.add, ps.intRange
	intRange("queue_length", t.QueueLength, 0, 1<<20)
	intRange("prefill_chunk", t.PrefillChunk, 1, 1<<16)
	intRange("kv_block_size", t.KVBlockSize, 1, 1024)
	if t.KVBlockSize&(t.KVBlockSize-1) != 0 {
		add("kv_block_size", "%d is not a power of two", t.KVBlockSize)
	}
	intRange("max_batch_tokens", t.MaxBatchTokens, 1, 1<<20)
	intRange("max_running", t.MaxRunning, 1, 4096)
	intRange("kv_cache_mb", t.KVCacheMB, 0, 1<<24)
	switch t.KVType { // as backends.ParseKVType, and "auto"
	case "auto", "f32", "f16", "q8":
	default:
		add("kv_type", "%q is not a KV cache type (auto, f32, f16, q8)", t.KVType)
	}
	switch t.Policy {
	case "fcfs", "priority", "fair":
	default:
		add("policy", "%q is not a known policy (fcfs, priority, fair)", t.Policy)
	}
	ps.durRange("priority_aging", t.PriorityAging, 0, 24*time.Hour)
	intRange("max_running_per_key", t.MaxRunningPerKey, 0, 4096)
	intRange("max_queued_per_key", t.MaxQueuedPerKey, 0, 1<<20)
	return ps
}

// parseHash reads "sha256:<64 hex digits>".
func parseHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return h, fmt.Errorf("keys here are written as \"sha256:\" and the hex SHA-256 of the key (printf %%s KEY | sha256sum); plain keys belong in api_keys_file")
	}
	b, err := hex.DecodeString(hexPart)
	if err != nil || len(b) != sha256.Size {
		return h, fmt.Errorf("%q is not 64 hex digits", hexPart)
	}
	copy(h[:], b)
	return h, nil
}

// checkOrigin accepts "*" or a web origin as browsers send it: http or
// https, a host, an optional port, and no path, query or trailing slash.
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
		return fmt.Errorf("%q is not an origin: write \"*\" or scheme://host[:port], such as \"https://app.example.com\"", o)
	}
	if o != strings.ToLower(u.Scheme)+"://"+strings.ToLower(u.Host) {
		return fmt.Errorf("%q: write the origin in lower case, as browsers send it", o)
	}
	// Origins a browser never sends would never match: say so.
	host, port := u.Hostname(), u.Port()
	bare := host // the host as an origin writes it
	if strings.Contains(host, ":") {
		bare = "[" + host + "]"
	}
	n, perr := strconv.Atoi(port)
	ip4 := strings.Trim(host, "0123456789.") == "" // digits and dots: browsers write such a host as a full IPv4 address
	switch {
	case strings.Contains(host, "*"):
		return fmt.Errorf("%q: an origin is matched exactly, with no wildcards; list each origin, or write \"*\" for all", o)
	case strings.HasSuffix(u.Host, ":"):
		return fmt.Errorf("%q: the port is empty; write %q", o, u.Scheme+"://"+bare)
	case port != "" && (perr != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port):
		return fmt.Errorf("%q: write the port as browsers do, a number from 1 to 65535 without leading zeros", o)
	case port == "443" && u.Scheme == "https", port == "80" && u.Scheme == "http":
		return fmt.Errorf("%q: browsers leave the default port out of an origin; write %q", o, u.Scheme+"://"+bare)
	case ip4 && net.ParseIP(host) == nil:
		return fmt.Errorf("%q: browsers write an IPv4 host as four decimal numbers (127.0.0.1, not 127.1); write it so", o)
	case strings.HasSuffix(host, "."):
		return fmt.Errorf("%q: write the host without its trailing dot", o)
	}
	for _, r := range host {
		if r > unicode.MaxASCII {
			return fmt.Errorf("%q: browsers send an international domain name in its ASCII (punycode, xn--) form; write that", o)
		}
	}
	return nil
}

// HashKey returns the hash under which a plain API key is stored.
func HashKey(key string) [sha256.Size]byte { return sha256.Sum256([]byte(key)) }

// resolve makes p, read from a file in dir, relative to the working
// directory instead (or leaves it absolute).
func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// absolute is resolve, then made absolute, for paths the logs and error
// messages show to an operator. (Not for the socket: an absolute path may
// pass the 107 bytes a socket path may have.)
func absolute(dir, p string) string {
	p = resolve(dir, p)
	if a, err := filepath.Abs(p); err == nil && p != "" {
		return a
	}
	return p
}
