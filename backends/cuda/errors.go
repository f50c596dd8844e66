//go:build linux

package cuda

import (
	"fmt"

	"github.com/octet-dev/octet/backends"
)

// Result codes the package branches on or names without the driver.
const (
	resSuccess            = 0
	resNotInitialized     = 3
	resStubLibrary        = 34
	resInsufficientDriver = 35
	resNoDevice           = 100
)

// resultNames names the CUresult codes of cuda.h, for when the driver cannot
// name them itself (cuGetErrorName missing or failing).
var resultNames = map[int]string{
	0: "CUDA_SUCCESS", 1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY",
	3: "CUDA_ERROR_NOT_INITIALIZED", 4: "CUDA_ERROR_DEINITIALIZED", 34: "CUDA_ERROR_STUB_LIBRARY",
	35: "CUDA_ERROR_INSUFFICIENT_DRIVER", 100: "CUDA_ERROR_NO_DEVICE", 101: "CUDA_ERROR_INVALID_DEVICE",
	200: "CUDA_ERROR_INVALID_IMAGE", 201: "CUDA_ERROR_INVALID_CONTEXT", 209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
	218: "CUDA_ERROR_INVALID_PTX", 222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", 400: "CUDA_ERROR_INVALID_HANDLE",
	500: "CUDA_ERROR_NOT_FOUND", 600: "CUDA_ERROR_NOT_READY", 700: "CUDA_ERROR_ILLEGAL_ADDRESS",
	701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", 702: "CUDA_ERROR_LAUNCH_TIMEOUT", 719: "CUDA_ERROR_LAUNCH_FAILED",
	900: "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", 901: "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
	999: "CUDA_ERROR_UNKNOWN",
}

// Error is a failed driver call.
type Error struct {
	Op   string // the driver function, "cuMemAlloc"
	Code int    // its CUresult
	Name string // "CUDA_ERROR_OUT_OF_MEMORY"
	Desc string // the driver's description, when it gave one
}

func (e *Error) Error() string {
	if e.Desc != "" {
		return fmt.Sprintf("cuda: %s: %s (%s)", e.Op, e.Name, e.Desc)
	}
	return fmt.Sprintf("cuda: %s: %s", e.Op, e.Name)
}

// Is makes the results that mean "no usable GPU here" match
// backends.ErrNoDevice.
func (e *Error) Is(target error) bool {
	if target != backends.ErrNoDevice {
		return false
	}
	switch e.Code {
	case resNoDevice, resStubLibrary, resInsufficientDriver, resNotInitialized:
		return true
	}
	return false
}

// newError builds the error of a call that returned code; name and desc
// come from the driver when it can say (either may be empty).
func newError(op string, code int, name, desc string) error {
	if code == resSuccess {
		return nil
	}
	if name == "" {
		name = resultNames[code]
	}
	if name == "" {
		name = fmt.Sprintf("CUresult(%d)", code)
	}
	return &Error{Op: op, Code: code, Name: name, Desc: desc}
}
