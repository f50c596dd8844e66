package eval

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// ErrGateFailed wraps the error of a write the quality gate refused.
var ErrGateFailed = errors.New("quality gate failed")

// WriteOptions say how WriteGated judges a model before writing it.
type WriteOptions struct {
	CompareOptions
	// Text is the held-out evaluation text; TextName is recorded with the
	// figures (a file name, say).
	Text, TextName string
	Gate           Gate
	// NoGate writes the model whatever the verdict. With a Text the model is
	// still evaluated and the figures recorded; without one nothing is run.
	NoGate bool
}

// WriteResult is what WriteGated measured and decided.
type WriteResult struct {
	Evaluated bool
	Report    Report
	Verdict   Verdict
	Bytes     int64 // size of the written file
}

// WriteGated writes the model that w describes to path only if it passes
// the gate against base: it writes w to a temporary file beside path, loads
// it, compares it with base on o.Text, records the figures and the verdict
// under octet.quality.* and moves the result into place atomically. A model
// below the gate is not written, and the error wraps ErrGateFailed.
func WriteGated(ctx context.Context, w *gguf.Writer, path string, base *model.Model, o WriteOptions) (WriteResult, error) {
	var res WriteResult
	if !o.NoGate && o.Text == "" {
		return res, fmt.Errorf("eval: the quality gate needs an evaluation text")
	}
	if err := o.Gate.Validate(); err != nil {
		return res, err
	}
	cand, cleanup, err := writeTemp(ctx, w, path)
	if err != nil {
		return res, err
	}
	defer cleanup()
	if o.Text != "" {
		if res.Report, err = judge(ctx, cand, base, o); err != nil {
			return res, err
		}
		res.Evaluated = true
		res.Verdict = o.Gate.Check(res.Report)
		if !res.Verdict.Pass && !o.NoGate {
			return res, fmt.Errorf("eval: %w: %s; %s not written (--no-gate writes it anyway)", ErrGateFailed, res.Verdict.Reason, path)
		}
	}

	out := gguf.NewWriter()
	f := cand.File
	out.Alignment = f.Alignment
	for _, kv := range f.KV {
		if !strings.HasPrefix(kv.Key, "octet.quality.") {
			out.Set(kv.Key, kv.Value)
		}
	}
	stampQuality(out, base, res, o)
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if err := out.AddTensor(t.Name, t.Type, t.Dims, f.TensorData(t)); err != nil {
			return res, err
		}
	}
	if err := out.WriteFileContext(ctx, path); err != nil {
		return res, err
	}
	if st, err := os.Stat(path); err == nil {
		res.Bytes = st.Size()
	}
	return res, nil
}

// stampQuality records the evaluation under octet.quality.*.
func stampQuality(w *gguf.Writer, base *model.Model, res WriteResult, o WriteOptions) {
	const p = "octet.quality."
	if base.Path != "" {
		w.Set(p+"baseline", gguf.String(filepath.Base(base.Path)))
	}
	if !res.Evaluated {
		w.Set(p+"gate", gguf.String("skipped"))
		return
	}
	r := res.Report
	f := func(k string, v float64) { w.Set(p+k, gguf.Float64(v)) }
	if r.BaselineSHA256 != "" {
		w.Set(p+"baseline_sha256", gguf.String(r.BaselineSHA256))
	}
	if o.TextName != "" {
		w.Set(p+"eval_text", gguf.String(o.TextName))
	}
	w.Set(p+"backend", gguf.String(r.Backend))
	w.Set(p+"ctx", gguf.Uint32(uint32(r.Ctx)))
	w.Set(p+"tokens_scored", gguf.Uint32(uint32(r.TokensScored)))
	f("ppl", r.PPL)
	f("baseline_ppl", r.BasePPL)
	f("ppl_ratio", r.PPLRatio)
	f("kld_mean", r.KLDMean)
	f("kld_p99", r.KLDP99)
	f("top1", r.Top1)
	f("accuracy", r.Accuracy)
	f("baseline_accuracy", r.BaseAccuracy)
	for _, t := range r.Tasks {
		name := strings.ToLower(t.Name)
		f(name+".acc_norm", t.Acc)
		f(name+".baseline_acc_norm", t.BaseAcc)
		w.Set(p+name+".tasks", gguf.Uint32(uint32(t.Tasks)))
	}
	verdict := "fail"
	if res.Verdict.Pass {
		verdict = "pass"
	} else if o.NoGate {
		verdict = "fail (not enforced: --no-gate)"
	}
	w.Set(p+"gate", gguf.String(verdict))
	w.Set(p+"gate_reason", gguf.String(res.Verdict.Reason))
	g := o.Gate
	w.Set(p+"gate_bounds", gguf.String(fmt.Sprintf("min_rel_accuracy=%g max_kld=%g max_ppl_ratio=%g min_top1=%g", g.MinRelAccuracy, g.MaxKLD, g.MaxPPLRatio, g.MinTop1)))
}

// FileSHA256 is the hex SHA-256 of a file's bytes.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("eval: %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeTemp writes w to a temporary file beside path and loads it; cleanup
// closes and removes it. An end of ctx stops the writing.
func writeTemp(ctx context.Context, w *gguf.Writer, path string) (*model.Model, func(), error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".eval-*")
	if err != nil {
		return nil, nil, fmt.Errorf("eval: writing beside %s: %w", path, errors.Unwrap(err))
	}
	tmpPath := tmp.Name()
	_, err = w.WriteTo(gguf.ContextWriter(ctx, tmp))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmpPath)
		return nil, nil, err
	}
	cand, err := model.Load(tmpPath)
	if err != nil {
		os.Remove(tmpPath)
		return nil, nil, fmt.Errorf("eval: the new model does not load: %w", err)
	}
	return cand, func() { cand.Close(); os.Remove(tmpPath) }, nil
}

// judge compares cand with base on o's text and tasks.
func judge(ctx context.Context, cand, base *model.Model, o WriteOptions) (Report, error) {
	rep, err := Compare(ctx, cand, base, o.Text, o.CompareOptions)
	if err != nil {
		return rep, err
	}
	if base.Path != "" {
		if rep.BaselineSHA256, err = FileSHA256(base.Path); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// Trial writes the model w describes to a temporary file beside path,
// compares it with base on o.Text and removes it: a tool trying variants
// (smoothing or not, say) keeps the one that measures better.
func Trial(ctx context.Context, w *gguf.Writer, path string, base *model.Model, o WriteOptions) (Report, error) {
	if o.Text == "" {
		return Report{}, fmt.Errorf("eval: a trial needs an evaluation text")
	}
	cand, cleanup, err := writeTemp(ctx, w, path)
	if err != nil {
		return Report{}, err
	}
	defer cleanup()
	return judge(ctx, cand, base, o)
}
