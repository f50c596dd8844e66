// Package cpu is octet's native CPU backend: the forward pass in C kernels
// (native/), built by make into one shared library per instruction set and
// loaded at run time with purego, so that the Go binary needs no cgo.
//
// # Variants and selection
//
// native/native.mk builds octet-cpu-<variant>.so for avx512 (F/BW/VL/DQ +
// VNNI), avxvnni, avx2 (+FMA, F16C) and portable on x86-64, and neon-dotprod
// and portable on arm64. Open reads the CPU's features (golang.org/x/sys/cpu)
// and tries the variants best first; each library also checks the CPU
// itself (oc_cpu_ok, compiled for the baseline instruction set) and its ABI
// version and struct layout against the Go mirrors (abi.go) before use. A
// variant the CPU lacks, or whose library is missing or fails any check, is
// passed over with its reason; Backend.Reason and the load log line carry
// the choice and the reasons. When none loads, the factory fails with
// backends.ErrNoDevice and backends.Auto moves on to ref, logging why.
// $OCTET_CPU_VARIANT forces a variant.
//
// # Where the libraries come from
//
// go build embeds native/lib (go:embed of the folder). At run time a library
// is written into a memfd and dlopened through /proc/self/fd, so one binary
// deploys; without embedded libraries (a binary built before `make native`)
// they are loaded from /usr/lib/octet (`make install-native`), and
// $OCTET_NATIVE_DIR overrides both. The .so files are build outputs, not
// committed: the folder's committed README.md keeps the embed pattern valid
// in a clean clone, so `go vet ./...` and `CGO_ENABLED=0 go build` work
// before anything is built; make's build and test targets depend on `native`,
// and TestLibrariesCurrent fails when a library is older than its sources.
//
// # Numerics
//
// Matrices stored as Q8_0 are multiplied W8A8: activations are quantized to
// blocks of 32 int8 with an f32 scale, products are exact int32 sums, scaled
// in f32. F32/F16/BF16 matrices are multiplied in f32. Every kernel has its
// twin in backends/ref and a test against it on random awkward sizes with
// guard bands (kernels_test.go); whole-model logits are compared with ref's
// on stories260K and synthetic models (model_test.go, the tolerance is
// justified there): float models agree to ~1e-6 relative, Q8_0 models to
// ~1% relative rms (activation rounding), with the same greedy text as ref
// on the f32 model and a long common prefix on the Q8_0 one.
//
// # Threads
//
// A forward step is one call into C (oc_forward): a thread pool inside the
// library runs it SPMD, threads meeting at barriers between phases (about
// ten per layer), rows handed out in chunks from an atomic counter. The
// alternative, Go goroutines each calling into C for a range per phase, was
// measured by BenchmarkParallelRegion: one parallel region costs 4 µs
// through the pool against 15 µs through goroutines and purego (2 threads,
// quiet Xeon host), and a tinyllama step has ~200 regions. Waiting threads
// spin briefly, then yield, then sleep on a futex (pool.c says why).
//
// # Memory
//
// By default a runner does not read the weights from the file mapping: Q8_0
// matrices are packed at load into the library's own memory (panels of
// 16/8/4 rows interleaved for the dot-product instructions, f16 scales: the
// same bytes as the file), and the embedding and float tensors are copied
// into anonymous memory (weights.go). Measured reasons: on the development
// VM, reads through the file mapping ran at 1.5–35 GB/s pass to pass
// against a steady ~30 GB/s from anonymous memory; and packing per step
// cost more than the products in batched decode. $OCTET_CPU_WEIGHTS=mmap
// keeps the weights in the mapping instead (packing per step, no copy). The
// KV cache, step buffers and packed weights are anonymous mappings asking
// for transparent huge pages.
//
// # Batches
//
// Forward runs any backends.Batch: runs of several sequences at different
// positions, each with its own block table into the shared paged KV cache,
// with LogitsLast/All/None per run. A step's matrix products read each
// weight once for all its tokens. A context cancelled during a step stops
// it at the next layer boundary.
package cpu
