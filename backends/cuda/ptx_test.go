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
		arch, src := ptxFor(c.major, c.force)
		if arch != c.want || !strings.Contains(src, ".target "+c.want) {
			t.Errorf("ptxFor(%d, %q) = %s, want %s (and its PTX)", c.major, c.force, arch, c.want)
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
