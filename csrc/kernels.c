#include "kernels.h"

#include <math.h>
#include <string.h>

#include "lanes.h"
#include "pool.h"
#include "rng.h"

/* Elementwise passes run over tiles of TILE_ROWS rows and TILE_COLS columns: a column block of
   the gathered tables stays in cache while the rows of the tile read it. 256 columns trained
   5-10% faster than 64 (long runs per gathered row, fewer passes) on the 2-core Xeon. */
#define TILE_ROWS 256
#define TILE_COLS 256

/* The parallel bodies (the *_range functions) copy their arguments into a local struct `a` in
   one assignment and read its fields: stores through their output pointers cannot alias a local
   copy, so its fields stay in registers across the loops and the loops over columns vectorize.
   Read through the ctx pointer, they are loaded again after every store (-fno-strict-aliasing):
   the dropout epilogue ran 5% and the experts' mix 8% more instructions that way. */

/* dropout over columns [j0, j1) of one row (j0 even, j1 - j0 <= TILE_COLS): two 24-bit
   uniforms from each 64-bit draw, keyed by (row, pair). The draws are taken first, in a loop of
   their own, so both loops vectorize (the clones' 64-bit multiplies); the same bits as one
   draw at a time. */
#if defined(__GNUC__)
__attribute__((always_inline)) /* into each clone of the epilogue, vectorized for its target */
#endif
static inline void rmtl_dropout_row(float *restrict o, rmtl_dropout drop, int i, int j0, int j1,
                                    int OC) {
    float scale = 1.0f / (1.0f - drop.p), p = drop.p;
    uint64_t base = (uint64_t)i * (uint64_t)((OC + 1) / 2) + (uint64_t)(j0 / 2),
             key = rmtl_rng_key(drop.seed, drop.stream), r[TILE_COLS / 2];
    int pairs = (j1 - j0) / 2;
    for (int k = 0; k < (j1 - j0 + 1) / 2; k++) {
        r[k] = rmtl_rng_at(key, base + (uint64_t)k);
    }
    float *restrict q = o + j0;
    for (int k = 0; k < pairs; k++) {
        float u0 = (float)((r[k] >> 8) & 0xFFFFFF) * (1.0f / 16777216.0f);
        float u1 = (float)(r[k] >> 40) * (1.0f / 16777216.0f);
        /* & not &&: no branch, so the loop vectorizes */
        q[2 * k] = ((q[2 * k] > 0.0f) & (u0 >= p)) ? q[2 * k] * scale : 0.0f;
        q[2 * k + 1] = ((q[2 * k + 1] > 0.0f) & (u1 >= p)) ? q[2 * k + 1] * scale : 0.0f;
    }
    if ((j1 - j0) % 2 == 1) { /* an odd last column: the low half of its pair's draw */
        float u0 = (float)((r[pairs] >> 8) & 0xFFFFFF) * (1.0f / 16777216.0f);
        q[2 * pairs] = (q[2 * pairs] > 0.0f && u0 >= p) ? q[2 * pairs] * scale : 0.0f;
    }
}

/* o[0, w) = (add ? o : 0) + a r[0, w), w <= TILE_COLS, inlined; a full tile's constant trip
   count vectorizes fully (GCC may still turn a partial tile's plain copy into a memmove call);
   a = 1 multiplies nothing */
static inline void rmtl_cols(float *restrict o, int add, float a, const float *restrict r, int w) {
    if (w == TILE_COLS) {
        for (int j = 0; j < TILE_COLS; j++) {
            o[j] = add ? o[j] + a * r[j] : a * r[j];
        }
        return;
    }
    for (int j = 0; j < w; j++) {
        o[j] = add ? o[j] + a * r[j] : a * r[j];
    }
}

/* rmtl_dense_epilogue's arguments; n: the gathered fields, nr: the row tiles */
typedef struct {
    float *out;
    int ld_out;
    const float *b;
    int init;
    const rmtl_gather *gather;
    const rmtl_lowrank *lowrank;
    int n_relu;
    rmtl_dropout drop;
    int B, OC, n, nr;
} rmtl_epilogue_args;

/* tiles [lo, hi) of rmtl_dense_epilogue, column block t / nr, row tile t % nr */
RMTL_CLONES static void rmtl_epilogue_range(void *ctx, int64_t lo, int64_t hi) {
    /* copies of the arguments and the low-rank terms (see the note at the top) */
    const rmtl_epilogue_args a = *(const rmtl_epilogue_args *)ctx;
    rmtl_lowrank lr = {0};
    if (a.lowrank != NULL) {
        lr = *a.lowrank;
    }
    for (int64_t t = lo; t < hi; t++) {
        int i0 = (t % a.nr) * TILE_ROWS, i1 = i0 + TILE_ROWS < a.B ? i0 + TILE_ROWS : a.B;
        int j0 = (t / a.nr) * TILE_COLS, j1 = j0 + TILE_COLS < a.OC ? j0 + TILE_COLS : a.OC;
        int jr = a.n_relu < j1 ? a.n_relu : j1;
        for (int i = i0; i < i1; i++) {
            float *o = a.out + (size_t)i * a.ld_out + j0;
            if (a.init) {
                rmtl_cols(o, 0, 1.0f, a.b + j0, j1 - j0);
            } else {
                rmtl_cols(o, 1, 1.0f, a.b + j0, j1 - j0);
            }
            for (int k = 0; k < lr.n; k++) {
                const float *x = lr.x[k] + (size_t)i * lr.d[k];
                for (int c = 0; c < lr.d[k]; c++) {
                    rmtl_cols(o, 1, x[c], lr.v[k] + (size_t)c * a.OC + j0, j1 - j0);
                }
            }
        }
        for (int g = 0; g < a.n; g++) {
            const int32_t *slot = a.gather->slot + (size_t)a.gather->field[g] * a.gather->ld;
            for (int i = i0; i < i1; i++) {
                rmtl_cols(a.out + (size_t)i * a.ld_out + j0, 1, 1.0f,
                          a.gather->rows[g] + (size_t)slot[i] * a.OC + j0, j1 - j0);
            }
        }
        for (int i = i0; i < i1; i++) {
            float *restrict o = a.out + (size_t)i * a.ld_out;
            if (a.drop.p > 0.0f && jr > j0) {
                rmtl_dropout_row(o, a.drop, i, j0, jr, a.OC);
                continue;
            }
            for (int j = j0; j < jr; j++) {
                o[j] = o[j] > 0.0f ? o[j] : 0.0f;
            }
        }
    }
}

void rmtl_dense_epilogue(float *out, int ld_out, const float *b, int init,
                         const rmtl_gather *gather, const rmtl_lowrank *lowrank, int n_relu,
                         rmtl_dropout drop, int B, int OC) {
    int n = gather != NULL ? gather->n : 0;
    int nc = (OC + TILE_COLS - 1) / TILE_COLS, nr = (B + TILE_ROWS - 1) / TILE_ROWS;
    /* tiles in column-block order: a block of the gathered tables stays in cache while every
       row tile reads it, and a tile's output rows while each field's rows are added in turn */
    rmtl_epilogue_args epilogue_args = {out,    ld_out, b, init, gather, lowrank,
                                        n_relu, drop,   B, OC,   n,      nr};
    rmtl_parallel_for(nr * nc,
                      rmtl_grain((double)TILE_ROWS * TILE_COLS * (n + 1), RMTL_GRAIN_COMPUTE),
                      rmtl_epilogue_range, &epilogue_args);
}

rmtl_gemm_op rmtl_dense_forward_op(float *out, int ld_out, const float *inp, int ld_in,
                                   const float *w, int B, int C, int OC) {
    rmtl_gemm_op op = {0, 1, B, OC, C, ld_in, C, ld_out, 1.0f, 0.0f, inp, w, out};
    return op;
}

void rmtl_dense_forward(float *out, int ld_out, const float *inp, int ld_in, const float *w,
                        const float *b, int n_relu, rmtl_dropout drop, int B, int C, int OC) {
    rmtl_gemm_op op = rmtl_dense_forward_op(out, ld_out, inp, ld_in, w, B, C, OC);
    rmtl_gemm_many(&op, 1);
    rmtl_dense_epilogue(out, ld_out, b, 0, NULL, NULL, n_relu, drop, B, OC);
}

/* rmtl_dense_prologue's arguments; scale: dropout's 1 / (1 - p), n: the scattered fields,
   w: the width of a column block */
typedef struct {
    float *db, *colsum;
    const rmtl_gather *scatter;
    const rmtl_lowrank *lowrank;
    float *dout;
    int ld_out;
    const float *out;
    int n_relu, B, OC;
    float scale;
    int n, w;
} rmtl_prologue_args;

/* dout's ReLU columns [j0, min(jr, ...)) of rows [i0, i1) become pre-activation gradients:
   out > 0 exactly where ReLU passed and dropout kept, so no mask is stored */
#if defined(__GNUC__)
__attribute__((always_inline)) /* into each clone */
#endif
static inline void rmtl_prologue_mask(float *restrict dout, const float *restrict out, int ld_out,
                                      float scale, int i0, int i1, int j0, int jr) {
    for (int i = i0; i < i1; i++) {
        float *restrict d = dout + (size_t)i * ld_out;
        const float *restrict o = out + (size_t)i * ld_out;
        /* a select, not a branch: the kept/dropped pattern is unpredictable */
        for (int j = j0; j < jr; j++) {
            d[j] *= o[j] > 0.0f ? scale : 0.0f;
        }
    }
}

/* column block blk: the bias gradient, the column sums and the low-rank gradients, summed in
   row order (the ReLU columns masked first, row by row, when mask is set) */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void rmtl_prologue_sums(const rmtl_prologue_args *a, int blk, int mask) {
    rmtl_lowrank lr = {0}; /* a copy, like the arguments (see the note at the top) */
    if (a->lowrank != NULL) {
        lr = *a->lowrank;
    }
    int j0 = blk * a->w, j1 = j0 + a->w < a->OC ? j0 + a->w : a->OC;
    int jr = a->n_relu < j0 ? j0 : (a->n_relu < j1 ? a->n_relu : j1);
    float acc[TILE_COLS] = {0};
    for (int k = 0; k < lr.n; k++) {
        for (int c = 0; c < lr.d[k]; c++) {
            memset(lr.v[k] + (size_t)c * a->OC + j0, 0, (size_t)(j1 - j0) * sizeof(float));
        }
    }
    for (int i = 0; i < a->B; i++) {
        float *restrict d = a->dout + (size_t)i * a->ld_out;
        if (mask) {
            rmtl_prologue_mask(a->dout, a->out, a->ld_out, a->scale, i, i + 1, j0, jr);
        }
        rmtl_cols(acc, 1, 1.0f, d + j0, j1 - j0);
        for (int k = 0; k < lr.n; k++) {
            const float *x = lr.x[k] + (size_t)i * lr.d[k];
            for (int c = 0; c < lr.d[k]; c++) {
                rmtl_cols(lr.v[k] + (size_t)c * a->OC + j0, 1, x[c], d + j0, j1 - j0);
            }
        }
    }
    for (int j = j0; j < j1; j++) {
        a->db[j] += acc[j - j0];
    }
    if (a->colsum != NULL) {
        memcpy(a->colsum + j0, acc, (size_t)(j1 - j0) * sizeof(float));
    }
}

/* column block blk of field g's sums by slot: each slot's rows in row order */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void rmtl_prologue_slots(const rmtl_prologue_args *a, int blk, int g) {
    const rmtl_gather *scatter = a->scatter;
    int j0 = blk * a->w, j1 = j0 + a->w < a->OC ? j0 + a->w : a->OC;
    const int32_t *start = scatter->start[g], *order = scatter->order[g];
    for (int s = 0; s < scatter->u[g]; s++) {
        float *sum = scatter->rows[g] + (size_t)s * a->OC + j0; /* every slot has a row */
        rmtl_cols(sum, 0, 1.0f, a->dout + (size_t)order[start[s]] * a->ld_out + j0, j1 - j0);
        for (int k = start[s] + 1; k < start[s + 1]; k++) {
            rmtl_cols(sum, 1, 1.0f, a->dout + (size_t)order[k] * a->ld_out + j0, j1 - j0);
        }
    }
}

/* one job per column block: masked and summed in one pass, then the sums by slot while the
   block is in cache */
RMTL_CLONES static void rmtl_prologue_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_prologue_args a = *(const rmtl_prologue_args *)ctx;
    for (int64_t blk = lo; blk < hi; blk++) {
        rmtl_prologue_sums(&a, (int)blk, 1);
        for (int g = 0; g < a.n; g++) {
            rmtl_prologue_slots(&a, (int)blk, g);
        }
    }
}

/* fewer column blocks than threads: the mask over rows first, then a job per block and part
   (part 0 the sums of rmtl_prologue_sums, part g + 1 field g's sums by slot) */
RMTL_CLONES static void rmtl_prologue_mask_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_prologue_args *a = ctx;
    int jr = a->n_relu < a->OC ? a->n_relu : a->OC;
    rmtl_prologue_mask(a->dout, a->out, a->ld_out, a->scale, (int)lo, (int)hi, 0, jr);
}

RMTL_CLONES static void rmtl_prologue_part_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_prologue_args a = *(const rmtl_prologue_args *)ctx;
    for (int64_t t = lo; t < hi; t++) {
        int blk = (int)(t / (a.n + 1)), part = (int)(t % (a.n + 1));
        if (part == 0) {
            rmtl_prologue_sums(&a, blk, 0);
        } else {
            rmtl_prologue_slots(&a, blk, part - 1);
        }
    }
}

void rmtl_dense_prologue(float *db, float *colsum, const rmtl_gather *scatter,
                         const rmtl_lowrank *lowrank, float *dout, int ld_out, const float *out,
                         int n_relu, float drop_p, int B, int OC) {
    float scale = drop_p > 0.0f ? 1.0f / (1.0f - drop_p) : 1.0f;
    int n = scatter != NULL ? scatter->n : 0;
    /* ReLU columns become pre-activation gradients here, and the bias gradient and the sums by
       slot are taken over column blocks. Threads own column blocks (and fields' sums by slot)
       and sum in row order: the same bits for any thread count. */
    int w = TILE_COLS, threads = rmtl_threads(); /* narrower blocks where there are fewer than
                                                     threads: same sums */
    while (w > 64 && (OC + w - 1) / w < threads) {
        w /= 2;
    }
    int nblk = (OC + w - 1) / w;
    rmtl_prologue_args prologue_args = {db,     colsum, scatter, lowrank, dout, ld_out, out,
                                        n_relu, B,      OC,      scale,   n,    w};
    if (nblk >= threads) {
        rmtl_parallel_for(nblk, rmtl_grain((double)B * w * (n + 1), RMTL_GRAIN_COMPUTE),
                          rmtl_prologue_range, &prologue_args);
        return;
    }
    /* a narrow layer (64 columns: one block) would leave every thread but one idle */
    rmtl_parallel_for(B, rmtl_grain(OC, RMTL_GRAIN_COMPUTE), rmtl_prologue_mask_range,
                      &prologue_args);
    rmtl_parallel_for((int64_t)nblk * (n + 1), 1, rmtl_prologue_part_range, &prologue_args);
}

int rmtl_dense_backward_ops(rmtl_gemm_op *ops, float *dinp, int ld_in, float *dw, const float *dout,
                            int ld_out, const float *inp, const float *w, int B, int C, int OC) {
    rmtl_gemm_op dw_op = {1, 0, OC, C, B, ld_out, ld_in, C, 1.0f, 1.0f, dout, inp, dw};
    rmtl_gemm_op dx_op = {0, 0, B, C, OC, ld_out, C, ld_in, 1.0f, 1.0f, dout, w, dinp};
    ops[0] = dw_op;
    ops[1] = dx_op;
    return dinp != NULL ? 2 : 1;
}

void rmtl_dense_backward(float *dinp, int ld_in, float *dw, float *db, float *dout, int ld_out,
                         const float *out, const float *inp, const float *w, int n_relu,
                         float drop_p, int B, int C, int OC) {
    rmtl_gemm_op ops[2];
    rmtl_dense_prologue(db, NULL, NULL, NULL, dout, ld_out, out, n_relu, drop_p, B, OC);
    rmtl_gemm_many(ops,
                   rmtl_dense_backward_ops(ops, dinp, ld_in, dw, dout, ld_out, inp, w, B, C, OC));
}

/* field f's n-th looked-up code: the batch's row n, or its n-th distinct code */
static int32_t rmtl_field_code(const int32_t *codes, const rmtl_distinct *u, int f, int F, int n) {
    return u != NULL && u->use[f] ? u->code[(size_t)f * u->cap + n] : codes[(size_t)n * F + f];
}

static int rmtl_field_rows(const rmtl_distinct *u, int f, int B) {
    return u != NULL && u->use[f] ? u->u[f] : B;
}

/* the embedding kernels' arguments: the forward copies table rows of src into dst, the
   backward adds rows of src into table rows of dst */
typedef struct {
    float *dst;
    const float *src;
    const int32_t *codes;
    const rmtl_distinct *u;
    const int64_t *field_offset;
    int B, F, E, ld_out;
} rmtl_embedding_args;

/* batch rows [lo, hi) of rmtl_embedding_forward */
RMTL_CLONES static void rmtl_embedding_gather_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_embedding_args a = *(const rmtl_embedding_args *)ctx;
    for (int64_t i = lo; i < hi; i++) {
        for (int f = 0; f < a.F; f++) {
            if (i >= rmtl_field_rows(a.u, f, a.B)) {
                continue;
            }
            int32_t c = rmtl_field_code(a.codes, a.u, f, a.F, i);
            const float *row = a.src + (size_t)(a.field_offset[f] + c) * a.E;
            memcpy(a.dst + (size_t)i * a.ld_out + (size_t)f * a.E, row,
                   (size_t)a.E * sizeof(float));
        }
    }
}

void rmtl_embedding_forward(float *out, const int32_t *codes, const rmtl_distinct *u,
                            const float *table, const int64_t *field_offset, int B, int F, int E,
                            int ld_out) {
    rmtl_embedding_args embedding_gather_args = {out, table, codes, u,     field_offset,
                                                 B,   F,     E,     ld_out};
    rmtl_parallel_for(B, rmtl_grain((double)F * E, RMTL_GRAIN_STREAM), rmtl_embedding_gather_range,
                      &embedding_gather_args);
}

/* fields [lo, hi) of rmtl_embedding_backward */
RMTL_CLONES static void rmtl_embedding_scatter_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_embedding_args a = *(const rmtl_embedding_args *)ctx;
    for (int64_t f = lo; f < hi; f++) {
        int n = rmtl_field_rows(a.u, f, a.B);
        for (int i = 0; i < n; i++) {
            int64_t r = a.field_offset[f] + rmtl_field_code(a.codes, a.u, f, a.F, i);
            if (r == 0) {
                continue;
            }
            float *g = a.dst + (size_t)r * a.E;
            const float *d = a.src + (size_t)i * a.ld_out + (size_t)f * a.E;
            for (int e = 0; e < a.E; e++) {
                g[e] += d[e];
            }
        }
    }
}

void rmtl_embedding_backward(float *dtable, const float *dout, const int32_t *codes,
                             const rmtl_distinct *u, const int64_t *field_offset, int B, int F,
                             int E, int ld_out) {
    /* fields own disjoint row ranges, so threads split by field never collide;
       row 0 is the padding row (padding_idx=0) and never receives a gradient */
    rmtl_embedding_args embedding_scatter_args = {dtable, dout, codes, u,     field_offset,
                                                  B,      F,    E,     ld_out};
    rmtl_parallel_for(F, rmtl_grain((double)B * E, RMTL_GRAIN_STREAM), rmtl_embedding_scatter_range,
                      &embedding_scatter_args);
}

void rmtl_tables_build(float *tab, const float *table, const float *num_w, const float *num_b,
                       const float *w, const float *b, const int64_t *field_offset, int64_t rows,
                       int F, int D, int E, int OC) {
    int C = (F + 1) * E;
    const float *wd = w + (size_t)F * E; /* (OC,E) dense block, row stride C */
    float *last = tab + (size_t)(rows + D) * OC;
    for (int f = 0; f < F; f++) {
        int64_t lo = field_offset[f], hi = f + 1 < F ? field_offset[f + 1] : rows;
        rmtl_gemm(0, 1, (int)(hi - lo), OC, E, 1.0f, table + (size_t)lo * E, E, w + (size_t)f * E,
                  C, 0.0f, tab + (size_t)lo * OC, OC);
    }
    /* (D,OC) = num_w^T (D,E) wd^T: the dense Linear multiplied into w's dense block */
    rmtl_gemm(1, 1, D, OC, E, 1.0f, num_w, D, wd, C, 0.0f, tab + (size_t)rows * OC, OC);
    memcpy(last, b, (size_t)OC * sizeof(float));
    rmtl_gemm(0, 1, 1, OC, E, 1.0f, num_b, E, wd, C, 1.0f, last, OC);
}

/* rmtl_tables_forward's arguments; last: the tables' last row (bias) */
typedef struct {
    float *out;
    int ld_out;
    const int32_t *codes;
    const float *dense;
    const float *tab;
    const int64_t *field_offset;
    int n_relu, F, D, OC;
    int64_t rows;
    const float *last;
} rmtl_tables_rows_args;

/* batch rows [lo, hi) of rmtl_tables_forward */
RMTL_CLONES static void rmtl_tables_rows_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_tables_rows_args a = *(const rmtl_tables_rows_args *)ctx;
    for (int64_t i = lo; i < hi; i++) {
        float *restrict o = a.out + (size_t)i * a.ld_out;
        const int32_t *c = a.codes + (size_t)i * a.F;
        memcpy(o, a.last, (size_t)a.OC * sizeof(float));
        for (int f = 0; f < a.F; f++) {
            const float *restrict t = a.tab + (size_t)(a.field_offset[f] + c[f]) * a.OC;
            for (int j = 0; j < a.OC; j++) {
                o[j] += t[j];
            }
        }
        for (int d = 0; d < a.D; d++) {
            const float *restrict t = a.tab + (size_t)(a.rows + d) * a.OC;
            float x = a.dense[(size_t)i * a.D + d];
            for (int j = 0; j < a.OC; j++) {
                o[j] += x * t[j];
            }
        }
        for (int j = 0; j < a.n_relu; j++) {
            o[j] = o[j] > 0.0f ? o[j] : 0.0f;
        }
    }
}

void rmtl_tables_forward(float *out, int ld_out, const int32_t *codes, const float *dense,
                         const float *tab, const int64_t *field_offset, int n_relu, int B, int F,
                         int D, int OC, int64_t rows) {
    const float *last = tab + (size_t)(rows + D) * OC;
    rmtl_tables_rows_args tables_rows_args = {out,    ld_out, codes, dense, tab,  field_offset,
                                              n_relu, F,      D,     OC,    rows, last};
    rmtl_parallel_for(B, rmtl_grain(OC, RMTL_GRAIN_COMPUTE), rmtl_tables_rows_range,
                      &tables_rows_args);
}

void rmtl_head_forward(float *prob, float *sig, const float *const *logit, int esmm, int B, int T) {
    for (int i = 0; i < B; i++) {
        for (int k = 0; k < T; k++) {
            float s = 1.0f / (1.0f + expf(-logit[k][i]));
            sig[(size_t)i * T + k] = s;
            prob[(size_t)i * T + k] = (esmm && k == 1) ? s * sig[(size_t)i * T] : s;
        }
    }
}

/* BCE as torch.nn.functional.binary_cross_entropy: logs clamped at -100,
   d/dp = (p - y) / max(p (1 - p), 1e-12) */
double rmtl_head_backward(float *const *dlogit, const float *prob, const float *sig,
                          const float *label, const float *weight, int esmm, int B, int T) {
    double loss = 0.0;
    float norm = 1.0f / ((float)B * (float)T);
    for (int i = 0; i < B; i++) {
        float dp[2] = {0.0f, 0.0f};
        for (int k = 0; k < T; k++) {
            size_t ik = (size_t)i * T + k;
            float p = prob[ik], y = label[ik], w = weight ? weight[ik] : 1.0f;
            double lp = log((double)p), l1p = log1p(-(double)p);
            lp = lp < -100.0 ? -100.0 : lp;
            l1p = l1p < -100.0 ? -100.0 : l1p;
            loss -= (double)w * ((double)y * lp + (1.0 - (double)y) * l1p);
            float den = p * (1.0f - p);
            float g = w * norm * (p - y) / (den > 1e-12f ? den : 1e-12f);
            if (esmm && k < 2) {
                dp[k] = g;
                continue;
            }
            float s = sig[ik];
            dlogit[k][i] = g * s * (1.0f - s);
        }
        if (esmm) {
            float s0 = sig[(size_t)i * T], s1 = sig[(size_t)i * T + 1];
            float ds0 = dp[0] + dp[1] * s1, ds1 = dp[1] * s0;
            dlogit[0][i] = ds0 * s0 * (1.0f - s0);
            dlogit[1][i] = ds1 * s1 * (1.0f - s1);
        }
    }
    return loss / ((double)B * (double)T);
}

void rmtl_head_backward_prob(float *const *dlogit, const float *dprob, const float *sig, int esmm,
                             int B, int T) {
    for (int i = 0; i < B; i++) {
        for (int k = 0; k < T; k++) {
            size_t ik = (size_t)i * T + k;
            /* ESMM: p1 = s1 * s0, so s0 also receives dp1 * s1 */
            float ds = dprob[ik];
            if (esmm && k == 0) {
                ds += dprob[ik + 1] * sig[ik + 1];
            } else if (esmm && k == 1) {
                ds *= sig[ik - 1];
            }
            dlogit[k][i] = ds * sig[ik] * (1.0f - sig[ik]);
        }
    }
}

/* the softmax kernels' arguments: x (B,n) row stride ld, and the softmax p for the backward */
typedef struct {
    float *x;
    const float *p;
    int ld, n;
} rmtl_softmax_args;

/* rows [lo, hi) of rmtl_softmax_forward */
RMTL_CLONES static void rmtl_softmax_rows_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_softmax_args a = *(const rmtl_softmax_args *)ctx;
    for (int64_t i = lo; i < hi; i++) {
        float *r = a.x + (size_t)i * a.ld, mx = r[0], sum = 0.0f;
        for (int e = 1; e < a.n; e++) {
            mx = r[e] > mx ? r[e] : mx;
        }
        for (int e = 0; e < a.n; e++) {
            r[e] = expf(r[e] - mx);
            sum += r[e];
        }
        for (int e = 0; e < a.n; e++) {
            r[e] /= sum;
        }
    }
}

void rmtl_softmax_forward(float *x, int ld, int B, int n) {
    rmtl_softmax_args softmax_rows_args = {x, NULL, ld, n};
    rmtl_parallel_for(B, rmtl_grain(n, RMTL_GRAIN_COMPUTE), rmtl_softmax_rows_range,
                      &softmax_rows_args);
}

/* rows [lo, hi) of rmtl_softmax_backward */
RMTL_CLONES static void rmtl_softmax_grad_rows_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_softmax_args a = *(const rmtl_softmax_args *)ctx;
    for (int64_t i = lo; i < hi; i++) {
        float *g = a.x + (size_t)i * a.ld;
        const float *q = a.p + (size_t)i * a.ld;
        float dot = 0.0f;
        for (int e = 0; e < a.n; e++) {
            dot += q[e] * g[e];
        }
        for (int e = 0; e < a.n; e++) {
            g[e] = q[e] * (g[e] - dot);
        }
    }
}

void rmtl_softmax_backward(float *d, const float *p, int ld, int B, int n) {
    rmtl_softmax_args softmax_grad_rows_args = {d, p, ld, n};
    rmtl_parallel_for(B, rmtl_grain(n, RMTL_GRAIN_COMPUTE), rmtl_softmax_grad_rows_range,
                      &softmax_grad_rows_args);
}

/* the mix kernels' arguments: the forward writes out, the backward adds into dx and dgate */
typedef struct {
    float *out;
    float *const *dx;
    float *dgate;
    const float *dout;
    int ld_out;
    const float *gate;
    int ld_gate;
    const float *const *x;
    const int *ld_x;
    int n, W;
} rmtl_mix_args;

/* rows [lo, hi) of rmtl_mix_forward */
RMTL_CLONES static void rmtl_mix_rows_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_mix_args a = *(const rmtl_mix_args *)ctx;
    for (int64_t i = lo; i < hi; i++) {
        float *o = a.out + (size_t)i * a.ld_out;
        const float *g = a.gate + (size_t)i * a.ld_gate;
        for (int c = 0; c < a.W; c++) {
            o[c] = 0.0f;
        }
        for (int e = 0; e < a.n; e++) {
            const float *xe = a.x[e] + (size_t)i * a.ld_x[e];
            float ge = g[e];
            for (int c = 0; c < a.W; c++) {
                o[c] += ge * xe[c];
            }
        }
    }
}

void rmtl_mix_forward(float *out, int ld_out, const float *gate, int ld_gate, const float *const *x,
                      const int *ld_x, int n, int B, int W) {
    rmtl_mix_args mix_rows_args = {out, NULL, NULL, NULL, ld_out, gate, ld_gate, x, ld_x, n, W};
    rmtl_parallel_for(B, rmtl_grain((double)n * W, RMTL_GRAIN_STREAM), rmtl_mix_rows_range,
                      &mix_rows_args);
}

/* rows [lo, hi) of rmtl_mix_backward */
RMTL_CLONES static void rmtl_mix_grad_rows_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_mix_args a = *(const rmtl_mix_args *)ctx;
    for (int64_t i = lo; i < hi; i++) {
        const float *d = a.dout + (size_t)i * a.ld_out;
        const float *g = a.gate + (size_t)i * a.ld_gate;
        float *dg = a.dgate + (size_t)i * a.ld_gate;
        for (int e = 0; e < a.n; e++) {
            const float *xe = a.x[e] + (size_t)i * a.ld_x[e];
            float *dxe = a.dx[e] + (size_t)i * a.ld_x[e];
            float ge = g[e];
            for (int c = 0; c < a.W; c++) {
                dxe[c] += ge * d[c];
            }
            dg[e] += (float)rmtl_dot_lanes(d, xe, a.W);
        }
    }
}

void rmtl_mix_backward(float *const *dx, float *dgate, const float *dout, int ld_out,
                       const float *gate, int ld_gate, const float *const *x, const int *ld_x,
                       int n, int B, int W) {
    rmtl_mix_args mix_grad_rows_args = {NULL,    dx, dgate, dout, ld_out, gate,
                                        ld_gate, x,  ld_x,  n,    W};
    rmtl_parallel_for(B, rmtl_grain((double)n * W, RMTL_GRAIN_STREAM), rmtl_mix_grad_rows_range,
                      &mix_grad_rows_args);
}

/* the attention kernels' arguments: the forward writes mix and attn_out, the backward adds into
   dx0, dx1 and writes y; inv = 1 / sqrt(D) */
typedef struct {
    float *mix, *dx0, *dx1, *y;
    const float *attn, *dmix, *x0, *x1, *z, *c;
    float *attn_out;
    int ld_mix, ld_x0, ld_x1, ld_z, D;
    float inv;
} rmtl_attention2_args;

/* rows [lo, hi) of rmtl_attention2_forward */
static void rmtl_attention2_rows_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_attention2_args a = *(const rmtl_attention2_args *)ctx;
    for (int64_t i = lo; i < hi; i++) {
        const float *x[2] = {a.x0 + (size_t)i * a.ld_x0, a.x1 + (size_t)i * a.ld_x1};
        const float *z = a.z + (size_t)i * a.ld_z;
        float s[2];
        for (int t = 0; t < 2; t++) {
            float dot = 0.0f;
            for (int k = 0; k < a.D; k++) {
                dot += x[t][k] * (z[t * a.D + k] + a.c[k]);
            }
            s[t] = dot * a.inv;
        }
        float mx = s[0] > s[1] ? s[0] : s[1];
        float e0 = expf(s[0] - mx), e1 = expf(s[1] - mx);
        float a0 = e0 / (e0 + e1), a1 = e1 / (e0 + e1);
        a.attn_out[2 * (size_t)i] = a0;
        a.attn_out[2 * (size_t)i + 1] = a1;
        float *o = a.mix + (size_t)i * a.ld_mix;
        for (int k = 0; k < a.D; k++) {
            o[k] = a0 * x[0][k] + a1 * x[1][k];
        }
    }
}

/* the arguments both directions share */
static rmtl_attention2_args rmtl_attention2_inputs(const float *x0, int ld_x0, const float *x1,
                                                   int ld_x1, const float *z, int ld_z,
                                                   const float *c, int ld_mix, int D) {
    rmtl_attention2_args args = {0};
    args.x0 = x0;
    args.x1 = x1;
    args.z = z;
    args.c = c;
    args.ld_mix = ld_mix;
    args.ld_x0 = ld_x0;
    args.ld_x1 = ld_x1;
    args.ld_z = ld_z;
    args.D = D;
    args.inv = 1.0f / sqrtf((float)D);
    return args;
}

void rmtl_attention2_forward(float *mix, int ld_mix, float *attn, const float *x0, int ld_x0,
                             const float *x1, int ld_x1, const float *z, int ld_z, const float *c,
                             int B, int D) {
    rmtl_attention2_args args = rmtl_attention2_inputs(x0, ld_x0, x1, ld_x1, z, ld_z, c, ld_mix, D);
    args.mix = mix;
    args.attn_out = attn;
    rmtl_parallel_for(B, rmtl_grain(4.0 * D, RMTL_GRAIN_COMPUTE), rmtl_attention2_rows_range,
                      &args);
}

/* rows [lo, hi) of rmtl_attention2_backward */
static void rmtl_attention2_grad_rows_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments (see the note at the top) */
    const rmtl_attention2_args a = *(const rmtl_attention2_args *)ctx;
    for (int64_t i = lo; i < hi; i++) {
        const float *x[2] = {a.x0 + (size_t)i * a.ld_x0, a.x1 + (size_t)i * a.ld_x1};
        float *dx[2] = {a.dx0 + (size_t)i * a.ld_x0, a.dx1 + (size_t)i * a.ld_x1};
        const float *z = a.z + (size_t)i * a.ld_z, *dm = a.dmix + (size_t)i * a.ld_mix;
        float *y = a.y + (size_t)i * a.ld_z;
        float att[2] = {a.attn[2 * (size_t)i], a.attn[2 * (size_t)i + 1]}, da[2];
        for (int t = 0; t < 2; t++) {
            float dot = 0.0f;
            for (int k = 0; k < a.D; k++) {
                dot += dm[k] * x[t][k];
            }
            da[t] = dot;
        }
        float mean = att[0] * da[0] + att[1] * da[1];
        for (int t = 0; t < 2; t++) {
            float ds = att[t] * (da[t] - mean) * a.inv;
            for (int k = 0; k < a.D; k++) {
                dx[t][k] += att[t] * dm[k] + ds * (2.0f * z[t * a.D + k] + a.c[k]);
                y[t * a.D + k] = ds * x[t][k];
            }
        }
    }
}

void rmtl_attention2_backward(float *dx0, float *dx1, float *y, int ld_z, const float *dmix,
                              int ld_mix, const float *attn, const float *x0, int ld_x0,
                              const float *x1, int ld_x1, const float *z, const float *c, int B,
                              int D) {
    rmtl_attention2_args args = rmtl_attention2_inputs(x0, ld_x0, x1, ld_x1, z, ld_z, c, ld_mix, D);
    args.dx0 = dx0;
    args.dx1 = dx1;
    args.y = y;
    args.dmix = dmix;
    args.attn = attn;
    rmtl_parallel_for(B, rmtl_grain(6.0 * D, RMTL_GRAIN_COMPUTE), rmtl_attention2_grad_rows_range,
                      &args);
}
