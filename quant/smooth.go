package quant

import (
	"context"
	"fmt"
	"math"

	"github.com/octet-dev/octet/eval"
	"github.com/octet-dev/octet/model"
)

// smoothing holds SmoothQuant's per-channel factors for the activations that
// an RMSNorm feeds: for each layer, the input of attn_q/k/v (after
// attn_norm) and of ffn_gate/up (after ffn_norm). Dividing the norm's
// weight by s_j and multiplying column j of every matrix that reads it by
// s_j leaves the model's function unchanged and moves activation outliers
// into the weights, where int8 per-block scales absorb them.
type smoothing struct {
	norm2s map[string][]float32 // norm tensor name → s
	mat2s  map[string][]float32 // matrix tensor name → s
}

// newSmoothing computes s_j = max|X_j|^α / max|W_j|^(1-α) per input column
// (Xiao et al., SmoothQuant), W_j over all matrices that read the column.
func newSmoothing(m *model.Model, st *Stats, alpha float64) *smoothing {
	sm := &smoothing{norm2s: map[string][]float32{}, mat2s: map[string][]float32{}}
	for l, layer := range m.Layers {
		p := fmt.Sprintf("blk.%d.", l)
		groups := []struct {
			norm string
			mats []*model.Tensor
			in   string
		}{
			{p + "attn_norm.weight", []*model.Tensor{layer.Wq, layer.Wk, layer.Wv}, p + "attn_q.weight"},
			{p + "ffn_norm.weight", []*model.Tensor{layer.Gate, layer.Up}, p + "ffn_gate.weight"},
		}
		for _, g := range groups {
			act := st.In[g.in].MaxAbs
			wmax := make([]float64, len(act))
			row := make([]float32, len(act))
			for _, t := range g.mats {
				for r := 0; r < t.Rows; r++ {
					t.DequantizeRow(r, row)
					for j, v := range row {
						wmax[j] = max(wmax[j], math.Abs(float64(v)))
					}
				}
			}
			s := make([]float32, len(act))
			for j := range s {
				a, w := float64(act[j]), wmax[j]
				if a <= 0 || w <= 0 {
					s[j] = 1
					continue
				}
				s[j] = float32(min(1e4, max(1e-4, math.Pow(a, alpha)/math.Pow(w, 1-alpha))))
			}
			sm.norm2s[g.norm] = s
			for _, t := range g.mats {
				sm.mat2s[t.Name] = s
			}
		}
	}
	return sm
}

// norm divides a norm's weights by their factors.
func (sm *smoothing) norm(name string, src RowSource) RowSource {
	s, ok := sm.norm2s[name]
	if !ok {
		return src
	}
	return func(r int, dst []float32) error {
		if err := src(r, dst); err != nil {
			return err
		}
		for j := range s {
			dst[j] /= s[j]
		}
		return nil
	}
}

// matrix multiplies the columns of a matrix by their factors.
func (sm *smoothing) matrix(name string, src RowSource, cols int) RowSource {
	s, ok := sm.mat2s[name]
	if !ok || len(s) != cols {
		return src
	}
	return func(r int, dst []float32) error {
		if err := src(r, dst); err != nil {
			return err
		}
		for j := range s {
			dst[j] *= s[j]
		}
		return nil
	}
}

// SmoothDecision records whether smoothing was kept and on what evidence.
type SmoothDecision struct {
	Kept           bool
	KLDPlain       float64 // mean KLD of the model quantized without smoothing
	KLDSmoothed    float64
	ErrPlain       float64 // standard errors of the two means
	ErrSmoothed    float64
	PlainReport    eval.Report
	SmoothedReport eval.Report
}

// ChooseSmoothing quantizes m both ways, with o's smoothing and without,
// compares each with m on wo's held-out text, and keeps smoothing only
// where it measurably lowers the mean KL divergence: by more than twice
// the larger standard error of the two means. It returns o with Smooth
// cleared when smoothing is dropped. path is where the result will go
// (the trials are written beside it).
func ChooseSmoothing(ctx context.Context, m *model.Model, o Options, path string, wo eval.WriteOptions) (Options, SmoothDecision, error) {
	var d SmoothDecision
	plain := o
	plain.Smooth, plain.Stats, plain.Progress = 0, nil, nil
	trial := func(opt Options) (eval.Report, error) {
		w, _, err := Build(m, opt)
		if err != nil {
			return eval.Report{}, err
		}
		return eval.Trial(ctx, w, path, m, wo)
	}
	var err error
	if d.PlainReport, err = trial(plain); err != nil {
		return o, d, err
	}
	smoothed := o
	smoothed.Progress = nil
	if d.SmoothedReport, err = trial(smoothed); err != nil {
		return o, d, err
	}
	d.KLDPlain, d.ErrPlain = d.PlainReport.KLDMean, d.PlainReport.KLDErr
	d.KLDSmoothed, d.ErrSmoothed = d.SmoothedReport.KLDMean, d.SmoothedReport.KLDErr
	d.Kept = d.KLDPlain-d.KLDSmoothed > 2*max(d.ErrPlain, d.ErrSmoothed)
	if !d.Kept {
		o.Smooth, o.Stats = 0, nil
	}
	return o, d, nil
}
