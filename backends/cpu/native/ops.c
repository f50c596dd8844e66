/*
 * ops.c — f32 vector kernels: dot, RMSNorm, softmax, SiLU gate, RoPE,
 * attention over the paged KV cache. Each is the loop of its twin in
 * backends/ref/ops.go, reordered only where SIMD sums in another order.
 */
#include <math.h>

#include "internal.h"

/* ------------------------------------------------------------------ dot */

float oc_dot(const float *a, const float *b, int64_t n) {
#if defined(OC_ISA_AVX512)
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	int64_t i = 0;
	for (; i + 32 <= n; i += 32) {
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
		s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
	}
	for (; i < n; i += 16) {
		__mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
	s0 = _mm256_add_ps(s0, s1);
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	float r = _mm_cvtss_f32(s);
	for (; i < n; i++)
		r += a[i] * b[i];
	return r;
#elif defined(OC_ISA_NEON)
	float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
		s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
	}
	float r = vaddvq_f32(vaddq_f32(s0, s1));
	for (; i < n; i++)
		r += a[i] * b[i];
	return r;
#else
	float s[8] = {0};
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			s[j] += a[i + j] * b[i + j];
	float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
	for (; i < n; i++)
		r += a[i] * b[i];
	return r;
#endif
}

/* ------------------------------------------------------------------ exp */

/*
 * e^x in f32 for x in [-87.3, 88.7] (clamped outside): x = n·ln2 + r with
 * |r| ≤ ln2/2, e^r by a degree-6 polynomial (Cephes' expf coefficients),
 * 2^n by building the exponent. Relative error about 2 ulp. Written as
 * straight-line code so that the compiler vectorizes the loops calling it.
 */
OC_INLINE float oc_exp(float x) {
	x = x > 88.7f ? 88.7f : x;
	x = x < -87.3f ? -87.3f : x;
	const float magic = 12582912.0f; /* 1.5·2^23: adding it rounds to an integer */
	float n = (x * 1.44269504088896341f + magic) - magic;
	float r = x - n * 0.693359375f;
	r = r - n * -2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	int32_t e = ((int32_t)n + 127) << 23;
	float s;
	memcpy(&s, &e, 4);
	return p * s;
}

/* ---------------------------------------------------------- elementwise */

/* ref.RMSNorm: dst = x / sqrt(mean(x²) + eps) * w. */
void oc_rmsnorm(float *dst, const float *x, const float *w, int64_t n, float eps) {
	double ss = 0;
	float part[16] = {0};
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++)
			part[j] += x[i + j] * x[i + j];
	for (int j = 0; j < 16; j++)
		ss += part[j];
	for (; i < n; i++)
		ss += (double)x[i] * (double)x[i];
	float scale = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
	for (i = 0; i < n; i++)
		dst[i] = x[i] * scale * w[i];
}

/* ref.Softmax: x = exp(x - max) / sum. */
void oc_softmax(float *x, int64_t n) {
	float m = x[0];
	for (int64_t i = 1; i < n; i++)
		m = x[i] > m ? x[i] : m;
	float part[16] = {0};
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++) {
			float e = oc_exp(x[i + j] - m);
			x[i + j] = e;
			part[j] += e;
		}
	double sum = 0;
	for (int j = 0; j < 16; j++)
		sum += part[j];
	for (; i < n; i++) {
		float e = oc_exp(x[i] - m);
		x[i] = e;
		sum += e;
	}
	float inv = (float)(1.0 / sum);
	for (i = 0; i < n; i++)
		x[i] *= inv;
}

/* ref.SiLUGate: dst = gate / (1 + e^-gate) * up. */
void oc_silu_gate(float *dst, const float *gate, const float *up, int64_t n) {
	for (int64_t i = 0; i < n; i++) {
		float g = gate[i];
		dst[i] = g / (1.0f + oc_exp(-g)) * up[i];
	}
}

/* ----------------------------------------------------------------- rope */

void oc_rope_angles(float *cs, float *sn, const double *pw, const double *fr, double fs, int64_t half, int64_t pos) {
	double p = (double)pos * fs;
	for (int64_t i = 0; i < half; i++) {
		double th = p * pw[i] / fr[i];
		cs[i] = (float)cos(th);
		sn[i] = (float)sin(th);
	}
}

/* ref.Rope with the angles precomputed: pairs (2i, 2i+1), or (i, i+half)
 * in NeoX order, of the first rdims dimensions of each head. */
void oc_rope_apply(float *x, int64_t heads, int64_t hd, int64_t rdims, int neox, const float *cs, const float *sn) {
	int64_t half = rdims / 2;
	for (int64_t h = 0; h < heads; h++) {
		float *v = x + h * hd;
		if (neox) {
			for (int64_t i = 0; i < half; i++) {
				float x0 = v[i], x1 = v[i + half];
				v[i] = x0 * cs[i] - x1 * sn[i];
				v[i + half] = x0 * sn[i] + x1 * cs[i];
			}
		} else {
			for (int64_t i = 0; i < half; i++) {
				float x0 = v[2 * i], x1 = v[2 * i + 1];
				v[2 * i] = x0 * cs[i] - x1 * sn[i];
				v[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
			}
		}
	}
}

/* ------------------------------------------------------------ attention */

/*
 * The SIMD variants compute a head's scores for a tile of consecutive
 * cached keys at once (VW of them: 16 with AVX-512, 8 with AVX2): one
 * vector of partial products per key, summed across lanes for all keys
 * together by a transpose-and-add tree, instead of one horizontal sum per
 * key; and they keep each head's output slice in registers over all
 * positions instead of loading and storing it per position.
 */
#if defined(OC_ISA_AVX512)
#define VW 16
/* r[j] = the sum of the 16 lanes of v[j]: 45 shuffles and adds. */
static inline __m512 hsum_tile(const __m512 v[16]) {
	__m512 t[8], u[4];
	for (int i = 0; i < 8; i++) /* per 128-bit lane: v2i 0+2, v2i+1 0+2, v2i 1+3, v2i+1 1+3 */
		t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
	for (int i = 0; i < 4; i++) /* per 128-bit lane: the lane's sums of v4i … v4i+3 */
		u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44), _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xee));
	__m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x44), _mm512_shuffle_f32x4(u[0], u[1], 0xee));
	__m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x44), _mm512_shuffle_f32x4(u[2], u[3], 0xee));
	return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xdd));
}

/* Scores of head row q against cnt ≤ 16 consecutive key rows k (stride
 * kvw), times scale, into s[0…cnt). */
static inline void scores_tile(float *s, const float *q, const float *k, int64_t kvw, int64_t cnt, int64_t hd, float scale) {
	__m512 acc[16];
	for (int j = 0; j < 16; j++)
		acc[j] = _mm512_setzero_ps();
	for (int64_t d = 0; d < hd; d += 16) {
		__mmask16 m = hd - d >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (hd - d)) - 1);
		__m512 qv = _mm512_maskz_loadu_ps(m, q + d);
#pragma GCC unroll 16
		for (int j = 0; j < 16; j++) /* rows past cnt repeat the last one; their sums are not stored */
			acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k + (j < cnt ? j : cnt - 1) * kvw + d), acc[j]);
	}
	_mm512_mask_storeu_ps(s, (__mmask16)((1u << cnt) - 1), _mm512_mul_ps(hsum_tile(acc), _mm512_set1_ps(scale)));
}

/* out[0…hd) = Σ_j p[j]·v_j over the npos positions of the block table. */
static void pv_head(float *out, const float *p, const float *vc, int64_t kvw, int64_t off,
		    const int32_t *blocks, int64_t bs, int64_t npos, int64_t hd) {
	for (int64_t d = 0; d < hd; d += 64) {
		__mmask16 m[4];
		for (int i = 0; i < 4; i++) {
			int64_t left = hd - d - 16 * i;
			m[i] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
		}
		__m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
		for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
			int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
			const float *vb = vc + (int64_t)blocks[blk] * bs * kvw + off + d;
			for (int64_t jj = 0; jj < cnt; jj++) {
				__m512 pv = _mm512_set1_ps(p[j0 + jj]);
#pragma GCC unroll 4
				for (int i = 0; i < 4; i++)
					acc[i] = _mm512_fmadd_ps(pv, _mm512_maskz_loadu_ps(m[i], vb + jj * kvw + 16 * i), acc[i]);
			}
		}
		for (int i = 0; i < 4; i++)
			_mm512_mask_storeu_ps(out + d + 16 * i, m[i], acc[i]);
	}
}
#define TILE_OK(hd) 1

#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)
#define VW 8
/* r[j] = the sum of the 8 lanes of v[j]. */
static inline __m256 hsum_tile(const __m256 v[8]) {
	__m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
	__m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
	return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* As the AVX-512 one, for cnt ≤ 8 keys and hd a multiple of 8. */
static inline void scores_tile(float *s, const float *q, const float *k, int64_t kvw, int64_t cnt, int64_t hd, float scale) {
	__m256 acc[8];
	for (int j = 0; j < 8; j++)
		acc[j] = _mm256_setzero_ps();
	for (int64_t d = 0; d < hd; d += 8) {
		__m256 qv = _mm256_loadu_ps(q + d);
#pragma GCC unroll 8
		for (int j = 0; j < 8; j++)
			acc[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + (j < cnt ? j : cnt - 1) * kvw + d), acc[j]);
	}
	__m256 r = _mm256_mul_ps(hsum_tile(acc), _mm256_set1_ps(scale));
	if (cnt == 8) {
		_mm256_storeu_ps(s, r);
	} else {
		float tmp[8];
		_mm256_storeu_ps(tmp, r);
		for (int64_t j = 0; j < cnt; j++)
			s[j] = tmp[j];
	}
}

/* As the AVX-512 one, for hd a multiple of 8. */
static void pv_head(float *out, const float *p, const float *vc, int64_t kvw, int64_t off,
		    const int32_t *blocks, int64_t bs, int64_t npos, int64_t hd) {
	for (int64_t d = 0; d < hd; d += 32) {
		int nv = hd - d >= 32 ? 4 : (int)((hd - d) / 8);
		__m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
		for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
			int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
			const float *vb = vc + (int64_t)blocks[blk] * bs * kvw + off + d;
			for (int64_t jj = 0; jj < cnt; jj++) {
				__m256 pv = _mm256_set1_ps(p[j0 + jj]);
#pragma GCC unroll 4
				for (int i = 0; i < 4; i++)
					if (i < nv)
						acc[i] = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vb + jj * kvw + 8 * i), acc[i]);
			}
		}
		for (int i = 0; i < nv; i++)
			_mm256_storeu_ps(out + d + 8 * i, acc[i]);
	}
}
#define TILE_OK(hd) ((hd) % 8 == 0)
#endif

/* y += a·x */
static void axpy(float *y, float a, const float *x, int64_t n) {
	for (int64_t i = 0; i < n; i++)
		y[i] += a * x[i];
}

/*
 * ref.Attention for the nh query heads that share KV head g, in one task:
 * the group's cached rows are read from memory once and stay in cache for
 * its other heads (the portable path loads each row once for all of them).
 * scores holds nh rows of npos (rounded up to 16) floats.
 */
void oc_attention_group(float *out, const float *q, const float *kc, const float *vc, int64_t kvw,
			const int32_t *blocks, int64_t bs, int64_t npos, int64_t g, int64_t nh,
			int64_t hd, float scale, float *scores) {
	int64_t ld = (npos + 15) / 16 * 16;
	int64_t off = g * hd;
#if defined(VW)
	if (TILE_OK(hd)) {
		for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
			int64_t base = (int64_t)blocks[blk] * bs;
			int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
			for (int64_t jj = 0; jj < cnt; jj += VW) {
				int64_t c = cnt - jj < VW ? cnt - jj : VW;
				for (int64_t h = 0; h < nh; h++)
					scores_tile(scores + h * ld + j0 + jj, q + h * hd, kc + (base + jj) * kvw + off, kvw, c, hd, scale);
			}
		}
		for (int64_t h = 0; h < nh; h++) {
			oc_softmax(scores + h * ld, npos);
			pv_head(out + h * hd, scores + h * ld, vc, kvw, off, blocks, bs, npos, hd);
		}
		return;
	}
#endif
	for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
		int64_t base = (int64_t)blocks[blk] * bs;
		int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
		for (int64_t jj = 0; jj < cnt; jj++) {
			const float *kr = kc + (base + jj) * kvw + off;
			for (int64_t h = 0; h < nh; h++)
				scores[h * ld + j0 + jj] = oc_dot(q + h * hd, kr, hd) * scale;
		}
	}
	for (int64_t h = 0; h < nh; h++) {
		oc_softmax(scores + h * ld, npos);
		memset(out + h * hd, 0, (size_t)hd * sizeof(float));
	}
	for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
		int64_t base = (int64_t)blocks[blk] * bs;
		int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
		for (int64_t jj = 0; jj < cnt; jj++) {
			const float *vr = vc + (base + jj) * kvw + off;
			for (int64_t h = 0; h < nh; h++)
				axpy(out + h * hd, scores[h * ld + j0 + jj], vr, hd);
		}
	}
}
