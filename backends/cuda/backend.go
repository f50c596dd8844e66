//go:build linux

package cuda

import (
	"fmt"
	"sync"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
)

func init() {
	backends.Register("cuda", 30, func() (backends.Backend, error) { return Open(0) })
}

var (
	openMu  sync.Mutex
	devices = map[int]*device{}
	drv     *driver
)

// Open opens GPU ord (0 is the first). It fails with an error wrapping
// backends.ErrNoDevice when the driver is absent or no device answers.
// Devices stay open for the life of the process; every Backend of one
// ordinal shares its context and goroutine.
func Open(ord int) (*Backend, error) {
	openMu.Lock()
	defer openMu.Unlock()
	if d, ok := devices[ord]; ok {
		return &Backend{dev: d}, nil
	}
	if drv == nil {
		var err error
		if drv, err = openDriver(); err != nil {
			return nil, err
		}
	}
	d, err := openDevice(drv, ord)
	if err != nil {
		return nil, err
	}
	devices[ord] = d
	return &Backend{dev: d}, nil
}

// Backend runs models on one NVIDIA GPU.
type Backend struct {
	dev *device
}

// Name implements backends.Backend: "cuda:0 NVIDIA H100 80GB HBM3".
func (b *Backend) Name() string { return fmt.Sprintf("cuda:%d %s", b.dev.ord, b.dev.name) }

// HoldsKV reports that the kernels' caches hold f32 and f16 values.
func (b *Backend) HoldsKV(t backends.KVType) bool { return t == backends.KVF32 || t == backends.KVF16 }

// PreferredKV is f32, what kv_type = "auto" picks on a GPU: the f16
// cache's kernels (attention16, attention16g, rope_kv16) were written
// after the last run on GPU hardware and have not yet been checked there
// (make gpu-check runs their tests and benchmarks); kv_type = "f16" asks
// for them.
func (b *Backend) PreferredKV() backends.KVType { return backends.KVF32 }

// Describe is the one-line summary Auto's caller logs: device, memory,
// compute capability and the kernels chosen for it.
func (b *Backend) Describe() string {
	d := b.dev
	return fmt.Sprintf("%s, %.1f GiB, compute %d.%d, %d SMs, PTX %s, kernels: dp4a Q8_0 GEMV for one token, int8 tensor-core GEMM (mma.sync) for more, paged attention, CUDA graphs %v, programmatic dependent launch %v",
		b.Name(), float64(d.totalMem)/(1<<30), d.ccMajor, d.ccMinor, d.sms, d.mod.arch, d.graphs(), d.pdl)
}

// MemoryBandwidth measures the GPU's memory bandwidth: bytes read plus
// written per second by device-to-device copies of 1 GiB. Decode reads
// every weight once per step, so weight bytes ÷ this is a step's floor.
// Benchmarks (octet bench) find it by type assertion.
func (b *Backend) MemoryBandwidth() (float64, error) {
	var bps float64
	err := b.dev.do(func() error {
		var err error
		bps, err = b.dev.copyBandwidth(1<<30, 20)
		return err
	})
	return bps, err
}

// Load implements backends.Backend.
func (b *Backend) Load(m *model.Model, o backends.LoadOptions) (backends.Runner, error) {
	o = o.WithDefaults(m)
	if !b.HoldsKV(o.KV) {
		return nil, fmt.Errorf("cuda: a KV cache of %s values is not supported (kv_type = \"f32\", \"f16\" or \"auto\")", o.KV)
	}
	r := &runner{dev: b.dev, m: m, o: o}
	err := b.dev.do(func() error {
		if err := r.load(); err != nil {
			r.release()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: loading %s: %w", m.Path, err)
	}
	o.Logger.Info("cuda: model loaded", "device", b.Describe(), "weights_mib", r.weightBytes>>20,
		"kv_blocks", o.KVBlocks, "block_size", o.BlockSize, "max_context", o.MaxContext)
	return r, nil
}

var (
	_ backends.Backend     = (*Backend)(nil)
	_ backends.KVHolder    = (*Backend)(nil)
	_ backends.KVPreferrer = (*Backend)(nil)
)
