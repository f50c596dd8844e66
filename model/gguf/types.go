package gguf

import (
	"fmt"
	"strings"
)

// ValueType is the type tag of a metadata value.
type ValueType uint32

// Metadata value types, as numbered by the GGUF specification.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{
	"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
	"bool", "string", "array", "uint64", "int64", "float64",
}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("valuetype(%d)", uint32(t))
}

// size is the encoded size of a fixed-size scalar, 0 for strings and arrays,
// -1 for an unknown type.
func (t ValueType) size() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	case TypeString, TypeArray:
		return 0
	}
	return -1
}

// TensorType is a ggml tensor element type.
type TensorType uint32

// Tensor types octet reads. Every other ggml type is refused by name.
const (
	F32  TensorType = 0
	F16  TensorType = 1
	Q8_0 TensorType = 8
	BF16 TensorType = 30
)

// QK8_0 is the number of weights in one Q8_0 block; a block is an fp16
// scale followed by QK8_0 int8 values.
const (
	QK8_0        = 32
	BlockQ8_0Len = 2 + QK8_0
)

// ggmlTypeNames names every type of ggml's enum, so that an unsupported
// one is refused by its name rather than its number.
var ggmlTypeNames = map[TensorType]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_2", 5: "Q4_3", 6: "Q5_0", 7: "Q5_1",
	8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K",
	15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL",
	21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64",
	28: "F64", 29: "IQ1_M", 30: "BF16", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8",
	34: "TQ1_0", 35: "TQ2_0", 36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8",
	39: "MXFP4",
}

func (t TensorType) String() string {
	if n, ok := ggmlTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Supported reports whether octet can compute with tensors of type t.
func (t TensorType) Supported() bool {
	switch t {
	case F32, F16, BF16, Q8_0:
		return true
	}
	return false
}

// BlockSize is the number of elements in one block of t (1 for plain types).
func (t TensorType) BlockSize() int {
	if t == Q8_0 {
		return QK8_0
	}
	return 1
}

// BlockBytes is the encoded size of one block of t.
func (t TensorType) BlockBytes() int {
	switch t {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case Q8_0:
		return BlockQ8_0Len
	}
	return 0
}

// RowBytes is the encoded size of n consecutive elements of t; n must be a
// multiple of BlockSize.
func (t TensorType) RowBytes(n int) int {
	return n / t.BlockSize() * t.BlockBytes()
}

// ParseTensorType maps a name such as "q8_0" or "F16" to its type.
func ParseTensorType(name string) (TensorType, error) {
	for t, n := range ggmlTypeNames {
		if strings.EqualFold(n, name) {
			if !t.Supported() {
				return 0, fmt.Errorf("gguf: tensor type %s is not supported (octet computes with F32, F16, BF16 and Q8_0)", n)
			}
			return t, nil
		}
	}
	return 0, fmt.Errorf("gguf: unknown tensor type %q", name)
}
