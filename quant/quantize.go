package quant

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// Types octet quantize writes.
const (
	TypeQ8_0        = "q8_0"
	TypeInt8Channel = "int8-channel"
)

// Options describe one quantization.
type Options struct {
	Type string // TypeQ8_0 (default) or TypeInt8Channel
	// PadFFN widens a feed-forward layer whose width is not a multiple of
	// 32 with zero neurons, so that ffn_down's rows take Q8_0; otherwise
	// such matrices stay F16.
	PadFFN bool
	// Smooth is SmoothQuant's migration strength α (0: no smoothing); it
	// needs Stats.
	Smooth float64
	Stats  *Stats
	// Provenance recorded under octet.quant.*: the calibration text's name.
	CalibName string
	Progress  func(done, total int64)
}

// Info says what Build did.
type Info struct {
	Quantized int      // matrices now int8
	Kept      []string // matrices left in a wider type, with the reason
	FFNFrom   []int    // feed-forward widths before padding (nil: none padded)
	FFNTo     []int
}

var matrixName = regexp.MustCompile(`^(token_embd|output)\.weight$|^blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$`)

// Validate checks the type and the smoothing strength before any work.
func (o Options) Validate() error {
	switch o.Type {
	case "", TypeQ8_0, TypeInt8Channel:
	default:
		return fmt.Errorf("quant: unknown type %q (q8_0 or int8-channel)", o.Type)
	}
	if o.Smooth < 0 || o.Smooth > 1 || math.IsNaN(o.Smooth) {
		return fmt.Errorf("quant: smoothing strength %g must be within [0, 1]", o.Smooth)
	}
	return nil
}

// Build prepares a writer for the quantized form of m; tensors are encoded
// when the writer writes, reading m, which must stay open until then.
func Build(m *model.Model, o Options) (*gguf.Writer, Info, error) {
	var info Info
	if err := o.Validate(); err != nil {
		return nil, info, err
	}
	scheme := Block
	if o.Type == TypeInt8Channel {
		scheme = Channel
	} else {
		o.Type = TypeQ8_0
	}
	if o.Smooth > 0 && o.Stats == nil {
		return nil, info, fmt.Errorf("quant: smoothing needs calibration statistics")
	}
	c := &m.Config
	f := m.File

	// Feed-forward widths after padding.
	ffn := append([]int(nil), c.LayerFFN...)
	if o.PadFFN {
		for l, w := range ffn {
			if w%gguf.QK8_0 != 0 {
				ffn[l] = (w + gguf.QK8_0 - 1) / gguf.QK8_0 * gguf.QK8_0
			}
		}
		if !slices.Equal(ffn, c.LayerFFN) {
			info.FFNFrom, info.FFNTo = c.LayerFFN, ffn
		}
	}
	var smooth *smoothing
	if o.Smooth > 0 {
		smooth = newSmoothing(m, o.Stats, o.Smooth)
	}

	w := gguf.NewWriter()
	w.Alignment = f.Alignment
	for _, kv := range f.KV {
		w.Set(kv.Key, kv.Value)
	}
	w.Set("general.file_type", gguf.Uint32(7)) // LLAMA_FTYPE_MOSTLY_Q8_0
	w.Set("general.quantization_version", gguf.Uint32(2))
	if info.FFNFrom != nil {
		SetPerLayer(w, c.Arch+".feed_forward_length", ffn, f)
	}

	var total int64
	var done int64
	progress := func(n int64) {
		done += n
		if o.Progress != nil {
			o.Progress(done, total)
		}
	}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if len(t.Dims) > 2 {
			return nil, info, fmt.Errorf("quant: tensor %q has %d dimensions", t.Name, len(t.Dims))
		}
		cols, rows := int(t.Dims[0]), 0
		if len(t.Dims) == 2 {
			rows = int(t.Dims[1])
		}
		src := rowsOf(f, t)
		mt := matrixName.FindStringSubmatch(t.Name)
		if mt == nil || rows == 0 {
			// Norms, biases, rope factors: kept as they are (smoothing may
			// rescale a norm).
			if smooth != nil {
				src = smooth.norm(t.Name, src)
			}
			if err := AddMatrix(w, t.Name, t.Type, Block, cols, rows, src, progress); err != nil {
				return nil, info, err
			}
			total += int64(t.Size)
			continue
		}
		kind := mt[3]
		if smooth != nil {
			src = smooth.matrix(t.Name, src, cols)
		}
		if mt[2] != "" {
			l, _ := strconv.Atoi(mt[2])
			switch from, to := c.LayerFFN[l], ffn[l]; {
			case from == to:
			case kind == "ffn_gate" || kind == "ffn_up":
				src, rows = padRows(src, from, cols), to
			case kind == "ffn_down":
				src, cols = padCols(src, from), to
			}
		}
		typ := gguf.Q8_0
		if cols%gguf.QK8_0 != 0 {
			typ = gguf.F16
			info.Kept = append(info.Kept, fmt.Sprintf("%s F16 (rows of %d are not a multiple of 32)", t.Name, cols))
		} else {
			info.Quantized++
		}
		if t.Type == gguf.Q8_0 && typ == gguf.Q8_0 && scheme == Block && smooth == nil && cols == int(t.Dims[0]) && rows == int(t.Dims[1]) {
			// Already Q8_0: copy the blocks rather than round twice.
			if err := w.AddTensor(t.Name, t.Type, t.Dims, f.TensorData(t)); err != nil {
				return nil, info, err
			}
			total += int64(t.Size)
			continue
		}
		if err := AddMatrix(w, t.Name, typ, scheme, cols, rows, src, progress); err != nil {
			return nil, info, err
		}
		total += int64(typ.RowBytes(cols) * rows)
	}

	const p = "octet.quant."
	w.Set(p+"type", gguf.String(o.Type))
	if m.Path != "" {
		w.Set(p+"source", gguf.String(filepath.Base(m.Path)))
	}
	w.Set(p+"source_type", gguf.String(sourceType(m)))
	w.Set(p+"int8_matrices", gguf.Uint32(uint32(info.Quantized)))
	if len(info.Kept) > 0 {
		w.Set(p+"kept", gguf.Strings(info.Kept))
	}
	if info.FFNFrom != nil {
		w.Set(p+"ffn_padded", gguf.String(fmt.Sprintf("%s → %s with zero neurons", widths(info.FFNFrom), widths(info.FFNTo))))
	}
	if o.Smooth > 0 {
		w.Set(p+"smooth_alpha", gguf.Float32(float32(o.Smooth)))
		w.Set(p+"calib_tokens", gguf.Uint32(uint32(o.Stats.Tokens)))
		if o.CalibName != "" {
			w.Set(p+"calib_text", gguf.String(o.CalibName))
		}
	}
	return w, info, nil
}

// rowsOf reads rows of a tensor of the file, decoded to float32.
func rowsOf(f *gguf.File, t *gguf.TensorInfo) RowSource {
	data := f.TensorData(t)
	cols := int(t.Dims[0])
	rb := t.Type.RowBytes(cols)
	return func(r int, dst []float32) error {
		gguf.Dequantize(t.Type, data[r*rb:(r+1)*rb], dst[:cols])
		return nil
	}
}

// padRows yields src's first n rows, then zero rows.
func padRows(src RowSource, n, cols int) RowSource {
	return func(r int, dst []float32) error {
		if r < n {
			return src(r, dst)
		}
		clear(dst[:cols])
		return nil
	}
}

// padCols yields src's rows of n elements followed by zeros.
func padCols(src RowSource, n int) RowSource {
	return func(r int, dst []float32) error {
		clear(dst[n:])
		return src(r, dst[:n])
	}
}

func sourceType(m *model.Model) string {
	counts := map[gguf.TensorType]int{}
	for _, t := range m.Matrices() {
		counts[t.Type]++
	}
	var parts []string
	for _, t := range []gguf.TensorType{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0} {
		if counts[t] > 0 {
			parts = append(parts, t.String())
		}
	}
	return strings.Join(parts, "+")
}

// SetPerLayer sets a per-layer width key the way the source file had it:
// one number when all layers agree and the source had one, else an array.
func SetPerLayer(w *gguf.Writer, key string, v []int, f *gguf.File) {
	old, ok := f.Get(key)
	if allSame(v) && (!ok || old.Type != gguf.TypeArray) {
		w.Set(key, gguf.Uint32(uint32(v[0])))
		return
	}
	a := make([]int32, len(v))
	for i, x := range v {
		a[i] = int32(x)
	}
	w.Set(key, gguf.Int32s(a))
}

func allSame(v []int) bool {
	for _, x := range v {
		if x != v[0] {
			return false
		}
	}
	return true
}

func widths(v []int) string {
	if allSame(v) {
		return strconv.Itoa(v[0])
	}
	return fmt.Sprint(v)
}
