//go:build linux

package cuda

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

func TestParamsPacking(t *testing.T) {
	p, err := newParams(8)
	if err != nil {
		t.Fatal(err)
	}
	defer p.free()
	args := []arg{ptrArg(0xdeadbeef00), intArg(-3), floatArg(1.5), intArg(1 << 30)}
	kp, err := p.set(args...)
	if err != nil {
		t.Fatal(err)
	}
	if kp != uintptr(unsafe.Pointer(&p.mem[64])) {
		t.Fatalf("kernelParams at %#x, want the pointer array at %#x", kp, uintptr(unsafe.Pointer(&p.mem[64])))
	}
	want := []uint64{0xdeadbeef00, uint64(uint32(0xfffffffd)), uint64(math.Float32bits(1.5)), 1 << 30}
	for i, w := range want {
		v, ptr := p.slot(i)
		if v != w {
			t.Errorf("slot %d = %#x, want %#x", i, v, w)
		}
		if ptr != uintptr(unsafe.Pointer(&p.mem[8*i])) || ptr%8 != 0 {
			t.Errorf("pointer %d = %#x, want its 8-aligned slot %#x", i, ptr, uintptr(unsafe.Pointer(&p.mem[8*i])))
		}
	}
	// The low four bytes hold a 32-bit argument, as the driver reads it.
	if got := *(*int32)(unsafe.Pointer(&p.mem[8])); got != -3 {
		t.Errorf("int slot reads %d as int32", got)
	}
	if got := *(*float32)(unsafe.Pointer(&p.mem[16])); got != 1.5 {
		t.Errorf("float slot reads %g as float32", got)
	}
	if _, err := p.set(make([]arg, 9)...); err == nil {
		t.Error("9 arguments in a block of 8: no error")
	}
}

// cLaunchConfig and cLaunchAttribute mirror cuda.h's CUlaunchConfig and
// CUlaunchAttribute field by field; Go lays them out as C does on amd64 and
// arm64.
type cLaunchAttribute struct {
	id    uint32
	_     [4]byte
	value [64]byte
}

type cLaunchConfig struct {
	gridX, gridY, gridZ, blockX, blockY, blockZ, smem uint32
	stream                                            uintptr
	attrs                                             *cLaunchAttribute
	numAttrs                                          uint32
}

func TestLaunchConfigPacking(t *testing.T) {
	if unsafe.Sizeof(cLaunchConfig{}) != 56 || unsafe.Sizeof(cLaunchAttribute{}) != 72 {
		t.Fatalf("mirror sizes %d and %d, want cuda.h's 56 and 72", unsafe.Sizeof(cLaunchConfig{}), unsafe.Sizeof(cLaunchAttribute{}))
	}
	c, err := newLaunchConfig()
	if err != nil {
		t.Fatal(err)
	}
	defer c.free()
	for _, l := range []struct {
		grid        [2]int
		block, smem int
		stream      uintptr
	}{{[2]int{264, 1}, 256, 2336, 0x7f00dead0000}, {[2]int{32, 7}, 512, 0, 0}} {
		if p := c.set(l.grid, l.block, l.smem, l.stream); p != uintptr(unsafe.Pointer(&c.mem[0])) {
			t.Fatalf("set returned %#x, want the mapping's start", p)
		}
		cfg := (*cLaunchConfig)(unsafe.Pointer(&c.mem[0]))
		got := []uint32{cfg.gridX, cfg.gridY, cfg.gridZ, cfg.blockX, cfg.blockY, cfg.blockZ, cfg.smem}
		want := []uint32{uint32(l.grid[0]), uint32(l.grid[1]), 1, uint32(l.block), 1, 1, uint32(l.smem)}
		if !slices.Equal(got, want) || cfg.stream != l.stream || cfg.numAttrs != 1 {
			t.Fatalf("config %v stream %#x attrs %d, want %v stream %#x and one attribute", got, cfg.stream, cfg.numAttrs, want, l.stream)
		}
		a := cfg.attrs
		if uintptr(unsafe.Pointer(a)) != uintptr(unsafe.Pointer(&c.mem[launchAttrOffset])) {
			t.Fatal("attrs does not point at the attribute in the mapping")
		}
		if a.id != 6 || *(*int32)(unsafe.Pointer(&a.value[0])) != 1 || slices.ContainsFunc(a.value[4:], func(b byte) bool { return b != 0 }) {
			t.Fatalf("attribute id %d value %v, want programmatic stream serialization (6) allowed (1)", a.id, a.value[:8])
		}
	}
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		code       int
		name, desc string
		want       string
		noDevice   bool
	}{
		{2, "", "", "cuda: cuX: CUDA_ERROR_OUT_OF_MEMORY", false},
		{100, "", "no CUDA-capable device is detected", "cuda: cuX: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)", true},
		{35, "", "", "cuda: cuX: CUDA_ERROR_INSUFFICIENT_DRIVER", true},
		{218, "DRIVER_NAME", "", "cuda: cuX: DRIVER_NAME", false},
		{12345, "", "", "cuda: cuX: CUresult(12345)", false},
	}
	for _, c := range cases {
		err := newError("cuX", c.code, c.name, c.desc)
		if err == nil || err.Error() != c.want {
			t.Errorf("code %d: %v, want %q", c.code, err, c.want)
			continue
		}
		if errors.Is(err, backends.ErrNoDevice) != c.noDevice {
			t.Errorf("code %d: errors.Is(ErrNoDevice) = %v", c.code, !c.noDevice)
		}
		var ce *Error
		if !errors.As(err, &ce) || ce.Code != c.code {
			t.Errorf("code %d: not an *Error with its code", c.code)
		}
	}
	if err := newError("cuX", 0, "", ""); err != nil {
		t.Errorf("CUDA_SUCCESS mapped to %v", err)
	}
}

func TestBindSymbols(t *testing.T) {
	var d driver
	all := map[string]uintptr{}
	for i, s := range d.symbols() {
		all[s.candidates()[0]] = uintptr(0x1000 + i)
	}
	all["cuDevicePrimaryCtxRelease"] = 0x9999 // the plain name as well as _v2
	lookup := func(m map[string]uintptr) func(string) (uintptr, error) {
		return func(n string) (uintptr, error) {
			if p, ok := m[n]; ok {
				return p, nil
			}
			return 0, fmt.Errorf("undefined symbol %s", n)
		}
	}
	if err := d.bind(lookup(all)); err != nil {
		t.Fatal(err)
	}
	if d.cuDevicePrimaryCtxRel != all["cuDevicePrimaryCtxRelease_v2"] {
		t.Error("the _v2 export was not preferred")
	}
	// An old driver without _v2 for a function whose signature did not change.
	old := maps.Clone(all)
	delete(old, "cuStreamDestroy_v2")
	old["cuStreamDestroy"] = 0x7777
	if err := d.bind(lookup(old)); err != nil || d.cuStreamDestroy != 0x7777 {
		t.Errorf("fallback to the plain name: %v, %#x", err, d.cuStreamDestroy)
	}
	// A missing optional symbol leaves graphs off; a missing required one fails.
	noGraph := maps.Clone(all)
	delete(noGraph, "cuGraphInstantiateWithFlags")
	if err := d.bind(lookup(noGraph)); err != nil || (&device{drv: &d}).graphs() {
		t.Errorf("without cuGraphInstantiateWithFlags: %v, graphs %v", err, (&device{drv: &d}).graphs())
	}
	noAlloc := maps.Clone(all)
	delete(noAlloc, "cuMemAlloc_v2")
	noAlloc["cuMemAlloc"] = 1 // the pre-_v2 signature must not be used
	err := d.bind(lookup(noAlloc))
	if err == nil || !errors.Is(err, backends.ErrNoDevice) {
		t.Errorf("missing cuMemAlloc_v2: %v", err)
	}
	if err := d.call("cuMissing", 0); err == nil {
		t.Error("calling a missing entry point: no error")
	}
}

func TestSplitQ8(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]float32, 3*64)
	for i := range vals {
		vals[i] = rng.Float32()*4 - 2
	}
	data := gguf.Quantize(gguf.Q8_0, nil, vals)
	want := make([]float32, len(vals))
	gguf.Dequantize(gguf.Q8_0, data, want)
	qs, ds := splitQ8(nil, nil, data)
	if len(qs) != len(vals) || len(ds) != len(vals)/32 {
		t.Fatalf("%d values, %d scales", len(qs), len(ds))
	}
	for i := range vals {
		if got := float32(qs[i]) * gguf.F16ToF32(ds[i/32]); got != want[i] {
			t.Fatalf("value %d = %g, want %g", i, got, want[i])
		}
	}
}

func TestRopeTableMatchesRef(t *testing.T) {
	for _, rc := range []model.RopeConfig{
		{Dims: 64, Base: 10000, FreqScale: 1},
		{Dims: 32, Base: 1e6, FreqScale: 0.25, NeoX: true},
	} {
		const heads, hd, n = 2, 64, 40
		cs := ropeTable(rc, nil, n)
		rng := rand.New(rand.NewPCG(3, 4))
		for pos := 0; pos < n; pos += 7 {
			x := make([]float32, heads*hd)
			for i := range x {
				x[i] = rng.Float32()*2 - 1
			}
			want := slices.Clone(x)
			ref.Rope(want, heads, hd, pos, rc, nil)
			got := ropeWithTable(x, heads, hd, pos, rc, cs)
			for i := range got {
				if math.Abs(float64(got[i]-want[i])) > 1e-6 {
					t.Fatalf("%+v pos %d: element %d = %g, ref %g", rc, pos, i, got[i], want[i])
				}
			}
		}
	}
}

// ropeWithTable is what rope_kv does, in Go: the pairing and the table
// lookup it relies on.
func ropeWithTable(x []float32, heads, hd, pos int, rc model.RopeConfig, cs []float32) []float32 {
	half := rc.Dims / 2
	out := slices.Clone(x)
	for h := 0; h < heads; h++ {
		for i := 0; i < half; i++ {
			a, b := h*hd+2*i, h*hd+2*i+1
			if rc.NeoX {
				a, b = h*hd+i, h*hd+i+half
			}
			c, s := cs[(pos*half+i)*2], cs[(pos*half+i)*2+1]
			out[a] = x[a]*c - x[b]*s
			out[b] = x[a]*s + x[b]*c
		}
	}
	return out
}

func TestSplitSteps(t *testing.T) {
	b := &backends.Batch{Runs: []backends.Run{
		{Tokens: make([]int32, maxStepTokens-1), Pos: 0, Blocks: make([]int32, 64), Logits: backends.LogitsLast},
		{Tokens: []int32{1, 2, 3}, Pos: 5, Blocks: []int32{7, 3}, Logits: backends.LogitsAll},
		{Tokens: []int32{4}, Pos: 0, Blocks: []int32{9}, Logits: backends.LogitsNone},
	}}
	steps := split(b, 16)
	if len(steps) != 2 || len(steps[0].tok) != maxStepTokens || len(steps[1].tok) != 3 {
		t.Fatalf("steps of %d and %d tokens", len(steps[0].tok), len(steps[len(steps)-1].tok))
	}
	s0, s1 := steps[0], steps[1]
	if !slices.Equal(s0.outIdx, []int32{maxStepTokens - 2, maxStepTokens - 1}) || !slices.Equal(s1.outIdx, []int32{0, 1}) {
		t.Errorf("logit rows %v / %v", s0.outIdx, s1.outIdx)
	}
	// Run 1 spans both steps: each step carries its block table.
	if s0.pos[maxStepTokens-1] != 5 || s1.pos[0] != 6 || s1.pos[1] != 7 {
		t.Errorf("positions %d, %v", s0.pos[maxStepTokens-1], s1.pos[:2])
	}
	if got := s1.blocks[s1.btoff[0]:][:1]; got[0] != 7 {
		t.Errorf("second step's table for run 1 starts %v", got)
	}
	if s1.blocks[s1.btoff[2]] != 9 {
		t.Errorf("run 2's table %v", s1.blocks[s1.btoff[2]:])
	}
}

func TestGEMVTiling(t *testing.T) {
	cases := []struct {
		K, ntok   int
		tile      int
		smemLimit int
	}{
		{2048, 1, 1, 227 << 10},
		{5632, 32, 8, 227 << 10},
		{5632, 32, 2, 48 << 10},
	}
	for _, c := range cases {
		tile, smem, err := gemvTiling(c.K, c.smemLimit, c.ntok)
		if err != nil || tile != c.tile || smem > c.smemLimit {
			t.Errorf("%+v: tile %d smem %d err %v", c, tile, smem, err)
		}
	}
	if _, _, err := gemvTiling(1<<20, 48<<10, 1); err == nil {
		t.Error("a row larger than shared memory: no error")
	}
}

// TestAttentionChoice: which attention kernel a layer's step takes.
func TestAttentionChoice(t *testing.T) {
	// tinyllama-1.1b's attention (32 query heads on 4 KV heads of 64) on
	// an H100's 132 SMs, unless a case says otherwise.
	tl := attnShape{hd: 64, heads: 32, kvHeads: 4, tokens: 1, sms: 132}
	with := func(f func(*attnShape)) attnShape { s := tl; f(&s); return s }
	for _, c := range []struct {
		name  string
		s     attnShape
		want  attnChoice
		parts int
	}{
		{"f32, one token", tl, attnChoice{w: 1}, 1},
		{"f32, 32 tokens: 4 warps per head", with(func(s *attnShape) { s.tokens = 32 }), attnChoice{w: 1, many: true}, 1},
		{"f16, one token: per head", with(func(s *attnShape) { s.f16 = true }), attnChoice{w: 1}, 1},
		{"f16, 32 tokens: grouped", with(func(s *attnShape) { s.f16, s.tokens = true, 32 }), attnChoice{grouped: true}, 1},
		{"f16, 16 tokens: too few blocks", with(func(s *attnShape) { s.f16, s.tokens = true, 16 }), attnChoice{w: 1, many: true}, 1},
		{"f16, grouped asked", with(func(s *attnShape) { s.f16, s.mode = true, attnGrouped }), attnChoice{grouped: true}, 1},
		{"f16, heads asked", with(func(s *attnShape) { s.f16, s.tokens, s.mode = true, 512, attnHeads }), attnChoice{w: 1, many: true}, 1},
		{"f32 is never grouped", with(func(s *attnShape) { s.tokens, s.mode = 512, attnGrouped }), attnChoice{w: 1, many: true}, 1},
		{"f16, heads of 36: not a multiple of 8", with(func(s *attnShape) { s.f16, s.hd, s.tokens = true, 36, 512 }), attnChoice{w: 1, many: true}, 1},
		{"f16, heads of 128", with(func(s *attnShape) { s.f16, s.hd, s.tokens = true, 128, 512 }), attnChoice{grouped: true, w: 1}, 1},
		{"f16, heads of 256", with(func(s *attnShape) { s.f16, s.hd, s.tokens = true, 256, 512 }), attnChoice{grouped: true, w: 2}, 1},
		{"f16, groups of 10 heads: two blocks each", with(func(s *attnShape) { s.f16, s.heads, s.kvHeads, s.tokens = true, 20, 2, 64 }), attnChoice{grouped: true}, 2},
		{"f32, heads of 8", with(func(s *attnShape) { s.hd = 8 }), attnChoice{}, 1},
	} {
		got, err := c.s.choose()
		if err != nil || got != c.want {
			t.Errorf("%s: %+v (%v), want %+v", c.name, got, err, c.want)
		}
		if p := c.s.groupedParts(); p != c.parts {
			t.Errorf("%s: %d blocks per KV head, want %d", c.name, p, c.parts)
		}
	}
	if _, err := with(func(s *attnShape) { s.hd = maxHeadDim + 8 }).choose(); err == nil {
		t.Error("heads wider than the kernels: no error")
	}
	for v, want := range map[string]attnMode{"": attnAuto, "auto": attnAuto, "heads": attnHeads, "grouped": attnGrouped} {
		t.Setenv("OCTET_CUDA_ATTENTION", v)
		if got, err := attnModeFromEnv(); got != want || err != nil {
			t.Errorf("OCTET_CUDA_ATTENTION=%q: %v (%v), want %v", v, got, err, want)
		}
	}
	t.Setenv("OCTET_CUDA_ATTENTION", "fast")
	if _, err := attnModeFromEnv(); err == nil {
		t.Error("OCTET_CUDA_ATTENTION=fast: no error")
	}
}
