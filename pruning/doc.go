// Package pruning removes weights from a llama-family model, three ways:
//
//   - Unstructured: in every row of every layer matrix (attention q, k, v,
//     output; feed-forward gate, up, down) the Sparsity share of weights
//     with the lowest score is set to zero.
//   - N:M: in every group of M consecutive weights of a row (along the
//     input dimension, the layout of sparse tensor cores' 2:4) the M-N
//     lowest-scored weights are set to zero.
//   - Structured (width): whole feed-forward neurons (a row of ffn_gate and
//     ffn_up and the matching column of ffn_down) and whole attention heads
//     (their rows of attn_q, and for multi-head attention of attn_k and
//     attn_v, and their columns of attn_output) are removed, and the
//     widths in the metadata rewritten. This is the one that makes a model
//     smaller and faster on every backend; the zeros of the other two only
//     help hardware or kernels that skip them.
//
// # Scores
//
// Method "magnitude" scores a weight by |W_ij|; method "wanda" (Sun et al.,
// 2023) by |W_ij|·‖X_j‖₂, the norm of the activations that multiply it over
// calibration text, which keeps the weights that big activations need.
// Structured importance is, for a neuron, ‖a_i‖₂·‖Down_{:,i}‖₂ with
// calibration (its activation norm times the weights that carry it into
// the residual stream), ‖Up_i‖·‖Gate_i‖·‖Down_{:,i}‖ without; for a head,
// the calibrated Σ‖Wo_h·o_h‖² (what it adds to the residual stream), or
// ‖Wq_h‖·‖Wo_{:,h}‖ without.
//
// # Refit
//
// Removing a neuron or a head removes a column of ffn_down or attn_output.
// With calibration, the matrix is refitted to the columns it keeps: each
// row w becomes the least-squares w' = G_SS⁻¹ G_S: w over the calibration
// activations (G = XᵀX, S the kept columns, a 1% ridge), so that the kept
// neurons carry what the removed ones did as far as they are correlated
// (the structured analogue of SparseGPT's reconstruction, one layer at a
// time, on the unpruned model's activations). On stories260K it cuts the
// KL divergence of removing half the heads from 0.81 to 0.26 nats.
//
// # Shapes
//
// Widths stay uniform across layers, so that every GGUF runtime loads the
// result (llama.cpp included): each layer keeps the same number of its own
// most important neurons and heads. A kept feed-forward width is rounded to
// a multiple of 32 (when the width is at least 64) so that ffn_down's rows
// take Q8_0. Under grouped-query attention either every KV group keeps the
// same number of its query heads (the key/value heads stay), or whole
// groups go (a KV head with its query heads), whichever comes nearer the
// share asked for (stories260K's 8 heads in 4 groups: 0.75 drops a group,
// 0.5 a head of each); under multi-head attention every head is a group. The head width is
// written to attention.key_length and attention.value_length, which the
// default (embedding width / heads) no longer gives.
//
// Each tensor keeps its type; a Q8_0 matrix whose new row width is not a
// multiple of 32 is written F16. Provenance goes under octet.pruning.*.
package pruning
