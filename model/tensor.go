package model

import (
	"fmt"
	"slices"

	"github.com/octet-dev/octet/model/gguf"
)

// Tensor is a view of one weight tensor of a model file: a matrix of Rows
// rows of Cols elements (a vector has one row). Data aliases the file's
// memory map; nothing is copied.
type Tensor struct {
	Name string
	Type gguf.TensorType
	Rows int
	Cols int
	Data []byte
}

// RowBytes is the encoded size of one row.
func (t *Tensor) RowBytes() int { return t.Type.RowBytes(t.Cols) }

// Row returns the encoded bytes of row i.
func (t *Tensor) Row(i int) []byte {
	n := t.RowBytes()
	return t.Data[i*n : (i+1)*n]
}

// DequantizeRow decodes row i into dst, which must hold Cols elements.
func (t *Tensor) DequantizeRow(i int, dst []float32) {
	gguf.Dequantize(t.Type, t.Row(i), dst[:t.Cols])
}

// Float32s decodes the whole tensor.
func (t *Tensor) Float32s() []float32 {
	out := make([]float32, t.Rows*t.Cols)
	gguf.Dequantize(t.Type, t.Data, out)
	return out
}

// Bytes is the tensor's size in the file.
func (t *Tensor) Bytes() int { return len(t.Data) }

// tensorView looks up name and checks it has the expected shape
// (cols × rows, ggml order); rows 0 means a vector.
func tensorView(f *gguf.File, name string, cols, rows int) (*Tensor, error) {
	ti, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("model: tensor %q is missing", name)
	}
	want := []uint64{uint64(cols)}
	if rows > 0 {
		want = append(want, uint64(rows))
	}
	if !sameShape(ti.Dims, want) {
		return nil, fmt.Errorf("model: tensor %q has shape %v, want %v", name, ti.Dims, want)
	}
	t := &Tensor{Name: name, Type: ti.Type, Rows: max(rows, 1), Cols: cols, Data: f.TensorData(ti)}
	return t, nil
}

// sameShape compares shapes, ignoring trailing dimensions of 1.
func sameShape(a, b []uint64) bool {
	trim := func(s []uint64) []uint64 {
		for len(s) > 1 && s[len(s)-1] == 1 {
			s = s[:len(s)-1]
		}
		return s
	}
	return slices.Equal(trim(a), trim(b))
}
