/*
 * Fused, multithreaded CPU kernels for the softmax family (module
 * crossentropy.kernels._ce).
 *
 * The logits are described by a data pointer and three element strides:
 * row r = o * D + d of the class-last view lives at x + o*s0 + d*s1, and its
 * class c at + c*s2.  Two layouts of work:
 *
 *   rows     class stride 1 and C > 32: one row at a time, vectorized along
 *            the row.  Max, then sum of exp, then the gradient pass, each on
 *            the cache-resident row (rows longer than `online` elements use a
 *            single-pass running max / rescaled sum instead).
 *   columns  small C or strided classes (K-dim input): a block of NB rows is
 *            copied into a [C][NB] buffer and every step is vectorized across
 *            the rows.
 *
 * exp_sum, for linear_cross_entropy's (block, rows) logits blocks, takes exp in
 * place and adds the column sums, vectorized along the rows.
 *
 * exp, expm1 (for tanh) and log are polynomials the compiler vectorizes (range
 * reduction by ln 2, Taylor polynomial on |r| <= ln2/2, 2^k from exponent
 * bits).  Sums run in the input precision over at most CE_CHUNK terms and are
 * then accumulated in double.  Threads: contiguous ranges of rows claimed by the
 * caller and persistent helpers (a pool of our own, or PyTorch's OpenMP threads;
 * see ce_parallel); the GIL is released while they run.
 *
 * This file is compiled once; its second half (CE_TYPED) is included twice
 * with REAL = float and REAL = double.
 */
#ifndef CE_TYPED

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(CE_NO_CLONES)
/* one build, best code for the CPU it runs on (resolved once at load time) */
#define CE_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define CE_ISA "x86-64-v4/x86-64-v3/x86-64 (runtime dispatch)"
#elif defined(__AVX512F__)
#define CE_HOT
#define CE_ISA "avx512f"
#elif defined(__AVX2__)
#define CE_HOT
#define CE_ISA "avx2"
#else
#define CE_HOT
#define CE_ISA "baseline"
#endif

#if defined(__GNUC__)
#define CE_INLINE static inline __attribute__((always_inline))
#else
#define CE_INLINE static inline
#endif

#define CE_PRAGMA(x) _Pragma(#x)
#define CE_SIMD CE_PRAGMA(omp simd)
#define CE_SIMD_SUM(v) CE_PRAGMA(omp simd reduction(+ : v))
#define CE_SIMD_SUM2(v, u) CE_PRAGMA(omp simd reduction(+ : v, u))
#define CE_SIMD_MAX(v) CE_PRAGMA(omp simd reduction(max : v))

#define CE_CHUNK 512           /* terms per partial sum in the input precision */
#ifndef CE_PAR_MIN
#define CE_PAR_MIN (1 << 17)   /* from this many elements: every thread asked for */
#endif
#ifndef CE_POOL_MIN
#define CE_POOL_MIN (1 << 12)  /* from this many: the pool's workers if awake */
#endif
#define CE_MAX_THREADS 256
#ifndef CE_PREFETCH
#define CE_PREFETCH 2          /* chunks ahead */
#endif

typedef struct {
    Py_ssize_t O, D, C;          /* rows r = o * D + d */
    const char *x;
    Py_ssize_t xs[3];            /* element strides of o, d, c */
    char *g;                     /* gradient (same geometry), or NULL */
    Py_ssize_t gs[3];
    char *dt;                    /* gradient for probability targets (g's strides), or NULL */
    const char *t;               /* probability targets, or NULL for class indices */
    Py_ssize_t ts[3];
    const char *y;               /* the caller's class indices, int64 or int32 (y32) */
    Py_ssize_t ys[2];            /* element strides of o, d in y */
    int y32;
    int has_ignore;              /* rows whose class is `ignore` count for nothing */
    int64_t ignore;
    int *bad;                    /* set when a class index lies outside [0, C) */
    const char *weight;          /* (C,) class weights, or NULL */
    char *loss;                  /* (R,) per-row loss, or NULL: then lsum (columns only) */
    double *lsum;                /* sum of the losses of each block of NB rows (columns) */
    double eps, zl, cap, scale;  /* label smoothing, z-loss, softcap (0: none), seed */
    double W;                    /* sum of the class weights (C without weights) */
    Py_ssize_t online;           /* exact path: rows longer than this use one pass */
    int exact;                   /* rows: only the exact path (tests compare both) */
    int stream;                  /* rows: write g with non-temporal stores */
    int copy_mode;               /* copy(): 0 memcpy, 1 plain stores, 2 non-temporal stores */
    int mode;                    /* softmax family: 0 logsumexp, 1 softmax, 2 log_softmax */
    int light;                   /* few elements: wake no sleeping worker (ce_threads_for) */
} ce_task;

typedef void (*ce_range_fn)(const ce_task *, Py_ssize_t, Py_ssize_t, int *);

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define CE_HAVE_STREAM 1
#endif
#ifndef CE_STREAM_MIN
#define CE_STREAM_MIN ((Py_ssize_t)1 << 26) /* gradients this large bypass the caches */
#endif

/* memcpy with non-temporal stores: the destination is written without being
   read first (no read-for-ownership) and without evicting the working set */
static void ce_stream(void *dst, const void *src, size_t n) {
#ifdef CE_HAVE_STREAM
    char *d = (char *)dst;
    const char *s = (const char *)src;
    while (n && ((uintptr_t)d & 15)) {
        *d++ = *s++;
        n--;
    }
    for (; n >= 64; n -= 64, d += 64, s += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    memcpy(d, s, n);
#else
    memcpy(dst, src, n);
#endif
}

static void ce_stream_done(void) {
#ifdef CE_HAVE_STREAM
    _mm_sfence();
#endif
}

static inline Py_ssize_t ce_offset(const Py_ssize_t *s, Py_ssize_t r, Py_ssize_t D) {
    if (D == 1) return r * s[0]; /* (N, C) rows: no division */
    return (r / D) * s[0] + (r % D) * s[1];
}

/* a class index outside [0, C) was read: the call fails once the threads are done */
static void ce_flag_bad(const ce_task *a) {
    if (!a->bad) return; /* a caller that checked every index itself (the XLA handler) */
#if defined(__GNUC__)
    __atomic_store_n(a->bad, 1, __ATOMIC_RELAXED);
#else
    *(volatile int *)a->bad = 1;
#endif
}

/* row r's class index, 0 for a row that does not count (*counts = 0).  The index
   is read once (volatile: another thread may be writing the caller's array) and
   range-checked where it is read, so that no value reaches memory outside the row;
   an index outside [0, C) that is not `ignore` counts for nothing and flags the call. */
static inline int64_t ce_class(const ce_task *a, Py_ssize_t r, int *counts) {
    const Py_ssize_t off = ce_offset(a->ys, r, a->D);
    const int64_t y = a->y32 ? ((const volatile int32_t *)a->y)[off]
                             : ((const volatile int64_t *)a->y)[off];
    if (a->has_ignore && y == a->ignore) {
        *counts = 0;
        return 0;
    }
    if ((uint64_t)y >= (uint64_t)a->C) { /* one compare: negative values wrap above C */
        ce_flag_bad(a);
        *counts = 0;
        return 0;
    }
    *counts = 1;
    return y;
}

/* ------------------------------------------------------------------ float */
#define CE_TYPED 1
#define REAL float
#define UINT uint32_t
#define SINT int32_t
#define SFX(name) name##_f32
#define NB 32
#define EXP_LO (-104.0f)
#define EXP_HI (89.0f)
#define EM1_LO (-30.0f)
#define MAGIC (12582912.0f)
#define LOG2E_R (1.44269504088896341f)
#define LN2_HI_R (0.693359375f)
#define LN2_LO_R (-2.12194440e-4f)
#define BIAS 127u
#define MANT 23
#define FLUSH (-87.3f)
#define RL 64
#define SHORT_VL 16
#define SHORT_C 4096
#define FCH 1024
#define FMAXCHUNKS 128
#include "_ce.c" /* this file, second half */
#undef REAL
#undef UINT
#undef SINT
#undef SFX
#undef NB
#undef EXP_LO
#undef EXP_HI
#undef EM1_LO
#undef MAGIC
#undef LOG2E_R
#undef LN2_HI_R
#undef LN2_LO_R
#undef BIAS
#undef MANT
#undef FLUSH
#undef RL
#undef SHORT_VL
#undef SHORT_C
#undef FCH
#undef FMAXCHUNKS
#define REAL double
#define UINT uint64_t
#define SINT int64_t
#define SFX(name) name##_f64
#define NB 16
#define EXP_LO (-746.0)
#define EXP_HI (710.0)
#define EM1_LO (-60.0)
#define MAGIC (6755399441055744.0)
#define LOG2E_R (1.4426950408889634074)
#define LN2_HI_R (6.93147180369123816490e-01)
#define LN2_LO_R (1.90821492927058770002e-10)
#define BIAS 1023u
#define MANT 52
#define FLUSH (-708.0)
#define RL 32
#define SHORT_VL 8
#define SHORT_C 2048
#define FCH 1024
#define FMAXCHUNKS 64
#define CE_DOUBLE 1
#include "_ce.c" /* this file, second half */
#undef CE_TYPED

/* ------------------------------------------------------------- threading */

static int ce_default_threads(void) {
#ifndef _WIN32
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#else
    return 1;
#endif
}

#if !defined(_WIN32) && defined(__GNUC__)
#define CE_HAVE_POOL 1
/* A persistent pool of worker threads, so that a call of a few microseconds can
   use more than one core (starting a thread costs ~60 us).  One caller at a time
   owns it (`busy`); a call that finds it owned runs on its own thread.  Without
   GCC's atomics (or on Windows) every call runs on the calling thread.

   A call is split into `parts` contiguous ranges; the caller and the workers
   claim them one at a time from `word` (generation << 32 | parts << 16 | next
   part) by compare-and-swap, so the caller works from the start and finishes
   the parts no worker claimed in time: a worker that is asleep or descheduled
   delays nothing but its own claimed part.  A claim succeeds only while the
   generation is the caller's and parts remain, so the task's fields (written
   before the generation is published) are those of the live call, and a late
   worker of an earlier generation claims nothing.  `seats` caps the workers
   of a call at the threads it asked for.

   After its last part a worker spins for CE_POOL_SPIN_NS (yielding the core to
   any other runnable thread), then sleeps on a condition variable.  Waking one
   costs the caller ~8 us (a futex wake; an inter-processor interrupt), more
   than a light call (a->light: fewer than CE_PAR_MIN elements) takes, so a
   light call wakes sleepers only if the previous call came less than the spin
   time ago (a burst of calls, which keeps them awake from then on); otherwise
   it runs with the workers that are awake, or alone.  Workers block the
   asynchronous signals (Python handles them on the main thread).  A forked child
   starts with no workers and never uses libgomp (pthread_atfork, registered when
   the module loads).  Known and harmless: a worker that read a generation and
   was descheduled may take a seat of the next call, which then runs without it. */
#ifndef CE_POOL_SPIN_NS
#define CE_POOL_SPIN_NS 100000
#endif
#define CE_POOL_PARTS_PER_THREAD 4
#define CE_POOL_MAX_PARTS (CE_MAX_THREADS * CE_POOL_PARTS_PER_THREAD)

static struct {
    pthread_mutex_t lock; /* guards sleeping, starting workers and the condition */
    pthread_cond_t wake;
    int workers;          /* started (under lock) */
    int busy;             /* atomic: a caller owns the pool */
    int sleepers;         /* atomic: workers waiting on `wake` */
    uint64_t word;        /* atomic: generation << 32 | parts << 16 | next part */
    int seats;            /* atomic: workers that joined the current call */
    int max_seats;        /* the workers the current call may use */
    const ce_task *a;     /* the current call (fields written before publishing) */
    ce_range_fn fn;
    Py_ssize_t n;
    int done;             /* atomic: parts finished */
    int failed;           /* atomic: a part failed */
    uint64_t last_ns;     /* when the last call started (owner only) */
    int atfork;           /* the fork handler is registered */
} ce_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

#define CE_LOAD(p) __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define CE_STORE(p, v) __atomic_store_n(p, v, __ATOMIC_RELEASE)
#define CE_ADD(p, v) __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL)

static inline void ce_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* the CPUs this process may run on, read once (sysconf reads a file) */
static int ce_cpus(void) {
    static int cpus;
    int n = __atomic_load_n(&cpus, __ATOMIC_RELAXED);
    if (!n) {
        n = ce_default_threads();
#if defined(__linux__)
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) n = CPU_COUNT(&set);
#endif
        __atomic_store_n(&cpus, n, __ATOMIC_RELAXED);
    }
    return n;
}

static uint64_t ce_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* claim and run parts of generation `gen` until none is left; returns at once
   if the pool has moved to another generation */
static void ce_pool_claim(uint32_t gen) {
    uint64_t w = CE_LOAD(&ce_pool.word);
    for (;;) {
        const uint32_t parts = (uint32_t)(w >> 16) & 0xffff, k = (uint32_t)w & 0xffff;
        if ((uint32_t)(w >> 32) != gen || k >= parts) return;
        if (!__atomic_compare_exchange_n(&ce_pool.word, &w, w + 1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue; /* w now holds the current word */
        /* part k is ours: the call cannot finish before it, so its fields stay */
        const Py_ssize_t n = ce_pool.n;
        const Py_ssize_t lo = (Py_ssize_t)((double)n * k / parts);
        const Py_ssize_t hi = k + 1 == parts ? n : (Py_ssize_t)((double)n * (k + 1) / parts);
        int failed = 0;
        ce_pool.fn(ce_pool.a, lo, hi, &failed);
        if (failed) __atomic_store_n(&ce_pool.failed, 1, __ATOMIC_RELAXED);
        CE_ADD(&ce_pool.done, 1);
        w = CE_LOAD(&ce_pool.word);
    }
}

static void *ce_pool_worker(void *arg) {
    uint32_t seen = (uint32_t)(uintptr_t)arg; /* the generation when it was started */
    for (;;) {
        uint64_t w = CE_LOAD(&ce_pool.word);
        if ((uint32_t)(w >> 32) == seen) { /* nothing new: spin a while, then sleep */
            const uint64_t until = ce_now_ns() + CE_POOL_SPIN_NS;
            for (int i = 1;; i++) {
                ce_relax();
                w = CE_LOAD(&ce_pool.word);
                if ((uint32_t)(w >> 32) != seen) break;
                if (i & 63) continue;
                sched_yield(); /* another thread runnable on this core goes first */
                if (ce_now_ns() > until) {
                    pthread_mutex_lock(&ce_pool.lock);
                    CE_ADD(&ce_pool.sleepers, 1);
                    while ((uint32_t)((w = __atomic_load_n(&ce_pool.word, __ATOMIC_SEQ_CST)) >>
                                      32) == seen)
                        pthread_cond_wait(&ce_pool.wake, &ce_pool.lock);
                    CE_ADD(&ce_pool.sleepers, -1);
                    pthread_mutex_unlock(&ce_pool.lock);
                    break;
                }
            }
        }
        seen = (uint32_t)(w >> 32);
        if (CE_ADD(&ce_pool.seats, 1) <= CE_LOAD(&ce_pool.max_seats)) ce_pool_claim(seen);
    }
    return NULL;
}

/* libgomp's GOMP_parallel (what `#pragma omp parallel` calls), once
   ce_openmp_attach() found it loaded: PyTorch's OpenMP runtime, whose threads
   run PyTorch's own operations.  With it, a call runs on those threads (and
   finds them awake between PyTorch's operations) instead of adding threads of
   its own that would compete with them for the cores.  Not in a forked child
   (libgomp's threads do not survive fork). */
typedef void (*ce_gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*ce_omp_max_fn)(void);
static ce_gomp_parallel_fn ce_gomp;
static ce_omp_max_fn ce_omp_max; /* omp_get_max_threads: PyTorch's set_num_threads */
static int ce_forked;
#ifndef CE_GOMP_HOT_NS
/* a light call uses OpenMP this soon after the previous call: libgomp's threads spin
   for milliseconds after a parallel region (measured here: 256 x 100 on two threads
   still 0.65 of one at 3 ms between calls, 2.6 times at 10 ms) */
#define CE_GOMP_HOT_NS 1000000
#endif
#ifndef CE_GOMP_MIN
#define CE_GOMP_MIN (1 << 14)
#endif

static void ce_pool_after_fork(void) { /* the child has the caller's thread only */
    ce_forked = 1;
    ce_gomp = NULL;
    ce_omp_max = NULL;
    pthread_mutex_init(&ce_pool.lock, NULL);
    pthread_cond_init(&ce_pool.wake, NULL);
    ce_pool.workers = 0;
    ce_pool.busy = 0;
    ce_pool.sleepers = 0;
}

/* start workers up to `want`, at most one fewer than the CPUs (more would only
   take turns on them); returns how many there are */
static int ce_pool_grow(int want) {
    pthread_mutex_lock(&ce_pool.lock);
    if (want > ce_cpus() - 1) want = ce_cpus() - 1;
    if (ce_pool.atfork && ce_pool.workers < want) {
        sigset_t all, old;
        sigfillset(&all);
        /* a fault in a worker must reach faulthandler / the default action, not be blocked */
        const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};
        for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) sigdelset(&all, faults[i]);
        pthread_sigmask(SIG_SETMASK, &all, &old); /* the workers inherit the full mask */
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const uint32_t gen = (uint32_t)(CE_LOAD(&ce_pool.word) >> 32);
        while (ce_pool.workers < want) {
            pthread_t tid;
            if (pthread_create(&tid, &attr, ce_pool_worker, (void *)(uintptr_t)gen)) break;
            ce_pool.workers++;
        }
        pthread_attr_destroy(&attr);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    const int workers = ce_pool.workers;
    pthread_mutex_unlock(&ce_pool.lock);
    return workers;
}

/* the fork handler, registered when the module loads: a child of a process that
   used the kernels (or libgomp) must know it was forked before its first call */
static void ce_pool_init(void) {
    pthread_mutex_lock(&ce_pool.lock);
    if (!ce_pool.atfork) ce_pool.atfork = pthread_atfork(NULL, NULL, ce_pool_after_fork) == 0;
    pthread_mutex_unlock(&ce_pool.lock);
}

static void ce_openmp_attach(void) {
    pthread_mutex_lock(&ce_pool.lock);
    if (ce_pool.atfork && !ce_forked && !ce_gomp) {
        ce_omp_max = (ce_omp_max_fn)dlsym(RTLD_DEFAULT, "omp_get_max_threads");
        if (ce_omp_max)
            __atomic_store_n(&ce_gomp, (ce_gomp_parallel_fn)dlsym(RTLD_DEFAULT, "GOMP_parallel"),
                             __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&ce_pool.lock);
}

typedef struct {
    const ce_task *a;
    ce_range_fn fn;
    Py_ssize_t n;
    int parts, next, failed;
} ce_team;

static void ce_team_run(void *p) { /* every thread of the OpenMP team */
    ce_team *t = (ce_team *)p;
    for (;;) {
        const int k = __atomic_fetch_add(&t->next, 1, __ATOMIC_RELAXED);
        if (k >= t->parts) return;
        const Py_ssize_t lo = (Py_ssize_t)((double)t->n * k / t->parts);
        const Py_ssize_t hi = k + 1 == t->parts ? t->n : (Py_ssize_t)((double)t->n * (k + 1) / t->parts);
        int failed = 0;
        t->fn(t->a, lo, hi, &failed);
        if (failed) __atomic_store_n(&t->failed, 1, __ATOMIC_RELAXED);
    }
}

static uint64_t ce_gomp_last_ns; /* when the last call on OpenMP started */

/* fn over [0, n) on libgomp's threads; -1 if not (no libgomp, PyTorch's threads
   set to one, or a light call while its threads have likely gone to sleep) */
static int ce_gomp_run(const ce_task *a, Py_ssize_t n, int nthreads, ce_range_fn fn) {
    const ce_gomp_parallel_fn gomp = __atomic_load_n(&ce_gomp, __ATOMIC_ACQUIRE);
    if (!gomp) return -1;
    /* no more threads than PyTorch's own (torch.set_num_threads; 1 in a DataLoader
       worker, a forked child whose libgomp threads are gone) */
    const int omp = ce_omp_max();
    if (omp < 2) return -1;
    if (nthreads > omp) nthreads = omp;
    const uint64_t now = ce_now_ns();
    const uint64_t last = __atomic_exchange_n(&ce_gomp_last_ns, now, __ATOMIC_RELAXED);
    if (a->light && now - last >= CE_GOMP_HOT_NS) return -1;
    Py_ssize_t parts = (Py_ssize_t)nthreads * CE_POOL_PARTS_PER_THREAD;
    if (parts > n) parts = n;
    if (parts > CE_POOL_MAX_PARTS) parts = CE_POOL_MAX_PARTS;
    ce_team t = {a, fn, n, (int)parts, 0, 0};
    gomp(ce_team_run, &t, (unsigned)(nthreads < ce_cpus() ? nthreads : ce_cpus()), 0);
    return t.failed;
}

static int ce_gomp_attached(void) {
    return __atomic_load_n(&ce_gomp, __ATOMIC_RELAXED) != NULL;
}

/* run fn over [0, n) on the caller and up to nthreads - 1 workers; returns -1
   (nothing run) if another caller owns the pool or no worker could start,
   else nonzero if a part failed */
static int ce_pool_run(const ce_task *a, Py_ssize_t n, int nthreads, ce_range_fn fn) {
    int expected = 0;
    if (!__atomic_compare_exchange_n(&ce_pool.busy, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
        return -1;
    if (ce_pool_grow(nthreads - 1) < 1) {
        CE_STORE(&ce_pool.busy, 0);
        return -1;
    }
    Py_ssize_t parts = (Py_ssize_t)nthreads * CE_POOL_PARTS_PER_THREAD;
    if (parts > n) parts = n;
    if (parts > CE_POOL_MAX_PARTS) parts = CE_POOL_MAX_PARTS;
    ce_pool.a = a;
    ce_pool.fn = fn;
    ce_pool.n = n;
    ce_pool.done = 0;
    ce_pool.failed = 0;
    CE_STORE(&ce_pool.max_seats, nthreads - 1);
    CE_STORE(&ce_pool.seats, 0);
    const uint32_t gen = (uint32_t)(CE_LOAD(&ce_pool.word) >> 32) + 1;
    __atomic_store_n(&ce_pool.word, (uint64_t)gen << 32 | (uint64_t)parts << 16, __ATOMIC_SEQ_CST);
    const uint64_t now = ce_now_ns(), since = now - ce_pool.last_ns;
    ce_pool.last_ns = now;
    if (__atomic_load_n(&ce_pool.sleepers, __ATOMIC_SEQ_CST) &&
        (!a->light || since < CE_POOL_SPIN_NS)) {
        pthread_mutex_lock(&ce_pool.lock);
        pthread_cond_broadcast(&ce_pool.wake);
        pthread_mutex_unlock(&ce_pool.lock);
    }
    ce_pool_claim(gen);
    for (unsigned i = 1; CE_LOAD(&ce_pool.done) < parts; i++) {
        ce_relax();
        if (!(i & 1023)) sched_yield(); /* a descheduled worker may need this core */
    }
    const int failed = __atomic_load_n(&ce_pool.failed, __ATOMIC_RELAXED);
    CE_STORE(&ce_pool.busy, 0);
    return failed;
}
#endif

/* fn over [0, n): on the calling thread and helpers (ce_gomp_run, ce_pool_run) for
   nthreads > 1, else on the calling thread; nonzero if a part failed */
static int ce_parallel(const ce_task *a, Py_ssize_t n, int nthreads, ce_range_fn fn) {
    if (nthreads < 1) nthreads = ce_default_threads();
    if (nthreads > CE_MAX_THREADS) nthreads = CE_MAX_THREADS;
#ifdef CE_HAVE_POOL
    if (nthreads > 1 && n > 1) {
        int failed = ce_gomp_run(a, n, nthreads, fn);
        if (failed < 0 && !ce_gomp_attached()) failed = ce_pool_run(a, n, nthreads, fn);
        if (failed >= 0) return failed;
        /* OpenMP limited to one thread, a light call while its threads sleep, or the
           pool owned by another caller (which is using the cores): this thread alone */
    }
#endif
    int failed = 0;
    fn(a, 0, n, &failed);
    return failed;
}

/* the threads for a call of `elements` elements: one below CE_POOL_MIN (or
   CE_GOMP_MIN on OpenMP, whose parallel region costs ~3 us more); below
   CE_PAR_MIN a light call (threads that are awake) */
static int ce_threads_for(ce_task *a, Py_ssize_t elements, int nthreads) {
#ifdef CE_HAVE_POOL
    a->light = elements < CE_PAR_MIN;
    return elements < (ce_gomp_attached() ? CE_GOMP_MIN : CE_POOL_MIN) ? 1 : nthreads;
#else
    (void)a;
    return elements < CE_PAR_MIN ? 1 : nthreads;
#endif
}

/* ---------------------------------------------------------- Python entry */

#define PTR(v) ((void *)(uintptr_t)(v))

/* the rows kernel's mode from a->online as the caller gave it: 0 the default, -n the
   exact path only, with one-pass statistics for rows longer than n */
static void ce_row_mode(ce_task *a, int dtype) {
    a->exact = a->online < 0;
    if (a->online < 0) a->online = -a->online;
    if (a->online == 0) a->online = dtype ? (1 << 17) : (1 << 18);
}

static const char cross_entropy_doc[] =
    "cross_entropy(dtype, O, D, C, x, xs0, xs1, xs2, g, gs0, gs1, gs2, t, ts0, ts1, ts2,\n"
    "              y, ys0, ys1, y32, ignore, has_ignore, weight, loss, lsum, eps, z_loss,\n"
    "              softcap, scale, online, columns, nthreads, dt, flags=0)\n\n"
    "Per-row loss (and the gradient scaled by `scale` when g != 0) of cross-entropy on\n"
    "raw pointers; dtype 0 is float32, 1 float64.  Strides are in elements.  Class\n"
    "indices y (t == 0) are int64, or int32 if y32, in [0, C) or equal to ignore (when\n"
    "has_ignore); each is range-checked where it is read, and a row whose index is out\n"
    "of range counts for nothing.  Returns 1 if there was such a row, else 0.  Rows\n"
    "that do not count get a loss and a gradient of 0.  loss receives the R per-row losses;\n"
    "with loss == 0 (columns only) lsum receives the sum of each block of 32 rows\n"
    "(16 in float64) in double.  online:\n"
    "0 for the default; a negative value -n selects the exact row path only, with\n"
    "one-pass statistics for rows longer than n.  dt: the gradient with respect to\n"
    "probability targets (g's strides), or 0.  flags & 1: g is a reused buffer (large\n"
    "gradients then bypass the caches; a fresh buffer's pages are in cache already).";

static PyObject *py_cross_entropy(PyObject *self, PyObject *args) {
    int dtype, columns, nthreads;
    Py_ssize_t x, g, t, y, weight, loss, lsum, dt;
    long long ignore;
    ce_task a;
    memset(&a, 0, sizeof a);
    int flags = 0, bad = 0;
    a.bad = &bad;
    if (!PyArg_ParseTuple(args, "innnnnnnnnnnnnnnnnniLinnnddddniin|i", &dtype, &a.O, &a.D, &a.C,
                          &x, &a.xs[0], &a.xs[1], &a.xs[2], &g, &a.gs[0], &a.gs[1], &a.gs[2], &t,
                          &a.ts[0], &a.ts[1], &a.ts[2], &y, &a.ys[0], &a.ys[1], &a.y32, &ignore,
                          &a.has_ignore, &weight, &loss, &lsum, &a.eps, &a.zl, &a.cap, &a.scale,
                          &a.online, &columns, &nthreads, &dt, &flags))
        return NULL;
    if (dtype != 0 && dtype != 1) {
        PyErr_SetString(PyExc_ValueError, "dtype must be 0 (float32) or 1 (float64)");
        return NULL;
    }
    if (a.O < 0 || a.D < 1 || a.C < 1 || !x || !(loss || (columns && lsum)) || (!t && !y)) {
        PyErr_SetString(PyExc_ValueError, "cross_entropy: invalid geometry or null pointer");
        return NULL;
    }
    a.x = PTR(x);
    a.g = PTR(g);
    a.dt = PTR(dt);
    a.t = PTR(t);
    a.y = PTR(y);
    a.ignore = (int64_t)ignore;
    a.weight = PTR(weight);
    a.loss = PTR(loss);
    a.lsum = PTR(lsum);
    ce_row_mode(&a, dtype);
    a.W = (double)a.C;
    if (a.weight) {
        double W = 0;
        for (Py_ssize_t c = 0; c < a.C; c++)
            W += dtype ? ((const double *)a.weight)[c] : (double)((const float *)a.weight)[c];
        a.W = W;
    }
    Py_ssize_t R = a.O * a.D;
    int nt = ce_threads_for(&a, R * a.C, nthreads);
    int failed = 0;
#ifdef CE_HAVE_STREAM
    a.stream = (flags & 1) && a.g && a.g != a.x && R * a.C * (dtype ? 8 : 4) >= CE_STREAM_MIN;
#endif
    Py_BEGIN_ALLOW_THREADS
    if (columns) {
        Py_ssize_t nb = dtype ? 16 : 32;
        failed = ce_parallel(&a, (R + nb - 1) / nb, nt, dtype ? ce_cols_f64 : ce_cols_f32);
    } else {
        failed = ce_parallel(&a, R, nt, dtype ? ce_rows_f64 : ce_rows_f32);
    }
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    return PyLong_FromLong(bad);
}

static const char target_weight_sum_doc[] =
    "target_weight_sum(dtype, O, D, C, y, ys0, ys1, y32, ignore, has_ignore, weight)\n\n"
    "(sum, bad): the denominator of the weighted mean, the sum in double of weight[y]\n"
    "over the rows that count (their number without weight), and 1 if a class index\n"
    "outside [0, C) was met (0 otherwise); y and the flags as for cross_entropy,\n"
    "weight (C,) of the dtype (0 or 1) or 0.";

static PyObject *py_target_weight_sum(PyObject *self, PyObject *args) {
    int dtype;
    Py_ssize_t y, weight;
    long long ignore;
    ce_task a;
    memset(&a, 0, sizeof a);
    int bad = 0;
    a.bad = &bad;
    if (!PyArg_ParseTuple(args, "innnnnniLin", &dtype, &a.O, &a.D, &a.C, &y, &a.ys[0], &a.ys[1],
                          &a.y32, &ignore, &a.has_ignore, &weight))
        return NULL;
    if ((dtype != 0 && dtype != 1) || a.O < 0 || a.D < 1 || a.C < 1 || !y) {
        PyErr_SetString(PyExc_ValueError, "target_weight_sum: invalid arguments");
        return NULL;
    }
    a.y = PTR(y);
    a.ignore = (int64_t)ignore;
    const float *w32 = PTR(weight);
    const double *w64 = PTR(weight);
    double sum = 0;
    for (Py_ssize_t r = 0, R = a.O * a.D; r < R; r++) {
        int counts;
        const int64_t c = ce_class(&a, r, &counts);
        if (counts) sum += !weight ? 1.0 : dtype ? w64[c] : (double)w32[c];
    }
    return Py_BuildValue("(di)", sum, bad);
}

static const char quick_doc[] =
    "quick(dtype, N, C, x, y, y32, ignore, reduction, eps, z_loss, softcap, g, loss,\n"
    "      columns, nthreads, probe, online)\n\n"
    "The common call of cross-entropy in one step: (N, C) C-contiguous logits x of\n"
    "dtype 0 (float32) or 1 (float64), N C-contiguous class indices y (int64, or\n"
    "int32 if y32), no class weights; reduction 0 'mean', 1 'sum', 2 'none' (the N\n"
    "per-row losses written to loss); rows whose index is ignore count for nothing.\n"
    "g: the gradient of the reduced loss, or 0.  "
    "Every class index is read first: one outside [0, C) that is not ignore declines\n"
    "the call before anything is written.  probe > 0: the first row is checked for\n"
    "looking like probabilities (its first 16 values in [0, 1], its sum within probe\n"
    "of 1).  Returns (total, status): the reduced loss (0.0 for 'none'; NaN for the\n"
    "mean of no rows) and status bits 1 declined, 2 the first row looks like\n"
    "probabilities, 4 a class index changed while computing (another thread).  columns,\n"
    "nthreads and online as for cross_entropy.";

/* 1 if the first row of (., C) logits may be probabilities: its first 16 values
   lie in [0, 1] (NaN does not) and it sums to 1 within tol */
static int ce_probe_row(int dtype, const void *x, Py_ssize_t C, double tol) {
    double sum = 0;
    for (Py_ssize_t c = 0; c < C; c++) {
        const double v = dtype ? ((const double *)x)[c] : (double)((const float *)x)[c];
        if (c < 16 && !(v >= 0 && v <= 1)) return 0;
        sum += v;
    }
    return !(fabs(sum - 1) > tol);
}

static PyObject *py_quick(PyObject *self, PyObject *args) {
    int dtype, reduction, columns, nthreads;
    Py_ssize_t N, x, y, g, loss;
    long long ignore;
    double probe;
    ce_task a;
    memset(&a, 0, sizeof a);
    int bad = 0;
    if (!PyArg_ParseTuple(args, "innnniLidddnniidn", &dtype, &N, &a.C, &x, &y, &a.y32, &ignore,
                          &reduction, &a.eps, &a.zl, &a.cap, &g, &loss, &columns, &nthreads,
                          &probe, &a.online))
        return NULL;
    if ((dtype != 0 && dtype != 1) || N < 1 || a.C < 1 || !x || !y || reduction < 0 ||
        reduction > 2 || (reduction == 2 && !loss) || (reduction != 2 && loss)) {
        PyErr_SetString(PyExc_ValueError, "quick: invalid geometry, reduction or null pointer");
        return NULL;
    }
    a.O = N;
    a.D = 1;
    a.xs[0] = a.gs[0] = a.C;
    a.xs[2] = a.gs[2] = 1;
    a.ys[0] = 1;
    a.x = PTR(x);
    a.g = PTR(g);
    a.y = PTR(y);
    a.ignore = (int64_t)ignore;
    a.has_ignore = 1; /* PyTorch: any value, in range or not (-100) */
    a.W = (double)a.C;
    ce_row_mode(&a, dtype);
    if (columns) { /* the columns kernel reads (O, D) = (1, N): rows along d */
        a.O = 1;
        a.D = N;
        a.xs[0] = a.gs[0] = 0;
        a.xs[1] = a.gs[1] = a.C;
        a.ys[0] = N;
        a.ys[1] = 1;
    }
    const Py_ssize_t nb = dtype ? 16 : 32, blocks = (N + nb - 1) / nb;
    const size_t size = dtype ? sizeof(double) : sizeof(float);
    double total = 0, denom = 0;
    int status = 0, failed = 0;
    a.bad = &bad;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < N; r++) { /* every index first: a bad one declines the call */
        int counts;
        ce_class(&a, r, &counts);
        denom += counts;
    }
    if (bad) {
        status = 1;
    } else {
        if (probe > 0 && a.C > 1 && ce_probe_row(dtype, a.x, a.C, probe)) status |= 2;
        a.scale = reduction != 0 ? 1.0 : denom ? 1.0 / denom : 0.0;
        void *sums = NULL; /* the per-row losses (rows) or block sums (columns) to add up */
        if (reduction == 2) {
            a.loss = PTR(loss);
        } else if (columns) {
            sums = malloc((size_t)blocks * sizeof(double));
            a.lsum = (double *)sums;
        } else {
            sums = malloc((size_t)N * size);
            a.loss = (char *)sums;
        }
        if (reduction != 2 && !sums) {
            failed = 1;
        } else {
            const int nt = ce_threads_for(&a, N * a.C, nthreads);
            if (columns)
                failed = ce_parallel(&a, blocks, nt, dtype ? ce_cols_f64 : ce_cols_f32);
            else
                failed = ce_parallel(&a, N, nt, dtype ? ce_rows_f64 : ce_rows_f32);
        }
        if (bad) status |= 4;
        if (!failed && sums) {
            if (columns)
                for (Py_ssize_t k = 0; k < blocks; k++) total += a.lsum[k];
            else if (dtype)
                for (Py_ssize_t r = 0; r < N; r++) total += ((const double *)sums)[r];
            else
                for (Py_ssize_t r = 0; r < N; r++) total += (double)((const float *)sums)[r];
            if (reduction == 0) total = denom ? total / denom : NAN;
        }
        free(sums);
    }
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    return Py_BuildValue("(di)", total, status);
}

static const char softmax_doc[] =
    "softmax(dtype, O, D, C, x, xs0, xs1, xs2, out, os0, os1, os2, lse, mode, nthreads)\n\n"
    "Row-wise logsumexp into `lse` (R values) and, for mode 1 (softmax) or 2\n"
    "(log_softmax), the rows into `out`; class stride 1 for x and out.";

static PyObject *py_softmax(PyObject *self, PyObject *args) {
    int dtype, nthreads;
    Py_ssize_t x, out, lse;
    ce_task a;
    memset(&a, 0, sizeof a);
    if (!PyArg_ParseTuple(args, "innnnnnnnnnnnii", &dtype, &a.O, &a.D, &a.C, &x, &a.xs[0],
                          &a.xs[1], &a.xs[2], &out, &a.gs[0], &a.gs[1], &a.gs[2], &lse, &a.mode,
                          &nthreads))
        return NULL;
    if ((dtype != 0 && dtype != 1) || a.O < 0 || a.D < 1 || a.C < 1 || !x || !lse ||
        a.xs[2] != 1 || (out && a.gs[2] != 1) || (a.mode && !out)) {
        PyErr_SetString(PyExc_ValueError, "softmax: invalid arguments");
        return NULL;
    }
    a.x = PTR(x);
    a.g = PTR(out);
    a.loss = PTR(lse);
    a.online = dtype ? (1 << 17) : (1 << 18);
    Py_ssize_t R = a.O * a.D;
    int nt = ce_threads_for(&a, R * a.C, nthreads);
    Py_BEGIN_ALLOW_THREADS
    ce_parallel(&a, R, nt, dtype ? ce_softmax_rows_f64 : ce_softmax_rows_f32);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static const char exp_sum_doc[] =
    "exp_sum(dtype, rows, cols, x, ld, sums, nthreads)\n\n"
    "In place exp of a (rows, cols) block (row stride ld elements, columns contiguous)\n"
    "and each column's sum added into sums (cols values of the same dtype): the\n"
    "logits blocks of linear_cross_entropy.  Threads take contiguous ranges of columns\n"
    "(one thread below 2**22 entries).";

/* A block just written by a GEMM is in cache, and the BLAS threads are still
   spinning: below this many entries one thread is faster than two (measured:
   a 4096 x 224 float32 block took 0.44 ms on one thread, 0.64 ms on two). */
#ifndef CE_EXP_PAR_MIN
#define CE_EXP_PAR_MIN ((Py_ssize_t)1 << 22)
#endif

static PyObject *py_exp_sum(PyObject *self, PyObject *args) {
    int dtype, nthreads;
    Py_ssize_t x, sums;
    ce_task a;
    memset(&a, 0, sizeof a);
    if (!PyArg_ParseTuple(args, "innnnni", &dtype, &a.O, &a.C, &x, &a.xs[0], &sums, &nthreads))
        return NULL;
    if ((dtype != 0 && dtype != 1) || a.O < 0 || a.C < 0 || a.xs[0] < a.C || !x || !sums) {
        PyErr_SetString(PyExc_ValueError, "exp_sum: invalid arguments");
        return NULL;
    }
    if (a.O == 0 || a.C == 0) Py_RETURN_NONE;
    a.g = PTR(x);
    a.loss = PTR(sums);
    const Py_ssize_t unit = dtype ? 8 : 16; /* columns per 64-byte line */
    int nt = a.O * a.C < CE_EXP_PAR_MIN ? 1 : nthreads;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    failed = ce_parallel(&a, (a.C + unit - 1) / unit, nt, dtype ? ce_exp_sum_f64 : ce_exp_sum_f32);
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static void ce_copy_range(const ce_task *a, Py_ssize_t lo, Py_ssize_t hi, int *failed) {
    (void)failed;
    if (a->g) {
        char *d = a->g + lo * 4096;
        const char *s = a->x + lo * 4096;
        const size_t n = (size_t)((hi - lo) * 4096);
        if (a->copy_mode == 2) {
            ce_stream(d, s, n);
            ce_stream_done();
        } else if (a->copy_mode == 1) {
            float *df = (float *)d; /* + 0.0f keeps the loop a loop (not a memcpy call) */
            const float *sf = (const float *)s;
            CE_SIMD
            for (size_t i = 0; i < n / 4; i++) df[i] = sf[i] + 0.0f;
        } else {
            memcpy(d, s, n);
        }
        return;
    }
    /* read only: sum the words so that nothing is optimised away */
    const uint64_t *p = (const uint64_t *)(a->x + lo * 4096);
    const Py_ssize_t n = (hi - lo) * 512;
    uint64_t acc[8] = {0};
    for (Py_ssize_t i = 0; i + 8 <= n; i += 8) {
#if defined(__GNUC__)
        __builtin_prefetch(p + i + 1024, 0, 3); /* two pages ahead, as the kernels do */
#endif
        for (int j = 0; j < 8; j++) acc[j] += p[i + j];
    }
    uint64_t total = 0;
    for (int j = 0; j < 8; j++) total += acc[j];
    *failed = total == 0x9e3779b97f4a7c15ull; /* practically never: keeps the sum live */
}

static const char copy_doc[] =
    "copy(src, dst, nbytes, nthreads, mode=0)\n\n"
    "A copy split over threads, as the kernels split their work: the time of one\n"
    "pass that reads a buffer and writes another of the same size (dst 0: read\n"
    "only).  mode 0: memcpy, 1: plain stores, 2: non-temporal stores.";

static PyObject *py_copy(PyObject *self, PyObject *args) {
    Py_ssize_t src, dst, nbytes;
    int nthreads;
    ce_task a;
    memset(&a, 0, sizeof a);
    if (!PyArg_ParseTuple(args, "nnni|i", &src, &dst, &nbytes, &nthreads, &a.copy_mode)) return NULL;
    if (nbytes < 0 || !src) {
        PyErr_SetString(PyExc_ValueError, "copy: invalid arguments");
        return NULL;
    }
    a.x = PTR(src);
    a.g = PTR(dst);
    Py_ssize_t pages = nbytes / 4096;
    Py_BEGIN_ALLOW_THREADS
    if (pages) ce_parallel(&a, pages, nthreads, ce_copy_range);
    if (a.g) memcpy(a.g + pages * 4096, a.x + pages * 4096, (size_t)(nbytes - pages * 4096));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static const char use_openmp_doc[] =
    "use_openmp()\n\n"
    "Run the kernels' threads on the OpenMP runtime already loaded in the process\n"
    "(PyTorch's), if any; returns True if they do.";

static PyObject *py_use_openmp(PyObject *self, PyObject *noargs) {
#ifdef CE_HAVE_POOL
    ce_openmp_attach();
    return PyBool_FromLong(ce_gomp_attached());
#else
    Py_RETURN_FALSE;
#endif
}

static PyObject *py_info(PyObject *self, PyObject *noargs) {
#ifdef CE_HAVE_POOL
    const char *pool = ce_gomp_attached() ? "openmp" : "own";
#else
    const char *pool = "per call";
#endif
    return Py_BuildValue("{s:s,s:i,s:s}", "isa", CE_ISA, "cpus", ce_default_threads(), "thread pool",
                         pool);
}

static PyMethodDef ce_methods[] = {
    {"use_openmp", py_use_openmp, METH_NOARGS, use_openmp_doc},
    {"cross_entropy", py_cross_entropy, METH_VARARGS, cross_entropy_doc},
    {"target_weight_sum", py_target_weight_sum, METH_VARARGS, target_weight_sum_doc},
    {"quick", py_quick, METH_VARARGS, quick_doc},
    {"softmax", py_softmax, METH_VARARGS, softmax_doc},
    {"exp_sum", py_exp_sum, METH_VARARGS, exp_sum_doc},
    {"copy", py_copy, METH_VARARGS, copy_doc},
    {"info", py_info, METH_NOARGS, "Build information: instruction sets, CPUs online."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ce_module = {
    PyModuleDef_HEAD_INIT, "_ce", "Fused CPU kernels for crossentropy.", -1, ce_methods,
};

PyMODINIT_FUNC PyInit__ce(void) {
    for (int i = 0; i < 1024; i++) {
        ones_f32[i] = 1.0f;
        ones_f64[i] = 1.0;
    }
#ifdef CE_HAVE_POOL
    ce_pool_init();
#endif
    return PyModule_Create(&ce_module);
}

#else /* ================================================= typed kernels */

/* ---- elementary functions, vectorizable ---- */

CE_INLINE REAL SFX(from_bits)(UINT u) {
    REAL f;
    memcpy(&f, &u, sizeof f);
    return f;
}

CE_INLINE UINT SFX(to_bits)(REAL f) {
    UINT u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* row r's class index, whether it counts and its weight (0 where it does not) */
CE_INLINE int64_t SFX(target)(const ce_task *a, Py_ssize_t r, int *counts, double *wt) {
    const int64_t y = ce_class(a, r, counts);
    *wt = !*counts ? 0 : a->weight ? (double)((const REAL *)a->weight)[y] : 1;
    return y;
}

/* exp's core for z, a REAL or a vector of them (type T), shared by the exp
   functions: t = z log2(e) + MAGIC, whose low bits hold k, the nearest integer
   (k = t - MAGIC), and p = exp(r) for r = z - k ln2 (|r| <= ln2/2, Cody-Waite),
   by Taylor's polynomial (degree 12 in float64, 7 in float32; truncation error
   2e-16 and 5e-9 relative) evaluated by Horner's rule */
#ifdef CE_DOUBLE
#define CE_EXP_HEAD(p, r)                                                                \
    p = (r) * (1.0 / 479001600) + 1.0 / 39916800;                                        \
    p = p * (r) + 1.0 / 3628800;                                                         \
    p = p * (r) + 1.0 / 362880;                                                          \
    p = p * (r) + 1.0 / 40320;                                                           \
    p = p * (r) + 1.0 / 5040;                                                            \
    p = p * (r) + 1.0 / 720;
#else
#define CE_EXP_HEAD(p, r) p = (r) * (1.0f / 5040) + 1.0f / 720;
#endif
/* the terms both precisions share, each coefficient rounded in REAL */
#define CE_EXP_POLY(p, r)                                                                \
    CE_EXP_HEAD(p, r)                                                                    \
    p = p * (r) + (REAL)1 / 120;                                                         \
    p = p * (r) + (REAL)1 / 24;                                                          \
    p = p * (r) + (REAL)1 / 6;                                                           \
    p = p * (r) + (REAL)0.5;                                                             \
    p = p * (r) + 1;                                                                     \
    p = p * (r) + 1;
#define CE_EXP_CORE(T, z, t, p)                                                          \
    const T t = (z) * LOG2E_R + MAGIC;                                                   \
    T p;                                                                                 \
    {                                                                                    \
        const T k_ = t - MAGIC;                                                          \
        T r_ = (z) - k_ * LN2_HI_R;                                                      \
        r_ = r_ - k_ * LN2_LO_R;                                                         \
        CE_EXP_POLY(p, r_)                                                               \
    }

/* 2^k for an integer-valued REAL k in the normal exponent range */
CE_INLINE REAL SFX(pow2)(REAL k) {
    return SFX(from_bits)((SFX(to_bits)(k + MAGIC) - SFX(to_bits)(MAGIC) + BIAS) << MANT);
}

/* exp(x): |error| about 1 ulp; -inf -> 0, +inf -> inf, NaN -> NaN, subnormals kept */
CE_INLINE REAL SFX(vexp)(REAL x) {
    x = x < EXP_LO ? EXP_LO : x; /* comparisons keep NaN */
    x = x > EXP_HI ? EXP_HI : x;
    CE_EXP_CORE(REAL, x, t, p)
    const REAL k = t - MAGIC;
    /* 2^k as two factors so that k down to -150 (-1076) gives subnormals */
    REAL k1 = (k * (REAL)0.5 + MAGIC) - MAGIC;
    REAL k2 = k - k1;
    return p * SFX(pow2)(k1) * SFX(pow2)(k2);
}

/* expm1(x) for x <= 0, accurate relative to the result near 0 */
CE_INLINE REAL SFX(vexpm1_neg)(REAL x) {
    x = x < EM1_LO ? EM1_LO : x;
    REAL k = (x * LOG2E_R + MAGIC) - MAGIC;
    REAL r = x - k * LN2_HI_R;
    r = r - k * LN2_LO_R;
#ifdef CE_DOUBLE
    REAL p = 1.0 / 87178291200;
    p = p * r + 1.0 / 6227020800;
    p = p * r + 1.0 / 479001600;
    p = p * r + 1.0 / 39916800;
    p = p * r + 1.0 / 3628800;
    p = p * r + 1.0 / 362880;
    p = p * r + 1.0 / 40320;
    p = p * r + 1.0 / 5040;
    p = p * r + 1.0 / 720;
    p = p * r + 1.0 / 120;
    p = p * r + 1.0 / 24;
    p = p * r + 1.0 / 6;
    p = p * r + 0.5;
#else
    REAL p = 1.0f / 40320;
    p = p * r + 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
#endif
    REAL q = r + (r * r) * p; /* expm1(r) */
    REAL f = SFX(pow2)(k);
    return f * q + (f - 1);
}

/* tanh(y) = -expm1(-2|y|) / (2 + expm1(-2|y|)), with the sign of y */
CE_INLINE REAL SFX(vtanh)(REAL y) {
    REAL a = y < 0 ? -y : y;
    REAL u = SFX(vexpm1_neg)(-2 * a);
    REAL t = -u / (2 + u);
    return y < 0 ? -t : t;
}

/* log(s) in double for s in {0} U [1, inf] U {NaN} (a sum of exponentials of z <= 0) */
CE_INLINE double SFX(vlog)(double s) {
    uint64_t u;
    memcpy(&u, &s, sizeof u);
    uint64_t e = (u >> 52) & 0x7ff;
    uint64_t mb = (u & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    memcpy(&m, &mb, sizeof m);                 /* s = m * 2^(e - 1023), m in [1, 2) */
    double big = m > 1.4142135623730951 ? 1.0 : 0.0;
    m = big > 0 ? m * 0.5 : m;                 /* m in [sqrt(1/2), sqrt(2)) */
    uint64_t eb = e + 0x4330000000000000ull;   /* exponent as a double via 2^52 */
    double ef;
    memcpy(&ef, &eb, sizeof ef);
    ef = ef - 4503599627370496.0 - 1023.0 + big;
    double v = (m - 1) / (m + 1), v2 = v * v; /* log m = 2 atanh(v) */
    double p = 1.0 / 21;
    p = p * v2 + 1.0 / 19;
    p = p * v2 + 1.0 / 17;
    p = p * v2 + 1.0 / 15;
    p = p * v2 + 1.0 / 13;
    p = p * v2 + 1.0 / 11;
    p = p * v2 + 1.0 / 9;
    p = p * v2 + 1.0 / 7;
    p = p * v2 + 1.0 / 5;
    p = p * v2 + 1.0 / 3;
    p = p * v2 + 1.0;
    double r = ef * 0.6931471805599453 + 2 * v * p;
    r = s == 0 ? -INFINITY : r;
    r = s > 1.7976931348623157e308 ? s : r; /* inf */
    return s != s ? s : r;                  /* NaN */
}

/* the logit after soft-capping: cap * tanh(v / cap) */
CE_INLINE REAL SFX(capped)(REAL v, REAL cap, int on) { return on ? cap * SFX(vtanh)(v / cap) : v; }

/* ---- row kernels: one cache-resident row, vectorized along it ---- */

/* max of the (capped) row, 0 if it is not finite (as the reference shifts);
   *posinf = 1 if it is +inf */
CE_INLINE REAL SFX(row_max)(const REAL *x, Py_ssize_t C, REAL cap, int on, int *posinf) {
    REAL mx = -INFINITY;
    CE_SIMD_MAX(mx)
    for (Py_ssize_t c = 0; c < C; c++) mx = x[c] > mx ? x[c] : mx;
    if (on) mx = cap * SFX(vtanh)(mx / cap); /* tanh is increasing */
    *posinf = mx == INFINITY;
    return mx - mx == 0 ? mx : 0;
}

CE_INLINE double SFX(row_sumexp)(const REAL *x, Py_ssize_t C, REAL m, REAL cap, int on) {
    double S = 0;
    for (Py_ssize_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        Py_ssize_t n = C - c0 < CE_CHUNK ? C - c0 : CE_CHUNK;
        const REAL *xc = x + c0;
        REAL s = 0;
        CE_SIMD_SUM(s)
        for (Py_ssize_t i = 0; i < n; i++) s += SFX(vexp)(SFX(capped)(xc[i], cap, on) - m);
        S += s;
    }
    return S;
}

/* single pass: running max, sum rescaled when the max grows; 0 if the row
   needs the two-pass treatment (a non-finite maximum) */
CE_INLINE int SFX(row_online)(const REAL *x, Py_ssize_t C, REAL cap, int on, REAL *m_out,
                              double *S_out) {
    REAL M = -INFINITY;
    double S = 0;
    for (Py_ssize_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        Py_ssize_t n = C - c0 < CE_CHUNK ? C - c0 : CE_CHUNK;
        const REAL *xc = x + c0;
        REAL cm = -INFINITY;
        CE_SIMD_MAX(cm)
        for (Py_ssize_t i = 0; i < n; i++) cm = xc[i] > cm ? xc[i] : cm;
        if (on) cm = cap * SFX(vtanh)(cm / cap);
        if (cm > M) {
            if (S != 0) S *= exp((double)M - (double)cm);
            M = cm;
        }
        if (M == -INFINITY) continue;
        if (!(M - M == 0)) return 0;
        REAL s = 0;
        CE_SIMD_SUM(s)
        for (Py_ssize_t i = 0; i < n; i++) s += SFX(vexp)(SFX(capped)(xc[i], cap, on) - M);
        S += s;
    }
    if (M == -INFINITY) return 0;
    *m_out = M;
    *S_out = S;
    return 1;
}

CE_INLINE void SFX(row_stats)(const ce_task *a, const REAL *x, REAL cap, int on, REAL *m,
                              double *S, int *posinf) {
    *posinf = 0;
    if (a->C > a->online && SFX(row_online)(x, a->C, cap, on, m, S)) return;
    *m = SFX(row_max)(x, a->C, cap, on, posinf);
    *S = SFX(row_sumexp)(x, a->C, *m, cap, on);
}

/* sum over c of w_c (z_c) with z = capped(x) - m; w = 1 without weights */
CE_INLINE double SFX(row_sum_z)(const REAL *x, const REAL *w, Py_ssize_t C, REAL m, REAL cap,
                                int on, int weighted) {
    double S = 0;
    for (Py_ssize_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        Py_ssize_t n = C - c0 < CE_CHUNK ? C - c0 : CE_CHUNK;
        const REAL *xc = x + c0;
        REAL s = 0;
        CE_SIMD_SUM(s)
        for (Py_ssize_t i = 0; i < n; i++) {
            REAL z = SFX(capped)(xc[i], cap, on) - m;
            s += weighted ? w[c0 + i] * z : z;
        }
        S += s;
    }
    return S;
}

/* probability targets: sum of wt_c and of wt_c (z_c - lse) over wt_c != 0 */
CE_INLINE void SFX(row_prob_sums)(const REAL *x, const REAL *t, const REAL *w, Py_ssize_t C,
                                  REAL m, REAL lse, REAL omeps, REAL epsc, REAL cap, int on,
                                  int weighted, double *Sw_out, double *L_out) {
    double Sw = 0, L = 0;
    for (Py_ssize_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        Py_ssize_t n = C - c0 < CE_CHUNK ? C - c0 : CE_CHUNK;
        REAL sw = 0, l = 0;
        CE_SIMD_SUM2(sw, l)
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t c = c0 + i;
            REAL tp = omeps * t[c] + epsc;
            REAL wt = weighted ? tp * w[c] : tp;
            REAL lp = SFX(capped)(x[c], cap, on) - m - lse;
            sw += wt;
            l += wt == 0 ? 0 : wt * lp;
        }
        Sw += sw;
        L += l;
    }
    *Sw_out = Sw;
    *L_out = L;
}

/* g_c = (A e_c - B w_c - T t'_c w_c) * (1 - th_c^2): every gradient of the family */
CE_INLINE void SFX(row_grad)(const REAL *x, const REAL *t, const REAL *w, REAL *g, Py_ssize_t C,
                             REAL m, REAL A, REAL B, REAL T, REAL omeps, REAL epsc, REAL cap,
                             int on, int weighted, int probs) {
    CE_SIMD
    for (Py_ssize_t c = 0; c < C; c++) {
        REAL th = 0, v = x[c];
        if (on) {
            th = SFX(vtanh)(v / cap);
            v = cap * th;
        }
        REAL gv = A * SFX(vexp)(v - m);
        if (probs) {
            REAL tp = omeps * t[c] + epsc;
            gv -= T * (weighted ? tp * w[c] : tp);
        } else {
            gv -= weighted ? B * w[c] : B;
        }
        if (on) gv *= 1 - th * th;
        g[c] = gv;
    }
}

/* probability targets: d loss / d t_c = -(1 - eps) w_c log softmax(x)_c, times the seed */
CE_INLINE void SFX(row_dtarget)(const REAL *x, const REAL *w, REAL *dt, Py_ssize_t C, REAL m,
                                REAL lse, REAL coef, REAL cap, int on) {
    if (w) {
        CE_SIMD
        for (Py_ssize_t c = 0; c < C; c++) dt[c] = coef * w[c] * (SFX(capped)(x[c], cap, on) - m - lse);
    } else {
        CE_SIMD
        for (Py_ssize_t c = 0; c < C; c++) dt[c] = coef * (SFX(capped)(x[c], cap, on) - m - lse);
    }
}

/* a row that counts for nothing: loss 0 and, if asked for, a gradient row of 0 */
static void SFX(row_zero)(const ce_task *a, Py_ssize_t r) {
    ((REAL *)a->loss)[r] = 0;
    if (!a->g) return;
    REAL *g = (REAL *)a->g + ce_offset(a->gs, r, a->D);
    for (Py_ssize_t c = 0; c < a->C; c++) g[c * a->gs[2]] = 0;
}

static void SFX(row_one)(const ce_task *a, Py_ssize_t r, int on, int weighted) {
    const Py_ssize_t C = a->C;
    const REAL *x = (const REAL *)a->x + ce_offset(a->xs, r, a->D);
    REAL *g = a->g ? (REAL *)a->g + ce_offset(a->gs, r, a->D) : NULL;
    const REAL *w = (const REAL *)a->weight;
    const REAL cap = (REAL)a->cap;
    const double eps = a->eps, zl = a->zl, s = a->scale;
    const REAL omeps = (REAL)(1 - eps), epsc = (REAL)(eps / C);
    REAL m;
    double S;
    int posinf;
    SFX(row_stats)(a, x, cap, on, &m, &S, &posinf);
    if (posinf) S = NAN; /* a +inf logit: NaN loss and gradient row, as log_softmax gives */
    const double lse = SFX(vlog)(S), full = lse + m;

    if (a->t) {
        const REAL *t = (const REAL *)a->t + ce_offset(a->ts, r, a->D);
        double Sw, L;
        SFX(row_prob_sums)(x, t, w, C, m, (REAL)lse, eps ? omeps : 1, eps ? epsc : 0, cap, on,
                           weighted, &Sw, &L);
        double loss = -L;
        if (zl) loss += zl * full * full;
        ((REAL *)a->loss)[r] = (REAL)loss;
        if (g) {
            double dz = zl ? 2 * zl * full : 0;
            SFX(row_grad)(x, t, w, g, C, m, (REAL)(s * (Sw + dz) / S), 0, (REAL)s,
                          eps ? omeps : 1, eps ? epsc : 0, cap, on, weighted, 1);
        }
        if (a->dt)
            SFX(row_dtarget)(x, w, (REAL *)a->dt + ce_offset(a->gs, r, a->D), C, m, (REAL)lse,
                             (REAL)(-(1 - eps) * s), cap, on);
        return;
    }

    int valid;
    double wt;
    const int64_t y = SFX(target)(a, r, &valid, &wt);
    const REAL zy = SFX(capped)(x[y], cap, on) - m;
    double loss = wt * (lse - (double)zy);
    if (eps > 0) {
        double smooth = valid ? a->W * lse - SFX(row_sum_z)(x, w, C, m, cap, on, weighted) : 0;
        loss = (1 - eps) * loss + eps / C * smooth;
    }
    if (zl && valid) loss += zl * full * full;
    ((REAL *)a->loss)[r] = (REAL)loss;
    if (!g) return;

    const double coef = (1 - eps) * wt;
    const double coef_p = coef + (valid ? eps / C * a->W : 0);
    const double dz = (zl && valid) ? 2 * zl * full : 0;
    const REAL A = (REAL)(s * (coef_p + dz) / S);
    const REAL B = valid ? (REAL)(s * eps / C) : 0;
    /* the target's entry in one expression, read before g (maybe x itself) is written */
    REAL th = 0, v = x[y];
    if (on) {
        th = SFX(vtanh)(v / cap);
        v = cap * th;
    }
    REAL gy = A * SFX(vexp)(v - m) - (weighted ? B * w[y] : B) - (REAL)(s * coef);
    if (on) gy *= 1 - th * th;
    SFX(row_grad)(x, NULL, w, g, C, m, A, B, 0, 0, 0, cap, on, weighted, 0);
    if (coef != 0) g[y] = gy;
}

/* ---- fast rows: finite maxima, chunked online max / sum, multi-lane accumulators ---- */

/* exp(z) for z <= ~0 (and NaN): one 2^k factor, results below the smallest
   normal number flushed to 0 */
CE_INLINE REAL SFX(vexp_fast)(REAL z) {
    CE_EXP_CORE(REAL, z, t, p)
    REAL f = SFX(from_bits)((SFX(to_bits)(t) - SFX(to_bits)(MAGIC) + BIAS) << MANT);
    REAL v = p * f;
    return z < FLUSH ? 0 : v;
}

static REAL SFX(ones)[FCH];

/* ask for a chunk ahead of time (beyond the row's end: the next row, if
   contiguous); the hardware streams within a page, this crosses them.  `prefetch`
   brings it to L1, `prefetch_l2` to L2 (a whole row, read while another is written) */
#if defined(__GNUC__)
#define CE_PREFETCH_CHUNK(p, level)                                                      \
    for (int b_ = 0; b_ < FCH * (int)sizeof(REAL); b_ += 64)                             \
    __builtin_prefetch((const char *)(p) + b_, 0, level)
#else
#define CE_PREFETCH_CHUNK(p, level) (void)(p)
#endif
CE_INLINE void SFX(prefetch)(const REAL *p) { CE_PREFETCH_CHUNK(p, 3); }
CE_INLINE void SFX(prefetch_l2)(const REAL *p) { CE_PREFETCH_CHUNK(p, 2); }

/* max of x[0:n], four independent vector accumulators */
CE_INLINE REAL SFX(vmax)(const REAL *x, Py_ssize_t n) {
    REAL mm[RL];
    CE_SIMD
    for (int j = 0; j < RL; j++) mm[j] = -INFINITY;
    Py_ssize_t i = 0;
    for (; i + RL <= n; i += RL) {
        CE_SIMD
        for (int j = 0; j < RL; j++) mm[j] = x[i + j] > mm[j] ? x[i + j] : mm[j];
    }
    REAL m = -INFINITY;
    CE_SIMD_MAX(m)
    for (Py_ssize_t k = i; k < n; k++) m = x[k] > m ? x[k] : m;
    CE_SIMD_MAX(m)
    for (int j = 0; j < RL; j++) m = mm[j] > m ? mm[j] : m;
    return m;
}

/* one element of the first pass: its exp (stored when `store`), and the
   smoothing / probability-target sums relative to the running max M */
#define CE_P1_BODY(c, s_, z_, w_)                                                   \
    {                                                                               \
        REAL th_ = 0, v_ = x[c];                                                    \
        if (on) {                                                                   \
            th_ = SFX(vtanh)(v_ / cap);                                             \
            v_ = cap * th_;                                                         \
        }                                                                           \
        REAL z0_ = v_ - M;                                                          \
        REAL e_ = SFX(vexp_fast)(z0_);                                              \
        if (store) e[c] = e_;                                                       \
        s_ += e_;                                                                   \
        if (probs) {                                                                \
            REAL wt_ = (omeps * t[c] + epsc) * w[c];                                \
            w_ += wt_;                                                              \
            z_ += wt_ == 0 ? 0 : wt_ * z0_;                                         \
        } else if (smooth) {                                                        \
            z_ += w[c] * z0_;                                                       \
            w_ += w[c];                                                             \
        }                                                                           \
    }

/* pass 1 over a row in chunks of FCH: running max M, sum of exp(x - M) and
   (smooth) sum of w (x - M) / (probs) sum of wt (x - M) and of wt, each sum
   rescaled when M grows; 0 (nothing usable) if a chunk maximum is not finite */
CE_INLINE int SFX(fast_pass1)(const REAL *x0, const REAL *t0, const REAL *w0, REAL *e0,
                              Py_ssize_t C, REAL cap, int on, int probs, int smooth, int store,
                              REAL omeps, REAL epsc, REAL *M_out, double *S_out, double *Z_out,
                              double *W_out, REAL *Mk) {
    REAL M = -INFINITY;
    double S = 0, Z = 0, Wt = 0;
    for (Py_ssize_t c0 = 0, k = 0; c0 < C; c0 += FCH, k++) {
        const Py_ssize_t n = C - c0 < FCH ? C - c0 : FCH;
        const REAL *x = x0 + c0;
        const REAL *t = probs ? t0 + c0 : NULL;
        const REAL *w = w0 ? w0 + c0 : SFX(ones);
        REAL *e = store ? e0 + c0 : NULL;
        SFX(prefetch)(x + CE_PREFETCH * FCH);
        REAL cm = SFX(vmax)(x, n);
        if (on) cm = cap * SFX(vtanh)(cm / cap);
        if (!(cm - cm == 0)) return 0;
        if (cm > M) {
            if (k) {
                double d = (double)M - (double)cm;
                S *= exp(d);
                Z += d * Wt;
            }
            M = cm;
        }
        if (store) Mk[k] = M;
        REAL ss[RL], zz[RL], ww[RL];
        CE_SIMD
        for (int j = 0; j < RL; j++) ss[j] = zz[j] = ww[j] = 0;
        Py_ssize_t i = 0;
        for (; i + RL <= n; i += RL) {
            CE_SIMD
            for (int j = 0; j < RL; j++) CE_P1_BODY(i + j, ss[j], zz[j], ww[j])
        }
        REAL st = 0, zt = 0, wt = 0;
        CE_PRAGMA(omp simd reduction(+ : st, zt, wt))
        for (Py_ssize_t c = i; c < n; c++) CE_P1_BODY(c, st, zt, wt)
        CE_PRAGMA(omp simd reduction(+ : st, zt, wt))
        for (int j = 0; j < RL; j++) {
            st += ss[j];
            zt += zz[j];
            wt += ww[j];
        }
        S += st;
        Z += zt;
        Wt += wt;
    }
    *M_out = M;
    *S_out = S;
    *Z_out = Z;
    *W_out = Wt;
    return 1;
}

/* pass 3: g = (A e - B w - T t' w) (1 - th^2), e from the scratch row (stored by
   pass 1 relative to the chunk's running max Mk) or recomputed; the target's
   entry y (if >= 0) is then set to gy.  Each chunk is written to g, or built in
   the scratch row and streamed to g (`stream`). */
CE_INLINE void SFX(fast_pass3)(const REAL *x0, const REAL *t0, const REAL *w0, REAL *g0,
                               REAL *scratch, Py_ssize_t C, REAL M, const REAL *Mk, double A,
                               REAL B, REAL T, REAL omeps, REAL epsc, REAL cap, int on,
                               int probs, int from_e, int stream, int64_t y, REAL gy,
                               const REAL *next) {
    for (Py_ssize_t c0 = 0, k = 0; c0 < C; c0 += FCH, k++) {
        const Py_ssize_t n = C - c0 < FCH ? C - c0 : FCH;
        const REAL *x = x0 + c0;
        const REAL *t = probs ? t0 + c0 : NULL;
        const REAL *w = w0 ? w0 + c0 : SFX(ones);
        const REAL *e = from_e ? scratch + c0 : NULL;
        REAL *dst = stream ? (from_e ? scratch + c0 : scratch) : g0 + c0;
        if (!from_e) SFX(prefetch)(x + CE_PREFETCH * FCH);
        else if (next) SFX(prefetch_l2)(next + c0);
        const REAL Ak = (REAL)(from_e && Mk[k] != M ? A * exp((double)Mk[k] - (double)M) : A);
        CE_SIMD
        for (Py_ssize_t i = 0; i < n; i++) {
            REAL th = 0, v = x[i];
            if (on) {
                th = SFX(vtanh)(v / cap);
                v = cap * th;
            }
            REAL ev = from_e ? e[i] : SFX(vexp_fast)(v - M);
            REAL gv = Ak * ev - (probs ? T * ((omeps * t[i] + epsc) * w[i]) : B * w[i]);
            dst[i] = on ? gv * (1 - th * th) : gv;
        }
        if (y >= c0 && y < c0 + n) dst[y - c0] = gy;
        if (stream) ce_stream(g0 + c0, dst, (size_t)n * sizeof(REAL));
    }
}

/* The per-row losses, out of line: one compiled copy whatever the caller, so
   that the value does not depend on whether a gradient is computed as well
   (floating-point contraction may differ between inlined copies). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static double SFX(index_loss)(double wt, double lse, REAL zy, double eps, Py_ssize_t C, int valid,
                              double W, double Z, double zl, double full) {
    double loss = wt * (lse - (double)zy);
    if (eps > 0) loss = (1 - eps) * loss + eps / C * (valid ? W * lse - Z : 0);
    if (zl && valid) loss += zl * full * full;
    return loss;
}

#if defined(__GNUC__)
__attribute__((noinline))
#endif
static double SFX(prob_loss)(double Z, double lse, double Wt, double zl, double full) {
    double loss = -(Z - lse * Wt);
    if (zl) loss += zl * full * full;
    return loss;
}

/* one row on the fast path; 0 if it needs the exact one (nothing final written) */
CE_INLINE int SFX(fast_row)(const ce_task *a, Py_ssize_t r, REAL *scratch, int on, int probs,
                            int smooth, int store) {
    const Py_ssize_t C = a->C;
    const REAL *x = (const REAL *)a->x + ce_offset(a->xs, r, a->D);
    /* with e kept in the scratch row, pass 3 reads no logits: it reads the next row
       into L2 meanwhile, so that reading the logits overlaps writing the gradient
       (measured at (4096, 32000) float32: 59 -> 48 ms into a reused gradient) */
    const REAL *nxt =
        store && r + 1 < a->O * a->D ? (const REAL *)a->x + ce_offset(a->xs, r + 1, a->D) : NULL;
    REAL *g = a->g ? (REAL *)a->g + ce_offset(a->gs, r, a->D) : NULL;
    const REAL *t = probs ? (const REAL *)a->t + ce_offset(a->ts, r, a->D) : NULL;
    const REAL *w = (const REAL *)a->weight;
    const REAL cap = (REAL)a->cap;
    const double eps = a->eps, zl = a->zl, s = a->scale;
    const REAL omeps = (REAL)(1 - eps), epsc = (REAL)(eps / C);
    REAL Mk[FMAXCHUNKS];
    REAL M;
    double S, Z, Wt;
    /* the target's logit, read before g (maybe x itself) is written */
    int64_t y = 0;
    int valid = 0;
    double wt = 0;
    REAL thy = 0, vy = 0;
    if (!probs) {
        y = SFX(target)(a, r, &valid, &wt);
        vy = x[y];
        if (on) {
            thy = SFX(vtanh)(vy / cap);
            vy = cap * thy;
        }
    }
    /* with e kept, it goes straight into the gradient's row unless that is the
       logits: pass 1 then takes the first writes of g (cache misses, the page
       faults of a fresh buffer) among its exp work, and pass 3 rewrites the row in
       cache, with plain stores (measured at (4096, 32000) float32 into a reused
       gradient: 38 ms, against 48 with e in the scratch row and the gradient
       streamed out) */
    const int into_g = store && g && (const REAL *)g != x;
    const int stream = a->stream && !into_g;
    if (into_g) scratch = g;
    if (!SFX(fast_pass1)(x, t, w, scratch, C, cap, on, probs, smooth, store, probs ? omeps : 0,
                         probs ? epsc : 0, &M, &S, &Z, &Wt, Mk))
        return 0;
    const double lse = log(S), full = lse + M;
    if (probs) {
        ((REAL *)a->loss)[r] = (REAL)SFX(prob_loss)(Z, lse, Wt, zl, full);
        if (g) {
            const double dz = zl ? 2 * zl * full : 0;
            SFX(fast_pass3)(x, t, w, g, scratch, C, M, Mk, s * (Wt + dz) / S, 0, (REAL)s, omeps,
                            epsc, cap, on, 1, store, stream, -1, 0, nxt);
        }
        if (a->dt)
            SFX(row_dtarget)(x, w, (REAL *)a->dt + ce_offset(a->gs, r, a->D), C, M, (REAL)lse,
                             (REAL)(-(1 - eps) * s), cap, on);
        return 1;
    }
    const REAL zy = vy - M;
    ((REAL *)a->loss)[r] = (REAL)SFX(index_loss)(wt, lse, zy, eps, C, valid, a->W, Z, zl, full);
    if (!g) return 1;
    const double coef = (1 - eps) * wt;
    const double coef_p = coef + (valid ? eps / C * a->W : 0);
    const double dz = (zl && valid) ? 2 * zl * full : 0;
    const double A = s * (coef_p + dz) / S;
    const REAL B = valid ? (REAL)(s * eps / C) : 0;
    REAL gy = (REAL)A * SFX(vexp)(vy - M) - (w ? B * w[y] : B) - (REAL)(s * coef);
    gy = on ? gy * (1 - thy * thy) : gy;
    SFX(fast_pass3)(x, NULL, w, g, scratch, C, M, Mk, A, B, 0, 0, 0, cap, on, 0, store, stream,
                    coef != 0 ? y : -1, gy, nxt);
    return 1;
}

/* ---- short rows: the common call on rows of up to SHORT_C classes ---- */
#if defined(__GNUC__)
#define CE_SHORT 1
/* one vector of 64 bytes (GCC/Clang vector extensions: one AVX-512 register, two
   AVX2 or four SSE2 ones, whichever the clone targets) */
typedef REAL SFX(vec) __attribute__((vector_size(64), aligned(64)));
typedef SINT SFX(ivec) __attribute__((vector_size(64), aligned(64)));
typedef REAL SFX(half) __attribute__((vector_size(32)));
typedef SINT SFX(ihalf) __attribute__((vector_size(32)));
typedef REAL SFX(quarter) __attribute__((vector_size(16)));
typedef SINT SFX(iquarter) __attribute__((vector_size(16)));

CE_INLINE SFX(vec) SFX(vload)(const REAL *p) {
    SFX(vec) v;
    memcpy(&v, p, sizeof v);
    return v;
}

CE_INLINE void SFX(vstore)(REAL *p, SFX(vec) v) { memcpy(p, &v, sizeof v); }

/* the lanes of v where keep is true (all bits set), 0 elsewhere */
CE_INLINE SFX(vec) SFX(vkeep)(SFX(vec) v, SFX(ivec) keep) {
    return (SFX(vec))((SFX(ivec))v & keep);
}

CE_INLINE SFX(vec) SFX(vmax2)(SFX(vec) a, SFX(vec) b) {
    const SFX(ivec) gt = a > b; /* NaN: b */
    return (SFX(vec))(((SFX(ivec))a & gt) | ((SFX(ivec))b & ~gt));
}

/* sum of the lanes, halving the vector (a fixed order, whatever the ISA) */
CE_INLINE REAL SFX(vsum)(SFX(vec) v) {
    SFX(half) h0, h1;
    memcpy(&h0, &v, sizeof h0);
    memcpy(&h1, (char *)&v + sizeof h0, sizeof h1);
    h0 += h1;
    SFX(quarter) q0, q1;
    memcpy(&q0, &h0, sizeof q0);
    memcpy(&q1, (char *)&h0 + sizeof q0, sizeof q1);
    q0 += q1;
    REAL t[16 / sizeof(REAL)];
    memcpy(t, &q0, sizeof t);
#ifdef CE_DOUBLE
    return t[0] + t[1];
#else
    return (t[0] + t[2]) + (t[1] + t[3]);
#endif
}

/* max of the lanes (none NaN: vmax2 drops them): halves, then a quarter's lanes */
CE_INLINE REAL SFX(vmaxall)(SFX(vec) v) {
    SFX(half) h0, h1;
    memcpy(&h0, &v, sizeof h0);
    memcpy(&h1, (char *)&v + sizeof h0, sizeof h1);
    const SFX(ihalf) gt = h0 > h1;
    h0 = (SFX(half))(((SFX(ihalf))h0 & gt) | ((SFX(ihalf))h1 & ~gt));
    SFX(quarter) q0, q1;
    memcpy(&q0, &h0, sizeof q0);
    memcpy(&q1, (char *)&h0 + sizeof q0, sizeof q1);
    const SFX(iquarter) gq = q0 > q1;
    q0 = (SFX(quarter))(((SFX(iquarter))q0 & gq) | ((SFX(iquarter))q1 & ~gq));
    REAL t[16 / sizeof(REAL)];
    memcpy(t, &q0, sizeof t);
#ifdef CE_DOUBLE
    return t[0] > t[1] ? t[0] : t[1];
#else
    const REAL a = t[0] > t[1] ? t[0] : t[1], b = t[2] > t[3] ? t[2] : t[3];
    return a > b ? a : b;
#endif
}

/* vexp_fast on a vector: exp(z) for z <= ~0 (and NaN), 0 below FLUSH */
CE_INLINE SFX(vec) SFX(vexp_vec)(SFX(vec) z) {
    CE_EXP_CORE(SFX(vec), z, t, p)
    const SFX(ivec) bits = ((SFX(ivec))t - (SINT)SFX(to_bits)(MAGIC) + (SINT)BIAS) << MANT;
    return SFX(vkeep)(p * (SFX(vec))bits, ~(z < FLUSH)); /* NaN kept */
}

/* One row of class indices, without weights or softcap, of C <= SHORT_C logits:
   whole vectors of the row, the last one overlapping its predecessor when C is
   not a multiple of the vector (its repeated lanes masked out of the sums), or
   for C shorter than a vector the row padded with -inf in buf.  The max, the
   sum of exponentials (kept in buf) and the gradient are plain vector loops with
   one accumulator each; `fresh` marks the last vector's lanes that count.  0 if
   the row needs the exact path (a non-finite maximum; nothing written). */
CE_INLINE int SFX(short_row)(const ce_task *a, Py_ssize_t r, int K, const int64_t *y, int smooth,
                             REAL *buf, SFX(ivec) fresh) {
    const Py_ssize_t C = a->C, stride = SHORT_C + SHORT_VL; /* buf: one region per row */
    const REAL *x[2], *src[2];
    REAL *g[2], vy[2], M[2];
    for (int k = 0; k < K; k++) {
        x[k] = (const REAL *)a->x + ce_offset(a->xs, r + k, a->D);
        g[k] = a->g ? (REAL *)a->g + ce_offset(a->gs, r + k, a->D) : NULL;
        vy[k] = x[k][y[k]]; /* before g (maybe x itself) is written */
        src[k] = x[k];
        if (C < SHORT_VL) {
            REAL *pad = buf + k * stride + SHORT_C;
            for (int j = 0; j < SHORT_VL; j++) pad[j] = j < C ? x[k][j] : -INFINITY;
            src[k] = pad;
        }
    }
    const Py_ssize_t n = C < SHORT_VL ? SHORT_VL : C, last = n - SHORT_VL; /* last vector */
    SFX(vec) mv[2], sv[2];
    for (int k = 0; k < K; k++) mv[k] = SFX(vload)(src[k] + last);
    for (Py_ssize_t i = 0; i < last; i += SHORT_VL)
        for (int k = 0; k < K; k++) mv[k] = SFX(vmax2)(SFX(vload)(src[k] + i), mv[k]);
    for (int k = 0; k < K; k++) {
        M[k] = SFX(vmaxall)(mv[k]);
        if (!(M[k] - M[k] == 0)) return 0;
        sv[k] = (SFX(vec)){0};
    }
    for (Py_ssize_t i = 0; i < last; i += SHORT_VL)
        for (int k = 0; k < K; k++) {
            const SFX(vec) e = SFX(vexp_vec)(SFX(vload)(src[k] + i) - M[k]);
            SFX(vstore)(buf + k * stride + i, e);
            sv[k] += e;
        }
    const double eps = a->eps, zl = a->zl, s = a->scale, coef = 1 - eps;
    for (int k = 0; k < K; k++) {
        REAL *e_row = buf + k * stride;
        const SFX(vec) e = SFX(vexp_vec)(SFX(vload)(src[k] + last) - M[k]);
        SFX(vstore)(e_row + last, e);
        const REAL S = SFX(vsum)(sv[k] + SFX(vkeep)(e, fresh));
        REAL Zr = 0;
        if (smooth) {
            const REAL *xk = x[k], Mk = M[k];
            CE_SIMD_SUM(Zr)
            for (Py_ssize_t c = 0; c < C; c++) Zr += xk[c] - Mk;
        }
        const double lse = log((double)S), full = lse + M[k];
        ((REAL *)a->loss)[r + k] =
            (REAL)SFX(index_loss)(1, lse, vy[k] - M[k], eps, C, 1, (double)C, Zr, zl, full);
        REAL *gk = g[k];
        if (!gk) continue;
        const double dz = zl ? 2 * zl * full : 0;
        const REAL A = (REAL)(s * (1 + dz) / S), B = (REAL)(s * eps / C);
        const REAL gy = A * e_row[y[k]] - B - (REAL)(s * coef);
        if (C < SHORT_VL) {
            for (Py_ssize_t c = 0; c < C; c++) gk[c] = A * e_row[c] - B;
        } else {
            for (Py_ssize_t i = 0; i < last; i += SHORT_VL)
                SFX(vstore)(gk + i, SFX(vload)(e_row + i) * A - B);
            SFX(vstore)(gk + last, SFX(vload)(e_row + last) * A - B);
        }
        if (coef != 0) gk[y[k]] = gy;
    }
    return 1;
}
#endif

CE_HOT static void SFX(ce_rows)(const ce_task *a, Py_ssize_t lo, Py_ssize_t hi, int *failed) {
    const Py_ssize_t C = a->C;
    const int on = a->cap > 0, weighted = a->weight != NULL, probs = a->t != NULL;
    /* the short-row path: class indices, no weights, no softcap, rows within L1 */
    int short_rows = !a->exact && !probs && !on && !weighted && !a->dt && C <= SHORT_C;
    /* e kept between the passes in a scratch row when it and the logits row stay in L2 */
    const int store = !short_rows && a->g && 2 * C * (Py_ssize_t)sizeof(REAL) <= (1 << 20) && C <= FCH * FMAXCHUNKS;
    REAL *scratch = NULL;
    if (store || (a->stream && !short_rows)) {
        scratch = (REAL *)malloc((size_t)(store ? C : FCH) * sizeof(REAL));
        if (!scratch) {
            *failed = 1;
            return;
        }
    }
#ifdef CE_SHORT
    __attribute__((aligned(64))) REAL buf[2 * (SHORT_C + SHORT_VL)];
    /* two rows at once from 256 classes (measured: 10% faster at 1000, 15% slower at 100),
       while their buffers and logits stay in L1 */
    const int pairs = C >= 256 && C <= SHORT_C / 4;
#else
    short_rows = 0;
#endif
#ifdef CE_SHORT
    /* the lanes of a row's last vector that the ones before it lack (short_row) */
    const int rem = C < SHORT_VL ? 0 : (int)(C % SHORT_VL), repeated = rem ? SHORT_VL - rem : 0;
    SFX(ivec) fresh;
    for (int j = 0; j < SHORT_VL; j++) fresh[j] = j >= repeated ? -1 : 0;
#endif
    for (Py_ssize_t r = lo; r < hi; r++) {
        int done = 0, counts = 1;
        int64_t y = 0;
        if (!probs && (y = ce_class(a, r, &counts), !counts)) {
            SFX(row_zero)(a, r); /* ignored: nothing, whatever its logits (NaN, -inf) */
            continue;
        }
#ifdef CE_SHORT
        if (short_rows) {
            /* two rows at once when the next one counts too: their dependency chains
               (horizontal sums, log, division) overlap; otherwise this row alone (the
               loop reads the next row's class again) */
            int64_t ys[2] = {y, 0};
            int next = 0;
            if (pairs && r + 1 < hi) ys[1] = ce_class(a, r + 1, &next);
            if (next && SFX(short_row)(a, r, 2, ys, a->eps > 0, buf, fresh)) {
                r++;
                continue;
            }
            done = SFX(short_row)(a, r, 1, ys, a->eps > 0, buf, fresh);
        } else
#endif
        if (!a->exact) {
            const int smooth = !probs && a->eps > 0;
#define CE_FAST(on_, probs_, smooth_)                                                   \
    (store ? SFX(fast_row)(a, r, scratch, on_, probs_, smooth_, 1)                      \
           : SFX(fast_row)(a, r, scratch, on_, probs_, smooth_, 0))
            if (probs) done = on ? CE_FAST(1, 1, 0) : CE_FAST(0, 1, 0);
            else if (smooth) done = on ? CE_FAST(1, 0, 1) : CE_FAST(0, 0, 1);
            else done = on ? CE_FAST(1, 0, 0) : CE_FAST(0, 0, 0);
#undef CE_FAST
        }
        if (done) continue;
        /* rows with a non-finite maximum: the exact path */
        SFX(row_one)(a, r, on, weighted);
    }
    if (a->stream) ce_stream_done();
    free(scratch);
}

/* ---- column kernels: NB rows at once, vectorized across rows ---- */

/* copy NB rows starting at r0 into buf[c * NB + i], padding missing rows with 0 */
CE_INLINE void SFX(gather)(const char *base, const Py_ssize_t *st, Py_ssize_t D, Py_ssize_t C,
                           Py_ssize_t r0, int nb, REAL *buf) {
    const REAL *p = (const REAL *)base;
    Py_ssize_t off0 = ce_offset(st, r0, D);
    if (st[1] == 1 && r0 / D == (r0 + nb - 1) / D) { /* consecutive rows, contiguous lanes */
        for (Py_ssize_t c = 0; c < C; c++) {
            memcpy(buf + c * NB, p + off0 + c * st[2], nb * sizeof(REAL));
            for (int i = nb; i < NB; i++) buf[c * NB + i] = 0;
        }
        return;
    }
    for (int i = 0; i < NB; i++) {
        if (i < nb) {
            const REAL *row = p + ce_offset(st, r0 + i, D);
            for (Py_ssize_t c = 0; c < C; c++) buf[c * NB + i] = row[c * st[2]];
        } else {
            for (Py_ssize_t c = 0; c < C; c++) buf[c * NB + i] = 0;
        }
    }
}

CE_INLINE void SFX(scatter)(char *base, const Py_ssize_t *st, Py_ssize_t D, Py_ssize_t C,
                            Py_ssize_t r0, int nb, const REAL *buf) {
    REAL *p = (REAL *)base;
    Py_ssize_t off0 = ce_offset(st, r0, D);
    if (st[1] == 1 && r0 / D == (r0 + nb - 1) / D) {
        for (Py_ssize_t c = 0; c < C; c++) memcpy(p + off0 + c * st[2], buf + c * NB, nb * sizeof(REAL));
        return;
    }
    for (int i = 0; i < nb; i++) {
        REAL *row = p + ce_offset(st, r0 + i, D);
        for (Py_ssize_t c = 0; c < C; c++) row[c * st[2]] = buf[c * NB + i];
    }
}

/* the losses of rows r0..r0+nb: per row, or their sum into the block's entry */
CE_INLINE void SFX(put_losses)(const ce_task *a, Py_ssize_t r0, int nb, const double *loss) {
    if (a->loss) {
        for (int i = 0; i < nb; i++) ((REAL *)a->loss)[r0 + i] = (REAL)loss[i];
        return;
    }
    double sum = 0;
    for (int i = 0; i < nb; i++) sum += (double)(REAL)loss[i];
    a->lsum[r0 / NB] = sum;
}

CE_INLINE void SFX(col_block)(const ce_task *a, Py_ssize_t r0, int nb, REAL *X, REAL *E, REAL *T,
                              int on, int weighted) {
    const Py_ssize_t C = a->C;
    const REAL *w = (const REAL *)a->weight;
    const REAL cap = (REAL)a->cap;
    const double eps = a->eps, zl = a->zl, s = a->scale;
    const REAL omeps = (REAL)(1 - eps), epsc = (REAL)(eps / C);
    REAL m[NB], A[NB], B[NB], lseR[NB], tg[NB];
    double S[NB], lse[NB], acc[NB], acc2[NB], loss[NB];
    int64_t y[NB];

    SFX(gather)(a->x, a->xs, a->D, C, r0, nb, X);
    if (on) { /* X holds tanh(x / cap); the logit is cap * X */
        for (Py_ssize_t c = 0; c < C; c++) {
            REAL *xc = X + c * NB;
            CE_SIMD
            for (int i = 0; i < NB; i++) xc[i] = SFX(vtanh)(xc[i] / cap);
        }
    }
    const REAL k = on ? cap : 1;
    CE_SIMD
    for (int i = 0; i < NB; i++) m[i] = -INFINITY;
    for (Py_ssize_t c = 0; c < C; c++) {
        const REAL *xc = X + c * NB;
        CE_SIMD
        for (int i = 0; i < NB; i++) m[i] = k * xc[i] > m[i] ? k * xc[i] : m[i];
    }
    CE_SIMD
    for (int i = 0; i < NB; i++) {
        S[i] = m[i] == INFINITY ? NAN : 0; /* a +inf logit: NaN loss and gradient row */
        m[i] = m[i] - m[i] == 0 ? m[i] : 0;
        acc[i] = 0;
        acc2[i] = 0;
    }
    for (Py_ssize_t c = 0; c < C; c++) {
        const REAL *xc = X + c * NB;
        REAL *ec = E + c * NB;
        CE_SIMD
        for (int i = 0; i < NB; i++) {
            REAL e = SFX(vexp)(k * xc[i] - m[i]);
            ec[i] = e;
            S[i] += e;
        }
    }
    CE_SIMD
    for (int i = 0; i < NB; i++) {
        lse[i] = SFX(vlog)(S[i]);
        lseR[i] = (REAL)lse[i];
    }

    if (a->t) {
        SFX(gather)(a->t, a->ts, a->D, C, r0, nb, T);
        for (Py_ssize_t c = 0; c < C; c++) {
            const REAL *xc = X + c * NB;
            REAL *tc = T + c * NB;
            const REAL wc = weighted ? w[c] : 1;
            CE_SIMD
            for (int i = 0; i < NB; i++) {
                REAL wt = (omeps * tc[i] + epsc) * wc;
                REAL lp = k * xc[i] - m[i] - lseR[i];
                tc[i] = wt;
                acc[i] += wt;
                acc2[i] += wt == 0 ? 0 : wt * lp;
            }
        }
        for (int i = 0; i < nb; i++) {
            double full = lse[i] + m[i];
            double l = -acc2[i];
            if (zl) l += zl * full * full;
            loss[i] = l;
            A[i] = (REAL)(s * (acc[i] + (zl ? 2 * zl * full : 0)) / S[i]);
        }
        SFX(put_losses)(a, r0, nb, loss);
        if (!a->g) return;
        for (int i = nb; i < NB; i++) A[i] = 0;
        const REAL sR = (REAL)s;
        for (Py_ssize_t c = 0; c < C; c++) {
            const REAL *xc = X + c * NB, *tc = T + c * NB;
            REAL *ec = E + c * NB;
            CE_SIMD
            for (int i = 0; i < NB; i++) {
                REAL gv = A[i] * ec[i] - sR * tc[i];
                ec[i] = on ? gv * (1 - xc[i] * xc[i]) : gv;
            }
        }
        SFX(scatter)(a->g, a->gs, a->D, C, r0, nb, E);
        if (!a->dt) return;
        const REAL coef = (REAL)(-(1 - eps) * s);
        for (Py_ssize_t c = 0; c < C; c++) {
            const REAL *xc = X + c * NB;
            REAL *tc = T + c * NB;
            const REAL cw = weighted ? coef * w[c] : coef;
            CE_SIMD
            for (int i = 0; i < NB; i++) tc[i] = cw * (k * xc[i] - m[i] - lseR[i]);
        }
        SFX(scatter)(a->dt, a->gs, a->D, C, r0, nb, T);
        return;
    }

    if (eps > 0) {
        for (Py_ssize_t c = 0; c < C; c++) {
            const REAL *xc = X + c * NB;
            const REAL wc = weighted ? w[c] : 1;
            CE_SIMD
            for (int i = 0; i < NB; i++) acc[i] += wc * (k * xc[i] - m[i]);
        }
    }
    int ignored = 0; /* rows that count for nothing: loss 0, gradient 0 (their logits may be NaN) */
    int counted[NB];
    for (int i = 0; i < nb; i++) {
        int valid;
        double wt;
        y[i] = SFX(target)(a, r0 + i, &valid, &wt);
        counted[i] = valid;
        if (!valid) {
            ignored = 1;
            loss[i] = 0;
            A[i] = B[i] = tg[i] = 0;
            acc2[i] = 0;
            continue;
        }
        const double full = lse[i] + m[i];
        const REAL zy = k * X[y[i] * NB + i] - m[i];
        double l = wt * (lse[i] - (double)zy);
        if (eps > 0) l = (1 - eps) * l + eps / C * (valid ? a->W * lse[i] - acc[i] : 0);
        if (zl && valid) l += zl * full * full;
        loss[i] = l;
        const double coef = (1 - eps) * wt;
        const double coef_p = coef + (valid ? eps / C * a->W : 0);
        const double dz = (zl && valid) ? 2 * zl * full : 0;
        A[i] = (REAL)(s * (coef_p + dz) / S[i]);
        B[i] = valid ? (REAL)(s * eps / C) : 0;
        acc2[i] = coef;
        /* the target's entry, in one expression */
        REAL th = X[y[i] * NB + i];
        REAL gv = A[i] * E[y[i] * NB + i] - (weighted ? B[i] * w[y[i]] : B[i]) - (REAL)(s * coef);
        tg[i] = on ? gv * (1 - th * th) : gv;
    }
    SFX(put_losses)(a, r0, nb, loss);
    if (!a->g) return;
    for (int i = nb; i < NB; i++) A[i] = B[i] = 0;
    for (Py_ssize_t c = 0; c < C; c++) {
        const REAL *xc = X + c * NB;
        REAL *ec = E + c * NB;
        const REAL wc = weighted ? w[c] : 1;
        CE_SIMD
        for (int i = 0; i < NB; i++) {
            REAL gv = A[i] * ec[i] - B[i] * wc;
            ec[i] = on ? gv * (1 - xc[i] * xc[i]) : gv;
        }
    }
    for (int i = 0; i < nb; i++)
        if (acc2[i] != 0) E[y[i] * NB + i] = tg[i];
    if (ignored) {
        for (int i = 0; i < nb; i++)
            if (!counted[i])
                for (Py_ssize_t c = 0; c < C; c++) E[c * NB + i] = 0;
    }
    SFX(scatter)(a->g, a->gs, a->D, C, r0, nb, E);
}

CE_HOT static void SFX(ce_cols)(const ce_task *a, Py_ssize_t lo, Py_ssize_t hi, int *failed) {
    const Py_ssize_t C = a->C, R = a->O * a->D;
    REAL *buf = (REAL *)malloc((size_t)C * NB * 3 * sizeof(REAL));
    if (!buf) {
        *failed = 1;
        return;
    }
    REAL *X = buf, *E = buf + C * NB, *T = buf + 2 * C * NB;
    const int on = a->cap > 0, weighted = a->weight != NULL;
    for (Py_ssize_t b = lo; b < hi; b++) {
        Py_ssize_t r0 = b * NB;
        int nb = (int)(R - r0 < NB ? R - r0 : NB);
        if (on) {
            if (weighted) SFX(col_block)(a, r0, nb, X, E, T, 1, 1);
            else SFX(col_block)(a, r0, nb, X, E, T, 1, 0);
        } else {
            if (weighted) SFX(col_block)(a, r0, nb, X, E, T, 0, 1);
            else SFX(col_block)(a, r0, nb, X, E, T, 0, 0);
        }
    }
    free(buf);
}

/* ---- softmax family on rows: logsumexp, softmax, log_softmax ---- */

/* log sum exp(x - m) for a finite row max m, the k terms equal to it (exactly 1
   each) apart from the others' sum r: log1p(k - 1 + r), exact where r < eps;
   one vectorized pass, as the sum of exponentials */
static double SFX(log_shifted_sum)(const REAL *x, Py_ssize_t C, REAL m) {
    double rest = 0, k = 0;
    for (Py_ssize_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        Py_ssize_t n = C - c0 < CE_CHUNK ? C - c0 : CE_CHUNK;
        const REAL *xc = x + c0;
        REAL s = 0, t = 0;
        CE_SIMD_SUM2(s, t)
        for (Py_ssize_t i = 0; i < n; i++) {
            const REAL z = xc[i] - m;
            s += z == 0 ? 0 : SFX(vexp)(z);
            t += z == 0 ? 1 : 0;
        }
        rest += s;
        k += t;
    }
    return log1p((k - 1) + rest);
}

CE_HOT static void SFX(ce_softmax_rows)(const ce_task *a, Py_ssize_t lo, Py_ssize_t hi,
                                        int *failed) {
    (void)failed;
    const Py_ssize_t C = a->C;
    REAL Mk[FMAXCHUNKS];
    for (Py_ssize_t r = lo; r < hi; r++) {
        const REAL *x = (const REAL *)a->x + ce_offset(a->xs, r, a->D);
        REAL *out = a->mode ? (REAL *)a->g + ce_offset(a->gs, r, a->D) : NULL;
        const int store = a->mode == 1 && (const REAL *)out != x &&
                          2 * C * (Py_ssize_t)sizeof(REAL) <= (1 << 20) && C <= FCH * FMAXCHUNKS;
        REAL m;
        double S, Z, W;
        int fast = store ? SFX(fast_pass1)(x, NULL, NULL, out, C, 0, 0, 0, 0, 1, 0, 0, &m, &S,
                                           &Z, &W, Mk)
                         : SFX(fast_pass1)(x, NULL, NULL, NULL, C, 0, 0, 0, 0, 0, 0, 0, &m, &S,
                                           &Z, &W, Mk);
        int posinf;
        if (!fast) SFX(row_stats)(a, x, 0, 0, &m, &S, &posinf);
        const double lse = log(S);
        double full = lse + m;
        /* near 0, log(S) loses the terms below the max (S = 1 + 4e-18 rounds to 1) */
        if (fabs(full) < 1) full = m + SFX(log_shifted_sum)(x, C, m);
        ((REAL *)a->loss)[r] = (REAL)full;
        if (a->mode == 1 && fast && store) { /* out holds exp(x - Mk) per chunk */
            for (Py_ssize_t c0 = 0, k = 0; c0 < C; c0 += FCH, k++) {
                const Py_ssize_t n = C - c0 < FCH ? C - c0 : FCH;
                const REAL f = (REAL)(exp((double)Mk[k] - (double)m) / S);
                REAL *o = out + c0;
                CE_SIMD
                for (Py_ssize_t i = 0; i < n; i++) o[i] *= f;
            }
        } else if (a->mode == 1) {
            const REAL inv = (REAL)(1 / S);
            if (fast) {
                CE_SIMD
                for (Py_ssize_t c = 0; c < C; c++) out[c] = SFX(vexp_fast)(x[c] - m) * inv;
            } else {
                CE_SIMD
                for (Py_ssize_t c = 0; c < C; c++) out[c] = SFX(vexp)(x[c] - m) * inv;
            }
        } else if (a->mode == 2) {
            const REAL sh = (REAL)(lse + m);
            CE_SIMD
            for (Py_ssize_t c = 0; c < C; c++) out[c] = x[c] - sh;
        }
    }
}

/* ---- linear_cross_entropy: a (rows, cols) logits block, exponentiated in place ---- */

/* columns [lo, hi) in 64-byte units: x = exp(x) and sums[c] += the column's sum (in the
   input precision over CE_CHUNK rows at a time, then in double) */
CE_HOT static void SFX(ce_exp_sum)(const ce_task *a, Py_ssize_t lo, Py_ssize_t hi, int *failed) {
    const Py_ssize_t unit = 64 / (Py_ssize_t)sizeof(REAL), R = a->O, ld = a->xs[0];
    const Py_ssize_t c0 = lo * unit, c1 = hi * unit < a->C ? hi * unit : a->C, n = c1 - c0;
    if (n <= 0) return;
    REAL *part = (REAL *)malloc((size_t)n * sizeof(REAL));
    double *total = (double *)calloc((size_t)n, sizeof(double));
    if (!part || !total) {
        free(part);
        free(total);
        *failed = 1;
        return;
    }
    for (Py_ssize_t r0 = 0; r0 < R; r0 += CE_CHUNK) {
        const Py_ssize_t r1 = R - r0 < CE_CHUNK ? R : r0 + CE_CHUNK;
        for (Py_ssize_t i = 0; i < n; i++) part[i] = 0;
        for (Py_ssize_t r = r0; r < r1; r++) {
            REAL *x = (REAL *)a->g + r * ld + c0;
            CE_SIMD
            for (Py_ssize_t i = 0; i < n; i++) {
                const REAL e = SFX(vexp)(x[i]);
                x[i] = e;
                part[i] += e;
            }
        }
        for (Py_ssize_t i = 0; i < n; i++) total[i] += part[i];
    }
    REAL *sums = (REAL *)a->loss + c0;
    for (Py_ssize_t i = 0; i < n; i++) sums[i] = (REAL)((double)sums[i] + total[i]);
    free(part);
    free(total);
}

#undef CE_EXP_POLY /* defined again for the other REAL */
#undef CE_EXP_HEAD
#undef CE_EXP_CORE
#endif /* CE_TYPED */

#ifndef CE_TYPED /* ======================================= entry without Python */

/* For a caller that holds no Python objects (the XLA FFI handler, _ce_xla.cc,
   which runs on XLA's threads without the GIL): fill the constant tables once
   (PyInit__ce does it for this module), then run the cross_entropy() entry above
   with plain C arguments.  `stream`: a gradient of CE_STREAM_MIN bytes or more is
   written with non-temporal stores (a fresh buffer on huge pages, whose zeroed
   2 MiB pages are no longer in cache).  Returns nonzero if a thread could not
   allocate its buffer. */
void ce_capi_init(void) {
    for (int i = 0; i < 1024; i++) {
        ones_f32[i] = 1.0f;
        ones_f64[i] = 1.0;
    }
#ifdef CE_HAVE_POOL
    ce_pool_init();
#endif
}

int ce_capi_cross_entropy(int dtype, int64_t O, int64_t D, int64_t C, const void *x,
                          const int64_t *xs, void *g, const int64_t *gs, const void *t,
                          const int64_t *ts, const void *y, const int64_t *ys, int y32,
                          int64_t ignore, int has_ignore, const void *weight, void *loss,
                          double eps, double z_loss, double softcap, double scale, int columns,
                          int nthreads, void *dt, int stream) {
    ce_task a;
    memset(&a, 0, sizeof a);
    a.O = O;
    a.D = D;
    a.C = C;
    a.x = x;
    a.g = g;
    a.dt = dt;
    a.t = t;
    a.y = y;
    a.weight = weight;
    a.loss = loss;
    for (int k = 0; k < 3; k++) {
        a.xs[k] = xs[k];
        a.gs[k] = gs[k];
        a.ts[k] = ts[k];
    }
    a.ys[0] = ys[0];
    a.ys[1] = ys[1];
    a.y32 = y32;
    a.ignore = ignore;
    a.has_ignore = has_ignore;
    a.eps = eps;
    a.zl = z_loss;
    a.cap = softcap;
    a.scale = scale;
    ce_row_mode(&a, dtype); /* online 0: the default */
    a.W = (double)C;
    if (weight) {
        double W = 0;
        for (int64_t c = 0; c < C; c++)
            W += dtype ? ((const double *)weight)[c] : (double)((const float *)weight)[c];
        a.W = W;
    }
    const Py_ssize_t R = a.O * a.D;
    const int nt = ce_threads_for(&a, R * a.C, nthreads);
#ifdef CE_HAVE_STREAM
    a.stream = stream && a.g && (const char *)a.g != a.x && R * a.C * (dtype ? 8 : 4) >= CE_STREAM_MIN;
#else
    (void)stream;
#endif
    if (columns) {
        const Py_ssize_t nb = dtype ? 16 : 32;
        return ce_parallel(&a, (R + nb - 1) / nb, nt, dtype ? ce_cols_f64 : ce_cols_f32);
    }
    return ce_parallel(&a, R, nt, dtype ? ce_rows_f64 : ce_rows_f32);
}

#endif /* entry without Python */
