/*
 * cpucheck.c — oc_cpu_ok, compiled without the variant's instruction-set
 * flags (so that it runs on any CPU of the architecture): 1 when this CPU
 * and OS support every instruction set the variant was built with. The Go
 * side checks the same features first; this is the library's own guard.
 * The make fragment defines OC_NEED_<VARIANT>.
 */
#include <stdint.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

__attribute__((visibility("default"))) int64_t oc_cpu_ok(void) {
#if defined(OC_NEED_AVX512)
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx512f") &&
	       __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
	       __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
#elif defined(OC_NEED_AVXVNNI)
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avxvnni");
#elif defined(OC_NEED_AVX2)
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#elif defined(OC_NEED_NEON_DOTPROD)
	return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
	return 1;
#endif
}
