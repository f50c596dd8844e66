//go:build linux

package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"syscall"
	"unsafe"
)

// CUdevice_attribute values used here.
const (
	attrMaxSharedPerBlockOptin = 97
	attrMultiprocessors        = 16
	attrCCMajor                = 75
	attrCCMinor                = 76
	funcAttrMaxDynamicShared   = 8
)

// device is one GPU with its primary context, owned by one goroutine locked
// to its OS thread. All driver calls go through do.
type device struct {
	drv      *driver
	ord      int
	ctx      uintptr
	name     string
	totalMem int64
	ccMajor  int
	ccMinor  int
	sms      int
	smemMax  int // dynamic shared memory a block may opt into

	work   chan func()
	stream uintptr
	args   *params
	mod    *module
	// pdl: kernels are launched with programmatic dependent launch
	// (the sm_90 PTX, whose kernels wait for the one before them; a driver
	// with cuLaunchKernelEx; OCTET_CUDA_PDL not "0"): each may start while
	// the one before it finishes, and waits for it inside (see
	// kernels/octet.cu).
	pdl  bool
	lcfg *launchConfig
	// trace is set when the timeline build of the kernels is loaded
	// (trace.go): every step is then traced.
	trace *tracer
	// attn chooses the attention kernels of an f16 cache
	// (OCTET_CUDA_ATTENTION).
	attn attnMode
	// stage is pinned host memory (cuMemAllocHost) that every copy between
	// Go memory and the device goes through: the driver never reads or
	// writes the Go heap.
	stage []byte
	// out is where the driver writes a call's out-parameters (handles,
	// counts, addresses): mapped outside the Go heap. A Go local would not
	// do: its address travels as a uintptr, and the goroutine's stack may
	// be copied elsewhere (it grows) before the driver writes.
	out []byte
}

// stageSize is the pinned staging buffer's size; larger copies go in pieces.
const stageSize = 32 << 20

// openDevice initialises the driver and opens device ord with its kernels.
func openDevice(drv *driver, ord int) (*device, error) {
	out, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("cuda: mapping the out-parameter block: %w", err)
	}
	d := &device{drv: drv, ord: ord, work: make(chan func()), out: out}
	ready := make(chan error, 1)
	go d.loop(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return d, nil
}

// loop is the owning goroutine: it sets the context current on its thread
// and runs the work handed to it.
func (d *device) loop(ready chan<- error) {
	runtime.LockOSThread()
	err := d.init()
	ready <- err
	if err != nil {
		return
	}
	for f := range d.work {
		f()
	}
}

func (d *device) init() error {
	c := d.drv
	if err := c.call("cuInit", c.cuInit, 0); err != nil {
		return err
	}
	if err := c.call("cuDeviceGetCount", c.cuDeviceGetCount, d.outAt(0)); err != nil {
		return err
	}
	if n := d.outI32(0); n <= d.ord {
		return newError("cuDeviceGet", resNoDevice, "", fmt.Sprintf("device %d of %d", d.ord, n))
	}
	if err := c.call("cuDeviceGet", c.cuDeviceGet, d.outAt(0), uintptr(d.ord)); err != nil {
		return err
	}
	dev := uintptr(d.outI32(0))
	if err := c.call("cuDeviceGetName", c.cuDeviceGetName, d.outAt(8), 256, dev); err != nil {
		return err
	}
	d.name = strings.TrimRight(string(d.out[64:64+256]), "\x00")
	if err := c.call("cuDeviceTotalMem", c.cuDeviceTotalMem, d.outAt(0), dev); err != nil {
		return err
	}
	d.totalMem = int64(d.outU64(0))
	for _, a := range []struct {
		attr int
		dst  *int
	}{{attrCCMajor, &d.ccMajor}, {attrCCMinor, &d.ccMinor}, {attrMultiprocessors, &d.sms}, {attrMaxSharedPerBlockOptin, &d.smemMax}} {
		if err := c.call("cuDeviceGetAttribute", c.cuDeviceGetAttr, d.outAt(0), uintptr(a.attr), dev); err != nil {
			return err
		}
		*a.dst = d.outI32(0)
	}
	if d.ccMajor < 8 {
		return newError("cuDeviceGet", resNoDevice, "", fmt.Sprintf("%s is compute capability %d.%d; octet's kernels need 8.0 or later", d.name, d.ccMajor, d.ccMinor))
	}
	if err := c.call("cuDevicePrimaryCtxRetain", c.cuDevicePrimaryCtxRetain, d.outAt(0), dev); err != nil {
		return err
	}
	d.ctx = uintptr(d.outU64(0))
	if err := c.call("cuCtxSetCurrent", c.cuCtxSetCurrent, d.ctx); err != nil {
		return err
	}
	// A blocking stream (flags 0): it orders with the synchronous copies,
	// which run on the legacy default stream.
	if err := c.call("cuStreamCreate", c.cuStreamCreate, d.outAt(0), 0); err != nil {
		return err
	}
	d.stream = uintptr(d.outU64(0))
	if err := c.call("cuMemAllocHost", c.cuMemAllocHost, d.outAt(0), stageSize); err != nil {
		return err
	}
	d.stage = unsafe.Slice(*(**byte)(unsafe.Pointer(&d.out[0])), stageSize)
	var err error
	if d.attn, err = attnModeFromEnv(); err != nil {
		return err
	}
	if d.args, err = newParams(32); err != nil {
		return err
	}
	if d.lcfg, err = newLaunchConfig(); err != nil {
		return err
	}
	if d.mod, err = d.loadModule(); err != nil {
		return err
	}
	if d.mod.traced {
		if d.trace, err = d.newTracer(d.mod); err != nil {
			return err
		}
	}
	// Only the sm_90 PTX's kernels wait for the kernel before them.
	d.pdl = d.mod.arch == "sm_90" && c.cuLaunchKernelEx != 0 && os.Getenv("OCTET_CUDA_PDL") != "0"
	return nil
}

// do runs f on the device's goroutine and returns its error.
func (d *device) do(f func() error) error {
	done := make(chan error, 1)
	d.work <- func() { done <- f() }
	return <-done
}

// The methods below run on the device goroutine only.

// outAt is the address of out-parameter slot i (8 bytes each; slots 8 and
// up hold the device name).
func (d *device) outAt(i int) uintptr { return uintptr(unsafe.Pointer(&d.out[8*i])) }

func (d *device) outU64(i int) uint64 { return binary.LittleEndian.Uint64(d.out[8*i:]) }
func (d *device) outI32(i int) int    { return int(int32(binary.LittleEndian.Uint32(d.out[8*i:]))) }

func (d *device) alloc(n int64) (devPtr, error) {
	if n <= 0 {
		n = 1
	}
	if err := d.drv.call("cuMemAlloc", d.drv.cuMemAlloc, d.outAt(0), uintptr(n)); err != nil {
		return 0, fmt.Errorf("%w (%d bytes)", err, n)
	}
	return devPtr(d.outU64(0)), nil
}

func (d *device) free(p devPtr) error {
	if p == 0 {
		return nil
	}
	return d.drv.call("cuMemFree", d.drv.cuMemFree, uintptr(p))
}

func (d *device) memInfo() (free, total int64, err error) {
	err = d.drv.call("cuMemGetInfo", d.drv.cuMemGetInfo, d.outAt(0), d.outAt(1))
	return int64(d.outU64(0)), int64(d.outU64(1)), err
}

// bytesOf views a slice of plain numbers as bytes.
func bytesOf[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), uintptr(len(s))*unsafe.Sizeof(s[0]))
}

// upload copies src (a slice of plain numbers) to dst through the pinned
// stage, synchronously.
func upload[T any](d *device, dst devPtr, src []T) error {
	b := bytesOf(src)
	for off := 0; off < len(b); off += len(d.stage) {
		n := copy(d.stage, b[off:])
		if err := d.drv.call("cuMemcpyHtoD", d.drv.cuMemcpyHtoD, uintptr(dst)+uintptr(off), uintptr(unsafe.Pointer(&d.stage[0])), uintptr(n)); err != nil {
			return fmt.Errorf("%w (%d bytes at offset %d of %d, to %#x)", err, n, off, len(b), dst)
		}
	}
	return nil
}

// download copies len(dst) values from src through the pinned stage,
// synchronously.
func download[T any](d *device, dst []T, src devPtr) error {
	b := bytesOf(dst)
	for off := 0; off < len(b); off += len(d.stage) {
		n := min(len(d.stage), len(b)-off)
		if err := d.drv.call("cuMemcpyDtoH", d.drv.cuMemcpyDtoH, uintptr(unsafe.Pointer(&d.stage[0])), uintptr(src)+uintptr(off), uintptr(n)); err != nil {
			return fmt.Errorf("%w (%d bytes at offset %d of %d, from %#x)", err, n, off, len(b), src)
		}
		copy(b[off:off+n], d.stage)
	}
	return nil
}

// allocCopy allocates device memory holding src.
func allocCopy[T any](d *device, src []T) (devPtr, error) {
	var z T
	p, err := d.alloc(int64(len(src)) * int64(unsafe.Sizeof(z)))
	if err != nil {
		return 0, err
	}
	if err := upload(d, p, src); err != nil {
		d.free(p)
		return 0, err
	}
	return p, nil
}

func (d *device) sync() error {
	return d.drv.call("cuStreamSynchronize", d.drv.cuStreamSynchronize, d.stream)
}

// launch runs kernel k on the device's stream.
func (d *device) launch(k *kernel, grid [2]int, block, smem int, args ...arg) error {
	kp, err := d.args.set(args...)
	if err != nil {
		return err
	}
	if d.trace != nil && d.trace.capturing {
		d.trace.names = append(d.trace.names, k.name)
	}
	if d.pdl {
		return d.drv.call("cuLaunchKernelEx "+k.name, d.drv.cuLaunchKernelEx, d.lcfg.set(grid, block, smem, d.stream), k.fn, kp, 0)
	}
	return d.drv.call("cuLaunchKernel "+k.name, d.drv.cuLaunchKernel, k.fn,
		uintptr(grid[0]), uintptr(grid[1]), 1, uintptr(block), 1, 1, uintptr(smem), d.stream, kp, 0)
}

// graphs reports whether the driver can capture and replay CUDA graphs.
func (d *device) graphs() bool {
	c := d.drv
	return c.cuStreamBeginCapture != 0 && c.cuStreamEndCapture != 0 && c.cuGraphInstantiate != 0 &&
		c.cuGraphLaunch != 0 && c.cuGraphExecDestroy != 0 && c.cuGraphDestroy != 0
}

// capture records the launches of f on the stream into an executable
// graph. A driver that cannot capture programmatic dependent launches
// captures plain ones: PDL stays off when that works, and was not the
// trouble when it does not.
func (d *device) capture(f func() error) (uintptr, error) {
	g, err := d.captureOnce(f)
	if err != nil && d.pdl {
		d.pdl = false
		if g, err = d.captureOnce(f); err != nil {
			d.pdl = true
		}
	}
	return g, err
}

func (d *device) captureOnce(f func() error) (uintptr, error) {
	c := d.drv
	const modeThreadLocal = 1
	if err := c.call("cuStreamBeginCapture", c.cuStreamBeginCapture, d.stream, modeThreadLocal); err != nil {
		return 0, err
	}
	ferr := f()
	if err := c.call("cuStreamEndCapture", c.cuStreamEndCapture, d.stream, d.outAt(0)); err != nil {
		return 0, err
	}
	g := uintptr(d.outU64(0))
	defer c.call("cuGraphDestroy", c.cuGraphDestroy, g)
	if ferr != nil {
		return 0, ferr
	}
	if err := c.call("cuGraphInstantiateWithFlags", c.cuGraphInstantiate, d.outAt(0), g, 0); err != nil {
		return 0, err
	}
	return uintptr(d.outU64(0)), nil
}

func (d *device) replay(exec uintptr) error {
	return d.drv.call("cuGraphLaunch", d.drv.cuGraphLaunch, exec, d.stream)
}

func (d *device) dropGraph(exec uintptr) {
	d.drv.call("cuGraphExecDestroy", d.drv.cuGraphExecDestroy, exec)
}

// module is the loaded PTX and its kernels.
type module struct {
	handle                          uintptr
	arch                            string
	traced                          bool // the timeline build (trace.go)
	gemvF32, embedQ8, embedF32      *kernel
	gemvQ8One, gemvQ8Gated, quantQ8 *kernel
	gemmQ8, gemmQ8Gated             *kernel
	// gemmQ8T16, gemmQ8GatedT16: the same over tiles of 16 tokens
	// (gemmTokens).
	gemmQ8T16, gemmQ8GatedT16 *kernel
	// ropeKV by the cache's values: float32, float16.
	ropeKV [2]*kernel
	// attention by the cache's values (float32, float16), warps per
	// block (16, 4) and head width (≤ 32, 64, 128, 256).
	attention [2][2][4]*kernel
	// grouped: attention16g by head width (≤ 64, 128, 256).
	grouped [3]*kernel
}

type kernel struct {
	name string
	fn   uintptr
}

// JIT options of cuModuleLoadDataEx (CUjit_option).
const (
	jitInfoLogBuffer      = 3
	jitInfoLogBufferSize  = 4
	jitErrorLogBuffer     = 5
	jitErrorLogBufferSize = 6
)

// loadModule JIT-compiles the embedded PTX for this device; a failure
// carries the JIT's error log.
func (d *device) loadModule() (*module, error) {
	arch, src, err := ptxFor(d.ccMajor, os.Getenv("OCTET_CUDA_PTX"))
	if err != nil {
		return nil, err
	}
	const logSize = 16 << 10
	// Options, values and the two logs live outside the Go heap: the
	// driver writes the logs during the call.
	mem, err := syscall.Mmap(-1, 0, 2*logSize+4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("cuda: mapping the JIT log: %w", err)
	}
	defer syscall.Munmap(mem)
	opts := unsafe.Slice((*int32)(unsafe.Pointer(&mem[0])), 4)
	vals := unsafe.Slice((*uintptr)(unsafe.Pointer(&mem[64])), 4)
	errLog, infoLog := &mem[4096], &mem[4096+logSize]
	opts[0], vals[0] = jitErrorLogBuffer, uintptr(unsafe.Pointer(errLog))
	opts[1], vals[1] = jitErrorLogBufferSize, logSize-1
	opts[2], vals[2] = jitInfoLogBuffer, uintptr(unsafe.Pointer(infoLog))
	opts[3], vals[3] = jitInfoLogBufferSize, logSize-1
	image := append([]byte(src), 0)
	m := &module{arch: arch, traced: strings.Contains(src, "octet_trace_keys")}
	err = d.drv.call("cuModuleLoadDataEx", d.drv.cuModuleLoadDataEx, d.outAt(0),
		uintptr(unsafe.Pointer(&image[0])), 4, uintptr(unsafe.Pointer(&opts[0])), uintptr(unsafe.Pointer(&vals[0])))
	runtime.KeepAlive(image)
	if err != nil {
		return nil, fmt.Errorf("%w; JIT log (%s): %s", err, arch, strings.TrimSpace(goString(errLog)))
	}
	m.handle = uintptr(d.outU64(0))
	for f16, prefix := range []string{"attention", "attention16"} {
		for many, w := range []int{16, 4} {
			for i := range m.attention[f16][many] {
				if err := d.getFunction(m, &m.attention[f16][many][i], fmt.Sprintf("%s_%d_w%d", prefix, 1<<i, w)); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, k := range []struct {
		dst  **kernel
		name string
	}{{&m.gemvF32, "gemv_f32"}, {&m.embedQ8, "embed_q8"}, {&m.embedF32, "embed_f32"},
		{&m.ropeKV[0], "rope_kv"}, {&m.ropeKV[1], "rope_kv16"}, {&m.gemvQ8One, "gemv_q8_1"}, {&m.gemvQ8Gated, "gemv_q8_1_gated"},
		{&m.quantQ8, "quant_q8"}, {&m.gemmQ8, "gemm_q8"}, {&m.gemmQ8Gated, "gemm_q8_gated"},
		{&m.gemmQ8T16, "gemm_q8_t16"}, {&m.gemmQ8GatedT16, "gemm_q8_gated_t16"},
		{&m.grouped[0], "attention16g_1"}, {&m.grouped[1], "attention16g_2"}, {&m.grouped[2], "attention16g_4"}} {
		if err := d.getFunction(m, k.dst, k.name); err != nil {
			return nil, err
		}
	}
	for _, k := range []*kernel{m.gemvF32, m.gemvQ8One, m.gemvQ8Gated} {
		if err := d.drv.call("cuFuncSetAttribute", d.drv.cuFuncSetAttribute, k.fn, funcAttrMaxDynamicShared, uintptr(d.smemMax)); err != nil {
			return nil, fmt.Errorf("%w: kernel %s", err, k.name)
		}
	}
	return m, nil
}

// getFunction looks kernel name up in m and stores it in dst.
func (d *device) getFunction(m *module, dst **kernel, name string) error {
	cname := cString(name)
	err := d.drv.call("cuModuleGetFunction", d.drv.cuModuleGetFunction, d.outAt(0), m.handle, uintptr(unsafe.Pointer(cname)))
	runtime.KeepAlive(cname)
	if err != nil {
		return fmt.Errorf("%w: kernel %s", err, name)
	}
	*dst = &kernel{name: name, fn: uintptr(d.outU64(0))}
	return nil
}

// copyBandwidth times reps device-to-device copies of n bytes and returns
// the bytes moved (read plus written) per second.
func (d *device) copyBandwidth(n int64, reps int) (float64, error) {
	src, err := d.alloc(n)
	if err != nil {
		return 0, err
	}
	defer d.free(src)
	dst, err := d.alloc(n)
	if err != nil {
		return 0, err
	}
	defer d.free(dst)
	c := d.drv
	if err := c.call("cuMemsetD8", c.cuMemsetD8, uintptr(src), 1, uintptr(n)); err != nil {
		return 0, err
	}
	if err := c.call("cuEventCreate", c.cuEventCreate, d.outAt(0), 0); err != nil {
		return 0, err
	}
	start := uintptr(d.outU64(0))
	defer c.call("cuEventDestroy", c.cuEventDestroy, start)
	if err := c.call("cuEventCreate", c.cuEventCreate, d.outAt(0), 0); err != nil {
		return 0, err
	}
	stop := uintptr(d.outU64(0))
	defer c.call("cuEventDestroy", c.cuEventDestroy, stop)
	for i := -2; i < reps; i++ { // two copies to warm up
		if i == 0 {
			if err := c.call("cuEventRecord", c.cuEventRecord, start, 0); err != nil {
				return 0, err
			}
		}
		if err := c.call("cuMemcpyDtoD", c.cuMemcpyDtoD, uintptr(dst), uintptr(src), uintptr(n)); err != nil {
			return 0, err
		}
	}
	if err := c.call("cuEventRecord", c.cuEventRecord, stop, 0); err != nil {
		return 0, err
	}
	if err := c.call("cuEventSynchronize", c.cuEventSynchronize, stop); err != nil {
		return 0, err
	}
	if err := c.call("cuEventElapsedTime", c.cuEventElapsed, d.outAt(0), start, stop); err != nil {
		return 0, err
	}
	ms := math.Float32frombits(uint32(d.outU64(0)))
	return 2 * float64(n) * float64(reps) / (float64(ms) / 1e3), nil
}
