/*
 * api.c — the functions the Go side calls (through purego), with the
 * memory rules of octet.h: every pointer argument except a runner's weights
 * is used during the call only.
 *
 * Besides the runner, it exposes each kernel on its own (oc_k_*), so that Go
 * tests can compare it with its twin in backends/ref and Go benchmarks can
 * time it, and a memory-bandwidth probe for the decode roofline.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stddef.h>
#include <time.h>

#include "internal.h"

typedef struct oc_runner oc_runner;
oc_runner *oc_runner_new_impl(const oc_model_desc *d, char *err, int64_t errlen);
void oc_runner_free_impl(oc_runner *r);
int64_t oc_forward_impl(oc_runner *r, const oc_batch *b);
void oc_cancel_impl(oc_runner *r);

OC_EXPORT int64_t oc_abi_version(void) { return OC_ABI_VERSION; }

/* Copies the variant's name ("avx512", "avx2", …) into buf. */
OC_EXPORT int64_t oc_variant(char *buf, int64_t len) {
	const char *name = OC_ISA_NAME;
	int64_t n = (int64_t)strlen(name);
	if (len > 0) {
		int64_t m = n < len - 1 ? n : len - 1;
		memcpy(buf, name, (size_t)m);
		buf[m] = 0;
	}
	return n;
}

OC_EXPORT void *oc_runner_new(const oc_model_desc *d, char *err, int64_t errlen) {
	return oc_runner_new_impl(d, err, errlen);
}

OC_EXPORT void oc_runner_free(void *r) { oc_runner_free_impl(r); }

OC_EXPORT int64_t oc_forward(void *r, const oc_batch *b) { return oc_forward_impl(r, b); }

/* Asks the step running on r to stop at the next layer boundary; safe to
 * call from any thread while oc_forward runs. */
OC_EXPORT void oc_cancel(void *r) { oc_cancel_impl(r); }

/* ------------------------------------------------------ kernel context */

/* A pool and per-thread scratch for the oc_k_* calls, plus a quantized
 * activation buffer prepared by oc_k_prepare. */
typedef struct {
	oc_pool *pool;
	oc_scratch *scr;
	int n;
	int64_t kmax, group;
	void *qa_mem;
	size_t qa_bytes;
	oc_qact qa;
	int64_t qa_n;
	uint8_t *pw; /* a matrix packed by oc_k_prepack */
	size_t pw_bytes;
	int64_t pw_rows, pw_cols;
	/* the current pool job, and its work-sharing counters (the pool has at
	 * most 256 threads) */
	const void *job;
	_Alignas(64) _Atomic int64_t ctr[256 * OC_CTR_STRIDE];
} kctx;

OC_EXPORT void *oc_ctx_new(int64_t threads, int64_t kmax, int64_t maxpos, int64_t group) {
	kctx *c = oc_alloc(sizeof *c);
	if (!c)
		return NULL;
	c->pool = oc_pool_new((int)threads);
	if (!c->pool) {
		oc_free(c);
		return NULL;
	}
	c->n = oc_pool_threads(c->pool);
	c->kmax = kmax;
	c->group = group;
	c->scr = calloc((size_t)c->n, sizeof(oc_scratch));
	for (int i = 0; c->scr && i < c->n; i++)
		if (oc_scratch_init(&c->scr[i], kmax, maxpos, group) != OC_OK) {
			for (int j = 0; j < i; j++)
				oc_scratch_free(&c->scr[j]);
			free(c->scr);
			c->scr = NULL;
		}
	if (!c->scr) {
		oc_pool_free(c->pool);
		oc_free(c);
		return NULL;
	}
	return c;
}

OC_EXPORT void oc_ctx_free(void *h) {
	kctx *c = h;
	if (!c)
		return;
	oc_pool_free(c->pool);
	for (int i = 0; i < c->n; i++)
		oc_scratch_free(&c->scr[i]);
	free(c->scr);
	oc_unmap(c->qa_mem, c->qa_bytes);
	oc_unmap(c->pw, c->pw_bytes);
	oc_free(c);
}



/*
 * Arguments of the oc_k_* kernels. Pointers are the caller's buffers, used
 * during the call only; each kernel's comment says which fields it reads.
 */
typedef struct oc_kargs {
	const void *w; /* weights (matmul) */
	const float *x, *x2;
	float *y;
	const int32_t *blocks;
	int64_t type, rows, cols, n;
	int64_t r0, r1, tid, path, acc;
	int64_t heads, kv_heads, head_dim, block_size, pos;
	int64_t rope_dims, neox;
	double eps, rope_base, rope_freq_scale;
	const float *rope_freqs;
} oc_kargs;

/* Quantizes n rows of x (cols wide) into the context's activation buffer,
 * the input of the following oc_k_matmul_* calls. */
OC_EXPORT int64_t oc_k_prepare(void *h, const oc_kargs *a) {
	kctx *c = h;
	if (a->cols % QK || a->cols > c->kmax)
		return OC_ERR_ARG;
	size_t need = oc_qact_bytes(a->n, a->cols);
	if (need > c->qa_bytes) {
		void *m = oc_map(need);
		if (!m)
			return OC_ERR_NOMEM;
		oc_unmap(c->qa_mem, c->qa_bytes);
		c->qa_mem = m;
		c->qa_bytes = need;
	}
	oc_qact_bind(&c->qa, c->qa_mem, a->n, a->cols, 1);
	oc_quantize_rows(&c->qa, a->x, a->cols, 0, a->n, 0, a->cols / QK);
	c->qa_n = a->n;
	return OC_OK;
}

/* The prepared activations dequantized into y (n × cols): for tests of the
 * quantizer, |y - x| ≤ amax(block)/254. */
OC_EXPORT int64_t oc_k_dequant(void *h, const oc_kargs *a) {
	kctx *c = h;
	const oc_qact *q = &c->qa;
	for (int64_t t = 0; t < c->qa_n; t++)
		for (int64_t i = 0; i < q->k; i++)
			a->y[t * q->k + i] = q->d[t * q->lb + i / QK] * (float)q->q[t * q->lq + i];
	return OC_OK;
}

/* Packs the Q8_0 matrix w (rows × cols) as a runner does at load, for the
 * following oc_k_matmul_* calls with path 3. */
OC_EXPORT int64_t oc_k_prepack(void *h, const oc_kargs *a) {
	kctx *c = h;
	if (a->type != OC_Q8_0 || a->cols % QK || a->rows <= 0)
		return OC_ERR_ARG;
	size_t need = oc_q8_prepacked_bytes(a->rows, a->cols);
	if (need > c->pw_bytes) {
		void *m = oc_map(need);
		if (!m)
			return OC_ERR_NOMEM;
		oc_unmap(c->pw, c->pw_bytes);
		c->pw = m;
		c->pw_bytes = need;
	}
	oc_q8_prepack(a->w, a->cols, a->rows, 0, (a->rows + oc_q8_mr - 1) / oc_q8_mr, c->pw);
	c->pw_rows = a->rows;
	c->pw_cols = a->cols;
	return OC_OK;
}

/* Rows [r0, r1) of a matrix product on one thread, scratch of thread tid:
 * y[t·rows + r] (+)= w[r]·x[t]. Q8_0 weights use the prepared activations
 * (path 0: automatic, 1: direct, 2: packed on the fly, 3: the matrix
 * oc_k_prepack packed, r0 a multiple of 16); other types use x. */
OC_EXPORT int64_t oc_k_matmul_range(void *h, const oc_kargs *a) {
	kctx *c = h;
	if (a->tid < 0 || a->tid >= c->n || a->r0 < 0 || a->r1 > a->rows || a->cols > c->kmax)
		return OC_ERR_ARG;
	oc_scratch *s = &c->scr[a->tid];
	if (a->type == OC_Q8_0) {
		if (a->n != c->qa_n || a->cols != c->qa.k)
			return OC_ERR_ARG;
		switch (a->path) {
		case 1: oc_q8_matmul_direct(a->w, a->cols, a->r0, a->r1, &c->qa, a->n, a->y, a->rows, (int)a->acc); break;
		case 2: oc_q8_matmul_packed(s, a->w, a->cols, a->r0, a->r1, &c->qa, a->n, a->y, a->rows, (int)a->acc); break;
		case 3:
			if (a->rows != c->pw_rows || a->cols != c->pw_cols || a->r0 % oc_q8_mr)
				return OC_ERR_ARG;
			oc_q8_matmul_prepacked(c->pw, a->cols, a->rows, a->r0, a->r1, &c->qa, a->n, a->y, a->rows, (int)a->acc);
			break;
		default: oc_q8_matmul(s, a->w, a->cols, a->r0, a->r1, &c->qa, a->n, a->y, a->rows, (int)a->acc);
		}
	} else {
		oc_f_matmul(s, a->w, a->type, a->cols, a->r0, a->r1, a->x, a->cols, a->n, a->y, a->rows, (int)a->acc);
	}
	return OC_OK;
}

static void matmul_job(void *arg, int tid, int nt) {
	kctx *c = arg;
	oc_kargs a = *(const oc_kargs *)c->job;
	a.tid = tid;
	for (int64_t ch; (ch = oc_take(c->ctr, tid, nt, (a.rows + OC_CHUNK - 1) / OC_CHUNK)) >= 0;) {
		a.r0 = ch * OC_CHUNK;
		a.r1 = a.r0 + OC_CHUNK < a.rows ? a.r0 + OC_CHUNK : a.rows;
		oc_k_matmul_range(c, &a);
	}
}

/* The whole product on the context's pool, rows handed out in chunks by
 * oc_take, as in a forward step. */
OC_EXPORT int64_t oc_k_matmul_pool(void *h, const oc_kargs *a) {
	kctx *c = h;
	if (a->cols > c->kmax || (a->type == OC_Q8_0 && (a->n != c->qa_n || a->cols != c->qa.k)))
		return OC_ERR_ARG;
	c->job = a;
	memset((void *)c->ctr, 0, (size_t)c->n * OC_CTR_STRIDE * sizeof(int64_t));
	oc_pool_run(c->pool, matmul_job, c);
	return OC_OK;
}

static void noop_job(void *arg, int tid, int nt) {
	(void)tid;
	(void)nt;
	kctx *c = arg;
	oc_barrier(c->pool);
}

/* An empty job with one barrier: the pool's dispatch cost. */
OC_EXPORT int64_t oc_k_pool_noop(void *h) {
	kctx *c = h;
	oc_pool_run(c->pool, noop_job, c);
	return OC_OK;
}

/* ref.RMSNorm on n rows of cols: y = x / sqrt(mean(x²)+eps) · x2. */
OC_EXPORT int64_t oc_k_rmsnorm(const oc_kargs *a) {
	for (int64_t t = 0; t < a->n; t++)
		oc_rmsnorm(a->y + t * a->cols, a->x + t * a->cols, a->x2, a->cols, (float)a->eps);
	return OC_OK;
}

/* ref.Softmax on y (n floats), in place. */
OC_EXPORT int64_t oc_k_softmax(const oc_kargs *a) {
	oc_softmax(a->y, a->n);
	return OC_OK;
}

/* ref.SiLUGate: y = silu(x)·x2, n floats. */
OC_EXPORT int64_t oc_k_silu_gate(const oc_kargs *a) {
	oc_silu_gate(a->y, a->x, a->x2, a->n);
	return OC_OK;
}

/* ref.Rope on y (heads × head_dim) in place, at position pos. */
OC_EXPORT int64_t oc_k_rope(const oc_kargs *a) {
	int64_t half = a->rope_dims / 2;
	if (half <= 0 || half > 4096 || a->rope_dims > a->head_dim)
		return OC_ERR_ARG;
	double pw[4096], fr[4096];
	float cs[4096], sn[4096];
	for (int64_t i = 0; i < half; i++) {
		pw[i] = pow(a->rope_base, -2.0 * (double)i / (double)a->rope_dims);
		fr[i] = a->rope_freqs ? (double)a->rope_freqs[i] : 1.0;
	}
	oc_rope_angles(cs, sn, pw, fr, a->rope_freq_scale, half, a->pos);
	oc_rope_apply(a->y, a->heads, a->head_dim, a->rope_dims, (int)a->neox, cs, sn);
	return OC_OK;
}

/* Attention over a q8 cache made from f32 caches in the layout above:
 * positions 0…npos-1 are rounded and stored as the runner stores them. */
static int64_t attention_q8(kctx *c, const oc_kargs *a, int64_t group, int64_t kvw, float scale) {
	const int64_t bs = a->block_size, hd = a->head_dim, kvh = a->kv_heads, npos = a->pos + 1;
	if (hd % 4 || hd > OC_KV8_MAX_HD || group * hd > c->kmax || group > c->group)
		return OC_ERR_ARG;
	int64_t nblk = 0;
	for (int64_t b = 0; b <= a->pos / bs; b++)
		nblk = a->blocks[b] + 1 > nblk ? a->blocks[b] + 1 : nblk;
	size_t slots = (size_t)(nblk * bs);
	uint8_t *kc = oc_alloc(slots * (size_t)kvw);
	int8_t *vc = oc_alloc(slots * (size_t)kvw);
	float *ks = oc_alloc(slots * (size_t)kvh * 4), *vs = oc_alloc(slots * (size_t)kvh * 4);
	float *k = oc_alloc((size_t)kvw * 4);
	int64_t rc = OC_ERR_NOMEM;
	if (kc && vc && ks && vs && k) {
		const float *kin = a->w;
		for (int64_t j = 0; j < npos; j++) {
			int64_t slot = (int64_t)a->blocks[j / bs] * bs + j % bs;
			for (int64_t e = 0; e < kvw; e++)
				k[e] = kin[oc_k_index(slot, bs, kvw, hd, e / hd, e % hd)];
			oc_kv8_store(kc, vc, ks, vs, k, a->x2 + slot * kvw, slot, bs, kvh, hd, 0, kvh);
		}
		oc_scratch *s = &c->scr[0];
		for (int64_t g = 0; g < kvh; g++)
			oc_attention_q8(a->y + g * group * hd, a->x + g * group * hd, kc, vc, ks, vs, kvh, a->blocks, bs,
					npos, g, group, hd, scale, s->att, s->qq, s->qd, s->qs);
		rc = OC_OK;
	}
	oc_free(kc);
	oc_free(vc);
	oc_free(ks);
	oc_free(vs);
	oc_free(k);
	return rc;
}

/* ref.Attention for one query row x (heads × head_dim) over positions
 * 0…pos of a sequence whose block table is blocks: K cache w, V cache x2,
 * in the runner's layout (internal.h), of f16 values when type is OC_F16
 * (else f32); output y. With type OC_Q8_0 the caches hold f32 values,
 * which the kernel rounds into a q8 cache first. */
OC_EXPORT int64_t oc_k_attention(void *h, const oc_kargs *a) {
	kctx *c = h;
	int64_t group = a->heads / a->kv_heads, kvw = a->kv_heads * a->head_dim;
	if (a->heads % a->kv_heads || (size_t)group * (size_t)((a->pos + 1 + 15) / 16 * 16) > c->scr[0].att_n ||
	    (a->type != OC_F32 && a->type != OC_F16 && a->type != OC_Q8_0))
		return OC_ERR_ARG;
	float scale = (float)(1.0 / sqrt((double)a->head_dim));
	if (a->type == OC_Q8_0)
		return attention_q8(c, a, group, kvw, scale);
	for (int64_t g = 0; g < a->kv_heads; g++)
		oc_attention_group(a->y + g * group * a->head_dim, a->x + g * group * a->head_dim, a->w,
				   (const void *)a->x2, a->type == OC_F16, kvw, a->blocks, a->block_size, a->pos + 1, g,
				   group, a->head_dim, scale, c->scr[0].att);
	return OC_OK;
}

/* ---------------------------------------------------- bandwidth probe */

typedef struct {
	kctx *c;
	const uint8_t *buf;
	size_t bytes;
	_Atomic uint64_t sink;
} probe_arg;

static void probe_job(void *arg, int tid, int nt) {
	probe_arg *p = ((kctx *)arg)->job ? (probe_arg *)((kctx *)arg)->job : NULL;
	size_t per = p->bytes / (size_t)nt / 256 * 256;
	const uint8_t *b = p->buf + per * (size_t)tid;
	uint64_t acc = 0;
#if defined(OC_ISA_AVX512)
	__m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
	for (size_t i = 0; i < per; i += 256) {
		s0 = _mm512_add_epi64(s0, _mm512_load_si512(b + i));
		s1 = _mm512_add_epi64(s1, _mm512_load_si512(b + i + 64));
		s2 = _mm512_add_epi64(s2, _mm512_load_si512(b + i + 128));
		s3 = _mm512_add_epi64(s3, _mm512_load_si512(b + i + 192));
	}
	acc = (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
#elif defined(OC_ISA_AVX2) || defined(OC_ISA_AVXVNNI)
	__m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
	for (size_t i = 0; i < per; i += 128) {
		s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(b + i)));
		s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(b + i + 32)));
		s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(b + i + 64)));
		s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(b + i + 96)));
	}
	s0 = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
	uint64_t t[4];
	_mm256_storeu_si256((__m256i *)t, s0);
	acc = t[0] + t[1] + t[2] + t[3];
#else
	const uint64_t *w = (const uint64_t *)b;
	uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
	for (size_t i = 0; i < per / 8; i += 4) {
		a0 += w[i];
		a1 += w[i + 1];
		a2 += w[i + 2];
		a3 += w[i + 3];
	}
	acc = a0 + a1 + a2 + a3;
#endif
	atomic_fetch_add_explicit(&p->sink, acc, memory_order_relaxed);
	oc_barrier(p->c->pool);
}

static double now_s(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/*
 * Read bandwidth of the context's threads over a buffer of bytes (which
 * should dwarf the caches): the best of passes timed passes after one
 * untimed one, in bytes per second, written to *out.
 */
OC_EXPORT int64_t oc_bandwidth(void *h, int64_t bytes, int64_t passes, double *out) {
	kctx *c = h;
	probe_arg p = {.c = c, .bytes = (size_t)bytes};
	uint8_t *buf = oc_map((size_t)bytes);
	if (!buf)
		return OC_ERR_NOMEM;
	for (size_t i = 0; i < (size_t)bytes; i += 4096)
		buf[i] = (uint8_t)i;
	p.buf = buf;
	double best = 0;
	c->job = &p;
	for (int64_t i = 0; i <= passes; i++) {
		double t0 = now_s();
		oc_pool_run(c->pool, probe_job, c);
		double dt = now_s() - t0;
		double bw = (double)(p.bytes / (size_t)c->n / 256 * 256 * (size_t)c->n) / dt;
		if (i > 0 && bw > best)
			best = bw;
	}
	c->job = NULL;
	oc_unmap(buf, (size_t)bytes);
	*out = best;
	return (int64_t)(atomic_load(&p.sink) & 0);
}

/* ------------------------------------------------------------ layout */

#define OFF(T, f) (int64_t) offsetof(T, f)

/*
 * The sizes and field offsets of the ABI structs, for the Go side to check
 * its mirrors against (backends/cpu/abi.go lists the same fields in the same
 * order). Writes at most n values to out and returns how many there are.
 */
OC_EXPORT int64_t oc_abi_layout(int64_t *out, int64_t n) {
	int64_t v[] = {
		sizeof(oc_tensor), OFF(oc_tensor, type), OFF(oc_tensor, cols),
		sizeof(oc_layer_desc), OFF(oc_layer_desc, wq), OFF(oc_layer_desc, down), OFF(oc_layer_desc, attn_norm), OFF(oc_layer_desc, bv),
		sizeof(oc_model_desc), OFF(oc_model_desc, norm_eps), OFF(oc_model_desc, rope_freqs), OFF(oc_model_desc, tok_embd),
		OFF(oc_model_desc, output), OFF(oc_model_desc, output_norm), OFF(oc_model_desc, layers), OFF(oc_model_desc, threads),
		OFF(oc_model_desc, repack), OFF(oc_model_desc, kv_type),
		sizeof(oc_batch), OFF(oc_batch, blocks), OFF(oc_batch, n_out), OFF(oc_batch, logits),
		sizeof(oc_kargs), OFF(oc_kargs, blocks), OFF(oc_kargs, type), OFF(oc_kargs, neox), OFF(oc_kargs, eps), OFF(oc_kargs, rope_freqs),
	};
	int64_t count = (int64_t)(sizeof v / sizeof v[0]);
	for (int64_t i = 0; i < count && i < n; i++)
		out[i] = v[i];
	return count;
}
