//go:build linux

package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"syscall"
	"unsafe"
)

// arg is one kernel argument in its 8-byte slot: a device pointer, or a
// 32-bit integer or float in the low four bytes (the driver reads as many
// bytes as the kernel's parameter has).
type arg uint64

func ptrArg(p devPtr) arg    { return arg(p) }
func intArg(v int) arg       { return arg(uint32(int32(v))) }
func floatArg(v float32) arg { return arg(math.Float32bits(v)) }

// params is the argument block of a launch, mapped outside the Go heap so
// that the driver reads no Go memory: n value slots, then n pointers, the
// i-th pointing at slot i (the kernelParams array of cuLaunchKernel). It is
// pointer-free as far as Go's collector is concerned and never moves.
// cuLaunchKernel (and graph capture) copies the values, so one block serves
// every launch in turn. Not safe for concurrent use: the device goroutine
// owns it.
type params struct {
	mem []byte
	n   int
}

func newParams(n int) (*params, error) {
	size := (16*n + 4095) &^ 4095
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("cuda: mapping the parameter block: %w", err)
	}
	p := &params{mem: mem, n: n}
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(mem[8*n+8*i:], uint64(uintptr(unsafe.Pointer(&mem[8*i]))))
	}
	return p, nil
}

// set writes args into the slots and returns the address of the pointer
// array, for cuLaunchKernel's kernelParams.
func (p *params) set(args ...arg) (uintptr, error) {
	if len(args) > p.n {
		return 0, fmt.Errorf("cuda: %d kernel arguments, the parameter block holds %d", len(args), p.n)
	}
	for i, a := range args {
		binary.LittleEndian.PutUint64(p.mem[8*i:], uint64(a))
	}
	return uintptr(unsafe.Pointer(&p.mem[8*p.n])), nil
}

// slot returns the value in slot i and the pointer stored for it.
func (p *params) slot(i int) (value uint64, ptr uintptr) {
	return binary.LittleEndian.Uint64(p.mem[8*i:]), uintptr(binary.LittleEndian.Uint64(p.mem[8*p.n+8*i:]))
}

func (p *params) free() error { return syscall.Munmap(p.mem) }

// launchConfig is cuLaunchKernelEx's CUlaunchConfig with one
// CUlaunchAttribute, in a mapping outside the Go heap (as params is):
//
//	CUlaunchConfig, 56 bytes: gridDimX, gridDimY, gridDimZ, blockDimX,
//	blockDimY, blockDimZ, sharedMemBytes (uint32 each, offsets 0 to 24),
//	hStream at 32, attrs at 40, numAttrs (uint32) at 48.
//	CUlaunchAttribute, 72 bytes, at launchAttrOffset: id (uint32) at 0,
//	value (a 64-byte union) at 8.
//
// The driver reads it during the call only. Owned by the device goroutine.
type launchConfig struct{ mem []byte }

const (
	launchAttrOffset = 64
	// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: the kernel may
	// start before the one before it in the stream has finished, and waits
	// for it itself (griddepcontrol.wait).
	attrProgrammaticStreamSerialization = 6
)

// newLaunchConfig maps the config and writes what every launch shares:
// the attribute (programmatic stream serialization allowed) and the
// pointer to it. The mapping starts zeroed.
func newLaunchConfig() (*launchConfig, error) {
	mem, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("cuda: mapping the launch configuration: %w", err)
	}
	le := binary.LittleEndian
	le.PutUint64(mem[40:], uint64(uintptr(unsafe.Pointer(&mem[launchAttrOffset]))))
	le.PutUint32(mem[48:], 1)
	le.PutUint32(mem[launchAttrOffset:], attrProgrammaticStreamSerialization)
	le.PutUint32(mem[launchAttrOffset+8:], 1)
	return &launchConfig{mem: mem}, nil
}

// set fills in one launch of grid × block threads with smem bytes of
// dynamic shared memory on stream, and returns the config's address for
// cuLaunchKernelEx.
func (c *launchConfig) set(grid [2]int, block, smem int, stream uintptr) uintptr {
	m, le := c.mem, binary.LittleEndian
	for i, v := range []int{grid[0], grid[1], 1, block, 1, 1, smem} {
		le.PutUint32(m[4*i:], uint32(v))
	}
	le.PutUint64(m[32:], uint64(stream))
	return uintptr(unsafe.Pointer(&m[0]))
}

func (c *launchConfig) free() error { return syscall.Munmap(c.mem) }
