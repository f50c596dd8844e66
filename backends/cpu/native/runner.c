/*
 * runner.c — a loaded model and its forward step.
 *
 * oc_forward runs one batch as a single pool job: every thread executes the
 * same sequence of phases (embedding, then per layer: norm, QKV, RoPE and
 * cache store, attention, output projection, norm, gate/up, down; then the
 * output head) and meets the others at a barrier between phases. Inside a
 * phase, matrix rows are handed out in chunks of OC_CHUNK from an atomic
 * counter, so a thread slowed by a noisy neighbour takes fewer chunks;
 * per-token work is split statically.
 *
 * Memory: the runner, its KV cache and step buffers are the library's own
 * (mmap/malloc). Weight pointers point into Go's mapping of the model file.
 * The batch's arrays and the logits are the caller's, used only during
 * oc_forward.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

typedef struct {
	int64_t heads, kv_heads, ffn;
	oc_tensor wq, wk, wv, wo, gate, up, down;
	float *attn_norm, *ffn_norm, *bq, *bk, *bv;
	void *kc, *vc; /* f32, f16 or q8 values (kv_type) */
	float *ks, *vs; /* a q8 cache's scales */
} layer_t;

typedef struct oc_runner {
	int64_t dim, n_layers, hd, vocab, rope_dims, neox, bs, kv_blocks, max_pos;
	int64_t kv_type; /* the KV cache's values: OC_F32, OC_F16 or OC_Q8_0 (q8 rows) */
	float eps;
	double fs, *rope_pw, *rope_fr;
	oc_tensor tok_embd, output;
	float *out_norm;
	layer_t *layers;
	int64_t kmax, qw_max, kvw_max, ffn_max, group_max;
	int any_q8;
	int direct; /* some Q8_0 matrix is not packed: products may take the direct kernel */

	void *kv;
	size_t kv_bytes;
	void *packed; /* Q8_0 matrices packed at load */
	size_t packed_bytes;

	oc_pool *pool;
	oc_scratch *scr;
	int nthreads;

	/* step buffers, for up to cap tokens */
	int64_t cap;
	void *step;
	size_t step_bytes;
	float *x, *xn, *q, *k, *v, *att, *gate, *up, *cs, *sn;
	void *qa_mem[2];
	size_t qa_bytes;

	/* the running step */
	const oc_batch *b;
	_Atomic int64_t *ctr;
	int64_t nctr;
	_Atomic int32_t cancel;
	int32_t stop;
	int32_t one_per_seq; /* the running step has one token per sequence */
} oc_runner;

/* ----------------------------------------------------------- creation */

static float *copy_floats(const float *src, int64_t n) {
	if (!src)
		return NULL;
	float *d = oc_alloc((size_t)n * 4);
	if (d)
		memcpy(d, src, (size_t)n * 4);
	return d;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Bytes of one part of the KV cache, rounded up to keep the next 64-byte
 * aligned. */
static size_t kv_part(size_t bytes) { return (bytes + 63) / 64 * 64; }

/* Whether a matrix takes quantized activations. */
static int is_q8(int64_t type) { return type == OC_Q8_0 || type == OC_Q8_PACKED; }

static int check_tensor(const oc_tensor *t, int64_t rows, int64_t cols, char *err, int64_t errlen, const char *what) {
	if (!t->data || t->rows != rows || t->cols != cols || oc_row_bytes(t->type, cols) < 0 ||
	    (t->type == OC_Q8_0 && cols % QK != 0)) {
		if (err && errlen > 0)
			snprintf(err, (size_t)errlen, "tensor %s: type %lld, %lld×%lld, want %lld×%lld", what,
				 (long long)t->type, (long long)t->rows, (long long)t->cols, (long long)rows, (long long)cols);
		return 0;
	}
	return 1;
}

void oc_runner_free_impl(oc_runner *r);

/* The seven matrices of layer L, into ts. */
static void layer_mats(layer_t *L, oc_tensor *ts[7]) {
	oc_tensor *all[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down};
	memcpy(ts, all, sizeof all);
}

/* ------------------------------------------------------ packing at load */

typedef struct {
	oc_runner *r;
	oc_tensor *ts[8 * 1024 + 1];
	uint8_t *dst[8 * 1024 + 1];
	int nt;
	_Atomic int64_t next;
} pack_work;

#define PACK_PANELS 64 /* panels per task */

static void pack_job(void *arg, int tid, int nt) {
	(void)tid;
	(void)nt;
	pack_work *pw = arg;
	int64_t tasks[8 * 1024 + 1], total = 0;
	for (int i = 0; i < pw->nt; i++) {
		int64_t panels = (pw->ts[i]->rows + oc_q8_mr - 1) / oc_q8_mr;
		tasks[i] = (panels + PACK_PANELS - 1) / PACK_PANELS;
		total += tasks[i];
	}
	for (;;) {
		int64_t c = atomic_fetch_add_explicit(&pw->next, 1, memory_order_relaxed);
		if (c >= total)
			break;
		int i = 0;
		while (c >= tasks[i])
			c -= tasks[i++];
		const oc_tensor *t = pw->ts[i];
		int64_t panels = (t->rows + oc_q8_mr - 1) / oc_q8_mr, p0 = c * PACK_PANELS;
		int64_t p1 = p0 + PACK_PANELS < panels ? p0 + PACK_PANELS : panels;
		oc_q8_prepack(t->data, t->cols, t->rows, p0, p1, pw->dst[i]);
	}
	oc_barrier(pw->r->pool);
}

/* Packs every Q8_0 matrix into one mapping of the runner's own, on its
 * threads, and points the matrix at it. */
static int repack(oc_runner *r) {
	pack_work *pw = calloc(1, sizeof *pw);
	if (!pw)
		return OC_ERR_NOMEM;
	pw->r = r;
	size_t total = 0;
	for (int64_t l = 0; l <= r->n_layers; l++) {
		oc_tensor *list[7];
		int n = 0;
		if (l < r->n_layers) {
			layer_mats(&r->layers[l], list);
			n = 7;
		} else {
			list[0] = &r->output;
			n = 1;
		}
		for (int i = 0; i < n; i++) {
			if (list[i]->type != OC_Q8_0 || pw->nt >= 8 * 1024)
				continue;
			pw->ts[pw->nt] = list[i];
			pw->dst[pw->nt] = (uint8_t *)total; /* offset for now */
			total += (oc_q8_prepacked_bytes(list[i]->rows, list[i]->cols) + 63) / 64 * 64;
			pw->nt++;
		}
	}
	if (pw->nt == 0) {
		free(pw);
		return OC_OK;
	}
	r->packed = oc_map(total);
	if (!r->packed) {
		free(pw);
		return OC_ERR_NOMEM;
	}
	r->packed_bytes = total;
	for (int i = 0; i < pw->nt; i++)
		pw->dst[i] = (uint8_t *)r->packed + (size_t)pw->dst[i];
	oc_pool_run(r->pool, pack_job, pw);
	for (int i = 0; i < pw->nt; i++) {
		pw->ts[i]->data = pw->dst[i];
		pw->ts[i]->type = OC_Q8_PACKED;
	}
	free(pw);
	return OC_OK;
}

oc_runner *oc_runner_new_impl(const oc_model_desc *d, char *err, int64_t errlen) {
#define FAIL(...)                                                        \
	do {                                                             \
		if (err && errlen > 0)                                   \
			snprintf(err, (size_t)errlen, __VA_ARGS__);      \
		oc_runner_free_impl(r);                                  \
		return NULL;                                             \
	} while (0)
	oc_runner *r = NULL;
	if (!d || d->abi != OC_ABI_VERSION) {
		if (err && errlen > 0)
			snprintf(err, (size_t)errlen, "ABI version %lld, library has %d", d ? (long long)d->abi : -1LL, OC_ABI_VERSION);
		return NULL;
	}
	r = oc_alloc(sizeof *r);
	if (!r)
		FAIL("out of memory");
	r->dim = d->dim;
	r->n_layers = d->n_layers;
	r->hd = d->head_dim;
	r->vocab = d->vocab;
	r->eps = (float)d->norm_eps;
	r->rope_dims = d->rope_dims;
	r->neox = d->rope_neox;
	r->fs = d->rope_freq_scale;
	r->bs = d->block_size;
	r->kv_blocks = d->kv_blocks;
	r->max_pos = max64(d->max_context, d->block_size * d->kv_blocks);
	if (d->kv_type != OC_F32 && d->kv_type != OC_F16 && d->kv_type != OC_Q8_0)
		FAIL("KV cache type %lld: want f32 (%d), f16 (%d) or q8 (%d)", (long long)d->kv_type, OC_F32, OC_F16,
		     OC_Q8_0);
	r->kv_type = d->kv_type;
	const size_t kv_es = r->kv_type == OC_F16 ? 2 : r->kv_type == OC_Q8_0 ? 1 : 4;
	if (r->kv_type == OC_Q8_0 && (d->head_dim % 4 || d->head_dim > OC_KV8_MAX_HD))
		FAIL("a q8 KV cache needs heads of a multiple of 4 values, up to %d (this model's are %lld)", OC_KV8_MAX_HD,
		     (long long)d->head_dim);
	if (r->dim <= 0 || r->n_layers <= 0 || r->hd <= 0 || r->vocab <= 0 || r->bs <= 0 || r->kv_blocks <= 0 ||
	    r->rope_dims <= 0 || r->rope_dims > r->hd || r->rope_dims % 2)
		FAIL("bad model geometry");
	if (!check_tensor(&d->tok_embd, r->vocab, r->dim, err, errlen, "token_embd") ||
	    !check_tensor(&d->output, r->vocab, r->dim, err, errlen, "output")) {
		oc_runner_free_impl(r);
		return NULL;
	}
	r->tok_embd = d->tok_embd;
	r->output = d->output;
	r->any_q8 = d->output.type == OC_Q8_0;
	int64_t half = r->rope_dims / 2;
	r->rope_pw = calloc((size_t)half, sizeof(double));
	r->rope_fr = calloc((size_t)half, sizeof(double));
	r->out_norm = copy_floats(d->output_norm, r->dim);
	r->layers = calloc((size_t)r->n_layers, sizeof(layer_t));
	if (!r->rope_pw || !r->rope_fr || !r->out_norm || !r->layers)
		FAIL("out of memory");
	for (int64_t i = 0; i < half; i++) {
		r->rope_pw[i] = pow(d->rope_base, -2.0 * (double)i / (double)r->rope_dims);
		r->rope_fr[i] = d->rope_freqs ? (double)d->rope_freqs[i] : 1.0;
	}
	r->kmax = r->dim;
	size_t kv_total = 0;
	for (int64_t l = 0; l < r->n_layers; l++) {
		const oc_layer_desc *ld = &d->layers[l];
		layer_t *L = &r->layers[l];
		L->heads = ld->heads;
		L->kv_heads = ld->kv_heads;
		L->ffn = ld->ffn;
		if (L->heads <= 0 || L->kv_heads <= 0 || L->heads % L->kv_heads || L->ffn <= 0)
			FAIL("layer %lld: bad head counts", (long long)l);
		int64_t qw = L->heads * r->hd, kvw = L->kv_heads * r->hd;
		char name[64];
#define T(field, rows, cols)                                                          \
	snprintf(name, sizeof name, "blk.%lld." #field, (long long)l);                \
	if (!check_tensor(&ld->field, rows, cols, err, errlen, name)) {                \
		oc_runner_free_impl(r);                                               \
		return NULL;                                                          \
	}                                                                             \
	L->field = ld->field;                                                         \
	r->any_q8 |= ld->field.type == OC_Q8_0;
		T(wq, qw, r->dim)
		T(wk, kvw, r->dim)
		T(wv, kvw, r->dim)
		T(wo, r->dim, qw)
		T(gate, L->ffn, r->dim)
		T(up, L->ffn, r->dim)
		T(down, r->dim, L->ffn)
#undef T
		L->attn_norm = copy_floats(ld->attn_norm, r->dim);
		L->ffn_norm = copy_floats(ld->ffn_norm, r->dim);
		L->bq = copy_floats(ld->bq, qw);
		L->bk = copy_floats(ld->bk, kvw);
		L->bv = copy_floats(ld->bv, kvw);
		if (!L->attn_norm || !L->ffn_norm || (ld->bq && !L->bq) || (ld->bk && !L->bk) || (ld->bv && !L->bv))
			FAIL("out of memory");
		r->qw_max = max64(r->qw_max, qw);
		r->kvw_max = max64(r->kvw_max, kvw);
		r->ffn_max = max64(r->ffn_max, L->ffn);
		r->group_max = max64(r->group_max, L->heads / L->kv_heads);
		kv_total += 2 * kv_part((size_t)r->kv_blocks * (size_t)r->bs * (size_t)kvw * kv_es);
		if (r->kv_type == OC_Q8_0)
			kv_total += 2 * kv_part((size_t)r->kv_blocks * (size_t)r->bs * (size_t)L->kv_heads * 4);
	}
	r->kmax = max64(r->kmax, max64(r->qw_max, r->ffn_max));
	/*
	 * The KV cache: one anonymous mapping, written once here so that its
	 * memory is taken at load, not by a request. Faulted in lazily, its
	 * first use stalled a request now and then: serving 32 requests one at
	 * a time on the 2-core dev VM, one of them waited 300-400 ms for its
	 * first token (median 33 ms), and never again once every block had
	 * been used (a huge-page fault can compact memory first). Writing
	 * memory the host does not have would wake the OOM killer, not fail
	 * here, so a cache larger than what is left is refused first (while a
	 * model reloads, the old one's cache still holds its memory).
	 */
	int64_t left = oc_memory_left();
	if (left >= 0 && (int64_t)kv_total > left)
		FAIL("a KV cache of %zu MiB does not fit in the %lld MiB of memory left (lower kv_cache_mb, max_running or the context)",
		     kv_total >> 20, (long long)(left >> 20));
	r->kv_bytes = kv_total;
	r->kv = oc_map(kv_total);
	if (!r->kv)
		FAIL("cannot map a KV cache of %zu bytes", kv_total);
	for (size_t i = 0; i < kv_total; i += 4096)
		((volatile uint8_t *)r->kv)[i] = 0;
	uint8_t *p = r->kv;
	for (int64_t l = 0; l < r->n_layers; l++) {
		layer_t *L = &r->layers[l];
		size_t n = kv_part((size_t)r->kv_blocks * (size_t)r->bs * (size_t)(L->kv_heads * r->hd) * kv_es);
		L->kc = p;
		L->vc = p + n;
		p += 2 * n;
		if (r->kv_type == OC_Q8_0) {
			size_t ns = kv_part((size_t)r->kv_blocks * (size_t)r->bs * (size_t)L->kv_heads * 4);
			L->ks = (float *)p;
			L->vs = (float *)(p + ns);
			p += 2 * ns;
		}
	}
	int threads = (int)(d->threads > 0 ? d->threads : 1);
	r->pool = oc_pool_new(threads);
	if (!r->pool)
		FAIL("cannot start %d threads", threads);
	r->nthreads = oc_pool_threads(r->pool);
	r->scr = calloc((size_t)r->nthreads, sizeof(oc_scratch));
	if (!r->scr)
		FAIL("out of memory");
	for (int i = 0; i < r->nthreads; i++)
		if (oc_scratch_init(&r->scr[i], r->kmax, r->max_pos, r->group_max) != OC_OK)
			FAIL("out of memory for thread scratch");
	/* Counters of the parallel regions (5 per layer: qkv, attention, wo,
	 * gate and up, down; 1 for the output head), zeroed before every step. */
	r->nctr = (r->n_layers * 5 + 1) * r->nthreads * OC_CTR_STRIDE;
	r->ctr = oc_alloc((size_t)r->nctr * sizeof(int64_t));
	if (!r->ctr)
		FAIL("out of memory");
	if (d->repack && repack(r) != OC_OK)
		FAIL("out of memory for the packed weights");
	/* what repack left unpacked (all Q8_0 matrices without it) */
	r->direct = r->output.type == OC_Q8_0;
	for (int64_t l = 0; l < r->n_layers; l++) {
		oc_tensor *ts[7];
		layer_mats(&r->layers[l], ts);
		for (int i = 0; i < 7; i++)
			r->direct |= ts[i]->type == OC_Q8_0;
	}
	return r;
#undef FAIL
}

void oc_runner_free_impl(oc_runner *r) {
	if (!r)
		return;
	oc_pool_free(r->pool);
	if (r->scr) {
		for (int i = 0; i < r->nthreads; i++)
			oc_scratch_free(&r->scr[i]);
		free(r->scr);
	}
	if (r->layers) {
		for (int64_t l = 0; l < r->n_layers; l++) {
			layer_t *L = &r->layers[l];
			oc_free(L->attn_norm);
			oc_free(L->ffn_norm);
			oc_free(L->bq);
			oc_free(L->bk);
			oc_free(L->bv);
		}
		free(r->layers);
	}
	oc_unmap(r->kv, r->kv_bytes);
	oc_unmap(r->packed, r->packed_bytes);
	oc_unmap(r->step, r->step_bytes);
	oc_free((void *)r->ctr);
	free(r->rope_pw);
	free(r->rope_fr);
	oc_free(r->out_norm);
	oc_free(r);
}

/* Grows the step buffers to hold n tokens. */
static int reserve(oc_runner *r, int64_t n) {
	if (n <= r->cap)
		return OC_OK;
	int64_t cap = max64(n, r->cap * 2);
	int64_t half = r->rope_dims / 2;
	size_t f = 0;
#define SZ(count) ((((size_t)(count) * sizeof(float)) + 63) / 64 * 64)
	size_t sizes[10] = {
		SZ(cap * r->dim),                       /* x */
		SZ(cap * max64(r->dim, r->qw_max)),     /* xn */
		SZ(cap * r->qw_max),                    /* q */
		SZ(cap * r->kvw_max),                   /* k */
		SZ(cap * r->kvw_max),                   /* v */
		SZ(cap * r->qw_max),                    /* att */
		SZ(cap * r->ffn_max),                   /* gate */
		SZ(cap * r->ffn_max),                   /* up */
		SZ(cap * half),                         /* cs */
		SZ(cap * half),                         /* sn */
	};
#undef SZ
	for (int i = 0; i < 10; i++)
		f += sizes[i];
	size_t qa = (oc_qact_bytes(cap, r->kmax) + 63) / 64 * 64;
	size_t total = f + 2 * qa;
	uint8_t *mem = oc_map(total);
	if (!mem)
		return OC_ERR_NOMEM;
	oc_unmap(r->step, r->step_bytes);
	r->step = mem;
	r->step_bytes = total;
	r->cap = cap;
	r->qa_bytes = qa;
	float **ptrs[10] = {&r->x, &r->xn, &r->q, &r->k, &r->v, &r->att, &r->gate, &r->up, &r->cs, &r->sn};
	for (int i = 0; i < 10; i++) {
		*ptrs[i] = (float *)mem;
		mem += sizes[i];
	}
	r->qa_mem[0] = mem;
	r->qa_mem[1] = mem + qa;
	return OC_OK;
}

/* ----------------------------------------------------------- the step */

static void split(int64_t n, int tid, int nt, int64_t *lo, int64_t *hi) {
	*lo = n * tid / nt;
	*hi = n * (tid + 1) / nt;
}

/* The counters of the step's i-th parallel region, for take. */
static _Atomic int64_t *region(oc_runner *r, int i) { return r->ctr + (int64_t)i * r->nthreads * OC_CTR_STRIDE; }


/* y[t][r0…r1) (+)= rows r0…r1 of w times token t's input, for n tokens:
 * the quantized copy qa for Q8_0 matrices (packed at load or not), the
 * f32 rows xf (stride ldx) for the others. */
static void mm_rows(oc_scratch *s, const oc_tensor *w, int64_t r0, int64_t r1, const float *xf, int64_t ldx,
		    const oc_qact *qa, int64_t n, float *y, int64_t ldy, int acc) {
	if (w->type == OC_Q8_PACKED)
		oc_q8_matmul_prepacked(w->data, w->cols, w->rows, r0, r1, qa, n, y, ldy, acc);
	else if (w->type == OC_Q8_0)
		oc_q8_matmul(s, w->data, w->cols, r0, r1, qa, n, y, ldy, acc);
	else
		oc_f_matmul(s, w->data, w->type, w->cols, r0, r1, xf, ldx, n, y, ldy, acc);
}

typedef struct {
	const oc_tensor *w;
	float *y;
	int64_t ldy;
	int acc;
	const float *bias;
} mmjob;

/*
 * Runs jobs (same input: xf f32 rows with stride ldx, or their quantized
 * copy qa) over n tokens, handing out OC_CHUNK rows at a time.
 */
static void matmuls(oc_runner *r, int tid, _Atomic int64_t *ctr, const mmjob *jobs, int nj,
		    const float *xf, int64_t ldx, const oc_qact *qa, int64_t n) {
	int64_t chunks[4] = {0}, total = 0;
	for (int j = 0; j < nj; j++) {
		chunks[j] = (jobs[j].w->rows + OC_CHUNK - 1) / OC_CHUNK;
		total += chunks[j];
	}
	oc_scratch *s = &r->scr[tid];
	for (;;) {
		int64_t c = oc_take(ctr, tid, r->nthreads, total);
		if (c < 0)
			return;
		int j = 0;
		while (c >= chunks[j])
			c -= chunks[j++];
		const mmjob *jb = &jobs[j];
		const oc_tensor *w = jb->w;
		int64_t r0 = c * OC_CHUNK, r1 = r0 + OC_CHUNK < w->rows ? r0 + OC_CHUNK : w->rows;
		mm_rows(s, w, r0, r1, xf, ldx, qa, n, jb->y, jb->ldy, jb->acc);
		if (jb->bias)
			for (int64_t t = 0; t < n; t++)
				for (int64_t i = r0; i < r1; i++)
					jb->y[t * jb->ldy + i] += jb->bias[i];
	}
}

/* Gate and up for the same rows, then h = silu(gate)·up in place of gate,
 * quantized block by block when down is Q8_0. */
static void gate_up(oc_runner *r, int tid, _Atomic int64_t *ctr, const layer_t *L,
		    const oc_qact *qa, oc_qact *qh, int64_t n) {
	int64_t ffn = L->ffn, total = (ffn + OC_CHUNK - 1) / OC_CHUNK;
	oc_scratch *s = &r->scr[tid];
	for (;;) {
		int64_t c = oc_take(ctr, tid, r->nthreads, total);
		if (c < 0)
			return;
		int64_t r0 = c * OC_CHUNK, r1 = r0 + OC_CHUNK < ffn ? r0 + OC_CHUNK : ffn;
		const oc_tensor *ws[2] = {&L->gate, &L->up};
		float *ys[2] = {r->gate, r->up};
		for (int i = 0; i < 2; i++)
			mm_rows(s, ws[i], r0, r1, r->xn, r->dim, qa, n, ys[i], ffn, 0);
		for (int64_t t = 0; t < n; t++)
			oc_silu_gate(r->gate + t * ffn + r0, r->gate + t * ffn + r0, r->up + t * ffn + r0, r1 - r0);
		if (is_q8(L->down.type))
			oc_quantize_rows(qh, r->gate, ffn, 0, n, r0 / QK, (r1 + QK - 1) / QK);
	}
}

/* Rotates token i's query heads of KV heads [g0, g0+ng) and those KV heads'
 * keys, and stores their keys and values at the token's cache slot. */
static void rope_store(oc_runner *r, const layer_t *L, int64_t i, int64_t g0, int64_t ng) {
	const oc_batch *b = r->b;
	const int64_t hd = r->hd, half = r->rope_dims / 2, group = L->heads / L->kv_heads;
	const int64_t qw = L->heads * hd, kvw = L->kv_heads * hd;
	const float *cs = r->cs + i * half, *sn = r->sn + i * half;
	float *k = r->k + i * kvw + g0 * hd;
	oc_rope_apply(r->q + i * qw + g0 * group * hd, ng * group, hd, r->rope_dims, (int)r->neox, cs, sn);
	oc_rope_apply(k, ng, hd, r->rope_dims, (int)r->neox, cs, sn);
	int64_t p = b->pos[i];
	int64_t slot = (int64_t)b->blocks[b->table[i] + p / r->bs] * r->bs + p % r->bs;
	int64_t kt = oc_k_index(slot, r->bs, kvw, hd, g0, 0), vr = slot * kvw + g0 * hd;
	const float *v = r->v + i * kvw + g0 * hd;
	if (r->kv_type == OC_Q8_0) {
		oc_kv8_store(L->kc, L->vc, L->ks, L->vs, k, v, slot, r->bs, L->kv_heads, hd, g0, ng);
	} else if (r->kv_type == OC_F16) {
		for (int64_t e = 0; e < ng * hd; e++) {
			((uint16_t *)L->kc)[kt + e * r->bs] = oc_f32_to_f16(k[e]);
			((uint16_t *)L->vc)[vr + e] = oc_f32_to_f16(v[e]);
		}
	} else {
		for (int64_t e = 0; e < ng * hd; e++)
			((float *)L->kc)[kt + e * r->bs] = k[e];
		memcpy((float *)L->vc + vr, v, (size_t)(ng * hd) * 4);
	}
}

/* xn = RMSNorm(x)·w for the rows [lo, hi) of n, and their quantized copy in
 * qa (bound to qa_mem[0]) when a Q8_0 product reads them. */
static void norm_rows(oc_runner *r, oc_qact *qa, const float *w, int64_t n, int64_t lo, int64_t hi) {
	oc_qact_bind(qa, r->qa_mem[0], n, r->dim, r->direct);
	for (int64_t i = lo; i < hi; i++) {
		oc_rmsnorm(r->xn + i * r->dim, r->x + i * r->dim, w, r->dim, r->eps);
		if (r->any_q8)
			oc_quantize_rows(qa, r->xn, r->dim, i, i + 1, 0, r->dim / QK);
	}
}

static void forward_job(void *arg, int tid, int nt) {
	oc_runner *r = arg;
	const oc_batch *b = r->b;
	const int64_t n = b->n, dim = r->dim, hd = r->hd, half = r->rope_dims / 2;
	int ci = 0;
	int64_t lo, hi;
	oc_qact qa, qh;

	/* embeddings and rotation angles */
	split(n, tid, nt, &lo, &hi);
	for (int64_t i = lo; i < hi; i++) {
		oc_decode_row(r->tok_embd.data, r->tok_embd.type, dim, b->tokens[i], r->x + i * dim);
		oc_rope_angles(r->cs + i * half, r->sn + i * half, r->rope_pw, r->rope_fr, r->fs, half, b->pos[i]);
	}
	oc_barrier(r->pool);

	for (int64_t l = 0; l < r->n_layers; l++) {
		const layer_t *L = &r->layers[l];
		const int64_t qw = L->heads * hd, kvw = L->kv_heads * hd, group = L->heads / L->kv_heads;

		/* attention norm */
		norm_rows(r, &qa, L->attn_norm, n, lo, hi);
		oc_barrier(r->pool);

		/* q, k, v */
		mmjob qkv[3] = {
			{&L->wq, r->q, qw, 0, L->bq},
			{&L->wk, r->k, kvw, 0, L->bk},
			{&L->wv, r->v, kvw, 0, L->bv},
		};
		matmuls(r, tid, region(r, ci++), qkv, 3, r->xn, dim, &qa, n);
		oc_barrier(r->pool);

		/*
		 * Rotate q and k and store k and v in the cache; then attention
		 * over (token, KV head) tasks. In a step of one token per
		 * sequence (decode) no token reads another's keys, so each task
		 * rotates and stores its own token's heads and no barrier is
		 * needed in between; and when a task's slice of the attention
		 * output is whole pairs of Q8_0 blocks, the task quantizes it for
		 * the output projection itself. Two barriers fewer per layer:
		 * every barrier costs at least ~1.5 µs on a 2-vCPU VM.
		 */
		const int fused_rope = r->one_per_seq;
		const int fused_quant = is_q8(L->wo.type) && (group * hd) % (2 * QK) == 0;
		if (!fused_rope) {
			for (int64_t i = lo; i < hi; i++)
				rope_store(r, L, i, 0, L->kv_heads);
			oc_barrier(r->pool);
		}
		if (fused_quant)
			oc_qact_bind(&qa, r->qa_mem[0], n, qw, r->direct);
		{
			_Atomic int64_t *ctr = region(r, ci++);
			int64_t tasks = n * L->kv_heads;
			float scale = (float)(1.0 / sqrt((double)hd));
			for (;;) {
				int64_t task = oc_take(ctr, tid, nt, tasks);
				if (task < 0)
					break;
				int64_t i = task / L->kv_heads, g = task % L->kv_heads;
				int64_t h0 = g * group;
				if (fused_rope)
					rope_store(r, L, i, g, 1);
				oc_scratch *sc = &r->scr[tid];
				if (r->kv_type == OC_Q8_0)
					oc_attention_q8(r->att + i * qw + h0 * hd, r->q + i * qw + h0 * hd, L->kc, L->vc, L->ks,
							L->vs, L->kv_heads, b->blocks + b->table[i], r->bs, b->pos[i] + 1, g,
							group, hd, scale, sc->att, sc->qq, sc->qd, sc->qs);
				else
					oc_attention_group(r->att + i * qw + h0 * hd, r->q + i * qw + h0 * hd, L->kc, L->vc,
							   r->kv_type == OC_F16, kvw, b->blocks + b->table[i], r->bs, b->pos[i] + 1, g,
							   group, hd, scale, sc->att);
				if (fused_quant)
					oc_quantize_rows(&qa, r->att, qw, i, i + 1, h0 * hd / QK, (h0 + group) * hd / QK);
			}
		}
		oc_barrier(r->pool);

		/* output projection, added to x */
		if (is_q8(L->wo.type) && !fused_quant) {
			oc_qact_bind(&qa, r->qa_mem[0], n, qw, r->direct);
			oc_quantize_rows(&qa, r->att, qw, lo, hi, 0, qw / QK);
			oc_barrier(r->pool);
		}
		mmjob wo = {&L->wo, r->x, dim, 1, NULL};
		matmuls(r, tid, region(r, ci++), &wo, 1, r->att, qw, &qa, n);
		oc_barrier(r->pool);

		/* feed-forward norm */
		norm_rows(r, &qa, L->ffn_norm, n, lo, hi);
		oc_barrier(r->pool);

		oc_qact_bind(&qh, r->qa_mem[1], n, L->ffn, r->direct);
		gate_up(r, tid, region(r, ci++), L, &qa, &qh, n);
		oc_barrier(r->pool);

		mmjob down = {&L->down, r->x, dim, 1, NULL};
		matmuls(r, tid, region(r, ci++), &down, 1, r->gate, L->ffn, &qh, n);
		if (tid == 0)
			r->stop = atomic_load_explicit(&r->cancel, memory_order_relaxed);
		oc_barrier(r->pool);
		if (r->stop)
			return;
	}

	/* output head for the rows that want logits */
	if (b->n_out == 0)
		return;
	int64_t olo, ohi;
	split(b->n_out, tid, nt, &olo, &ohi);
	oc_qact_bind(&qa, r->qa_mem[0], b->n_out, dim, r->direct);
	for (int64_t j = olo; j < ohi; j++) {
		int64_t i = b->out_rows[j];
		oc_rmsnorm(r->xn + j * dim, r->x + i * dim, r->out_norm, dim, r->eps);
		if (is_q8(r->output.type))
			oc_quantize_rows(&qa, r->xn, dim, j, j + 1, 0, dim / QK);
	}
	oc_barrier(r->pool);
	mmjob out = {&r->output, b->logits, r->vocab, 0, NULL};
	matmuls(r, tid, region(r, ci++), &out, 1, r->xn, dim, &qa, b->n_out);
	/* no barrier: oc_pool_run returns once every thread has */
}

int64_t oc_forward_impl(oc_runner *r, const oc_batch *b) {
	if (!r || !b || b->n <= 0 || b->n_out < 0 || b->n_out > b->n)
		return OC_ERR_ARG;
	/* A run's tokens are consecutive and share their block-table offset. */
	r->one_per_seq = 1;
	for (int64_t i = 0; i < b->n; i++) {
		if (b->pos[i] < 0 || b->pos[i] >= r->max_pos || b->tokens[i] < 0 || b->tokens[i] >= r->vocab)
			return OC_ERR_ARG;
		if (i > 0 && b->table[i] == b->table[i - 1])
			r->one_per_seq = 0;
	}
	if (reserve(r, b->n) != OC_OK)
		return OC_ERR_NOMEM;
	memset((void *)r->ctr, 0, (size_t)r->nctr * sizeof(int64_t));
	r->b = b;
	r->stop = 0;
	atomic_store(&r->cancel, 0);
	oc_pool_run(r->pool, forward_job, r);
	r->b = NULL;
	return r->stop ? OC_ERR_CANCELLED : OC_OK;
}

void oc_cancel_impl(oc_runner *r) {
	if (r)
		atomic_store(&r->cancel, 1);
}

