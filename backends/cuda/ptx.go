//go:build linux

package cuda

import (
	_ "embed"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// The PTX that `make ptx` builds from kernels/octet.cu.
var (
	//go:embed kernels/octet.sm80.ptx
	ptxSM80 string
	//go:embed kernels/octet.sm90.ptx
	ptxSM90 string
)

// ptxFor picks the PTX for a device of compute capability major.x. force
// (OCTET_CUDA_PTX) overrides it: "sm_80" takes the Ampere PTX on any
// device, so that a Hopper host can test it; a path ending in .ptx loads
// that file (the timeline build, kernels/octet.trace.sm90.ptx, or a kernel
// being worked on), whose arch is its .target line's. The driver
// JIT-compiles the PTX for the device.
func ptxFor(major int, force string) (arch, src string, err error) {
	if strings.HasSuffix(force, ".ptx") {
		b, err := os.ReadFile(force)
		if err != nil {
			return "", "", fmt.Errorf("cuda: OCTET_CUDA_PTX: %w", err)
		}
		m := ptxTarget.FindSubmatch(b)
		if m == nil {
			return "", "", fmt.Errorf("cuda: OCTET_CUDA_PTX: %s has no .target sm_NN line", force)
		}
		return "sm_" + string(m[1]), string(b), nil
	}
	if major >= 9 && force != "sm_80" {
		return "sm_90", ptxSM90, nil
	}
	return "sm_80", ptxSM80, nil
}

var ptxTarget = regexp.MustCompile(`(?m)^\.target\s+sm_(\d+)`)
