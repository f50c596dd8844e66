package daemon

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/eval"
)

// heldOut is the default text a replacement model is compared on: short
// prose written for octet, in no training set.
//
//go:embed gatetext/heldout.txt
var heldOut string

// gateOf turns a sidecar's gate into eval's.
func gateOf(g configs.Gate) eval.Gate {
	return eval.Gate{MinRelAccuracy: g.MinRelAccuracy, MaxKLD: g.MaxKLD, MaxPPLRatio: g.MaxPPLRatio, MinTop1: g.MinTop1}
}

// checkGate compares the candidate with the model it would replace on the
// gate's held-out text and judges the result. An error (a text that cannot
// be read, vocabularies that differ) refuses the candidate too.
func (ld *loader) checkGate(ctx context.Context, cand, old *Loaded, g configs.Gate) (eval.Verdict, eval.Report, error) {
	text := heldOut
	if g.Text != "" {
		t, err := eval.ReadText(g.Text)
		if err != nil {
			return eval.Verdict{}, eval.Report{}, fmt.Errorf("gate text: %w", err)
		}
		text = t
	}
	rep, err := eval.Compare(ctx, cand.Model, old.Model, text, eval.CompareOptions{Options: eval.Options{
		Ctx: g.Ctx, Chunks: g.Chunks, Backend: ld.backend, Threads: ld.cfg.Backend.Threads, Logger: ld.log,
	}})
	if err != nil {
		return eval.Verdict{}, rep, err
	}
	return gateOf(g).Check(rep), rep, nil
}
