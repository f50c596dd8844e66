package eval

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/octet-dev/octet/model"
)

// PPL is the result of a perplexity run.
type PPL struct {
	PPL          float64 `json:"ppl"`
	PPLErr       float64 `json:"ppl_err"` // one standard error, as llama.cpp prints it
	NLL          float64 `json:"nll"`     // mean negative log-likelihood per scored token (nats)
	Accuracy     float64 `json:"accuracy"`
	TokensScored int     `json:"tokens_scored"`
	TextTokens   int     `json:"text_tokens"`
	Chunks       int     `json:"chunks"`
	Ctx          int     `json:"ctx"`
	Backend      string  `json:"backend"`
	Seconds      float64 `json:"seconds"`
}

// Tokenize encodes an evaluation text as llama.cpp's perplexity tool does:
// the whole text at once, BOS added where the model adds it, control-token
// text not parsed.
func Tokenize(m *model.Model, text string) []int32 {
	return m.Tok.Encode(text, true, false)
}

// MinCtx is the shortest chunk Chunks takes: the second half, which is
// scored, must hold two tokens.
const MinCtx = 4

// Chunks cuts tokens into chunks of n as llama.cpp's perplexity tool does:
// chunk i is tokens[i*n:(i+1)*n] with its first token replaced by BOS when
// the model adds one; a partial last chunk is dropped. The first skip
// chunks are left out and at most limit are returned (0: all).
func Chunks(tokens []int32, n int, bos int32, skip, limit int) ([][]int32, error) {
	if n < MinCtx {
		return nil, fmt.Errorf("eval: context of %d tokens is too short (at least %d)", n, MinCtx)
	}
	if skip < 0 || limit < 0 {
		return nil, fmt.Errorf("eval: chunks to skip (%d) and to score (%d) must be 0 or more", skip, limit)
	}
	total := len(tokens) / n
	if total-skip < 1 {
		return nil, fmt.Errorf("eval: the text has %d tokens: not one chunk of %d after skipping %d", len(tokens), n, skip)
	}
	count := total - skip
	if limit > 0 {
		count = min(count, limit)
	}
	out := make([][]int32, count)
	for i := range out {
		start := (skip + i) * n
		c := make([]int32, n)
		copy(c, tokens[start:start+n])
		if bos >= 0 {
			c[0] = bos
		}
		out[i] = c
	}
	return out, nil
}

// scored is the first position of a chunk of n whose prediction is scored:
// the first half of each chunk is context only.
func scored(n int) int { return n / 2 }

// Perplexity evaluates m on tokens (from Tokenize) with llama.cpp's method:
// chunks of o.Ctx tokens, each starting with BOS, scoring the prediction of
// every token of the second half of each chunk. It also reports next-token
// accuracy: how often the most likely token is the text's next one.
func Perplexity(ctx context.Context, m *model.Model, tokens []int32, o Options) (PPL, error) {
	o = o.withDefaults()
	start := time.Now()
	res := PPL{Ctx: o.Ctx, TextTokens: len(tokens)}
	cs, err := Chunks(tokens, o.Ctx, bosOf(m), o.Skip, o.Chunks)
	if err != nil {
		return res, err
	}
	b, err := o.backend()
	if err != nil {
		return res, err
	}
	res.Backend = b.Name()
	r, err := o.loadRunner(b, m, o.Ctx, o.Parallel, o.KV)
	if err != nil {
		return res, err
	}
	defer r.Close()
	mu := newMulti(r, o.Ctx, o.Parallel)
	var acc nllAcc
	for i := 0; i < len(cs); i += o.Parallel {
		batch := cs[i:min(i+o.Parallel, len(cs))]
		lg, err := mu.forward(ctx, batch)
		if err != nil {
			return res, err
		}
		for s, c := range batch {
			off := lg.Offsets[s]
			for p := scored(len(c)); p < len(c)-1; p++ {
				lp, top := logProb(lg.Row(off+p), c[p+1])
				acc.add(lp, top == int(c[p+1]))
			}
		}
		if o.Progress != nil {
			o.Progress(i+len(batch), len(cs))
		}
	}
	res.Chunks = len(cs)
	res.TokensScored = acc.n
	res.NLL, res.PPL, res.PPLErr, res.Accuracy = acc.result()
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func bosOf(m *model.Model) int32 {
	if m.Tok.AddBOS() {
		return m.Tok.BOS()
	}
	return -1
}

// nllAcc accumulates negative log-likelihoods in float64.
type nllAcc struct {
	n, hits   int
	sum, sum2 float64
}

func (a *nllAcc) add(logp float64, hit bool) {
	a.n++
	a.sum -= logp
	a.sum2 += logp * logp
	if hit {
		a.hits++
	}
}

// result returns the mean NLL, the perplexity, its standard error (llama.cpp's
// estimate: ppl × the standard error of the mean NLL) and the accuracy.
func (a *nllAcc) result() (nll, ppl, pplErr, accuracy float64) {
	if a.n == 0 {
		return math.NaN(), math.NaN(), math.NaN(), math.NaN()
	}
	n := float64(a.n)
	nll = a.sum / n
	ppl = math.Exp(nll)
	if a.n > 1 {
		v := a.sum2/n - nll*nll
		pplErr = ppl * math.Sqrt(max(v, 0)/(n-1))
	}
	return nll, ppl, pplErr, float64(a.hits) / n
}

// logProb returns log softmax(row)[tok] and the index of the largest logit
// (the first one on ties), computed in float64.
func logProb(row []float32, tok int32) (float64, int) {
	lse, top := logSumExp(row)
	return float64(row[tok]) - lse, top
}

// logSoftmax writes log softmax(row) into dst (float64) and returns the
// index of the largest logit.
func logSoftmax(dst []float64, row []float32) int {
	lse, top := logSumExp(row)
	for i, v := range row {
		dst[i] = float64(v) - lse
	}
	return top
}

// logSumExp returns log Σ exp(row) and the index of the largest logit (the
// first one on ties), in float64.
func logSumExp(row []float32) (float64, int) {
	top := 0
	for i, v := range row {
		if v > row[top] {
			top = i
		}
	}
	mx := float64(row[top])
	var sum float64
	for _, v := range row {
		sum += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(sum), top
}
