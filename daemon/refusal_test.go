package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// At the start, records of models whose files went while the daemon was
// down, and what a crash left of a write, are removed; the others stay.
func TestTidyRefusals(t *testing.T) {
	models := t.TempDir()
	rf := refusal{SHA256: "aa", Reason: "test", At: time.Now(), KeptSHA256: "bb"}
	for _, name := range []string{"m", "gone"} {
		if err := recordRefusal(models, name, rf, []byte("kept bytes")); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(models, stateFolder)
	os.WriteFile(filepath.Join(dir, ".tmp-m.refused.json-123"), []byte("{"), 0o600)
	if err := tidyRefusals(models, map[string]string{"m": filepath.Join(models, "m.gguf")}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"m.kept.gguf", "m.refused.json"}; !slices.Equal(left, want) {
		t.Errorf("left %q, want %q", left, want)
	}
	if got, err := readRefusal(models, "m"); err != nil || got == nil || got.SHA256 != "aa" || got.KeptSHA256 != "bb" {
		t.Errorf("m's record: %+v %v", got, err)
	}
}
