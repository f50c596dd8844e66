package pruning

import (
	"io"

	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/quant"
)

// transform produces one pruned tensor from its source: the kept rows and
// columns (nil: all), then the mask.
type transform struct {
	src        *gguf.TensorInfo
	data       []byte
	rows, cols []int
	mask       bool
	o          *Options
	norm       []float64 // Wanda's activation norms of the kept columns
	// refit (len(cols)×srcCols), when set, rebuilds the kept columns
	// from the whole row instead of copying them.
	refit []float64
}

// shape is the pruned tensor's columns and rows (0 rows: a vector).
func (t *transform) shape() (cols, rows int) {
	cols = int(t.src.Dims[0])
	if len(t.src.Dims) == 2 {
		rows = int(t.src.Dims[1])
	}
	if t.cols != nil {
		cols = len(t.cols)
	}
	if t.rows != nil {
		rows = len(t.rows)
	}
	return cols, rows
}

func (t *transform) dims(cols, rows int) []uint64 {
	if len(t.src.Dims) == 1 {
		return []uint64{uint64(cols)}
	}
	return []uint64{uint64(cols), uint64(rows)}
}

// add adds the pruned tensor to w, encoded as typ.
func (t *transform) add(w *gguf.Writer, typ gguf.TensorType, progress func(int64)) error {
	cols, rows := t.shape()
	srcCols := int(t.src.Dims[0])
	rb := t.src.Type.RowBytes(srcCols)
	if t.cols == nil && !t.mask && typ == t.src.Type {
		// Whole rows kept as they are: copy their bytes.
		return w.AddTensorFunc(t.src.Name, typ, t.dims(cols, rows), func(out io.Writer) error {
			for r := 0; r < max(rows, 1); r++ {
				sr := r
				if t.rows != nil {
					sr = t.rows[r]
				}
				if _, err := out.Write(t.data[sr*rb : (sr+1)*rb]); err != nil {
					return err
				}
				if progress != nil {
					progress(int64(rb))
				}
			}
			return nil
		})
	}
	full := make([]float32, srcCols)
	scores := make([]float64, cols)
	scratch := make([]float64, 0, cols)
	src := func(r int, dst []float32) error {
		sr := r
		if t.rows != nil {
			sr = t.rows[r]
		}
		gguf.Dequantize(t.src.Type, t.data[sr*rb:(sr+1)*rb], full)
		switch {
		case t.cols == nil:
			copy(dst, full)
		case t.refit != nil:
			for j := range t.cols {
				var s float64
				for c, v := range full {
					s += t.refit[j*srcCols+c] * float64(v)
				}
				dst[j] = float32(s)
			}
		default:
			for j, c := range t.cols {
				dst[j] = full[c]
			}
		}
		if !t.mask {
			return nil
		}
		rowScores(scores, dst[:cols], t.norm)
		if t.o.M > 0 {
			zeroNM(dst[:cols], scores, t.o.N, t.o.M)
		} else {
			zeroLowest(dst[:cols], scores, perRow(cols, *t.o), scratch)
		}
		return nil
	}
	if len(t.src.Dims) == 1 {
		rows = 0
	}
	return quant.AddMatrix(w, t.src.Name, typ, quant.Block, cols, rows, src, progress)
}
