//go:build linux

package cuda_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/cuda"
	_ "github.com/octet-dev/octet/backends/ref"
)

// TestAutoFallsBack: Auto picks CUDA where a GPU answers; elsewhere it
// passes over it, logs why, and picks the next backend.
func TestAutoFallsBack(t *testing.T) {
	var log bytes.Buffer
	b, err := backends.Auto([]string{"cuda", "ref"}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, cerr := cuda.Open(0)
	switch {
	case cerr == nil:
		if !strings.HasPrefix(b.Name(), "cuda:0 ") {
			t.Errorf("a GPU answers, Auto picked %q", b.Name())
		}
	case errors.Is(cerr, backends.ErrNoDevice):
		if b.Name() != "ref" || !strings.Contains(log.String(), "backend=cuda") || !strings.Contains(log.String(), "reason=") {
			t.Errorf("no GPU: Auto picked %q, log:\n%s", b.Name(), log.String())
		}
		t.Logf("no GPU here; the log says:\n%s", log.String())
	default:
		t.Fatalf("opening CUDA failed other than for lack of a device: %v", cerr)
	}
}
