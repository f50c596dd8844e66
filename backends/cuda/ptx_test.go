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
