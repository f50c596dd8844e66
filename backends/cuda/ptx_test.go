//go:build linux

package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPTXCurrent fails when the committed PTX differs from what
// kernels/build-ptx.sh makes of kernels/*.cu (run `make ptx`). It needs
// Debian's clang-16 and skips without it.
func TestPTXCurrent(t *testing.T) {
	if _, err := exec.LookPath("clang-16"); err != nil {
		t.Skip("clang-16 is not installed: PTX freshness unchecked (apt-get install clang-16)")
	}
	local, err := exec.Command("clang-16", "--version").Output()
	if err != nil {
		t.Fatalf("clang-16 --version: %v", err)
	}
	built, _ := os.ReadFile("kernels/clang-version.txt")
	line := strings.SplitN(string(local), "\n", 2)[0]
	if strings.TrimSpace(string(built)) != strings.TrimSpace(line) {
		t.Skipf("the PTX was built by %q, this clang-16 is %q: freshness unchecked", strings.TrimSpace(string(built)), line)
	}
	dir := t.TempDir()
	out, err := exec.Command("sh", "kernels/build-ptx.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("build-ptx.sh: %v\n%s", err, out)
	}
	fresh, _ := filepath.Glob(filepath.Join(dir, "*.ptx"))
	if len(fresh) == 0 {
		t.Fatal("build-ptx.sh wrote no PTX")
	}
	for _, f := range fresh {
		want, _ := os.ReadFile(f)
		got, err := os.ReadFile(filepath.Join("kernels", filepath.Base(f)))
		if err != nil || string(got) != string(want) {
			t.Errorf("kernels/%s is stale or missing: run `make ptx` and commit it", filepath.Base(f))
		}
	}
}

func TestPTXFor(t *testing.T) {
	for _, c := range []struct {
		major int
		force string
		want  string
	}{{8, "", "sm_80"}, {9, "", "sm_90"}, {10, "", "sm_90"}, {9, "sm_80", "sm_80"}, {8, "sm_90", "sm_80"}} {
		arch, src, err := ptxFor(c.major, c.force)
		if err != nil || arch != c.want || !strings.Contains(src, ".target "+c.want) {
			t.Errorf("ptxFor(%d, %q) = %s, %v, want %s (and its PTX)", c.major, c.force, arch, err, c.want)
		}
	}
	// A path loads that file, whatever the device; its arch is its own.
	arch, src, err := ptxFor(9, "kernels/octet.trace.sm90.ptx")
	if err != nil || arch != "sm_90" || !strings.Contains(src, "octet_trace_keys") {
		t.Errorf("ptxFor(9, the timeline build) = %s, %v", arch, err)
	}
	dir := t.TempDir()
	old := filepath.Join(dir, "old.ptx")
	os.WriteFile(old, []byte(".version 7.0\n.target sm_80\n"), 0o644)
	if arch, _, err := ptxFor(9, old); err != nil || arch != "sm_80" {
		t.Errorf("ptxFor(9, an sm_80 file) = %s, %v", arch, err)
	}
	bad := filepath.Join(dir, "bad.ptx")
	os.WriteFile(bad, []byte("not ptx"), 0o644)
	for _, p := range []string{bad, filepath.Join(dir, "missing.ptx")} {
		if _, _, err := ptxFor(9, p); err == nil || !strings.Contains(err.Error(), "OCTET_CUDA_PTX") {
			t.Errorf("ptxFor(9, %s): %v, want an error naming OCTET_CUDA_PTX", p, err)
		}
	}
}

// TestTracePTX: the timeline build (kernels/octet.trace.sm90.ptx) has the
// product's kernels, each reading the global timer at GRID_START, after
// its wait and on leaving, and the product's PTX reads it nowhere.
func TestTracePTX(t *testing.T) {
	b, err := os.ReadFile("kernels/octet.trace.sm90.ptx")
	if err != nil {
		t.Fatal(err)
	}
	names := func(src string) []string {
		var ns []string
		for _, e := range strings.Split(src, ".entry ")[1:] {
			name, _, _ := strings.Cut(e, "(")
			ns = append(ns, name)
		}
		return ns
	}
	if got, want := names(string(b)), names(ptxSM90); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the timeline build's kernels %v differ from the product's %v", got, want)
	}
	for _, e := range strings.Split(string(b), ".entry ")[1:] {
		name, _, _ := strings.Cut(e, "(")
		if n := strings.Count(e, "%globaltimer"); n < 3 || !strings.Contains(e, "%gridid") || !strings.Contains(e, "griddepcontrol.wait") {
			t.Errorf("timeline kernel %s: %d timer readings, grid id read %v", name, n, strings.Contains(e, "%gridid"))
		}
	}
	for _, src := range []string{ptxSM80, ptxSM90} {
		if strings.Contains(src, "globaltimer") || strings.Contains(src, "octet_trace") {
			t.Error("the product's PTX carries the timeline build's tracing")
		}
	}
}

// TestPTXKernelsWait holds every kernel of the sm_90 PTX to the rule that
// programmatic dependent launch rests on (kernels/octet.cu, GRID_START):
// each one waits for the kernel before it. A kernel that did not could
// finish before its predecessor, and the next kernel, waiting only on it,
// would read unfinished data. The sm_80 PTX, launched without PDL, has no
// such instruction (PTX 7.2 lacks it).
func TestPTXKernelsWait(t *testing.T) {
	for _, c := range []struct {
		src  string
		wait bool
	}{{ptxSM90, true}, {ptxSM80, false}} {
		entries := strings.Split(c.src, ".entry ")[1:]
		if len(entries) < 10 {
			t.Fatalf("%d kernels in the PTX", len(entries))
		}
		for _, e := range entries {
			name, _, _ := strings.Cut(e, "(")
			if strings.Contains(e, "griddepcontrol.wait") != c.wait || strings.Contains(e, "griddepcontrol.launch_dependents") != c.wait {
				t.Errorf("kernel %s: griddepcontrol wait and launch present = %v, want %v", name, !c.wait, c.wait)
			}
		}
	}
}
