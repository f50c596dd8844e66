package cpu

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/model"
)

func init() {
	backends.Register("cpu", 20, func() (backends.Backend, error) { return Open("") })
}

// Backend runs models on the CPU through one kernel library.
type Backend struct {
	lib *library
	// Reason says why this variant was chosen and which were passed over.
	Reason string
}

// Name is "cpu-" and the variant: "cpu-avx512", "cpu-avx2", "cpu-portable".
func (b *Backend) Name() string { return "cpu-" + b.lib.variant }

// HoldsKV reports that the library's caches hold f32, f16 and q8 values.
func (b *Backend) HoldsKV(t backends.KVType) bool {
	return t == backends.KVF32 || t == backends.KVF16 || t == backends.KVQ8
}

// Variant is the instruction-set variant of the loaded library.
func (b *Backend) Variant() string { return b.lib.variant }

// Library says where the library was loaded from.
func (b *Backend) Library() string { return b.lib.from }

// Open returns the backend for variant, or for the best variant this CPU
// can run when variant is "" (or $OCTET_CPU_VARIANT when that is set):
// variants are tried best first, each passed over with its reason when the
// CPU lacks its instructions or its library is missing or fails to load.
// When none loads, the error wraps backends.ErrNoDevice and lists them all.
// Each library is loaded once per process (and folder); a later Open
// reuses it.
func Open(variant string) (*Backend, error) {
	if variant == "" {
		variant = os.Getenv(EnvVariant)
	}
	if variant != "" {
		return openVariant(variant)
	}
	return openBest()
}

func openVariant(variant string) (*Backend, error) {
	for _, c := range candidates() {
		if c.variant != variant {
			continue
		}
		if !c.ok {
			return nil, fmt.Errorf("cpu: %w: variant %s: %s", backends.ErrNoDevice, variant, c.why)
		}
		l, err := loadLibrary(variant)
		if err != nil {
			return nil, fmt.Errorf("cpu: %w: variant %s: %v", backends.ErrNoDevice, variant, err)
		}
		return &Backend{lib: l, Reason: "variant " + variant + " requested; " + c.why}, nil
	}
	var names []string
	for _, c := range candidates() {
		names = append(names, c.variant)
	}
	return nil, fmt.Errorf("cpu: unknown variant %q (this architecture has %s)", variant, strings.Join(names, ", "))
}

func openBest() (*Backend, error) {
	var passed []string
	absent := 0
	for _, c := range candidates() {
		if !c.ok {
			passed = append(passed, c.variant+": "+c.why)
			continue
		}
		l, err := loadLibrary(c.variant)
		if err != nil {
			if errors.Is(err, errAbsent) {
				absent++
			}
			passed = append(passed, c.variant+": "+err.Error())
			continue
		}
		reason := c.why
		if len(passed) > 0 {
			reason += "; passed over " + strings.Join(passed, "; ")
		}
		return &Backend{lib: l, Reason: reason}, nil
	}
	if absent > 0 && absent == len(Variants()) {
		return nil, fmt.Errorf("cpu: %w: no kernel library loads: the libraries are %v", backends.ErrNoDevice, errAbsent)
	}
	return nil, fmt.Errorf("cpu: %w: no kernel library loads (%s)", backends.ErrNoDevice, strings.Join(passed, "; "))
}

// ErrClosed is returned by a runner used after Close.
var ErrClosed = errors.New("cpu: runner is closed")

// Load implements backends.Backend. The runner reads the model's weights
// where they are mapped: m must stay open until the runner is closed.
func (b *Backend) Load(m *model.Model, o backends.LoadOptions) (backends.Runner, error) {
	o = o.WithDefaults(m)
	r, err := newRunner(b.lib, m, o)
	if err != nil {
		return nil, err
	}
	o.Logger.Info("cpu backend loaded", "variant", b.lib.variant, "library", b.lib.from, "reason", b.Reason,
		"threads", r.threads, "weights_copied_bytes", r.copied, "kv_blocks", o.KVBlocks, "block_size", o.BlockSize, "kv_type", o.KV, "kv_bytes", r.kvBytes)
	return r, nil
}

var (
	_ backends.Backend  = (*Backend)(nil)
	_ backends.KVHolder = (*Backend)(nil)
)
