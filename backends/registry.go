package backends

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// ErrNoDevice is returned by a factory whose hardware or library is absent.
var ErrNoDevice = errors.New("no device")

// Factory opens a backend; it fails (wrapping ErrNoDevice where that is the
// reason) when the backend cannot run on this host.
type Factory func() (Backend, error)

type entry struct {
	name     string
	priority int
	open     Factory
}

var (
	regMu    sync.Mutex
	registry = map[string]entry{}
)

// Register makes a backend available under name. Auto tries backends in
// descending priority. Registering a name twice panics.
func Register(name string, priority int, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("backends: Register called twice for " + name)
	}
	registry[name] = entry{name: name, priority: priority, open: f}
}

// Names lists the registered backends, most preferred first.
func Names() []string {
	regMu.Lock()
	defer regMu.Unlock()
	es := make([]entry, 0, len(registry))
	for _, e := range registry {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b entry) int {
		if a.priority != b.priority {
			return b.priority - a.priority
		}
		return strings.Compare(a.name, b.name)
	})
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = e.name
	}
	return names
}

// Open opens the backend called name.
func Open(name string) (Backend, error) {
	regMu.Lock()
	e, ok := registry[name]
	regMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("backends: unknown backend %q (have %s)", name, strings.Join(Names(), ", "))
	}
	return e.open()
}

// Auto opens the first backend of pref that works on this host; an empty
// pref, or the entry "auto", means every registered backend by priority
// (cuda, then cpu, then ref). Each backend passed over is logged with its
// reason; the error lists them all when none works.
func Auto(pref []string, log *slog.Logger) (Backend, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var names []string
	for _, p := range pref {
		if p == "auto" {
			names = append(names, Names()...)
		} else {
			names = append(names, p)
		}
	}
	if len(names) == 0 {
		names = Names()
	}
	var reasons []string
	for _, n := range names {
		b, err := Open(n)
		if err == nil {
			log.Info("backend selected", "backend", b.Name(), "passed_over", strings.Join(reasons, "; "))
			return b, nil
		}
		log.Info("backend unavailable", "backend", n, "reason", err)
		reasons = append(reasons, fmt.Sprintf("%s: %v", n, err))
	}
	return nil, fmt.Errorf("backends: no usable backend (%s)", strings.Join(reasons, "; "))
}
