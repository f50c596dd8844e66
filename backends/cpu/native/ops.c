/*
 * ops.c — f32 vector kernels: dot, RMSNorm, softmax, SiLU gate, RoPE,
 * attention over the paged KV cache. Each is the loop of its twin in
 * backends/ref/ops.go, reordered only where SIMD sums in another order.
 */
#include <float.h>
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
	/* the maximum in 16 lanes, as the sums below, so that the loop
	 * vectorizes: one running maximum was a chain of dependent compares,
	 * as long as the exponentials' whole loop */
	float lane[16];
	for (int j = 0; j < 16; j++)
		lane[j] = x[0];
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++)
			lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
	float m = x[0];
	for (int j = 0; j < 16; j++)
		m = lane[j] > m ? lane[j] : m;
	for (; i < n; i++)
		m = x[i] > m ? x[i] : m;
	float part[16] = {0};
	i = 0;
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
 * The runner's K cache holds each block's keys transposed: for KV head g,
 * hd rows of bs values, dimension d of the key at offset j of the block at
 * oc_k_index. A head's scores for up to VW consecutive keys of a block (16
 * with AVX-512, 8 with AVX2) are then one vector, Σ_d q[d]·kT[d][j…j+VW):
 * a broadcast and a multiply-add per dimension and no sum across lanes,
 * and every query head of the group shares each load of a kT row. The V
 * cache holds rows (slot·kvw + g·hd + d); each value row loaded is added
 * to several heads' output slices, held in registers over all positions.
 * Measured on the 2-vCPU AVX-512 dev VM, one thread, tinyllama's 32 heads
 * on 4 KV heads at position 511 (BenchmarkAttention): 117-123 µs per token
 * with key rows and a transpose-and-add tree per tile of keys, against
 * 40-45 µs with the transposed keys (2.9× less).
 *
 * Both caches hold f32 or f16 values (f16: half the memory, converted on
 * load); the kernels below take F16 as a constant, so each is compiled
 * once per element type. Offsets into the caches count values, not bytes.
 */
/* Up to VW consecutive keys of one block: their transposed rows start at
 * value off of the K cache; their scores go to column j. */
typedef struct {
	int64_t off, j, cnt;
} ktile;

/* Asks for rows of len bytes, stride bytes apart, to be brought into cache:
 * every 64-byte line they touch. */
OC_INLINE void prefetch_span(const char *p, int64_t len, int64_t rows, int64_t stride) {
	for (int64_t r = 0; r < rows; r++, p += stride) {
		uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + (uintptr_t)len;
		for (; a < end; a += 64)
			__builtin_prefetch((const void *)a);
	}
}

/* The kinds of cache values the kernels below take as a constant. */
enum { KV_F32 = 0, KV_F16 = 1, KV_Q8 = 2 };

/* Asks for the values of the block that starts at position j (a multiple
 * of bs; none when j ≥ npos): w of each row from value off (KV head × hd +
 * the first dimension wanted), in a cache of values of the given kind. */
OC_INLINE void prefetch_values(const void *vc, int kind, const int32_t *blocks, int64_t j, int64_t bs, int64_t npos,
			       int64_t kvw, int64_t off, int64_t w) {
	if (j >= npos)
		return;
	const int64_t es = kind == KV_F16 ? 2 : kind == KV_Q8 ? 1 : 4, cnt = npos - j < bs ? npos - j : bs;
	prefetch_span((const char *)vc + ((int64_t)blocks[j / bs] * bs * kvw + off) * es, w * es, cnt, kvw * es);
}

/* Value i of a cache of f16 (F16) or f32 values. */
OC_INLINE float kv_at(const void *c, int64_t i, const int F16) {
	return F16 ? oc_f16_to_f32(((const uint16_t *)c)[i]) : ((const float *)c)[i];
}

#if defined(OC_ISA_AVX512)
#define VW 16
#define NT 4 /* key tiles per pass of scores_heads */
#define HB 4 /* heads per pass of scores_heads and pv_heads */
#define TILE_OK(hd) 1

/* The values i… of the lanes in m (the others 0), of a cache of f32
 * (F16 0), f16 (KV_F16) or int8 (KV_Q8) values. */
OC_INLINE __m512 kv_load(const void *c, int64_t i, __mmask16 m, const int F16) {
	if (F16 == KV_Q8) /* a whole row folds its load into the conversion */
		return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(m == 0xffff ? _mm_loadu_si128((const __m128i *)((const int8_t *)c + i))
								 : _mm_maskz_loadu_epi8(m, (const int8_t *)c + i)));
	if (F16)
		return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)c + i));
	return _mm512_maskz_loadu_ps(m, (const float *)c + i);
}

/* Scores of NH heads (rows of q, hd apart) against NT tiles of ≤ 16 keys
 * each (tiles of 0 keys add nothing), times scale, into s (rows ld apart). */
OC_INLINE void scores_heads(float *s, int64_t ld, const float *q, const int NH, int64_t hd,
			    const void *kc, const ktile *t, int64_t bs, float scale, const int F16) {
	__mmask16 m[NT];
	__m512 a[4][NT];
	for (int i = 0; i < NT; i++)
		m[i] = (__mmask16)((1u << t[i].cnt) - 1);
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT; i++)
			a[h][i] = _mm512_setzero_ps();
	for (int64_t d = 0; d < hd; d++) {
		__m512 k[NT];
		for (int i = 0; i < NT; i++)
			k[i] = kv_load(kc, t[i].off + d * bs, m[i], F16);
		for (int h = 0; h < NH; h++) {
			__m512 qv = _mm512_set1_ps(q[h * hd + d]);
			for (int i = 0; i < NT; i++)
				a[h][i] = _mm512_fmadd_ps(qv, k[i], a[h][i]);
		}
	}
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT; i++)
			_mm512_mask_storeu_ps(s + h * ld + t[i].j, m[i], _mm512_mul_ps(a[h][i], _mm512_set1_ps(scale)));
}

/* out_h[d0…d0+64) (within hd) = Σ_j p_h[j]·v_j[d0…] for NH heads (p_h at
 * p + h·ld, out_h at out + h·hd) over the npos positions of the block table.
 * In a q8 cache (F16 = KV_Q8) v_j is row j's int8 values times its scale,
 * in vs (KV head g of kv_heads). */
OC_INLINE void pv_heads(float *out, const float *p, int64_t ld, const int NH, const void *vc, int64_t kvw, int64_t off,
			const int32_t *blocks, int64_t bs, int64_t npos, int64_t hd, int64_t d0, const int F16,
			const float *vs, int64_t kv_heads, int64_t g) {
	__mmask16 m[4];
	for (int i = 0; i < 4; i++) {
		int64_t left = hd - d0 - 16 * i;
		m[i] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
	}
	__m512 acc[4][4];
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < 4; i++)
			acc[h][i] = _mm512_setzero_ps();
	for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
		int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
		int64_t vb = (int64_t)blocks[blk] * bs * kvw + off + d0;
		const float *sv = F16 == KV_Q8 ? vs + oc_kv8_scale_index((int64_t)blocks[blk] * bs, bs, kv_heads, g) : NULL;
		prefetch_values(vc, F16, blocks, j0 + bs, bs, npos, kvw, off + d0, hd - d0 < 64 ? hd - d0 : 64);
		for (int64_t jj = 0; jj < cnt; jj++) {
			__m512 v[4];
			for (int i = 0; i < 4; i++)
				v[i] = kv_load(vc, vb + jj * kvw + 16 * i, m[i], F16);
			for (int h = 0; h < NH; h++) {
				__m512 pv = _mm512_set1_ps(F16 == KV_Q8 ? p[h * ld + j0 + jj] * sv[jj] : p[h * ld + j0 + jj]);
				for (int i = 0; i < 4; i++)
					acc[h][i] = _mm512_fmadd_ps(pv, v[i], acc[h][i]);
			}
		}
	}
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < 4; i++)
			_mm512_mask_storeu_ps(out + h * hd + d0 + 16 * i, m[i], acc[h][i]);
}
#define PV_WIDTH 64

#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)
#define VW 8
#define NT 2
#define HB 2
#define TILE_OK(hd) ((hd) % 8 == 0)

/* The values i…i+cnt-1 (cnt ≤ 8; the other lanes 0), of a cache of f32
 * (F16 0), f16 (KV_F16) or int8 (KV_Q8: cnt 8 only) values. */
OC_INLINE __m256 kv_load(const void *c, int64_t i, int64_t cnt, const int F16) {
	if (F16 == KV_Q8)
		return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)c + i))));
	if (F16) {
		const uint16_t *h = (const uint16_t *)c + i;
		if (cnt >= 8)
			return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
		uint16_t t[8] = {0};
		memcpy(t, h, (size_t)cnt * 2);
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)t));
	}
	const float *f = (const float *)c + i;
	if (cnt >= 8)
		return _mm256_loadu_ps(f);
	return _mm256_maskload_ps(f, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)cnt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

/* As the AVX-512 one, for tiles of ≤ 8 keys. */
OC_INLINE void scores_heads(float *s, int64_t ld, const float *q, const int NH, int64_t hd,
			    const void *kc, const ktile *t, int64_t bs, float scale, const int F16) {
	__m256 a[2][NT];
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT; i++)
			a[h][i] = _mm256_setzero_ps();
	for (int64_t d = 0; d < hd; d++) {
		__m256 k[NT];
		for (int i = 0; i < NT; i++)
			k[i] = kv_load(kc, t[i].off + d * bs, t[i].cnt, F16);
		for (int h = 0; h < NH; h++) {
			__m256 qv = _mm256_set1_ps(q[h * hd + d]);
			for (int i = 0; i < NT; i++)
				a[h][i] = _mm256_fmadd_ps(qv, k[i], a[h][i]);
		}
	}
	const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT; i++)
			_mm256_maskstore_ps(s + h * ld + t[i].j, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)t[i].cnt), lane),
					    _mm256_mul_ps(a[h][i], _mm256_set1_ps(scale)));
}

/* As the AVX-512 one, over 32 dimensions (hd a multiple of 8). */
OC_INLINE void pv_heads(float *out, const float *p, int64_t ld, const int NH, const void *vc, int64_t kvw, int64_t off,
			const int32_t *blocks, int64_t bs, int64_t npos, int64_t hd, int64_t d0, const int F16,
			const float *vs, int64_t kv_heads, int64_t g) {
	int nv = hd - d0 >= 32 ? 4 : (int)((hd - d0) / 8);
	__m256 acc[2][4];
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < 4; i++)
			acc[h][i] = _mm256_setzero_ps();
	for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
		int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
		int64_t vb = (int64_t)blocks[blk] * bs * kvw + off + d0;
		const float *sv = F16 == KV_Q8 ? vs + oc_kv8_scale_index((int64_t)blocks[blk] * bs, bs, kv_heads, g) : NULL;
		prefetch_values(vc, F16, blocks, j0 + bs, bs, npos, kvw, off + d0, nv * 8);
		for (int64_t jj = 0; jj < cnt; jj++) {
			__m256 v[4];
			for (int i = 0; i < nv; i++)
				v[i] = kv_load(vc, vb + jj * kvw + 8 * i, 8, F16);
			for (int h = 0; h < NH; h++) {
				__m256 pv = _mm256_set1_ps(F16 == KV_Q8 ? p[h * ld + j0 + jj] * sv[jj] : p[h * ld + j0 + jj]);
				for (int i = 0; i < nv; i++)
					acc[h][i] = _mm256_fmadd_ps(pv, v[i], acc[h][i]);
			}
		}
	}
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < nv; i++)
			_mm256_storeu_ps(out + h * hd + d0 + 8 * i, acc[h][i]);
}
#define PV_WIDTH 32
#endif

#if defined(VW)
/* The cases of a switch on a head count (up to HB) and the element type,
 * calling F with the count and the type as constants. */
#if HB > 2
#define BY_HEADS(F, nh, f16)                                                 \
	switch ((nh) * 2 + ((f16) != 0)) {                                   \
	case 8: F(4, 0); break;                                              \
	case 9: F(4, 1); break;                                              \
	case 6: F(3, 0); break;                                              \
	case 7: F(3, 1); break;                                              \
	case 4: F(2, 0); break;                                              \
	case 5: F(2, 1); break;                                              \
	case 3: F(1, 1); break;                                              \
	default: F(1, 0); break;                                             \
	}
#else
#define BY_HEADS(F, nh, f16)                                                 \
	switch ((nh) * 2 + ((f16) != 0)) {                                   \
	case 4: F(2, 0); break;                                              \
	case 5: F(2, 1); break;                                              \
	case 3: F(1, 1); break;                                              \
	default: F(1, 0); break;                                             \
	}
#endif

/* The scores of nh heads over the npos positions of the block table: the
 * tiles of keys NT at a time (the last pass padded with empty tiles), for
 * HB heads at a time. */
static void scores_group(float *s, int64_t ld, const float *q, int64_t nh, int64_t hd, const void *kc, const void *vc,
			 int f16, int64_t kvw, int64_t g, const int32_t *blocks, int64_t bs, int64_t npos, float scale) {
	ktile t[NT];
	int n = 0;
	const int64_t es = f16 ? 2 : 4;
	for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
		int64_t kt = oc_k_index((int64_t)blocks[blk] * bs, bs, kvw, hd, g, 0);
		int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
		/*
		 * Ask for the next block's keys now, and in the last block for
		 * the first block's values (pv_heads asks for each next one): a
		 * step of several sequences reads caches far larger than the
		 * cache, block by block, and the hardware prefetcher does not
		 * follow a jump to another block. Measured on the 2-vCPU AVX-512
		 * dev VM, one thread running a 135M model's attention tasks (3
		 * heads on a KV head of 64 dimensions) for 8 sequences × 30
		 * layers, µs per task without / with: 128 positions, f32 cache
		 * 5.1-5.2 / 3.6, f16 4.2-6.2 / 2.0-2.3; 2048 positions, f32
		 * 76-80 / 64-66, f16 80-81 / 40. (Asking for all of a task's
		 * values during the scores did less: 128 positions, f16
		 * 2.5-2.8.)
		 */
		if (j0 + bs < npos)
			prefetch_span((const char *)kc + oc_k_index((int64_t)blocks[blk + 1] * bs, bs, kvw, hd, g, 0) * es,
				      hd * bs * es, 1, 0);
		else
			prefetch_values(vc, f16, blocks, 0, bs, npos, kvw, g * hd, hd);
		for (int64_t jj = 0; jj < cnt; jj += VW) {
			t[n++] = (ktile){kt + jj, j0 + jj, cnt - jj < VW ? cnt - jj : VW};
			int last = jj + VW >= cnt && j0 + cnt >= npos;
			if (n < NT && !last)
				continue;
			for (; n < NT; n++)
				t[n] = (ktile){kt, 0, 0};
			for (int64_t h = 0; h < nh; h += HB) {
#define SCORES(NH, F16) scores_heads(s + h * ld, ld, q + h * hd, NH, hd, kc, t, bs, scale, F16)
				BY_HEADS(SCORES, nh - h >= HB ? HB : nh - h, f16)
#undef SCORES
			}
			n = 0;
		}
	}
}

static void pv_group(float *out, const float *p, int64_t ld, int64_t nh, const void *vc, int f16, int64_t kvw,
		     int64_t off, const int32_t *blocks, int64_t bs, int64_t npos, int64_t hd) {
	for (int64_t d0 = 0; d0 < hd; d0 += PV_WIDTH)
		for (int64_t h = 0; h < nh; h += HB) {
#define PV(NH, F16) pv_heads(out + h * hd, p + h * ld, ld, NH, vc, kvw, off, blocks, bs, npos, hd, d0, F16, NULL, 0, 0)
			BY_HEADS(PV, nh - h >= HB ? HB : nh - h, f16)
#undef PV
		}
}
#endif

/*
 * ref.Attention for the nh query heads that share KV head g, in one task:
 * the group's cached keys and values are read from memory once and stay
 * in cache for its other heads. scores holds nh rows of npos (rounded up
 * to 16) floats.
 */
void oc_attention_group(float *out, const float *q, const void *kc, const void *vc, int f16, int64_t kvw,
			const int32_t *blocks, int64_t bs, int64_t npos, int64_t g, int64_t nh,
			int64_t hd, float scale, float *scores) {
	int64_t ld = (npos + 15) / 16 * 16;
	int64_t off = g * hd;
#if defined(VW)
	if (TILE_OK(hd)) {
		scores_group(scores, ld, q, nh, hd, kc, vc, f16, kvw, g, blocks, bs, npos, scale);
		for (int64_t h = 0; h < nh; h++)
			oc_softmax(scores + h * ld, npos);
		pv_group(out, scores, ld, nh, vc, f16, kvw, off, blocks, bs, npos, hd);
		return;
	}
#endif
	for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
		int64_t kt = oc_k_index((int64_t)blocks[blk] * bs, bs, kvw, hd, g, 0);
		int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
		for (int64_t h = 0; h < nh; h++) {
			float *s = scores + h * ld + j0;
			memset(s, 0, (size_t)cnt * sizeof(float));
			for (int64_t d = 0; d < hd; d++) { /* each key's sum in ref's order */
				float qd = q[h * hd + d];
				for (int64_t jj = 0; jj < cnt; jj++)
					s[jj] += qd * kv_at(kc, kt + d * bs + jj, f16);
			}
			for (int64_t jj = 0; jj < cnt; jj++)
				s[jj] *= scale;
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
			int64_t vr = (base + jj) * kvw + off;
			for (int64_t h = 0; h < nh; h++) {
				float pj = scores[h * ld + j0 + jj];
				for (int64_t d = 0; d < hd; d++)
					out[h * hd + d] += pj * kv_at(vc, vr + d, f16);
			}
		}
	}
}

/* ------------------------------------------------------ q8 KV cache */

/*
 * A q8 cache (internal.h: oc_k8_index) holds int8 rows with a scale each,
 * about half an f16 cache's bytes. The keys are unsigned (k+128) in groups
 * of 4 dimensions, so that with AVX-512 VNNI one vpdpbusd multiplies 4
 * dimensions of 16 keys by 4 bytes of the query (rounded the same way,
 * signed) in int32: a quarter of the instructions of the f32 scores, and
 * exact. The offset adds 128·Σq to every key's sum, which the sum's
 * starting value takes away.
 */

float oc_q8_row(int8_t *q, const float *x, int64_t n) {
	float amax = 0;
#if defined(OC_ISA_AVX512)
	__m512 m = _mm512_setzero_ps();
	__mmask16 nan = 0;
	for (int64_t i = 0; i < n; i += 16) {
		__mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		__m512 v = _mm512_maskz_loadu_ps(k, x + i);
		m = _mm512_max_ps(m, _mm512_abs_ps(v));
		nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
	}
	amax = nan ? NAN : _mm512_reduce_max_ps(m);
#else
	for (int64_t i = 0; i < n; i++) {
		float a = fabsf(x[i]);
		amax = a > amax || a != a ? a : amax;
		if (a != a)
			break;
	}
#endif
	if (!(amax >= OC_Q8_ROW_MIN && amax <= FLT_MAX)) { /* 0, too small for 127/amax, infinite or NaN */
		for (int64_t i = 0; i < n; i++)
			q[i] = 0;
		return 0;
	}
	float id = 127.0f / amax; /* |x·id| is at most 127.00002: never rounds past 127 */
#if defined(OC_ISA_AVX512)
	__m512 vid = _mm512_set1_ps(id);
	for (int64_t i = 0; i < n; i += 16) {
		__mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		__m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vid));
		_mm_mask_storeu_epi8(q + i, k, _mm512_cvtsepi32_epi8(v));
	}
#else
	for (int64_t i = 0; i < n; i++)
		q[i] = (int8_t)nearbyintf(x[i] * id);
#endif
	return amax / 127.0f;
}

void oc_kv8_store(uint8_t *kc, int8_t *vc, float *ks, float *vs, const float *k, const float *v, int64_t slot,
		  int64_t bs, int64_t kv_heads, int64_t hd, int64_t g0, int64_t ng) {
	const int64_t kvw = kv_heads * hd;
	int8_t row[OC_KV8_MAX_HD];
	for (int64_t g = g0; g < g0 + ng; g++) {
		ks[oc_kv8_scale_index(slot, bs, kv_heads, g)] = oc_q8_row(row, k + (g - g0) * hd, hd);
		uint8_t *kt = kc + oc_k8_index(slot, bs, kvw, hd, g, 0); /* then 4 bytes every 4·bs */
		for (int64_t d = 0; d < hd; d += 4)
			for (int c = 0; c < 4; c++)
				kt[d * bs + c] = (uint8_t)(row[d + c] + 128);
		vs[oc_kv8_scale_index(slot, bs, kv_heads, g)] = oc_q8_row(vc + slot * kvw + g * hd, v + (g - g0) * hd, hd);
	}
}

/* Up to 16 consecutive keys of one block: their first group of 4
 * dimensions starts at byte off of the K cache, their scales at soff;
 * their scores go to column j. */
typedef struct {
	int64_t off, soff, j, cnt;
} k8tile;

#if defined(OC_ISA_AVX512)
#define VW8 16 /* keys per tile */
#define NT8 4  /* tiles per pass */
#define HB8 4  /* heads per pass */

/* Scores of NH heads (qq: rows of hd bytes, sums qs, scales qd) against
 * NT8 tiles (tiles of 0 keys add nothing), times scale, into s (rows ld
 * apart). */
OC_INLINE void scores8_heads(float *s, int64_t ld, const int8_t *qq, const int32_t *qs, const float *qd, const int NH,
			     int64_t hd, const uint8_t *kc, const float *ks, const k8tile *t, int64_t bs, float scale) {
	__mmask16 m[NT8];
	__m512i a[4][NT8];
	for (int i = 0; i < NT8; i++)
		m[i] = (__mmask16)((1u << t[i].cnt) - 1);
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT8; i++)
			a[h][i] = _mm512_set1_epi32(-128 * qs[h]);
	for (int64_t e = 0; e < hd / 4; e++) {
		__m512i k[NT8];
		for (int i = 0; i < NT8; i++)
			k[i] = _mm512_maskz_loadu_epi32(m[i], kc + t[i].off + e * 4 * bs);
		for (int h = 0; h < NH; h++) {
			int32_t qv;
			memcpy(&qv, qq + h * hd + 4 * e, 4);
			__m512i qb = _mm512_set1_epi32(qv);
			for (int i = 0; i < NT8; i++)
				a[h][i] = _mm512_dpbusd_epi32(a[h][i], k[i], qb);
		}
	}
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT8; i++) {
			__m512 d = _mm512_mul_ps(_mm512_maskz_loadu_ps(m[i], ks + t[i].soff), _mm512_set1_ps(qd[h] * scale));
			_mm512_mask_storeu_ps(s + h * ld + t[i].j, m[i], _mm512_mul_ps(_mm512_cvtepi32_ps(a[h][i]), d));
		}
}

/* A switch on a head count of 1…HB8, calling F with it as a constant. */
#define BY_HEADS8(F, nh)                                                     \
	switch (nh) {                                                        \
	case 4: F(4); break;                                                 \
	case 3: F(3); break;                                                 \
	case 2: F(2); break;                                                 \
	default: F(1); break;                                                \
	}

#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)
#define VW8 8
#define NT8 2
#define HB8 2

#if defined(OC_ISA_AVXVNNI)
/* As the AVX-512 one, for tiles of ≤ 8 keys. */
OC_INLINE void scores8_heads(float *s, int64_t ld, const int8_t *qq, const int32_t *qs, const float *qd, const int NH,
			     int64_t hd, const uint8_t *kc, const float *ks, const k8tile *t, int64_t bs, float scale) {
	const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	__m256i m[NT8], a[2][NT8];
	for (int i = 0; i < NT8; i++)
		m[i] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)t[i].cnt), lane);
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT8; i++)
			a[h][i] = _mm256_set1_epi32(-128 * qs[h]);
	for (int64_t e = 0; e < hd / 4; e++) {
		__m256i k[NT8];
		for (int i = 0; i < NT8; i++)
			k[i] = _mm256_maskload_epi32((const int *)(kc + t[i].off + e * 4 * bs), m[i]);
		for (int h = 0; h < NH; h++) {
			int32_t qv;
			memcpy(&qv, qq + h * hd + 4 * e, 4);
			__m256i qb = _mm256_set1_epi32(qv);
			for (int i = 0; i < NT8; i++)
				a[h][i] = _mm256_dpbusd_avx_epi32(a[h][i], k[i], qb);
		}
	}
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT8; i++) {
			__m256 d = _mm256_mul_ps(_mm256_maskload_ps(ks + t[i].soff, m[i]), _mm256_set1_ps(qd[h] * scale));
			_mm256_maskstore_ps(s + h * ld + t[i].j, m[i], _mm256_mul_ps(_mm256_cvtepi32_ps(a[h][i]), d));
		}
}
#else
/*
 * As the AVX-512 one, for tiles of ≤ 8 keys, without VNNI: each load of 4
 * dimensions of 8 keys is regrouped by dimension (a byte shuffle in each
 * 128-bit half, then dwords across them), widened to f32 and multiplied by
 * the query's int8 values as floats. Every product and partial sum is an
 * integer below 2^24 in magnitude (255·127·hd with hd ≤ OC_KV8_MAX_HD), so
 * the f32 sums are exact: the same scores as the integer ones.
 */
OC_INLINE void scores8_heads(float *s, int64_t ld, const int8_t *qq, const int32_t *qs, const float *qd, const int NH,
			     int64_t hd, const uint8_t *kc, const float *ks, const k8tile *t, int64_t bs, float scale) {
	const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	const __m256i byd = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9,
					     13, 2, 6, 10, 14, 3, 7, 11, 15);
	const __m256i dws = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	__m256i m[NT8];
	__m256 a[2][NT8];
	for (int i = 0; i < NT8; i++)
		m[i] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)t[i].cnt), lane);
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT8; i++)
			a[h][i] = _mm256_setzero_ps();
	for (int64_t e = 0; e < hd / 4; e++) {
		__m256 k[NT8][4];
		for (int i = 0; i < NT8; i++) {
			__m256i w = _mm256_maskload_epi32((const int *)(kc + t[i].off + e * 4 * bs), m[i]);
			w = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(w, byd), dws);
			__m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
			k[i][0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
			k[i][1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
			k[i][2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
			k[i][3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
		}
		for (int h = 0; h < NH; h++)
			for (int c = 0; c < 4; c++) {
				__m256 qv = _mm256_set1_ps((float)qq[h * hd + 4 * e + c]);
				for (int i = 0; i < NT8; i++)
					a[h][i] = _mm256_fmadd_ps(qv, k[i][c], a[h][i]);
			}
	}
	for (int h = 0; h < NH; h++)
		for (int i = 0; i < NT8; i++) {
			__m256 d = _mm256_mul_ps(_mm256_maskload_ps(ks + t[i].soff, m[i]), _mm256_set1_ps(qd[h] * scale));
			__m256 sum = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_cvtps_epi32(a[h][i]), _mm256_set1_epi32(-128 * qs[h])));
			_mm256_maskstore_ps(s + h * ld + t[i].j, m[i], _mm256_mul_ps(sum, d));
		}
}
#endif

#define BY_HEADS8(F, nh)                                                     \
	switch (nh) {                                                        \
	case 2: F(2); break;                                                 \
	default: F(1); break;                                                \
	}
#endif

#if defined(VW8)
static void scores8_group(float *s, int64_t ld, const int8_t *qq, const int32_t *qs, const float *qd, int64_t nh,
			  int64_t hd, const uint8_t *kc, const float *ks, const int8_t *vc, int64_t kv_heads, int64_t g,
			  const int32_t *blocks, int64_t bs, int64_t npos, float scale) {
	const int64_t kvw = kv_heads * hd;
	k8tile t[NT8];
	int n = 0;
	for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
		int64_t slot = (int64_t)blocks[blk] * bs, cnt = npos - j0 < bs ? npos - j0 : bs;
		int64_t kt = oc_k8_index(slot, bs, kvw, hd, g, 0), st = oc_kv8_scale_index(slot, bs, kv_heads, g);
		/* the next block's keys, or in the last block the first values (as scores_group) */
		if (j0 + bs < npos)
			prefetch_span((const char *)kc + oc_k8_index((int64_t)blocks[blk + 1] * bs, bs, kvw, hd, g, 0), hd * bs, 1, 0);
		else
			prefetch_span((const char *)(vc + (int64_t)blocks[0] * bs * kvw + g * hd), hd, npos < bs ? npos : bs, kvw);
		for (int64_t jj = 0; jj < cnt; jj += VW8) {
			t[n++] = (k8tile){kt + jj * 4, st + jj, j0 + jj, cnt - jj < VW8 ? cnt - jj : VW8};
			int last = jj + VW8 >= cnt && j0 + cnt >= npos;
			if (n < NT8 && !last)
				continue;
			for (; n < NT8; n++)
				t[n] = (k8tile){kt, st, 0, 0};
			for (int64_t h = 0; h < nh; h += HB8) {
#define SCORES8(NH) scores8_heads(s + h * ld, ld, qq + h * hd, qs + h, qd + h, NH, hd, kc, ks, t, bs, scale)
				BY_HEADS8(SCORES8, nh - h >= HB8 ? HB8 : nh - h)
#undef SCORES8
			}
			n = 0;
		}
	}
}
#endif

void oc_attention_q8(float *out, const float *q, const uint8_t *kc, const int8_t *vc, const float *ks,
		     const float *vs, int64_t kv_heads, const int32_t *blocks, int64_t bs, int64_t npos, int64_t g,
		     int64_t nh, int64_t hd, float scale, float *scores, int8_t *qq, float *qd, int32_t *qs) {
	const int64_t ld = (npos + 15) / 16 * 16, kvw = kv_heads * hd, off = g * hd;
	for (int64_t h = 0; h < nh; h++) {
		qd[h] = oc_q8_row(qq + h * hd, q + h * hd, hd);
		int32_t sum = 0;
		for (int64_t d = 0; d < hd; d++)
			sum += qq[h * hd + d];
		qs[h] = sum;
	}
#if defined(VW8)
	if (TILE_OK(hd)) {
		scores8_group(scores, ld, qq, qs, qd, nh, hd, kc, ks, vc, kv_heads, g, blocks, bs, npos, scale);
		for (int64_t h = 0; h < nh; h++)
			oc_softmax(scores + h * ld, npos);
		for (int64_t d0 = 0; d0 < hd; d0 += PV_WIDTH)
			for (int64_t h = 0; h < nh; h += HB8) {
#define PV8(NH) pv_heads(out + h * hd, scores + h * ld, ld, NH, vc, kvw, off, blocks, bs, npos, hd, d0, KV_Q8, vs, kv_heads, g)
				BY_HEADS8(PV8, nh - h >= HB8 ? HB8 : nh - h)
#undef PV8
			}
		return;
	}
#endif
	for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
		int64_t slot = (int64_t)blocks[blk] * bs, cnt = npos - j0 < bs ? npos - j0 : bs;
		for (int64_t jj = 0; jj < cnt; jj++) {
			float dk = ks[oc_kv8_scale_index(slot + jj, bs, kv_heads, g)];
			for (int64_t h = 0; h < nh; h++) {
				int32_t acc = -128 * qs[h];
				for (int64_t d = 0; d < hd; d++)
					acc += (int32_t)qq[h * hd + d] * kc[oc_k8_index(slot + jj, bs, kvw, hd, g, d)];
				scores[h * ld + j0 + jj] = (float)acc * (dk * (qd[h] * scale));
			}
		}
	}
	for (int64_t h = 0; h < nh; h++) {
		oc_softmax(scores + h * ld, npos);
		memset(out + h * hd, 0, (size_t)hd * sizeof(float));
	}
	for (int64_t j0 = 0, blk = 0; j0 < npos; j0 += bs, blk++) {
		int64_t cnt = npos - j0 < bs ? npos - j0 : bs;
		for (int64_t jj = 0; jj < cnt; jj++) {
			const int8_t *vr = vc + ((int64_t)blocks[blk] * bs + jj) * kvw + off;
			float sv = vs[oc_kv8_scale_index((int64_t)blocks[blk] * bs + jj, bs, kv_heads, g)];
			for (int64_t h = 0; h < nh; h++) {
				float pj = scores[h * ld + j0 + jj] * sv;
				for (int64_t d = 0; d < hd; d++)
					out[h * hd + d] += pj * (float)vr[d];
			}
		}
	}
}
