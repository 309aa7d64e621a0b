/* Row-major sgemm: C = alpha op(A) op(B) + beta C with op(A) (M,K), op(B) (K,N).
   Goes to the BLAS sgemm handed in by the binding (Fortran, column-major), or to
   the blocked kernel below, which is also the oracle the tests compare BLAS with. */
#include "gemm.h"

#ifndef _WIN32
#include <pthread.h>
#endif

#include "pool.h"

/* The backends: [0] the built-in kernel, [1] the BLAS, filled once by rmtl_gemm_init before
   any product; the choice is an index, read once per rmtl_gemm_many, so a switch while
   products run on other threads never shows them a half-set backend (it used to be a pointer
   the pool's threads read part by part: a switch made them call NULL). */
static rmtl_blas gemm_backends[2];
static int gemm_backend = 0;
#define GEMM_MAX_PARTS 8
static int rmtl_gemm_max_parts = 1; /* the machine's CPUs, at most GEMM_MAX_PARTS */

void rmtl_gemm_init(const rmtl_blas *blas) {
    int cpus = rmtl_machine_cpus();
    rmtl_blas none = {NULL, NULL, NULL};
    gemm_backends[1] = blas != NULL ? *blas : none;
    if (gemm_backends[1].get_threads == NULL || gemm_backends[1].set_threads == NULL) {
        gemm_backends[1].get_threads = NULL;
        gemm_backends[1].set_threads = NULL;
    }
    rmtl_gemm_max_parts = cpus < GEMM_MAX_PARTS ? cpus : GEMM_MAX_PARTS;
}

int rmtl_gemm_use(int blas) {
    if (blas && gemm_backends[1].sgemm == NULL) {
        return RMTL_ERR_ARG;
    }
    __atomic_store_n(&gemm_backend, blas ? 1 : 0, __ATOMIC_RELEASE);
    return RMTL_OK;
}

int rmtl_gemm_uses_blas(void) {
    return __atomic_load_n(&gemm_backend, __ATOMIC_ACQUIRE);
}

/* OpenBLAS's thread count is one number for the process (openblas_set_num_threads_local sets
   it too, in the pthreads builds SciPy ships), and a product it splits over its own threads
   can round differently from the same product on one (K not a multiple of its blocks). Parts
   used to set it to 1 around each call and put back what they found: two pool threads doing
   that at once left it at 2 under some parts, by timing, and one run in 20 under load trained
   to other bits. Now it is 1 from the first to the last of any of rmtl's BLAS calls in
   flight, on any thread (a count of them under a lock), and back to what it was after. */
#ifndef _WIN32
static pthread_mutex_t gemm_blas_lock = PTHREAD_MUTEX_INITIALIZER;
#endif
static int gemm_blas_users = 0, gemm_blas_before = 1;

static void rmtl_gemm_blas_enter(const rmtl_blas *blas) {
    if (blas->set_threads == NULL) {
        return;
    }
#ifndef _WIN32
    pthread_mutex_lock(&gemm_blas_lock);
#endif
    if (gemm_blas_users++ == 0) {
        gemm_blas_before = blas->get_threads();
        if (gemm_blas_before != 1) {
            blas->set_threads(1);
        }
    }
#ifndef _WIN32
    pthread_mutex_unlock(&gemm_blas_lock);
#endif
}

static void rmtl_gemm_blas_leave(const rmtl_blas *blas) {
    if (blas->set_threads == NULL) {
        return;
    }
#ifndef _WIN32
    pthread_mutex_lock(&gemm_blas_lock);
#endif
    /* put back unless someone else changed it meanwhile */
    if (--gemm_blas_users == 0 && gemm_blas_before != 1 && blas->get_threads() == 1) {
        blas->set_threads(gemm_blas_before);
    }
#ifndef _WIN32
    pthread_mutex_unlock(&gemm_blas_lock);
#endif
}

/* Tile sizes: a (KC, NC) panel of op(B) packed on the stack stays in L2. */
#define GEMM_MC 64
#define GEMM_KC 256
#define GEMM_NC 256

/* tiles [t0, t1) of the product g, (GEMM_MC, GEMM_NC) blocks of C in row-major order */
static void rmtl_gemm_tiles(void *ctx, int64_t t0, int64_t t1) {
    const rmtl_gemm_op *g = ctx;
    /* a local: the loop scaling C stores through c, which could alias *g, and would not
       vectorize reading beta through g (the packing loop stores into the stack panel only) */
    float beta = g->beta;
    int nt = (g->N + GEMM_NC - 1) / GEMM_NC;
    for (int64_t t = t0; t < t1; t++) {
        float panel[GEMM_KC * GEMM_NC];
        int i0 = (int)(t / nt) * GEMM_MC, j0 = (int)(t % nt) * GEMM_NC;
        int i1 = i0 + GEMM_MC < g->M ? i0 + GEMM_MC : g->M;
        int j1 = j0 + GEMM_NC < g->N ? j0 + GEMM_NC : g->N;
        int nc = j1 - j0;
        for (int i = i0; i < i1; i++) {
            float *c = g->C + (size_t)i * g->ldc + j0;
            for (int j = 0; j < nc; j++) {
                c[j] = beta == 0.0f ? 0.0f : beta * c[j];
            }
        }
        for (int k0 = 0; k0 < g->K; k0 += GEMM_KC) {
            int kc = k0 + GEMM_KC < g->K ? GEMM_KC : g->K - k0;
            for (int k = 0; k < kc; k++) {
                float *p = panel + (size_t)k * nc;
                for (int j = 0; j < nc; j++) {
                    p[j] = g->tb ? g->B[(size_t)(j0 + j) * g->ldb + k0 + k]
                                 : g->B[(size_t)(k0 + k) * g->ldb + j0 + j];
                }
            }
            for (int i = i0; i < i1; i++) {
                float *c = g->C + (size_t)i * g->ldc + j0;
                for (int k = 0; k < kc; k++) {
                    float a = g->alpha * (g->ta ? g->A[(size_t)(k0 + k) * g->lda + i]
                                                : g->A[(size_t)i * g->lda + k0 + k]);
                    const float *p = panel + (size_t)k * nc;
                    for (int j = 0; j < nc; j++) {
                        c[j] += a * p[j];
                    }
                }
            }
        }
    }
}

static void rmtl_gemm_builtin(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                              int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    int mt = (M + GEMM_MC - 1) / GEMM_MC, nt = (N + GEMM_NC - 1) / GEMM_NC;
    rmtl_gemm_op g = {ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C};
    /* a tile is GEMM_MC GEMM_NC K multiply-adds: parallel above about 1e6 in all */
    double tile = (double)GEMM_MC * GEMM_NC * (K > 0 ? K : 1);
    rmtl_parallel_for((int64_t)mt * nt, tile >= 1e6 ? 1 : (int64_t)(1e6 / tile) + 1,
                      rmtl_gemm_tiles, &g);
}

/* BLAS on the rows (or columns) [lo, hi) of C, one sgemm call on this thread */
static void rmtl_gemm_blas_part(rmtl_sgemm_fn sgemm, const rmtl_gemm_op *g, int split_rows, int lo,
                                int hi) {
    int M = g->M, N = g->N;
    const float *A = g->A, *B = g->B;
    float *C = g->C;
    if (split_rows) {
        M = hi - lo;
        A += g->ta ? (size_t)lo : (size_t)lo * g->lda;
        C += (size_t)lo * g->ldc;
    } else {
        N = hi - lo;
        B += g->tb ? (size_t)lo * g->ldb : (size_t)lo;
        C += lo;
    }
    /* row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap operands */
    char tra = g->tb ? 'T' : 'N', trb = g->ta ? 'T' : 'N';
    int K = g->K, lda = g->lda, ldb = g->ldb, ldc = g->ldc;
    float alpha = g->alpha, beta = g->beta;
    sgemm(&tra, &trb, &N, &M, &K, &alpha, (float *)B, &ldb, (float *)A, &lda, &beta, C, &ldc);
}

/* The products' parts: blocks of at least GEMM_PART_MIN rows or columns of C (the longer side,
   so the operand every part packs again is the smaller one), fixed by the shapes and the
   machine (not the thread count) and run in the same parts on any number of threads, one at a
   time on one. The parts cannot follow the thread count: a PLE trained to other bits on 3
   threads than on 2 that way (most likely OpenBLAS's small-matrix path, which sums in another
   order, taking the smaller parts). Every part packs the shared operand again, so fewer, larger
   parts run faster: a product alone is cut into as many parts as the machine has CPUs (up to
   GEMM_MAX_PARTS; on 2 CPUs, 2 parts trained 3-15% faster than parts of 256 rows), and
   products run together (rmtl_gemm_many) into parts of about 1/CPUs of all their
   multiply-adds, so most run whole on one thread each (finer where whole products would leave
   a CPU idle). */
#define GEMM_PART_MIN 64
#define GEMM_SPLIT_FLOPS 4e6

static double rmtl_gemm_flops(const rmtl_gemm_op *g) {
    return 2.0 * g->M * g->N * g->K;
}

/* rows (or columns) per part of g, with share the multiply-adds a part should have */
static int rmtl_gemm_part(const rmtl_gemm_op *g, double share) {
    int len = g->M >= g->N ? g->M : g->N, most = len / GEMM_PART_MIN;
    double flops = rmtl_gemm_flops(g);
    int parts = flops < GEMM_SPLIT_FLOPS ? 1 : (int)(flops / share + 0.999);
    parts = parts < most ? parts : most;
    parts = parts < rmtl_gemm_max_parts ? parts : rmtl_gemm_max_parts;
    int part = parts > 1 ? (len + parts - 1) / parts : len;
    return (part + 15) / 16 * 16;
}

/* the n products of rmtl_gemm_many and the multiply-adds a part should have */
typedef struct {
    const rmtl_gemm_op *ops;
    int n;
    double share;
    rmtl_sgemm_fn sgemm;
} rmtl_gemm_many_args;

/* how long the parts of a group take on the machine's CPUs when each CPU claims the next part
   as it finishes one (the parts' multiply-adds on the busiest CPU) */
static double rmtl_gemm_makespan(const rmtl_gemm_many_args *a) {
    double load[GEMM_MAX_PARTS] = {0}, most = 0.0;
    for (int i = 0; i < a->n; i++) {
        const rmtl_gemm_op *g = &a->ops[i];
        int len = g->M >= g->N ? g->M : g->N, part = rmtl_gemm_part(g, a->share);
        for (int lo = 0; lo < len; lo += part) {
            int cpu = 0, rows = len - lo < part ? len - lo : part;
            for (int c = 1; c < rmtl_gemm_max_parts; c++) {
                cpu = load[c] < load[cpu] ? c : cpu;
            }
            load[cpu] += rmtl_gemm_flops(g) * rows / len;
            most = load[cpu] > most ? load[cpu] : most;
        }
    }
    return most;
}

/* parts [p0, p1) of the ops, numbered op by op */
static void rmtl_gemm_parts(void *ctx, int64_t p0, int64_t p1) {
    const rmtl_gemm_many_args *a = ctx;
    int64_t first = 0;
    for (int i = 0; i < a->n && first < p1; i++) {
        const rmtl_gemm_op *g = &a->ops[i];
        int split_rows = g->M >= g->N, len = split_rows ? g->M : g->N;
        int part = rmtl_gemm_part(g, a->share), parts = (len + part - 1) / part;
        for (int64_t p = p0 > first ? p0 : first; p < p1 && p < first + parts; p++) {
            int lo = (int)(p - first) * part, hi = lo + part < len ? lo + part : len;
            rmtl_gemm_blas_part(a->sgemm, g, split_rows, lo, hi);
        }
        first += parts;
    }
}

void rmtl_gemm_many(rmtl_gemm_op *ops, int n) {
    /* the backend once, for every product and part of this call */
    const rmtl_blas *blas = &gemm_backends[__atomic_load_n(&gemm_backend, __ATOMIC_ACQUIRE)];
    double total = 0.0;
    int64_t parts = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        const rmtl_gemm_op *g = &ops[i];
        if (g->M == 0 || g->N == 0) {
            continue;
        }
        if (blas->sgemm == NULL || g->K == 0) {
            rmtl_gemm_builtin(g->ta, g->tb, g->M, g->N, g->K, g->alpha, g->A, g->lda, g->B, g->ldb,
                              g->beta, g->C, g->ldc);
            continue;
        }
        /* the rest in place, largest first: threads claim parts in order, so the last
           parts claimed are the smallest */
        rmtl_gemm_op op = *g;
        int j = k++;
        for (; j > 0 && rmtl_gemm_flops(&ops[j - 1]) < rmtl_gemm_flops(&op); j--) {
            ops[j] = ops[j - 1];
        }
        ops[j] = op;
        total += rmtl_gemm_flops(&op);
    }
    if (k == 0) {
        return;
    }
    /* parts of 1/CPUs of the work; when that leaves a CPU idle for more than 5% of the group
       (a large product beside a small one), 1/(d CPUs) for d up to 4, each finer d taken only
       if it finishes more than 2% sooner in the claim order (every extra part packs its shared
       operand again) */
    rmtl_gemm_many_args a = {ops, k, total / rmtl_gemm_max_parts, blas->sgemm};
    double best = rmtl_gemm_makespan(&a);
    for (int d = 2; d <= 4 && best > 1.05 * total / rmtl_gemm_max_parts; d++) {
        rmtl_gemm_many_args finer = {ops, k, total / rmtl_gemm_max_parts / d, blas->sgemm};
        double span = rmtl_gemm_makespan(&finer);
        if (span < 0.98 * best) {
            a = finer;
            best = span;
        }
    }
    for (int i = 0; i < k; i++) {
        const rmtl_gemm_op *g = &ops[i];
        int len = g->M >= g->N ? g->M : g->N, part = rmtl_gemm_part(g, a.share);
        parts += (len + part - 1) / part;
    }
    rmtl_gemm_blas_enter(blas);
    if (parts == 1 || blas->set_threads == NULL) {
        /* whole calls one after another: one small product, or a BLAS whose own threads split
           each (its thread count not ours to set) */
        for (int i = 0; i < k; i++) {
            rmtl_gemm_blas_part(blas->sgemm, &ops[i], 1, 0, ops[i].M);
        }
    } else {
        rmtl_parallel_for(parts, 1, rmtl_gemm_parts, &a);
    }
    rmtl_gemm_blas_leave(blas);
}

void rmtl_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    rmtl_gemm_op g = {ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C};
    rmtl_gemm_many(&g, 1);
}
