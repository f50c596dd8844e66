/*
 * internal.h — declarations shared by the library's source files.
 *
 * The same sources build every variant; the compiler flags of the variant
 * select one instruction set below (OC_ISA_*), and each kernel file has one
 * implementation per instruction set under #if.
 */
#ifndef OCTET_INTERNAL_H
#define OCTET_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "octet.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define OC_ISA_AVX512 1
#define OC_ISA_NAME "avx512"
#elif defined(__AVXVNNI__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define OC_ISA_AVXVNNI 1
#define OC_ISA_NAME "avxvnni"
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define OC_ISA_AVX2 1
#define OC_ISA_NAME "avx2"
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#define OC_ISA_NEON 1
#define OC_ISA_NAME "neon-dotprod"
#else
#define OC_ISA_PORTABLE 1
#define OC_ISA_NAME "portable"
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#define OC_EXPORT __attribute__((visibility("default")))
#define OC_INLINE static inline __attribute__((always_inline))

/* Q8_0: blocks of 32 int8 with an fp16 scale in front. */
#define QK 32
#define Q8_BLOCK 34
/* The runner's own type code for a Q8_0 matrix it packed at load. */
#define OC_Q8_PACKED 1008

/* Rows of a matrix one task of a parallel matrix product covers: a
 * multiple of every microkernel's row tile and of QK, so a task that owns
 * rows of the FFN's gate and up can quantize its own blocks of the product. */
#define OC_CHUNK 64

/* ---- scalar conversions ---- */

OC_INLINE float oc_f16_to_f32(uint16_t h) {
	uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
	if (exp == 0x1f) {
		bits = sign | 0x7f800000u | (mant << 13);
	} else if (exp != 0) {
		bits = sign | ((exp + 112) << 23) | (mant << 13);
	} else if (mant == 0) {
		bits = sign;
	} else {
		float f = (float)mant * (1.0f / 16777216.0f);
		return sign ? -f : f;
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

OC_INLINE float oc_bf16_to_f32(uint16_t h) {
	uint32_t bits = (uint32_t)h << 16;
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

/* f32 to f16, rounded to nearest even (as Go's gguf.F32ToF16). */
OC_INLINE uint16_t oc_f32_to_f16(float f) {
#if defined(__F16C__)
	return (uint16_t)_cvtss_sh(f, 0);
#else
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
	if (ax >= 0x7f800000u) /* inf, nan */
		return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
	if (ax >= 0x477ff000u) /* rounds to 65520 or more */
		return (uint16_t)(sign | 0x7c00);
	if (ax < 0x38800000u) { /* below 2^-14: a subnormal half, in units of 2^-24 */
		if (ax < 0x33000000u) /* at most 2^-25: 0 (a tie goes to even) */
			return (uint16_t)sign;
		uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e; /* 14…24 */
		uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (q & 1)))
			q++;
		return (uint16_t)(sign | q);
	}
	return (uint16_t)(sign | ((ax + 0xc8000fffu + ((ax >> 13) & 1)) >> 13));
#endif
}

OC_INLINE uint16_t oc_load_u16(const void *p) {
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

OC_INLINE int64_t oc_row_bytes(int64_t type, int64_t cols) {
	switch (type) {
	case OC_F32: return cols * 4;
	case OC_F16:
	case OC_BF16: return cols * 2;
	case OC_Q8_0: return cols / QK * Q8_BLOCK;
	}
	return -1;
}

/* ---- thread pool (pool.c) ---- */

typedef struct oc_pool oc_pool;
typedef void (*oc_job)(void *arg, int tid, int nthreads);

oc_pool *oc_pool_new(int threads);
void oc_pool_free(oc_pool *p);
int oc_pool_threads(const oc_pool *p);
/* oc_pool_run runs job on every thread (the caller is thread 0) and returns
 * when all have returned. */
void oc_pool_run(oc_pool *p, oc_job job, void *arg);
/* oc_barrier waits until every thread of the running job reaches it. */
void oc_barrier(oc_pool *p);
/* Work sharing of a parallel region's total items among nt threads (see
 * pool.c): the next item for thread tid, or -1 when none is left. ctr holds
 * nt counters, OC_CTR_STRIDE apart (one cache line each), zeroed before
 * the region. */
#define OC_CTR_STRIDE 8
int64_t oc_take(_Atomic int64_t *ctr, int tid, int nt, int64_t total);

/* ---- per-thread scratch ---- */

typedef struct oc_scratch {
	uint8_t *pack; /* packed weight panels (q8), OC_CHUNK rows */
	float *rowf;   /* weight rows decoded to f32 */
	float *att;    /* attention scores: group × context */
	int8_t *qq;    /* a query rounded for a q8 cache: group × hd bytes, */
	float *qd;     /* its scales */
	int32_t *qs;   /* and sums, group each */
	size_t pack_bytes, rowf_n, att_n;
} oc_scratch;

int oc_scratch_init(oc_scratch *s, int64_t kmax, int64_t ctx, int64_t group);
void oc_scratch_free(oc_scratch *s);

/* ---- memory ---- */
void *oc_alloc(size_t bytes); /* 64-byte aligned, zeroed; NULL on failure */
void oc_free(void *p);
void *oc_map(size_t bytes); /* anonymous mapping; NULL on failure */
/* Bytes of memory this process can still take: the host's MemAvailable, or
 * less under a cgroup v2 memory limit; -1 when neither can be read. */
int64_t oc_memory_left(void);
void oc_unmap(void *p, size_t bytes);

/* ---- activations quantized to Q8 blocks (q8.c) ----
 * Row t of n: q[t*lq + i] int8 values; d[t*lb + b] the block's scale (f32),
 * c[t*lb + b] = -128 × (sum of the block's values), the correction that the
 * unsigned×signed dot products of the VNNI kernels need. */
typedef struct oc_qact {
	int8_t *q;
	float *d;
	int32_t *c;
	int64_t lq, lb, k;
	/* AVX-512 only (else NULL): per pair of blocks, 16 lanes holding the
	 * two scales (8 lanes each) and the two corrections (lanes 0 and 8). */
	float *de;
	int32_t *ce;
	int64_t le;
} oc_qact;

size_t oc_qact_bytes(int64_t n, int64_t k);
/* Lays out n rows of k in mem (oc_qact_bytes); expanded: also the per-pair
 * vectors, which only the direct kernel reads (products over matrices not
 * packed at load: OCTET_CPU_WEIGHTS=mmap, or the kernel tests). */
void oc_qact_bind(oc_qact *a, void *mem, int64_t n, int64_t k, int expanded);
/* Quantize rows [t0, t1) of x (row stride ldx), blocks [b0, b1) of each;
 * b0 must be even and b1 even or the row's last block. */
void oc_quantize_rows(oc_qact *a, const float *x, int64_t ldx, int64_t t0, int64_t t1, int64_t b0, int64_t b1);

/* y[t*ldy + r] (+)= dot(row r of w, activation t), rows [r0, r1), tokens
 * [0, n). w is Q8_0 with k columns. */
void oc_q8_matmul(oc_scratch *s, const uint8_t *w, int64_t k, int64_t r0, int64_t r1,
		  const oc_qact *a, int64_t n, float *y, int64_t ldy, int acc);
/* The direct kernel alone (no packing), for tests and measurements. */
void oc_q8_matmul_direct(const uint8_t *w, int64_t k, int64_t r0, int64_t r1,
			 const oc_qact *a, int64_t n, float *y, int64_t ldy, int acc);
/* The packed (GEMM) path alone, for tests and measurements. */
void oc_q8_matmul_packed(oc_scratch *s, const uint8_t *w, int64_t k, int64_t r0, int64_t r1,
			 const oc_qact *a, int64_t n, float *y, int64_t ldy, int acc);
/* Tokens from which oc_q8_matmul packs weight panels. */
extern const int oc_q8_pack_min;
/* Rows per packed panel of this variant. */
extern const int oc_q8_mr;
/* A matrix packed at load: panels of oc_q8_mr rows (the last one padded),
 * in the layout of q8.c. oc_q8_prepack packs panels [p0, p1) of w (rows ×
 * k, Q8_0) into dst (oc_q8_prepacked_bytes). */
size_t oc_q8_prepacked_bytes(int64_t rows, int64_t k);
size_t oc_q8_scratch_pack_bytes(int64_t k);
void oc_q8_prepack(const uint8_t *w, int64_t k, int64_t rows, int64_t p0, int64_t p1, uint8_t *dst);
/* Same contract as oc_q8_matmul over a prepacked matrix; r0 must be a
 * multiple of oc_q8_mr. */
void oc_q8_matmul_prepacked(const uint8_t *pw, int64_t k, int64_t rows, int64_t r0, int64_t r1,
			    const oc_qact *a, int64_t n, float *y, int64_t ldy, int acc);

/* ---- float weights (fmat.c) ---- */
/* Same contract, for F32, F16 and BF16 weights and f32 activations x
 * (row stride ldx). */
void oc_f_matmul(oc_scratch *s, const void *w, int64_t type, int64_t k, int64_t r0, int64_t r1,
		 const float *x, int64_t ldx, int64_t n, float *y, int64_t ldy, int acc);
/* Decode row r of a tensor of any type into dst (k floats). */
void oc_decode_row(const void *w, int64_t type, int64_t k, int64_t r, float *dst);

/* ---- elementwise and attention (ops.c) ---- */
float oc_dot(const float *a, const float *b, int64_t n);
void oc_rmsnorm(float *dst, const float *x, const float *w, int64_t n, float eps);
void oc_softmax(float *x, int64_t n);
void oc_silu_gate(float *dst, const float *gate, const float *up, int64_t n);
/* Rotate heads of x in place by the angles cs (cos) and sn (sin), rope_dims/2 of each. */
void oc_rope_apply(float *x, int64_t heads, int64_t hd, int64_t rdims, int neox, const float *cs, const float *sn);
/* cos and sin of θ_i = pos·fs·pw[i] / fr[i] for i < half (ref's formula). */
void oc_rope_angles(float *cs, float *sn, const double *pw, const double *fr, double fs, int64_t half, int64_t pos);
/*
 * A layer's K cache holds each block's keys transposed (see ops.c): the
 * index of dimension d of KV head g of the key at slot (= block·bs +
 * offset); kvw = KV heads × hd. The V cache holds rows: slot·kvw + g·hd + d.
 * Both hold f32 or f16 values (oc_model_desc.kv_type).
 */
OC_INLINE int64_t oc_k_index(int64_t slot, int64_t bs, int64_t kvw, int64_t hd, int64_t g, int64_t d) {
	return slot / bs * bs * kvw + (g * hd + d) * bs + slot % bs;
}
/*
 * A q8 cache (kv_type OC_Q8_0, ops.c) holds each (position, KV head) row of
 * hd values as int8 multiples of one f32 scale. Keys are stored +128 and
 * by groups of 4 dimensions: dimension d of KV head g of the key at slot
 * lies at oc_k8_index; values at slot·kvw + g·hd + d as in the other
 * caches; the scales of both at oc_kv8_scale_index.
 */
OC_INLINE int64_t oc_k8_index(int64_t slot, int64_t bs, int64_t kvw, int64_t hd, int64_t g, int64_t d) {
	return slot / bs * bs * kvw + g * hd * bs + (d / 4) * 4 * bs + slot % bs * 4 + d % 4;
}
OC_INLINE int64_t oc_kv8_scale_index(int64_t slot, int64_t bs, int64_t kv_heads, int64_t g) {
	return (slot / bs * kv_heads + g) * bs + slot % bs;
}
#define OC_KV8_MAX_HD 512 /* the widest head a q8 cache takes (f32 sums of its scores stay exact, ops.c) */
/* Rounds the n values of x to int8 multiples of the returned scale, as
 * backends.Q8Round: d = max|x|/127, q = x·(127/max|x|) rounded to nearest
 * even; a row whose max|x| is below OC_Q8_ROW_MIN (0, or so small that
 * 127/max|x| overflows), infinite or NaN is all zeros with scale 0. */
#define OC_Q8_ROW_MIN 1e-30f
float oc_q8_row(int8_t *q, const float *x, int64_t n);
/* Stores the keys k and values v (ng·hd values each) of KV heads g0…
 * g0+ng-1 of the token at slot into a q8 cache. */
void oc_kv8_store(uint8_t *kc, int8_t *vc, float *ks, float *vs, const float *k, const float *v, int64_t slot,
		  int64_t bs, int64_t kv_heads, int64_t hd, int64_t g0, int64_t ng);
/* oc_attention_group over a q8 cache; qq holds nh·hd bytes and qd, qs nh
 * values (the rounded query). */
void oc_attention_q8(float *out, const float *q, const uint8_t *kc, const int8_t *vc, const float *ks,
		     const float *vs, int64_t kv_heads, const int32_t *blocks, int64_t bs, int64_t npos, int64_t g,
		     int64_t nh, int64_t hd, float scale, float *scores, int8_t *qq, float *qd, int32_t *qs);
/*
 * Attention of one query token over positions 0…npos-1 of its sequence,
 * for the query heads h0…h0+nh-1 that share KV head g. slot(j) =
 * blocks[j / bs] * bs + j % bs, in caches of the layout above.
 */
void oc_attention_group(float *out, const float *q, const void *kc, const void *vc, int f16, int64_t kvw,
			const int32_t *blocks, int64_t bs, int64_t npos, int64_t g, int64_t nh,
			int64_t hd, float scale, float *scores);

#endif
