package quant

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/octet-dev/octet/model/gguf"
)

// Scheme is how a matrix's rows are turned into bytes.
type Scheme int

const (
	// Block is ggml's Q8_0 (or a plain type): Q8_0 gives each block of 32
	// weights its own scale, the block's largest magnitude over 127.
	Block Scheme = iota
	// Channel is per-output-channel int8 stored as Q8_0: every block of a
	// row carries the same scale, the row's largest magnitude over 127.
	Channel
)

// EncodeRow appends row encoded as typ under scheme s to dst.
func EncodeRow(dst []byte, typ gguf.TensorType, s Scheme, row []float32) []byte {
	if typ != gguf.Q8_0 || s == Block {
		return gguf.Quantize(typ, dst, row)
	}
	var amax float32
	for _, v := range row {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	// Quantize against the scale as stored (fp16), so that the stored
	// scale times the stored integer is the nearest value.
	d16 := gguf.F32ToF16(amax / 127)
	d := gguf.F16ToF32(d16)
	var id float32
	if d != 0 {
		id = 1 / d
	}
	for b := 0; b < len(row)/gguf.QK8_0; b++ {
		dst = binary.LittleEndian.AppendUint16(dst, d16)
		for _, v := range row[b*gguf.QK8_0 : (b+1)*gguf.QK8_0] {
			q := math.Round(float64(v * id))
			dst = append(dst, byte(int8(max(-127, min(127, q)))))
		}
	}
	return dst
}

// RowSource produces row r of a matrix into dst (Cols elements).
type RowSource func(r int, dst []float32) error

// AddMatrix adds a tensor of rows × cols elements (ggml order: dims
// [cols, rows], or [cols] for a vector when rows is 0) to w; its rows come
// from src when the file is written, encoded as typ under scheme s.
// progress, if set, is called with the bytes written.
func AddMatrix(w *gguf.Writer, name string, typ gguf.TensorType, s Scheme, cols, rows int, src RowSource, progress func(int64)) error {
	if cols%typ.BlockSize() != 0 {
		return fmt.Errorf("quant: %s: row of %d is not a multiple of the %s block of %d", name, cols, typ, typ.BlockSize())
	}
	dims := []uint64{uint64(cols)}
	n := rows
	if rows > 0 {
		dims = append(dims, uint64(rows))
	} else {
		n = 1
	}
	return w.AddTensorFunc(name, typ, dims, func(out io.Writer) error {
		row := make([]float32, cols)
		var buf []byte
		for r := 0; r < n; r++ {
			if err := src(r, row); err != nil {
				return err
			}
			buf = EncodeRow(buf[:0], typ, s, row)
			if _, err := out.Write(buf); err != nil {
				return err
			}
			if progress != nil {
				progress(int64(len(buf)))
			}
		}
		return nil
	})
}
