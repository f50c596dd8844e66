package pruning

import (
	"math"
	"slices"

	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/quant"
)

// plan holds, per layer, what structured pruning keeps: indices into the
// original feed-forward neurons, query heads and KV heads, ascending.
type plan struct {
	ffn, heads, kv [][]int
}

// keptFFN is the feed-forward width kept of w: keep·w rounded, and to a
// multiple of 32 when w is at least 64, so that ffn_down takes Q8_0.
func keptFFN(w int, keep float64) int {
	if keep <= 0 || keep >= 1 {
		return w
	}
	n := int(math.Round(float64(w) * keep))
	if w >= 2*gguf.QK8_0 {
		n = max(1, int(math.Round(float64(n)/gguf.QK8_0))) * gguf.QK8_0
	}
	return max(1, min(w, n))
}

// keptHeads is how many query and KV heads remain of heads and kv when
// keep of the query heads are to stay. Two shapes keep grouped-query
// attention uniform: every KV group keeps the same number of its query
// heads, or whole groups (a KV head with its query heads) go. Of all such
// shapes the one with the query-head count nearest keep·heads wins, the
// one that keeps every KV head on a tie.
func keptHeads(heads, kv int, keep float64) (int, int) {
	if keep <= 0 || keep >= 1 {
		return heads, kv
	}
	g := heads / kv
	want := keep * float64(heads)
	bestH, bestKV := heads, kv
	dist := func(h int) float64 { return math.Abs(float64(h) - want) }
	for per := g; per >= 1; per-- { // within groups
		if h := kv * per; dist(h) < dist(bestH) {
			bestH, bestKV = h, kv
		}
	}
	for groups := kv - 1; groups >= 1; groups-- { // whole groups
		if h := groups * g; dist(h) < dist(bestH) {
			bestH, bestKV = h, groups
		}
	}
	return bestH, bestKV
}

// makePlan ranks every layer's neurons and heads and keeps the best.
func makePlan(m *model.Model, o Options) plan {
	c := &m.Config
	p := plan{ffn: make([][]int, c.Layers), heads: make([][]int, c.Layers), kv: make([][]int, c.Layers)}
	for l := range m.Layers {
		layer := &m.Layers[l]
		p.ffn[l] = topK(ffnScores(m, l, o.Stats), keptFFN(layer.FFN, o.FFNKeep))
		hs := headScores(m, l, o.Stats)
		nh, nkv := keptHeads(layer.Heads, layer.KVHeads, o.HeadsKeep)
		g := layer.Heads / layer.KVHeads
		if nkv == layer.KVHeads {
			// The best nh/nkv query heads of every group.
			for k := 0; k < layer.KVHeads; k++ {
				for _, h := range topK(hs[k*g:(k+1)*g], nh/nkv) {
					p.heads[l] = append(p.heads[l], k*g+h)
				}
				p.kv[l] = append(p.kv[l], k)
			}
		} else {
			// The best nkv whole groups, by the sum of their heads' scores.
			gs := make([]float64, layer.KVHeads)
			for h, sc := range hs {
				gs[h/g] += sc
			}
			p.kv[l] = topK(gs, nkv)
			for _, k := range p.kv[l] {
				for h := k * g; h < (k+1)*g; h++ {
					p.heads[l] = append(p.heads[l], h)
				}
			}
		}
	}
	return p
}

// topK returns the indices of the k largest scores, ascending; ties keep
// the lower index.
func topK(scores []float64, k int) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	idx = idx[:k]
	slices.Sort(idx)
	return idx
}

// ffnScores rates the neurons of layer l.
func ffnScores(m *model.Model, l int, st *quant.Stats) []float64 {
	layer := &m.Layers[l]
	down := colNorms(layer.Down)
	if st != nil {
		if cs := st.In[layer.Down.Name]; cs != nil && len(cs.SumSq) == len(down) {
			act := cs.Norm()
			for i := range down {
				down[i] *= act[i]
			}
			return down
		}
	}
	up, gate := rowNorms(layer.Up), rowNorms(layer.Gate)
	for i := range down {
		down[i] *= up[i] * gate[i]
	}
	return down
}

// headScores rates the query heads of layer l.
func headScores(m *model.Model, l int, st *quant.Stats) []float64 {
	layer := &m.Layers[l]
	if st != nil && l < len(st.HeadOut) && len(st.HeadOut[l]) == layer.Heads {
		return slices.Clone(st.HeadOut[l])
	}
	hd := m.Config.HeadDim
	q, o := rowNorms(layer.Wq), colNorms(layer.Wo)
	s := make([]float64, layer.Heads)
	for h := range s {
		var a, b float64
		for i := h * hd; i < (h+1)*hd; i++ {
			a += q[i] * q[i]
			b += o[i] * o[i]
		}
		s[h] = math.Sqrt(a * b)
	}
	return s
}

// rowNorms is ‖row i‖₂ of every row of t.
func rowNorms(t *model.Tensor) []float64 {
	out := make([]float64, t.Rows)
	row := make([]float32, t.Cols)
	for r := range out {
		t.DequantizeRow(r, row)
		var s float64
		for _, v := range row {
			s += float64(v) * float64(v)
		}
		out[r] = math.Sqrt(s)
	}
	return out
}

// colNorms is ‖column j‖₂ of every column of t.
func colNorms(t *model.Tensor) []float64 {
	out := make([]float64, t.Cols)
	row := make([]float32, t.Cols)
	for r := 0; r < t.Rows; r++ {
		t.DequantizeRow(r, row)
		for j, v := range row {
			out[j] += float64(v) * float64(v)
		}
	}
	for j := range out {
		out[j] = math.Sqrt(out[j])
	}
	return out
}

// expand turns kept head indices into kept rows (or columns) of width hd.
func expand(heads []int, hd int) []int {
	out := make([]int, 0, len(heads)*hd)
	for _, h := range heads {
		for i := h * hd; i < (h+1)*hd; i++ {
			out = append(out, i)
		}
	}
	return out
}
