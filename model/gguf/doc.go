// Package gguf reads and writes GGUF files, the model format of llama.cpp
// and of octet.
//
// Open memory-maps a file and parses its header, metadata and tensor table.
// Before any tensor is touched, every tensor's type, shape, alignment, offset
// and size are checked against the file: a truncated or hostile file is
// refused with a FormatError naming the file, the problem and the byte
// offset, and never causes a panic or an out-of-bounds read. Tensor data is
// returned as views of the mapping (no copy).
//
// Versions 2 and 3 are read (they differ only in v3's optional big-endian
// variant, which is refused); files are written as version 3. Tensor types
// F32, F16, BF16 and Q8_0 are supported; every other ggml type is refused by
// its name. Metadata of every GGUF value type is read and written, arrays of
// arrays included.
package gguf
