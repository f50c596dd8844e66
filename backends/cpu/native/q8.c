/*
 * q8.c — W8A8 matrix products over Q8_0 weights.
 *
 * Activations are quantized on the fly to blocks of 32 int8 with an f32
 * scale (oc_quantize_rows); the product of a weight block and an activation
 * block is an exact int32 dot product, scaled by dw·dx in f32:
 *
 *	y[t][r] = Σ_b dw[r][b] · dx[t][b] · Σ_i w[r][32b+i] · x[t][32b+i]
 *
 * Two paths, same result up to f32 summation order:
 *
 *  - direct (decode, few tokens): reads the weights where they lie in the
 *    mapped file (34-byte blocks) and streams each row once for all tokens.
 *  - packed: panels of MR rows interleaved by 4 bytes (the layout the
 *    dot-product instructions want: one register holds 4 consecutive
 *    weights of MR rows) and their MR f16 scales per block, then an MR × NR
 *    microkernel over the tokens. A panel takes exactly the bytes of its
 *    rows in the file (plus alignment), so a decode step reads no more.
 *    A runner packs its matrices once at load (oc_q8_prepack, the default:
 *    measured, packing on the fly cost more than the products themselves in
 *    batched decode); oc_q8_matmul_packed packs OC_CHUNK rows at a time into
 *    per-thread scratch instead, for weights read where they are mapped.
 *
 * VNNI's vpdpbusd multiplies unsigned by signed bytes: the packed and direct
 * AVX-512/AVX-VNNI kernels flip the weights' sign bit (w+128, unsigned) and
 * start each block's int32 sum at c = -128·Σx, which cancels the offset
 * exactly. AVX2 (no VNNI) uses vpmaddubsw(|w|, sign(x, w)); |w|·|x| ≤
 * 128·127, so its int16 pair sums cannot saturate.
 */
#include <math.h>

#include "internal.h"

/* ---------------------------------------------------------------- layout */

#if defined(OC_ISA_AVX512)
#define MR 16
#define NR 12
const int oc_q8_pack_min = 3;
#elif defined(OC_ISA_AVXVNNI)
#define MR 8
#define NR 6
const int oc_q8_pack_min = 3;
#elif defined(OC_ISA_AVX2)
#define MR 8
#define NR 4
const int oc_q8_pack_min = 3;
#elif defined(OC_ISA_NEON)
#define MR 4
#define NR 8
const int oc_q8_pack_min = 3;
#else
#define MR 4
#define NR 4
const int oc_q8_pack_min = 3;
#endif

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Bytes of one packed panel over nb blocks: the quants, then the scales
 * (f16) rounded up to keep the next panel 64-byte aligned. */
static int64_t panel_stride(int64_t nb) { return nb * 32 * MR + round_up(nb * 2 * MR, 64); }

const int oc_q8_mr = MR;

/* Expanded per-pair scale and correction vectors, used by the AVX-512 direct
 * kernel: 16 lanes per pair of blocks (8 for each block). */
#if defined(OC_ISA_AVX512)
#define EXPANDED 1
#else
#define EXPANDED 0
#endif

size_t oc_qact_bytes(int64_t n, int64_t k) {
	int64_t nb = k / QK, lq = round_up(k, 64), lb = round_up(nb, 16);
	int64_t le = EXPANDED ? round_up(nb, 2) / 2 * 16 : 0;
	return (size_t)(n * lq + n * lb * 8 + n * le * 8 + 5 * 64);
}

void oc_qact_bind(oc_qact *a, void *mem, int64_t n, int64_t k, int expanded) {
	int64_t nb = k / QK;
	uint8_t *p = (uint8_t *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
	a->k = k;
	a->lq = round_up(k, 64);
	a->lb = round_up(nb, 16);
	a->q = (int8_t *)p;
	p += round_up(n * a->lq, 64);
	a->d = (float *)p;
	p += round_up(n * a->lb * 4, 64);
	a->c = (int32_t *)p;
	p += round_up(n * a->lb * 4, 64);
	a->le = EXPANDED && expanded ? round_up(nb, 2) / 2 * 16 : 0;
	a->de = EXPANDED && expanded ? (float *)p : NULL;
	p += round_up(n * a->le * 4, 64);
	a->ce = EXPANDED && expanded ? (int32_t *)p : NULL;
}

/* ---------------------------------------------------------- quantization */

static void quant_block(const float *x, int8_t *q, float *dout, int32_t *cout) {
	float amax = 0;
#if defined(OC_ISA_AVX512)
	__m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
	amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
	float id = amax > 0 ? 127.0f / amax : 0.0f;
	__m512 vid = _mm512_set1_ps(id);
	__m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
	__m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
	_mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(i0));
	_mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(i1));
	int32_t s = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 v[4], m = _mm256_setzero_ps();
	for (int j = 0; j < 4; j++) {
		v[j] = _mm256_loadu_ps(x + 8 * j);
		m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
	}
	__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
	m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
	m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
	amax = _mm_cvtss_f32(m4);
	float id = amax > 0 ? 127.0f / amax : 0.0f;
	__m256 vid = _mm256_set1_ps(id);
	__m256i i[4];
	for (int j = 0; j < 4; j++)
		i[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], vid));
	__m256i s32 = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
	__m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
	s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
	s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
	int32_t s = _mm_cvtsi128_si32(s4);
	/* packs interleave 128-bit lanes; the permute restores element order */
	__m256i p01 = _mm256_packs_epi32(i[0], i[1]), p23 = _mm256_packs_epi32(i[2], i[3]);
	__m256i p = _mm256_packs_epi16(p01, p23);
	p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
	_mm256_storeu_si256((__m256i *)q, p);
#else
	for (int i = 0; i < QK; i++)
		amax = fmaxf(amax, fabsf(x[i]));
	float id = amax > 0 ? 127.0f / amax : 0.0f;
	int32_t s = 0;
	for (int i = 0; i < QK; i++) {
		float v = nearbyintf(x[i] * id);
		v = v > 127 ? 127 : v < -127 ? -127 : v;
		q[i] = (int8_t)v;
		s += (int32_t)v;
	}
#endif
	*dout = amax / 127.0f;
	*cout = -128 * s;
}

void oc_quantize_rows(oc_qact *a, const float *x, int64_t ldx, int64_t t0, int64_t t1, int64_t b0, int64_t b1) {
	for (int64_t t = t0; t < t1; t++) {
		for (int64_t b = b0; b < b1; b++)
			quant_block(x + t * ldx + b * QK, a->q + t * a->lq + b * QK, a->d + t * a->lb + b, a->c + t * a->lb + b);
#if EXPANDED
		if (!a->de)
			continue;
		/* pairs whose both blocks lie in [b0, b1), or the lone last block */
		int64_t nb = a->k / QK;
		for (int64_t b = b0 & ~(int64_t)1; b < b1; b += 2) {
			if (b < b0 || (b + 1 < nb && b + 1 >= b1))
				continue;
			float *de = a->de + t * a->le + b / 2 * 16;
			int32_t *ce = a->ce + t * a->le + b / 2 * 16;
			float d0 = a->d[t * a->lb + b], d1 = b + 1 < nb ? a->d[t * a->lb + b + 1] : 0;
			for (int i = 0; i < 8; i++) {
				de[i] = d0;
				de[8 + i] = d1;
				ce[i] = ce[8 + i] = 0;
			}
			ce[0] = a->c[t * a->lb + b];
			ce[8] = b + 1 < nb ? a->c[t * a->lb + b + 1] : 0;
		}
#endif
	}
}

/* -------------------------------------------------------- direct kernels */

OC_INLINE void store_y(float *y, float v, int acc) { *y = acc ? *y + v : v; }

#if defined(OC_ISA_AVX512)

/* Dot products of one weight row with G activation rows t0…t0+G-1. */
OC_INLINE void row_dots(const uint8_t *row, int64_t nb, const oc_qact *a, int64_t t0, const int G, float *out) {
	__m512 acc[4];
	__m256 tail[4];
	for (int g = 0; g < G; g++) {
		acc[g] = _mm512_setzero_ps();
		tail[g] = _mm256_setzero_ps();
	}
	const __m512i off = _mm512_set1_epi8((char)0x80);
	int64_t b = 0;
	for (; b + 2 <= nb; b += 2) {
		const uint8_t *p = row + b * Q8_BLOCK;
		__m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2))),
					       _mm256_loadu_si256((const __m256i *)(p + Q8_BLOCK + 2)), 1);
		w = _mm512_xor_si512(w, off);
		__m256i hh = _mm256_set_m128i(_mm_set1_epi16((short)oc_load_u16(p + Q8_BLOCK)), _mm_set1_epi16((short)oc_load_u16(p)));
		__m512 dw = _mm512_cvtph_ps(hh);
#pragma GCC unroll 4
		for (int g = 0; g < G; g++) {
			int64_t t = t0 + g;
			__m512i ai = _mm512_load_si512((const void *)(a->ce + t * a->le + b * 8));
			ai = _mm512_dpbusd_epi32(ai, w, _mm512_loadu_si512((const void *)(a->q + t * a->lq + b * QK)));
			__m512 s = _mm512_mul_ps(dw, _mm512_load_ps(a->de + t * a->le + b * 8));
			acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai), s, acc[g]);
		}
	}
	if (b < nb) {
		const uint8_t *p = row + b * Q8_BLOCK;
		__m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + 2)), _mm256_set1_epi8((char)0x80));
		float dw = _cvtsh_ss(oc_load_u16(p));
		for (int g = 0; g < G; g++) {
			int64_t t = t0 + g;
			__m256i ai = _mm256_castsi128_si256(_mm_cvtsi32_si128(a->c[t * a->lb + b]));
			ai = _mm256_dpbusd_epi32(ai, w, _mm256_loadu_si256((const __m256i *)(a->q + t * a->lq + b * QK)));
			tail[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai), _mm256_set1_ps(dw * a->d[t * a->lb + b]), tail[g]);
		}
	}
	for (int g = 0; g < G; g++)
		out[g] = _mm512_reduce_add_ps(_mm512_add_ps(acc[g], _mm512_zextps256_ps512(tail[g])));
}

#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)

OC_INLINE float hsum256(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

OC_INLINE void row_dots(const uint8_t *row, int64_t nb, const oc_qact *a, int64_t t0, const int G, float *out) {
	__m256 acc[4];
	for (int g = 0; g < G; g++)
		acc[g] = _mm256_setzero_ps();
#if defined(OC_ISA_AVXVNNI)
	const __m256i off = _mm256_set1_epi8((char)0x80);
#else
	const __m256i ones = _mm256_set1_epi16(1);
#endif
	for (int64_t b = 0; b < nb; b++) {
		const uint8_t *p = row + b * Q8_BLOCK;
		__m256i w = _mm256_loadu_si256((const __m256i *)(p + 2));
		float dw = _cvtsh_ss(oc_load_u16(p));
#if defined(OC_ISA_AVXVNNI)
		__m256i wu = _mm256_xor_si256(w, off);
#else
		__m256i aw = _mm256_sign_epi8(w, w);
#endif
#pragma GCC unroll 4
		for (int g = 0; g < G; g++) {
			int64_t t = t0 + g;
			__m256i x = _mm256_loadu_si256((const __m256i *)(a->q + t * a->lq + b * QK));
#if defined(OC_ISA_AVXVNNI)
			__m256i ai = _mm256_castsi128_si256(_mm_cvtsi32_si128(a->c[t * a->lb + b]));
			ai = _mm256_dpbusd_avx_epi32(ai, wu, x);
#else
			__m256i ai = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), ones);
#endif
			acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai), _mm256_set1_ps(dw * a->d[t * a->lb + b]), acc[g]);
		}
	}
	for (int g = 0; g < G; g++)
		out[g] = hsum256(acc[g]);
}

#elif defined(OC_ISA_NEON)

OC_INLINE void row_dots(const uint8_t *row, int64_t nb, const oc_qact *a, int64_t t0, const int G, float *out) {
	float32x4_t acc[4];
	for (int g = 0; g < G; g++)
		acc[g] = vdupq_n_f32(0);
	for (int64_t b = 0; b < nb; b++) {
		const uint8_t *p = row + b * Q8_BLOCK;
		int8x16_t w0 = vld1q_s8((const int8_t *)(p + 2)), w1 = vld1q_s8((const int8_t *)(p + 18));
		float dw = oc_f16_to_f32(oc_load_u16(p));
		for (int g = 0; g < G; g++) {
			int64_t t = t0 + g;
			const int8_t *x = a->q + t * a->lq + b * QK;
			int32x4_t ai = vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, vld1q_s8(x)), w1, vld1q_s8(x + 16));
			acc[g] = vfmaq_n_f32(acc[g], vcvtq_f32_s32(ai), dw * a->d[t * a->lb + b]);
		}
	}
	for (int g = 0; g < G; g++)
		out[g] = vaddvq_f32(acc[g]);
}

#else

OC_INLINE void row_dots(const uint8_t *row, int64_t nb, const oc_qact *a, int64_t t0, const int G, float *out) {
	float acc[4] = {0, 0, 0, 0};
	for (int64_t b = 0; b < nb; b++) {
		const uint8_t *p = row + b * Q8_BLOCK;
		const int8_t *w = (const int8_t *)(p + 2);
		float dw = oc_f16_to_f32(oc_load_u16(p));
		for (int g = 0; g < G; g++) {
			int64_t t = t0 + g;
			const int8_t *x = a->q + t * a->lq + b * QK;
			int32_t s = 0;
			for (int i = 0; i < QK; i++)
				s += (int32_t)w[i] * (int32_t)x[i];
			acc[g] += dw * a->d[t * a->lb + b] * (float)s;
		}
	}
	for (int g = 0; g < G; g++)
		out[g] = acc[g];
}

#endif

void oc_q8_matmul_direct(const uint8_t *w, int64_t k, int64_t r0, int64_t r1,
			 const oc_qact *a, int64_t n, float *y, int64_t ldy, int acc) {
	int64_t nb = k / QK, rb = nb * Q8_BLOCK;
	for (int64_t r = r0; r < r1; r++) {
		const uint8_t *row = w + r * rb;
		int64_t t = 0;
		float out[4];
		for (; t + 4 <= n; t += 4) {
			row_dots(row, nb, a, t, 4, out);
			for (int g = 0; g < 4; g++)
				store_y(&y[(t + g) * ldy + r], out[g], acc);
		}
		switch (n - t) {
		case 3: row_dots(row, nb, a, t, 3, out); break;
		case 2: row_dots(row, nb, a, t, 2, out); break;
		case 1: row_dots(row, nb, a, t, 1, out); break;
		}
		for (int g = 0; g < n - t; g++)
			store_y(&y[(t + g) * ldy + r], out[g], acc);
	}
}

/* --------------------------------------------------------------- packing */

/*
 * A panel holds MR rows: for block b, 8 groups kq of MR×4 bytes (rows in
 * order, 4 consecutive weights each); after all blocks, the scales
 * sc[b·MR + row] as f16 bits. Rows past the matrix are zero with scale 0. The VNNI variants store
 * w+128 (unsigned); the others store w.
 */
static const uint8_t zero_block[Q8_BLOCK + 30];

#if defined(OC_ISA_AVX512)

static void pack_panel(const uint8_t *w, int64_t rb, int64_t r0, int vr, int64_t nb, uint8_t *pk, uint16_t *sc) {
	const __m512i off = _mm512_set1_epi8((char)0x80);
	const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
	const __m512i hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
	const uint8_t *rows[16];
	for (int j = 0; j < 16; j++)
		rows[j] = j < vr ? w + (r0 + j) * rb : NULL;
	for (int64_t b = 0; b < nb; b++) {
		__m512i z[8];
		for (int j = 0; j < 8; j++) {
			const uint8_t *pa = rows[j] ? rows[j] + b * Q8_BLOCK : zero_block;
			const uint8_t *pb = rows[j + 8] ? rows[j + 8] + b * Q8_BLOCK : zero_block;
			z[j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(pa + 2))),
						  _mm256_loadu_si256((const __m256i *)(pb + 2)), 1);
		}
		__m512i t[8], u[8];
		for (int j = 0; j < 8; j += 2) {
			t[j] = _mm512_unpacklo_epi32(z[j], z[j + 1]);
			t[j + 1] = _mm512_unpackhi_epi32(z[j], z[j + 1]);
		}
		for (int j = 0; j < 8; j += 4) {
			u[j] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
			u[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
			u[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
			u[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
		}
		__m512i *o = (__m512i *)(pk + b * 8 * 64);
		for (int j = 0; j < 4; j++) {
			_mm512_store_si512(o + j, _mm512_xor_si512(_mm512_permutex2var_epi64(u[j], lo, u[j + 4]), off));
			_mm512_store_si512(o + j + 4, _mm512_xor_si512(_mm512_permutex2var_epi64(u[j], hi, u[j + 4]), off));
		}
		for (int j = 0; j < 16; j++)
			sc[b * 16 + j] = rows[j] ? oc_load_u16(rows[j] + b * Q8_BLOCK) : 0;
	}
}

#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)

static void pack_panel(const uint8_t *w, int64_t rb, int64_t r0, int vr, int64_t nb, uint8_t *pk, uint16_t *sc) {
#if defined(OC_ISA_AVXVNNI)
	const __m256i off = _mm256_set1_epi8((char)0x80);
#endif
	const uint8_t *rows[8];
	for (int j = 0; j < 8; j++)
		rows[j] = j < vr ? w + (r0 + j) * rb : NULL;
	for (int64_t b = 0; b < nb; b++) {
		__m256 z[8], t[8], u[8];
		for (int j = 0; j < 8; j++)
			z[j] = _mm256_loadu_ps((const float *)((rows[j] ? rows[j] + b * Q8_BLOCK : zero_block) + 2));
		for (int j = 0; j < 8; j += 2) {
			t[j] = _mm256_unpacklo_ps(z[j], z[j + 1]);
			t[j + 1] = _mm256_unpackhi_ps(z[j], z[j + 1]);
		}
		for (int j = 0; j < 8; j += 4) {
			u[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
			u[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xee);
			u[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
			u[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xee);
		}
		__m256i *o = (__m256i *)(pk + b * 8 * 32);
		for (int j = 0; j < 4; j++) {
			__m256i a0 = _mm256_castps_si256(_mm256_permute2f128_ps(u[j], u[j + 4], 0x20));
			__m256i a1 = _mm256_castps_si256(_mm256_permute2f128_ps(u[j], u[j + 4], 0x31));
#if defined(OC_ISA_AVXVNNI)
			a0 = _mm256_xor_si256(a0, off);
			a1 = _mm256_xor_si256(a1, off);
#endif
			_mm256_store_si256(o + j, a0);
			_mm256_store_si256(o + j + 4, a1);
		}
		for (int j = 0; j < 8; j++)
			sc[b * 8 + j] = rows[j] ? oc_load_u16(rows[j] + b * Q8_BLOCK) : 0;
	}
}

#else

static void pack_panel(const uint8_t *w, int64_t rb, int64_t r0, int vr, int64_t nb, uint8_t *pk, uint16_t *sc) {
	for (int64_t b = 0; b < nb; b++) {
		for (int j = 0; j < MR; j++) {
			const uint8_t *src = j < vr ? w + (r0 + j) * rb + b * Q8_BLOCK : zero_block;
			for (int kq = 0; kq < 8; kq++)
				memcpy(pk + (b * 8 + kq) * MR * 4 + j * 4, src + 2 + kq * 4, 4);
			sc[b * MR + j] = j < vr ? oc_load_u16(src) : 0;
		}
	}
}

#endif

/* ----------------------------------------------------------- microkernels */

/*
 * With several tokens a microkernel does enough arithmetic per weight byte
 * that the hardware prefetcher alone no longer keeps the next weights in
 * cache: it asks for the panel bytes this far ahead itself (the panels a
 * thread reads are contiguous). Measured on the 2-vCPU AVX-512 VNNI dev VM,
 * an 8-token product streaming 1 GiB of panels: 22.5-24 GB/s without,
 * 29-31 at 2 KiB, 33-35 at 8 KiB, 33.5 at 16 KiB ahead. The one-token
 * kernel reads faster still and wants the bytes further ahead: 37-40 GB/s
 * without, 40-46 at 8 KiB, 42-48 at 16 KiB, 35-38 at 32 KiB, 28 at 48 KiB
 * and more (the probe, a plain read loop, 43-61 in the same runs). The AVX2
 * kernel at one token, tinyllama decode alternated 3 times: 20.8-25.2 tok/s
 * without, 30.2-31.0 with it.
 */
#define PREFETCH_AHEAD 8192
#define PREFETCH_AHEAD_1 16384

/* Computes rows r…r+MR-1 (vr valid) for tokens t0…t0+nr-1 over nb blocks of
 * one packed panel and stores them into y. */
#if defined(OC_ISA_AVX512)

OC_INLINE void micro(const uint8_t *pk, const uint16_t *sc, int64_t nb, const oc_qact *a, int64_t t0, const int nr,
		     float *y, int64_t ldy, int64_t r, int vr, int acc) {
	__m512 af[NR];
#pragma GCC unroll 16
	for (int i = 0; i < nr; i++)
		af[i] = _mm512_setzero_ps();
	const int8_t *xq = a->q + t0 * a->lq;
	const float *xd = a->d + t0 * a->lb;
	const int32_t *xc = a->c + t0 * a->lb;
	const int64_t lq = a->lq, lb = a->lb;
	for (int64_t b = 0; b < nb; b++) {
		__m512i ai[NR];
#pragma GCC unroll 16
		for (int i = 0; i < nr; i++)
			ai[i] = _mm512_set1_epi32(xc[i * lb + b]);
		const __m512i *pw = (const __m512i *)(pk + b * 512);
#pragma GCC unroll 8
		for (int j = 0; j < 8; j++)
			_mm_prefetch((const char *)(pw + j) + PREFETCH_AHEAD, _MM_HINT_T0);
#pragma GCC unroll 8
		for (int kq = 0; kq < 8; kq++) {
			__m512i w = _mm512_load_si512(pw + kq);
#pragma GCC unroll 16
			for (int i = 0; i < nr; i++) {
				int32_t xv;
				memcpy(&xv, xq + i * lq + b * QK + kq * 4, 4);
				ai[i] = _mm512_dpbusd_epi32(ai[i], w, _mm512_set1_epi32(xv));
			}
		}
		__m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + b * 16)));
#pragma GCC unroll 16
		for (int i = 0; i < nr; i++)
			af[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai[i]), _mm512_mul_ps(s, _mm512_set1_ps(xd[i * lb + b])), af[i]);
	}
	__mmask16 m = vr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << vr) - 1);
#pragma GCC unroll 16
	for (int i = 0; i < nr; i++) {
		float *o = y + (t0 + i) * ldy + r;
		__m512 v = af[i];
		if (acc)
			v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, o));
		_mm512_mask_storeu_ps(o, m, v);
	}
}

#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)

OC_INLINE void micro(const uint8_t *pk, const uint16_t *sc, int64_t nb, const oc_qact *a, int64_t t0, const int nr,
		     float *y, int64_t ldy, int64_t r, int vr, int acc) {
	__m256 af[NR];
#pragma GCC unroll 8
	for (int i = 0; i < nr; i++)
		af[i] = _mm256_setzero_ps();
	const int8_t *xq = a->q + t0 * a->lq;
	const float *xd = a->d + t0 * a->lb;
	const int64_t lq = a->lq, lb = a->lb;
#if defined(OC_ISA_AVXVNNI)
	const int32_t *xc = a->c + t0 * a->lb;
#else
	const __m256i ones = _mm256_set1_epi16(1);
#endif
	for (int64_t b = 0; b < nb; b++) {
		__m256i ai[NR];
#pragma GCC unroll 8
		for (int i = 0; i < nr; i++) {
#if defined(OC_ISA_AVXVNNI)
			ai[i] = _mm256_set1_epi32(xc[i * lb + b]);
#else
			ai[i] = _mm256_setzero_si256();
#endif
		}
		const __m256i *pw = (const __m256i *)(pk + b * 256);
#pragma GCC unroll 4
		for (int j = 0; j < 4; j++)
			_mm_prefetch((const char *)(pw + 2 * j) + (nr > 1 ? PREFETCH_AHEAD : PREFETCH_AHEAD_1), _MM_HINT_T0);
#pragma GCC unroll 8
		for (int kq = 0; kq < 8; kq++) {
			__m256i w = _mm256_load_si256(pw + kq);
#if !defined(OC_ISA_AVXVNNI)
			__m256i aw = _mm256_sign_epi8(w, w);
#endif
#pragma GCC unroll 8
			for (int i = 0; i < nr; i++) {
				int32_t xv;
				memcpy(&xv, xq + i * lq + b * QK + kq * 4, 4);
				__m256i x = _mm256_set1_epi32(xv);
#if defined(OC_ISA_AVXVNNI)
				ai[i] = _mm256_dpbusd_avx_epi32(ai[i], w, x);
#else
				ai[i] = _mm256_add_epi32(ai[i], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), ones));
#endif
			}
		}
		__m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + b * 8)));
#pragma GCC unroll 8
		for (int i = 0; i < nr; i++)
			af[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai[i]), _mm256_mul_ps(s, _mm256_set1_ps(xd[i * lb + b])), af[i]);
	}
#pragma GCC unroll 8
	for (int i = 0; i < nr; i++) {
		float *o = y + (t0 + i) * ldy + r;
		if (vr >= 8) {
			__m256 v = af[i];
			if (acc)
				v = _mm256_add_ps(v, _mm256_loadu_ps(o));
			_mm256_storeu_ps(o, v);
		} else {
			float tmp[8];
			_mm256_storeu_ps(tmp, af[i]);
			for (int j = 0; j < vr; j++)
				o[j] = acc ? o[j] + tmp[j] : tmp[j];
		}
	}
}

#elif defined(OC_ISA_NEON)

OC_INLINE void micro(const uint8_t *pk, const uint16_t *sc, int64_t nb, const oc_qact *a, int64_t t0, const int nr,
		     float *y, int64_t ldy, int64_t r, int vr, int acc) {
	float32x4_t af[NR];
	for (int i = 0; i < nr; i++)
		af[i] = vdupq_n_f32(0);
	const int64_t lq = a->lq, lb = a->lb;
	for (int64_t b = 0; b < nb; b++) {
		const int8_t *pw = (const int8_t *)(pk + b * 128);
		int8x16_t w[8];
		for (int kq = 0; kq < 8; kq++)
			w[kq] = vld1q_s8(pw + kq * 16);
		float32x4_t s = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sc + b * 4)));
		for (int i = 0; i < nr; i++) {
			const int8_t *x = a->q + (t0 + i) * lq + b * QK;
			int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
			int32x4_t ai = vdupq_n_s32(0);
			ai = vdotq_laneq_s32(ai, w[0], x0, 0);
			ai = vdotq_laneq_s32(ai, w[1], x0, 1);
			ai = vdotq_laneq_s32(ai, w[2], x0, 2);
			ai = vdotq_laneq_s32(ai, w[3], x0, 3);
			ai = vdotq_laneq_s32(ai, w[4], x1, 0);
			ai = vdotq_laneq_s32(ai, w[5], x1, 1);
			ai = vdotq_laneq_s32(ai, w[6], x1, 2);
			ai = vdotq_laneq_s32(ai, w[7], x1, 3);
			af[i] = vfmaq_f32(af[i], vcvtq_f32_s32(ai), vmulq_n_f32(s, a->d[(t0 + i) * lb + b]));
		}
	}
	for (int i = 0; i < nr; i++) {
		float tmp[4];
		vst1q_f32(tmp, af[i]);
		float *o = y + (t0 + i) * ldy + r;
		for (int j = 0; j < vr; j++)
			o[j] = acc ? o[j] + tmp[j] : tmp[j];
	}
}

#else

OC_INLINE void micro(const uint8_t *pk, const uint16_t *sc, int64_t nb, const oc_qact *a, int64_t t0, const int nr,
		     float *y, int64_t ldy, int64_t r, int vr, int acc) {
	float af[NR][MR];
	memset(af, 0, sizeof af);
	for (int64_t b = 0; b < nb; b++) {
		const int8_t *pw = (const int8_t *)(pk + b * 8 * MR * 4);
		for (int i = 0; i < nr; i++) {
			const int8_t *x = a->q + (t0 + i) * a->lq + b * QK;
			int32_t s[MR] = {0};
			for (int kq = 0; kq < 8; kq++)
				for (int j = 0; j < MR; j++)
					for (int e = 0; e < 4; e++)
						s[j] += (int32_t)pw[(kq * MR + j) * 4 + e] * (int32_t)x[kq * 4 + e];
			float dx = a->d[(t0 + i) * a->lb + b];
			for (int j = 0; j < MR; j++)
				af[i][j] += (float)s[j] * oc_f16_to_f32(sc[b * MR + j]) * dx;
		}
	}
	for (int i = 0; i < nr; i++) {
		float *o = y + (t0 + i) * ldy + r;
		for (int j = 0; j < vr; j++)
			o[j] = acc ? o[j] + af[i][j] : af[i][j];
	}
}

#endif

#if defined(OC_ISA_AVX512)
/*
 * One token (decode): micro's single accumulator chains eight dependent
 * vpdpbusd per block; here two chains (even and odd groups of 4 weights)
 * and two blocks per iteration keep more loads and products in flight.
 */
static void micro1(const uint8_t *pk, const uint16_t *sc, int64_t nb, const oc_qact *a, int64_t t0,
		   float *y, int64_t ldy, int64_t r, int vr, int acc) {
	__m512 af0 = _mm512_setzero_ps(), af1 = _mm512_setzero_ps();
	const int8_t *xq = a->q + t0 * a->lq;
	const float *xd = a->d + t0 * a->lb;
	const int32_t *xc = a->c + t0 * a->lb;
	int64_t b = 0;
	for (; b + 2 <= nb; b += 2) {
		const __m512i *p0 = (const __m512i *)(pk + b * 512), *p1 = (const __m512i *)(pk + (b + 1) * 512);
		__m512i a0 = _mm512_set1_epi32(xc[b]), a1 = _mm512_setzero_si512();
		__m512i c0 = _mm512_set1_epi32(xc[b + 1]), c1 = _mm512_setzero_si512();
		const int32_t *x0 = (const int32_t *)(xq + b * QK), *x1 = (const int32_t *)(xq + (b + 1) * QK);
#pragma GCC unroll 16
		for (int j = 0; j < 16; j++)
			_mm_prefetch((const char *)(p0 + j) + PREFETCH_AHEAD_1, _MM_HINT_T0);
#pragma GCC unroll 4
		for (int kq = 0; kq < 8; kq += 2) {
			a0 = _mm512_dpbusd_epi32(a0, _mm512_load_si512(p0 + kq), _mm512_set1_epi32(x0[kq]));
			a1 = _mm512_dpbusd_epi32(a1, _mm512_load_si512(p0 + kq + 1), _mm512_set1_epi32(x0[kq + 1]));
			c0 = _mm512_dpbusd_epi32(c0, _mm512_load_si512(p1 + kq), _mm512_set1_epi32(x1[kq]));
			c1 = _mm512_dpbusd_epi32(c1, _mm512_load_si512(p1 + kq + 1), _mm512_set1_epi32(x1[kq + 1]));
		}
		__m512 s0 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + b * 16))), _mm512_set1_ps(xd[b]));
		__m512 s1 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + (b + 1) * 16))), _mm512_set1_ps(xd[b + 1]));
		af0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1)), s0, af0);
		af1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(c0, c1)), s1, af1);
	}
	if (b < nb) {
		const __m512i *p0 = (const __m512i *)(pk + b * 512);
		const int32_t *x0 = (const int32_t *)(xq + b * QK);
		__m512i a0 = _mm512_set1_epi32(xc[b]), a1 = _mm512_setzero_si512();
		for (int kq = 0; kq < 8; kq += 2) {
			a0 = _mm512_dpbusd_epi32(a0, _mm512_load_si512(p0 + kq), _mm512_set1_epi32(x0[kq]));
			a1 = _mm512_dpbusd_epi32(a1, _mm512_load_si512(p0 + kq + 1), _mm512_set1_epi32(x0[kq + 1]));
		}
		__m512 s0 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + b * 16))), _mm512_set1_ps(xd[b]));
		af0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1)), s0, af0);
	}
	__m512 v = _mm512_add_ps(af0, af1);
	__mmask16 m = vr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << vr) - 1);
	float *o = y + t0 * ldy + r;
	if (acc)
		v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, o));
	_mm512_mask_storeu_ps(o, m, v);
}
#endif

static void micro_any(const uint8_t *pk, const uint16_t *sc, int64_t nb, const oc_qact *a, int64_t t0, int nr,
		      float *y, int64_t ldy, int64_t r, int vr, int acc) {
	switch (nr) {
#define CASE(N) \
	case N: micro(pk, sc, nb, a, t0, N, y, ldy, r, vr, acc); break;
#if defined(OC_ISA_AVX512)
	case 1: micro1(pk, sc, nb, a, t0, y, ldy, r, vr, acc); break;
#else
		CASE(1)
#endif
		CASE(2)
		CASE(3)
		CASE(4)
#if NR > 4
		CASE(5)
		CASE(6)
#endif
#if NR > 6
		CASE(7)
		CASE(8)
#endif
#if NR > 8
		CASE(9)
		CASE(10)
		CASE(11)
		CASE(12)
#endif
#undef CASE
	}
}

/* The products of the panels of rows [c0, c1) (c0 a multiple of MR),
 * packed at pk with stride panel_stride(nb), for all n tokens: NR tokens
 * at a time, each group over every panel while it is in cache. */
static void run_panels(const uint8_t *pk, int64_t nb, int64_t c0, int64_t c1, const oc_qact *a, int64_t n,
		       float *y, int64_t ldy, int acc) {
	int64_t stride = panel_stride(nb);
	int np = (int)((c1 - c0 + MR - 1) / MR);
	for (int64_t t = 0; t < n; t += NR) {
		int nr = (int)(n - t < NR ? n - t : NR);
		for (int p = 0; p < np; p++) {
			int64_t r = c0 + (int64_t)p * MR;
			int vr = (int)(c1 - r < MR ? c1 - r : MR);
			const uint8_t *panel = pk + p * stride;
			micro_any(panel, (const uint16_t *)(panel + nb * 32 * MR), nb, a, t, nr, y, ldy, r, vr, acc);
		}
	}
}

void oc_q8_matmul_packed(oc_scratch *s, const uint8_t *w, int64_t k, int64_t r0, int64_t r1,
			 const oc_qact *a, int64_t n, float *y, int64_t ldy, int acc) {
	int64_t nb = k / QK, rb = nb * Q8_BLOCK, stride = panel_stride(nb);
	for (int64_t c0 = r0; c0 < r1; c0 += OC_CHUNK) {
		int64_t c1 = c0 + OC_CHUNK < r1 ? c0 + OC_CHUNK : r1;
		int np = 0;
		for (int64_t r = c0; r < c1; r += MR, np++) {
			int vr = (int)(c1 - r < MR ? c1 - r : MR);
			uint8_t *panel = s->pack + np * stride;
			pack_panel(w, rb, r, vr, nb, panel, (uint16_t *)(panel + nb * 32 * MR));
		}
		run_panels(s->pack, nb, c0, c1, a, n, y, ldy, acc);
	}
}

size_t oc_q8_prepacked_bytes(int64_t rows, int64_t k) {
	return (size_t)(round_up(rows, MR) / MR * panel_stride(k / QK));
}

size_t oc_q8_scratch_pack_bytes(int64_t k) {
	return (size_t)(OC_CHUNK / MR * panel_stride(k / QK));
}

void oc_q8_prepack(const uint8_t *w, int64_t k, int64_t rows, int64_t p0, int64_t p1, uint8_t *dst) {
	int64_t nb = k / QK, rb = nb * Q8_BLOCK, stride = panel_stride(nb);
	for (int64_t p = p0; p < p1; p++) {
		int64_t r = p * MR;
		int vr = (int)(rows - r < MR ? rows - r : MR);
		uint8_t *panel = dst + p * stride;
		pack_panel(w, rb, r, vr, nb, panel, (uint16_t *)(panel + nb * 32 * MR));
	}
}

void oc_q8_matmul_prepacked(const uint8_t *pw, int64_t k, int64_t rows, int64_t r0, int64_t r1,
			    const oc_qact *a, int64_t n, float *y, int64_t ldy, int acc) {
	int64_t nb = k / QK, stride = panel_stride(nb);
	(void)rows;
	for (int64_t c0 = r0; c0 < r1; c0 += OC_CHUNK) {
		int64_t c1 = c0 + OC_CHUNK < r1 ? c0 + OC_CHUNK : r1;
		run_panels(pw + c0 / MR * stride, nb, c0, c1, a, n, y, ldy, acc);
	}
}

void oc_q8_matmul(oc_scratch *s, const uint8_t *w, int64_t k, int64_t r0, int64_t r1,
		  const oc_qact *a, int64_t n, float *y, int64_t ldy, int acc) {
	if (n >= oc_q8_pack_min)
		oc_q8_matmul_packed(s, w, k, r0, r1, a, n, y, ldy, acc);
	else
		oc_q8_matmul_direct(w, k, r0, r1, a, n, y, ldy, acc);
}
