package cpu

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"golang.org/x/sys/unix"
)

// embedded holds the libraries `make native` built into native/lib when
// this package was compiled (none in a clean clone: only its README).
//
//go:embed native/lib
var embedded embed.FS

// InstallDir is where packaged libraries live.
const InstallDir = "/usr/lib/octet"

// EnvDir names a folder to load the libraries from instead of the embedded
// ones and InstallDir.
const EnvDir = "OCTET_NATIVE_DIR"

// EnvVariant forces one variant ("avx2", "portable", …).
const EnvVariant = "OCTET_CPU_VARIANT"

func libName(variant string) string { return "octet-cpu-" + variant + ".so" }

// library is one loaded kernel library and its entry points.
type library struct {
	variant string
	from    string // where it was loaded from, for the log
	handle  uintptr
	fn      struct {
		abiVersion, abiLayout, variant, cpuOK                 uintptr
		runnerNew, runnerFree, forward, cancel                uintptr
		ctxNew, ctxFree, kPrepare, kDequant, kMatmulRange     uintptr
		kMatmulPool, kPoolNoop, kRMSNorm, kSoftmax, kSiLUGate uintptr
		kRope, kAttention, bandwidth, kPrepack                uintptr
	}
}

// call invokes a C function with integer and pointer arguments. Callers
// convert pointers with uintptr(unsafe.Pointer(p)) in the argument list; the
// directive below makes that conversion move what p points to onto the heap
// and keep it alive for the call, as purego.SyscallN's own directive does
// for its callers (a directive covers only conversions written in a call
// to the function that carries it, so this wrapper needs its own). Without
// it a struct or array could stay on the goroutine's stack, which may be
// copied elsewhere before the library reads it.
//
//go:uintptrescapes
func (l *library) call(fn uintptr, args ...uintptr) int64 {
	r1, _, _ := purego.SyscallN(fn, args...)
	return int64(r1)
}

// uptr is the address of a slice's first element (nil for an empty slice).
// Passed to C as uintptr(uptr(s)) in a call to library.call, or stored in a
// struct passed so, it makes s live on the heap and stay alive for the call.
func uptr[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

var (
	libsMu sync.Mutex
	libs   = map[string]*libResult{}
)

type libResult struct {
	lib *library
	err error
}

// loadLibrary loads the library of one variant, once per process: from
// $OCTET_NATIVE_DIR when set, else the embedded copy (through a memfd),
// else InstallDir. Libraries are never unloaded.
func loadLibrary(variant string) (*library, error) {
	libsMu.Lock()
	defer libsMu.Unlock()
	key := variant + "\x00" + os.Getenv(EnvDir)
	if r, ok := libs[key]; ok {
		return r.lib, r.err
	}
	l, err := findLibrary(variant)
	libs[key] = &libResult{l, err}
	return l, err
}

// errAbsent: a variant's library is neither embedded nor installed.
var errAbsent = errors.New("neither embedded in this binary (built without `make native`) nor installed in " + InstallDir)

func findLibrary(variant string) (*library, error) {
	name := libName(variant)
	if dir := os.Getenv(EnvDir); dir != "" {
		return openFile(variant, filepath.Join(dir, name), "$"+EnvDir)
	}
	var reasons []string
	data, err := fs.ReadFile(embedded, "native/lib/"+name)
	embeddedHere := err == nil
	if embeddedHere {
		l, err := openEmbedded(variant, name, data)
		if err == nil {
			return l, nil
		}
		reasons = append(reasons, err.Error())
	} else {
		reasons = append(reasons, "not embedded in this binary (built without `make native`)")
	}
	path := filepath.Join(InstallDir, name)
	if _, err := os.Stat(path); err != nil {
		if !embeddedHere {
			return nil, errAbsent
		}
		reasons = append(reasons, fmt.Sprintf("no %s", path))
		return nil, errors.New(strings.Join(reasons, "; "))
	}
	l, err := openFile(variant, path, "installed")
	if err != nil {
		reasons = append(reasons, err.Error())
		return nil, errors.New(strings.Join(reasons, "; "))
	}
	return l, nil
}

// openEmbedded writes the library into an anonymous memory file and
// dlopens it through /proc/self/fd. The descriptor stays open for the life
// of the process: the dynamic loader knows a library by its path, and a
// reused descriptor number would make it hand back the wrong one. Where
// memfd_create is unavailable, a temporary file does the same job.
func openEmbedded(variant, name string, data []byte) (*library, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err == nil {
		f := os.NewFile(uintptr(fd), name)
		if _, err := f.Write(data); err != nil {
			f.Close()
			return nil, fmt.Errorf("embedded %s: %w", name, err)
		}
		l, err := openFile(variant, fmt.Sprintf("/proc/self/fd/%d", fd), "embedded "+name+" (memfd)")
		if err != nil {
			f.Close()
			return nil, err
		}
		memfds = append(memfds, f)
		return l, nil
	}
	tmp, terr := os.CreateTemp("", "octet-*-"+name)
	if terr != nil {
		return nil, fmt.Errorf("embedded %s: memfd: %v; temporary file: %w", name, err, terr)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("embedded %s: %w", name, werr)
	}
	return openFile(variant, tmp.Name(), "embedded "+name+" (temporary file; memfd: "+err.Error()+")")
}

var memfds []*os.File // kept open on purpose (see openEmbedded)

func openFile(variant, path, from string) (*library, error) {
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	l := &library{variant: variant, from: from, handle: h}
	syms := []struct {
		name string
		p    *uintptr
	}{
		{"oc_abi_version", &l.fn.abiVersion}, {"oc_abi_layout", &l.fn.abiLayout},
		{"oc_variant", &l.fn.variant}, {"oc_cpu_ok", &l.fn.cpuOK},
		{"oc_runner_new", &l.fn.runnerNew}, {"oc_runner_free", &l.fn.runnerFree},
		{"oc_forward", &l.fn.forward}, {"oc_cancel", &l.fn.cancel},
		{"oc_ctx_new", &l.fn.ctxNew}, {"oc_ctx_free", &l.fn.ctxFree},
		{"oc_k_prepare", &l.fn.kPrepare}, {"oc_k_dequant", &l.fn.kDequant},
		{"oc_k_matmul_range", &l.fn.kMatmulRange}, {"oc_k_matmul_pool", &l.fn.kMatmulPool},
		{"oc_k_pool_noop", &l.fn.kPoolNoop}, {"oc_k_rmsnorm", &l.fn.kRMSNorm},
		{"oc_k_softmax", &l.fn.kSoftmax}, {"oc_k_silu_gate", &l.fn.kSiLUGate},
		{"oc_k_rope", &l.fn.kRope}, {"oc_k_attention", &l.fn.kAttention},
		{"oc_bandwidth", &l.fn.bandwidth}, {"oc_k_prepack", &l.fn.kPrepack},
	}
	for _, s := range syms {
		p, err := purego.Dlsym(h, s.name)
		if err != nil {
			return nil, fmt.Errorf("%s: symbol %s: %w", from, s.name, err)
		}
		*s.p = p
	}
	// The CPU check is compiled for the baseline instruction set: it is
	// safe to call before anything else.
	if l.call(l.fn.cpuOK) != 1 {
		return nil, fmt.Errorf("%s: the library says this CPU lacks the %s instructions", from, variant)
	}
	if v := l.call(l.fn.abiVersion); v != abiVersion {
		return nil, fmt.Errorf("%s: ABI version %d, want %d (stale library: run make native)", from, v, abiVersion)
	}
	if err := l.checkLayout(); err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	buf := make([]byte, 64)
	n := l.call(l.fn.variant, uintptr(uptr(buf)), uintptr(len(buf)))
	if got := string(buf[:min(int(n), len(buf)-1)]); got != variant {
		return nil, fmt.Errorf("%s: library is variant %q, want %q", from, got, variant)
	}
	return l, nil
}
