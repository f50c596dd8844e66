package cpu

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// populate maps the pages of b (part of a file mapping) in, ahead of use.
// Advice only: older kernels lack MADV_POPULATE_READ.
func populate(b []byte) {
	if len(b) == 0 {
		return
	}
	off := int(uintptr(unsafe.Pointer(&b[0])) % uintptr(os.Getpagesize()))
	region := unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(&b[0]), -off)), len(b)+off)
	_ = unix.Madvise(region, unix.MADV_POPULATE_READ)
}

// EnvWeights chooses where the kernels read the weights: "copy" (the
// default) copies them at load into anonymous memory backed by transparent
// huge pages; "mmap" reads them where the model file is mapped.
//
// Measured on the development VM (2 vCPUs, tinyllama-1.1b Q8_0, one read
// pass over the weights at a time): the file mapping read at 1.5–35 GB/s,
// changing pass by pass (mapped file pages are dropped and faulted in again
// by the hypervisor's shadow paging), while the anonymous huge-page copy read
// at a steady 28–37 GB/s. The copy costs one read of the file at load and
// resident memory the size of the weights (the page cache behind the
// mapping can be reclaimed).
const EnvWeights = "OCTET_CPU_WEIGHTS"

// weights is where a runner's kernels read its weight tensors: the model's
// own mapping, or a private copy.
type weights struct {
	mem  []byte // the anonymous mapping of the copy; nil for "mmap"
	data map[*model.Tensor][]byte
	// repack: the library packs the Q8_0 matrices into its own memory at
	// load (they are not copied here).
	repack bool
}

func (w *weights) of(t *model.Tensor) []byte {
	if d, ok := w.data[t]; ok {
		return d
	}
	return t.Data
}

func (w *weights) free() {
	if w.mem != nil {
		unix.Munmap(w.mem)
		w.mem = nil
	}
}

// loadWeights copies ts (each once) into one read-only anonymous mapping
// with threads goroutines, unless $OCTET_CPU_WEIGHTS says "mmap". It reads
// them from m's file with pread where it can: on the development VM that
// took 2.5 s for tinyllama's 1.1 GB where copying from the mapping (page
// faults) took 9 s.
func loadWeights(m *model.Model, threads int) (*weights, error) {
	w := &weights{data: map[*model.Tensor][]byte{}}
	switch mode := os.Getenv(EnvWeights); mode {
	case "mmap":
		return w, nil
	case "", "copy":
	default:
		return nil, fmt.Errorf("cpu: $%s=%q: want copy or mmap", EnvWeights, mode)
	}
	// The library packs the Q8_0 matrices from the mapping; their pages are
	// populated in one call each, not a fault at a time. The rest (the
	// embedding, float matrices) is copied.
	w.repack = true
	var ts []*model.Tensor
	for _, t := range append(m.Matrices(), m.TokEmbd) {
		if t.Type == gguf.Q8_0 && t != m.TokEmbd {
			populate(t.Data)
			continue
		}
		ts = append(ts, t)
	}
	const align = 64
	type span struct {
		t   *model.Tensor
		off int
	}
	var spans []span
	size := 0
	for _, t := range ts {
		if t == nil {
			continue
		}
		if _, dup := w.data[t]; dup {
			continue
		}
		w.data[t] = nil
		spans = append(spans, span{t, size})
		size += (len(t.Data) + align - 1) / align * align
	}
	if size == 0 {
		return w, nil
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil, fmt.Errorf("cpu: cannot map %d bytes for the weights (set %s=mmap to read them from the file): %w", size, EnvWeights, err)
	}
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE) // advice only: fine where THP is off
	w.mem = mem
	var file *os.File
	if m.File != nil && m.File.Path != "" {
		if f, err := os.Open(m.File.Path); err == nil {
			file = f
			defer f.Close()
		}
	}
	// Copy in pieces of 4 MiB, handed out to the goroutines in turn.
	const piece = 4 << 20
	type job struct {
		dst, src []byte
		off      int64 // in file, or -1: copy src
	}
	jobs := make(chan job, 64)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var readErr error
	for range max(threads, 1) {
		wg.Go(func() {
			for j := range jobs {
				if j.off < 0 {
					copy(j.dst, j.src)
					continue
				}
				if _, err := file.ReadAt(j.dst, j.off); err != nil {
					errMu.Lock()
					readErr = err
					errMu.Unlock()
				}
			}
		})
	}
	for _, s := range spans {
		d := mem[s.off : s.off+len(s.t.Data)]
		w.data[s.t] = d
		off := fileOffset(m, s.t, file != nil)
		for i := 0; i < len(d); i += piece {
			e := min(i+piece, len(d))
			j := job{dst: d[i:e], src: s.t.Data[i:e], off: -1}
			if off >= 0 {
				j.off = off + int64(i)
			}
			jobs <- j
		}
	}
	close(jobs)
	wg.Wait()
	if readErr != nil {
		w.free()
		return nil, fmt.Errorf("cpu: reading the weights from %s: %w", m.File.Path, readErr)
	}
	if err := unix.Mprotect(mem, unix.PROT_READ); err != nil {
		w.free()
		return nil, fmt.Errorf("cpu: weights: %w", err)
	}
	return w, nil
}

// fileOffset is where t's bytes start in m's file, or -1 when t is not a
// view of the file's tensor of its name.
func fileOffset(m *model.Model, t *model.Tensor, ok bool) int64 {
	if !ok {
		return -1
	}
	info, found := m.File.Tensor(t.Name)
	if !found || len(t.Data) == 0 {
		return -1
	}
	view := m.File.TensorData(info)
	if len(view) != len(t.Data) || &view[0] != &t.Data[0] {
		return -1
	}
	return m.File.DataOffset + int64(info.Offset)
}
