package configs

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

//go:embed octet.toml
var defaultOctet string

//go:embed tuning.toml
var defaultTuning string

// DefaultOctet and DefaultTuning return the embedded default files.
func DefaultOctet() string  { return defaultOctet }
func DefaultTuning() string { return defaultTuning }

// Error is one problem in a configuration file.
type Error struct {
	File string // path, "(defaults)" or "command line"
	Line int    // 0 when unknown
	Key  string // dotted key, "" for a syntax error before any key
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("configs: ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Defaults returns the embedded defaults.
func Defaults() *Config {
	c := &Config{}
	if _, err := toml.Decode(defaultOctet, c); err != nil {
		panic("configs: embedded octet.toml: " + err.Error())
	}
	if _, err := toml.Decode(defaultTuning, &c.Tuning); err != nil {
		panic("configs: embedded tuning.toml: " + err.Error())
	}
	return c
}

// Load reads the configuration file at path over the defaults, and
// tuning.toml beside it when present, then validates both. An empty path
// gives the defaults alone.
func Load(path string) (*Config, error) {
	c := Defaults()
	if path == "" {
		return c, c.Validate("(defaults)")
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	if err := Parse(path, string(src), c); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	c.File = path
	c.Models.Dir = absolute(dir, c.Models.Dir)
	c.Listen.Socket = resolve(dir, c.Listen.Socket)
	c.Auth.APIKeysFile = absolute(dir, c.Auth.APIKeysFile)
	tp := filepath.Join(dir, "tuning.toml")
	switch t, err := LoadTuning(tp); {
	case err == nil:
		c.Tuning, c.TuningFile = *t, tp
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if err := c.loadKeys(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes src (the contents of file) over c and validates the result;
// c.Tuning is left alone. Errors name file, line and key.
func Parse(file, src string, c *Config) error { return parse(file, src, c, c.problems) }

// LoadTuning reads a tuning.toml over the defaults and validates it.
func LoadTuning(path string) (*Tuning, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	t := Defaults().Tuning
	if err := ParseTuning(path, string(src), &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// ParseTuning decodes src over t and validates the result.
func ParseTuning(file, src string, t *Tuning) error { return parse(file, src, t, t.problems) }

// parse decodes src over v, then reports unknown keys, then the problems
// of the decoded values.
func parse(file, src string, v any, problems func() []problem) error {
	md, err := toml.Decode(src, v)
	if err != nil {
		return decodeError(file, err)
	}
	if err := unknownKeys(file, src, md); err != nil {
		return err
	}
	return located(file, src, problems())
}

// Validate checks c after it was changed in code (by command-line flags,
// say); errors name source as their file.
func (c *Config) Validate(source string) error {
	var errs []error
	for _, p := range append(c.problems(), c.Tuning.problems()...) {
		errs = append(errs, &Error{File: source, Key: p.key, Msg: p.msg})
	}
	return errors.Join(errs...)
}

func decodeError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: file, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
	}
	// Type errors come as "toml: line N (last key "k"): message".
	if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Key: m[2], Msg: m[3]}
	}
	return &Error{File: file, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

var typeErr = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

func unknownKeys(file, src string, md toml.MetaData) error {
	var errs []error
	for _, k := range md.Undecoded() {
		errs = append(errs, &Error{File: file, Line: keyLine(src, k.String()), Key: k.String(), Msg: "unknown key"})
	}
	return errors.Join(errs...)
}

func located(file, src string, ps []problem) error {
	var errs []error
	for _, p := range ps {
		errs = append(errs, &Error{File: file, Line: keyLine(src, p.key), Key: p.key, Msg: p.msg})
	}
	return errors.Join(errs...)
}

// keyLine finds the line that sets the dotted key in TOML source, or 0.
func keyLine(src, key string) int {
	table := ""
	sc := bufio.NewScanner(strings.NewReader(src))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			h := strings.Trim(strings.SplitN(line, "#", 2)[0], " \t")
			h = strings.Trim(h, "[]")
			table = normKey(h)
			if table == key {
				return n
			}
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		full := normKey(k)
		if table != "" {
			full = table + "." + full
		}
		if full == key {
			return n
		}
	}
	return 0
}

// normKey turns a written key (`a . "b"`) into its dotted form (a.b).
func normKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(slices.DeleteFunc(parts, func(s string) bool { return s == "" }), ".")
}

// loadKeys gathers the accepted key hashes from api_keys and api_keys_file.
func (c *Config) loadKeys() error {
	c.Auth.Hashes = nil
	for _, k := range c.Auth.APIKeys {
		h, _ := parseHash(k) // validated already
		c.Auth.Hashes = append(c.Auth.Hashes, h)
	}
	if c.Auth.APIKeysFile == "" {
		return nil
	}
	f, err := os.Open(c.Auth.APIKeysFile)
	if err != nil {
		return &Error{File: c.File, Line: keyLine(defaultOrFile(c.File), "auth.api_keys_file"), Key: "auth.api_keys_file", Msg: err.Error()}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "sha256:") {
			h, err := parseHash(line)
			if err != nil {
				return &Error{File: c.Auth.APIKeysFile, Line: n, Msg: err.Error()}
			}
			c.Auth.Hashes = append(c.Auth.Hashes, h)
			continue
		}
		c.Auth.Hashes = append(c.Auth.Hashes, HashKey(line))
	}
	return sc.Err()
}

// LoadKeys re-reads the keys (for code that changed Auth after Load).
func (c *Config) LoadKeys() error { return c.loadKeys() }

func defaultOrFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
