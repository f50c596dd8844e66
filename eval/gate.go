package eval

import (
	"fmt"
	"math"
	"strings"
)

// Gate decides whether an optimized model is good enough to serve in place
// of its baseline. A zero bound switches its check off.
type Gate struct {
	// MinRelAccuracy is the least share of the baseline's accuracy the
	// candidate must keep: next-token accuracy on the evaluation text, and
	// acc_norm on every multiple-choice set of the report.
	MinRelAccuracy float64 `json:"min_rel_accuracy"`
	// MaxKLD bounds the mean KL divergence from the baseline (nats/token).
	MaxKLD float64 `json:"max_kld"`
	// MaxPPLRatio bounds the candidate's perplexity over the baseline's.
	MaxPPLRatio float64 `json:"max_ppl_ratio"`
	// MinTop1 is the least top-1 agreement with the baseline (off by default).
	MinTop1 float64 `json:"min_top1"`
}

// DefaultGate keeps 90% of the baseline's accuracy (the product's promise),
// a mean KL divergence of at most 0.10 nats per token and a perplexity at
// most 10% above the baseline's. The two bounds are one budget: a
// perplexity ratio of 1.10 is a cross-entropy rise of ln 1.1 ≈ 0.095 nats,
// about what a mean divergence of 0.10 allows.
var DefaultGate = Gate{MinRelAccuracy: 0.90, MaxKLD: 0.10, MaxPPLRatio: 1.10}

// Check is one test of a verdict.
type Check struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Min   bool    `json:"min"` // Value must be ≥ Limit (else ≤)
	Pass  bool    `json:"pass"`
}

func (c Check) String() string {
	op, bad := "≤", ">"
	if c.Min {
		op, bad = "≥", "<"
	}
	if !c.Pass {
		op = bad
	}
	return fmt.Sprintf("%s %.4g %s %.4g", c.Name, c.Value, op, c.Limit)
}

// Verdict is a gate's decision on a report.
type Verdict struct {
	Pass   bool    `json:"pass"`
	Reason string  `json:"reason"` // the failed checks, or every check when all pass
	Checks []Check `json:"checks"`
}

func (v Verdict) String() string {
	if v.Pass {
		return "pass: " + v.Reason
	}
	return "fail: " + v.Reason
}

// Check judges r. A value that is NaN fails its check.
func (g Gate) Check(r Report) Verdict {
	var cs []Check
	add := func(name string, value, limit float64, isMin bool) {
		if limit == 0 {
			return
		}
		pass := value <= limit
		if isMin {
			pass = value >= limit
		}
		if math.IsNaN(value) {
			pass = false
		}
		cs = append(cs, Check{Name: name, Value: value, Limit: limit, Min: isMin, Pass: pass})
	}
	add("kld_mean", r.KLDMean, g.MaxKLD, false)
	add("ppl_ratio", r.PPLRatio, g.MaxPPLRatio, false)
	add("top1", r.Top1, g.MinTop1, true)
	add("rel_accuracy", relative(r.Accuracy, r.BaseAccuracy), g.MinRelAccuracy, true)
	for _, t := range r.Tasks {
		add("rel_acc_norm("+t.Name+")", relative(t.Acc, t.BaseAcc), g.MinRelAccuracy, true)
	}
	v := Verdict{Pass: true, Checks: cs}
	var failed, all []string
	for _, c := range cs {
		all = append(all, c.String())
		if !c.Pass {
			v.Pass = false
			failed = append(failed, c.String())
		}
	}
	switch {
	case len(cs) == 0:
		v.Reason = "no checks"
	case v.Pass:
		v.Reason = strings.Join(all, ", ")
	default:
		v.Reason = strings.Join(failed, ", ")
	}
	return v
}

// relative is acc/base; a baseline with no accuracy to lose counts as kept.
func relative(acc, base float64) float64 {
	if math.IsNaN(acc) || math.IsNaN(base) {
		return math.NaN()
	}
	if base <= 0 {
		return 1
	}
	return acc / base
}

// Validate checks that the bounds make sense.
func (g Gate) Validate() error {
	switch {
	case g.MinRelAccuracy < 0 || g.MinRelAccuracy > 1 || math.IsNaN(g.MinRelAccuracy):
		return fmt.Errorf("eval: gate: relative accuracy %g must be within [0, 1]", g.MinRelAccuracy)
	case g.MaxKLD < 0 || math.IsNaN(g.MaxKLD):
		return fmt.Errorf("eval: gate: KLD bound %g must be ≥ 0", g.MaxKLD)
	case g.MaxPPLRatio < 0 || math.IsNaN(g.MaxPPLRatio) || (g.MaxPPLRatio > 0 && g.MaxPPLRatio < 1):
		return fmt.Errorf("eval: gate: perplexity ratio bound %g must be ≥ 1 (or 0: off)", g.MaxPPLRatio)
	case g.MinTop1 < 0 || g.MinTop1 > 1 || math.IsNaN(g.MinTop1):
		return fmt.Errorf("eval: gate: top-1 agreement %g must be within [0, 1]", g.MinTop1)
	}
	return nil
}
