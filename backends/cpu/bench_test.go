package cpu

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/model/gguf"
)

// Kernel benchmarks, cheap at -benchtime=1x. Shapes are tinyllama-1.1b's:
// dim 2048, FFN 5632. GB/s counts the weight bytes read; GOPS counts a
// multiply and an add per weight and token.

func benchKernels(b *testing.B, threads int) *kernels {
	bk, err := Open("")
	if err != nil {
		skipOrFail(b, "%v", err)
	}
	k, err := newKernels(bk.lib, threads, 8192, 4096, 8)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(k.close)
	return k
}

func BenchmarkMatMulQ8(b *testing.B) {
	// Six matrices, read in turn: more than a last-level cache holds, so
	// that n=1 measures memory, as a decode step does.
	rng := rand.New(rand.NewPCG(1, 1))
	ws := make([]*model.Tensor, 6)
	for i := range ws {
		ws[i] = randTensor(rng, gguf.Q8_0, 5632, 2048)
	}
	k := benchKernels(b, 0)
	// The memory read rate of the same threads, for the one-token products'
	// roofline fraction (their bytes read ÷ this rate).
	bw, err := k.bandwidth(256<<20, 3)
	if err != nil {
		b.Fatal(err)
	}
	paths := map[int]string{pathDirect: "direct", pathPacked: "packed", pathPrepack: "prepacked"}
	for _, c := range []struct{ n, path int }{
		{1, pathDirect}, {1, pathPrepack}, {8, pathPacked}, {8, pathPrepack}, {16, pathPrepack}, {64, pathPrepack}, {512, pathPrepack},
	} {
		b.Run(fmt.Sprintf("5632x2048/n=%d/%s", c.n, paths[c.path]), func(b *testing.B) {
			x := randVec(rng, c.n*2048, 1)
			y := make([]float32, c.n*5632)
			if err := k.prepare(x, c.n, 2048); err != nil {
				b.Fatal(err)
			}
			// Prepacked: one context per matrix, each holding its packed copy.
			kk := []*kernels{k}
			if c.path == pathPrepack {
				kk = make([]*kernels, len(ws))
				for i, w := range ws {
					kk[i] = benchKernels(b, 0)
					if err := kk[i].prepack(w); err != nil {
						b.Fatal(err)
					}
					if err := kk[i].prepare(x, c.n, 2048); err != nil {
						b.Fatal(err)
					}
				}
			}
			i := 0
			for b.Loop() {
				if err := kk[i%len(kk)].matmulPool(ws[i%len(ws)], x, c.n, y, c.path, false); err != nil {
					b.Fatal(err)
				}
				i++
			}
			s := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(len(ws[0].Data))/s/1e9, "GB/s")
			if c.n == 1 {
				b.ReportMetric(float64(len(ws[0].Data))/s/bw, "roofline")
			}
			b.ReportMetric(2*float64(5632*2048*c.n)/s/1e9, "GOPS")
		})
	}
}

func BenchmarkMatMulF16(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 2))
	w := randTensor(rng, gguf.F16, 2048, 2048)
	k := benchKernels(b, 0)
	x := randVec(rng, w.Cols, 1)
	y := make([]float32, w.Rows)
	for b.Loop() {
		if err := k.matmulPool(w, x, 1, y, pathAuto, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(w.Data))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

// BenchmarkQuantize: activations to int8 blocks, the step before every
// Q8_0 product.
func BenchmarkQuantize(b *testing.B) {
	k := benchKernels(b, 1)
	x := randVec(rand.New(rand.NewPCG(3, 3)), 64*2048, 1)
	for b.Loop() {
		if err := k.prepare(x, 64, 2048); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(x)*4)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

func BenchmarkAttention(b *testing.B) {
	const heads, kv, hd, bs, pos = 32, 4, 64, 16, 511
	rng := rand.New(rand.NewPCG(4, 4))
	k := benchKernels(b, 1)
	blocks := make([]int32, pos/bs+1)
	for i := range blocks {
		blocks[i] = int32(i)
	}
	kc := keysBlocked(randVec(rng, len(blocks)*bs*kv*hd, 1), bs, kv*hd)
	vc := randVec(rng, len(blocks)*bs*kv*hd, 1)
	q := randVec(rng, heads*hd, 1)
	out := make([]float32, heads*hd)
	b.Run("f32", func(b *testing.B) { benchAttention(b, k, out, q, kc, vc, blocks, bs, pos, heads, kv, hd) })
	k16, _ := halves(kc)
	v16, _ := halves(vc)
	b.Run("f16", func(b *testing.B) { benchAttention(b, k, out, q, k16, v16, blocks, bs, pos, heads, kv, hd) })
}

// benchAttention times attention over caches of float32 or f16 values and
// reports the rate at which it reads them.
func benchAttention[T float32 | uint16](b *testing.B, k *kernels, out, q []float32, kc, vc []T, blocks []int32, bs, pos, heads, kv, hd int) {
	for b.Loop() {
		if err := attention(k, out, q, kc, vc, blocks, bs, pos, heads, kv, hd, false); err != nil {
			b.Fatal(err)
		}
	}
	var zero T
	b.ReportMetric(float64((pos+1)*kv*hd*int(unsafe.Sizeof(zero))*2)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

// BenchmarkParallelRegion is the threads decision: the cost of one parallel
// region (a forward step has ~10 per layer) through the library's pool
// (one call into C, threads woken and met at a barrier inside) against
// goroutines each calling into C for its share of rows.
func BenchmarkParallelRegion(b *testing.B) {
	threads := runtime.GOMAXPROCS(0)
	k := benchKernels(b, threads)
	rng := rand.New(rand.NewPCG(5, 5))
	w := randTensor(rng, gguf.Q8_0, 256, 256) // small: the overhead shows
	x := randVec(rng, w.Cols, 1)
	y := make([]float32, w.Rows)
	if err := k.prepare(x, 1, w.Cols); err != nil {
		b.Fatal(err)
	}
	b.Run("pool", func(b *testing.B) {
		for b.Loop() {
			if err := k.matmulPool(w, x, 1, y, pathDirect, false); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/region")
	})
	b.Run("goroutines", func(b *testing.B) {
		var wg sync.WaitGroup
		for b.Loop() {
			for t := range threads {
				wg.Go(func() {
					r0, r1 := w.Rows*t/threads, w.Rows*(t+1)/threads
					if err := k.matmulRange(w, x, 1, y, r0, r1, t, pathDirect, false); err != nil {
						panic(err)
					}
				})
			}
			wg.Wait()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/region")
	})
}

// BenchmarkCrossing is the cost of one call into the library through purego
// (a forward step makes one).
func BenchmarkCrossing(b *testing.B) {
	bk, err := Open("")
	if err != nil {
		skipOrFail(b, "%v", err)
	}
	for b.Loop() {
		bk.lib.call(bk.lib.fn.abiVersion)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/call")
}
