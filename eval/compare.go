package eval

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/octet-dev/octet/model"
)

// Report compares a candidate model with its baseline on one text: how far
// the candidate's next-token distributions are from the baseline's, and how
// well each predicts the text. Tasks holds multiple-choice results when
// Compare was asked to run some.
type Report struct {
	BaselineSHA256 string `json:"baseline_sha256,omitempty"`

	KLDMean   float64 `json:"kld_mean"`     // nats, KL(baseline ‖ candidate) per scored token
	KLDErr    float64 `json:"kld_mean_err"` // standard error of KLDMean
	KLDMedian float64 `json:"kld_median"`
	KLDP99    float64 `json:"kld_p99"`
	KLDMax    float64 `json:"kld_max"`
	Top1      float64 `json:"top1"` // share of tokens where both models' most likely token agree

	PPL          float64 `json:"ppl"`
	BasePPL      float64 `json:"base_ppl"`
	PPLRatio     float64 `json:"ppl_ratio"` // PPL / BasePPL
	Accuracy     float64 `json:"accuracy"`  // next-token accuracy on the text
	BaseAccuracy float64 `json:"base_accuracy"`

	TokensScored int     `json:"tokens_scored"`
	Chunks       int     `json:"chunks"`
	Ctx          int     `json:"ctx"`
	Backend      string  `json:"backend"`
	Seconds      float64 `json:"seconds"`

	Tasks []TaskScore `json:"tasks,omitempty"`
}

// TaskScore is the multiple-choice accuracy of candidate and baseline on
// one task set.
type TaskScore struct {
	Name    string  `json:"name"`
	Tasks   int     `json:"tasks"`
	Acc     float64 `json:"acc_norm"`
	BaseAcc float64 `json:"base_acc_norm"`
}

// CompareOptions adds multiple-choice sets to a comparison.
type CompareOptions struct {
	Options
	// Choice sets are scored on both models and reported in Report.Tasks.
	Choice []ChoiceSet
}

// Compare evaluates candidate against baseline on text (see Perplexity for
// the chunking) and, when o.Choice is set, on multiple-choice tasks. The two
// models must share a vocabulary. It is what the quality gate judges.
func Compare(ctx context.Context, candidate, baseline *model.Model, text string, o CompareOptions) (Report, error) {
	if err := SameVocab(candidate, baseline); err != nil {
		return Report{}, err
	}
	rep, err := CompareTokens(ctx, candidate, baseline, Tokenize(baseline, text), o.Options)
	if err != nil {
		return rep, err
	}
	for _, set := range o.Choice {
		c, err := Choice(ctx, candidate, set.Tasks, o.Options)
		if err != nil {
			return rep, fmt.Errorf("eval: %s on the candidate: %w", set.Name, err)
		}
		b, err := Choice(ctx, baseline, set.Tasks, o.Options)
		if err != nil {
			return rep, fmt.Errorf("eval: %s on the baseline: %w", set.Name, err)
		}
		rep.Tasks = append(rep.Tasks, TaskScore{Name: set.Name, Tasks: c.Tasks, Acc: c.AccNorm, BaseAcc: b.AccNorm})
	}
	return rep, nil
}

// SameVocab checks that two models tokenize alike, so that their
// distributions can be compared token by token.
func SameVocab(a, b *model.Model) error {
	if a.Config.VocabSize != b.Config.VocabSize || !slices.Equal(a.Tok.Vocab().Tokens, b.Tok.Vocab().Tokens) {
		return fmt.Errorf("eval: the candidate (%s, %d tokens) and the baseline (%s, %d tokens) have different vocabularies",
			modelName(a), len(a.Tok.Vocab().Tokens), modelName(b), len(b.Tok.Vocab().Tokens))
	}
	return nil
}

// CompareTokens is Compare on a tokenized text, without multiple-choice tasks.
func CompareTokens(ctx context.Context, candidate, baseline *model.Model, tokens []int32, o Options) (Report, error) {
	o = o.withDefaults()
	start := time.Now()
	rep := Report{Ctx: o.Ctx}
	cs, err := Chunks(tokens, o.Ctx, bosOf(baseline), o.Skip, o.Chunks)
	if err != nil {
		return rep, err
	}
	b, err := o.backend()
	if err != nil {
		return rep, err
	}
	rep.Backend = b.Name()
	rc, err := o.loadRunner(b, candidate, o.Ctx, o.Parallel, o.KV)
	if err != nil {
		return rep, err
	}
	defer rc.Close()
	baseKV := o.KV
	if o.BaseKV != nil {
		baseKV = *o.BaseKV
	}
	rb, err := o.loadRunner(b, baseline, o.Ctx, o.Parallel, baseKV)
	if err != nil {
		return rep, err
	}
	defer rb.Close()
	mc, mb := newMulti(rc, o.Ctx, o.Parallel), newMulti(rb, o.Ctx, o.Parallel)

	vocab := candidate.Config.VocabSize
	lp, lq := make([]float64, vocab), make([]float64, vocab)
	var cand, base nllAcc
	var klds []float64
	agree := 0
	for i := 0; i < len(cs); i += o.Parallel {
		batch := cs[i:min(i+o.Parallel, len(cs))]
		lc, err := mc.forward(ctx, batch)
		if err != nil {
			return rep, err
		}
		lb, err := mb.forward(ctx, batch)
		if err != nil {
			return rep, err
		}
		for s, c := range batch {
			for p := scored(len(c)); p < len(c)-1; p++ {
				next := c[p+1]
				tb := logSoftmax(lp, lb.Row(lb.Offsets[s]+p))
				tc := logSoftmax(lq, lc.Row(lc.Offsets[s]+p))
				klds = append(klds, kld(lp, lq))
				if tb == tc {
					agree++
				}
				base.add(lp[next], tb == int(next))
				cand.add(lq[next], tc == int(next))
			}
		}
		if o.Progress != nil {
			o.Progress(i+len(batch), len(cs))
		}
	}
	rep.Chunks = len(cs)
	rep.TokensScored = len(klds)
	_, rep.PPL, _, rep.Accuracy = cand.result()
	_, rep.BasePPL, _, rep.BaseAccuracy = base.result()
	rep.PPLRatio = rep.PPL / rep.BasePPL
	rep.Top1 = float64(agree) / float64(len(klds))
	var sum, sum2 float64
	for _, k := range klds {
		sum += k
		sum2 += k * k
	}
	n := float64(len(klds))
	rep.KLDMean = sum / n
	if n > 1 {
		rep.KLDErr = math.Sqrt(max(sum2/n-rep.KLDMean*rep.KLDMean, 0) / (n - 1))
	}
	slices.Sort(klds)
	rep.KLDMedian = percentile(klds, 0.5)
	rep.KLDP99 = percentile(klds, 0.99)
	rep.KLDMax = klds[len(klds)-1]
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// kld is KL(p ‖ q) for log-probabilities lp and lq. Rounding can make a
// tiny divergence negative; it is clamped to 0.
func kld(lp, lq []float64) float64 {
	var s float64
	for i, a := range lp {
		if p := math.Exp(a); p > 0 {
			s += p * (a - lq[i])
		}
	}
	return max(s, 0)
}

// percentile interpolates linearly between the sorted values.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	x := q * float64(len(sorted)-1)
	i := int(x)
	if i >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	f := x - float64(i)
	return sorted[i]*(1-f) + sorted[i+1]*f
}
