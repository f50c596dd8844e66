package gguf

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
)

// Writer builds a GGUF v3 file: metadata in insertion order, then the tensor
// table, then the tensor data, each tensor aligned to Alignment.
type Writer struct {
	Alignment int

	kv      []KV
	kvIndex map[string]int
	tensors []wtensor
	names   map[string]bool
}

type wtensor struct {
	info TensorInfo
	fill func(io.Writer) error
}

// NewWriter returns an empty writer with the default alignment.
func NewWriter() *Writer {
	return &Writer{Alignment: DefaultAlignment, kvIndex: map[string]int{}, names: map[string]bool{}}
}

// Set adds key, or replaces its value in place if it is already set.
func (w *Writer) Set(key string, v Value) {
	if i, ok := w.kvIndex[key]; ok {
		w.kv[i].Value = v
		return
	}
	w.kvIndex[key] = len(w.kv)
	w.kv = append(w.kv, KV{Key: key, Value: v})
}

// Delete removes key if it is set.
func (w *Writer) Delete(key string) {
	i, ok := w.kvIndex[key]
	if !ok {
		return
	}
	w.kv = append(w.kv[:i], w.kv[i+1:]...)
	delete(w.kvIndex, key)
	for j := i; j < len(w.kv); j++ {
		w.kvIndex[w.kv[j].Key] = j
	}
}

// AddTensor adds a tensor whose bytes are already in memory.
func (w *Writer) AddTensor(name string, typ TensorType, dims []uint64, data []byte) error {
	return w.AddTensorFunc(name, typ, dims, func(out io.Writer) error {
		_, err := out.Write(data)
		return err
	})
}

// AddTensorFunc adds a tensor whose bytes fill writes when the file is
// written, so that large files need not be held in memory. fill must write
// exactly the tensor's size in bytes.
func (w *Writer) AddTensorFunc(name string, typ TensorType, dims []uint64, fill func(io.Writer) error) error {
	switch {
	case name == "" || len(name) > maxNameLen:
		return fmt.Errorf("gguf: tensor name %q must be 1 to %d bytes", name, maxNameLen)
	case w.names[name]:
		return fmt.Errorf("gguf: duplicate tensor %q", name)
	case !typ.Supported():
		return fmt.Errorf("gguf: tensor %q: type %s is not supported", name, typ)
	case len(dims) == 0 || len(dims) > maxDims:
		return fmt.Errorf("gguf: tensor %q: %d dimensions", name, len(dims))
	case dims[0]%uint64(typ.BlockSize()) != 0:
		return fmt.Errorf("gguf: tensor %q: row of %d is not a multiple of the %s block size %d", name, dims[0], typ, typ.BlockSize())
	}
	t := TensorInfo{Name: name, Type: typ, Dims: append([]uint64(nil), dims...)}
	t.Size = t.Elements() / uint64(typ.BlockSize()) * uint64(typ.BlockBytes())
	w.names[name] = true
	w.tensors = append(w.tensors, wtensor{info: t, fill: fill})
	return nil
}

// WriteTo writes the whole file to out.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	if w.Alignment != DefaultAlignment {
		w.Set("general.alignment", Uint32(uint32(w.Alignment)))
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	e := &encoder{w: bw}
	e.raw([]byte(Magic))
	e.u32(3)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.kv)))
	for _, kv := range w.kv {
		e.str(kv.Key)
		e.u32(uint32(kv.Value.Type))
		e.value(kv.Value)
	}
	var off uint64
	for i := range w.tensors {
		t := &w.tensors[i].info
		t.Offset = off
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(t.Offset)
		off = uint64(alignUp(int64(off+t.Size), int64(w.Alignment)))
	}
	e.pad(w.Alignment)
	for _, t := range w.tensors {
		if e.err != nil {
			break
		}
		start := e.n
		if err := t.fill(e); err != nil {
			return e.n, fmt.Errorf("gguf: tensor %q: %w", t.info.Name, err)
		}
		if got := uint64(e.n - start); got != t.info.Size {
			return e.n, fmt.Errorf("gguf: tensor %q: wrote %d bytes, want %d", t.info.Name, got, t.info.Size)
		}
		e.pad(w.Alignment)
	}
	if e.err == nil {
		e.err = bw.Flush()
	}
	return e.n, e.err
}

// WriteFile writes the file to path atomically: into a temporary file in the
// same folder, synced, then renamed into place, so that a watcher never sees
// a partial file.
func (w *Writer) WriteFile(path string) error { return w.WriteFileContext(context.Background(), path) }

// WriteFileContext is WriteFile stopped by the end of ctx (an interrupt):
// then nothing is left at path or beside it, and the error is ctx's.
func (w *Writer) WriteFileContext(ctx context.Context, path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, errors.Unwrap(err))
	}
	defer os.Remove(tmp.Name())
	if _, err := w.WriteTo(ContextWriter(ctx, tmp)); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("gguf: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	return nil
}

// ContextWriter is w, failing with ctx's error once ctx ends.
func ContextWriter(ctx context.Context, w io.Writer) io.Writer { return ctxWriter{ctx, w} }

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// encoder writes little-endian values and remembers the first error.
type encoder struct {
	w   io.Writer
	n   int64
	err error
	buf [8]byte
}

func (e *encoder) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.n += int64(n)
	e.err = err
	return n, err
}

func (e *encoder) raw(p []byte) { e.Write(p) }
func (e *encoder) u8(v uint8)   { e.raw([]byte{v}) }
func (e *encoder) u16(v uint16) { binary.LittleEndian.PutUint16(e.buf[:], v); e.raw(e.buf[:2]) }
func (e *encoder) u32(v uint32) { binary.LittleEndian.PutUint32(e.buf[:], v); e.raw(e.buf[:4]) }
func (e *encoder) u64(v uint64) { binary.LittleEndian.PutUint64(e.buf[:], v); e.raw(e.buf[:8]) }
func (e *encoder) str(s string) { e.u64(uint64(len(s))); e.raw([]byte(s)) }

func (e *encoder) pad(align int) {
	if r := int(e.n % int64(align)); r != 0 {
		e.raw(make([]byte, align-r))
	}
}

func (e *encoder) value(v Value) {
	if v.Type == TypeArray {
		e.u32(uint32(v.Elem))
		e.u64(uint64(v.Len()))
	}
	switch x := v.v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	case bool:
		if x {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case string:
		e.str(x)
	case []Value:
		for _, a := range x {
			e.value(a)
		}
	default:
		e.array(x)
	}
}

func (e *encoder) array(x any) {
	switch a := x.(type) {
	case []uint8:
		e.raw(a)
	case []int8:
		for _, n := range a {
			e.u8(uint8(n))
		}
	case []uint16:
		eachArr(a, e.u16)
	case []int16:
		eachArr(a, func(n int16) { e.u16(uint16(n)) })
	case []uint32:
		eachArr(a, e.u32)
	case []int32:
		eachArr(a, func(n int32) { e.u32(uint32(n)) })
	case []float32:
		eachArr(a, func(f float32) { e.u32(math.Float32bits(f)) })
	case []uint64:
		eachArr(a, e.u64)
	case []int64:
		eachArr(a, func(n int64) { e.u64(uint64(n)) })
	case []float64:
		eachArr(a, func(f float64) { e.u64(math.Float64bits(f)) })
	case []bool:
		for _, b := range a {
			if b {
				e.u8(1)
			} else {
				e.u8(0)
			}
		}
	case []string:
		eachArr(a, e.str)
	default:
		if e.err == nil {
			e.err = fmt.Errorf("gguf: cannot encode metadata value of Go type %T", x)
		}
	}
}

func eachArr[T any](a []T, f func(T)) {
	for _, v := range a {
		f(v)
	}
}
