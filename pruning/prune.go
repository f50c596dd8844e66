package pruning

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/quant"
)

// Methods score weights.
const (
	Magnitude = "magnitude"
	Wanda     = "wanda"
)

// Options describe one pruning; Sparsity, the N:M pattern and the width
// shares may be combined, except Sparsity with N:M.
type Options struct {
	Method   string  // Magnitude (default) or Wanda (needs Stats)
	Sparsity float64 // share of each row's weights zeroed, [0, 1)
	N, M     int     // N:M: keep N of every M consecutive weights (0: off)
	// FFNKeep and HeadsKeep are the shares of feed-forward neurons and
	// attention heads kept, in (0, 1]; 0 or 1 removes none.
	FFNKeep, HeadsKeep float64
	// Stats, from quant.Calibrate, are the activations Wanda and the
	// calibrated structured importance need.
	// A matrix whose input columns width pruning removes is refitted to
	// the kept ones when Stats holds its input's Gram matrix.
	Stats     *quant.Stats
	CalibName string
	Progress  func(done, total int64)
}

// Info says what Build did.
type Info struct {
	FFNFrom, FFNTo     int
	HeadsFrom, HeadsTo int
	KVFrom, KVTo       int
	Zeroed, Weights    int64    // weights zeroed, of the weights in layer matrices after width pruning
	Kept               []string // matrices written in a wider type than their source, with the reason
	Refit              int      // matrices refitted to the kept columns by least squares
}

// Sparsity is the share of layer-matrix weights that were zeroed.
func (in Info) Sparsity() float64 {
	if in.Weights == 0 {
		return 0
	}
	return float64(in.Zeroed) / float64(in.Weights)
}

func (o Options) validate() error {
	if err := o.Validate(); err != nil {
		return err
	}
	if o.Method == Wanda && o.Stats == nil {
		return fmt.Errorf("pruning: wanda needs calibration statistics (--calib)")
	}
	return nil
}

// Validate checks the options before any work: methods, shares, pattern.
func (o Options) Validate() error {
	switch o.Method {
	case "", Magnitude, Wanda:
	default:
		return fmt.Errorf("pruning: unknown method %q (magnitude or wanda)", o.Method)
	}
	share := func(name string, v float64, lo, hi float64) error {
		if math.IsNaN(v) || v < lo || v > hi {
			return fmt.Errorf("pruning: %s %g must be within [%g, %g]", name, v, lo, hi)
		}
		return nil
	}
	if err := share("sparsity", o.Sparsity, 0, 0.99); err != nil {
		return err
	}
	if err := share("FFN keep share", o.FFNKeep, 0, 1); err != nil {
		return err
	}
	if err := share("heads keep share", o.HeadsKeep, 0, 1); err != nil {
		return err
	}
	if o.N != 0 || o.M != 0 {
		if o.N < 1 || o.M < 2 || o.N >= o.M || o.M > 64 {
			return fmt.Errorf("pruning: pattern %d:%d must keep N of M with 1 ≤ N < M ≤ 64", o.N, o.M)
		}
		if o.Sparsity > 0 {
			return fmt.Errorf("pruning: choose either a sparsity or an N:M pattern")
		}
	}
	if !o.unstructured() && !o.structured() {
		return fmt.Errorf("pruning: nothing to do: give a sparsity, an N:M pattern, or a keep share below 1")
	}
	return nil
}

func (o Options) unstructured() bool { return o.Sparsity > 0 || o.M > 0 }
func (o Options) structured() bool {
	return (o.FFNKeep > 0 && o.FFNKeep < 1) || (o.HeadsKeep > 0 && o.HeadsKeep < 1)
}

var layerTensor = regexp.MustCompile(`^blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.(weight|bias)$`)

// Build prepares a writer for the pruned form of m; tensors are encoded when
// the writer writes, reading m, which must stay open until then.
func Build(m *model.Model, o Options) (*gguf.Writer, Info, error) {
	var info Info
	if err := o.validate(); err != nil {
		return nil, info, err
	}
	if o.Method == "" {
		o.Method = Magnitude
	}
	c := &m.Config
	f := m.File
	for l := range m.Layers {
		if m.Layers[l].Heads != c.Heads || m.Layers[l].KVHeads != c.KVHeads || m.Layers[l].FFN != c.FFN {
			return nil, info, fmt.Errorf("pruning: layer %d has its own widths; only models with uniform widths are pruned", l)
		}
	}
	p := makePlan(m, o)
	info.FFNFrom, info.FFNTo = c.FFN, len(p.ffn[0])
	info.HeadsFrom, info.HeadsTo = c.Heads, len(p.heads[0])
	info.KVFrom, info.KVTo = c.KVHeads, len(p.kv[0])

	w := gguf.NewWriter()
	w.Alignment = f.Alignment
	for _, kv := range f.KV {
		w.Set(kv.Key, kv.Value)
	}
	a := c.Arch + "."
	perLayer := func(key string, n int) {
		v := make([]int, c.Layers)
		for i := range v {
			v[i] = n
		}
		quant.SetPerLayer(w, a+key, v, f)
	}
	perLayer("feed_forward_length", info.FFNTo)
	perLayer("attention.head_count", info.HeadsTo)
	perLayer("attention.head_count_kv", info.KVTo)
	if info.HeadsTo != info.HeadsFrom {
		w.Set(a+"attention.key_length", gguf.Uint32(uint32(c.HeadDim)))
		w.Set(a+"attention.value_length", gguf.Uint32(uint32(c.HeadDim)))
		w.Set(a+"rope.dimension_count", gguf.Uint32(uint32(c.Rope.Dims)))
	}

	var done, total int64
	progress := func(n int64) {
		done += n
		if o.Progress != nil {
			o.Progress(done, total)
		}
	}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		mt := layerTensor.FindStringSubmatch(t.Name)
		if mt == nil || len(t.Dims) > 2 {
			if err := w.AddTensor(t.Name, t.Type, t.Dims, f.TensorData(t)); err != nil {
				return nil, info, err
			}
			total += int64(t.Size)
			continue
		}
		l, _ := strconv.Atoi(mt[1])
		rows, cols := selection(m, p, l, mt[2], mt[3] == "bias")
		var norm []float64
		if o.Method == Wanda && mt[3] == "weight" {
			if cs := o.Stats.In[t.Name]; cs != nil {
				norm = pick(cs.Norm(), cols)
			}
		}
		mask := o.unstructured() && mt[3] == "weight"
		tr := &transform{src: t, data: f.TensorData(t), rows: rows, cols: cols, mask: mask, o: &o, norm: norm}
		if cols != nil && o.Stats != nil && mt[3] == "weight" {
			if cs := o.Stats.In[t.Name]; cs != nil && cs.Gram != nil {
				var err error
				if tr.refit, err = refit(cs.Gram, len(cs.SumSq), cols); err != nil {
					return nil, info, fmt.Errorf("%s: %w", t.Name, err)
				}
				info.Refit++
			}
		}
		nc, nr := tr.shape()
		typ := t.Type
		if typ.BlockSize() > 1 && nc%typ.BlockSize() != 0 {
			typ = gguf.F16
			info.Kept = append(info.Kept, fmt.Sprintf("%s F16 (rows of %d are not a multiple of %d)", t.Name, nc, t.Type.BlockSize()))
		}
		if mask {
			info.Weights += int64(nc) * int64(max(nr, 1))
		}
		if err := tr.add(w, typ, progress); err != nil {
			return nil, info, err
		}
		total += int64(typ.RowBytes(nc) * max(nr, 1))
	}
	// The masks zero a fixed count per row, known before anything is written.
	info.Zeroed = expectedZeroed(m, p, o)

	const k = "octet.pruning."
	w.Set(k+"method", gguf.String(o.Method))
	if m.Path != "" {
		w.Set(k+"source", gguf.String(filepath.Base(m.Path)))
	}
	if o.Sparsity > 0 {
		w.Set(k+"sparsity", gguf.Float32(float32(o.Sparsity)))
	}
	if o.M > 0 {
		w.Set(k+"pattern", gguf.String(fmt.Sprintf("%d:%d", o.N, o.M)))
	}
	if info.FFNTo != info.FFNFrom {
		w.Set(k+"ffn", gguf.String(fmt.Sprintf("%d → %d", info.FFNFrom, info.FFNTo)))
	}
	if info.HeadsTo != info.HeadsFrom {
		w.Set(k+"heads", gguf.String(fmt.Sprintf("%d/%d → %d/%d (query/KV)", info.HeadsFrom, info.KVFrom, info.HeadsTo, info.KVTo)))
	}
	if o.structured() {
		imp := "weight norms"
		if o.Stats != nil {
			imp = "calibration activations"
		}
		w.Set(k+"importance", gguf.String(imp))
		w.Set(k+"refit_matrices", gguf.Uint32(uint32(info.Refit)))
	}
	if o.Stats != nil {
		w.Set(k+"calib_tokens", gguf.Uint32(uint32(o.Stats.Tokens)))
		if o.CalibName != "" {
			w.Set(k+"calib_text", gguf.String(o.CalibName))
		}
	}
	if len(info.Kept) > 0 {
		w.Set(k+"kept", gguf.Strings(info.Kept))
	}
	return w, info, nil
}

// selection returns the rows and columns of layer l's tensor kind that
// structured pruning keeps (nil: all). A bias is one row; its elements are
// columns.
func selection(m *model.Model, p plan, l int, kind string, bias bool) (rows, cols []int) {
	hd := m.Config.HeadDim
	q, kv, ffn := expand(p.heads[l], hd), expand(p.kv[l], hd), p.ffn[l]
	layer := &m.Layers[l]
	if len(ffn) == layer.FFN {
		ffn = nil
	}
	if len(q) == layer.Heads*hd {
		q = nil
	}
	if len(kv) == layer.KVHeads*hd {
		kv = nil
	}
	switch kind {
	case "attn_q":
		rows = q
	case "attn_k", "attn_v":
		rows = kv
	case "attn_output":
		return nil, q
	case "ffn_gate", "ffn_up":
		rows = ffn
	case "ffn_down":
		return nil, ffn
	}
	if bias {
		return nil, rows
	}
	return rows, nil
}

func pick(v []float64, idx []int) []float64 {
	if idx == nil {
		return v
	}
	out := make([]float64, len(idx))
	for i, j := range idx {
		out[i] = v[j]
	}
	return out
}

// expectedZeroed counts the weights the masks zero: per row, the
// sparsity's share (rounded down), or M-N of every M.
func expectedZeroed(m *model.Model, p plan, o Options) int64 {
	if !o.unstructured() {
		return 0
	}
	var n int64
	for l := range m.Layers {
		for _, kind := range []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"} {
			t := tensorOf(&m.Layers[l], kind)
			rows, cols := selection(m, p, l, kind, false)
			nr, nc := t.Rows, t.Cols
			if rows != nil {
				nr = len(rows)
			}
			if cols != nil {
				nc = len(cols)
			}
			n += int64(nr) * int64(perRow(nc, o))
		}
	}
	return n
}

// perRow is how many weights of a row of n the mask zeroes.
func perRow(n int, o Options) int {
	if o.M > 0 {
		return n / o.M * (o.M - o.N)
	}
	return int(math.Floor(float64(n) * o.Sparsity))
}

func tensorOf(l *model.Layer, kind string) *model.Tensor {
	return map[string]*model.Tensor{
		"attn_q": l.Wq, "attn_k": l.Wk, "attn_v": l.Wv, "attn_output": l.Wo,
		"ffn_gate": l.Gate, "ffn_up": l.Up, "ffn_down": l.Down,
	}[kind]
}
