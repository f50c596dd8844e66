package gguf

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/bad from the generators in this file")

// sampleWriter builds a small valid file with every metadata type and three
// tensors of different types.
func sampleWriter(t testing.TB) *Writer {
	w := NewWriter()
	w.Set("general.architecture", String("llama"))
	w.Set("u8", Uint8(200))
	w.Set("i8", Int8(-5))
	w.Set("u16", Uint16(60000))
	w.Set("i16", Int16(-30000))
	w.Set("u32", Uint32(4000000000))
	w.Set("i32", Int32(-2000000000))
	w.Set("u64", Uint64(1<<60))
	w.Set("i64", Int64(-1<<60))
	w.Set("f32", Float32(1.5))
	w.Set("f64", Float64(-2.25))
	w.Set("bool", Bool(true))
	w.Set("str", String("héllo ▁world"))
	w.Set("strs", Strings([]string{"a", "", "ccc"}))
	w.Set("f32s", Float32s([]float32{1, -2, 3.5}))
	w.Set("i32s", Int32s([]int32{1, -2, 3}))
	w.Set("u8s", Uint8s([]uint8{1, 2, 255}))
	w.Set("nested", Arrays(TypeArray, []Value{Int32s([]int32{1, 2}), Int32s([]int32{3})}))
	f32 := make([]float32, 8)
	for i := range f32 {
		f32[i] = float32(i) - 3.5
	}
	q := make([]float32, 64)
	for i := range q {
		q[i] = float32(math.Sin(float64(i)))
	}
	must(t, w.AddTensor("a.weight", F32, []uint64{8}, Quantize(F32, nil, f32)))
	must(t, w.AddTensor("b.weight", Q8_0, []uint64{32, 2}, Quantize(Q8_0, nil, q)))
	must(t, w.AddTensor("c.weight", F16, []uint64{4, 3}, Quantize(F16, nil, q[:12])))
	return w
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeBytes(t testing.TB, w *Writer) []byte {
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	w := sampleWriter(t)
	data := writeBytes(t, w)
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 || len(f.Tensors) != 3 || len(f.KV) != len(w.kv) {
		t.Fatalf("version %d, %d tensors, %d kv", f.Version, len(f.Tensors), len(f.KV))
	}
	for i, kv := range w.kv {
		got := f.KV[i]
		if got.Key != kv.Key || !reflect.DeepEqual(got.Value, kv.Value) {
			t.Errorf("kv %d: got %s=%#v, want %s=%#v", i, got.Key, got.Value, kv.Key, kv.Value)
		}
	}
	if s, _ := f.String("str"); s != "héllo ▁world" {
		t.Errorf("str = %q", s)
	}
	if n, _ := f.Uint("u64"); n != 1<<60 {
		t.Errorf("u64 = %d", n)
	}
	if x, _ := f.Float("f64"); x != -2.25 {
		t.Errorf("f64 = %g", x)
	}
	for _, tt := range f.Tensors {
		if tt.Offset%uint64(f.Alignment) != 0 {
			t.Errorf("%s offset %d unaligned", tt.Name, tt.Offset)
		}
	}
	b, _ := f.Tensor("b.weight")
	got := make([]float32, 64)
	Dequantize(Q8_0, f.TensorData(b), got)
	for i, v := range got {
		if d := math.Abs(float64(v) - math.Sin(float64(i))); d > 1.0/127 {
			t.Fatalf("q8_0 element %d: %g vs %g", i, v, math.Sin(float64(i)))
		}
	}
	// Writing what was read gives the same bytes.
	w2 := NewWriter()
	for _, kv := range f.KV {
		w2.Set(kv.Key, kv.Value)
	}
	for i := range f.Tensors {
		tt := &f.Tensors[i]
		must(t, w2.AddTensor(tt.Name, tt.Type, tt.Dims, f.TensorData(tt)))
	}
	if !bytes.Equal(writeBytes(t, w2), data) {
		t.Error("rewriting a parsed file changed its bytes")
	}
}

func TestOpenMapsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	must(t, sampleWriter(t).WriteFile(path))
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := f.Tensor("a.weight")
	got := make([]float32, 8)
	Dequantize(F32, f.TensorData(a), got)
	if got[0] != -3.5 || got[7] != 3.5 {
		t.Errorf("a.weight = %v", got)
	}
	must(t, f.Close())
	must(t, f.Close()) // idempotent
}

func TestAlignment(t *testing.T) {
	w := sampleWriter(t)
	w.Alignment = 64
	f, err := Parse(writeBytes(t, w))
	if err != nil {
		t.Fatal(err)
	}
	if f.Alignment != 64 || f.DataOffset%64 != 0 {
		t.Fatalf("alignment %d, data offset %d", f.Alignment, f.DataOffset)
	}
	for _, tt := range f.Tensors {
		if tt.Offset%64 != 0 {
			t.Errorf("%s at %d", tt.Name, tt.Offset)
		}
	}
}

func TestF16Conversions(t *testing.T) {
	for _, f := range []float32{0, 1, -1, 0.5, 65504, -65504, 6.1035156e-05, 5.9604645e-08, 1e-3, 3.14159} {
		h := F32ToF16(f)
		back := F16ToF32(h)
		if rel := math.Abs(float64(back-f)) / math.Max(math.Abs(float64(f)), 6e-8); rel > 1e-3 {
			t.Errorf("f16 %g -> %#04x -> %g", f, h, back)
		}
	}
	// Every half value survives a round trip through float32.
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		if f != f {
			continue
		}
		if got := F32ToF16(f); got != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, got)
		}
	}
	if F32ToF16(1e6) != 0x7c00 || F32ToF16(float32(math.Inf(-1))) != 0xfc00 {
		t.Error("overflow does not give infinity")
	}
	if BF16ToF32(F32ToBF16(1.5)) != 1.5 {
		t.Error("bf16 round trip")
	}
}

func TestWriterRejects(t *testing.T) {
	w := NewWriter()
	cases := []struct {
		name string
		typ  TensorType
		dims []uint64
	}{
		{"", F32, []uint64{1}},
		{strings.Repeat("x", 64), F32, []uint64{1}},
		{"q", Q8_0, []uint64{33}},
		{"k", TensorType(12), []uint64{256}},
		{"d", F32, []uint64{1, 1, 1, 1, 1}},
	}
	for _, c := range cases {
		if err := w.AddTensor(c.name, c.typ, c.dims, nil); err == nil {
			t.Errorf("AddTensor(%q, %s, %v) succeeded", c.name, c.typ, c.dims)
		}
	}
	must(t, w.AddTensor("x", F32, []uint64{2}, make([]byte, 8)))
	if err := w.AddTensor("x", F32, []uint64{2}, make([]byte, 8)); err == nil {
		t.Error("duplicate tensor accepted")
	}
	short := NewWriter()
	must(t, short.AddTensor("x", F32, []uint64{2}, make([]byte, 4)))
	if _, err := short.WriteTo(&bytes.Buffer{}); err == nil {
		t.Error("short tensor data accepted")
	}
}

// TestWriteFileContext: a write whose context ends leaves nothing, neither
// the file nor its temporary.
func TestWriteFileContext(t *testing.T) {
	w := NewWriter()
	must(t, w.AddTensor("x", F32, []uint64{2}, make([]byte, 8)))
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.WriteFileContext(ctx, filepath.Join(dir, "m.gguf")); !errors.Is(err, context.Canceled) {
		t.Errorf("WriteFileContext after the end: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
	must(t, w.WriteFileContext(context.Background(), filepath.Join(dir, "m.gguf")))
	if _, err := os.Stat(filepath.Join(dir, "m.gguf")); err != nil {
		t.Error(err)
	}
}

// raw assembles GGUF bytes by hand, for files the Writer would refuse to make.
type raw struct{ bytes.Buffer }

func (r *raw) u32(v uint32) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) u64(v uint64) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.WriteString(s); return r }

// header starts a v3 file with the given counts.
func header(tensors, kvs uint64) *raw {
	r := &raw{}
	r.WriteString("GGUF")
	return r.u32(3).u64(tensors).u64(kvs)
}

// tensor appends one tensor entry.
func (r *raw) tensor(name string, typ uint32, off uint64, dims ...uint64) *raw {
	r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r.u64(d)
	}
	return r.u32(typ).u64(off)
}

// pad aligns to 32 and appends n bytes of tensor data.
func (r *raw) data(n int) *raw {
	for r.Len()%32 != 0 {
		r.WriteByte(0)
	}
	r.Write(make([]byte, n))
	return r
}

// badCorpus generates the broken files of testdata/bad, each with a
// substring its error must contain.
func badCorpus(t testing.TB) map[string]struct {
	data []byte
	want string
} {
	good := writeBytes(t, sampleWriter(t))
	f, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]struct {
		data []byte
		want string
	}{}
	add := func(name string, data []byte, want string) {
		out[name] = struct {
			data []byte
			want string
		}{data, want}
	}
	// Truncated inside every section of a valid file.
	kvEnd := 24
	for _, kv := range f.KV {
		kvEnd += 8 + len(kv.Key) + 4
		if kv.Key == "str" {
			add("truncated-in-metadata-value.gguf", good[:kvEnd+3], "truncated")
		}
		kvEnd += encodedLen(kv.Value)
	}
	add("empty.gguf", nil, "empty file")
	add("truncated-magic.gguf", good[:3], "truncated")
	add("truncated-version.gguf", good[:6], "truncated")
	add("truncated-counts.gguf", good[:20], "truncated")
	add("truncated-metadata-key.gguf", good[:24+8+5], "truncated")
	add("truncated-tensor-table.gguf", good[:kvEnd+10], "truncated")
	add("truncated-before-data.gguf", good[:f.DataOffset-4], "before its tensor data")
	add("truncated-in-data.gguf", good[:len(good)-20], "past the end of the file")

	bad := slices.Clone(good)
	copy(bad, "GGML")
	add("wrong-magic.gguf", bad, "bad magic")
	for _, v := range []uint32{1, 4} {
		bad = slices.Clone(good)
		binary.LittleEndian.PutUint32(bad[4:], v)
		add("wrong-version-"+string(rune('0'+v))+".gguf", bad, "version")
	}
	bad = slices.Clone(good)
	binary.BigEndian.PutUint32(bad[4:], 3)
	add("big-endian.gguf", bad, "big-endian")

	add("tensor-past-eof.gguf", header(1, 0).tensor("w", 0, 0, 64).data(16).Bytes(), "past the end")
	add("offset-past-eof.gguf", header(1, 0).tensor("w", 0, 1<<40, 4).data(16).Bytes(), "past the end")
	add("overflowing-shape.gguf", header(1, 0).tensor("w", 0, 0, 1<<40, 1<<40).data(16).Bytes(), "overflows")
	add("absurd-dimension.gguf", header(1, 0).tensor("w", 0, 0, 1<<62).data(16).Bytes(), "absurd dimension")
	add("zero-dimension.gguf", header(1, 0).tensor("w", 0, 0, 4, 0).data(16).Bytes(), "absurd dimension")
	add("too-many-dims.gguf", header(1, 0).tensor("w", 0, 0, 1, 1, 1, 1, 1).data(16).Bytes(), "dimensions")
	add("unknown-type.gguf", header(1, 0).tensor("w", 99, 0, 4).data(16).Bytes(), "unknown tensor type 99")
	add("unsupported-type-q4_k.gguf", header(1, 0).tensor("w", 12, 0, 256).data(144).Bytes(), "Q4_K is not supported")
	add("q8_0-partial-block.gguf", header(1, 0).tensor("w", 8, 0, 48).data(64).Bytes(), "not a multiple")
	add("unaligned-offset.gguf", header(1, 0).tensor("w", 0, 4, 4).data(32).Bytes(), "not aligned")
	add("overlapping-tensors.gguf", header(2, 0).tensor("a", 0, 0, 16).tensor("b", 0, 32, 16).data(128).Bytes(), "overlaps")
	add("duplicate-tensor.gguf", header(2, 0).tensor("a", 0, 0, 4).tensor("a", 0, 32, 4).data(64).Bytes(), "duplicate tensor")
	add("bad-alignment.gguf", header(1, 1).str("general.alignment").u32(uint32(TypeUint32)).u32(3).tensor("w", 0, 0, 4).data(16).Bytes(), "power of two")
	add("alignment-wrong-type.gguf", header(0, 1).str("general.alignment").u32(uint32(TypeString)).str("32").Bytes(), "power of two")
	add("huge-key-length.gguf", header(0, 1).u64(1<<63).data(32).Bytes(), "exceeds")
	add("huge-string-value.gguf", header(0, 1).str("k").u32(uint32(TypeString)).u64(math.MaxUint64).Bytes(), "exceeds")
	add("huge-array.gguf", header(0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint64)).u64(1<<60).Bytes(), "does not fit")
	add("huge-string-array.gguf", header(0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeString)).u64(1<<40).u64(1<<50).Bytes(), "does not fit")
	add("huge-tensor-count.gguf", header(1<<62, 0).Bytes(), "tensor count")
	add("huge-metadata-count.gguf", header(0, 1<<62).Bytes(), "metadata count")
	add("huge-tensor-name.gguf", header(1, 0).u64(1<<50).data(32).Bytes(), "exceeds")
	add("long-tensor-name.gguf", header(1, 0).tensor(strings.Repeat("n", 80), 0, 0, 4).data(16).Bytes(), "longer than")
	add("unknown-value-type.gguf", header(0, 1).str("k").u32(77).u32(0).Bytes(), "unknown value type")
	b := header(0, 1).str("k").u32(uint32(TypeBool))
	b.WriteByte(2)
	add("bad-bool.gguf", b.Bytes(), "bool byte 2")
	d := header(0, 2).str("k").u32(uint32(TypeUint8))
	d.WriteByte(1)
	d.str("k").u32(uint32(TypeUint8)).WriteByte(2)
	add("duplicate-key.gguf", d.Bytes(), "duplicate metadata key")
	add("empty-key.gguf", header(0, 1).str("").u32(uint32(TypeUint8)).u32(0).Bytes(), "empty metadata key")
	nest := header(0, 1).str("k")
	nest.u32(uint32(TypeArray))
	for i := 0; i < 10; i++ {
		nest.u32(uint32(TypeArray)).u64(1)
	}
	add("deep-nesting.gguf", nest.Bytes(), "nested deeper")
	return out
}

// encodedLen is the size of v's encoding (without its type tag).
func encodedLen(v Value) int {
	var buf bytes.Buffer
	e := &encoder{w: &buf}
	e.value(v)
	return buf.Len()
}

func TestBadFiles(t *testing.T) {
	corpus := badCorpus(t)
	dir := filepath.Join("testdata", "bad")
	if *update {
		os.RemoveAll(dir)
		must(t, os.MkdirAll(dir, 0o755))
		for name, c := range corpus {
			must(t, os.WriteFile(filepath.Join(dir, name), c.data, 0o644))
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.gguf"))
	if len(files) != len(corpus) {
		t.Fatalf("testdata/bad has %d files, the generator %d: run go test -run TestBadFiles -update", len(files), len(corpus))
	}
	for _, path := range files {
		name := filepath.Base(path)
		c, ok := corpus[name]
		if !ok {
			t.Errorf("%s: not made by the generator", name)
			continue
		}
		data, _ := os.ReadFile(path)
		if !bytes.Equal(data, c.data) {
			t.Errorf("%s: differs from the generator: run go test -run TestBadFiles -update", name)
		}
		_, err := Open(path)
		switch {
		case err == nil:
			t.Errorf("%s: opened without error", name)
		case !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: error %q does not mention %q", name, err, c.want)
		case strings.Contains(err.Error(), "\n"):
			t.Errorf("%s: error is not one line: %q", name, err)
		case len(data) > 0 && !strings.Contains(err.Error(), path):
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
}

// TestTruncatedEverywhere cuts a valid file at every byte before the end of
// its last tensor: each prefix is refused with an error, never a panic.
func TestTruncatedEverywhere(t *testing.T) {
	good := writeBytes(t, sampleWriter(t))
	f, err := Parse(good)
	must(t, err)
	end := f.DataOffset
	for _, tt := range f.Tensors {
		end = max(end, f.DataOffset+int64(tt.Offset+tt.Size))
	}
	for n := 0; n < int(end); n++ {
		if _, err := Parse(good[:n]); err == nil {
			t.Fatalf("prefix of %d/%d bytes parsed", n, len(good))
		} else {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("prefix %d: error %v is not a FormatError", n, err)
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(writeBytes(f, sampleWriter(f)))
	for _, c := range badCorpus(f) {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "gguf: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		// Every tensor the parser accepts must be readable in full.
		for i := range file.Tensors {
			tt := &file.Tensors[i]
			b := file.TensorData(tt)
			if uint64(len(b)) != tt.Size {
				t.Fatalf("%s: %d bytes, want %d", tt.Name, len(b), tt.Size)
			}
			if tt.Elements() <= 1<<16 {
				Dequantize(tt.Type, b, make([]float32, tt.Elements()))
			}
		}
	})
}
