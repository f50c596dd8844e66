package cpu

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// kernels calls one library's kernels one at a time (the oc_k_* entry
// points), for the tests that compare each with its ref twin, for the
// benchmarks, and for the bandwidth probe. It owns a C context: a thread
// pool, per-thread scratch and a quantized-activation buffer.
//
// Every slice passed in is used during the call only. Lengths are checked
// here, so that a wrong size panics in Go instead of corrupting memory.
type kernels struct {
	lib     *library
	h       uintptr
	threads int
}

func newKernels(l *library, threads, kmax, maxPos, group int) (*kernels, error) {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	h := uintptr(l.call(l.fn.ctxNew, uintptr(threads), uintptr(kmax), uintptr(maxPos), uintptr(group)))
	if h == 0 {
		return nil, fmt.Errorf("cpu: cannot create a kernel context of %d threads", threads)
	}
	return &kernels{lib: l, h: h, threads: threads}, nil
}

func (k *kernels) close() {
	if k.h != 0 {
		k.lib.call(k.lib.fn.ctxFree, k.h)
		k.h = 0
	}
}

func need[T any](name string, s []T, n int) {
	if len(s) < n {
		panic(fmt.Sprintf("cpu: %s has %d elements, the kernel needs %d", name, len(s), n))
	}
}

func (k *kernels) status(what string, rc int64) error {
	if rc != 0 {
		return fmt.Errorf("cpu: %s: status %d", what, rc)
	}
	return nil
}

// prepare quantizes n rows of cols activations for the next Q8_0 products.
func (k *kernels) prepare(x []float32, n, cols int) error {
	need("x", x, n*cols)
	a := ocKArgs{x: uptr(x), n: int64(n), cols: int64(cols)}
	rc := k.lib.call(k.lib.fn.kPrepare, k.h, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(x)
	return k.status("prepare", rc)
}

// dequant writes the prepared activations, decoded, to y (n × cols).
func (k *kernels) dequant(y []float32) {
	a := ocKArgs{y: uptr(y)}
	k.lib.call(k.lib.fn.kDequant, k.h, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(y)
}

// Matrix-product paths for Q8_0 weights.
const (
	pathAuto     = 0
	pathDirect   = 1
	pathPacked   = 2 // packed on the fly, per call
	pathPrepack  = 3 // the matrix of the last prepack call, as a runner packs at load
	prepackAlign = 16
)

// prepack packs w as a runner does at load, for calls with pathPrepack.
func (k *kernels) prepack(w *model.Tensor) error {
	need("w", w.Data, w.Rows*w.RowBytes())
	a := ocKArgs{w: uptr(w.Data), typ: int64(w.Type), rows: int64(w.Rows), cols: int64(w.Cols)}
	rc := k.lib.call(k.lib.fn.kPrepack, k.h, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(w.Data)
	return k.status("prepack", rc)
}

func (k *kernels) mmArgs(w *model.Tensor, x []float32, n int, y []float32, path int, acc bool) ocKArgs {
	need("w", w.Data, w.Rows*w.RowBytes())
	need("y", y, n*w.Rows)
	a := ocKArgs{w: uptr(w.Data), x: uptr(x), y: uptr(y), typ: int64(w.Type), rows: int64(w.Rows), cols: int64(w.Cols), n: int64(n), path: int64(path)}
	if acc {
		a.acc = 1
	}
	return a
}

// matmulRange computes rows [r0, r1) of y (n × w.Rows) on the calling
// thread, with the scratch of thread tid. Q8_0 weights take the prepared
// activations; the other types take x.
func (k *kernels) matmulRange(w *model.Tensor, x []float32, n int, y []float32, r0, r1, tid, path int, acc bool) error {
	if r0 < 0 || r1 > w.Rows || r0 > r1 {
		panic("cpu: bad row range")
	}
	a := k.mmArgs(w, x, n, y, path, acc)
	a.r0, a.r1, a.tid = int64(r0), int64(r1), int64(tid)
	rc := k.lib.call(k.lib.fn.kMatmulRange, k.h, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(w.Data)
	runtime.KeepAlive(x)
	runtime.KeepAlive(y)
	return k.status("matmul", rc)
}

// matmulPool computes all of y on the context's thread pool.
func (k *kernels) matmulPool(w *model.Tensor, x []float32, n int, y []float32, path int, acc bool) error {
	a := k.mmArgs(w, x, n, y, path, acc)
	rc := k.lib.call(k.lib.fn.kMatmulPool, k.h, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(w.Data)
	runtime.KeepAlive(x)
	runtime.KeepAlive(y)
	return k.status("matmul", rc)
}

// noop runs an empty job on the pool: the cost of one parallel region.
func (k *kernels) noop() { k.lib.call(k.lib.fn.kPoolNoop, k.h) }

func (k *kernels) rmsnorm(y, x, w []float32, n, cols int, eps float32) {
	need("y", y, n*cols)
	need("x", x, n*cols)
	need("w", w, cols)
	a := ocKArgs{x: uptr(x), x2: uptr(w), y: uptr(y), n: int64(n), cols: int64(cols), eps: float64(eps)}
	k.lib.call(k.lib.fn.kRMSNorm, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(x)
	runtime.KeepAlive(y)
	runtime.KeepAlive(w)
}

func (k *kernels) softmax(x []float32) {
	a := ocKArgs{y: uptr(x), n: int64(len(x))}
	k.lib.call(k.lib.fn.kSoftmax, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(x)
}

func (k *kernels) siluGate(dst, gate, up []float32) {
	need("gate", gate, len(dst))
	need("up", up, len(dst))
	a := ocKArgs{x: uptr(gate), x2: uptr(up), y: uptr(dst), n: int64(len(dst))}
	k.lib.call(k.lib.fn.kSiLUGate, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(dst)
	runtime.KeepAlive(gate)
	runtime.KeepAlive(up)
}

func (k *kernels) rope(x []float32, heads, headDim, pos int, rc model.RopeConfig, freqs []float32) error {
	need("x", x, heads*headDim)
	if freqs != nil {
		need("freqs", freqs, rc.Dims/2)
	}
	a := ocKArgs{y: uptr(x), heads: int64(heads), headDim: int64(headDim), pos: int64(pos),
		ropeDims: int64(rc.Dims), ropeBase: float64(rc.Base), ropeFreqScale: float64(rc.FreqScale), ropeFreqs: uptr(freqs)}
	if rc.NeoX {
		a.neox = 1
	}
	rc2 := k.lib.call(k.lib.fn.kRope, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(x)
	runtime.KeepAlive(freqs)
	return k.status("rope", rc2)
}

// attention: one query row q over positions 0…pos of a sequence with block
// table blocks (blockSize positions each) in caches kc and vc, in the
// runner's layout: rows of kvHeads×headDim in vc; in kc each block's keys
// transposed, one row of blockSize per dimension (oc_k_index in internal.h).
// The caches hold float32 values, or f16 bits (uint16). With q8 set they
// hold float32 values which the library rounds into a q8 cache (and the
// query with them) as a runner's q8 cache does.
func attention[T float32 | uint16](k *kernels, out, q []float32, kc, vc []T, blocks []int32, blockSize, pos, heads, kvHeads, headDim int, q8 bool) error {
	typ := int64(gguf.F32)
	if _, f16 := any(kc).([]uint16); f16 {
		typ = int64(gguf.F16)
	} else if q8 {
		typ = int64(gguf.Q8_0)
	}
	need("out", out, heads*headDim)
	need("q", q, heads*headDim)
	need("blocks", blocks, pos/blockSize+1)
	kvw := kvHeads * headDim
	for _, b := range blocks[:pos/blockSize+1] {
		need("kc", kc, (int(b)+1)*blockSize*kvw)
		need("vc", vc, (int(b)+1)*blockSize*kvw)
	}
	a := ocKArgs{w: uptr(kc), x: uptr(q), x2: uptr(vc), y: uptr(out), blocks: uptr(blocks), typ: typ,
		heads: int64(heads), kvHeads: int64(kvHeads), headDim: int64(headDim), blockSize: int64(blockSize), pos: int64(pos)}
	rc := k.lib.call(k.lib.fn.kAttention, k.h, uintptr(unsafe.Pointer(&a)))
	runtime.KeepAlive(out)
	runtime.KeepAlive(q)
	runtime.KeepAlive(kc)
	runtime.KeepAlive(vc)
	runtime.KeepAlive(blocks)
	return k.status("attention", rc)
}

// bandwidth reads a buffer of bytes with the pool's threads and returns
// the best read rate in bytes per second.
func (k *kernels) bandwidth(bytes int64, passes int) (float64, error) {
	out := make([]float64, 1)
	rc := k.lib.call(k.lib.fn.bandwidth, k.h, uintptr(bytes), uintptr(passes), uintptr(uptr(out)))
	runtime.KeepAlive(out)
	return out[0], k.status("bandwidth probe", rc)
}

// MemoryBandwidth measures the read bandwidth of threads threads (0: all)
// over a buffer of bytes with the best kernel library, as a decode
// roofline's denominator. It returns bytes per second and the variant that
// measured it.
func MemoryBandwidth(threads int, bytes int64) (float64, string, error) {
	b, err := Open("")
	if err != nil {
		return 0, "", err
	}
	k, err := newKernels(b.lib, threads, 64, 16, 1)
	if err != nil {
		return 0, "", err
	}
	defer k.close()
	bw, err := k.bandwidth(bytes, 5)
	return bw, b.lib.variant, err
}
