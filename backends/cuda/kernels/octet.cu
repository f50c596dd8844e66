// octet's CUDA kernels, compiled to PTX by clang-16 without the CUDA
// toolkit (see build-ptx.sh). Each kernel's reference twin is named in its
// comment; backends/cuda's tests compare them on random inputs.
//
// Layouts: activations are row-major float32, one row per token. A Q8_0
// matrix is stored as two arrays: int8 values, rows × K, and one float16
// scale per 32 values, rows × K/32. The KV cache of a layer is float32,
// one row of kvHeads × headDim per cache slot; slot = block*bs + pos%bs.

#define GLOBAL extern "C" __attribute__((global))
#define SHARED __attribute__((shared))
#define DEVICE static __attribute__((device)) inline

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
#define QUNROLL 8
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

// gemv_q8_row is one weight row r of gemv_q8, computed by one warp for
// the block's nt tokens.
DEVICE void gemv_q8_row(const i8* __restrict__ W, const u16* __restrict__ Wd,
                        const i8* __restrict__ W2, const u16* __restrict__ W2d,
                        int r, int K, const i8* qa, const float* da, int nt, int t0,
                        float* Y, int ldy, int accumulate) {
	int lane = TID & 31, nblk = K >> 5;
	const i8* wr = W + (long)r * K;
	const u16* wdr = Wd + (long)r * nblk;
	const i8* wr2 = W2 ? W2 + (long)r * K : 0;
	const u16* wdr2 = W2 ? W2d + (long)r * nblk : 0;
	float acc[TILE], acc2[TILE];
#pragma unroll
	for (int t = 0; t < TILE; t++) acc[t] = acc2[t] = 0;

	for (int kb = 0; kb < K; kb += 2048) {
		int4v wv[4], wv2[4];
		float ws[4], ws2[4];
#pragma unroll
		for (int u = 0; u < 4; u++) {
			int off = kb + u * 512 + lane * 16;
			wv[u] = wv2[u] = (int4v){0, 0, 0, 0};
			ws[u] = ws2[u] = 0;
			if (off < K) {
				wv[u] = *(const int4v*)(wr + off);
				ws[u] = h2f(wdr[off >> 5]);
				if (wr2) {
					wv2[u] = *(const int4v*)(wr2 + off);
					ws2[u] = h2f(wdr2[off >> 5]);
				}
			}
		}
#pragma unroll
		for (int u = 0; u < 4; u++) {
			int off = kb + u * 512 + lane * 16;
#pragma unroll
			for (int t = 0; t < TILE; t++) {
				if (off >= K || t >= nt) continue;
				int4v a = *(const int4v*)(qa + t * K + off);
				float ad = da[t * nblk + (off >> 5)];
				int s = dp4a(wv[u].x, a.x, dp4a(wv[u].y, a.y, dp4a(wv[u].z, a.z, dp4a(wv[u].w, a.w, 0))));
				acc[t] += (float)s * ws[u] * ad;
				if (wr2) {
					int s2 = dp4a(wv2[u].x, a.x, dp4a(wv2[u].y, a.y, dp4a(wv2[u].z, a.z, dp4a(wv2[u].w, a.w, 0))));
					acc2[t] += (float)s2 * ws2[u] * ad;
				}
			}
		}
	}
	store_row(acc, acc2, wr2 != 0, nt, t0, r, Y, ldy, accumulate);
}

// gemv_q8: Y[t][r] (=, or += when accumulate) dot(W[r], x_t) for the
// tokens t of a tile, W a Q8_0 matrix of rows × K. x_t is row xrows[t] (or
// t) of X, RMS-normalised with normw when normw is not null, and quantized
// to int8 per 32 values in shared memory; dot products use dp4a. With W2
// (the up projection) Y = silu(W·x) * (W2·x).
// Twin: ref.RMSNorm, ref.MatMul, ref.SiLUGate.
// Grid: (ceil(ntok/tile), at most ceil(rows/WARPS)); block WARPS*32; dynamic shared
// memory tile*(K + K/8) + (WARPS+1)*TILE*4 bytes.
GLOBAL void gemv_q8(const i8* __restrict__ W, const u16* __restrict__ Wd,
                    const i8* __restrict__ W2, const u16* __restrict__ W2d,
                    int rows, int K, const float* __restrict__ X, int ldx,
                    const int* __restrict__ xrows, const float* __restrict__ normw,
                    float eps, float* Y, int ldy, int accumulate, int ntok, int tile) {
	extern SHARED int4v smem_q8[];
	int t0 = BX * tile;
	int nt = ntok - t0 < tile ? ntok - t0 : tile;
	int nblk = K >> 5;
	i8* qa = (i8*)smem_q8;
	float* da = (float*)(qa + tile * K);
	float* red = da + tile * nblk;
	float* scale = red + WARPS * TILE;
	int tid = TID, lane = tid & 31, warp = tid >> 5;

	if (normw) norm_scales(X, ldx, xrows, t0, nt, K, eps, red, scale);
	// Each warp quantizes 32-value chunks, QUNROLL at a time so that their
	// loads are in flight together.
	int total = nt * nblk;
	for (int base = warp; base < total; base += WARPS * QUNROLL) {
		float v[QUNROLL];
#pragma unroll
		for (int e = 0; e < QUNROLL; e++) {
			int idx = base + e * WARPS;
			v[e] = 0;
			if (idx < total) {
				int t = idx / nblk, i = (idx - t * nblk) * 32 + lane;
				long row = xrows ? xrows[t0 + t] : t0 + t;
				v[e] = X[row * ldx + i];
				if (normw) v[e] = v[e] * scale[t] * normw[i];
			}
		}
#pragma unroll
		for (int e = 0; e < QUNROLL; e++) {
			int idx = base + e * WARPS;
			float amax = warp_max(v[e] < 0 ? -v[e] : v[e]);
			float d = amax / 127.0f;
			if (idx < total) {
				int t = idx / nblk, c = idx - t * nblk;
				qa[t * K + c * 32 + lane] = (i8)(d > 0 ? rni(v[e] / d) : 0);
				if (lane == 0) da[t * nblk + c] = d;
			}
		}
	}
	__syncthreads();

	// Warps walk the rows with a grid-sized stride: the grid is sized to
	// fill the GPU once, so the activations are quantized once per block.
	for (int r = BY * WARPS + warp; r < rows; r += NBY * WARPS)
		gemv_q8_row(W, Wd, W2, W2d, r, K, qa, da, nt, t0, Y, ldy, accumulate);
}

// gemv_f32 is gemv_q8 for float32 matrices (those a model keeps unquantized),
// with float32 activations in shared memory.
// Twin: ref.RMSNorm, ref.MatMul, ref.SiLUGate.
// Dynamic shared memory tile*K*4 + (WARPS+1)*TILE*4 bytes.
GLOBAL void gemv_f32(const float* __restrict__ W, const float* __restrict__ W2,
                     int rows, int K, const float* __restrict__ X, int ldx,
                     const int* __restrict__ xrows, const float* __restrict__ normw,
                     float eps, float* Y, int ldy, int accumulate, int ntok, int tile) {
	extern SHARED float smem_f32[];
	int t0 = BX * tile;
	int nt = ntok - t0 < tile ? ntok - t0 : tile;
	float* xa = smem_f32;
	float* red = xa + tile * K;
	float* scale = red + WARPS * TILE;
	int tid = TID, lane = tid & 31, warp = tid >> 5;

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
	long row = tok[BX];
	for (int i = TID; i < K; i += NTID)
		X[(long)BX * K + i] = (float)W[row * K + i] * h2f(Wd[row * (K >> 5) + (i >> 5)]);
}

// embed_f32 is embed_q8 for a float32 matrix.
GLOBAL void embed_f32(const int* tok, const float* W, int K, float* X) {
	long row = tok[BX];
	for (int i = TID; i < K; i += NTID) X[(long)BX * K + i] = W[row * K + i];
}

// rope_kv adds the QKV biases (when not null), rotates the query and key
// heads of token BX at its position with the cos/sin table cs
// ([position][rdims/2][2]), keeps the rotated query in place and writes the
// key and value rows into the token's cache slot.
// Twin: ref.Rope (and the cache writes of ref's attention step).
// Grid: ntok; any block size.
GLOBAL void rope_kv(float* QKV, int ld, const int* pos, const int* btoff, const int* blocks,
                    int bs, int H, int KVH, int hd, int rdims, int neox, const float* cs,
                    const float* bq, const float* bk, const float* bv, float* kc, float* vc) {
	float* q = QKV + (long)BX * ld;
	float* k = q + H * hd;
	const float* v = k + KVH * hd;
	int p = pos[BX];
	long kvw = KVH * hd;
	long slot = (long)blocks[btoff[BX] + p / bs] * bs + p % bs;
	float* kd = kc + slot * kvw;
	int half = rdims / 2;
	for (int idx = TID; idx < (H + KVH) * hd; idx += NTID) {
		int isq = idx < H * hd;
		int j = isq ? idx : idx - H * hd;
		float* src = isq ? q : k;
		float* dst = isq ? q : kd;
		const float* b = isq ? bq : bk;
		int h = j / hd, d = j - h * hd;
		if (d >= rdims) {
			dst[j] = src[j] + (b ? b[j] : 0.0f);
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
		dst[a] = x0 * co - x1 * si;
		dst[c] = x0 * si + x1 * co;
	}
	for (int j = TID; j < kvw; j += NTID) vc[slot * kvw + j] = v[j] + (bv ? bv[j] : 0.0f);
}

#define ATT_WARPS 16
#define ATT_UNROLL 4
#define MAX_HD 256

// attention computes causal attention of query head BX of token BY over
// positions 0…pos[BY] of its sequence, read through its block table, with
// an online softmax per warp merged at the end. Each warp takes ATT_UNROLL
// positions at a time, their loads issued together, so that a decode step
// (few blocks, long contexts) keeps enough memory requests in flight.
// Query head h reads KV head h / (H/KVH). Twin: ref.Attention (and
// ref.Softmax inside it). Grid: (H, ntok); block ATT_WARPS*32; hd ≤ MAX_HD.
GLOBAL void attention(const float* QKV, int ld, const int* pos, const int* btoff,
                      const int* blocks, int bs, int H, int KVH, int hd, float scale,
                      const float* kc, const float* vc, float* out, int ldo) {
	SHARED float ms[ATT_WARPS], ls[ATT_WARPS];
	SHARED float accs[ATT_WARPS][MAX_HD];
	int h = BX, t = BY;
	int tid = TID, lane = tid & 31, warp = tid >> 5;
	int kvh = h / (H / KVH);
	long kvw = KVH * hd;
	const float* q = QKV + (long)t * ld + h * hd;
	float qr[MAX_HD / 32], acc[MAX_HD / 32];
#pragma unroll
	for (int u = 0; u < MAX_HD / 32; u++) {
		int d = lane + 32 * u;
		qr[u] = d < hd ? q[d] : 0.0f;
		acc[u] = 0;
	}
	int nu = (hd + 31) / 32;
	float m = -__builtin_inff(), l = 0;
	int p = pos[t];
	const int* bt = blocks + btoff[t];
	for (int j0 = warp * ATT_UNROLL; j0 <= p; j0 += ATT_WARPS * ATT_UNROLL) {
		float kx[ATT_UNROLL][MAX_HD / 32], vx[ATT_UNROLL][MAX_HD / 32], s[ATT_UNROLL];
#pragma unroll
		for (int e = 0; e < ATT_UNROLL; e++) {
			int j = j0 + e < p ? j0 + e : p; // past p: a harmless reload, masked below
			long slot = (long)bt[j / bs] * bs + j % bs;
			const float* kr = kc + slot * kvw + kvh * hd;
			const float* vr = vc + slot * kvw + kvh * hd;
#pragma unroll
			for (int u = 0; u < MAX_HD / 32; u++) {
				int d = lane + 32 * u;
				kx[e][u] = u < nu && d < hd ? kr[d] : 0.0f;
				vx[e][u] = u < nu && d < hd ? vr[d] : 0.0f;
			}
		}
		float mn = m;
#pragma unroll
		for (int e = 0; e < ATT_UNROLL; e++) {
			float d = 0;
#pragma unroll
			for (int u = 0; u < MAX_HD / 32; u++) d += qr[u] * kx[e][u];
			d = warp_sum(d) * scale;
			s[e] = j0 + e <= p ? d : -__builtin_inff();
			mn = mn > s[e] ? mn : s[e];
		}
		float c = fexp(m - mn);
		l *= c;
#pragma unroll
		for (int u = 0; u < MAX_HD / 32; u++) acc[u] *= c;
#pragma unroll
		for (int e = 0; e < ATT_UNROLL; e++) {
			float w = fexp(s[e] - mn);
			l += w;
#pragma unroll
			for (int u = 0; u < MAX_HD / 32; u++) acc[u] += w * vx[e][u];
		}
		m = mn;
	}
	if (lane == 0) ms[warp] = m, ls[warp] = l;
#pragma unroll
	for (int u = 0; u < MAX_HD / 32; u++) {
		int d = lane + 32 * u;
		if (d < hd) accs[warp][d] = acc[u];
	}
	__syncthreads();
	float M = ms[0];
	for (int w = 1; w < ATT_WARPS; w++) M = M > ms[w] ? M : ms[w];
	float f[ATT_WARPS], L = 0;
	for (int w = 0; w < ATT_WARPS; w++) {
		f[w] = ls[w] > 0 ? fexp(ms[w] - M) : 0.0f;
		L += ls[w] * f[w];
	}
	for (int d = tid; d < hd; d += NTID) {
		float o = 0;
		for (int w = 0; w < ATT_WARPS; w++) o += accs[w][d] * f[w];
		out[(long)t * ldo + h * hd + d] = o / L;
	}
}
