/* rmtl core: public types, status codes and entry points used by the binding. */
#ifndef RMTL_H
#define RMTL_H

#include <stddef.h>
#include <stdint.h>

enum {
    RMTL_OK = 0,
    RMTL_ERR_NOMEM = 1,
    RMTL_ERR_ARG = 2,      /* an argument is out of its documented range */
    RMTL_ERR_INDEX = 3,    /* a categorical code is outside [0, field_dims) */
    RMTL_ERR_NONFINITE = 4 /* a NaN or infinity reached a place that forbids it */
};

enum {
    RMTL_SINGLETASK = 0,
    RMTL_SHAREDBOTTOM = 1,
    RMTL_ESMM = 2,
    RMTL_OMOE = 3,
    RMTL_MMOE = 4,
    RMTL_PLE = 5,
    RMTL_AITM = 6,
    RMTL_PLE_PAPER = 7, /* the PLE paper's version; RMTL_PLE is the authors' module */
    RMTL_NUM_BACKBONES = 8
};

#define RMTL_MAX_LAYERS 8
#define RMTL_MAX_TASKS 8
#define RMTL_MAX_EXPERTS 64 /* experts one gate mixes */
#define RMTL_NAME_LEN 64

/* One named tensor inside a flat buffer; rows x cols, cols == 0 for a vector. */
typedef struct {
    char name[RMTL_NAME_LEN];
    int rows, cols;
    size_t offset, size;
    int init; /* RMTL_INIT_* */
    int fan_in;
} rmtl_tensor;

typedef struct {
    rmtl_tensor *tensors;
    int count, capacity;
    size_t total;
    float *param, *grad, *adam_m, *adam_v;
    /* spans [frozen_lo[i], frozen_hi[i]) the optimiser never touches (padding rows) */
    size_t *frozen_lo, *frozen_hi;
    int n_frozen;
    long adam_step;
} rmtl_params;

/* Activation buffers sized per batch row: for a pass over B rows (rows = B, set by the
   forward pass or by zeroing the gradients), an activation of width w at column offset c lives
   at buf + c * rows and holds (rows, w) row-major values, so a pass over B rows uses the first
   B * width floats whatever the capacity. */
typedef struct {
    size_t width; /* sum of reserved widths */
    int cap;      /* batch rows the buffers can hold */
    int rows;     /* batch rows of the current pass, <= cap */
    float *val, *grad;
} rmtl_arena;

typedef struct {
    int in, out;
    size_t w, b;   /* parameter offsets of weight (out, in) and bias (out) */
    size_t act;    /* arena column of the output */
    int relu;      /* ReLU + dropout epilogue (hidden layers) or plain (output layer) */
    uint32_t salt; /* distinguishes dropout masks of different layers */
} rmtl_linear;

typedef struct {
    int n;
    rmtl_linear layer[RMTL_MAX_LAYERS + 1];
} rmtl_mlp;

#define RMTL_MAX_FRONT_LIN 2

/* A Linear(d, E) block of the front end's output: the numerical layer, a critic's action
   layer. Its input (B, d) and, when wanted, the input's gradient are set per batch. */
typedef struct {
    size_t w, b; /* parameter offsets of weight (E, d) and bias (E) */
    int d;
    const float *x; /* (B, d) input of the current batch */
    float *dx;      /* (B, d) gradient the backward adds into, or NULL */
} rmtl_front_linear;

typedef struct {
    int F, D, E;
    int width;                /* (F+1)*E, or (F+2)*E with a critic's action field */
    size_t table, table_rows; /* embedding table offset and sum(field_dims) */
    size_t num_w, num_b;      /* numerical_layer (E, D), (E) */
    size_t act;               /* arena column of the (B, width) front-end output */
    /* the blocks after the fields, columns [(F + k) E, (F + k + 1) E): lin[0] is the
       numerical layer. With fold (set by each forward), the first layers read the blocks'
       inputs through their folded weights (first.c) and the blocks are not computed. */
    int n_lin, fold;
    rmtl_front_linear lin[RMTL_MAX_FRONT_LIN];
} rmtl_frontend;

/* A first layer over a front end (first.c). Training and prediction run it over the distinct
   codes of each field in the batch (rmtl_unique); prediction may instead evaluate it from
   per-code tables over the whole vocabulary (rmtl_lookup_build): its output is then a sum
   of table rows instead of a GEMM over the front-end output */
typedef struct {
    int front;       /* index into rmtl_model.front */
    int out, n_relu; /* output width; columns [0, n_relu) get ReLU + dropout */
    size_t w, b;     /* parameter offsets of weight (out, front width) and bias (out) */
    size_t act;      /* arena column of the (B, out) output */
    size_t tab;      /* offset of its (table_rows + D + 1, out) tables in rmtl_model.tab */
    uint32_t salt;   /* the layer's dropout salt */
} rmtl_lookup;

enum { RMTL_LOOKUP_AUTO = 0, RMTL_LOOKUP_NEVER = 1, RMTL_LOOKUP_ALWAYS = 2 };

/* How first layers treat a field: RMTL_UNIQUE_AUTO chooses per field and batch by cost,
   NEVER always runs the plain product over the batch's rows, ALWAYS the product over the
   field's distinct codes */
enum { RMTL_UNIQUE_AUTO = 0, RMTL_UNIQUE_NEVER = 1, RMTL_UNIQUE_ALWAYS = 2 };

/* one product C = alpha op(A) op(B) + beta C, row-major, with op(A) (M, K) and op(B) (K, N) */
typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
} rmtl_gemm_op;

/* The distinct codes of each field in a batch and the workspace of the products over them,
   sized for cap rows by rmtl_unique_reserve. For a field with use[f]: its u[f] distinct codes
   in first-occurrence order at code + f * cap, row i's index among them at slot[f * cap + i],
   the rows holding slot s at order[f * cap + start[f * (cap + 1) + s] ..], and the (u[f], out)
   products or aggregated gradients at work + woff[f]. The n_use fields with use[f] are
   listed in field, with their counts in field_u, products in rows, starts and orders in
   field_start and field_order. */
typedef struct {
    int cap, B;             /* rows reserved, rows of the last build */
    int32_t *code, *slot;   /* (F, cap) each */
    int32_t *start, *order; /* (F, cap + 1) and (F, cap) */
    int32_t *mark;          /* (table_rows): a code's slot during a build, else -1 */
    int *u, *use;           /* (F) each */
    size_t *woff;           /* (F) */
    float *work;
    int n_use;
    int *field, *field_u;                       /* (F) each */
    float **rows;                               /* (F) */
    const int32_t **field_start, **field_order; /* (F) each */
    float *fold;                                /* a first layer's folded blocks (first.c) */
    int fold_d;                                 /* the widest block's d */
    rmtl_gemm_op *ops; /* (4 F + 2): a first layer's products, run together (first.c) */
} rmtl_unique;

typedef struct {
    int kind, F, D, T, E;
    int n_bottom, n_tower;
    int bottom[RMTL_MAX_LAYERS], tower[RMTL_MAX_LAYERS];
    float dropout;
    uint64_t seed;
    int32_t *field_dims;
    int64_t *field_offset;

    rmtl_params params;
    rmtl_arena arena;
    int n_front, n_bottom_mlp;
    rmtl_frontend front[RMTL_MAX_TASKS]; /* one, or one per task (SingleTask) */
    rmtl_mlp *bottoms;                   /* one, or one per task */
    rmtl_mlp *towers;                    /* one per task */
    int n_experts; /* OMoE, MMoE, both PLEs: experts (PLE: E/2 per task + E/2 shared) */
    struct rmtl_experts
        *experts; /* ESMM, OMoE, MMoE, PLE, AITM: the layers between front end and towers */

    int n_lookup; /* the first layers over the front ends */
    int unique;   /* RMTL_UNIQUE_* */
    rmtl_unique uniq;
    rmtl_lookup lookup[RMTL_MAX_TASKS];
    float *tab; /* their tables, tab_size floats, alive during a prediction using them */
    size_t tab_size;
    int use_tab; /* forward reads the first layers from tab (inside rmtl_model_predict only) */

    int training;     /* dropout active */
    uint64_t counter; /* training forwards so far: keys the dropout masks */

    /* batch buffers, cap rows each: gathered inputs and the head */
    int32_t *codes;
    float *dense, *labels, *prob, *sig;
} rmtl_model;

typedef struct {
    int kind, F, D, T, E;
    const int32_t *field_dims;
    int n_bottom, n_tower;
    const int *bottom, *tower;
    float dropout;
    uint64_t seed;
    int n_experts; /* OMoE, MMoE: >= 1; both PLEs: even >= 2; ignored otherwise */
} rmtl_model_config;

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} rmtl_adam;

/* gemm.c */
typedef void (*rmtl_sgemm_fn)(char *ta, char *tb, int *m, int *n, int *k, float *alpha, float *a,
                              int *lda, float *b, int *ldb, float *beta, float *c, int *ldc);
/* set_local: OpenBLAS's openblas_set_num_threads_local (this thread's count, returns the
   previous), or NULL: with it, large products are split over the pool, each part on one thread */
typedef int (*rmtl_blas_threads_fn)(int n);
void rmtl_gemm_set_blas(rmtl_sgemm_fn fn, rmtl_blas_threads_fn set_local);
int rmtl_gemm_uses_blas(void);
void rmtl_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);
/* independent products (no op reads another's C) in one parallel region; reorders ops */
void rmtl_gemm_many(rmtl_gemm_op *ops, int n);
void rmtl_gemm_builtin(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc);

/* The hot loop bodies also get AVX2 and AVX-512 (x86-64-v4) clones, one chosen when the module
   loads (GCC on x86-64 Linux: target_clones, an ifunc). Every clone gives the same bits: the core
   is built as ISO C (-std=c99, so no FMA contraction) and vectorizing these loops keeps each
   element's order of operations. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define RMTL_CLONES __attribute__((target_clones("default", "avx2", "arch=x86-64-v4")))
#else
#define RMTL_CLONES
#endif

/* pool.c: the core's own threads. rmtl_parallel_for runs fn(ctx, lo, hi) over chunks of
   [0, n) of at least grain indices (fewer than 2 chunks: inline on the caller), returning when
   all are done; bodies must not depend on which thread runs a chunk. rmtl_threads_set(n <= 0):
   OMP_NUM_THREADS, else the cores this process may use. */
typedef void (*rmtl_range_fn)(void *ctx, int64_t lo, int64_t hi);
void rmtl_parallel_for(int64_t n, int64_t grain, rmtl_range_fn fn, void *ctx);
/* the grain of a loop whose index costs work_per_index: chunks of at least min_work */
int64_t rmtl_grain(double work_per_index, double min_work);
void rmtl_threads_set(int n);
int rmtl_threads(void);
/* the CPUs the machine has (whatever this process may use), at least 1 */
int rmtl_machine_cpus(void);

/* backbones.c */
int rmtl_model_create(rmtl_model **out, const rmtl_model_config *cfg);
void rmtl_model_free(rmtl_model *m);
int rmtl_model_init(rmtl_model *m, const rmtl_model_config *cfg);
/* checks and copies what every net shares (sizes, layer widths, dropout, seed, field offsets)
   into a zeroed m; kind and n_experts are the caller's. The caller builds the layers. */
void rmtl_model_release(rmtl_model *m);
/* frees what m owns but not m itself (a net embedded in a larger struct, e.g. a critic) */
int rmtl_model_reserve(rmtl_model *m, int batch);
int rmtl_model_forward(rmtl_model *m, const int32_t *codes, const float *dense, int B);
void rmtl_model_backward(rmtl_model *m, const int32_t *codes, const float *dense, int B);
void rmtl_model_zero_grad(rmtl_model *m, int B);

/* index of the first code outside [0, field_dims[f]) of the (n, F) codes, or -1; inline, so a
   per-row check in a gather loop costs no call (a field index i % F per code would cost a
   division each) */
static inline int64_t rmtl_codes_check(const int32_t *codes, int64_t n, int F,
                                       const int32_t *field_dims) {
    for (int64_t r = 0; r < n; r++) {
        const int32_t *row = codes + (size_t)r * F;
        for (int f = 0; f < F; f++) {
            if ((uint32_t)row[f] >= (uint32_t)field_dims[f]) { /* negative codes wrap above */
                return r * F + f;
            }
        }
    }
    return -1;
}

/* train.c */
double rmtl_model_head_backward(rmtl_model *m, const int32_t *codes, const float *dense,
                                const float *labels, const float *weights, int B);
void rmtl_model_prob_backward(rmtl_model *m, const float *dprob, const int32_t *codes,
                              const float *dense, int B);
int rmtl_model_loss_backward(rmtl_model *m, double *loss, const int32_t *codes, const float *dense,
                             const float *labels, const float *weights, int B);
typedef struct {
    const int32_t *codes; /* (n,F) */
    const float *dense;   /* (n,D) */
    const float *labels;  /* (n,T) */
    int64_t n;
    const float *extra; /* (n,X) features only the critics see; NULL when X = 0 */
    int X;
} rmtl_rows;
int rmtl_gather_batch(int32_t *codes, float *dense, float *labels, const rmtl_rows *data,
                      const int64_t *rows, int B, int F, int D, int T, const int32_t *field_dims);
/* copies rows[0..B) of data into codes (B,F), dense (B,D) and labels (B,T; skipped if NULL);
   RMTL_ERR_INDEX if a row is outside [0, data->n) or a copied code outside [0, field_dims).
   Loops read only these private copies, checked here: the data arrays may be changed by
   another thread after the binding validated them. */
void rmtl_gather_state(float *out, const rmtl_rows *data, const int64_t *rows, int B, int D,
                       int keep);
/* the critics' dense state of rows[0..B) into out (B, keep + X): the first keep of the D
   dense columns of each row, then its X extra columns (rows checked by rmtl_gather_batch) */
int rmtl_model_predict(rmtl_model *m, float *out, const int32_t *codes, const float *dense,
                       int64_t n, int B, int lookup);

/* params.c */
void rmtl_params_adam_step(rmtl_params *p, const rmtl_adam *opt);

/* rng.c; draw index of (seed, stream) is rmtl_rng_at(rmtl_rng_key(seed, stream), index), inline
   for loops that take many draws of one stream */
static inline uint64_t rmtl_rng_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t rmtl_rng_key(uint64_t seed, uint64_t stream) {
    return rmtl_rng_mix(seed ^ rmtl_rng_mix(stream * 0xD1B54A32D192ED03ULL + 1));
}

static inline uint64_t rmtl_rng_at(uint64_t key, uint64_t index) {
    return rmtl_rng_mix(key ^ rmtl_rng_mix(index + 0xA0761D6478BD642FULL));
}

uint64_t rmtl_rng_u64(uint64_t seed, uint64_t stream, uint64_t index);
float rmtl_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);
float rmtl_rng_normal(uint64_t seed, uint64_t stream, uint64_t index);
void rmtl_shuffle(int64_t *out, int64_t n, uint64_t seed, uint64_t stream);
/* the stream of the batch permutations (ASCII "PERM") */
#define RMTL_STREAM_PERMUTE 0x5045524dULL
/* the permutation of n batch rows at optimiser step `step` (the steps taken before it):
   rmtl_shuffle(out, n, rmtl_rng_u64(seed, RMTL_STREAM_PERMUTE, step), RMTL_STREAM_PERMUTE) */
void rmtl_step_permutation(int64_t *out, int64_t n, uint64_t seed, uint64_t step);

/* metrics.c: scratch arrays are caller-provided so the metrics never allocate; the ranking
   metrics take RMTL_METRICS_SCRATCH n int64 */
#define RMTL_METRICS_SCRATCH 4
int rmtl_auc(double *out, const double *score, const float *label, int64_t n, int64_t *scratch);
int rmtl_logloss(double *out, const float *prob, const float *label, int64_t n);
int rmtl_session_logloss(double *out, const float *prob, const float *label, const int64_t *offsets,
                         int64_t n_sessions);
int rmtl_gauc(double *out, const double *score, const float *label, const int64_t *group, int64_t n,
              int64_t *scratch);
/* oracle metrics of true probabilities (synthetic data) */
int rmtl_oracle_auc(double *out, const double *prob, int64_t n, int64_t *scratch);
int rmtl_oracle_logloss(double *out, const float *prob, int64_t n);

#endif
