// Package cuda is octet's NVIDIA GPU backend. It needs only the driver
// (libcuda.so.1), loaded at run time with purego: the binary is built with
// CGO_ENABLED=0 and no CUDA toolkit is needed on the host.
//
// The kernels are CUDA C in kernels/, compiled to PTX by Debian's clang-16
// (`make ptx`), committed, embedded with go:embed and JIT-compiled by the
// driver for the GPU it finds (PTX 7.8 for sm_90 and later, PTX 7.2 for
// sm_80; OCTET_CUDA_PTX=sm_80 takes the latter on any GPU, which is how
// `make gpu-check` tests it on a Hopper host). Every kernel has its twin in
// backends/ref; the tests compare them on random inputs and on the real
// model when a GPU answers, and skip with a message otherwise.
//
// # Threads
//
// One goroutine, locked to its OS thread, owns the device's primary context;
// every driver call runs on it (device.do). A Runner's Forward hands one
// closure per step to that goroutine.
//
// # Memory at the boundary
//
// The driver never receives a pointer into the Go heap that it could keep.
// Kernel parameters live in a pointer-free slot array mapped outside the Go
// heap (params): n 8-byte value slots followed by n pointers to them, which
// cuLaunchKernel reads during the call and copies. JIT options and logs live
// in a mapping of their own. Copies between Go memory and the device go
// through a pinned staging buffer that the driver allocated
// (cuMemAllocHost); the driver reads and writes only that. Otherwise Go memory
// reaches the driver only for the length of one call (an out-parameter it
// writes, a name or the PTX image it reads), never to be kept. Device memory is owned by the Runner that allocated it and
// freed by Close.
//
// # The forward pass
//
// Weights are uploaded once at Load: Q8_0 matrices as int8 values plus one
// float16 scale per 32 (the query, key and value projections concatenated
// into one matrix), other matrices as float32. The KV cache is float32 (or
// float16, LoadOptions.KV) in device memory, paged in blocks that the
// caller's block tables name. A
// step uploads token ids, positions and block tables, runs per layer the
// QKV product on RMS-normalised activations, RoPE with the cache write,
// paged attention with an online softmax, the output projection added into
// the residual, the gate and up products with the SiLU gate (normalised
// again), the down projection added into the residual, and the final norm
// and logits product for the rows the batch asks for; only those logits
// come back. A step shape (tokens, logit rows) seen twice is captured as a
// CUDA graph and replayed from then on.
//
// Each Q8_0 product quantizes its activations to int8 per 32 values, in
// one pass that also sums their squares: the RMSNorm factor scales a
// chunk's values alike and leaves the int8 values as they are, so it is
// applied to the sums (or folded into the scales) afterwards.
//   - one token (a decode step of one sequence): gemv_q8_1 (gemv_q8_1_gated
//     for the gate and up projections with the SiLU gate), dp4a, each block
//     quantizing the activations into shared memory while its warps' first
//     weight loads are in flight;
//   - more: quant_q8 quantizes them once, then gemm_q8 runs int8
//     tensor-core products (mma.sync m16n8k32, one Q8_0 block of 16 rows by
//     8 tokens each), scaled into float sums per block, over tiles of 32
//     tokens (gemm_q8_t16 takes tiles of 16 with fewer registers, for twice
//     the blocks at batch 32: `make gpu-check` compares them; 32 stays the
//     default until it has).
//
// On compute capability 9.0 and later the step's kernels go out with
// programmatic dependent launch (cuLaunchKernelEx): each starts while the
// one before it finishes, issues its weight loads and L2 prefetches, and
// waits (griddepcontrol.wait) before it touches what an earlier kernel
// wrote. OCTET_CUDA_PDL=0 turns it off; a driver that cannot capture such
// launches into a graph gets plain ones.
//
// Attention comes in one kernel per head width (32, 64, 128, 256 values),
// with 16 warps per (head, token) when there are few of them for the SMs
// and 4 when there are many. Over an f16 cache a step with enough (KV
// head, token) pairs to fill half the SMs takes attention16g instead: one
// block per KV head and token for all the query heads that share it, so
// that each cached row is read once, not once per query head
// (OCTET_CUDA_ATTENTION=heads or grouped forces either). kv_type = "auto"
// keeps the f32 cache on a GPU (Backend.PreferredKV).
//
// # Timeline
//
// OCTET_CUDA_PTX also takes a path to a PTX file. kernels/octet.trace.sm90.ptx
// is the timeline build of the same kernels (OCTET_TRACE in octet.cu): its
// blocks note the global timer at GRID_START, when their wait returns and
// when they leave, and a device running it traces every step (trace.go).
// BenchmarkDecodeTimeline prints where a decode step's time goes while its
// launches overlap, which a profiler that serializes kernels cannot show.
// The product's PTX carries none of it (TestTracePTX).
package cuda
