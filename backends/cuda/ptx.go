//go:build linux

package cuda

import _ "embed"

// The PTX that `make ptx` builds from kernels/octet.cu.
var (
	//go:embed kernels/octet.sm80.ptx
	ptxSM80 string
	//go:embed kernels/octet.sm90.ptx
	ptxSM90 string
)

// ptxFor picks the PTX for a device of compute capability major.x.
func ptxFor(major int) (arch, src string) {
	if major >= 9 {
		return "sm_90", ptxSM90
	}
	return "sm_80", ptxSM80
}
