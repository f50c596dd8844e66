package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/chat"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/scheduler"
)

// Loaded is one model being served: the file, its runner and its engine.
// It is reference-counted: the registry holds one reference while the model
// is live, and each request holds one while it runs. The model is closed
// when the last reference goes, so a replaced model finishes the requests
// that started on it.
type Loaded struct {
	Name      string
	Path      string
	Model     *model.Model
	Runner    backends.Runner
	Engine    scheduler.Engine
	Chat      chat.Template
	Context   int // positions a request's prompt and answer share
	KV        backends.KVType
	Quantized bool
	LoadedAt  time.Time
	LoadTime  time.Duration
	SHA256    string // hex SHA-256 of the file's bytes being served

	bytes []byte // the file's bytes being served (until close)
	free  func() // releases the model's memory after Model.Close
	refs  atomic.Int64
	// removed is set when the registry dropped the model's name (not a
	// replacement): closing it then calls the registry's gone.
	removed atomic.Pointer[func()]
	// retired is set when a new version replaced the model: closing it
	// then moves its engine's counters into the name's past.
	retired atomic.Pointer[func()]
	closed  sync.Once
	log     *slog.Logger
}

// discard closes a model that never went live (no reference was taken).
func (l *Loaded) discard() {
	l.closed.Do(func() {
		l.close()
		l.log.Debug("model candidate discarded", "model", l.Name, "sha256", l.SHA256)
	})
}

// Release drops a reference taken by Registry.Acquire.
func (l *Loaded) Release() {
	if l.refs.Add(-1) == 0 {
		l.closed.Do(func() {
			l.close()
			l.log.Info("model unloaded", "model", l.Name, "sha256", l.SHA256)
			if f := l.removed.Load(); f != nil {
				(*f)()
			}
		})
	}
}

func (l *Loaded) close() {
	l.Engine.Close()
	if f := l.retired.Load(); f != nil {
		(*f)() // its final counters, read before the runner goes
	}
	l.Runner.Close()
	l.Model.Close()
	if l.free != nil {
		l.free()
	}
}

// Registry maps model names, and their aliases, to live models.
type Registry struct {
	mu      sync.RWMutex
	models  map[string]*Loaded
	named   map[string][]string // name → its aliases
	aliases map[string]string   // alias → name
	past    map[string]*past    // name → its versions no longer live
	// gone, when set, is called with a removed model's name once its last
	// request has ended, unless the name is live again by then (the
	// daemon drops the name's metric series).
	gone func(name string)
}

// past holds a name's versions no longer live, so that its engine
// counters survive a reload: those still finishing their requests (read
// live), and the sum of those closed.
type past struct {
	retiring []*Loaded
	closed   scheduler.EngineStats
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{models: map[string]*Loaded{}, named: map[string][]string{}, aliases: map[string]string{}, past: map[string]*past{}}
}

// Acquire returns the live model of that name or alias with a reference
// the caller must Release.
func (r *Registry) Acquire(name string) (*Loaded, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	l, ok := r.models[name]
	if !ok {
		l, ok = r.models[r.aliases[name]]
	}
	if ok {
		l.refs.Add(1)
	}
	return l, ok
}

// Get returns the live model of that name (not an alias) without taking a
// reference: for comparisons by the reloader, which alone swaps models.
func (r *Registry) Get(name string) *Loaded {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.models[name]
}

// SetAliases sets the aliases of the model name (live or not yet).
func (r *Registry) SetAliases(name string, aliases []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(aliases) == 0 {
		delete(r.named, name)
	} else {
		r.named[name] = slices.Clone(aliases)
	}
	r.indexAliases()
}

// Aliases returns the aliases of the model name.
func (r *Registry) Aliases(name string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]string{}, r.named[name]...)
}

// indexAliases rebuilds the alias index over the live models: a model's
// own name wins over another's alias, and of two models claiming one alias
// the first by name.
func (r *Registry) indexAliases() {
	clear(r.aliases)
	names := make([]string, 0, len(r.models))
	for n := range r.models {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		for _, a := range r.named[n] {
			if _, taken := r.aliases[a]; !taken && r.models[a] == nil {
				r.aliases[a] = n
			}
		}
	}
}

// Shadowed lists the aliases of the live model name that another model's
// name or alias takes.
func (r *Registry) Shadowed(name string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	if _, ok := r.models[name]; ok {
		for _, a := range r.named[name] {
			if r.aliases[a] != name {
				out = append(out, a)
			}
		}
	}
	return out
}

// Only returns the single live model, with a reference, when exactly one is
// live.
func (r *Registry) Only() (*Loaded, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.models) != 1 {
		return nil, false
	}
	for _, l := range r.models {
		l.refs.Add(1)
		return l, true
	}
	return nil, false
}

// Swap makes l the live model of its name (nil removes the name) and
// retires the model it replaces, which closes when its last request ends.
func (r *Registry) Swap(name string, l *Loaded) {
	r.mu.Lock()
	old := r.models[name]
	if l == nil {
		delete(r.models, name)
		delete(r.named, name)
		delete(r.past, name) // the name's series go: a new one starts at 0
	} else {
		l.refs.Add(1) // the registry's reference
		r.models[name] = l
		if old != nil {
			r.retire(name, old)
		}
	}
	r.indexAliases()
	r.mu.Unlock()
	if old != nil {
		if l == nil && r.gone != nil {
			f := func() {
				if r.Get(name) == nil {
					r.gone(name)
				}
			}
			old.removed.Store(&f)
		}
		old.Release()
	}
}

// retire keeps old, replaced under name, among the name's past versions
// until it closes, and then its final counters. r.mu is held.
func (r *Registry) retire(name string, old *Loaded) {
	p := r.past[name]
	if p == nil {
		p = &past{}
		r.past[name] = p
	}
	p.retiring = append(p.retiring, old)
	f := func() {
		st := old.Engine.Stats()
		r.mu.Lock()
		defer r.mu.Unlock()
		if i := slices.Index(p.retiring, old); i >= 0 && r.past[name] == p {
			p.retiring = slices.Delete(p.retiring, i, i+1)
			p.closed = p.closed.PlusCounters(st)
		}
	}
	old.retired.Store(&f)
}

// EachTotal calls f on every live model, by name, holding a reference,
// with the counters of the name's past versions (scheduler.EngineStats
// PlusCounters adds them to the live engine's), taken together so that
// a version is counted once.
func (r *Registry) EachTotal(f func(l *Loaded, past scheduler.EngineStats)) {
	type entry struct {
		l    *Loaded
		past scheduler.EngineStats
	}
	r.mu.RLock()
	var live []entry
	for _, name := range slices.Sorted(maps.Keys(r.models)) {
		l := r.models[name]
		l.refs.Add(1)
		e := entry{l: l}
		if p := r.past[name]; p != nil {
			e.past = p.closed
			for _, o := range p.retiring {
				e.past = e.past.PlusCounters(o.Engine.Stats())
			}
		}
		live = append(live, e)
	}
	r.mu.RUnlock()
	for _, e := range live {
		f(e.l, e.past)
		e.l.Release()
	}
}

// Names lists the live models, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.models))
	for n := range r.models {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Each calls f on every live model, by name, holding a reference.
func (r *Registry) Each(f func(*Loaded)) {
	for _, n := range r.Names() {
		if l, ok := r.Acquire(n); ok {
			f(l)
			l.Release()
		}
	}
}

// Len is the number of live models.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.models)
}

// Close retires every model.
func (r *Registry) Close() {
	for _, n := range r.Names() {
		r.Swap(n, nil)
	}
}

// modelFiles lists the GGUF files of dir by model name (the file's stem).
func modelFiles(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.EqualFold(filepath.Ext(name), ".gguf") || strings.HasPrefix(name, ".") {
			continue
		}
		files[strings.TrimSuffix(name, filepath.Ext(name))] = filepath.Join(dir, name)
	}
	return files, nil
}

// loader loads model files into servable models.
type loader struct {
	backend backends.Backend
	cfg     *configs.Config
	log     *slog.Logger
	idle    time.Duration // how often an idle engine beats (0: its default)
}

// load opens, checks and starts one model. It never panics on a bad file:
// the error names the file and the problem.
func (ld *loader) load(name, path string) (l *Loaded, err error) {
	start := time.Now()
	snap, err := readSnapshot(path)
	if err != nil {
		return nil, err
	}
	m, err := snap.model(path)
	if err != nil {
		snap.free()
		return nil, err
	}
	defer func() {
		if err != nil {
			m.Close()
			snap.free()
		}
	}()
	quant, bad := int8Matrices(m)
	if !quant {
		if !ld.cfg.Models.AllowUnquantized {
			return nil, fmt.Errorf("%s: weight matrix %s is not int8; octet serves Q8_0 models (set models.allow_unquantized = true to serve it anyway)", path, bad)
		}
		ld.log.Warn("serving a model whose weights are not int8, as models.allow_unquantized allows", "model", name, "tensor", bad)
	}
	ctxLen := ld.cfg.Models.Context
	if ctxLen <= 0 {
		ctxLen = m.Config.ContextLength
	}
	kv, err := backends.ResolveKVType(ld.cfg.Tuning.KVType, ld.backend)
	if err != nil {
		return nil, err
	}
	r, err := ld.backend.Load(m, backends.LoadOptions{
		MaxContext: ctxLen, BlockSize: ld.cfg.Tuning.KVBlockSize, KVBlocks: kvBlocks(m, ld.cfg.Tuning, kv, ctxLen),
		Threads: ld.cfg.Backend.Threads, KV: kv, Logger: ld.log,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := smokeForward(context.Background(), r, m); err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	eng, err := scheduler.NewBatcher(r, m.Tok, scheduler.BatchOptions{
		Tuning: EngineTuning(ld.cfg.Tuning), MaxContext: ctxLen, Idle: ld.idle, Logger: ld.log.With("model", name),
	})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	fam, known := chat.Detect(m.Tok.Vocab().ChatTemplate)
	switch {
	case m.Tok.Vocab().ChatTemplate == "":
		ld.log.Info("model has no chat template; chat requests use the default", "model", name, "template", fam)
	case !known:
		ld.log.Warn("model's chat template is not one octet knows; chat requests use the default", "model", name, "template", fam)
	}
	l = &Loaded{
		Name: name, Path: path, Model: m, Runner: r, Engine: eng,
		Chat:    chat.Template{Family: fam, BOS: m.Tok.Piece(m.Tok.BOS()), EOS: m.Tok.Piece(m.Tok.EOS())},
		Context: eng.Context(), KV: kv, Quantized: quant, LoadedAt: time.Now(), LoadTime: time.Since(start),
		SHA256: snap.sha256, bytes: snap.data, free: snap.free, log: ld.log,
	}
	return l, nil
}

// int8Matrices reports whether every weight matrix is Q8_0, except those
// whose rows cannot be (not a multiple of the 32-weight block), and names
// the first one that is not.
func int8Matrices(m *model.Model) (bool, string) {
	for _, t := range m.Matrices() {
		if t.Type != gguf.Q8_0 && t.Cols%gguf.QK8_0 == 0 {
			return false, fmt.Sprintf("%s (%s)", t.Name, t.Type)
		}
	}
	return true, ""
}
