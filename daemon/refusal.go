package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A quality gate's refusal outlives the process. When a replacement is
// refused, the file on disk is the refused one and the bytes served are the
// previous version's, in memory only: without a record, the next start (a
// crash, a watchdog restart, a reboot) would serve the refused file with no
// gate to stop it. So the refusal is recorded in the models folder's state
// folder, beside a copy of the version served then; a start that finds the
// refused bytes in the models folder serves the kept copy instead, and says
// so. A good replacement, or the file's removal, forgets both.

// stateFolder holds what the daemon keeps about the models folder's files
// (hidden: models are only the folder's own *.gguf files).
const stateFolder = ".octet"

// refusal is the record of a refused replacement.
type refusal struct {
	SHA256     string    `json:"sha256"` // the refused file's bytes
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
	KeptSHA256 string    `json:"kept_sha256"` // the version served then, kept beside the record
}

// refusalPaths are the record and the kept copy of model name.
func refusalPaths(modelsDir, name string) (record, kept string) {
	dir := filepath.Join(modelsDir, stateFolder)
	return filepath.Join(dir, name+".refused.json"), filepath.Join(dir, name+".kept.gguf")
}

// recordRefusal writes the record and, unless the same version is kept
// already, a copy of the served version's bytes.
func recordRefusal(modelsDir, name string, rf refusal, served []byte) error {
	record, kept := refusalPaths(modelsDir, name)
	if _, err := os.Stat(filepath.Dir(record)); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(filepath.Dir(record), 0o750); err != nil {
			return err
		}
		if err := syncDir(modelsDir); err != nil {
			return err
		}
	}
	if old, err := readRefusal(modelsDir, name); err != nil || old == nil || old.KeptSHA256 != rf.KeptSHA256 || !sizeIs(kept, len(served)) {
		if err := writeAtomic(kept, served); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(rf, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(record, append(b, '\n'))
}

// readRefusal returns model name's record, nil when there is none.
func readRefusal(modelsDir, name string) (*refusal, error) {
	record, _ := refusalPaths(modelsDir, name)
	b, err := os.ReadFile(record)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rf refusal
	if err := json.Unmarshal(b, &rf); err != nil {
		return nil, fmt.Errorf("%s: %w", record, err)
	}
	return &rf, nil
}

// forgetRefusal removes model name's record and kept copy, if any.
func forgetRefusal(modelsDir, name string) error {
	record, kept := refusalPaths(modelsDir, name)
	return errors.Join(removeIfPresent(record), removeIfPresent(kept))
}

func removeIfPresent(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func sizeIs(path string, n int) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Size() == int64(n)
}

// writeAtomic writes b to path through a file beside it, synced and renamed
// into place: a crash leaves the old file or the new one, never a part.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return syncDir(filepath.Dir(path)) // the rename itself survives a power cut
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// tidyRefusals removes, at the start, the records and copies of models
// whose files are gone (removed while the daemon was down), and what a
// crash left of a write.
func tidyRefusals(modelsDir string, files map[string]string) error {
	dir := filepath.Join(modelsDir, stateFolder)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		name, isRecord := strings.CutSuffix(n, ".refused.json")
		if !isRecord {
			name, _ = strings.CutSuffix(n, ".kept.gguf")
		}
		if _, ok := files[name]; !ok || strings.HasPrefix(n, ".tmp-") {
			errs = append(errs, removeIfPresent(filepath.Join(dir, n)))
		}
	}
	return errors.Join(errs...)
}
