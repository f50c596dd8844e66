//go:build linux

package cuda

import (
	"fmt"
	"syscall"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/octet-dev/octet/backends"
)

// devPtr is a device address (CUdeviceptr).
type devPtr uint64

// driver holds libcuda.so.1's entry points. A zero entry is a function the
// driver lacks; calling one returns an error, never a crash.
type driver struct {
	handle uintptr

	cuInit, cuGetErrorName, cuGetErrorString                              uintptr
	cuDeviceGetCount, cuDeviceGet, cuDeviceGetName, cuDeviceGetAttr       uintptr
	cuDeviceTotalMem, cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRel     uintptr
	cuCtxSetCurrent, cuCtxSynchronize, cuMemGetInfo                       uintptr
	cuMemAlloc, cuMemFree, cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyDtoD       uintptr
	cuMemsetD8, cuMemAllocHost, cuMemFreeHost                             uintptr
	cuModuleLoadDataEx, cuModuleGetFunction, cuModuleUnload               uintptr
	cuModuleGetGlobal                                                     uintptr
	cuFuncSetAttribute, cuLaunchKernel, cuLaunchKernelEx                  uintptr
	cuStreamCreate, cuStreamDestroy, cuStreamSynchronize                  uintptr
	cuStreamBeginCapture, cuStreamEndCapture                              uintptr
	cuGraphInstantiate, cuGraphLaunch, cuGraphExecDestroy, cuGraphDestroy uintptr
	cuEventCreate, cuEventRecord, cuEventSynchronize, cuEventElapsed      uintptr
	cuEventDestroy                                                        uintptr
}

// symbol names an entry point. With v2, the _v2 export (the one cuda.h's
// macros call) is tried first and the plain name second; v2only entries
// changed their signature in _v2 and have no fallback.
type symbol struct {
	name     string
	dst      *uintptr
	v2       bool
	v2only   bool
	optional bool
}

func (d *driver) symbols() []symbol {
	return []symbol{
		{name: "cuInit", dst: &d.cuInit},
		{name: "cuGetErrorName", dst: &d.cuGetErrorName, optional: true},
		{name: "cuGetErrorString", dst: &d.cuGetErrorString, optional: true},
		{name: "cuDeviceGetCount", dst: &d.cuDeviceGetCount},
		{name: "cuDeviceGet", dst: &d.cuDeviceGet},
		{name: "cuDeviceGetName", dst: &d.cuDeviceGetName},
		{name: "cuDeviceGetAttribute", dst: &d.cuDeviceGetAttr},
		{name: "cuDeviceTotalMem", dst: &d.cuDeviceTotalMem, v2: true, v2only: true},
		{name: "cuDevicePrimaryCtxRetain", dst: &d.cuDevicePrimaryCtxRetain},
		{name: "cuDevicePrimaryCtxRelease", dst: &d.cuDevicePrimaryCtxRel, v2: true},
		{name: "cuCtxSetCurrent", dst: &d.cuCtxSetCurrent},
		{name: "cuCtxSynchronize", dst: &d.cuCtxSynchronize},
		{name: "cuMemGetInfo", dst: &d.cuMemGetInfo, v2: true, v2only: true},
		{name: "cuMemAlloc", dst: &d.cuMemAlloc, v2: true, v2only: true},
		{name: "cuMemFree", dst: &d.cuMemFree, v2: true, v2only: true},
		{name: "cuMemcpyHtoD", dst: &d.cuMemcpyHtoD, v2: true, v2only: true},
		{name: "cuMemcpyDtoH", dst: &d.cuMemcpyDtoH, v2: true, v2only: true},
		{name: "cuMemcpyDtoD", dst: &d.cuMemcpyDtoD, v2: true, v2only: true},
		{name: "cuMemsetD8", dst: &d.cuMemsetD8, v2: true, v2only: true},
		{name: "cuMemAllocHost", dst: &d.cuMemAllocHost, v2: true, v2only: true},
		{name: "cuMemFreeHost", dst: &d.cuMemFreeHost},
		{name: "cuModuleLoadDataEx", dst: &d.cuModuleLoadDataEx},
		{name: "cuModuleGetFunction", dst: &d.cuModuleGetFunction},
		{name: "cuModuleUnload", dst: &d.cuModuleUnload},
		{name: "cuModuleGetGlobal", dst: &d.cuModuleGetGlobal, v2: true, v2only: true, optional: true},
		{name: "cuFuncSetAttribute", dst: &d.cuFuncSetAttribute},
		{name: "cuLaunchKernel", dst: &d.cuLaunchKernel},
		{name: "cuLaunchKernelEx", dst: &d.cuLaunchKernelEx, optional: true},
		{name: "cuStreamCreate", dst: &d.cuStreamCreate},
		{name: "cuStreamDestroy", dst: &d.cuStreamDestroy, v2: true},
		{name: "cuStreamSynchronize", dst: &d.cuStreamSynchronize},
		{name: "cuStreamBeginCapture", dst: &d.cuStreamBeginCapture, v2: true, v2only: true, optional: true},
		{name: "cuStreamEndCapture", dst: &d.cuStreamEndCapture, optional: true},
		{name: "cuGraphInstantiateWithFlags", dst: &d.cuGraphInstantiate, optional: true},
		{name: "cuGraphLaunch", dst: &d.cuGraphLaunch, optional: true},
		{name: "cuGraphExecDestroy", dst: &d.cuGraphExecDestroy, optional: true},
		{name: "cuGraphDestroy", dst: &d.cuGraphDestroy, optional: true},
		{name: "cuEventCreate", dst: &d.cuEventCreate},
		{name: "cuEventRecord", dst: &d.cuEventRecord},
		{name: "cuEventSynchronize", dst: &d.cuEventSynchronize},
		{name: "cuEventElapsedTime", dst: &d.cuEventElapsed},
		{name: "cuEventDestroy", dst: &d.cuEventDestroy, v2: true},
	}
}

// candidates lists the export names to try for s, in order.
func (s symbol) candidates() []string {
	switch {
	case s.v2only:
		return []string{s.name + "_v2"}
	case s.v2:
		return []string{s.name + "_v2", s.name}
	}
	return []string{s.name}
}

// bind resolves every symbol with lookup; a required symbol that is missing
// is an error naming it.
func (d *driver) bind(lookup func(string) (uintptr, error)) error {
	for _, s := range d.symbols() {
		*s.dst = 0
		for _, n := range s.candidates() {
			if p, err := lookup(n); err == nil && p != 0 {
				*s.dst = p
				break
			}
		}
		if *s.dst == 0 && !s.optional {
			return fmt.Errorf("cuda: libcuda.so.1 lacks %s (driver too old): %w", s.candidates()[0], backends.ErrNoDevice)
		}
	}
	return nil
}

// openDriver loads libcuda.so.1 and binds its entry points.
func openDriver() (*driver, error) {
	h, err := purego.Dlopen("libcuda.so.1", purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("cuda: loading libcuda.so.1: %v: %w", err, backends.ErrNoDevice)
	}
	d := &driver{handle: h}
	if err := d.bind(func(n string) (uintptr, error) { return purego.Dlsym(h, n) }); err != nil {
		purego.Dlclose(h)
		return nil, err
	}
	return d, nil
}

// call runs the driver function fn and maps its CUresult to an error. The
// directive makes a uintptr(unsafe.Pointer(p)) written in a call to it move
// what p points to onto the heap and keep it alive for the call (purego's
// own directive covers only conversions written in calls to SyscallN).
//
//go:uintptrescapes
func (d *driver) call(op string, fn uintptr, args ...uintptr) error {
	if fn == 0 {
		return fmt.Errorf("cuda: %s: not in this driver", op)
	}
	r, _, _ := purego.SyscallN(fn, args...)
	code := int(int32(uint32(r)))
	if code == resSuccess {
		return nil
	}
	return newError(op, code, d.cstr(d.cuGetErrorName, code), d.cstr(d.cuGetErrorString, code))
}

// cstr asks the driver to name code with fn (cuGetErrorName or
// cuGetErrorString); it returns "" when it cannot.
func (d *driver) cstr(fn uintptr, code int) string {
	if fn == 0 {
		return ""
	}
	// The out-parameter lives outside the Go heap and stack (see device.out).
	out, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return ""
	}
	defer syscall.Munmap(out)
	r, _, _ := purego.SyscallN(fn, uintptr(code), uintptr(unsafe.Pointer(&out[0])))
	p := *(**byte)(unsafe.Pointer(&out[0]))
	if r != 0 || p == nil {
		return ""
	}
	return goString(p)
}

// goString copies the NUL-terminated C string at p (driver memory).
func goString(p *byte) string {
	var b []byte
	for q := p; *q != 0 && len(b) < 4096; q = (*byte)(unsafe.Add(unsafe.Pointer(q), 1)) {
		b = append(b, *q)
	}
	return string(b)
}

// cString returns s NUL-terminated, for a driver call that reads it during
// the call only.
func cString(s string) *byte {
	b := append([]byte(s), 0)
	return &b[0]
}
