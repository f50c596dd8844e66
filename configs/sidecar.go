package configs

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
)

// Sidecar is the optional NAME.toml beside a model file NAME.gguf: the
// model's other names and the quality gate a replacement of the model must
// pass before it goes live.
//
//	aliases = ["chat", "default"]
//	[gate]
//	enabled = true          # false: replacements go live unchecked
//	max_kld = 0.10          # mean KL divergence from the served model, nats/token (0: off)
//	max_ppl_ratio = 1.10    # perplexity over the served model's (0: off)
//	min_top1 = 0.0          # top-1 agreement with the served model (0: off)
//	min_rel_accuracy = 0.90 # share of the served model's next-token accuracy kept (0: off)
//	text = "heldout.txt"    # held-out text (default: a short text built into octet)
//	ctx = 64                # tokens per chunk of the text
//	chunks = 4              # chunks compared (at most)
type Sidecar struct {
	Aliases []string `toml:"aliases"`
	Gate    Gate     `toml:"gate"`

	File string `toml:"-"` // the path read ("" when the model has none)
}

// Gate is a sidecar's quality gate. Its default bounds are eval.DefaultGate's.
type Gate struct {
	Enabled        bool    `toml:"enabled"`
	MaxKLD         float64 `toml:"max_kld"`
	MaxPPLRatio    float64 `toml:"max_ppl_ratio"`
	MinTop1        float64 `toml:"min_top1"`
	MinRelAccuracy float64 `toml:"min_rel_accuracy"`
	Text           string  `toml:"text"`
	Ctx            int     `toml:"ctx"`
	Chunks         int     `toml:"chunks"`
}

// DefaultSidecar is what a model without a sidecar gets: no aliases and the
// default gate.
func DefaultSidecar() Sidecar {
	return Sidecar{Gate: Gate{Enabled: true, MaxKLD: 0.10, MaxPPLRatio: 1.10, MinRelAccuracy: 0.90, Ctx: 64, Chunks: 4}}
}

// aliasName is what a model name or alias may be: what a client can type
// in "model" without quoting, at most 128 bytes.
var aliasName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$`)

// ValidModelName reports whether s may name a model (an alias, or a file
// stem that the registry serves).
func ValidModelName(s string) bool { return aliasName.MatchString(s) }

func (s *Sidecar) problems() []problem {
	var ps problems
	seen := map[string]bool{}
	if len(s.Aliases) > 64 {
		ps.add("aliases", "%d aliases; at most 64", len(s.Aliases))
	}
	for i, a := range s.Aliases {
		switch {
		case !ValidModelName(a):
			ps.add("aliases", "entry %d: %q is not a model name (letters, digits and . _ : / + -, starting with a letter or digit, at most 128 bytes)", i+1, a)
		case seen[a]:
			ps.add("aliases", "entry %d: %q is listed twice", i+1, a)
		}
		seen[a] = true
	}
	g := &s.Gate
	unit := func(key string, v float64) {
		if v < 0 || v > 1 || math.IsNaN(v) {
			ps.add(key, "%g is out of range [0, 1]", v)
		}
	}
	if g.MaxKLD < 0 || math.IsNaN(g.MaxKLD) || math.IsInf(g.MaxKLD, 0) {
		ps.add("gate.max_kld", "%g must be a number ≥ 0 (0: off)", g.MaxKLD)
	}
	if math.IsNaN(g.MaxPPLRatio) || math.IsInf(g.MaxPPLRatio, 0) || g.MaxPPLRatio < 0 || (g.MaxPPLRatio > 0 && g.MaxPPLRatio < 1) {
		ps.add("gate.max_ppl_ratio", "%g must be ≥ 1 (or 0: off)", g.MaxPPLRatio)
	}
	unit("gate.min_top1", g.MinTop1)
	unit("gate.min_rel_accuracy", g.MinRelAccuracy)
	ps.intRange("gate.ctx", g.Ctx, 8, 4096)
	ps.intRange("gate.chunks", g.Chunks, 1, 256)
	return ps
}

// ParseSidecar decodes src (the contents of file) over the defaults and
// validates it. Errors name file, line and key. A relative gate.text is
// made relative to file's folder.
func ParseSidecar(file, src string) (*Sidecar, error) {
	s := DefaultSidecar()
	if err := parse(file, src, &s, s.problems); err != nil {
		return nil, err
	}
	s.File = file
	if s.Gate.Text != "" {
		s.Gate.Text = absolute(filepath.Dir(file), s.Gate.Text)
	}
	return &s, nil
}

// LoadSidecar reads the sidecar at path. A missing file is not an error:
// it gives the defaults.
func LoadSidecar(path string) (*Sidecar, error) {
	src, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		s := DefaultSidecar()
		return &s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	return ParseSidecar(path, string(src))
}
