//go:build linux

package cuda

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/octet-dev/octet/backends"
	"github.com/octet-dev/octet/backends/ref"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// Launch geometry shared with kernels/octet.cu.
const (
	gemvWarps  = 8  // WARPS: weight rows per GEMV block
	gemvTile   = 8  // TILE: tokens per GEMV block at most
	mmaWarps   = 8  // MMA_WARPS: warps of a gemm_q8 block
	quantWarps = 32 // QUANT_WARPS: warps of a quant_q8 block
	maxHeadDim = 256
	// maxStepTokens bounds the tokens of one device step; a larger batch
	// runs as several steps in order (each writes its KV before the next
	// attends).
	maxStepTokens = 512
	// graphCacheSize bounds the captured step shapes kept.
	graphCacheSize = 64
)

// matrix is a weight matrix in device memory: Q8_0 as int8 values (rows ×
// cols) and float16 scales (rows × cols/32), or float32 (rows × cols) in w.
type matrix struct {
	q8         bool
	rows, cols int
	w, d       devPtr
}

type layer struct {
	heads, kvHeads, ffn int
	qkv, wo, gate, up   matrix
	down                matrix
	bq, bk, bv          devPtr // 0 when the model has no QKV bias
	attnNorm, ffnNorm   devPtr
	k, v                devPtr // KV cache: KVBlocks*BlockSize rows of kvHeads*headDim float32 or float16 (LoadOptions.KV)
}

type runner struct {
	dev *device
	m   *model.Model
	o   backends.LoadOptions

	embd, out matrix
	outNorm   devPtr
	ropeCS    devPtr // [MaxContext][Rope.Dims/2]{cos, sin}
	layers    []layer

	// Step buffers, sized for maxStepTokens tokens.
	x, qkv, att, ffn, logits devPtr
	meta                     devPtr // int32: tokens, positions, block-table offsets, logit rows, block tables
	metaCap                  int
	// qx and dx hold activations quantized for gemm_q8: qcap int8 values
	// and a float scale per 32.
	qx, dx devPtr
	qcap   int

	allocs      []devPtr
	weightBytes int64

	graphs map[stepShape]uintptr // 0: seen once, not captured yet
	mu     sync.Mutex            // Forward calls must not overlap; this makes misuse safe
	closed bool
}

// stepShape is what a captured graph depends on: every other input is read
// from device memory at run time.
type stepShape struct{ tokens, outRows int }

func (r *runner) KVBlocks() int  { return r.o.KVBlocks }
func (r *runner) BlockSize() int { return r.o.BlockSize }

func (r *runner) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.dev.do(func() error { r.release(); return nil })
}

// release frees everything the runner holds (device goroutine).
func (r *runner) release() {
	for _, g := range r.graphs {
		if g != 0 {
			r.dev.dropGraph(g)
		}
	}
	r.graphs = nil
	for _, p := range r.allocs {
		r.dev.free(p)
	}
	r.allocs = nil
}

func (r *runner) alloc(n int64) (devPtr, error) {
	p, err := r.dev.alloc(n)
	if err == nil {
		r.allocs = append(r.allocs, p)
	}
	return p, err
}

func (r *runner) vector(t *model.Tensor) (devPtr, error) {
	if t == nil {
		return 0, nil
	}
	p, err := allocCopy(r.dev, t.Float32s())
	if err == nil {
		r.allocs = append(r.allocs, p)
		r.weightBytes += int64(4 * t.Rows * t.Cols)
	}
	return p, err
}

// matrix uploads the tensors ts stacked by rows (same column count): as
// Q8_0 when all are Q8_0, else as float32.
func (r *runner) matrix(ts ...*model.Tensor) (matrix, error) {
	q8 := true
	for _, t := range ts {
		q8 = q8 && t.Type == gguf.Q8_0
	}
	return r.matrixAs(q8, ts...)
}

// matrixAs uploads ts as Q8_0 (q8, all must be Q8_0) or as float32.
func (r *runner) matrixAs(q8 bool, ts ...*model.Tensor) (matrix, error) {
	mt := matrix{q8: q8, cols: ts[0].Cols}
	for _, t := range ts {
		if t.Cols != mt.cols {
			return mt, fmt.Errorf("tensor %q has %d columns, want %d", t.Name, t.Cols, mt.cols)
		}
		mt.rows += t.Rows
	}
	if mt.rows > 65535*gemvWarps {
		return mt, fmt.Errorf("tensor %q has %d rows, more than the GEMV grid allows", ts[0].Name, mt.rows)
	}
	var err error
	if !mt.q8 {
		data := make([]float32, 0, mt.rows*mt.cols)
		for _, t := range ts {
			data = append(data, t.Float32s()...)
		}
		if mt.w, err = allocCopy(r.dev, data); err == nil {
			r.allocs = append(r.allocs, mt.w)
			r.weightBytes += int64(4 * len(data))
		}
		return mt, err
	}
	qs := make([]int8, 0, mt.rows*mt.cols)
	ds := make([]uint16, 0, mt.rows*mt.cols/32)
	for _, t := range ts {
		qs, ds = splitQ8(qs, ds, t.Data)
	}
	if mt.w, err = allocCopy(r.dev, qs); err != nil {
		return mt, err
	}
	r.allocs = append(r.allocs, mt.w)
	if mt.d, err = allocCopy(r.dev, ds); err != nil {
		return mt, err
	}
	r.allocs = append(r.allocs, mt.d)
	r.weightBytes += int64(len(qs) + 2*len(ds))
	return mt, nil
}

// splitQ8 appends the values and scales of Q8_0 blocks (a float16 scale
// followed by 32 int8 values each) to qs and ds.
func splitQ8(qs []int8, ds []uint16, data []byte) ([]int8, []uint16) {
	for b := 0; b+34 <= len(data); b += 34 {
		ds = append(ds, binary.LittleEndian.Uint16(data[b:]))
		for _, v := range data[b+2 : b+34] {
			qs = append(qs, int8(v))
		}
	}
	return qs, ds
}

// ropeTable is ref.Rope's cos/sin for positions 0…n-1, computed the same
// way, so rotations match it bit for bit before float rounding of the
// products.
func ropeTable(rc model.RopeConfig, freqs []float32, n int) []float32 {
	half := rc.Dims / 2
	cs := make([]float32, 0, 2*n*half)
	for pos := 0; pos < n; pos++ {
		for i := 0; i < half; i++ {
			sin, cos := math.Sincos(ref.RopeAngle(rc, freqs, pos, i))
			cs = append(cs, float32(cos), float32(sin))
		}
	}
	return cs
}

// load uploads the weights and allocates the KV cache and step buffers
// (device goroutine).
func (r *runner) load() error {
	m, c, o := r.m, &r.m.Config, r.o
	if c.HeadDim > maxHeadDim {
		return fmt.Errorf("head width %d exceeds the attention kernel's %d", c.HeadDim, maxHeadDim)
	}
	// The kernels number cache slots with int32.
	if slots := int64(o.KVBlocks) * int64(o.BlockSize); slots > math.MaxInt32 {
		return fmt.Errorf("a KV cache of %d slots (%d blocks of %d) is more than the kernels address", slots, o.KVBlocks, o.BlockSize)
	}
	// The KV cache must fit beside the weights in free memory.
	kvBytes := backends.KVBytesPerPosition(m, o.KV) * int64(o.KVBlocks) * int64(o.BlockSize)
	free, _, err := r.dev.memInfo()
	if err != nil {
		return err
	}
	need := kvBytes + m.WeightBytes() + 1<<28
	if need > free {
		return fmt.Errorf("model and KV cache (%d blocks of %d) need %.2f GiB, the GPU has %.2f GiB free",
			o.KVBlocks, o.BlockSize, float64(need)/(1<<30), float64(free)/(1<<30))
	}

	if r.embd, err = r.matrix(m.TokEmbd); err != nil {
		return err
	}
	r.out = r.embd
	if m.Output != m.TokEmbd {
		if r.out, err = r.matrix(m.Output); err != nil {
			return err
		}
	}
	if r.outNorm, err = r.vector(m.OutputNorm); err != nil {
		return err
	}
	cs := ropeTable(c.Rope, m.RopeFreqs, o.MaxContext)
	if r.ropeCS, err = allocCopy(r.dev, cs); err != nil {
		return err
	}
	r.allocs = append(r.allocs, r.ropeCS)

	maxQKV, maxQ, maxFFN := 0, 0, 0
	slots := int64(o.KVBlocks) * int64(o.BlockSize)
	r.layers = make([]layer, len(m.Layers))
	for i := range m.Layers {
		ml, l := &m.Layers[i], &r.layers[i]
		l.heads, l.kvHeads, l.ffn = ml.Heads, ml.KVHeads, ml.FFN
		if l.qkv, err = r.matrix(ml.Wq, ml.Wk, ml.Wv); err != nil {
			return err
		}
		if l.wo, err = r.matrix(ml.Wo); err != nil {
			return err
		}
		// The fused gate/up kernel reads both matrices alike.
		gu8 := ml.Gate.Type == gguf.Q8_0 && ml.Up.Type == gguf.Q8_0
		if l.gate, err = r.matrixAs(gu8, ml.Gate); err != nil {
			return err
		}
		if l.up, err = r.matrixAs(gu8, ml.Up); err != nil {
			return err
		}
		if l.down, err = r.matrix(ml.Down); err != nil {
			return err
		}
		for _, v := range []struct {
			dst *devPtr
			t   *model.Tensor
		}{{&l.bq, ml.Bq}, {&l.bk, ml.Bk}, {&l.bv, ml.Bv}, {&l.attnNorm, ml.AttnNorm}, {&l.ffnNorm, ml.FFNNorm}} {
			if *v.dst, err = r.vector(v.t); err != nil {
				return err
			}
		}
		part := int64(o.KV.Bytes()) * slots * int64(l.kvHeads*c.HeadDim) // the layer's keys, or its values
		if l.k, err = r.alloc(part); err != nil {
			return err
		}
		if l.v, err = r.alloc(part); err != nil {
			return err
		}
		maxQKV = max(maxQKV, l.qkv.rows)
		maxQ = max(maxQ, l.heads*c.HeadDim)
		maxFFN = max(maxFFN, l.ffn)
	}
	T := int64(maxStepTokens)
	for _, b := range []struct {
		dst   *devPtr
		elems int
	}{{&r.x, c.Dim}, {&r.qkv, maxQKV}, {&r.att, maxQ}, {&r.ffn, maxFFN}, {&r.logits, c.VocabSize}} {
		if *b.dst, err = r.alloc(4 * T * int64(b.elems)); err != nil {
			return err
		}
	}
	r.graphs = map[stepShape]uintptr{}
	if err := r.growQ(maxStepTokens * max(c.Dim, maxQ, maxFFN)); err != nil {
		return err
	}
	return r.growMeta(4*maxStepTokens + 4096)
}

// dropGraphs forgets the captured graphs (their addresses moved).
func (r *runner) dropGraphs() {
	for k, g := range r.graphs {
		if g != 0 {
			r.dev.dropGraph(g)
		}
		delete(r.graphs, k)
	}
}

// forget frees p, one of r.allocs, and removes it from them.
func (r *runner) forget(p devPtr) {
	if p == 0 {
		return
	}
	for i, q := range r.allocs {
		if q == p {
			r.allocs = append(r.allocs[:i], r.allocs[i+1:]...)
			break
		}
	}
	r.dev.free(p)
}

// growQ makes the quantized-activation buffers hold n values: Load sizes
// them for the largest step, a kernel test's harness as it goes.
func (r *runner) growQ(n int) error {
	if n <= r.qcap {
		return nil
	}
	qx, err := r.dev.alloc(int64(n))
	if err != nil {
		return err
	}
	dx, err := r.dev.alloc(int64(n / 32 * 4))
	if err != nil {
		r.dev.free(qx)
		return err
	}
	r.forget(r.qx)
	r.forget(r.dx)
	r.qx, r.dx, r.qcap = qx, dx, n
	r.allocs = append(r.allocs, qx, dx)
	return nil
}

// growMeta makes the metadata buffer hold n int32s. A new buffer moves the
// addresses that captured graphs hold, so they are dropped.
func (r *runner) growMeta(n int) error {
	if n <= r.metaCap {
		return nil
	}
	n = max(n, 2*r.metaCap)
	p, err := r.dev.alloc(4 * int64(n))
	if err != nil {
		return err
	}
	r.forget(r.meta)
	r.dropGraphs()
	r.meta, r.metaCap = p, n
	r.allocs = append(r.allocs, p)
	return nil
}

// step is one device step: at most maxStepTokens tokens of the batch.
type step struct {
	tok, pos, btoff, outIdx, blocks []int32
}

// split cuts the batch into steps, in batch order; a run may span steps.
func split(b *backends.Batch, bs int) []*step {
	var steps []*step
	cur := &step{}
	for _, run := range b.Runs {
		end := run.Pos + len(run.Tokens)
		table := run.Blocks[:(end+bs-1)/bs]
		off := -1
		for j, t := range run.Tokens {
			if len(cur.tok) == maxStepTokens {
				steps = append(steps, cur)
				cur, off = &step{}, -1
			}
			if off < 0 {
				off = len(cur.blocks)
				cur.blocks = append(cur.blocks, table...)
			}
			if run.Logits == backends.LogitsAll || (run.Logits == backends.LogitsLast && j == len(run.Tokens)-1) {
				cur.outIdx = append(cur.outIdx, int32(len(cur.tok)))
			}
			cur.tok = append(cur.tok, t)
			cur.pos = append(cur.pos, int32(run.Pos+j))
			cur.btoff = append(cur.btoff, int32(off))
		}
	}
	return append(steps, cur)
}

// Forward implements backends.Runner.
func (r *runner) Forward(ctx context.Context, b *backends.Batch) (*backends.Logits, error) {
	c := &r.m.Config
	if err := b.Validate(c.VocabSize, r.o.BlockSize, r.o.KVBlocks); err != nil {
		return nil, err
	}
	for i, run := range b.Runs {
		if end := run.Pos + len(run.Tokens); end > r.o.MaxContext {
			return nil, fmt.Errorf("cuda: %w: run %d reaches position %d, beyond the runner's context of %d", backends.ErrBadBatch, i, end-1, r.o.MaxContext)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("cuda: runner is closed")
	}
	logits := backends.NewLogits(b, c.VocabSize)
	row := 0
	for _, s := range split(b, r.o.BlockSize) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dst := logits.Data[row*c.VocabSize : (row+len(s.outIdx))*c.VocabSize]
		if err := r.dev.do(func() error { return r.run(s, dst) }); err != nil {
			return nil, err
		}
		row += len(s.outIdx)
	}
	return logits, nil
}

// run uploads a step's inputs, runs it (from a captured graph when its
// shape was seen before) and downloads its logits into dst.
func (r *runner) run(s *step, dst []float32) error {
	n := len(s.tok)
	host := make([]int32, 0, 3*n+len(s.outIdx)+len(s.blocks))
	host = append(append(append(append(append(host, s.tok...), s.pos...), s.btoff...), s.outIdx...), s.blocks...)
	if err := r.growMeta(len(host)); err != nil {
		return err
	}
	if err := upload(r.dev, r.meta, host); err != nil {
		return err
	}
	shape := stepShape{n, len(s.outIdx)}
	exec, seen := r.graphs[shape]
	switch {
	case r.dev.trace != nil && r.dev.graphs():
		if err := r.runTraced(shape); err != nil {
			return err
		}
	case exec != 0:
		if err := r.dev.replay(exec); err != nil {
			return err
		}
	case seen && r.dev.graphs():
		g, err := r.dev.capture(func() error { return r.launch(shape) })
		if err != nil {
			return err
		}
		if len(r.graphs) >= graphCacheSize {
			for k, e := range r.graphs {
				if e != 0 {
					r.dev.dropGraph(e)
				}
				delete(r.graphs, k)
			}
		}
		r.graphs[shape] = g
		if err := r.dev.replay(g); err != nil {
			return err
		}
	default:
		if len(r.graphs) < graphCacheSize {
			r.graphs[shape] = 0
		}
		if err := r.launch(shape); err != nil {
			return err
		}
	}
	if err := r.dev.sync(); err != nil {
		return err
	}
	return download(r.dev, dst, r.logits)
}

// launch issues the kernels of one step of shape s; the inputs are in r.meta.
func (r *runner) launch(s stepShape) error {
	c := &r.m.Config
	n, hd := s.tokens, c.HeadDim
	tok := r.meta
	pos := tok + devPtr(4*n)
	btoff := pos + devPtr(4*n)
	outIdx := btoff + devPtr(4*n)
	blocks := outIdx + devPtr(4*s.outRows)
	d, k := r.dev, r.dev.mod

	var err error
	if r.embd.q8 {
		err = d.launch(k.embedQ8, [2]int{n, 1}, 256, 0, ptrArg(tok), ptrArg(r.embd.w), ptrArg(r.embd.d), intArg(c.Dim), ptrArg(r.x))
	} else {
		err = d.launch(k.embedF32, [2]int{n, 1}, 256, 0, ptrArg(tok), ptrArg(r.embd.w), intArg(c.Dim), ptrArg(r.x))
	}
	if err != nil {
		return err
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	neox := 0
	if c.Rope.NeoX {
		neox = 1
	}
	f16 := r.o.KV == backends.KVF16
	ropeKV := k.ropeKV[0]
	if f16 {
		ropeKV = k.ropeKV[1]
	}
	for i := range r.layers {
		l := &r.layers[i]
		qw, kvw := l.heads*hd, l.kvHeads*hd
		ld := qw + 2*kvw
		if err := r.gemv(l.qkv, matrix{}, r.x, c.Dim, 0, l.attnNorm, r.qkv, ld, false, n); err != nil {
			return err
		}
		if err := d.launch(ropeKV, [2]int{n, ((l.heads+l.kvHeads)*hd + 255) / 256}, 256, 0, ptrArg(r.qkv), intArg(ld), ptrArg(pos), ptrArg(btoff), ptrArg(blocks),
			intArg(r.o.BlockSize), intArg(l.heads), intArg(l.kvHeads), intArg(hd), intArg(c.Rope.Dims), intArg(neox), ptrArg(r.ropeCS),
			ptrArg(l.bq), ptrArg(l.bk), ptrArg(l.bv), ptrArg(l.k), ptrArg(l.v)); err != nil {
			return err
		}
		att, err := k.attentionFor(attnShape{hd: hd, heads: l.heads, kvHeads: l.kvHeads, tokens: n, sms: d.sms, f16: f16, mode: d.attn})
		if err != nil {
			return err
		}
		if err := d.launch(att.k, att.grid, att.threads, 0, ptrArg(r.qkv), intArg(ld), ptrArg(pos), ptrArg(btoff), ptrArg(blocks),
			intArg(r.o.BlockSize), intArg(l.heads), intArg(l.kvHeads), intArg(hd), floatArg(scale), ptrArg(l.k), ptrArg(l.v), ptrArg(r.att), intArg(qw)); err != nil {
			return err
		}
		if err := r.gemv(l.wo, matrix{}, r.att, qw, 0, 0, r.x, c.Dim, true, n); err != nil {
			return err
		}
		if err := r.gemv(l.gate, l.up, r.x, c.Dim, 0, l.ffnNorm, r.ffn, l.ffn, false, n); err != nil {
			return err
		}
		if err := r.gemv(l.down, matrix{}, r.ffn, l.ffn, 0, 0, r.x, c.Dim, true, n); err != nil {
			return err
		}
	}
	if s.outRows == 0 {
		return nil
	}
	return r.gemv(r.out, matrix{}, r.x, c.Dim, outIdx, r.outNorm, r.logits, c.VocabSize, false, s.outRows)
}

// gemv launches y = w·x (or silu(w·x)*(w2·x), or y += w·x) over ntok
// activation rows of x (rows xrows[i] when xrows is set), RMS-normalised
// with normw first when normw is set. A Q8_0 matrix takes gemv_q8_1 (or
// gemv_q8_1_gated, with w2) for one token (a decode step of one sequence)
// and the tensor cores for more: quant_q8 quantizes the activations once,
// then gemm_q8.
func (r *runner) gemv(w, w2 matrix, x devPtr, ldx int, xrows, normw, y devPtr, ldy int, accumulate bool, ntok int) error {
	acc := 0
	if accumulate {
		acc = 1
	}
	d, k, eps := r.dev, r.dev.mod, floatArg(r.m.Config.NormEps)
	switch {
	case !w.q8:
		return r.gemvF32(w, w2, x, ldx, xrows, normw, y, ldy, acc, ntok)
	case ntok == 1:
		smem := w.cols + w.cols/8 + 4*gemvWarps
		if smem > d.smemMax {
			return fmt.Errorf("cuda: a row of %d values does not fit the GPU's %d bytes of shared memory", w.cols, d.smemMax)
		}
		grid := [2]int{min((w.rows+gemvWarps-1)/gemvWarps, gemvBlocksPerSM*d.sms), 1}
		tail := []arg{intArg(w.rows), intArg(w.cols), ptrArg(x), intArg(ldx), ptrArg(xrows), ptrArg(normw), eps, ptrArg(y), intArg(acc)}
		if w2.w != 0 {
			return d.launch(k.gemvQ8Gated, grid, gemvWarps*32, smem, append([]arg{ptrArg(w.w), ptrArg(w.d), ptrArg(w2.w), ptrArg(w2.d)}, tail...)...)
		}
		return d.launch(k.gemvQ8One, grid, gemvWarps*32, smem, append([]arg{ptrArg(w.w), ptrArg(w.d)}, tail...)...)
	}
	if need := ntok * w.cols; need > r.qcap {
		// Load sized the buffers for every step, and a step may be
		// under capture; only the kernel tests' harness grows them.
		if r.graphs != nil {
			return fmt.Errorf("cuda: a step needs %d quantized activations, the runner holds %d", need, r.qcap)
		}
		if err := r.growQ(need); err != nil {
			return err
		}
	}
	if err := d.launch(k.quantQ8, [2]int{ntok, 1}, quantWarps*32, 0, ptrArg(x), intArg(ldx), ptrArg(xrows), ptrArg(normw), eps,
		intArg(w.cols), ptrArg(r.qx), ptrArg(r.dx)); err != nil {
		return err
	}
	grid := [2]int{(w.rows + 15) / 16, (ntok + gemmTokens - 1) / gemmTokens}
	tail := []arg{intArg(w.rows), intArg(w.cols), ptrArg(r.qx), ptrArg(r.dx), intArg(ntok), ptrArg(y), intArg(ldy), intArg(acc)}
	one, gated := k.gemmQ8, k.gemmQ8Gated
	if gemmTokens == 16 {
		one, gated = k.gemmQ8T16, k.gemmQ8GatedT16
	}
	if w2.w != 0 {
		return d.launch(gated, grid, mmaWarps*32, 0, append([]arg{ptrArg(w.w), ptrArg(w.d), ptrArg(w2.w), ptrArg(w2.d)}, tail...)...)
	}
	return d.launch(one, grid, mmaWarps*32, 0, append([]arg{ptrArg(w.w), ptrArg(w.d)}, tail...)...)
}

// gemmTokens is gemm_q8's token tile: 32, or 16 (the _t16 kernels: 128
// registers against 194, so two blocks per SM, and twice the blocks for a
// step of 32 sequences; weights are read once per tile). The benchmarks
// compare them (OCTET_CUDA_GEMM_TOKENS); 32 stays until a GPU run has
// measured 16.
var gemmTokens = 32

// gemvBlocksPerSM bounds gemv_q8_1's grid: its warps stride over the rows
// beyond it.
var gemvBlocksPerSM = 2

// gemvF32 launches gemv_f32: blocks of up to gemvTile tokens that copy
// their activations into shared memory.
func (r *runner) gemvF32(w, w2 matrix, x devPtr, ldx int, xrows, normw, y devPtr, ldy int, acc int, ntok int) error {
	tile, smem, err := gemvTiling(w.cols, r.dev.smemMax, ntok)
	if err != nil {
		return err
	}
	// Enough blocks to fill the GPU once (two per SM); warps stride over
	// the rows, so each block copies its activations once.
	tiles := (ntok + tile - 1) / tile
	grid := [2]int{tiles, min((w.rows+gemvWarps-1)/gemvWarps, max(1, 2*r.dev.sms/tiles))}
	return r.dev.launch(r.dev.mod.gemvF32, grid, gemvWarps*32, smem, ptrArg(w.w), ptrArg(w2.w), intArg(w.rows), intArg(w.cols),
		ptrArg(x), intArg(ldx), ptrArg(xrows), ptrArg(normw), floatArg(r.m.Config.NormEps), ptrArg(y), intArg(ldy), intArg(acc),
		intArg(ntok), intArg(tile))
}

// gemvTiling picks the tokens per gemv_f32 block and its dynamic shared
// memory: each token holds K floats, plus the norm's reduction scratch.
func gemvTiling(K, smemMax, ntok int) (tile, smem int, err error) {
	per := 4 * K
	fixed := (gemvWarps + 1) * gemvTile * 4
	tile = min(gemvTile, ntok, (smemMax-fixed)/per)
	if tile < 1 {
		return 0, 0, fmt.Errorf("cuda: a row of %d values does not fit the GPU's %d bytes of shared memory", K, smemMax)
	}
	return tile, tile*per + fixed, nil
}

var _ backends.Runner = (*runner)(nil)
