/* rmtl's own thread pool: the core's parallel loops and split matrix products run on it, not on
   the process-wide OpenMP runtime, so another library's runtime (torch's libgomp) loaded first
   changes nothing, and idle workers sleep instead of spinning.

   A job is a range [0, n) cut into chunks whose boundaries depend only on n and the caller's
   grain, never on the thread count; bodies write disjoint outputs per index, so results are
   the same bits for any thread count. Chunks are claimed one at a time from a shared counter:
   the calling thread starts on them at once and takes every chunk no worker has claimed, so a
   worker that wakes late (descheduled by a neighbour) costs nothing, and one that stalls holds
   up at most one chunk. Workers spin briefly after a job for the next one, then sleep on a
   condition variable. They start on the first job (import starts no threads), and a fork
   child starts its own, so a pool used before fork never hangs the child. */
#define _GNU_SOURCE
#include "pool.h"

#include <stdlib.h>

#ifndef _WIN32
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#endif

#define POOL_MAX_CHUNKS 64  /* per job: enough to even out a slow thread */
#define POOL_SPIN_NS 100000 /* a worker's wait for the next job before it sleeps */

/* 0: OMP_NUM_THREADS, else the cores this process may use; read and written atomically (a
   setter on one thread, loops on others) */
static int pool_threads = 0;
static int pool_default = 0; /* pool_default_threads(), once found (the same on any thread) */

static int pool_default_threads(void) {
    const char *env = getenv("OMP_NUM_THREADS");
    int n = env != NULL ? atoi(env) : 0;
    if (n > 0) {
        return n;
    }
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        return CPU_COUNT(&set);
    }
#endif
#ifndef _WIN32
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
#else
    return 1;
#endif
}

int rmtl_machine_cpus(void) {
#ifndef _WIN32
    long c = sysconf(_SC_NPROCESSORS_CONF);
    return c > 0 ? (int)c : 1;
#else
    return 1;
#endif
}

int rmtl_threads(void) {
    int n = __atomic_load_n(&pool_threads, __ATOMIC_ACQUIRE);
    if (n <= 0) {
        n = __atomic_load_n(&pool_default, __ATOMIC_ACQUIRE);
    }
    if (n <= 0) {
        n = pool_default_threads();
        __atomic_store_n(&pool_default, n, __ATOMIC_RELEASE);
    }
    return n < RMTL_MAX_THREADS ? n : RMTL_MAX_THREADS;
}

int64_t rmtl_grain(double work_per_index, double min_work) {
    double g = min_work / (work_per_index > 1.0 ? work_per_index : 1.0);
    return g > 1.0 ? (int64_t)g + 1 : 1;
}

static void pool_run_inline(int64_t n, int64_t grain, rmtl_range_fn fn, void *ctx) {
    for (int64_t lo = 0; lo < n; lo += grain) {
        fn(ctx, lo, lo + grain < n ? lo + grain : n);
    }
}

static int64_t pool_grain(int64_t n, int64_t grain) {
    int64_t min = (n + POOL_MAX_CHUNKS - 1) / POOL_MAX_CHUNKS;
    grain = grain > min ? grain : min;
    return grain > 0 ? grain : 1;
}

#ifdef _WIN32

void rmtl_threads_set(int n) {
    __atomic_store_n(&pool_threads, n > 0 ? n : 0, __ATOMIC_RELEASE);
}

void rmtl_parallel_for(int64_t n, int64_t grain, rmtl_range_fn fn, void *ctx) {
    pool_run_inline(n, pool_grain(n, grain), fn, ctx);
}

#else

/* state: job generation (bits 40-63), chunk count (20-39), next unclaimed chunk (0-19) */
#define ST_GEN(s) ((s) >> 40)
#define ST_CHUNKS(s) (((s) >> 20) & 0xfffff)
#define ST_NEXT(s) ((s) & 0xfffff)

static struct {
    pthread_mutex_t submit; /* held by the thread running a job, and while the pool changes */
    pthread_mutex_t lock;   /* with wake: sleeping workers */
    pthread_cond_t wake;
    pthread_t thread[RMTL_MAX_THREADS];
    int n_workers, quit, sleepers;
    uint64_t state;
    int64_t done; /* chunks finished in the current job */
    rmtl_range_fn fn;
    void *ctx;
    int64_t n, grain;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static __thread int pool_in_job = 0; /* this thread runs a chunk: nested loops run inline */

static void pool_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t pool_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* claim and run chunks of job gen until none is left */
static void pool_work(uint64_t gen) {
    uint64_t s = __atomic_load_n(&pool.state, __ATOMIC_ACQUIRE);
    while (ST_GEN(s) == gen && ST_NEXT(s) < ST_CHUNKS(s)) {
        if (!__atomic_compare_exchange_n(&pool.state, &s, s + 1, 1, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            continue; /* s now holds the current state */
        }
        /* chunk ST_NEXT(s) is ours: the job cannot finish before it, so its fields hold */
        int64_t lo = (int64_t)ST_NEXT(s) * pool.grain;
        int64_t hi = lo + pool.grain < pool.n ? lo + pool.grain : pool.n;
        pool.fn(pool.ctx, lo, hi);
        __atomic_add_fetch(&pool.done, 1, __ATOMIC_RELEASE);
        s = __atomic_load_n(&pool.state, __ATOMIC_ACQUIRE);
    }
}

static void *pool_worker(void *arg) {
    (void)arg;
    pool_in_job = 1;
    uint64_t seen = ST_GEN(__atomic_load_n(&pool.state, __ATOMIC_ACQUIRE));
    for (;;) {
        int64_t until = pool_now_ns() + POOL_SPIN_NS;
        uint64_t s = __atomic_load_n(&pool.state, __ATOMIC_ACQUIRE);
        for (int i = 0; ST_GEN(s) == seen && !__atomic_load_n(&pool.quit, __ATOMIC_ACQUIRE); i++) {
            if ((i & 63) == 63 && pool_now_ns() > until) {
                pthread_mutex_lock(&pool.lock);
                __atomic_add_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
                while (ST_GEN(__atomic_load_n(&pool.state, __ATOMIC_SEQ_CST)) == seen &&
                       !__atomic_load_n(&pool.quit, __ATOMIC_SEQ_CST)) {
                    pthread_cond_wait(&pool.wake, &pool.lock);
                }
                __atomic_sub_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
                pthread_mutex_unlock(&pool.lock);
            } else {
                pool_pause();
            }
            s = __atomic_load_n(&pool.state, __ATOMIC_ACQUIRE);
        }
        if (__atomic_load_n(&pool.quit, __ATOMIC_ACQUIRE)) {
            return NULL;
        }
        seen = ST_GEN(s);
        pool_work(seen);
    }
}

/* with submit held: stop and join every worker */
static void pool_stop(void) {
    pthread_mutex_lock(&pool.lock);
    __atomic_store_n(&pool.quit, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.n_workers; i++) {
        pthread_join(pool.thread[i], NULL);
    }
    pool.n_workers = 0;
    __atomic_store_n(&pool.quit, 0, __ATOMIC_SEQ_CST);
}

/* with submit held: start workers up to the thread count; fewer if the OS refuses */
static void pool_start(void) {
    int want = rmtl_threads() - 1;
    while (pool.n_workers < want &&
           pthread_create(&pool.thread[pool.n_workers], NULL, pool_worker, NULL) == 0) {
        pool.n_workers++;
    }
}

/* fork: the child has none of the parent's workers; it starts its own on its first job */
static void pool_fork_prepare(void) {
    pthread_mutex_lock(&pool.submit);
}

static void pool_fork_parent(void) {
    pthread_mutex_unlock(&pool.submit);
}

static void pool_fork_child(void) {
    pthread_mutex_init(&pool.submit, NULL);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pool.n_workers = 0;
    pool.sleepers = 0;
    pool.quit = 0;
}

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_register_fork(void) {
    pthread_atfork(pool_fork_prepare, pool_fork_parent, pool_fork_child);
}

void rmtl_threads_set(int n) {
    pthread_once(&pool_once, pool_register_fork);
    pthread_mutex_lock(&pool.submit);
    __atomic_store_n(&pool_threads, n > 0 ? n : 0, __ATOMIC_RELEASE);
    if (pool.n_workers > rmtl_threads() - 1) {
        pool_stop();
    }
    pthread_mutex_unlock(&pool.submit);
}

void rmtl_parallel_for(int64_t n, int64_t grain, rmtl_range_fn fn, void *ctx) {
    grain = pool_grain(n, grain);
    int64_t chunks = (n + grain - 1) / grain;
    /* a nested loop, one chunk, one thread, or the pool busy with another caller's job */
    if (chunks <= 1 || pool_in_job || rmtl_threads() <= 1 ||
        pthread_mutex_trylock(&pool.submit) != 0) {
        pool_run_inline(n, grain, fn, ctx);
        return;
    }
    pthread_once(&pool_once, pool_register_fork);
    pool_start();
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.grain = grain;
    pool.done = 0;
    uint64_t gen = (ST_GEN(pool.state) + 1) & 0xffffff;
    __atomic_store_n(&pool.state, gen << 40 | (uint64_t)chunks << 20, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pool.sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    pool_in_job = 1;
    pool_work(gen);
    pool_in_job = 0;
    /* only chunks other threads claimed and still run are left */
    for (int i = 0; __atomic_load_n(&pool.done, __ATOMIC_ACQUIRE) < chunks; i++) {
        if (i < 4096) {
            pool_pause();
        } else {
            sched_yield();
        }
    }
    pthread_mutex_unlock(&pool.submit);
}

#endif
