/*
 * octet.h — the ABI between the Go package backends/cpu and the native
 * kernel libraries (one shared library per instruction set, same ABI).
 *
 * Every struct here is mirrored field for field by a Go struct in
 * backends/cpu/abi.go. To keep the two layouts identical without cgo, every
 * field is 8 bytes wide: int64_t, double, or a pointer.
 *
 * Memory ownership
 *   - Pointers into the model's weights (oc_tensor.data) point into the
 *     memory-mapped GGUF file or Go's copy of it, which Go keeps for the
 *     runner's life. The library keeps these pointers (except for the Q8_0
 *     matrices it packs into its own memory when oc_model_desc.repack is set).
 *   - Every other pointer passed in (norm weights, biases, rope factors,
 *     token ids, block tables, output logits, test buffers) may be Go
 *     memory: the library reads or writes it only during the call that
 *     received it (its pool threads included) and never keeps it. Vectors
 *     it needs later are copied into its own memory.
 *   - The library allocates its own memory (KV cache, scratch, thread
 *     stacks) with mmap/malloc and frees it in oc_runner_free/oc_ctx_free.
 *   - Handles (oc_runner*, oc_ctx*) are opaque to Go: it stores them as
 *     integers and passes them back.
 */
#ifndef OCTET_H
#define OCTET_H

#include <stdint.h>

#define OC_ABI_VERSION 6

/* Tensor element types, numbered as ggml numbers them. */
enum { OC_F32 = 0, OC_F16 = 1, OC_Q8_0 = 8, OC_BF16 = 30 };

/* Status codes. */
enum { OC_OK = 0, OC_ERR_ARG = -1, OC_ERR_NOMEM = -2, OC_ERR_CANCELLED = -3 };

typedef struct oc_tensor {
	const void *data; /* rows × row_bytes(type, cols), in the mapped file */
	int64_t type;
	int64_t rows;
	int64_t cols;
} oc_tensor;

typedef struct oc_layer_desc {
	int64_t heads, kv_heads, ffn;
	oc_tensor wq, wk, wv, wo, gate, up, down;
	const float *attn_norm, *ffn_norm; /* dim floats; copied */
	const float *bq, *bk, *bv;         /* NULL or heads·hd / kv·hd floats; copied */
} oc_layer_desc;

typedef struct oc_model_desc {
	int64_t abi; /* OC_ABI_VERSION */
	int64_t dim, n_layers, head_dim, vocab;
	double norm_eps;
	int64_t rope_dims, rope_neox;
	double rope_base, rope_freq_scale;
	const float *rope_freqs; /* NULL or rope_dims/2 divisors; copied */
	oc_tensor tok_embd, output;
	const float *output_norm; /* dim floats; copied */
	const oc_layer_desc *layers;
	int64_t block_size, kv_blocks, max_context, threads;
	/* 1: pack Q8_0 matrices at load into the library's own memory (the
	 * weights' pointers are then read only during oc_runner_new); 0: read
	 * them where they lie for the runner's life. */
	int64_t repack;
	int64_t kv_type; /* the KV cache's values: OC_F32, OC_F16 or OC_Q8_0 (q8 rows) */
} oc_model_desc;

/*
 * One forward step: n tokens; token i sits at position pos[i] of the
 * sequence whose block table starts at blocks[table[i]]. Rows out_rows[0…
 * n_out-1] (ascending token indices) get logits, written to logits
 * (n_out × vocab floats).
 */
typedef struct oc_batch {
	int64_t n;
	const int32_t *tokens, *pos, *table, *blocks;
	int64_t n_out;
	const int32_t *out_rows;
	float *logits;
} oc_batch;

#endif
