/*
 * pool.c — the library's thread pool: threads-1 pthreads plus the calling
 * thread. A job runs on every thread at once (SPMD); inside a job, threads
 * meet at oc_barrier (a forward step has one every few tens of
 * microseconds).
 *
 * Waiting is in three stages: spin (about 20 µs of pause instructions),
 * then yield the CPU between checks (up to about a millisecond), then sleep
 * on a futex, so an idle runner burns no CPU. The middle stage matters on a
 * machine shared with other busy processes: when the thread everyone waits
 * for has been preempted, a spinning waiter would hold its core for its
 * whole time slice; a yielding one hands the core back. Measured on the
 * 2-vCPU development VM with other agents' builds running: a spin of 4 ms
 * before sleeping made a tinyllama decode step 10× slower with 2 threads
 * than with 1.
 *
 * Workers block every signal: the Go runtime's signals (preemption,
 * profiling) are meant for Go threads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* Pause instructions before yielding (a pause is 10-40 ns), and yields
 * before sleeping. */
#define SPIN 1000
#define YIELDS 200

struct oc_pool {
	int n;
	pthread_t *th;
	oc_job job;
	void *arg;
	_Alignas(64) _Atomic uint32_t gen; /* job generation: futex word */
	_Atomic int32_t job_sleepers;
	_Atomic int32_t quit;
	_Alignas(64) _Atomic uint32_t bar_count;
	_Alignas(64) _Atomic uint32_t bar_phase; /* futex word */
	_Atomic int32_t bar_sleepers;
	_Alignas(64) _Atomic uint32_t done;
};

struct worker_arg {
	oc_pool *p;
	int tid;
};

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *w, uint32_t val) {
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w) {
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/*
 * Work sharing for one parallel region of total items: thread t owns the
 * contiguous range [total·t/nt, total·(t+1)/nt) and takes its items in order, then takes
 * what is left of the others' ranges. A thread thus streams through one
 * contiguous stretch of a matrix (what the hardware prefetcher follows
 * best), and a thread that fell behind (preempted on a busy host) has its
 * work finished by the others. The region's counters (one per thread, each
 * on its own cache line, zeroed before the step) count the items taken
 * from each range.
 */
int64_t oc_take(_Atomic int64_t *ctr, int tid, int nt, int64_t total) {
	for (int i = 0; i < nt; i++) {
		int o = (tid + i) % nt;
		int64_t lo = total * o / nt, hi = total * (o + 1) / nt;
		_Atomic int64_t *c = ctr + o * OC_CTR_STRIDE;
		if (atomic_load_explicit(c, memory_order_relaxed) >= hi - lo)
			continue;
		int64_t k = atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
		if (k < hi - lo)
			return lo + k;
	}
	return -1;
}

void oc_barrier(oc_pool *p) {
	if (p->n <= 1)
		return;
	uint32_t ph = atomic_load_explicit(&p->bar_phase, memory_order_acquire);
	if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == (uint32_t)p->n - 1) {
		atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
		atomic_store_explicit(&p->bar_phase, ph + 1, memory_order_seq_cst);
		if (atomic_load_explicit(&p->bar_sleepers, memory_order_seq_cst) > 0)
			futex_wake(&p->bar_phase);
		return;
	}
	for (int i = 0; i < SPIN + YIELDS; i++) {
		if (atomic_load_explicit(&p->bar_phase, memory_order_acquire) != ph)
			return;
		if (i < SPIN)
			cpu_relax();
		else
			sched_yield();
	}
	atomic_fetch_add_explicit(&p->bar_sleepers, 1, memory_order_seq_cst);
	while (atomic_load_explicit(&p->bar_phase, memory_order_seq_cst) == ph)
		futex_wait(&p->bar_phase, ph);
	atomic_fetch_sub_explicit(&p->bar_sleepers, 1, memory_order_relaxed);
}

static void *worker(void *v) {
	struct worker_arg wa = *(struct worker_arg *)v;
	free(v);
	oc_pool *p = wa.p;
	uint32_t seen = 0;
	for (;;) {
		uint32_t g = seen;
		for (int i = 0; i < SPIN + YIELDS; i++) {
			g = atomic_load_explicit(&p->gen, memory_order_acquire);
			if (g != seen)
				break;
			if (i < SPIN)
				cpu_relax();
			else
				sched_yield();
		}
		if (g == seen) {
			atomic_fetch_add_explicit(&p->job_sleepers, 1, memory_order_seq_cst);
			while ((g = atomic_load_explicit(&p->gen, memory_order_seq_cst)) == seen)
				futex_wait(&p->gen, seen);
			atomic_fetch_sub_explicit(&p->job_sleepers, 1, memory_order_relaxed);
		}
		seen = g;
		if (atomic_load_explicit(&p->quit, memory_order_acquire))
			return NULL;
		p->job(p->arg, wa.tid, p->n);
		atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
	}
}

oc_pool *oc_pool_new(int threads) {
	if (threads < 1)
		threads = 1;
	if (threads > 256)
		threads = 256;
	oc_pool *p = oc_alloc(sizeof *p);
	if (!p)
		return NULL;
	p->n = threads;
	if (threads == 1)
		return p;
	p->th = calloc((size_t)threads, sizeof(pthread_t));
	if (!p->th) {
		oc_free(p);
		return NULL;
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int started = 1;
	for (int i = 1; i < threads; i++) {
		struct worker_arg *wa = malloc(sizeof *wa);
		if (!wa)
			break;
		wa->p = p;
		wa->tid = i;
		if (pthread_create(&p->th[i], NULL, worker, wa) != 0) {
			free(wa);
			break;
		}
		started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (started < threads) {
		p->n = started;
		oc_pool_free(p);
		return NULL;
	}
	return p;
}

void oc_pool_free(oc_pool *p) {
	if (!p)
		return;
	if (p->th) {
		atomic_store(&p->quit, 1);
		atomic_fetch_add(&p->gen, 1);
		futex_wake(&p->gen);
		for (int i = 1; i < p->n; i++)
			pthread_join(p->th[i], NULL);
		free(p->th);
	}
	oc_free(p);
}

int oc_pool_threads(const oc_pool *p) { return p->n; }

void oc_pool_run(oc_pool *p, oc_job job, void *arg) {
	if (p->n <= 1) {
		job(arg, 0, 1);
		return;
	}
	p->job = job;
	p->arg = arg;
	atomic_store_explicit(&p->done, 0, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&p->job_sleepers, memory_order_seq_cst) > 0)
		futex_wake(&p->gen);
	job(arg, 0, p->n);
	/* Wait for the workers to return from the job, so that the next job
	 * (or oc_pool_free) cannot overtake one still running this one. */
	for (int i = 0; atomic_load_explicit(&p->done, memory_order_acquire) != (uint32_t)p->n - 1; i++) {
		if (i < SPIN)
			cpu_relax();
		else
			sched_yield();
	}
}

/* ---- memory ---- */

void *oc_alloc(size_t bytes) {
	void *p = NULL;
	if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
		return NULL;
	memset(p, 0, bytes);
	return p;
}

void oc_free(void *p) { free(p); }

void *oc_map(size_t bytes) {
	void *p = mmap(NULL, bytes ? bytes : 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (bytes >= (2u << 20))
		madvise(p, bytes, MADV_HUGEPAGE); /* advice: fewer TLB misses on the KV cache */
	return p;
}

/* The first number in file path, or -1. */
static int64_t read_number(const char *path) {
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long long v;
	int ok = fscanf(f, "%lld", &v) == 1;
	fclose(f);
	return ok ? (int64_t)v : -1;
}

int64_t oc_memory_left(void) {
	int64_t left = -1;
	FILE *f = fopen("/proc/meminfo", "r");
	if (f) {
		char line[256];
		long long kb;
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) {
				left = (int64_t)kb * 1024;
				break;
			}
		fclose(f);
	}
	/* cgroup v2: this process's group is the "0::" line of /proc/self/cgroup */
	f = fopen("/proc/self/cgroup", "r");
	if (f) {
		char line[4096], path[4200];
		while (fgets(line, sizeof line, f)) {
			if (strncmp(line, "0::", 3) != 0)
				continue;
			line[strcspn(line, "\n")] = 0;
			snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", line + 3);
			int64_t max = read_number(path); /* "max" (no limit) reads as -1 */
			snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.current", line + 3);
			int64_t cur = read_number(path);
			if (max >= 0 && cur >= 0) {
				int64_t room = max > cur ? max - cur : 0;
				left = left < 0 || room < left ? room : left;
			}
			break;
		}
		fclose(f);
	}
	return left;
}

void oc_unmap(void *p, size_t bytes) {
	if (p)
		munmap(p, bytes ? bytes : 4096);
}

int oc_scratch_init(oc_scratch *s, int64_t kmax, int64_t ctx, int64_t group) {
	memset(s, 0, sizeof *s);
	int64_t kp = (kmax + 63) / 64 * 64;
	s->pack_bytes = oc_q8_scratch_pack_bytes(kp);
	s->rowf_n = (size_t)kp * 4;
	s->att_n = (size_t)group * (size_t)((ctx + 15) / 16 * 16) + 16;
	s->pack = oc_alloc(s->pack_bytes);
	s->rowf = oc_alloc(s->rowf_n * 4);
	s->att = oc_alloc(s->att_n * 4);
	s->qq = oc_alloc((size_t)kp);
	s->qd = oc_alloc((size_t)group * 4);
	s->qs = oc_alloc((size_t)group * 4);
	if (!s->pack || !s->rowf || !s->att || !s->qq || !s->qd || !s->qs) {
		oc_scratch_free(s);
		return OC_ERR_NOMEM;
	}
	return OC_OK;
}

void oc_scratch_free(oc_scratch *s) {
	oc_free(s->pack);
	oc_free(s->rowf);
	oc_free(s->att);
	oc_free(s->qq);
	oc_free(s->qd);
	oc_free(s->qs);
	memset(s, 0, sizeof *s);
}
