// Package quant turns an F32, F16 or BF16 model into an int8 one, and
// gathers the activation statistics that quantization and pruning use.
//
// # Encodings
//
// Every weight matrix is written as ggml's Q8_0 (blocks of 32 int8 with an
// fp16 scale), the encoding every GGUF runtime and octet's backends load.
// Two ways of choosing the scales are offered: "q8_0" (each block its own,
// the block's largest magnitude over 127, bit-identical to llama.cpp's
// quantizer) and "int8-channel" (one scale per output row, stored in each
// of the row's blocks, so the file is still plain Q8_0). Norms, biases and
// rope factors keep their type.
//
// # Rows that are not a multiple of 32
//
// Q8_0 needs rows of a multiple of 32 weights. A feed-forward width that is
// not (stories260K's 172, which makes ffn_down's rows 172 wide) is padded
// with zero neurons up to the next multiple (192): zero rows of ffn_gate
// and ffn_up and zero columns of ffn_down compute silu(0)·0 = 0, the same
// function, and then every matrix takes Q8_0. The padded model is an
// ordinary GGUF with a larger feed_forward_length, so no runtime needs a
// new tensor type. Options.PadFFN false leaves such matrices F16, as
// llama.cpp does. Measured on stories260K (see the issue 7 note): F16
// ffn_down keeps quality a little better (KLD 0.0017 against 0.0023 nats),
// padding makes the file 8% smaller and every matrix int8.
//
// # Smoothing
//
// SmoothQuant-style smoothing (Xiao et al.) moves activation outliers into
// the weights: s_j = max|X_j|^α / max|W_j|^(1−α) over calibration text,
// the norm that feeds a group of matrices divided by s, their columns
// multiplied by it. The function is unchanged; only the rounding moves.
// ChooseSmoothing measures the KL divergence from the source with and
// without it on held-out text and keeps it only where it is lower by more
// than twice the standard error.
//
// # Calibration
//
// Calibrate runs the model over text with the reference backend's
// operations and records, for the input of every matrix, the per-column
// sum of squares and largest magnitude (and, on request, the Gram matrix of
// the inputs of attn_output and ffn_down), and what every attention head
// adds to the residual stream: the statistics of Wanda pruning, of
// structured pruning's importance and refit, and of smoothing.
package quant
