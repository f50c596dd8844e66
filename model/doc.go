// Package model describes llama-family language models stored as GGUF:
// their hyperparameters (Config), tokenizer, and zero-copy views of their
// weight tensors.
//
// Supported architectures are llama (Llama 1/2/3, TinyLlama, SmolLM),
// mistral and qwen2 (QKV bias, NeoX-ordered RoPE): grouped-query attention,
// RMSNorm, SiLU-gated feed-forward, tied or untied output projection, RoPE
// with a frequency base and linear or llama3 (rope_freqs.weight) scaling.
// Tensors of one model may mix types (F32, F16, BF16, Q8_0). Head and FFN
// widths may differ per layer ({arch}.attention.head_count and
// feed_forward_length as arrays), which structured pruning produces.
//
// Load checks every tensor's presence and shape before a model is used, so
// that a backend never meets a malformed model.
//
// Choices where DESIGN.md is silent: the trained context length is reported
// (Config.ContextLength) but callers may run beyond it; value heads must be
// as wide as key heads; yarn and longrope scaling are refused by name.
package model
