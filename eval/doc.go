// Package eval measures the quality of a model and decides whether an
// optimized model may replace its baseline.
//
// # Perplexity
//
// Perplexity follows llama.cpp's perplexity tool so that figures compare
// with published ones: the whole text is tokenized at once (BOS added where
// the model adds it), cut into chunks of Ctx tokens whose first token is
// replaced by BOS, a partial last chunk dropped; each chunk is run from
// position 0 and only the predictions of its second half are scored
// (positions Ctx/2 … Ctx-2 predicting the next token), so every scored token
// has at least Ctx/2 tokens of context. The perplexity is exp of the mean
// negative log-likelihood, accumulated in float64; its error is llama.cpp's
// estimate (ppl × the standard error of the mean NLL). Next-token accuracy
// (how often the most likely token is the text's next) comes with it.
//
// # Comparison with a baseline
//
// Compare runs a candidate and its baseline over the same chunks and scores
// the same positions: the KL divergence KL(baseline ‖ candidate) of the two
// next-token distributions (mean, median, 99th percentile, maximum), top-1
// agreement (both models' most likely token is the same), and each model's
// perplexity and next-token accuracy; their ratio is the candidate's over
// the baseline's. These are the figures of llama.cpp's --kl-divergence mode.
//
// # Multiple choice
//
// Choice scores HellaSwag and PIQA as llama.cpp's hellaswag does: each
// ending is tokenized as context + " " + ending with BOS, the tokens after
// the prefix shared by all of a task's endings are scored, and an ending's
// score is their mean log-likelihood (acc_norm). Tasks are taken in file
// order (llama.cpp draws them at random), so a run over the first K tasks
// is reproducible. The summed log-likelihood's accuracy is reported as acc.
//
// # The gate
//
// A Gate checks a Report against bounds: the relative accuracy the
// candidate keeps (next-token accuracy on the text, and acc_norm of every
// multiple-choice set in the report) must be at least 0.90 of the
// baseline's by default — the promise that started the product — with a
// mean KLD of at most 0.10 nats and a perplexity ratio of at most 1.10.
// The accuracy check alone is too weak on small models whose
// multiple-choice accuracy is at chance, and too noisy on short texts; the
// divergence bounds catch the damage accuracy misses. The daemon's hot
// reload calls Compare on a short held-out text and Gate.Check on the
// report; `octet quantize` and `octet prune` call WriteGated, which writes
// a model only if it passes, with the figures and verdict in its
// octet.quality.* metadata. Trial measures a variant without writing it
// (quant uses it to keep smoothing only where it helps).
//
// Models run on any registered backend (Options.Backend, or backends.Auto
// over Options.Prefer); several chunks, or several endings, run as separate
// sequences of one forward step.
package eval
