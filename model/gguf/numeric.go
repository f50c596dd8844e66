package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
)

// F16ToF32 converts an IEEE 754 half-precision value to float32.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or nan
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0: // ±0
		return math.Float32frombits(sign)
	}
	// subnormal: value is mant × 2^-24
	f := float32(mant) * (1.0 / (1 << 24))
	if sign != 0 {
		return -f
	}
	return f
}

// F32ToF16 converts a float32 to half precision, rounding to nearest even.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff { // inf or nan
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	switch {
	case e >= 0x1f: // overflow
		return sign | 0x7c00
	case e <= 0: // subnormal or zero in half precision
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := m >> shift
		rem := m & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, which is the right result
	}
	return sign | uint16(r)
}

// BF16ToF32 converts a bfloat16 value to float32.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts a float32 to bfloat16, rounding to nearest even.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // nan: keep it a quiet nan
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// Dequantize decodes len(dst) elements of type t from src into dst.
// len(dst) must be a multiple of t's block size and src must hold them.
func Dequantize(t TensorType, src []byte, dst []float32) {
	le := binary.LittleEndian
	switch t {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(le.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(le.Uint16(src[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(le.Uint16(src[2*i:]))
		}
	case Q8_0:
		for b := 0; b < len(dst)/QK8_0; b++ {
			blk := src[b*BlockQ8_0Len:]
			d := F16ToF32(le.Uint16(blk))
			out := dst[b*QK8_0 : (b+1)*QK8_0]
			for i := range out {
				out[i] = d * float32(int8(blk[2+i]))
			}
		}
	default:
		panic(fmt.Sprintf("gguf: dequantize %s", t))
	}
}

// Quantize encodes src (a multiple of t's block size) as type t, appending
// to dst. Q8_0 rounds half away from zero with the block's absolute maximum
// mapped to ±127, as ggml does, so files match other GGUF writers.
func Quantize(t TensorType, dst []byte, src []float32) []byte {
	le := binary.LittleEndian
	switch t {
	case F32:
		for _, f := range src {
			dst = le.AppendUint32(dst, math.Float32bits(f))
		}
	case F16:
		for _, f := range src {
			dst = le.AppendUint16(dst, F32ToF16(f))
		}
	case BF16:
		for _, f := range src {
			dst = le.AppendUint16(dst, F32ToBF16(f))
		}
	case Q8_0:
		for b := 0; b < len(src)/QK8_0; b++ {
			blk := src[b*QK8_0 : (b+1)*QK8_0]
			var amax float32
			for _, f := range blk {
				amax = max(amax, float32(math.Abs(float64(f))))
			}
			d := amax / 127
			id := float32(0)
			if d != 0 {
				id = 1 / d
			}
			dst = le.AppendUint16(dst, F32ToF16(d))
			for _, f := range blk {
				dst = append(dst, byte(int8(math.Round(float64(f*id)))))
			}
		}
	default:
		panic(fmt.Sprintf("gguf: quantize %s", t))
	}
	return dst
}
