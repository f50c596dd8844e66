package eval

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/octet-dev/octet/model"
)

// Task is one multiple-choice question: a context and its possible
// endings, Label being the index of the right one.
type Task struct {
	Context string
	Endings []string
	Label   int
}

// ChoiceSet is a named list of tasks (HellaSwag, PIQA).
type ChoiceSet struct {
	Name  string
	Tasks []Task
}

// ChoiceResult is the accuracy of a model on multiple-choice tasks.
type ChoiceResult struct {
	Tasks int `json:"tasks"`
	// AccNorm picks the ending with the highest mean log-likelihood per
	// token (llama.cpp's HellaSwag score); Acc the highest sum.
	AccNorm    float64 `json:"acc_norm"`
	AccNormErr float64 `json:"acc_norm_err"` // one standard error
	Acc        float64 `json:"acc"`
	Backend    string  `json:"backend"`
	Seconds    float64 `json:"seconds"`
}

// choiceSeqs is how many sequences one forward step of Choice runs.
const choiceSeqs = 8

// Choice scores each task as llama.cpp's hellaswag does: every ending is
// tokenized as Context + " " + ending with BOS; the tokens after the prefix
// that all of a task's endings share are the ending's tokens, and its score
// is their summed log-likelihood divided by their count. The task is right
// when the best-scored ending (the first on ties) is the labelled one.
func Choice(ctx context.Context, m *model.Model, tasks []Task, o Options) (ChoiceResult, error) {
	o = o.withDefaults()
	start := time.Now()
	var res ChoiceResult
	if len(tasks) == 0 {
		return res, fmt.Errorf("eval: no tasks")
	}
	type seq struct {
		task, ending int
		tokens       []int32
		from         int // first scored token
	}
	var seqs []seq
	maxLen := 0
	for ti, t := range tasks {
		if len(t.Endings) < 2 || t.Label < 0 || t.Label >= len(t.Endings) {
			return res, fmt.Errorf("eval: task %d: %d endings, label %d", ti, len(t.Endings), t.Label)
		}
		toks := make([][]int32, len(t.Endings))
		minLen := math.MaxInt
		for e, end := range t.Endings {
			toks[e] = m.Tok.Encode(t.Context+" "+end, true, false)
			minLen = min(minLen, len(toks[e]))
		}
		cp := commonPrefix(toks)
		// Every ending scores at least one token, and the first token has
		// no context to be predicted from.
		cp = max(1, min(cp, minLen-1))
		for e, tk := range toks {
			if len(tk) < 2 {
				return res, fmt.Errorf("eval: task %d ending %d has %d tokens", ti, e, len(tk))
			}
			seqs = append(seqs, seq{task: ti, ending: e, tokens: tk, from: cp})
			maxLen = max(maxLen, len(tk))
		}
	}
	b, err := o.backend()
	if err != nil {
		return res, err
	}
	res.Backend = b.Name()
	r, err := o.loadRunner(b, m, maxLen, choiceSeqs, o.KV)
	if err != nil {
		return res, err
	}
	defer r.Close()
	mu := newMulti(r, maxLen, choiceSeqs)

	sum := make([]float64, len(seqs))
	count := make([]int, len(seqs))
	batch := make([][]int32, 0, choiceSeqs)
	for i := 0; i < len(seqs); i += choiceSeqs {
		part := seqs[i:min(i+choiceSeqs, len(seqs))]
		batch = batch[:0]
		for _, s := range part {
			batch = append(batch, s.tokens)
		}
		lg, err := mu.forward(ctx, batch)
		if err != nil {
			return res, err
		}
		for j, s := range part {
			off := lg.Offsets[j]
			for p := s.from; p < len(s.tokens); p++ {
				lp, _ := logProb(lg.Row(off+p-1), s.tokens[p])
				sum[i+j] += lp
				count[i+j]++
			}
		}
		if o.Progress != nil {
			o.Progress(seqs[i+len(part)-1].task+1, len(tasks))
		}
	}

	// Sequences are in task order, endings in order within each task.
	bestNorm, bestSum := make([]int, len(tasks)), make([]int, len(tasks))
	normMax, sumMax := make([]float64, len(tasks)), make([]float64, len(tasks))
	for i := range tasks {
		normMax[i], sumMax[i] = math.Inf(-1), math.Inf(-1)
	}
	for i, s := range seqs {
		if n := sum[i] / float64(count[i]); n > normMax[s.task] {
			normMax[s.task], bestNorm[s.task] = n, s.ending
		}
		if sum[i] > sumMax[s.task] {
			sumMax[s.task], bestSum[s.task] = sum[i], s.ending
		}
	}
	var norm, plain int
	for i, t := range tasks {
		if bestNorm[i] == t.Label {
			norm++
		}
		if bestSum[i] == t.Label {
			plain++
		}
	}
	n := float64(len(tasks))
	res.Tasks = len(tasks)
	res.AccNorm = float64(norm) / n
	res.AccNormErr = math.Sqrt(res.AccNorm * (1 - res.AccNorm) / n)
	res.Acc = float64(plain) / n
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// commonPrefix is the length of the prefix all sequences share.
func commonPrefix(seqs [][]int32) int {
	n := len(seqs[0])
	for _, s := range seqs[1:] {
		i := 0
		for i < n && i < len(s) && s[i] == seqs[0][i] {
			i++
		}
		n = i
	}
	return n
}
