// octet's CUDA kernels, compiled to PTX by clang-16 without the CUDA
// toolkit (see build-ptx.sh). Each kernel's reference twin is named in its
// comment; backends/cuda's tests compare them on random inputs.
//
// Layouts: activations are row-major float32, one row per token. A Q8_0
// matrix is stored as two arrays: int8 values, rows × K, and one float16
// scale per 32 values, rows × K/32. The KV cache of a layer is float32 or
// float16, one row of kvHeads × headDim per cache slot; slot = block*bs +
// pos%bs.

#define GLOBAL extern "C" __attribute__((global))
// BOUNDS(n) tells the JIT a kernel's block size, so that it never gives
// a thread more registers than n threads of a block can have.
#define BOUNDS(n) __attribute__((launch_bounds(n)))
#define SHARED __attribute__((shared))
#define DEVICE static __attribute__((device)) inline __attribute__((always_inline))

typedef signed char i8;
typedef unsigned short u16;
typedef int int4v __attribute__((ext_vector_type(4)));

#define TID ((int)__nvvm_read_ptx_sreg_tid_x())
#define NTID ((int)__nvvm_read_ptx_sreg_ntid_x())
#define BX ((int)__nvvm_read_ptx_sreg_ctaid_x())
#define BY ((int)__nvvm_read_ptx_sreg_ctaid_y())

// WARPS warps per GEMV block, one weight row per warp; TILE tokens at most
// per block, sharing each weight load.
#define WARPS 8
#define TILE 8
#define NBY ((int)__nvvm_read_ptx_sreg_nctaid_y())

DEVICE float h2f(u16 h) {
	float f;
	asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
	return f;
}

DEVICE float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1)
		v += __nvvm_shfl_sync_bfly_f32(0xffffffff, v, o, 31);
	return v;
}

DEVICE float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) {
		float w = __nvvm_shfl_sync_bfly_f32(0xffffffff, v, o, 31);
		v = v > w ? v : w;
	}
	return v;
}

// fexp is e^x through ex2.approx (relative error about 2^-22).
DEVICE float fexp(float x) {
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x * 1.4426950408889634f));
	return y;
}

DEVICE int dp4a(int a, int b, int c) {
	int d;
	asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
	return d;
}

DEVICE int rni(float x) {
	int i;
	asm("cvt.rni.s32.f32 %0, %1;" : "=r"(i) : "f"(x));
	return i;
}

DEVICE float silu_mul(float g, float u) { return g / (1.0f + fexp(-g)) * u; }

// Programmatic dependent launch (sm_90 and later; nothing before). A step's
// kernels are launched so that each may start while the one before it
// finishes: every kernel calls GRID_LAUNCH first, which lets the next one's
// blocks be scheduled, and GRID_WAIT before it reads anything an earlier
// kernel of the step wrote or writes anything at all; GRID_WAIT returns when
// the kernel before has completed and its writes are visible. Every kernel
// waits, so completion is ordered transitively. Before waiting, a kernel
// may read only what no kernel of the step writes: weights, the step's
// metadata. What a kernel of the step wrote is read with plain (coherent)
// loads, never through the non-coherent path that const __restrict__
// parameters get: that path may keep a line read before the writer
// finished.
#if __CUDA_ARCH__ >= 900
#define GRID_LAUNCH() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#define GRID_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#else
#define GRID_LAUNCH()
#define GRID_WAIT()
#endif
#ifndef OCTET_TRACE
#define GRID_START() \
	do {             \
		GRID_LAUNCH(); \
		GRID_WAIT();   \
	} while (0)
#else
// The timeline build (build-ptx.sh's octet.trace.sm90.ptx, loaded with
// OCTET_CUDA_PTX=PATH; never the product's PTX): thread 0 of each of the
// first TRACE_BLOCKS blocks notes the global timer (ns) when the block
// reaches GRID_START, when its wait returns and when thread 0 leaves the
// kernel (trace_scope's destructor; the block's other warps may leave a
// little later), in
// the launch's slot of octet_trace. A launch finds its slot by its grid id
// (the context's launch number) in octet_trace_keys, an open-addressed
// table that the host zeroes before each traced step and reads after it,
// with the names of the launches it made (backends/cuda/trace.go).
#define TRACE_SLOTS 512
#define TRACE_BLOCKS 2048
extern "C" {
__attribute__((device)) unsigned long long octet_trace_keys[TRACE_SLOTS];
__attribute__((device)) unsigned long long octet_trace[TRACE_SLOTS][TRACE_BLOCKS][3];
}

#define DEVMEMBER __attribute__((device)) inline __attribute__((always_inline))

DEVICE unsigned long long global_ns() {
	unsigned long long t;
	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}

struct trace_scope {
	unsigned long long* rec;
	DEVMEMBER trace_scope() : rec(0) {
		int b = BX + BY * (int)__nvvm_read_ptx_sreg_nctaid_x();
		if (TID != 0 || b >= TRACE_BLOCKS) return;
		unsigned long long g, t = global_ns();
		asm volatile("mov.u64 %0, %%gridid;" : "=l"(g));
		g++; // 0 marks a free slot
		unsigned s = (unsigned)((g * 0x9E3779B97F4A7C15ull) >> 32) & (TRACE_SLOTS - 1);
		for (int i = 0; i < TRACE_SLOTS; i++, s = (s + 1) & (TRACE_SLOTS - 1)) {
			unsigned long long old, zero = 0;
			asm volatile("atom.global.cas.b64 %0, [%1], %2, %3;"
			             : "=l"(old)
			             : "l"(&octet_trace_keys[s]), "l"(zero), "l"(g)
			             : "memory");
			if (old == 0 || old == g) {
				rec = octet_trace[s][b];
				rec[0] = t;
				return;
			}
		}
	}
	DEVMEMBER void waited() {
		if (rec) rec[1] = global_ns();
	}
	DEVMEMBER ~trace_scope() {
		if (rec) rec[2] = global_ns();
	}
};
#define GRID_START()             \
	trace_scope octet_trace_at; \
	GRID_LAUNCH();               \
	GRID_WAIT();                 \
	octet_trace_at.waited()
#endif

// prefetch_l2 asks L2 for the 128-byte line holding p and does not wait.
DEVICE void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// prefetch_rows asks L2 for rows r, r+stride, … of a Q8_0 matrix of rows ×
// K, at most n of them, with their scales; the first row from value kb0 on.
DEVICE void prefetch_rows(const i8* W, const u16* Wd, int r, int stride, int rows, int K, int kb0,
                          int n, int lane) {
	for (; r < rows && n > 0; r += stride, kb0 = 0, n--) {
		for (int off = kb0 + lane * 128; off < K; off += 32 * 128) prefetch_l2(W + (long)r * K + off);
		const char* d = (const char*)(Wd + (long)r * (K >> 5));
		for (int off = lane * 128; off < K / 16; off += 32 * 128) prefetch_l2(d + off);
	}
}

// norm_scales stores, for each of the block's nt tokens, the RMSNorm factor
// 1/sqrt(mean(x²)+eps) in scale[t] (ref.RMSNorm without the weight).
DEVICE void norm_scales(const float* X, int ldx, const int* xrows, int t0, int nt, int K,
                        float eps, float* red, float* scale) {
	int tid = TID, lane = tid & 31, warp = tid >> 5;
	for (int t = 0; t < nt; t++) {
		long row = xrows ? xrows[t0 + t] : t0 + t;
		const float* x = X + row * ldx;
		float ss = 0;
		for (int i = tid; i < K; i += WARPS * 32) ss += x[i] * x[i];
		ss = warp_sum(ss);
		if (lane == 0) red[warp * TILE + t] = ss;
	}
	__syncthreads();
	if (tid < nt) {
		float s = 0;
		for (int w = 0; w < WARPS; w++) s += red[w * TILE + tid];
		scale[tid] = 1.0f / __builtin_sqrtf(s / K + eps);
	}
	__syncthreads();
}

// store_row finishes one weight row r of a GEMV for the block's nt tokens:
// the warp's partial sums are reduced and written (or added) to Y; with
// gated, Y = silu(acc) * acc2.
DEVICE void store_row(const float* acc, const float* acc2, int gated, int nt, int t0, int r,
                      float* Y, int ldy, int accumulate) {
	int lane = TID & 31;
#pragma unroll
	for (int t = 0; t < TILE; t++) {
		if (t >= nt) continue;
		float s = warp_sum(acc[t]);
		if (gated) s = silu_mul(s, warp_sum(acc2[t]));
		if (lane == 0) {
			float* y = Y + (long)(t0 + t) * ldy + r;
			*y = accumulate ? *y + s : s;
		}
	}
}

typedef float float4v __attribute__((ext_vector_type(4)));

DEVICE float rcp(float x) {
	float y;
	asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}

DEVICE int pack4(float4v u, float inv) {
	return (rni(u.x * inv) & 0xff) | (rni(u.y * inv) & 0xff) << 8 | (rni(u.z * inv) & 0xff) << 16 |
	       (int)((unsigned)rni(u.w * inv) << 24);
}

// QROUNDS rounds of 4 values per lane are loaded together in quantize_vec.
#define QROUNDS 2

// quantize_vec quantizes the K values v_i = x_i·normw_i (x_i when normw is
// null) per 32: q[i] = round(v_i·127/amax), dq[c] = amax/127 of chunk c.
// With normw it returns the RMSNorm factor 1/sqrt(mean(x²)+eps), else 1.
// The factor scales every value of a chunk alike and so leaves q as it is:
// the caller multiplies the dot products (or dq) by it, which needs no
// second pass over x. Each lane takes 4 values, 8 lanes a chunk; the NW
// warps of the block take part and their loads go out QROUNDS at a time.
// It ends with a barrier, after which q and dq are visible to the block.
// red is NW floats of shared scratch. x and normw are 16-byte aligned and
// K is a multiple of 32. Twin: ref.RMSNorm, then the rounding that the tests
// bound.
template <int NW>
DEVICE float quantize_vec(const float* x, int K, const float* __restrict__ normw,
                          float eps, float* red, i8* q, float* dq) {
	int tid = TID, lane = tid & 31, warp = tid >> 5;
	float ss = 0;
	// The loop runs alike in every lane (the shuffles below need the whole
	// warp); lanes past K take zeros.
	for (int i0 = warp * 128; i0 < K; i0 += NW * 128 * QROUNDS) {
		float4v v[QROUNDS], w[QROUNDS];
#pragma unroll
		for (int e = 0; e < QROUNDS; e++) {
			int i = i0 + e * NW * 128 + lane * 4;
			v[e] = (float4v){0, 0, 0, 0};
			w[e] = (float4v){1, 1, 1, 1};
			if (i < K) {
				v[e] = *(const float4v*)(x + i);
				if (normw) w[e] = *(const float4v*)(normw + i);
			}
		}
#pragma unroll
		for (int e = 0; e < QROUNDS; e++) {
			int i = i0 + e * NW * 128 + lane * 4;
			ss += v[e].x * v[e].x + v[e].y * v[e].y + v[e].z * v[e].z + v[e].w * v[e].w;
			float4v u = v[e] * w[e];
			float m = __builtin_fmaxf(__builtin_fmaxf(__builtin_fabsf(u.x), __builtin_fabsf(u.y)),
			                          __builtin_fmaxf(__builtin_fabsf(u.z), __builtin_fabsf(u.w)));
			for (int o = 1; o < 8; o <<= 1) m = __builtin_fmaxf(m, __nvvm_shfl_sync_bfly_f32(0xffffffff, m, o, 31));
			float inv = m > 0 ? 127.0f * rcp(m) : 0.0f;
			if (i < K) {
				*(int*)(q + i) = pack4(u, inv);
				if ((lane & 7) == 0) dq[i >> 5] = m * (1.0f / 127.0f);
			}
		}
	}
	ss = warp_sum(ss);
	if (lane == 0) red[warp] = ss;
	__syncthreads();
	if (!normw) return 1.0f;
	float t = 0;
	for (int w = 0; w < NW; w++) t += red[w];
	return 1.0f / __builtin_sqrtf(t / K + eps);
}

// quant_q8 quantizes row xrows[BX] (or BX) of X for gemm_q8: QX row BX gets
// its K int8 values and DX row BX its K/32 scales, the RMSNorm factor
// folded into the scales. Twin: ref.RMSNorm. Its QUANT_WARPS warps take a
// row of up to 8192 values in one round of loads. Grid: ntok; block
// QUANT_WARPS*32.
#define QUANT_WARPS 32
GLOBAL BOUNDS(QUANT_WARPS * 32) void quant_q8(const float* X, int ldx, const int* __restrict__ xrows,
                     const float* __restrict__ normw, float eps, int K, i8* QX, float* DX) {
	SHARED float red[QUANT_WARPS];
	GRID_START();
	long row = xrows ? xrows[BX] : BX;
	float* dx = DX + (long)BX * (K >> 5);
	float s = quantize_vec<QUANT_WARPS>(X + row * ldx, K, normw, eps, red, QX + (long)BX * K, dx);
	if (normw)
		for (int c = TID; c < K >> 5; c += QUANT_WARPS * 32) dx[c] *= s;
}

// CHUNK_LOADS is the 512-byte loads per warp of one weight row in a
// gemv_q8_1 chunk: 4 (2048 values), or 2 (1024) with GATED, which loads
// the up projection's row beside it, so that the two buffers of each fit
// the same registers.
#define CHUNK_LOADS(GATED) (GATED ? 2 : 4)
#define CHUNK(GATED) (CHUNK_LOADS(GATED) * 512)

// chunk is CHUNK values of one weight row for gemv_q8_1, 16 per lane, with
// their raw float16 scales, and with GATED the same of the up projection's
// row. The scales stay raw so that nothing waits on the loads until the
// chunk is used.
template <int GATED>
struct chunk {
	int4v w[CHUNK_LOADS(GATED)], w2[GATED ? CHUNK_LOADS(GATED) : 1];
	u16 s[CHUNK_LOADS(GATED)], s2[GATED ? CHUNK_LOADS(GATED) : 1];
};

template <int GATED>
DEVICE void load_chunk(chunk<GATED>& c, const i8* __restrict__ W, const u16* __restrict__ Wd,
                       const i8* __restrict__ W2, const u16* __restrict__ W2d, long r, int kb,
                       int K, int lane) {
	long nblk = K >> 5;
#pragma unroll
	for (int u = 0; u < CHUNK_LOADS(GATED); u++) {
		int off = kb + u * 512 + lane * 16;
		c.w[u] = (int4v){0, 0, 0, 0};
		c.s[u] = 0;
		if (GATED) c.w2[u] = (int4v){0, 0, 0, 0}, c.s2[u] = 0;
		if (off < K) {
			c.w[u] = *(const int4v*)(W + r * K + off);
			c.s[u] = Wd[r * nblk + (off >> 5)];
			if (GATED) {
				c.w2[u] = *(const int4v*)(W2 + r * K + off);
				c.s2[u] = W2d[r * nblk + (off >> 5)];
			}
		}
	}
}

DEVICE int dot16(int4v w, int4v a) {
	return dp4a(w.x, a.x, dp4a(w.y, a.y, dp4a(w.z, a.z, dp4a(w.w, a.w, 0))));
}

// dot_chunk adds the chunk at kb times the quantized activations qa/da
// (shared memory) to the lane's partial sums.
template <int GATED>
DEVICE void dot_chunk(const chunk<GATED>& c, int kb, int K, const i8* qa, const float* da, int lane,
                      float& acc, float& acc2) {
#pragma unroll
	for (int u = 0; u < CHUNK_LOADS(GATED); u++) {
		int off = kb + u * 512 + lane * 16;
		if (off >= K) continue;
		int4v a = *(const int4v*)(qa + off);
		float ad = da[off >> 5];
		acc += (float)dot16(c.w[u], a) * (h2f(c.s[u]) * ad);
		if (GATED) acc2 += (float)dot16(c.w2[u], a) * (h2f(c.s2[u]) * ad);
	}
}

// PREFETCH_ROWS: rows per warp that gemv_q8_1 asks L2 for ahead of use.
#define PREFETCH_ROWS 4

// gemv1_body: Y[r] (=, or += when accumulate) dot(W[r], x) for one token x
// (row xrows[0], or 0, of X; the decode step of one sequence), W a Q8_0
// matrix of rows × K, x RMS-normalised with normw when not null and
// quantized to int8 per 32 values in shared memory; dot products use dp4a.
// With GATED, W2 is the up projection and Y = silu(W·x) * (W2·x). It is
// built against latency: before waiting for the kernel before it, each
// warp loads its first chunk of weights and asks L2 for the rest of its
// next rows; it keeps the next chunk in flight while it computes the
// current one. Warps stride over the rows, a chunk at a time. Twin:
// ref.RMSNorm, ref.MatMul, ref.SiLUGate.
template <int GATED>
DEVICE void gemv1_body(const i8* __restrict__ W, const u16* __restrict__ Wd,
                       const i8* __restrict__ W2, const u16* __restrict__ W2d, int rows, int K,
                       const float* X, int ldx, const int* __restrict__ xrows,
                       const float* __restrict__ normw, float eps, float* Y, int accumulate,
                       int4v* smem) {
	i8* qa = (i8*)smem;
	float* da = (float*)(qa + K);
	float* red = da + (K >> 5);
	int lane = TID & 31, warp = TID >> 5;
	int stride = (int)__nvvm_read_ptx_sreg_nctaid_x() * WARPS;
	int r = BX * WARPS + warp, kb = 0;
	chunk<GATED> cur;
	if (r < rows) load_chunk<GATED>(cur, W, Wd, W2, W2d, r, 0, K, lane);
	prefetch_rows(W, Wd, r, stride, rows, K, CHUNK(GATED), PREFETCH_ROWS, lane);
	if (GATED) prefetch_rows(W2, W2d, r, stride, rows, K, CHUNK(GATED), PREFETCH_ROWS, lane);
	GRID_START();
	long row = xrows ? xrows[0] : 0;
	float s = quantize_vec<WARPS>(X + row * ldx, K, normw, eps, red, qa, da);
	float acc = 0, acc2 = 0;
	while (r < rows) {
		int nr = r, nkb = kb + CHUNK(GATED);
		if (nkb >= K) nr = r + stride, nkb = 0;
		chunk<GATED> next;
		if (nr < rows) load_chunk<GATED>(next, W, Wd, W2, W2d, nr, nkb, K, lane);
		dot_chunk<GATED>(cur, kb, K, qa, da, lane, acc, acc2);
		if (nkb == 0) {
			float v = warp_sum(acc) * s;
			if (GATED) v = silu_mul(v, warp_sum(acc2) * s);
			if (lane == 0) Y[r] = accumulate ? Y[r] + v : v;
			acc = acc2 = 0;
		}
		cur = next, r = nr, kb = nkb;
	}
}

// GEMV1_BOUNDS: the timeline build holds the one-token GEMVs to the 64
// registers they use without it (4 blocks per SM), so that its blocks
// overlap the next kernel's as the product's do.
#ifndef OCTET_TRACE
#define GEMV1_BOUNDS BOUNDS(WARPS * 32)
#else
#define GEMV1_BOUNDS __attribute__((launch_bounds(WARPS * 32, 4)))
#endif

// gemv_q8_1 and gemv_q8_1_gated: gemv1_body without and with the up
// projection. Grid: any; block WARPS*32; dynamic shared memory K + K/8 +
// 4*WARPS bytes (no static shared memory: the launch may take all there
// is). Both stay near 64 registers, so that the next kernel's blocks fit
// beside theirs.
GLOBAL GEMV1_BOUNDS void gemv_q8_1(const i8* __restrict__ W, const u16* __restrict__ Wd, int rows, int K,
                      const float* X, int ldx, const int* __restrict__ xrows,
                      const float* __restrict__ normw, float eps, float* Y, int accumulate) {
	extern SHARED int4v smem_q1[];
	gemv1_body<0>(W, Wd, 0, 0, rows, K, X, ldx, xrows, normw, eps, Y, accumulate, smem_q1);
}

GLOBAL GEMV1_BOUNDS void gemv_q8_1_gated(
    const i8* __restrict__ W, const u16* __restrict__ Wd, const i8* __restrict__ W2,
    const u16* __restrict__ W2d, int rows, int K, const float* X, int ldx,
    const int* __restrict__ xrows, const float* __restrict__ normw, float eps, float* Y,
    int accumulate) {
	extern SHARED int4v smem_q1[];
	gemv1_body<1>(W, Wd, W2, W2d, rows, K, X, ldx, xrows, normw, eps, Y, accumulate, smem_q1);
}

// MMA_WARPS warps per gemm_q8 block split its K blocks.
#define MMA_WARPS 8
// The 1.5·2^23 bias: an int32 accumulator started at these float bits
// holds, read as a float, 12582912 + the dot product while that is under
// 2^22 in magnitude (a Q8_0 block's is at most 32·128·127), so one
// subtraction converts it.
#define MMA_BIAS 0x4B400000
#define MMA_BIAS_F 12582912.0f

// mma_block is one m16n8k32 int8 tensor-core product: rows g and g+8 of
// a 16-row tile (a0/a2 and a1/a3) times the 32 values of token g of an
// 8-token tile (b0, b1); d gets C[g][2q], C[g][2q+1], C[g+8][2q],
// C[g+8][2q+1] (g = lane/4, q = lane%4).
DEVICE void mma_block(int a0, int a1, int a2, int a3, int b0, int b1, float d[4]) {
	int r0, r1, r2, r3;
	asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
	    "{%10,%10,%10,%10};"
	    : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
	    : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(MMA_BIAS));
	d[0] = __builtin_bit_cast(float, r0) - MMA_BIAS_F;
	d[1] = __builtin_bit_cast(float, r1) - MMA_BIAS_F;
	d[2] = __builtin_bit_cast(float, r2) - MMA_BIAS_F;
	d[3] = __builtin_bit_cast(float, r3) - MMA_BIAS_F;
}

typedef int int2v __attribute__((ext_vector_type(2)));

// gemm_body: Y[t][r] (=, or += when accumulate) dot(W[r], x_t) for the 16
// rows of block BX and the tokens of tile BY (8·NJ at most: 32, or 16 for
// the _t16 kernels, which hold fewer registers and make twice the blocks
// of a decode step of 32 sequences), with int8
// tensor-core products on activations that quant_q8 quantized (QX, DX).
// One instruction multiplies one Q8_0 block of 16 rows by 8 tokens; the
// int32 result is scaled by both blocks' scales into float sums. The
// warps split the K blocks (KU at a time each, loads first) and add their
// sums through shared memory. Within a 32-value block, lane (g, q) loads
// bytes 8q…8q+7 of rows g and g+8 and of token g: the instruction pairs
// k indices 4q…4q+3 and 16+4q…16+4q+3 of A with the same of B, so feeding
// both the same 8 bytes computes the same dot product in another order.
// With GATED, W2 is the up projection and Y = silu(W·x) * (W2·x).
template <int KU, int GATED, int NJ>
DEVICE void gemm_body(const i8* __restrict__ W, const u16* __restrict__ Wd,
                      const i8* __restrict__ W2, const u16* __restrict__ W2d, int rows, int K,
                      const i8* QX, const float* DX, int ntok, float* Y,
                      int ldy, int accumulate, float* red) {
	int lane = TID & 31, warp = TID >> 5, g = lane >> 2, q = lane & 3;
	int nblk = K >> 5;
	int r0 = BX * 16, t0 = BY * 8 * NJ;
	int nt = ntok - t0 < 8 * NJ ? ntok - t0 : 8 * NJ, nj = (nt + 7) >> 3;
	long ra = r0 + g < rows ? r0 + g : rows - 1, rb = r0 + g + 8 < rows ? r0 + g + 8 : rows - 1;
	// The block's 16 weight rows go to L2 while the kernel before finishes.
	if (BY == 0) {
		prefetch_rows(W, Wd, r0 + warp, MMA_WARPS, r0 + 16 < rows ? r0 + 16 : rows, K, 0, 2, lane);
		if (GATED) prefetch_rows(W2, W2d, r0 + warp, MMA_WARPS, r0 + 16 < rows ? r0 + 16 : rows, K, 0, 2, lane);
	}
	GRID_START();
	const i8* xq[NJ];
	const float *xd0[NJ], *xd1[NJ];
#pragma unroll
	for (int j = 0; j < NJ; j++) {
		int tb = t0 + 8 * j + g, tc = t0 + 8 * j + 2 * q;
		tb = tb < ntok ? tb : ntok - 1;
		int tc0 = tc < ntok ? tc : ntok - 1, tc1 = tc + 1 < ntok ? tc + 1 : ntok - 1;
		xq[j] = QX + (long)tb * K + 8 * q;
		xd0[j] = DX + (long)tc0 * nblk;
		xd1[j] = DX + (long)tc1 * nblk;
	}
	float acc[NJ][4], acc2[NJ][4];
#pragma unroll
	for (int j = 0; j < NJ; j++)
#pragma unroll
		for (int c = 0; c < 4; c++) acc[j][c] = acc2[j][c] = 0;

	for (int kb0 = warp; kb0 < nblk; kb0 += MMA_WARPS * KU) {
		int2v A[KU][2], A2[KU][2], B[KU][NJ];
		u16 sa[KU][2], sa2[KU][2];
		float xs[KU][NJ][2];
#pragma unroll
		for (int e = 0; e < KU; e++) {
			int kb = kb0 + e * MMA_WARPS;
			kb = kb < nblk ? kb : nblk - 1; // past the end: a harmless reload, skipped below
			A[e][0] = *(const int2v*)(W + ra * K + kb * 32 + 8 * q);
			A[e][1] = *(const int2v*)(W + rb * K + kb * 32 + 8 * q);
			sa[e][0] = Wd[ra * nblk + kb];
			sa[e][1] = Wd[rb * nblk + kb];
			if (GATED) {
				A2[e][0] = *(const int2v*)(W2 + ra * K + kb * 32 + 8 * q);
				A2[e][1] = *(const int2v*)(W2 + rb * K + kb * 32 + 8 * q);
				sa2[e][0] = W2d[ra * nblk + kb];
				sa2[e][1] = W2d[rb * nblk + kb];
			}
#pragma unroll
			for (int j = 0; j < NJ; j++) {
				if (j >= nj) continue;
				B[e][j] = *(const int2v*)(xq[j] + kb * 32);
				xs[e][j][0] = xd0[j][kb];
				xs[e][j][1] = xd1[j][kb];
			}
		}
#pragma unroll
		for (int e = 0; e < KU; e++) {
			if (kb0 + e * MMA_WARPS >= nblk) continue;
			float fa = h2f(sa[e][0]), fb = h2f(sa[e][1]);
#pragma unroll
			for (int j = 0; j < NJ; j++) {
				if (j >= nj) continue;
				float d[4];
				mma_block(A[e][0].x, A[e][1].x, A[e][0].y, A[e][1].y, B[e][j].x, B[e][j].y, d);
				acc[j][0] += d[0] * (fa * xs[e][j][0]);
				acc[j][1] += d[1] * (fa * xs[e][j][1]);
				acc[j][2] += d[2] * (fb * xs[e][j][0]);
				acc[j][3] += d[3] * (fb * xs[e][j][1]);
				if (GATED) {
					float ga = h2f(sa2[e][0]), gb = h2f(sa2[e][1]);
					mma_block(A2[e][0].x, A2[e][1].x, A2[e][0].y, A2[e][1].y, B[e][j].x, B[e][j].y, d);
					acc2[j][0] += d[0] * (ga * xs[e][j][0]);
					acc2[j][1] += d[1] * (ga * xs[e][j][1]);
					acc2[j][2] += d[2] * (gb * xs[e][j][0]);
					acc2[j][3] += d[3] * (gb * xs[e][j][1]);
				}
			}
		}
	}
	// red holds each warp's sums as [slot][warp][lane], slot = 4j + c (and
	// 4·NJ + 4j + c for the up projection): conflict-free both ways.
#pragma unroll
	for (int j = 0; j < NJ; j++)
#pragma unroll
		for (int c = 0; c < 4; c++) {
			red[((4 * j + c) * MMA_WARPS + warp) * 32 + lane] = acc[j][c];
			if (GATED) red[((4 * NJ + 4 * j + c) * MMA_WARPS + warp) * 32 + lane] = acc2[j][c];
		}
	__syncthreads();
	for (int idx = TID; idx < 4 * NJ * 32; idx += MMA_WARPS * 32) {
		int ln = idx & 31, slot = idx >> 5, j = slot >> 2, c = slot & 3;
		int row = r0 + (ln >> 2) + (c >= 2 ? 8 : 0), tok = 8 * j + 2 * (ln & 3) + (c & 1);
		if (row >= rows || tok >= nt) continue;
		float s = 0, s2 = 0;
		for (int w = 0; w < MMA_WARPS; w++) {
			s += red[(slot * MMA_WARPS + w) * 32 + ln];
			if (GATED) s2 += red[((4 * NJ + slot) * MMA_WARPS + w) * 32 + ln];
		}
		if (GATED) s = silu_mul(s, s2);
		float* y = Y + (long)(t0 + tok) * ldy + row;
		*y = accumulate ? *y + s : s;
	}
}

// gemm_q8 and gemm_q8_gated: gemm_body without and with the up
// projection, over tiles of 32 tokens; the _t16 kernels over tiles of 16.
// Twin: ref.MatMul, ref.SiLUGate (on ref.RMSNorm'd input: quant_q8
// normalises). Grid: (ceil(rows/16), ceil(ntok/tile)); block MMA_WARPS*32.
#define GEMM_KERNELS(SUFFIX, NJ)                                                                       \
	GLOBAL BOUNDS(MMA_WARPS * 32) void gemm_q8##SUFFIX(const i8* __restrict__ W, const u16* __restrict__ Wd, \
	                                                   int rows, int K, const i8* QX, const float* DX,     \
	                                                   int ntok, float* Y, int ldy, int accumulate) {      \
		SHARED float red[4 * NJ * MMA_WARPS * 32];                                                      \
		gemm_body<4, 0, NJ>(W, Wd, 0, 0, rows, K, QX, DX, ntok, Y, ldy, accumulate, red);               \
	}                                                                                                  \
	GLOBAL BOUNDS(MMA_WARPS * 32) void gemm_q8_gated##SUFFIX(                                          \
	    const i8* __restrict__ W, const u16* __restrict__ Wd, const i8* __restrict__ W2,               \
	    const u16* __restrict__ W2d, int rows, int K, const i8* QX, const float* DX, int ntok,         \
	    float* Y, int ldy, int accumulate) {                                                           \
		SHARED float red[8 * NJ * MMA_WARPS * 32];                                                      \
		gemm_body<2, 1, NJ>(W, Wd, W2, W2d, rows, K, QX, DX, ntok, Y, ldy, accumulate, red);            \
	}
GEMM_KERNELS(, 4)
GEMM_KERNELS(_t16, 2)

// gemv_f32: Y[t][r] (=, or += when accumulate) dot(W[r], x_t) for the
// tokens t of a tile, W a float32 matrix of rows × K (one a model keeps
// unquantized), x_t row xrows[t] (or t) of X, RMS-normalised with normw when
// not null, in shared memory. With W2 (the up projection) Y = silu(W·x) *
// (W2·x). Twin: ref.RMSNorm, ref.MatMul, ref.SiLUGate.
// Grid: (ceil(ntok/tile), at most ceil(rows/WARPS)); block WARPS*32.
// Dynamic shared memory tile*K*4 + (WARPS+1)*TILE*4 bytes.
GLOBAL BOUNDS(WARPS * 32) void gemv_f32(const float* __restrict__ W, const float* __restrict__ W2,
                     int rows, int K, const float* X, int ldx,
                     const int* __restrict__ xrows, const float* __restrict__ normw,
                     float eps, float* Y, int ldy, int accumulate, int ntok, int tile) {
	extern SHARED float smem_f32[];
	int t0 = BX * tile;
	int nt = ntok - t0 < tile ? ntok - t0 : tile;
	float* xa = smem_f32;
	float* red = xa + tile * K;
	float* scale = red + WARPS * TILE;
	int tid = TID, lane = tid & 31, warp = tid >> 5;
	GRID_START();

	if (normw) norm_scales(X, ldx, xrows, t0, nt, K, eps, red, scale);
	for (int idx = tid; idx < nt * K; idx += WARPS * 32) {
		int t = idx / K, i = idx - t * K;
		long row = xrows ? xrows[t0 + t] : t0 + t;
		float v = X[row * ldx + i];
		xa[idx] = normw ? v * scale[t] * normw[i] : v;
	}
	__syncthreads();

	for (int r = BY * WARPS + warp; r < rows; r += NBY * WARPS) {
		const float* wr = W + (long)r * K;
		const float* wr2 = W2 ? W2 + (long)r * K : 0;
		float acc[TILE], acc2[TILE];
#pragma unroll
		for (int t = 0; t < TILE; t++) acc[t] = acc2[t] = 0;
		for (int i = lane; i < K; i += 32) {
			float w = wr[i], w2 = wr2 ? wr2[i] : 0;
#pragma unroll
			for (int t = 0; t < TILE; t++) {
				if (t >= nt) continue;
				float a = xa[t * K + i];
				acc[t] += w * a;
				acc2[t] += w2 * a;
			}
		}
		store_row(acc, acc2, wr2 != 0, nt, t0, r, Y, ldy, accumulate);
	}
}

// embed_q8 sets X[t] to row tok[t] of the Q8_0 matrix W (K columns).
// Twin: model.Tensor.DequantizeRow. Grid: ntok; any block size.
GLOBAL void embed_q8(const int* tok, const i8* W, const u16* Wd, int K, float* X) {
	GRID_START();
	long row = tok[BX];
	for (int i = TID; i < K; i += NTID)
		X[(long)BX * K + i] = (float)W[row * K + i] * h2f(Wd[row * (K >> 5) + (i >> 5)]);
}

// embed_f32 is embed_q8 for a float32 matrix.
GLOBAL void embed_f32(const int* tok, const float* W, int K, float* X) {
	GRID_START();
	long row = tok[BX];
	for (int i = TID; i < K; i += NTID) X[(long)BX * K + i] = W[row * K + i];
}

// f2h rounds x to the nearest float16 (ties to even), as gguf.F32ToF16.
DEVICE u16 f2h(float x) {
	u16 h;
	asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
	return h;
}

// A KV cache holds float32 or float16 values: kv_get reads one as float32,
// kv_put stores one (rounded to nearest even for float16).
DEVICE float kv_get(const float* p) { return *p; }
DEVICE float kv_get(const u16* p) { return h2f(*p); }
DEVICE void kv_put(float* p, float x) { *p = x; }
DEVICE void kv_put(u16* p, float x) { *p = f2h(x); }
// qk_put stores element i of a query row q (isq) or of a key row kd.
DEVICE void qk_put(float* q, float* kd, int isq, int i, float x) { (isq ? q : kd)[i] = x; }
DEVICE void qk_put(float* q, u16* kd, int isq, int i, float x) {
	if (isq)
		q[i] = x;
	else
		kd[i] = f2h(x);
}

// rope_kv_body adds the QKV biases (when not null), rotates the query and
// key heads of token BX at its position with the cos/sin table cs
// ([position][rdims/2][2]), keeps the rotated query in place and writes the
// key and value rows into the token's cache slot, as T values.
template <typename T>
DEVICE void rope_kv_body(float* QKV, int ld, const int* pos, const int* btoff, const int* blocks,
                         int bs, int H, int KVH, int hd, int rdims, int neox, const float* cs,
                         const float* bq, const float* bk, const float* bv, T* kc, T* vc) {
	GRID_START();
	float* q = QKV + (long)BX * ld;
	float* k = q + H * hd;
	const float* v = k + KVH * hd;
	int p = pos[BX];
	long kvw = KVH * hd;
	long slot = (long)blocks[btoff[BX] + p / bs] * bs + p % bs;
	T* kd = kc + slot * kvw;
	int half = rdims / 2;
	int first = BY * NTID + TID, stride = NTID * NBY;
	for (int idx = first; idx < (H + KVH) * hd; idx += stride) {
		int isq = idx < H * hd;
		int j = isq ? idx : idx - H * hd;
		const float* src = isq ? q : k;
		const float* b = isq ? bq : bk;
		int h = j / hd, d = j - h * hd;
		if (d >= rdims) {
			qk_put(q, kd, isq, j, src[j] + (b ? b[j] : 0.0f));
			continue;
		}
		int a, c, i;
		if (neox) {
			if (d >= half) continue;
			a = d, c = d + half, i = d;
		} else {
			if (d & 1) continue;
			a = d, c = d + 1, i = d / 2;
		}
		a += h * hd, c += h * hd;
		float x0 = src[a] + (b ? b[a] : 0.0f), x1 = src[c] + (b ? b[c] : 0.0f);
		float co = cs[((long)p * half + i) * 2], si = cs[((long)p * half + i) * 2 + 1];
		qk_put(q, kd, isq, a, x0 * co - x1 * si);
		qk_put(q, kd, isq, c, x0 * si + x1 * co);
	}
	for (int j = first; j < kvw; j += stride) kv_put(vc + slot * kvw + j, v[j] + (bv ? bv[j] : 0.0f));
}

// rope_kv is rope_kv_body for a float32 cache, rope_kv16 for a float16
// one. Twin: ref.Rope (and the cache writes of ref's attention step, which
// round to float16 for an f16 cache). Grid: (ntok, any): the blocks of a
// token share its elements, one each when the grid is wide enough, so no
// thread waits on a chain of loads.
GLOBAL void rope_kv(float* QKV, int ld, const int* pos, const int* btoff, const int* blocks,
                    int bs, int H, int KVH, int hd, int rdims, int neox, const float* cs,
                    const float* bq, const float* bk, const float* bv, float* kc, float* vc) {
	rope_kv_body(QKV, ld, pos, btoff, blocks, bs, H, KVH, hd, rdims, neox, cs, bq, bk, bv, kc, vc);
}
GLOBAL void rope_kv16(float* QKV, int ld, const int* pos, const int* btoff, const int* blocks,
                      int bs, int H, int KVH, int hd, int rdims, int neox, const float* cs,
                      const float* bq, const float* bk, const float* bv, u16* kc, u16* vc) {
	rope_kv_body(QKV, ld, pos, btoff, blocks, bs, H, KVH, hd, rdims, neox, cs, bq, bk, bv, kc, vc);
}

#define MAX_HD 256

// attention_body computes causal attention of query head BX of token BY
// over positions 0…pos[BY] of its sequence, read through its block table,
// with an online softmax per warp (NW of them) merged at the end. Each
// warp takes UN positions at a time, their loads issued together, and
// looks up the next UN positions' cache slots while it computes these, so
// that a decode step
// (few blocks, long contexts) keeps memory requests in flight. Query head h
// reads KV head h / (H/KVH). Each lane holds NU of a head's hd ≤ 32·NU
// values: the kernels below instantiate it per head width, so that a
// narrow head does not pay a wide one's registers (and occupancy). ms, ls
// and accs are the block's shared scratch.
template <int NU, int UN, int NW, typename T>
DEVICE void attention_body(const float* QKV, int ld, const int* pos, const int* btoff,
                           const int* blocks, int bs, int H, int KVH, int hd, float scale,
                           const T* kc, const T* vc, float* out, int ldo,
                           float* ms, float* ls, float* accs) {
	int h = BX, t = BY;
	int tid = TID, lane = tid & 31, warp = tid >> 5;
	int kvh = h / (H / KVH);
	GRID_START();
	long kvw = KVH * hd;
	const float* q = QKV + (long)t * ld + h * hd;
	float qr[NU], acc[NU];
#pragma unroll
	for (int u = 0; u < NU; u++) {
		int d = lane + 32 * u;
		qr[u] = d < hd ? q[d] : 0.0f;
		acc[u] = 0;
	}
	float m = -__builtin_inff(), l = 0;
	int p = pos[t];
	const int* bt = blocks + btoff[t];
	// slot[e]: the cache row of position j0+e (past p: p's, masked below).
	long slot[UN];
#pragma unroll
	for (int e = 0; e < UN; e++) {
		int j = warp * UN + e < p ? warp * UN + e : p;
		slot[e] = (long)bt[j / bs] * bs + j % bs;
	}
	for (int j0 = warp * UN; j0 <= p; j0 += NW * UN) {
		float kx[UN][NU], vx[UN][NU], s[UN];
#pragma unroll
		for (int e = 0; e < UN; e++) {
			const T* kr = kc + slot[e] * kvw + kvh * hd;
			const T* vr = vc + slot[e] * kvw + kvh * hd;
#pragma unroll
			for (int u = 0; u < NU; u++) {
				int d = lane + 32 * u;
				kx[e][u] = d < hd ? kv_get(kr + d) : 0.0f;
				vx[e][u] = d < hd ? kv_get(vr + d) : 0.0f;
			}
		}
#pragma unroll
		for (int e = 0; e < UN; e++) {
			int j = j0 + NW * UN + e < p ? j0 + NW * UN + e : p;
			slot[e] = (long)bt[j / bs] * bs + j % bs;
		}
		float mn = m;
#pragma unroll
		for (int e = 0; e < UN; e++) {
			float d = 0;
#pragma unroll
			for (int u = 0; u < NU; u++) d += qr[u] * kx[e][u];
			d = warp_sum(d) * scale;
			s[e] = j0 + e <= p ? d : -__builtin_inff();
			mn = mn > s[e] ? mn : s[e];
		}
		float c = fexp(m - mn);
		l *= c;
#pragma unroll
		for (int u = 0; u < NU; u++) acc[u] *= c;
#pragma unroll
		for (int e = 0; e < UN; e++) {
			float w = fexp(s[e] - mn);
			l += w;
#pragma unroll
			for (int u = 0; u < NU; u++) acc[u] += w * vx[e][u];
		}
		m = mn;
	}
	if (lane == 0) ms[warp] = m, ls[warp] = l;
#pragma unroll
	for (int u = 0; u < NU; u++) {
		int d = lane + 32 * u;
		if (d < hd) accs[warp * MAX_HD + d] = acc[u];
	}
	__syncthreads();
	float M = ms[0];
	for (int w = 1; w < NW; w++) M = M > ms[w] ? M : ms[w];
	float f[NW], L = 0;
	for (int w = 0; w < NW; w++) {
		f[w] = ls[w] > 0 ? fexp(ms[w] - M) : 0.0f;
		L += ls[w] * f[w];
	}
	for (int d = tid; d < hd; d += NTID) {
		float o = 0;
		for (int w = 0; w < NW; w++) o += accs[w * MAX_HD + d] * f[w];
		out[(long)t * ldo + h * hd + d] = o / L;
	}
}

// attention_N_wW: attention_body for heads of at most 32·N values, with
// 32·N·UN values of keys and as many of values in flight per warp, and W
// warps: 16 when there are few (head, token) pairs for the GPU's SMs, 4
// when there are many; attention16_N_wW the same over a float16 cache.
// Twin: ref.Attention (and ref.Softmax inside it). Grid: (H, ntok); block
// W*32.
#define ATTENTION(NAME, T, NU, UN, W)                                                           \
	GLOBAL BOUNDS(W * 32) void NAME##_##NU##_w##W(                                              \
	    const float* QKV, int ld, const int* pos, const int* btoff, const int* blocks, int bs,  \
	    int H, int KVH, int hd, float scale, const T* kc, const T* vc, float* out, int ldo) {   \
		SHARED float ms[W], ls[W];                                                              \
		SHARED float accs[W * MAX_HD];                                                          \
		attention_body<NU, UN, W>(QKV, ld, pos, btoff, blocks, bs, H, KVH, hd, scale, kc, vc,   \
		                          out, ldo, ms, ls, accs);                                      \
	}
#define ATTENTION_ALL(NAME, T) \
	ATTENTION(NAME, T, 1, 8, 16) \
	ATTENTION(NAME, T, 2, 8, 16) \
	ATTENTION(NAME, T, 4, 4, 16) \
	ATTENTION(NAME, T, 8, 2, 16) \
	ATTENTION(NAME, T, 1, 8, 4)  \
	ATTENTION(NAME, T, 2, 8, 4)  \
	ATTENTION(NAME, T, 4, 4, 4)  \
	ATTENTION(NAME, T, 8, 2, 4)
ATTENTION_ALL(attention, float)
ATTENTION_ALL(attention16, u16)

// GMAX: query heads of one attention16g block at most (a larger group of
// heads sharing a KV head takes several blocks).
#define GMAX 8

typedef unsigned uint4v __attribute__((ext_vector_type(4)));

// ld16 loads 16 bytes at p (16-byte aligned) with a plain, coherent load
// (a cache row written earlier in the step). Written out, so that the
// compiler does not split it into four 4-byte loads, as it did a vector
// dereference whose elements each go to an asm conversion.
DEVICE uint4v ld16(const void* p) {
	uint4v v;
	asm("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p) : "memory");
	return v;
}

// h2f2 splits two float16 values packed in a 32-bit word (the first in the
// low half) into lo and hi.
DEVICE void h2f2(unsigned w, float* lo, float* hi) {
	*lo = h2f((u16)(w & 0xffff));
	*hi = h2f((u16)(w >> 16));
}

// attention_grouped computes causal attention over a float16 cache for the
// ng ≤ GMAX query heads h0… of token BY that share KV head kvh, so that
// each cached key and value is read once for all of them (attention_body
// reads it once per query head). Each warp takes 32 positions at a time in
// two phases. Scores: lane e owns position j0+e, loads its key row (16
// bytes at a time: hd is a multiple of 8) and dots it with every head's
// query, which the block keeps in shared memory (qs, read by all lanes at
// once: a broadcast); no shuffles per product. The warp's running maximum
// per head rescales its sums as in attention_body, and the weights go to
// the warp's slice of ps. Values: lane d owns dimensions 2d, 2d+1 (+64·u),
// and every lane walks the 32 positions, reading each value row once
// (coalesced) and the heads' weights from ps (a broadcast). The warps'
// partial results merge at the end as in attention_body. NP: pairs of
// dimensions per lane (hd ≤ 64·NP); NW warps.
template <int NP, int NW>
DEVICE void attention_grouped(const float* QKV, int ld, const int* pos, const int* btoff,
                              const int* blocks, int bs, int H, int KVH, int hd, float scale,
                              const u16* kc, const u16* vc, float* out, int ldo, float* qs,
                              float* ps, float* ms, float* ls, float* accs) {
	const int HD = 64 * NP;
	int G = H / KVH, parts = (G + GMAX - 1) / GMAX;
	int kvh = BX / parts, h0 = kvh * G + (BX % parts) * GMAX;
	int ng = (kvh + 1) * G - h0 < GMAX ? (kvh + 1) * G - h0 : GMAX;
	int t = BY, tid = TID, lane = tid & 31, warp = tid >> 5;
	GRID_START();
	long kvw = (long)KVH * hd;
	const float* q = QKV + (long)t * ld + (long)h0 * hd;
	for (int i = tid; i < GMAX * HD; i += NW * 32) {
		int g = i / HD, d = i - g * HD;
		qs[i] = g < ng && d < hd ? q[g * hd + d] : 0.0f;
	}
	__syncthreads();
	int p = pos[t];
	const int* bt = blocks + btoff[t];
	float m[GMAX], l[GMAX], acc[GMAX][2 * NP];
#pragma unroll
	for (int g = 0; g < GMAX; g++) {
		m[g] = -__builtin_inff();
		l[g] = 0;
#pragma unroll
		for (int u = 0; u < 2 * NP; u++) acc[g][u] = 0;
	}
	float* pw = ps + warp * GMAX * 32;
	for (int j0 = warp * 32; j0 <= p; j0 += NW * 32) {
		// Lanes past p take p's row (weight 0 below).
		int valid = j0 + lane <= p, j = valid ? j0 + lane : p;
		int slot = bt[j / bs] * bs + j % bs;
		const u16* kr = kc + (long)slot * kvw + (long)kvh * hd;
		float s[GMAX];
#pragma unroll
		for (int g = 0; g < GMAX; g++) s[g] = 0;
		for (int d0 = 0; d0 < hd; d0 += 8) {
			uint4v kk = ld16(kr + d0);
			float kf[8];
			h2f2(kk.x, &kf[0], &kf[1]);
			h2f2(kk.y, &kf[2], &kf[3]);
			h2f2(kk.z, &kf[4], &kf[5]);
			h2f2(kk.w, &kf[6], &kf[7]);
#pragma unroll
			for (int g = 0; g < GMAX; g++) {
				if (g >= ng) continue;
				float4v a = *(const float4v*)(qs + g * HD + d0), b = *(const float4v*)(qs + g * HD + d0 + 4);
				s[g] += a.x * kf[0] + a.y * kf[1] + a.z * kf[2] + a.w * kf[3] + b.x * kf[4] + b.y * kf[5] +
				        b.z * kf[6] + b.w * kf[7];
			}
		}
#pragma unroll
		for (int g = 0; g < GMAX; g++) {
			if (g >= ng) continue;
			float sv = valid ? s[g] * scale : -__builtin_inff();
			float mx = warp_max(sv), mn = m[g] > mx ? m[g] : mx;
			float c = fexp(m[g] - mn), w = valid ? fexp(sv - mn) : 0.0f;
			l[g] = l[g] * c + w;
#pragma unroll
			for (int u = 0; u < 2 * NP; u++) acc[g][u] *= c;
			m[g] = mn;
			pw[g * 32 + lane] = w;
		}
		__nvvm_bar_warp_sync(0xffffffff);
		int cnt = p - j0 + 1 < 32 ? p - j0 + 1 : 32;
		for (int e0 = 0; e0 < cnt; e0 += 8) {
			unsigned vv[8][NP];
#pragma unroll
			for (int e = 0; e < 8; e++) {
				int se = __nvvm_shfl_sync_idx_i32(0xffffffff, slot, e0 + e, 31);
				const u16* vr = vc + (long)se * kvw + (long)kvh * hd;
#pragma unroll
				for (int u = 0; u < NP; u++) {
					int d = 2 * lane + 64 * u;
					vv[e][u] = d < hd ? *(const unsigned*)(vr + d) : 0u;
				}
			}
#pragma unroll
			for (int e = 0; e < 8; e++) {
				float v[2 * NP];
#pragma unroll
				for (int u = 0; u < NP; u++) h2f2(vv[e][u], &v[2 * u], &v[2 * u + 1]);
#pragma unroll
				for (int g = 0; g < GMAX; g++) {
					if (g >= ng) continue;
					float w = pw[g * 32 + e0 + e];
#pragma unroll
					for (int u = 0; u < 2 * NP; u++) acc[g][u] += w * v[u];
				}
			}
		}
		__nvvm_bar_warp_sync(0xffffffff);
	}
	float* am = accs + warp * GMAX * HD;
#pragma unroll
	for (int g = 0; g < GMAX; g++) {
		if (g >= ng) continue;
		float lg = warp_sum(l[g]);
		if (lane == 0) ms[warp * GMAX + g] = m[g], ls[warp * GMAX + g] = lg;
#pragma unroll
		for (int u = 0; u < NP; u++) {
			int d = 2 * lane + 64 * u;
			if (d < hd) am[g * HD + d] = acc[g][2 * u], am[g * HD + d + 1] = acc[g][2 * u + 1];
		}
	}
	__syncthreads();
	for (int i = tid; i < ng * hd; i += NW * 32) {
		int g = i / hd, d = i - g * hd;
		float M = ms[g];
		for (int w = 1; w < NW; w++) M = M > ms[w * GMAX + g] ? M : ms[w * GMAX + g];
		float L = 0, o = 0;
		for (int w = 0; w < NW; w++) {
			float f = ls[w * GMAX + g] > 0 ? fexp(ms[w * GMAX + g] - M) : 0.0f;
			L += ls[w * GMAX + g] * f;
			o += accs[(w * GMAX + g) * HD + d] * f;
		}
		out[(long)t * ldo + (long)(h0 + g) * hd + d] = o / L;
	}
}

// attention16g_P: attention_grouped for heads of at most 64·P values (a
// multiple of 8), 8 warps (4 for the widest, whose partial sums fill the
// shared memory). Twin: ref.Attention over a cache rounded to float16.
// Grid: (KVH·⌈(H/KVH)/GMAX⌉, ntok); block W*32.
#define ATTENTION_GROUPED(NP, W)                                                                      \
	GLOBAL BOUNDS(W * 32) void attention16g_##NP(                                                     \
	    const float* QKV, int ld, const int* pos, const int* btoff, const int* blocks, int bs,        \
	    int H, int KVH, int hd, float scale, const u16* kc, const u16* vc, float* out, int ldo) {     \
		SHARED __attribute__((aligned(16))) float qs[GMAX * 64 * NP];                                 \
		SHARED float ps[W * GMAX * 32], ms[W * GMAX], ls[W * GMAX];                                   \
		SHARED float accs[W * GMAX * 64 * NP];                                                        \
		attention_grouped<NP, W>(QKV, ld, pos, btoff, blocks, bs, H, KVH, hd, scale, kc, vc, out,     \
		                         ldo, qs, ps, ms, ls, accs);                                          \
	}
ATTENTION_GROUPED(1, 8)
ATTENTION_GROUPED(2, 8)
ATTENTION_GROUPED(4, 4)
