package model

import (
	"fmt"
	"math"

	"github.com/octet-dev/octet/model/gguf"
)

// Config holds a model's hyperparameters, read from its GGUF metadata.
type Config struct {
	Arch          string // "llama", "mistral" or "qwen2"
	Name          string // general.name
	ContextLength int    // trained context, {arch}.context_length
	Dim           int    // embedding width
	Layers        int
	Heads         int // query heads (of layer 0; see Layer.Heads)
	KVHeads       int // key/value heads (of layer 0)
	HeadDim       int // width of one head
	FFN           int // feed-forward width (of layer 0)
	VocabSize     int
	NormEps       float32

	// Per-layer widths: structured pruning may leave each layer its own.
	LayerHeads   []int
	LayerKVHeads []int
	LayerFFN     []int

	Rope RopeConfig
}

// RopeConfig describes rotary position embedding.
type RopeConfig struct {
	Dims int     // rotated dimensions of each head (≤ HeadDim)
	Base float32 // frequency base θ
	// FreqScale multiplies every position (1/factor under linear scaling).
	FreqScale float32
	// NeoX pairs dimension i with i+Dims/2 (GPT-NeoX, Qwen2); otherwise
	// adjacent dimensions 2i and 2i+1 are paired (llama).
	NeoX bool
	// Scaling names the scaling method: "none", "linear", or "llama3" (per-frequency
	// factors from the rope_freqs.weight tensor).
	Scaling string
}

// supportedArchs maps each architecture octet runs to whether it rotates
// NeoX-style; all are llama-family decoder-only transformers.
var supportedArchs = map[string]bool{
	"llama":   false,
	"mistral": false,
	"qwen2":   true,
}

// ReadConfig reads the hyperparameters from f's metadata and checks them.
func ReadConfig(f *gguf.File) (Config, error) {
	var c Config
	arch, ok := f.String("general.architecture")
	if !ok {
		return c, fmt.Errorf("model: general.architecture is missing")
	}
	neox, known := supportedArchs[arch]
	if !known {
		return c, fmt.Errorf("model: architecture %q is not supported (octet runs llama, mistral and qwen2)", arch)
	}
	c.Arch = arch
	c.Name, _ = f.String("general.name")
	m := meta{f: f, prefix: arch + "."}
	c.ContextLength = m.int("context_length", 0)
	c.Dim = m.int("embedding_length", 0)
	c.Layers = m.int("block_count", 0)
	c.NormEps = float32(m.float("attention.layer_norm_rms_epsilon", 1e-5))
	c.LayerHeads = m.perLayer("attention.head_count", c.Layers)
	c.LayerKVHeads = m.perLayer("attention.head_count_kv", c.Layers)
	c.LayerFFN = m.perLayer("feed_forward_length", c.Layers)
	if m.err != nil {
		return c, m.err
	}
	if c.Dim <= 0 || c.Layers <= 0 || c.ContextLength <= 0 {
		return c, fmt.Errorf("model: %s.embedding_length, block_count and context_length must be positive (got %d, %d, %d)", arch, c.Dim, c.Layers, c.ContextLength)
	}
	if c.LayerHeads == nil || c.LayerFFN == nil {
		return c, fmt.Errorf("model: %s.attention.head_count and %s.feed_forward_length are required", arch, arch)
	}
	if c.LayerKVHeads == nil {
		c.LayerKVHeads = c.LayerHeads
	}
	c.Heads, c.KVHeads, c.FFN = c.LayerHeads[0], c.LayerKVHeads[0], c.LayerFFN[0]
	if c.Heads <= 0 {
		return c, fmt.Errorf("model: %s.attention.head_count must be positive", arch)
	}
	c.HeadDim = m.int("attention.key_length", c.Dim/c.Heads)
	if v := m.int("attention.value_length", c.HeadDim); v != c.HeadDim {
		return c, fmt.Errorf("model: value heads of width %d differ from key heads of %d", v, c.HeadDim)
	}
	for l := 0; l < c.Layers; l++ {
		h, kv, ffn := c.LayerHeads[l], c.LayerKVHeads[l], c.LayerFFN[l]
		if h <= 0 || kv <= 0 || h%kv != 0 || ffn <= 0 {
			return c, fmt.Errorf("model: layer %d: %d heads, %d KV heads, FFN %d: heads must be a positive multiple of KV heads", l, h, kv, ffn)
		}
	}
	c.Rope = RopeConfig{
		Dims:      m.int("rope.dimension_count", c.HeadDim),
		Base:      float32(m.float("rope.freq_base", 10000)),
		FreqScale: 1,
		NeoX:      neox,
		Scaling:   "none",
	}
	if err := readRopeScaling(&m, &c.Rope); err != nil {
		return c, err
	}
	if m.err != nil {
		return c, m.err
	}
	if c.HeadDim <= 0 || c.HeadDim%2 != 0 || c.Rope.Dims <= 0 || c.Rope.Dims > c.HeadDim || c.Rope.Dims%2 != 0 {
		return c, fmt.Errorf("model: head width %d and rotary dimensions %d must be even, positive, rotary ≤ head", c.HeadDim, c.Rope.Dims)
	}
	if c.NormEps <= 0 || c.Rope.Base <= 0 || math.IsNaN(float64(c.NormEps)) || math.IsInf(float64(c.Rope.Base), 0) {
		return c, fmt.Errorf("model: norm epsilon %g and rope base %g must be positive and finite", c.NormEps, c.Rope.Base)
	}
	return c, nil
}

func readRopeScaling(m *meta, r *RopeConfig) error {
	kind, _ := m.f.String(m.prefix + "rope.scaling.type")
	factor := m.float("rope.scaling.factor", 0)
	if old := m.float("rope.scale_linear", 0); old != 0 && kind == "" {
		kind, factor = "linear", old
	}
	if _, ok := m.f.Tensor("rope_freqs.weight"); ok {
		r.Scaling = "llama3"
	}
	switch kind {
	case "", "none":
	case "linear":
		if factor <= 0 || math.IsInf(factor, 0) || math.IsNaN(factor) {
			return fmt.Errorf("model: linear rope scaling factor %g must be positive", factor)
		}
		r.FreqScale = float32(1 / factor)
		if r.Scaling == "none" {
			r.Scaling = "linear"
		}
	default:
		return fmt.Errorf("model: rope scaling %q is not supported (none, linear and llama3 are)", kind)
	}
	return nil
}

// meta reads {arch}.* keys, remembering the first type error.
type meta struct {
	f      *gguf.File
	prefix string
	err    error
}

func (m *meta) int(key string, def int) int {
	v, ok := m.f.Get(m.prefix + key)
	if !ok {
		return def
	}
	n, ok := v.Uint()
	if !ok || n > math.MaxInt32 {
		m.fail(key, v)
		return def
	}
	return int(n)
}

func (m *meta) float(key string, def float64) float64 {
	v, ok := m.f.Get(m.prefix + key)
	if !ok {
		return def
	}
	x, ok := v.Float()
	if !ok {
		m.fail(key, v)
		return def
	}
	return x
}

// perLayer reads a value that is either one integer for all layers or an
// array with one integer per layer; nil when absent.
func (m *meta) perLayer(key string, layers int) []int {
	v, ok := m.f.Get(m.prefix + key)
	if !ok || layers <= 0 || layers > 1<<16 {
		return nil
	}
	out := make([]int, layers)
	if v.Type != gguf.TypeArray {
		n := m.int(key, 0)
		for i := range out {
			out[i] = n
		}
		return out
	}
	ns, ok := v.Int64s()
	if !ok || len(ns) != layers {
		m.fail(key, v)
		return nil
	}
	for i, n := range ns {
		if n < 0 || n > math.MaxInt32 {
			m.fail(key, v)
			return nil
		}
		out[i] = int(n)
	}
	return out
}

func (m *meta) fail(key string, v gguf.Value) {
	if m.err == nil {
		m.err = fmt.Errorf("model: %s%s has the unusable value %v", m.prefix, key, v)
	}
}
