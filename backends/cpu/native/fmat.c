/*
 * fmat.c — matrix products over F32, F16 and BF16 weights (the tensors that
 * cannot take Q8_0, and unquantized models): each weight row is decoded to
 * f32 once and dotted with every activation row, as ref.MatMul does.
 */
#include "internal.h"

static void decode_f16(const uint16_t *src, float *dst, int64_t k) {
	int64_t i = 0;
#if defined(OC_ISA_AVX512)
	for (; i + 16 <= k; i += 16)
		_mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)
	for (; i + 8 <= k; i += 8)
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
	for (; i < k; i++)
		dst[i] = oc_f16_to_f32(oc_load_u16(src + i));
}

static void decode_bf16(const uint16_t *src, float *dst, int64_t k) {
	for (int64_t i = 0; i < k; i++)
		dst[i] = oc_bf16_to_f32(oc_load_u16(src + i));
}

void oc_decode_row(const void *w, int64_t type, int64_t k, int64_t r, float *dst) {
	const uint8_t *row = (const uint8_t *)w + r * oc_row_bytes(type, k);
	switch (type) {
	case OC_F32:
		memcpy(dst, row, (size_t)k * 4);
		break;
	case OC_F16:
		decode_f16((const uint16_t *)row, dst, k);
		break;
	case OC_BF16:
		decode_bf16((const uint16_t *)row, dst, k);
		break;
	case OC_Q8_0:
		for (int64_t b = 0; b < k / QK; b++) {
			const uint8_t *p = row + b * Q8_BLOCK;
			float d = oc_f16_to_f32(oc_load_u16(p));
			for (int i = 0; i < QK; i++)
				dst[b * QK + i] = d * (float)(int8_t)p[2 + i];
		}
		break;
	}
}

void oc_f_matmul(oc_scratch *s, const void *w, int64_t type, int64_t k, int64_t r0, int64_t r1,
		 const float *x, int64_t ldx, int64_t n, float *y, int64_t ldy, int acc) {
	int64_t rb = oc_row_bytes(type, k);
	for (int64_t r = r0; r < r1; r++) {
		const float *wr;
		if (type == OC_F32) {
			wr = (const float *)((const uint8_t *)w + r * rb);
		} else {
			oc_decode_row(w, type, k, r, s->rowf);
			wr = s->rowf;
		}
		for (int64_t t = 0; t < n; t++) {
			float v = oc_dot(wr, x + t * ldx, k);
			float *o = y + t * ldy + r;
			*o = acc ? *o + v : v;
		}
	}
}
