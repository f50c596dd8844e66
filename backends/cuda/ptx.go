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

// ptxFor picks the PTX for a device of compute capability major.x. force
// "sm_80" (OCTET_CUDA_PTX) takes the Ampere PTX on any device, so that a
// Hopper host can test it; the driver JIT-compiles it for the device.
func ptxFor(major int, force string) (arch, src string) {
	if major >= 9 && force != "sm_80" {
		return "sm_90", ptxSM90
	}
	return "sm_80", ptxSM80
}
