package eval

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octet-dev/octet/backends/backendtest"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/eval/evaltest"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

const text = "Once upon a time there was a little fox who lived in a big forest. Every morning she ran to the river to drink and to look at the fish. "

func load(t *testing.T, path string) *model.Model { return backendtest.Load(t, path) }

// uniform is a model whose output projection is zero: every logit is 0, so
// every next-token distribution is uniform over the vocabulary.
func uniform(t *testing.T, base string) *model.Model {
	return load(t, evaltest.Rewrite(t, base, func(name string, _ int, v []float32) {
		if name == "output.weight" {
			clear(v)
		}
	}))
}

// sharp is a synthesized model with its output projection scaled up, so
// that its distributions are far from uniform.
func sharp(t *testing.T, seed uint64) string {
	return evaltest.Rewrite(t, backendtest.Synth(t, "tiny", gguf.F32, seed), func(name string, _ int, v []float32) {
		if name == "output.weight" {
			for i := range v {
				v[i] *= 200
			}
		}
	})
}

func refOptions(ctx int) Options {
	return Options{Ctx: ctx, Backend: ref.Backend{}, Parallel: 3}
}

func TestChunks(t *testing.T) {
	toks := make([]int32, 50)
	for i := range toks {
		toks[i] = int32(i + 10)
	}
	for _, tc := range []struct {
		n, skip, limit int
		want           [][2]int32 // first and last token of each chunk
		err            bool
	}{
		{n: 16, want: [][2]int32{{1, 25}, {1, 41}, {1, 57}}},
		{n: 16, skip: 1, limit: 1, want: [][2]int32{{1, 41}}},
		{n: 25, want: [][2]int32{{1, 34}, {1, 59}}},
		{n: 51, err: true},
		{n: 16, skip: 3, err: true},
		{n: 3, err: true},
	} {
		cs, err := Chunks(toks, tc.n, 1, tc.skip, tc.limit)
		if (err != nil) != tc.err {
			t.Errorf("n=%d skip=%d: err %v", tc.n, tc.skip, err)
			continue
		}
		if len(cs) != len(tc.want) {
			t.Errorf("n=%d skip=%d limit=%d: %d chunks, want %d", tc.n, tc.skip, tc.limit, len(cs), len(tc.want))
			continue
		}
		for i, c := range cs {
			if len(c) != tc.n || c[0] != tc.want[i][0] || c[len(c)-1] != tc.want[i][1] {
				t.Errorf("n=%d chunk %d: %v", tc.n, i, c)
			}
		}
	}
	if toks[0] != 10 {
		t.Error("Chunks changed its input")
	}
}

// TestPerplexityUniform: a model whose distributions are uniform has a
// perplexity of exactly the vocabulary size, and scores ctx-1-ctx/2 tokens
// per chunk.
func TestPerplexityUniform(t *testing.T) {
	m := uniform(t, backendtest.Synth(t, "tiny", gguf.F32, 1))
	toks := Tokenize(m, strings.Repeat(text, 3))
	const ctx = 32
	res, err := Perplexity(context.Background(), m, toks, refOptions(ctx))
	if err != nil {
		t.Fatal(err)
	}
	chunks := len(toks) / ctx
	if res.Chunks != chunks || res.TokensScored != chunks*(ctx-1-ctx/2) {
		t.Errorf("%d chunks, %d scored; want %d, %d", res.Chunks, res.TokensScored, chunks, chunks*(ctx-1-ctx/2))
	}
	v := float64(m.Config.VocabSize)
	if math.Abs(res.PPL-v) > 1e-6*v || math.Abs(res.NLL-math.Log(v)) > 1e-9 || res.PPLErr > 1e-4 {
		t.Errorf("ppl %v ± %v (nll %v), want exactly %v", res.PPL, res.PPLErr, res.NLL, v)
	}
}

// TestCompareClosedForm: against a uniform candidate, KL(p ‖ u) is
// log V − H(p) at every position, the candidate's perplexity is V, and the
// two agree on top-1 exactly where the baseline's best token is the first.
func TestCompareClosedForm(t *testing.T) {
	basePath := sharp(t, 2)
	base := load(t, basePath)
	cand := uniform(t, basePath)
	toks := Tokenize(base, strings.Repeat(text, 2))
	const ctx = 24
	rep, err := CompareTokens(context.Background(), cand, base, toks, refOptions(ctx))
	if err != nil {
		t.Fatal(err)
	}
	cs, _ := Chunks(toks, ctx, bosOf(base), 0, 0)
	v := float64(base.Config.VocabSize)
	var sum, agree, n float64
	for _, c := range cs {
		l := evaltest.Logits(t, base, c)
		for p := ctx / 2; p < ctx-1; p++ {
			lp := make([]float64, int(v))
			top := logSoftmax(lp, l.Row(p))
			var negH float64
			for _, a := range lp {
				negH += math.Exp(a) * a
			}
			sum += math.Log(v) + negH
			if top == 0 {
				agree++
			}
			n++
		}
	}
	if rep.TokensScored != int(n) {
		t.Fatalf("%d tokens scored, want %v", rep.TokensScored, n)
	}
	if want := sum / n; math.Abs(rep.KLDMean-want) > 1e-6*want {
		t.Errorf("kld_mean %v, want log V − H(p) = %v", rep.KLDMean, want)
	}
	if math.Abs(rep.PPL-v) > 1e-6*v || rep.Top1 != agree/n {
		t.Errorf("ppl %v top1 %v, want %v and %v", rep.PPL, rep.Top1, v, agree/n)
	}
	if !(rep.KLDMedian <= rep.KLDP99 && rep.KLDP99 <= rep.KLDMax) || rep.KLDErr <= 0 {
		t.Errorf("kld median %v p99 %v max %v err %v out of order", rep.KLDMedian, rep.KLDP99, rep.KLDMax, rep.KLDErr)
	}

	// A model against itself: no divergence, full agreement, ratio 1.
	self, err := CompareTokens(context.Background(), base, base, toks, refOptions(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if self.KLDMax > 1e-12 || self.Top1 != 1 || self.PPLRatio != 1 {
		t.Errorf("self comparison: kld max %v top1 %v ratio %v", self.KLDMax, self.Top1, self.PPLRatio)
	}
}

// TestChoiceUniform: under a uniform model every ending scores −log V per
// token, so every task picks its first ending (the first on ties).
func TestChoiceUniform(t *testing.T) {
	m := uniform(t, backendtest.Synth(t, "tiny", gguf.F32, 3))
	tasks := []Task{
		{Context: "The cat", Endings: []string{"sat on the mat.", "flew to the moon", "ate", "slept all day long"}, Label: 0},
		{Context: "She opened the door", Endings: []string{"and smiled.", "and cried."}, Label: 1},
		{Context: "Rain", Endings: []string{"falls", "fell down hard", "x"}, Label: 0},
	}
	res, err := Choice(context.Background(), m, tasks, refOptions(0))
	if err != nil {
		t.Fatal(err)
	}
	if res.Tasks != 3 || math.Abs(res.AccNorm-2.0/3) > 1e-12 {
		t.Errorf("%d tasks, acc_norm %v; want 3, 2/3", res.Tasks, res.AccNorm)
	}
	if _, err := Choice(context.Background(), m, []Task{{Context: "a", Endings: []string{"b"}}}, refOptions(0)); err == nil {
		t.Error("a task with one ending was accepted")
	}
}

func TestGate(t *testing.T) {
	good := Report{KLDMean: 0.01, PPLRatio: 1.01, Top1: 0.95, Accuracy: 0.30, BaseAccuracy: 0.31,
		Tasks: []TaskScore{{Name: "hellaswag", Acc: 0.5, BaseAcc: 0.52}}}
	for _, tc := range []struct {
		name   string
		gate   Gate
		edit   func(*Report)
		pass   bool
		reason string
	}{
		{"good", DefaultGate, func(*Report) {}, true, "kld_mean"},
		{"kld", DefaultGate, func(r *Report) { r.KLDMean = 0.2 }, false, "kld_mean 0.2 > 0.1"},
		{"ppl", DefaultGate, func(r *Report) { r.PPLRatio = 1.2 }, false, "ppl_ratio"},
		{"accuracy", DefaultGate, func(r *Report) { r.Accuracy = 0.27 }, false, "rel_accuracy"},
		{"exactly 90%", DefaultGate, func(r *Report) { r.Accuracy = 0.9 * r.BaseAccuracy }, true, ""},
		{"task", DefaultGate, func(r *Report) { r.Tasks[0].Acc = 0.4 }, false, "rel_acc_norm(hellaswag)"},
		{"nan", DefaultGate, func(r *Report) { r.KLDMean = math.NaN() }, false, "kld_mean"},
		{"top1 off", DefaultGate, func(r *Report) { r.Top1 = 0 }, true, ""},
		{"top1 on", Gate{MinTop1: 0.9}, func(r *Report) { r.Top1 = 0.5 }, false, "top1"},
		{"kld off", Gate{MinRelAccuracy: 0.9}, func(r *Report) { r.KLDMean = 5 }, true, ""},
		{"no base accuracy", DefaultGate, func(r *Report) { r.BaseAccuracy, r.Accuracy = 0, 0 }, true, ""},
		{"nothing", Gate{}, func(*Report) {}, true, "no checks"},
	} {
		r := good
		r.Tasks = append([]TaskScore(nil), good.Tasks...)
		tc.edit(&r)
		v := tc.gate.Check(r)
		if v.Pass != tc.pass || !strings.Contains(v.Reason, tc.reason) {
			t.Errorf("%s: %v, want pass=%v with %q", tc.name, v, tc.pass, tc.reason)
		}
	}
	for _, g := range []Gate{{MinRelAccuracy: 1.5}, {MaxKLD: -1}, {MaxPPLRatio: 0.5}, {MinTop1: math.NaN()}} {
		if g.Validate() == nil {
			t.Errorf("%+v: accepted", g)
		}
	}
	if DefaultGate.Validate() != nil {
		t.Error("the default gate is invalid")
	}
}

// TestWriteGated: a model that fails the gate is not written; one that
// passes is, with its figures in octet.quality.*.
func TestWriteGated(t *testing.T) {
	basePath := sharp(t, 4)
	base := load(t, basePath)
	copyOf := func(m *model.Model) *gguf.Writer {
		w := gguf.NewWriter()
		for _, kv := range m.File.KV {
			w.Set(kv.Key, kv.Value)
		}
		for i := range m.File.Tensors {
			ti := &m.File.Tensors[i]
			if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, m.File.TensorData(ti)); err != nil {
				t.Fatal(err)
			}
		}
		return w
	}
	o := WriteOptions{Text: strings.Repeat(text, 2), TextName: "fox.txt", Gate: DefaultGate}
	o.Options = refOptions(24)
	dir := t.TempDir()

	bad := filepath.Join(dir, "bad.gguf")
	_, err := WriteGated(context.Background(), copyOf(uniform(t, basePath)), bad, base, o)
	if !errors.Is(err, ErrGateFailed) {
		t.Fatalf("uniform model: %v, want the gate to refuse it", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("refused model was written: %v", err)
	}

	good := filepath.Join(dir, "good.gguf")
	res, err := WriteGated(context.Background(), copyOf(base), good, base, o)
	if err != nil || !res.Verdict.Pass {
		t.Fatalf("identical model: %v %v", err, res.Verdict)
	}
	m := load(t, good)
	if g, _ := m.File.String("octet.quality.gate"); g != "pass" {
		t.Errorf("octet.quality.gate = %q", g)
	}
	if h, _ := m.File.String("octet.quality.baseline_sha256"); len(h) != 64 {
		t.Errorf("baseline hash %q", h)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	// An interrupt (the context's end) writes nothing, leaves nothing
	// behind and reports no figures; so does an evaluation that fails.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cut := filepath.Join(dir, "cut.gguf")
	res, err = WriteGated(ctx, copyOf(base), cut, base, o)
	if !errors.Is(err, context.Canceled) || res.Evaluated {
		t.Errorf("interrupted: %v, evaluated %v", err, res.Evaluated)
	}
	short := o
	short.Ctx = 2
	if res, err = WriteGated(context.Background(), copyOf(base), cut, base, short); err == nil || res.Evaluated {
		t.Errorf("a failed evaluation: %v, evaluated %v", err, res.Evaluated)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("after an interrupt: %v", entries)
	}
}
