package gguf

import (
	"fmt"
	"math"
)

// Value is one metadata value: a scalar, a string, or an array of either
// (arrays may nest). The zero Value is invalid.
//
// Scalars are held in their Go type (uint8 … float64, bool, string); arrays
// as a Go slice of the element type, or []Value for arrays of arrays.
type Value struct {
	Type ValueType
	// Elem is the element type when Type is TypeArray.
	Elem ValueType
	v    any
}

// Constructors for the writer and for tests.

func Uint8(v uint8) Value     { return Value{Type: TypeUint8, v: v} }
func Int8(v int8) Value       { return Value{Type: TypeInt8, v: v} }
func Uint16(v uint16) Value   { return Value{Type: TypeUint16, v: v} }
func Int16(v int16) Value     { return Value{Type: TypeInt16, v: v} }
func Uint32(v uint32) Value   { return Value{Type: TypeUint32, v: v} }
func Int32(v int32) Value     { return Value{Type: TypeInt32, v: v} }
func Uint64(v uint64) Value   { return Value{Type: TypeUint64, v: v} }
func Int64(v int64) Value     { return Value{Type: TypeInt64, v: v} }
func Float32(v float32) Value { return Value{Type: TypeFloat32, v: v} }
func Float64(v float64) Value { return Value{Type: TypeFloat64, v: v} }
func Bool(v bool) Value       { return Value{Type: TypeBool, v: v} }
func String(v string) Value   { return Value{Type: TypeString, v: v} }

func Strings(v []string) Value   { return Value{Type: TypeArray, Elem: TypeString, v: v} }
func Float32s(v []float32) Value { return Value{Type: TypeArray, Elem: TypeFloat32, v: v} }
func Int32s(v []int32) Value     { return Value{Type: TypeArray, Elem: TypeInt32, v: v} }
func Uint32s(v []uint32) Value   { return Value{Type: TypeArray, Elem: TypeUint32, v: v} }
func Uint8s(v []uint8) Value     { return Value{Type: TypeArray, Elem: TypeUint8, v: v} }

// Arrays builds an array of arrays (or of any values of one type).
func Arrays(elem ValueType, v []Value) Value { return Value{Type: TypeArray, Elem: elem, v: v} }

// Any returns the value as its Go type.
func (v Value) Any() any { return v.v }

// Uint returns an unsigned or non-negative signed integer value.
func (v Value) Uint() (uint64, bool) {
	switch x := v.v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	}
	if i, ok := v.Int(); ok && i >= 0 {
		return uint64(i), true
	}
	return 0, false
}

// Int returns an integer value that fits in an int64.
func (v Value) Int() (int64, bool) {
	switch x := v.v.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	}
	return 0, false
}

// Float returns a float or integer value as a float64.
func (v Value) Float() (float64, bool) {
	switch x := v.v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	if i, ok := v.Int(); ok {
		return float64(i), true
	}
	return 0, false
}

// Bool returns a bool value.
func (v Value) Bool() (bool, bool) {
	b, ok := v.v.(bool)
	return b, ok
}

// Str returns a string value.
func (v Value) Str() (string, bool) {
	s, ok := v.v.(string)
	return s, ok
}

// Len is the number of elements of an array value, 0 otherwise.
func (v Value) Len() int {
	switch x := v.v.(type) {
	case []uint8:
		return len(x)
	case []int8:
		return len(x)
	case []uint16:
		return len(x)
	case []int16:
		return len(x)
	case []uint32:
		return len(x)
	case []int32:
		return len(x)
	case []float32:
		return len(x)
	case []bool:
		return len(x)
	case []string:
		return len(x)
	case []uint64:
		return len(x)
	case []int64:
		return len(x)
	case []float64:
		return len(x)
	case []Value:
		return len(x)
	}
	return 0
}

// Strings returns an array of strings.
func (v Value) Strings() ([]string, bool) {
	s, ok := v.v.([]string)
	return s, ok
}

// Float32s returns an array of numbers converted to float32.
func (v Value) Float32s() ([]float32, bool) {
	switch x := v.v.(type) {
	case []float32:
		return x, true
	case []float64:
		out := make([]float32, len(x))
		for i, f := range x {
			out[i] = float32(f)
		}
		return out, true
	}
	ints, ok := v.Int64s()
	if !ok {
		return nil, false
	}
	out := make([]float32, len(ints))
	for i, n := range ints {
		out[i] = float32(n)
	}
	return out, true
}

// Int64s returns an array of integers widened to int64.
func (v Value) Int64s() ([]int64, bool) {
	var out []int64
	switch x := v.v.(type) {
	case []uint8:
		out = widen(x)
	case []int8:
		out = widen(x)
	case []uint16:
		out = widen(x)
	case []int16:
		out = widen(x)
	case []uint32:
		out = widen(x)
	case []int32:
		out = widen(x)
	case []int64:
		out = x
	case []uint64:
		out = make([]int64, len(x))
		for i, n := range x {
			if n > math.MaxInt64 {
				return nil, false
			}
			out[i] = int64(n)
		}
	default:
		return nil, false
	}
	return out, true
}

// Values returns an array of arrays.
func (v Value) Values() ([]Value, bool) {
	s, ok := v.v.([]Value)
	return s, ok
}

type integer interface {
	~uint8 | ~int8 | ~uint16 | ~int16 | ~uint32 | ~int32
}

func widen[T integer](x []T) []int64 {
	out := make([]int64, len(x))
	for i, n := range x {
		out[i] = int64(n)
	}
	return out
}

// String formats the value for humans; long arrays are abbreviated.
func (v Value) String() string {
	if v.Type != TypeArray {
		if s, ok := v.v.(string); ok {
			return fmt.Sprintf("%q", s)
		}
		return fmt.Sprint(v.v)
	}
	n := v.Len()
	if n > 8 {
		return fmt.Sprintf("[%s × %d]", v.Elem, n)
	}
	return fmt.Sprint(v.v)
}

// KV is one metadata key and its value, in file order.
type KV struct {
	Key   string
	Value Value
}
