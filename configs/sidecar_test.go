package configs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// badSidecars says, for each testdata/sidecar/*.bad.toml, the line and key
// its error must name.
var badSidecars = map[string]badFile{
	"unknown-key.bad.toml":   {2, "alias", "unknown key"},
	"bad-alias.bad.toml":     {1, "aliases", `entry 2: "has space" is not a model name`},
	"twice.bad.toml":         {1, "aliases", "listed twice"},
	"negative-kld.bad.toml":  {2, "gate.max_kld", "≥ 0"},
	"ppl-below-one.bad.toml": {2, "gate.max_ppl_ratio", "≥ 1"},
	"top1.bad.toml":          {3, "gate.min_top1", "out of range"},
	"ctx.bad.toml":           {2, "gate.ctx", "out of range"},
	"wrong-type.bad.toml":    {1, "aliases", "incompatible types"},
	"syntax.bad.toml":        {1, "aliases", "expected"},
}

func TestSidecarBadFiles(t *testing.T) {
	checkBadFiles(t, "testdata/sidecar/*.bad.toml", badSidecars, func(path string) error {
		_, err := LoadSidecar(path)
		return err
	})
}

func TestSidecarGoodFiles(t *testing.T) {
	s, err := LoadSidecar("testdata/sidecar/full.good.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultSidecar().Gate
	want.MaxKLD, want.MinTop1, want.Ctx, want.Chunks = 0.05, 0.8, 32, 2
	want.Text = abs(t, "testdata/sidecar/heldout.txt")
	if !slices.Equal(s.Aliases, []string{"chat", "default"}) || s.Gate != want || s.File != "testdata/sidecar/full.good.toml" {
		t.Errorf("full sidecar: %+v", s)
	}
	s, err = LoadSidecar("testdata/sidecar/gate-off.good.toml")
	if err != nil || s.Gate.Enabled || s.Gate.MaxKLD != 0.10 {
		t.Errorf("gate-off sidecar: %+v %v", s, err)
	}
	s, err = LoadSidecar("testdata/sidecar/empty.good.toml")
	if d := DefaultSidecar(); err != nil || len(s.Aliases) != 0 || s.Gate != d.Gate {
		t.Errorf("empty sidecar: %+v %v", s, err)
	}
	s, err = LoadSidecar(filepath.Join(t.TempDir(), "absent.toml"))
	if err != nil || s.File != "" || s.Gate != DefaultSidecar().Gate {
		t.Errorf("absent sidecar: %+v %v", s, err)
	}
}

func TestValidModelName(t *testing.T) {
	for name, want := range map[string]bool{
		"stories": true, "llama-3.2:1b-q8_0": true, "org/model+v2": true,
		"": false, "-x": false, "a b": false, "x\n": false, strings.Repeat("a", 129): false, "é": false,
	} {
		if got := ValidModelName(name); got != want {
			t.Errorf("ValidModelName(%q) = %v", name, got)
		}
	}
}

// FuzzSidecar: any input either fails with an error naming the file or
// yields a sidecar whose values are valid; nothing panics.
func FuzzSidecar(f *testing.F) {
	files, _ := filepath.Glob("testdata/sidecar/*.toml")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, src string) {
		s, err := ParseSidecar("fuzz.toml", src)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "configs: fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if ps := s.problems(); len(ps) > 0 {
			t.Fatalf("parsed but invalid: %v", ps)
		}
		for _, a := range s.Aliases {
			if !ValidModelName(a) {
				t.Fatalf("alias %q passed", a)
			}
		}
	})
}
