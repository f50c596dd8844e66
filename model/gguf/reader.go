package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"sort"
	"syscall"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the tensor data alignment when general.alignment is absent.
const DefaultAlignment = 32

// Limits that keep a hostile header from asking for absurd work or memory.
const (
	maxDims       = 4       // ggml tensors have at most four dimensions
	maxNameLen    = 63      // ggml's GGML_MAX_NAME less its terminator
	maxAlignment  = 1 << 20 // general.alignment above this is refused
	maxArrayDepth = 8       // arrays of arrays deeper than this are refused
	maxElements   = 1 << 50 // elements of one tensor
)

// FormatError reports a malformed file. Its message names the file (when
// known), the problem and the byte offset where it was found.
type FormatError struct {
	Path   string
	Offset int64
	Msg    string
	// Short says the file ends too soon: it may be the beginning of a
	// whole file still being written.
	Short bool
}

func (e *FormatError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("gguf: %s: %s (at byte %d)", e.Path, e.Msg, e.Offset)
	}
	return fmt.Sprintf("gguf: %s (at byte %d)", e.Msg, e.Offset)
}

// TensorInfo describes one tensor of the file.
type TensorInfo struct {
	Name string
	Type TensorType
	// Dims are ggml's ne: Dims[0] is the innermost (contiguous) dimension,
	// the length of one row.
	Dims []uint64
	// Offset is relative to the start of the data section.
	Offset uint64
	// Size is the tensor's length in bytes.
	Size uint64
}

// Elements is the number of elements of the tensor.
func (t *TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF file. Its tensor data is a view of the file's bytes
// (memory-mapped by Open): slices returned by TensorData stay valid until Close.
type File struct {
	Path       string
	Version    uint32
	KV         []KV
	Tensors    []TensorInfo
	Alignment  int
	DataOffset int64 // start of the tensor data section
	Size       int64 // file size in bytes

	kvIndex     map[string]int
	tensorIndex map[string]int
	data        []byte
	mapped      bool
}

// Open memory-maps the file at path and parses its header, metadata and
// tensor table, checking every tensor against the file before returning.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, &FormatError{Path: path, Msg: "not a regular file"}
	}
	size := st.Size()
	if size == 0 {
		return nil, &FormatError{Path: path, Msg: "empty file"}
	}
	if size != int64(int(size)) {
		return nil, &FormatError{Path: path, Msg: "file too large to map"}
	}
	data, err := syscall.Mmap(int(fd.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("gguf: %s: mmap: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		syscall.Munmap(data)
		var fe *FormatError
		if errors.As(err, &fe) {
			fe.Path = path
		}
		return nil, err
	}
	f.Path = path
	f.mapped = true
	return f, nil
}

// Close releases the file's mapping. Tensor data must not be used afterwards.
func (f *File) Close() error {
	if f.data == nil {
		return nil
	}
	data := f.data
	f.data = nil
	if f.mapped {
		return syscall.Munmap(data)
	}
	return nil
}

// Parse reads a whole GGUF file held in data. The File keeps data for its
// tensor views; data must not change while the File is in use.
func Parse(data []byte) (*File, error) {
	r := &reader{buf: data}
	f := &File{Size: int64(len(data)), data: data, Alignment: DefaultAlignment}
	if err := f.parseHeader(r); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) parseHeader(r *reader) error {
	magic, err := r.bytes(4, "magic")
	if err != nil {
		return err
	}
	if string(magic) != Magic {
		return r.fail(0, fmt.Sprintf("bad magic %q: not a GGUF file", magic))
	}
	f.Version, err = r.u32("version")
	if err != nil {
		return err
	}
	switch {
	case f.Version == 2 || f.Version == 3:
	case bits.ReverseBytes32(f.Version) == 2 || bits.ReverseBytes32(f.Version) == 3:
		return r.fail(4, "big-endian GGUF is not supported")
	default:
		return r.fail(4, fmt.Sprintf("GGUF version %d is not supported (need 2 or 3)", f.Version))
	}
	nTensors, err := r.u64("tensor count")
	if err != nil {
		return err
	}
	nKV, err := r.u64("metadata count")
	if err != nil {
		return err
	}
	// The smallest key/value is 13 bytes and the smallest tensor entry 24:
	// counts beyond what the file can hold are refused before allocating.
	if nKV > uint64(r.remaining())/13 {
		return r.short(16, fmt.Sprintf("metadata count %d does not fit in the file", nKV))
	}
	if nTensors > uint64(r.remaining())/24 {
		return r.short(8, fmt.Sprintf("tensor count %d does not fit in the file", nTensors))
	}

	f.KV = make([]KV, 0, nKV)
	f.kvIndex = make(map[string]int, nKV)
	for i := uint64(0); i < nKV; i++ {
		at := r.pos
		key, err := r.str("metadata key")
		if err != nil {
			return err
		}
		if key == "" {
			return r.fail(at, "empty metadata key")
		}
		if _, dup := f.kvIndex[key]; dup {
			return r.fail(at, fmt.Sprintf("duplicate metadata key %q", key))
		}
		t, err := r.u32("value type of " + key)
		if err != nil {
			return err
		}
		v, err := r.value(ValueType(t), key, 0)
		if err != nil {
			return err
		}
		f.kvIndex[key] = len(f.KV)
		f.KV = append(f.KV, KV{Key: key, Value: v})
	}
	if v, ok := f.Get("general.alignment"); ok {
		a, isU32 := v.Any().(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 || a > maxAlignment {
			return r.fail(r.pos, fmt.Sprintf("general.alignment %v must be a uint32 power of two up to %d", v, maxAlignment))
		}
		f.Alignment = int(a)
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	f.tensorIndex = make(map[string]int, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		t, err := f.parseTensorInfo(r)
		if err != nil {
			return err
		}
		f.tensorIndex[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}
	f.DataOffset = alignUp(int64(r.pos), int64(f.Alignment))
	return f.checkTensorData()
}

func (f *File) parseTensorInfo(r *reader) (TensorInfo, error) {
	var t TensorInfo
	at := r.pos
	name, err := r.str("tensor name")
	if err != nil {
		return t, err
	}
	switch {
	case name == "":
		return t, r.fail(at, "empty tensor name")
	case len(name) > maxNameLen:
		return t, r.fail(at, fmt.Sprintf("tensor name %.20q… is %d bytes, longer than %d", name, len(name), maxNameLen))
	}
	if _, dup := f.tensorIndex[name]; dup {
		return t, r.fail(at, fmt.Sprintf("duplicate tensor %q", name))
	}
	t.Name = name
	what := fmt.Sprintf("tensor %q", name)
	nDims, err := r.u32(what + " dimension count")
	if err != nil {
		return t, err
	}
	if nDims == 0 || nDims > maxDims {
		return t, r.fail(r.pos-4, fmt.Sprintf("%s: %d dimensions (must be 1 to %d)", what, nDims, maxDims))
	}
	t.Dims = make([]uint64, nDims)
	elems := uint64(1)
	for d := range t.Dims {
		n, err := r.u64(what + " shape")
		if err != nil {
			return t, err
		}
		if n == 0 || n > maxElements {
			return t, r.fail(r.pos-8, fmt.Sprintf("%s: absurd dimension %d", what, n))
		}
		hi, lo := bits.Mul64(elems, n)
		if hi != 0 || lo > maxElements {
			return t, r.fail(r.pos-8, fmt.Sprintf("%s: shape %v overflows", what, t.Dims[:d+1]))
		}
		elems = lo
		t.Dims[d] = n
	}
	typ, err := r.u32(what + " type")
	if err != nil {
		return t, err
	}
	t.Type = TensorType(typ)
	if !t.Type.Supported() {
		if _, known := ggmlTypeNames[t.Type]; known {
			return t, r.fail(r.pos-4, fmt.Sprintf("%s: tensor type %s is not supported (octet reads F32, F16, BF16 and Q8_0)", what, t.Type))
		}
		return t, r.fail(r.pos-4, fmt.Sprintf("%s: unknown tensor type %d", what, typ))
	}
	if bs := uint64(t.Type.BlockSize()); t.Dims[0]%bs != 0 {
		return t, r.fail(r.pos-4, fmt.Sprintf("%s: row of %d elements is not a multiple of the %s block size %d", what, t.Dims[0], t.Type, bs))
	}
	t.Size = elems / uint64(t.Type.BlockSize()) * uint64(t.Type.BlockBytes())
	t.Offset, err = r.u64(what + " offset")
	if err != nil {
		return t, err
	}
	if t.Offset%uint64(f.Alignment) != 0 {
		return t, r.fail(r.pos-8, fmt.Sprintf("%s: offset %d is not aligned to %d", what, t.Offset, f.Alignment))
	}
	return t, nil
}

// checkTensorData verifies that every tensor lies inside the data section
// and that no two tensors overlap.
func (f *File) checkTensorData() error {
	if len(f.Tensors) == 0 {
		return nil
	}
	if f.DataOffset > f.Size {
		return &FormatError{Offset: f.Size, Msg: fmt.Sprintf("file ends at byte %d, before its tensor data starts at %d", f.Size, f.DataOffset), Short: true}
	}
	dataLen := uint64(f.Size - f.DataOffset)
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	var end uint64
	var prev string
	for _, i := range order {
		t := &f.Tensors[i]
		if t.Offset > dataLen || t.Size > dataLen-t.Offset {
			return &FormatError{Offset: f.DataOffset, Msg: fmt.Sprintf("tensor %q: %d bytes at offset %d run past the end of the file (data section is %d bytes)", t.Name, t.Size, t.Offset, dataLen), Short: true}
		}
		if t.Offset < end {
			return &FormatError{Offset: f.DataOffset, Msg: fmt.Sprintf("tensor %q at offset %d overlaps tensor %q", t.Name, t.Offset, prev)}
		}
		end, prev = t.Offset+t.Size, t.Name
	}
	return nil
}

// Get returns the metadata value of key.
func (f *File) Get(key string) (Value, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return Value{}, false
	}
	return f.KV[i].Value, true
}

// String returns the string value of key.
func (f *File) String(key string) (string, bool) {
	v, ok := f.Get(key)
	if !ok {
		return "", false
	}
	return v.Str()
}

// Uint returns the non-negative integer value of key.
func (f *File) Uint(key string) (uint64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	return v.Uint()
}

// Float returns the numeric value of key.
func (f *File) Float(key string) (float64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	return v.Float()
}

// Bool returns the bool value of key.
func (f *File) Bool(key string) (bool, bool) {
	v, ok := f.Get(key)
	if !ok {
		return false, false
	}
	return v.Bool()
}

// Tensor returns the tensor called name.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns the bytes of t, a view of the file (no copy).
func (f *File) TensorData(t *TensorInfo) []byte {
	start := uint64(f.DataOffset) + t.Offset
	return f.data[start : start+t.Size : start+t.Size]
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// reader decodes little-endian values with bounds checks; every failure is
// a FormatError naming what was being read.
type reader struct {
	buf []byte
	pos int
}

func (r *reader) remaining() int { return len(r.buf) - r.pos }

func (r *reader) fail(at int, msg string) error {
	return &FormatError{Offset: int64(at), Msg: msg}
}

// short is fail for a file that ends too soon (FormatError.Short).
func (r *reader) short(at int, msg string) error {
	return &FormatError{Offset: int64(at), Msg: msg, Short: true}
}

func (r *reader) bytes(n uint64, what string) ([]byte, error) {
	if n > uint64(r.remaining()) {
		return nil, r.short(r.pos, fmt.Sprintf("truncated: %s needs %d bytes, %d left", what, n, r.remaining()))
	}
	b := r.buf[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b, nil
}

func (r *reader) u32(what string) (uint32, error) {
	b, err := r.bytes(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64(what string) (uint64, error) {
	b, err := r.bytes(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *reader) str(what string) (string, error) {
	at := r.pos
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(r.remaining()) {
		return "", r.short(at, fmt.Sprintf("%s length %d exceeds the %d bytes left in the file", what, n, r.remaining()))
	}
	b, _ := r.bytes(n, what)
	return string(b), nil
}

func (r *reader) value(t ValueType, key string, depth int) (Value, error) {
	if t == TypeArray {
		return r.array(key, depth)
	}
	if t == TypeString {
		s, err := r.str("value of " + key)
		return String(s), err
	}
	size := t.size()
	if size < 0 {
		return Value{}, r.fail(r.pos-4, fmt.Sprintf("metadata %q: unknown value type %d", key, uint32(t)))
	}
	b, err := r.bytes(uint64(size), "value of "+key)
	if err != nil {
		return Value{}, err
	}
	v, err := scalar(t, b)
	if err != nil {
		return Value{}, r.fail(r.pos-size, fmt.Sprintf("metadata %q: %v", key, err))
	}
	return v, nil
}

func scalar(t ValueType, b []byte) (Value, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return Uint8(b[0]), nil
	case TypeInt8:
		return Int8(int8(b[0])), nil
	case TypeUint16:
		return Uint16(le.Uint16(b)), nil
	case TypeInt16:
		return Int16(int16(le.Uint16(b))), nil
	case TypeUint32:
		return Uint32(le.Uint32(b)), nil
	case TypeInt32:
		return Int32(int32(le.Uint32(b))), nil
	case TypeFloat32:
		return Float32(math.Float32frombits(le.Uint32(b))), nil
	case TypeUint64:
		return Uint64(le.Uint64(b)), nil
	case TypeInt64:
		return Int64(int64(le.Uint64(b))), nil
	case TypeFloat64:
		return Float64(math.Float64frombits(le.Uint64(b))), nil
	case TypeBool:
		if b[0] > 1 {
			return Value{}, fmt.Errorf("bool byte %d", b[0])
		}
		return Bool(b[0] == 1), nil
	}
	return Value{}, fmt.Errorf("not a scalar type %s", t)
}

func (r *reader) array(key string, depth int) (Value, error) {
	at := r.pos
	if depth >= maxArrayDepth {
		return Value{}, r.fail(at, fmt.Sprintf("metadata %q: arrays nested deeper than %d", key, maxArrayDepth))
	}
	et, err := r.u32("array type of " + key)
	if err != nil {
		return Value{}, err
	}
	elem := ValueType(et)
	n, err := r.u64("array length of " + key)
	if err != nil {
		return Value{}, err
	}
	min := elem.size()
	switch {
	case min < 0:
		return Value{}, r.fail(at, fmt.Sprintf("metadata %q: unknown array element type %d", key, et))
	case elem == TypeString:
		min = 8
	case elem == TypeArray:
		min = 12
	}
	if n > uint64(r.remaining())/uint64(min) {
		return Value{}, r.short(at, fmt.Sprintf("metadata %q: array of %d %s does not fit in the %d bytes left", key, n, elem, r.remaining()))
	}
	switch elem {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			if out[i], err = r.str("element of " + key); err != nil {
				return Value{}, err
			}
		}
		return Strings(out), nil
	case TypeArray:
		out := make([]Value, n)
		for i := range out {
			if out[i], err = r.array(key, depth+1); err != nil {
				return Value{}, err
			}
		}
		return Arrays(TypeArray, out), nil
	}
	b, _ := r.bytes(n*uint64(min), "array of "+key)
	v, err := scalarArray(elem, int(n), b)
	if err != nil {
		return Value{}, r.fail(at, fmt.Sprintf("metadata %q: %v", key, err))
	}
	return v, nil
}

func scalarArray(t ValueType, n int, b []byte) (Value, error) {
	le := binary.LittleEndian
	v := Value{Type: TypeArray, Elem: t}
	switch t {
	case TypeUint8:
		v.v = append([]uint8(nil), b...)
	case TypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(b[i])
		}
		v.v = out
	case TypeUint16:
		v.v = decode(n, 2, b, le.Uint16)
	case TypeInt16:
		v.v = decode(n, 2, b, func(p []byte) int16 { return int16(le.Uint16(p)) })
	case TypeUint32:
		v.v = decode(n, 4, b, le.Uint32)
	case TypeInt32:
		v.v = decode(n, 4, b, func(p []byte) int32 { return int32(le.Uint32(p)) })
	case TypeFloat32:
		v.v = decode(n, 4, b, func(p []byte) float32 { return math.Float32frombits(le.Uint32(p)) })
	case TypeUint64:
		v.v = decode(n, 8, b, le.Uint64)
	case TypeInt64:
		v.v = decode(n, 8, b, func(p []byte) int64 { return int64(le.Uint64(p)) })
	case TypeFloat64:
		v.v = decode(n, 8, b, func(p []byte) float64 { return math.Float64frombits(le.Uint64(p)) })
	case TypeBool:
		out := make([]bool, n)
		for i := range out {
			if b[i] > 1 {
				return Value{}, fmt.Errorf("bool byte %d", b[i])
			}
			out[i] = b[i] == 1
		}
		v.v = out
	}
	return v, nil
}

func decode[T any](n, size int, b []byte, get func([]byte) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = get(b[i*size:])
	}
	return out
}
