#!/bin/sh
# gpu-check.sh [DIR]: the CUDA backend's check on a machine with an NVIDIA
# GPU and no Go toolchain. DIR (default .cache/gpu, filled by `make
# gpu-build`) holds cuda.test and octet, cross-built with CGO_ENABLED=0, and
# shared/models/stories260K. Run from the repository root. It runs the
# correctness tests against ref, ptxas and compute-sanitizer where the
# toolkit is installed, synthesizes tinyllama-1.1b and smollm-135m (Q8_0),
# benchmarks copy bandwidth, decode, batched decode and prefill, prints
# the timeline of a decode step (the timeline build of the kernels), times each
# kernel of a decode step with ncu where it is installed
# (OCTET_PROFILE=0 skips it), runs `octet bench --backend cuda`, and prints
# a table. Logs go to $OUT (or DIR/out). OCTET_SM80=0 skips the second run
# of the tests on the sm_80 PTX, OCTET_SANITIZER=0 compute-sanitizer,
# OCTET_BENCH=0 `octet bench`, OCTET_TIMELINE=0 the timeline of a decode
# step, OCTET_T16=0 the A/B of gemm_q8's 16-token tiles: a shorter check
# when device time is short.
set -u
dir=$(cd "${1:-.cache/gpu}" && pwd)
out=${OUT:-$dir/out}
mkdir -p "$out"
models=${MODELS_DIR:-/tmp/octet-models}
mkdir -p "$models"
status=0
say() { printf '\n== %s\n' "$*"; }

say device
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv,noheader || true

say "correctness tests (cuda.test vs ref)"
(cd backends/cuda && OCTET_SHARED="$dir/shared" "$dir/cuda.test" -test.v -test.count=1 -test.timeout=240s) >"$out/tests.log" 2>&1 || status=1
grep -E '^(=== RUN|--- |PASS|FAIL|ok)|gpu:|ref:|_test.go' "$out/tests.log" | grep -v '=== RUN' | tail -60
# The Ampere PTX (PTX 7.2, no programmatic dependent launch), JIT-compiled
# for this GPU: the same kernels as an sm_80 part runs.
: >"$out/tests-sm80.log"
if [ "${OCTET_SM80:-1}" = 1 ]; then
	say "correctness tests with the sm_80 PTX"
	(cd backends/cuda && OCTET_CUDA_PTX=sm_80 OCTET_SHARED="$dir/shared" "$dir/cuda.test" -test.v -test.count=1 -test.timeout=240s \
		-test.run 'TestGEMVMatchesRef|TestRopeAttentionMatchRef|TestForwardMatchesRef|TestBatchedPagedMatchesRef|TestGreedyStoriesMatchesRef') >"$out/tests-sm80.log" 2>&1 || status=1
	grep -E '^(--- FAIL|PASS|FAIL|ok)' "$out/tests-sm80.log" | tail -10
fi

if command -v ptxas >/dev/null; then
	say "ptxas (sm_90) register and spill report"
	ptxas -arch=sm_90 -v backends/cuda/kernels/octet.sm90.ptx -o /tmp/octet.cubin 2>&1 | grep -E 'Compiling|registers|spill' | paste - - - | sed 's/ptxas info    ://g' | tee "$out/ptxas.log"
fi
if [ "${OCTET_SANITIZER:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
	say "compute-sanitizer memcheck on the kernel tests"
	(cd backends/cuda && OCTET_SHARED="$dir/shared" compute-sanitizer --tool memcheck --error-exitcode 9 \
		"$dir/cuda.test" -test.run 'TestGEMVMatchesRef|TestRopeAttentionMatchRef|TestBatchedPagedMatchesRef' -test.count=1) >"$out/sanitizer.log" 2>&1 || status=1
	tail -4 "$out/sanitizer.log"
fi

say "synthesizing models"
for shape in tinyllama-1.1b smollm-135m; do
	[ -f "$models/$shape-q8_0.gguf" ] || "$dir/octet" synth --shape "$shape" --type q8_0 --out "$models/$shape-q8_0.gguf" >/dev/null || status=1
done
list="$models/tinyllama-1.1b-q8_0.gguf,$models/smollm-135m-q8_0.gguf"

say "benchmarks (go test -bench, one process: copy bandwidth, decode, batch 32, prefill 512)"
(cd backends/cuda && OCTET_BENCH_MODELS="$list" "$dir/cuda.test" -test.run '^$' -test.bench 'CopyBandwidth|Decode|Prefill' \
	-test.benchtime "${BENCHTIME:-100x}" -test.timeout=300s) >"$out/bench.log" 2>&1 || status=1
grep -E '^Benchmark|FAIL|panic' "$out/bench.log"
# The same decode of one sequence with plain launches, for the table's
# "without PDL" column (the GPU has programmatic dependent launch when the
# runs above report the pdl metric).
(cd backends/cuda && OCTET_CUDA_PDL=0 OCTET_BENCH_MODELS="$list" "$dir/cuda.test" -test.run '^$' -test.bench 'Decode/.*/batch=1$' \
	-test.benchtime "${BENCHTIME:-100x}" -test.timeout=120s) >"$out/bench-nopdl.log" 2>&1 || status=1
sed -n 's/^BenchmarkDecode/NoPDLDecode/p' "$out/bench-nopdl.log" >>"$out/bench.log"

# gemm_q8 over 16-token tiles (OCTET_CUDA_GEMM_TOKENS=16: 128 registers
# against 194, two blocks per SM, twice the blocks at batch 32), for an
# A/B against the 32-token tiles above: the forward tests first.
: >"$out/tests-t16.log"
if [ "${OCTET_T16:-1}" = 1 ]; then
	say "gemm_q8 with 16-token tiles: forward tests, then batch 8/32 and prefill"
	(cd backends/cuda && OCTET_CUDA_GEMM_TOKENS=16 OCTET_SHARED="$dir/shared" "$dir/cuda.test" -test.count=1 -test.timeout=120s \
		-test.run 'TestForwardMatchesRef|TestBatchedPagedMatchesRef') >"$out/tests-t16.log" 2>&1 || status=1
	grep -E '^(--- FAIL|FAIL|ok)' "$out/tests-t16.log" | tail -5
	if grep -q '^ok' "$out/tests-t16.log"; then
		(cd backends/cuda && OCTET_CUDA_GEMM_TOKENS=16 OCTET_BENCH_MODELS="$list" "$dir/cuda.test" -test.run '^$' \
			-test.bench 'Decode/.*/batch=(8|32)$|Prefill' -test.benchtime "${BENCHTIME:-100x}" -test.timeout=300s) >"$out/bench-t16.log" 2>&1 || status=1
		sed -n 's/^Benchmark/T16/p' "$out/bench-t16.log" >>"$out/bench.log"
		grep -E '^T16' "$out/bench.log"
	fi
fi

tl="$models/tinyllama-1.1b-q8_0.gguf"
# The same over an f16 KV cache (rope_kv16, attention16 and the grouped
# attention16g kernels), and decode after a 1024-token prompt, where
# attention reads more, with either cache.
say "benchmarks with an f16 KV cache; decode after 1024 tokens (f32, f16)"
(cd backends/cuda && OCTET_BENCH_KV=f16 OCTET_BENCH_MODELS="$list" "$dir/cuda.test" -test.run '^$' -test.bench 'Decode|Prefill' \
	-test.benchtime "${BENCHTIME:-100x}" -test.timeout=300s) >"$out/bench-f16.log" 2>&1 || status=1
sed -n 's/^Benchmark/F16/p' "$out/bench-f16.log" >>"$out/bench.log"
for kv in f32 f16; do
	(cd backends/cuda && OCTET_BENCH_KV=$kv OCTET_BENCH_DECODE_PROMPT=1024 OCTET_BENCH_MODELS="$tl" "$dir/cuda.test" -test.run '^$' \
		-test.bench 'Decode/.*/batch=(1|32)$' -test.benchtime "${BENCHTIME:-100x}" -test.timeout=120s) >"$out/bench-long-$kv.log" 2>&1 || status=1
	sed -n "s/^BenchmarkDecode/Long-$kv/p" "$out/bench-long-$kv.log" >>"$out/bench.log"
done
grep -E '^(F16|Long)' "$out/bench.log"
grep -h -E 'FAIL|panic' "$out/bench-nopdl.log" "$out/bench-f16.log" "$out/bench-long-f32.log" "$out/bench-long-f16.log"
# The timeline build of the kernels notes when each block of each launch
# started, was released by the kernel before and left (trace.go): where a
# decode step's time goes with the launches overlapping, which ncu (it
# serializes kernels) cannot show. Greedy stories260K checks that the build
# computes what the product's does. Hopper and later only (the build is
# sm_90 PTX).
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)
if [ "${OCTET_TIMELINE:-1}" = 1 ] && [ "${cc%%.*}" -ge 9 ] 2>/dev/null; then
	say "timeline of one decode step (the timeline build: kernels/octet.trace.sm90.ptx)"
	(cd backends/cuda && OCTET_CUDA_PTX=kernels/octet.trace.sm90.ptx OCTET_SHARED="$dir/shared" OCTET_BENCH_MODELS="$list" \
		"$dir/cuda.test" -test.run 'TestGreedyStoriesMatchesRef' -test.bench 'DecodeTimeline' -test.benchtime 5x -test.timeout=180s) >"$out/timeline.log" 2>&1 || status=1
	grep -E '^(--- FAIL|FAIL|ok|panic)' "$out/timeline.log"
	sed -n '/^### /,/^Benchmark/p' "$out/timeline.log" | grep -v '^Benchmark' | tee "$out/timeline.md"
fi
# kernels prints the per-kernel time of the last step that an ncu CSV
# (gpu__time_duration.sum) holds: the launches from its last embedding.
kernels() {
	awk -F'","' '$13 == "gpu__time_duration.sum" {
		v = $15; gsub(/[",]/, "", v); n++; name[n] = $5; t[n] = v
		if ($5 ~ /^embed/) last = n
	}
	END {
		for (i = last; i <= n; i++) { if (!(name[i] in sum)) order[++k] = name[i]; sum[name[i]] += t[i]; cnt[name[i]]++; total += t[i] }
		printf "| kernel | launches | µs | share |\n|---|---|---|---|\n"
		for (j = 1; j <= k; j++) printf "| %s | %d | %.1f | %.1f%% |\n", order[j], cnt[order[j]], sum[order[j]] / 1e3, 100 * sum[order[j]] / total
		printf "| all | %d | %.1f | |\n", n - last + 1, total / 1e3
	}' "$1"
}
if [ "${OCTET_PROFILE:-1}" = 1 ] && command -v ncu >/dev/null; then
	say "per-kernel times of one tinyllama-1.1b decode step (ncu, caches flushed per kernel)"
	prof() { # prof BATCH SKIP [KV]
		(cd backends/cuda && OCTET_BENCH_KV=${3:-f32} OCTET_BENCH_MODELS="$tl" ncu --clock-control none --csv --metrics gpu__time_duration.sum --launch-skip "$2" \
			"$dir/cuda.test" -test.run '^$' -test.bench "Decode/tinyllama-1.1b-q8_0/batch=$1\$" -test.benchtime 1x) >"$out/ncu-b$1${3:+-$3}.csv" 2>&1
	}
	if prof 1 0; then
		kernels "$out/ncu-b1.csv" | tee "$out/kernels-b1.md"
		# A batch of 32 first prefills each sequence as batch 1 did its one.
		pre=$(awk -F'","' '$13 == "gpu__time_duration.sum" { n++; if ($5 ~ /^embed/) last = n } END { print last - 1 }' "$out/ncu-b1.csv")
		echo
		prof 32 $((32 * pre)) && kernels "$out/ncu-b32.csv" | tee "$out/kernels-b32.md"
		echo
		echo "the same over an f16 KV cache:"
		prof 32 $((32 * pre)) f16 && kernels "$out/ncu-b32-f16.csv" | tee "$out/kernels-b32-f16.md"
	fi
fi

if [ "${OCTET_BENCH:-1}" = 1 ]; then
	say "octet bench --backend cuda"
	for m in "$models/tinyllama-1.1b-q8_0.gguf" "$models/smollm-135m-q8_0.gguf"; do
		"$dir/octet" bench --model "$m" --backend cuda --prompt-tokens 512 --gen-tokens 128 --batch 32 >>"$out/octet-bench.log" 2>&1 || status=1
	done
	"$dir/octet" bench --model "$tl" --backend cuda --kv-type f16 --prompt-tokens 512 --gen-tokens 128 --batch 32 >>"$out/octet-bench.log" 2>&1 || status=1
	cat "$out/octet-bench.log"
fi

say "table"
awk '
# tokps is the tok/s figure of a benchmark line; batch the B of its
# .../batch=B-N name part.
function tokps(   i) { for (i = 1; i <= NF; i++) if ($i == "tok/s") return $(i-1) }
function batch(s) { sub(/-[0-9]+$/, "", s); sub("batch=", "", s); return s }
/^BenchmarkCopyBandwidth/ { for (i = 1; i <= NF; i++) if ($i == "GB/s") bw = $(i-1) }
/^BenchmarkDecode\// {
	split($1, p, "/"); m = p[2]; b = batch(p[3])
	for (i = 1; i <= NF; i++) { if ($i == "ms/step") ms = $(i-1); if ($i == "%roofline") rf = $(i-1) }
	dec[m, b] = tokps(); step[m, b] = ms; roof[m, b] = rf; if (!(m in seen)) { seen[m] = 1; order[++n] = m }
}
/^NoPDLDecode\// { split($1, p, "/"); nopdl[p[2]] = tokps() }
/^BenchmarkPrefill\// { split($1, p, "/"); pre[p[2]] = tokps() }
/^F16Decode\// { split($1, p, "/"); f16[p[2], batch(p[3])] = tokps() }
/^F16Prefill\// { split($1, p, "/"); f16pre[p[2]] = tokps() }
/^Long-f(32|16)\// { split($1, p, "/"); long[substr(p[1], 6), batch(p[3])] = tokps() }
/^T16Decode\// { split($1, p, "/"); t16[p[2], batch(p[3])] = tokps() }
/^T16Prefill\// { split($1, p, "/"); t16pre[p[2]] = tokps() }
END {
	printf "HBM copy bandwidth (read+write, cuMemcpyDtoD 1 GiB): %s GB/s\n\n", bw
	printf "| model | decode tok/s (b=1) | ms/step | %% of copy-bandwidth roofline | b=1 without PDL | batch-8 tok/s | batch-32 tok/s | ×b=1 | prefill-512 tok/s |\n"
	printf "|---|---|---|---|---|---|---|---|---|\n"
	for (k = 1; k <= n; k++) { m = order[k]
		r = dec[m, 1] > 0 ? dec[m, 32] / dec[m, 1] : 0
		printf "| %s | %.0f | %.3f | %.1f%% | %.0f | %.0f | %.0f | %.1f× | %.0f |\n", m, dec[m, 1], step[m, 1], roof[m, 1], nopdl[m], dec[m, 8], dec[m, 32], r, pre[m]
	}
	printf "\nAn f16 KV cache (tok/s; the f32 figures above):\n\n| model | b=1 | batch-8 | batch-32 | ×b=1 | prefill-512 |\n|---|---|---|---|---|---|\n"
	for (k = 1; k <= n; k++) { m = order[k]
		r = f16[m, 1] > 0 ? f16[m, 32] / f16[m, 1] : 0
		printf "| %s | %.0f | %.0f | %.0f | %.1f× | %.0f |\n", m, f16[m, 1], f16[m, 8], f16[m, 32], r, f16pre[m]
	}
	printf "\ngemm_q8 over 16-token tiles (tok/s; the 32-token figures above):\n\n| model | batch-8 | batch-32 | batch-32 ÷ 32-token tiles | prefill-512 |\n|---|---|---|---|---|\n"
	for (k = 1; k <= n; k++) { m = order[k]
		r = dec[m, 32] > 0 ? t16[m, 32] / dec[m, 32] : 0
		printf "| %s | %.0f | %.0f | %.2f× | %.0f |\n", m, t16[m, 8], t16[m, 32], r, t16pre[m]
	}
	printf "\ntinyllama-1.1b decode after a 1024-token prompt (tok/s):\n\n| KV cache | b=1 | batch-32 | ×b=1 |\n|---|---|---|---|\n"
	for (kv = 32; kv >= 16; kv -= 16) {
		r = long["f" kv, 1] > 0 ? long["f" kv, 32] / long["f" kv, 1] : 0
		printf "| f%d | %.0f | %.0f | %.1f× |\n", kv, long["f" kv, 1], long["f" kv, 32], r
	}
}' "$out/bench.log" | tee "$out/table.md"
grep -q -- '--- FAIL' "$out/tests.log" "$out/tests-sm80.log" "$out/tests-t16.log" && status=1
if grep -q -- '--- SKIP: TestGEMVMatchesRef' "$out/tests.log"; then
	echo "no CUDA device answered: the GPU tests skipped and nothing above was measured"
	status=1
fi
echo
[ $status = 0 ] && echo "gpu-check: PASS" || echo "gpu-check: FAIL (logs in $out)"
exit $status
