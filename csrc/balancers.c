/* The balancer table and the calls every balancer shares (balancers.h). */
#include <math.h>
#include <string.h>

#include "balancers.h"
#include "lanes.h"
#include "pool.h"
#include "rng.h"

/* The passes over a Jacobian run on the pool. Sums over its columns add per block of
   RMTL_BAL_BLOCK columns (more when P needs more than RMTL_BAL_MAX_BLOCKS of them), then the
   blocks in order: the blocks depend on P alone, so the bits do not depend on the threads. */
#define RMTL_BAL_BLOCK 16384
#define RMTL_BAL_MAX_BLOCKS 128
/* the Gram matrix's pairs c <= a of RMTL_MAX_TASKS rows: the most sums rmtl_bal_row_sums takes */
#define RMTL_BAL_MAX_PAIRS (RMTL_MAX_TASKS * (RMTL_MAX_TASKS + 1) / 2)

/* the columns per block of a sum over n columns */
static int64_t rmtl_bal_block(int64_t n) {
    int64_t per = (n + RMTL_BAL_MAX_BLOCKS - 1) / RMTL_BAL_MAX_BLOCKS;
    return per > RMTL_BAL_BLOCK ? per : RMTL_BAL_BLOCK;
}

static const rmtl_bal_spec *const *const rmtl_bal_families[] = {
    rmtl_bal_scale_family, rmtl_bal_norm_family, rmtl_bal_project_family, rmtl_bal_solve_family};

const rmtl_bal_spec *rmtl_bal_at(int i) {
    for (size_t f = 0; f < sizeof rmtl_bal_families / sizeof rmtl_bal_families[0]; f++) {
        for (const rmtl_bal_spec *const *s = rmtl_bal_families[f]; *s != NULL; s++) {
            if (i-- == 0) {
                return *s;
            }
        }
    }
    return NULL;
}

void rmtl_balancer_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = *n_work = 0;
    if (b->spec->sizes != NULL) {
        b->spec->sizes(b, n_state, n_work);
    }
}

void rmtl_balancer_init(rmtl_balancer *b) {
    b->steps = b->epoch = 0;
    b->epoch_rows = 0.0;
    for (int k = 0; k < RMTL_MAX_TASKS; k++) {
        b->epoch_sum[k] = b->loss_first[k] = b->loss_last[k] = b->loss_before[k] = 0.0;
        b->weights[k] = 1.0;
    }
    b->has_weights = b->has_coef = 0;
    b->mult = NULL;
    if (b->spec->init != NULL) {
        b->spec->init(b);
    }
}

typedef struct {
    const float *x;
    int bad;
} rmtl_bal_finite_args;

RMTL_CLONES static void rmtl_bal_finite_range(void *ctx, int64_t lo, int64_t hi) {
    rmtl_bal_finite_args *a = ctx;
    int bad = 0;
    for (int64_t i = lo; i < hi; i++) {
        bad |= !isfinite(a->x[i]);
    }
    if (bad) {
        __atomic_store_n(&a->bad, 1, __ATOMIC_RELAXED);
    }
}

/* 1 if the n floats of x are finite */
static int rmtl_bal_finite(const float *x, int64_t n) {
    rmtl_bal_finite_args a = {x, 0};
    rmtl_parallel_for(n, RMTL_GRAIN_STREAM, rmtl_bal_finite_range, &a);
    return !a.bad;
}

/* every sample's losses join the epoch's sums, weighted by its rows */
static void rmtl_bal_count_losses(rmtl_balancer *b, const float *losses, int S, double rows) {
    for (int s = 0; s < S; s++) {
        for (int k = 0; k < b->K; k++) {
            b->epoch_sum[k] += rows * losses[s * b->K + k];
        }
        b->epoch_rows += rows;
    }
}

int rmtl_balancer_losses_only(const rmtl_balancer *b) {
    return b->spec->family == RMTL_BAL_LOSSES || (b->spec->equal != NULL && b->spec->equal(b));
}

int rmtl_balancer_step_weights(rmtl_balancer *b, double *w, const float *losses, double rows) {
    if (!rmtl_balancer_losses_only(b)) {
        return RMTL_ERR_ARG;
    }
    if (!rmtl_bal_finite(losses, b->K)) {
        return RMTL_ERR_NONFINITE;
    }
    if (b->spec->family == RMTL_BAL_LOSSES) {
        RMTL_TRY(b->spec->weights(b, w, losses));
    } else {
        for (int k = 0; k < b->K; k++) {
            w[k] = 1.0;
        }
    }
    for (int k = 0; k < b->K; k++) {
        b->weights[k] = w[k];
    }
    b->has_weights = 1;
    rmtl_bal_count_losses(b, losses, 1, rows);
    b->steps++;
    return RMTL_OK;
}

int rmtl_balancer_step(rmtl_balancer *b, float *dir, const float *losses, const float *jac,
                       double rows) {
    if (!rmtl_bal_finite(jac, (int64_t)b->S * b->K * b->P)) {
        return RMTL_ERR_NONFINITE;
    }
    return rmtl_balancer_step_finite(b, dir, losses, jac, rows);
}

int rmtl_balancer_step_finite(rmtl_balancer *b, float *dir, const float *losses, const float *jac,
                              double rows) {
    if (!rmtl_bal_finite(losses, (int64_t)b->S * b->K)) {
        return RMTL_ERR_NONFINITE;
    }
    if (b->spec->family == RMTL_BAL_LOSSES) {
        double w[RMTL_MAX_TASKS];
        RMTL_TRY(rmtl_balancer_step_weights(b, w, losses, rows));
        rmtl_bal_combine_coef(b, dir, w, jac);
        return RMTL_OK;
    }
    for (int k = 0; k < b->K; k++) {
        b->tower[k] = 1.0;
    }
    b->has_coef = 0;
    RMTL_TRY(b->spec->direction(b, dir, losses, jac));
    rmtl_bal_count_losses(b, losses, b->S, rows);
    b->steps++;
    return RMTL_OK;
}

int rmtl_balancer_after_step(rmtl_balancer *b, const float *losses) {
    if (b->spec->after_step == NULL) {
        return RMTL_OK;
    }
    if (!rmtl_bal_finite(losses, b->K)) {
        return RMTL_ERR_NONFINITE;
    }
    return b->spec->after_step(b, losses);
}

void rmtl_balancer_end_epoch(rmtl_balancer *b) {
    for (int k = 0; k < b->K; k++) {
        double mean = b->epoch_rows > 0.0 ? b->epoch_sum[k] / b->epoch_rows : 0.0;
        if (b->epoch == 0) {
            b->loss_first[k] = mean;
        }
        b->loss_before[k] = b->loss_last[k];
        b->loss_last[k] = mean;
        b->epoch_sum[k] = 0.0;
    }
    b->epoch_rows = 0.0;
    b->epoch++;
}

/* the stream of balancer draws ("BALA") */
#define RMTL_BAL_STREAM 0x42414C41ULL

uint64_t rmtl_bal_key(const rmtl_balancer *b) {
    return rmtl_rng_key(b->seed, RMTL_BAL_STREAM ^ ((uint64_t)b->steps << 32));
}

double rmtl_bal_uniform(const rmtl_balancer *b, int64_t index) {
    return rmtl_bal_uniform_at(rmtl_bal_key(b), index);
}

double rmtl_bal_normal(const rmtl_balancer *b, int64_t index) {
    double u1 = rmtl_bal_uniform(b, 2 * index), u2 = rmtl_bal_uniform(b, 2 * index + 1);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

typedef struct {
    float *dir;
    const double *w;
    const float *jac;
    const double *rows;
    int K;
    int64_t P, from;
} rmtl_bal_combine_args;

/* columns a combine job sums at a time, task by task (each column's sum in task order) */
#define RMTL_BAL_COMBINE_CHUNK 512

RMTL_CLONES static void rmtl_bal_combine_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_bal_combine_args *a = ctx;
    double acc[RMTL_BAL_COMBINE_CHUNK];
    for (int64_t j0 = a->from + lo; j0 < a->from + hi; j0 += RMTL_BAL_COMBINE_CHUNK) {
        int64_t left = a->from + hi - j0;
        int n = left < RMTL_BAL_COMBINE_CHUNK ? (int)left : RMTL_BAL_COMBINE_CHUNK;
        memset(acc, 0, sizeof acc);
        for (int k = 0; k < a->K; k++) {
            double w = a->w[k];
            size_t at = (size_t)k * a->P + (size_t)j0;
            if (a->jac != NULL) {
                const float *restrict x = a->jac + at;
                for (int j = 0; j < n; j++) {
                    acc[j] += w * (double)x[j];
                }
            } else {
                const double *restrict x = a->rows + at;
                for (int j = 0; j < n; j++) {
                    acc[j] += w * x[j];
                }
            }
        }
        for (int j = 0; j < n; j++) {
            a->dir[j0 + j] = (float)acc[j];
        }
    }
}

void rmtl_bal_combine_span(float *dir, const double *w, const float *jac, int K, int64_t P,
                           int64_t from, int64_t n) {
    rmtl_bal_combine_args a = {dir, w, jac, NULL, K, P, from};
    rmtl_parallel_for(n, RMTL_GRAIN_STREAM / K, rmtl_bal_combine_range, &a);
}

void rmtl_bal_combine(float *dir, const double *w, const float *jac, int K, int64_t P) {
    rmtl_bal_combine_span(dir, w, jac, K, P, 0, P);
}

void rmtl_bal_combine_coef(rmtl_balancer *b, float *dir, const double *coef, const float *jac) {
    for (int k = 0; k < b->K; k++) {
        b->coef[k] = coef[k];
    }
    b->has_coef = 1;
    rmtl_bal_combine(dir, coef, jac, b->K, b->P);
}

void rmtl_bal_combine_rows(float *dir, const double *w, const double *rows, int K, int64_t P) {
    rmtl_bal_combine_args a = {dir, w, NULL, rows, K, P, 0};
    rmtl_parallel_for(P, RMTL_GRAIN_STREAM / K, rmtl_bal_combine_range, &a);
}

typedef struct {
    double *partial; /* (blocks, K) */
    rmtl_bal_part_fn part;
    void *ctx;
    int K;
    int64_t P, block;
} rmtl_bal_sums_args;

static void rmtl_bal_sums_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_bal_sums_args *a = ctx;
    for (int64_t blk = lo; blk < hi; blk++) {
        int64_t start = blk * a->block, end = start + a->block < a->P ? start + a->block : a->P;
        for (int k = 0; k < a->K; k++) {
            a->partial[blk * a->K + k] = a->part(a->ctx, k, start, end);
        }
    }
}

void rmtl_bal_row_sums(double *out, int K, int64_t P, rmtl_bal_part_fn part, void *ctx) {
    double partial[RMTL_BAL_MAX_BLOCKS * RMTL_BAL_MAX_PAIRS];
    int64_t block = rmtl_bal_block(P), blocks = P > 0 ? (P + block - 1) / block : 0;
    rmtl_bal_sums_args a = {partial, part, ctx, K, P, block};
    rmtl_parallel_for(blocks, 1, rmtl_bal_sums_range, &a);
    for (int k = 0; k < K; k++) {
        double acc = 0.0;
        for (int64_t blk = 0; blk < blocks; blk++) {
            acc += partial[blk * K + k];
        }
        out[k] = acc;
    }
}

/* the Gram matrix's pairs c <= a of the rows of jac (K,P), pair a (a + 1) / 2 + c */
typedef struct {
    const float *jac;
    int64_t P, from;
    int a[RMTL_BAL_MAX_PAIRS], c[RMTL_BAL_MAX_PAIRS];
} rmtl_bal_gram_args;

/* pair p's product over the columns [from + lo, from + hi) */
RMTL_CLONES static double rmtl_bal_gram_part(void *ctx, int p, int64_t lo, int64_t hi) {
    const rmtl_bal_gram_args *g = ctx;
    const float *x = g->jac + (size_t)g->a[p] * g->P + g->from;
    const float *y = g->jac + (size_t)g->c[p] * g->P + g->from;
    return rmtl_dot_lanes(x + lo, y + lo, hi - lo);
}

void rmtl_bal_gram_span(double *G, const float *jac, int K, int64_t P, int64_t from, int64_t n) {
    double pair[RMTL_BAL_MAX_PAIRS];
    rmtl_bal_gram_args g = {.jac = jac, .P = P, .from = from};
    for (int a = 0; a < K; a++) {
        for (int c = 0; c <= a; c++) {
            g.a[a * (a + 1) / 2 + c] = a;
            g.c[a * (a + 1) / 2 + c] = c;
        }
    }
    rmtl_bal_row_sums(pair, K * (K + 1) / 2, n, rmtl_bal_gram_part, &g);
    for (int a = 0; a < K; a++) {
        for (int c = 0; c <= a; c++) {
            G[a * K + c] = G[c * K + a] = pair[a * (a + 1) / 2 + c];
        }
    }
}

void rmtl_bal_gram(double *G, const float *jac, int K, int64_t P) {
    rmtl_bal_gram_span(G, jac, K, P, 0, P);
}

double rmtl_bal_norm2(const float *x, int64_t n) {
    double G;
    rmtl_bal_gram_span(&G, x, 1, n, 0, n);
    return sqrt(G);
}

void rmtl_bal_softmax(double *out, const double *x, int n) {
    double top = x[0], sum = 0.0;
    for (int i = 1; i < n; i++) {
        top = x[i] > top ? x[i] : top;
    }
    for (int i = 0; i < n; i++) {
        out[i] = exp(x[i] - top);
        sum += out[i];
    }
    for (int i = 0; i < n; i++) {
        out[i] /= sum;
    }
}

void rmtl_bal_adam(rmtl_balancer *b, const double *g, int64_t t, const rmtl_adam *opt) {
    int K = b->K;
    double *x = b->state, *m = b->state + K, *v = b->state + 2 * K;
    double b1 = opt->beta1, b2 = opt->beta2, step = (double)t + 1.0;
    double c1 = 1.0 - pow(b1, step), c2 = sqrt(1.0 - pow(b2, step));
    for (int i = 0; i < K; i++) {
        double gi = g[i] + opt->weight_decay * x[i];
        m[i] = b1 * m[i] + (1.0 - b1) * gi;
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        x[i] -= opt->lr / c1 * m[i] / (sqrt(v[i]) / c2 + opt->eps);
    }
}

void rmtl_bal_adam_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = 3 * (int64_t)b->K;
    *n_work = 0;
}

void rmtl_bal_init_ones(rmtl_balancer *b) {
    for (int k = 0; k < b->K; k++) {
        b->state[k] = 1.0;
    }
}
