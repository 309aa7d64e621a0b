#include "kernels.h"

#include <math.h>
#include <string.h>

/* Elementwise passes run over tiles of TILE_ROWS rows and TILE_COLS columns: a column block of
   the gathered tables stays in cache while the rows of the tile read it. 256 columns trained
   5-10% faster than 64 (long runs per gathered row, fewer passes) on the 2-core Xeon. */
#define TILE_ROWS 256
#define TILE_COLS 256

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

typedef struct {
    float *out;
    int ld_out;
    const float *b;
    int init;
    const rmtl_gather *gather;
    const rmtl_lowrank *lowrank;
    int n_relu;
    rmtl_dropout drop;
    int B;
    int OC;
    int n;
    int nr;
} rmtl_epilogue_args;

RMTL_CLONES static void rmtl_epilogue_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_epilogue_args *args = ctx;
    int n = args->n;
    int nr = args->nr;
    int B = args->B;
    int OC = args->OC;
    int n_relu = args->n_relu;
    float *out = args->out;
    int ld_out = args->ld_out;
    const float *b = args->b;
    const rmtl_gather *gather = args->gather;
    rmtl_lowrank lr = {0}; /* a local copy: stores through out cannot alias it */
    if (args->lowrank != NULL) {
        lr = *args->lowrank;
    }
    int init = args->init;
    rmtl_dropout drop = args->drop;
    for (int64_t t = lo_; t < hi_; t++) {
        int i0 = (t % nr) * TILE_ROWS, i1 = i0 + TILE_ROWS < B ? i0 + TILE_ROWS : B;
        int j0 = (t / nr) * TILE_COLS, j1 = j0 + TILE_COLS < OC ? j0 + TILE_COLS : OC;
        int jr = n_relu < j1 ? n_relu : j1;
        for (int i = i0; i < i1; i++) {
            float *o = out + (size_t)i * ld_out + j0;
            if (init) {
                rmtl_cols(o, 0, 1.0f, b + j0, j1 - j0);
            } else {
                rmtl_cols(o, 1, 1.0f, b + j0, j1 - j0);
            }
            for (int k = 0; k < lr.n; k++) {
                const float *x = lr.x[k] + (size_t)i * lr.d[k];
                for (int c = 0; c < lr.d[k]; c++) {
                    rmtl_cols(o, 1, x[c], lr.v[k] + (size_t)c * OC + j0, j1 - j0);
                }
            }
        }
        for (int g = 0; g < n; g++) {
            const int32_t *slot = gather->slot + (size_t)gather->field[g] * gather->ld;
            for (int i = i0; i < i1; i++) {
                rmtl_cols(out + (size_t)i * ld_out + j0, 1, 1.0f,
                          gather->rows[g] + (size_t)slot[i] * OC + j0, j1 - j0);
            }
        }
        for (int i = i0; i < i1; i++) {
            float *restrict o = out + (size_t)i * ld_out;
            if (drop.p > 0.0f && jr > j0) {
                rmtl_dropout_row(o, drop, i, j0, jr, OC);
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
    rmtl_parallel_for(nr * nc, rmtl_grain((double)TILE_ROWS * TILE_COLS * (n + 1), 32768),
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

typedef struct {
    float *db;
    float *colsum;
    const rmtl_gather *scatter;
    const rmtl_lowrank *lowrank;
    float *dout;
    int ld_out;
    const float *out;
    int n_relu;
    int B;
    int OC;
    float scale;
    int n;
    int w;
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
static inline void rmtl_prologue_sums(const rmtl_prologue_args *args, int blk, int mask) {
    /* locals, not reads through args: a store through dout could alias args for all the
       compiler knows, and the ReLU pass would not vectorize */
    float *db = args->db, *colsum = args->colsum, *dout = args->dout, scale = args->scale;
    const float *out = args->out;
    rmtl_lowrank lr = {0};
    if (args->lowrank != NULL) {
        lr = *args->lowrank;
    }
    int ld_out = args->ld_out, n_relu = args->n_relu, B = args->B, OC = args->OC, w = args->w;
    int j0 = blk * w, j1 = j0 + w < OC ? j0 + w : OC;
    int jr = n_relu < j0 ? j0 : (n_relu < j1 ? n_relu : j1);
    float acc[TILE_COLS] = {0};
    for (int k = 0; k < lr.n; k++) {
        for (int c = 0; c < lr.d[k]; c++) {
            memset(lr.v[k] + (size_t)c * OC + j0, 0, (size_t)(j1 - j0) * sizeof(float));
        }
    }
    for (int i = 0; i < B; i++) {
        float *restrict d = dout + (size_t)i * ld_out;
        if (mask) {
            rmtl_prologue_mask(dout, out, ld_out, scale, i, i + 1, j0, jr);
        }
        rmtl_cols(acc, 1, 1.0f, d + j0, j1 - j0);
        for (int k = 0; k < lr.n; k++) {
            const float *x = lr.x[k] + (size_t)i * lr.d[k];
            for (int c = 0; c < lr.d[k]; c++) {
                rmtl_cols(lr.v[k] + (size_t)c * OC + j0, 1, x[c], d + j0, j1 - j0);
            }
        }
    }
    for (int j = j0; j < j1; j++) {
        db[j] += acc[j - j0];
    }
    if (colsum != NULL) {
        memcpy(colsum + j0, acc, (size_t)(j1 - j0) * sizeof(float));
    }
}

/* column block blk of field g's sums by slot: each slot's rows in row order */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void rmtl_prologue_slots(const rmtl_prologue_args *args, int blk, int g) {
    const rmtl_gather *scatter = args->scatter;
    const float *dout = args->dout;
    int ld_out = args->ld_out, OC = args->OC, w = args->w;
    int j0 = blk * w, j1 = j0 + w < OC ? j0 + w : OC;
    const int32_t *start = scatter->start[g], *order = scatter->order[g];
    for (int s = 0; s < scatter->u[g]; s++) {
        float *sum = scatter->rows[g] + (size_t)s * OC + j0; /* every slot has a row */
        rmtl_cols(sum, 0, 1.0f, dout + (size_t)order[start[s]] * ld_out + j0, j1 - j0);
        for (int k = start[s] + 1; k < start[s + 1]; k++) {
            rmtl_cols(sum, 1, 1.0f, dout + (size_t)order[k] * ld_out + j0, j1 - j0);
        }
    }
}

/* one job per column block: masked and summed in one pass, then the sums by slot while the
   block is in cache */
RMTL_CLONES static void rmtl_prologue_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_prologue_args *args = ctx;
    for (int64_t blk = lo_; blk < hi_; blk++) {
        rmtl_prologue_sums(args, (int)blk, 1);
        for (int g = 0; g < args->n; g++) {
            rmtl_prologue_slots(args, (int)blk, g);
        }
    }
}

/* fewer column blocks than threads: the mask over rows first, then a job per block and part
   (part 0 the sums of rmtl_prologue_sums, part g + 1 field g's sums by slot) */
RMTL_CLONES static void rmtl_prologue_mask_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_prologue_args *args = ctx;
    int jr = args->n_relu < args->OC ? args->n_relu : args->OC;
    rmtl_prologue_mask(args->dout, args->out, args->ld_out, args->scale, (int)lo_, (int)hi_, 0, jr);
}

RMTL_CLONES static void rmtl_prologue_part_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_prologue_args *args = ctx;
    for (int64_t t = lo_; t < hi_; t++) {
        int blk = (int)(t / (args->n + 1)), part = (int)(t % (args->n + 1));
        if (part == 0) {
            rmtl_prologue_sums(args, blk, 0);
        } else {
            rmtl_prologue_slots(args, blk, part - 1);
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
    int w = TILE_COLS; /* narrower blocks where there are fewer than threads: same sums */
    while (w > 64 && (OC + w - 1) / w < rmtl_threads()) {
        w /= 2;
    }
    int nblk = (OC + w - 1) / w;
    rmtl_prologue_args prologue_args = {db,     colsum, scatter, lowrank, dout, ld_out, out,
                                        n_relu, B,      OC,      scale,   n,    w};
    if (nblk >= rmtl_threads()) {
        rmtl_parallel_for(nblk, rmtl_grain((double)B * w * (n + 1), 32768), rmtl_prologue_range,
                          &prologue_args);
        return;
    }
    /* a narrow layer (64 columns: one block) would leave every thread but one idle */
    rmtl_parallel_for(B, rmtl_grain(OC, 32768), rmtl_prologue_mask_range, &prologue_args);
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
static int32_t rmtl_field_code(const int32_t *codes, const rmtl_unique *u, int f, int F, int n) {
    return u != NULL && u->use[f] ? u->code[(size_t)f * u->cap + n] : codes[(size_t)n * F + f];
}

static int rmtl_field_rows(const rmtl_unique *u, int f, int B) {
    return u != NULL && u->use[f] ? u->u[f] : B;
}

typedef struct {
    float *dst;
    const float *src;
    const int32_t *codes;
    const rmtl_unique *u;
    const int64_t *field_offset;
    int B;
    int F;
    int E;
    int ld_out;
} rmtl_embedding_args;

RMTL_CLONES static void rmtl_embedding_gather_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_embedding_args *args = ctx;
    int F = args->F;
    const rmtl_unique *u = args->u;
    int B = args->B;
    const int32_t *codes = args->codes;
    const float *src = args->src;
    const int64_t *field_offset = args->field_offset;
    int E = args->E;
    float *dst = args->dst;
    int ld_out = args->ld_out;
    for (int64_t i = lo_; i < hi_; i++) {
        for (int f = 0; f < F; f++) {
            if (i >= rmtl_field_rows(u, f, B)) {
                continue;
            }
            int32_t c = rmtl_field_code(codes, u, f, F, i);
            const float *row = src + (size_t)(field_offset[f] + c) * E;
            memcpy(dst + (size_t)i * ld_out + (size_t)f * E, row, (size_t)E * sizeof(float));
        }
    }
}

void rmtl_embedding_forward(float *out, const int32_t *codes, const rmtl_unique *u,
                            const float *table, const int64_t *field_offset, int B, int F, int E,
                            int ld_out) {
    rmtl_embedding_args embedding_gather_args = {out, table, codes, u,     field_offset,
                                                 B,   F,     E,     ld_out};
    rmtl_parallel_for(B, rmtl_grain((double)F * E, 65536), rmtl_embedding_gather_range,
                      &embedding_gather_args);
}

RMTL_CLONES static void rmtl_embedding_scatter_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_embedding_args *args = ctx;
    const rmtl_unique *u = args->u;
    int B = args->B;
    const int64_t *field_offset = args->field_offset;
    const int32_t *codes = args->codes;
    int F = args->F;
    float *dst = args->dst;
    int E = args->E;
    const float *src = args->src;
    int ld_out = args->ld_out;
    for (int64_t f = lo_; f < hi_; f++) {
        int n = rmtl_field_rows(u, f, B);
        for (int i = 0; i < n; i++) {
            int64_t r = field_offset[f] + rmtl_field_code(codes, u, f, F, i);
            if (r == 0) {
                continue;
            }
            float *g = dst + (size_t)r * E;
            const float *d = src + (size_t)i * ld_out + (size_t)f * E;
            for (int e = 0; e < E; e++) {
                g[e] += d[e];
            }
        }
    }
}

void rmtl_embedding_backward(float *dtable, const float *dout, const int32_t *codes,
                             const rmtl_unique *u, const int64_t *field_offset, int B, int F, int E,
                             int ld_out) {
    /* fields own disjoint row ranges, so threads split by field never collide;
       row 0 is the padding row (padding_idx=0) and never receives a gradient */
    rmtl_embedding_args embedding_scatter_args = {dtable, dout, codes, u,     field_offset,
                                                  B,      F,    E,     ld_out};
    rmtl_parallel_for(F, rmtl_grain((double)B * E, 65536), rmtl_embedding_scatter_range,
                      &embedding_scatter_args);
}

void rmtl_lookup_build(float *tab, const float *table, const float *num_w, const float *num_b,
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
    /* (D,OC) = num_w^T (D,E) wd^T: the dense Linear folded into w's dense block */
    rmtl_gemm(1, 1, D, OC, E, 1.0f, num_w, D, wd, C, 0.0f, tab + (size_t)rows * OC, OC);
    memcpy(last, b, (size_t)OC * sizeof(float));
    rmtl_gemm(0, 1, 1, OC, E, 1.0f, num_b, E, wd, C, 1.0f, last, OC);
}

typedef struct {
    float *out;
    int ld_out;
    const int32_t *codes;
    const float *dense;
    const float *tab;
    const int64_t *field_offset;
    int n_relu;
    int F;
    int D;
    int OC;
    int64_t rows;
    const float *last;
} rmtl_lookup_rows_args;

RMTL_CLONES static void rmtl_lookup_rows_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_lookup_rows_args *args = ctx;
    float *out = args->out;
    int ld_out = args->ld_out;
    const int32_t *codes = args->codes;
    int F = args->F;
    const float *last = args->last;
    int OC = args->OC;
    const float *tab = args->tab;
    const int64_t *field_offset = args->field_offset;
    int D = args->D;
    int64_t rows = args->rows;
    const float *dense = args->dense;
    int n_relu = args->n_relu;
    for (int64_t i = lo_; i < hi_; i++) {
        float *restrict o = out + (size_t)i * ld_out;
        const int32_t *c = codes + (size_t)i * F;
        memcpy(o, last, (size_t)OC * sizeof(float));
        for (int f = 0; f < F; f++) {
            const float *restrict t = tab + (size_t)(field_offset[f] + c[f]) * OC;
            for (int j = 0; j < OC; j++) {
                o[j] += t[j];
            }
        }
        for (int d = 0; d < D; d++) {
            const float *restrict t = tab + (size_t)(rows + d) * OC;
            float x = dense[(size_t)i * D + d];
            for (int j = 0; j < OC; j++) {
                o[j] += x * t[j];
            }
        }
        for (int j = 0; j < n_relu; j++) {
            o[j] = o[j] > 0.0f ? o[j] : 0.0f;
        }
    }
}

void rmtl_lookup_forward(float *out, int ld_out, const int32_t *codes, const float *dense,
                         const float *tab, const int64_t *field_offset, int n_relu, int B, int F,
                         int D, int OC, int64_t rows) {
    const float *last = tab + (size_t)(rows + D) * OC;
    rmtl_lookup_rows_args lookup_rows_args = {out,    ld_out, codes, dense, tab,  field_offset,
                                              n_relu, F,      D,     OC,    rows, last};
    rmtl_parallel_for(B, rmtl_grain(OC, 32768), rmtl_lookup_rows_range, &lookup_rows_args);
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

typedef struct {
    float *x;
    const float *p;
    int ld;
    int n;
} rmtl_softmax_args;

RMTL_CLONES static void rmtl_softmax_rows_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_softmax_args *args = ctx;
    int n = args->n;
    float *x = args->x;
    int ld = args->ld;
    for (int64_t i = lo_; i < hi_; i++) {
        float *r = x + (size_t)i * ld, mx = r[0], sum = 0.0f;
        for (int e = 1; e < n; e++) {
            mx = r[e] > mx ? r[e] : mx;
        }
        for (int e = 0; e < n; e++) {
            r[e] = expf(r[e] - mx);
            sum += r[e];
        }
        for (int e = 0; e < n; e++) {
            r[e] /= sum;
        }
    }
}

void rmtl_softmax_forward(float *x, int ld, int B, int n) {
    rmtl_softmax_args softmax_rows_args = {x, NULL, ld, n};
    rmtl_parallel_for(B, rmtl_grain(n, 32768), rmtl_softmax_rows_range, &softmax_rows_args);
}

RMTL_CLONES static void rmtl_softmax_grad_rows_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_softmax_args *args = ctx;
    int n = args->n;
    float *x = args->x;
    int ld = args->ld;
    const float *p = args->p;
    for (int64_t i = lo_; i < hi_; i++) {
        float *g = x + (size_t)i * ld;
        const float *q = p + (size_t)i * ld;
        float dot = 0.0f;
        for (int e = 0; e < n; e++) {
            dot += q[e] * g[e];
        }
        for (int e = 0; e < n; e++) {
            g[e] = q[e] * (g[e] - dot);
        }
    }
}

void rmtl_softmax_backward(float *d, const float *p, int ld, int B, int n) {
    rmtl_softmax_args softmax_grad_rows_args = {d, p, ld, n};
    rmtl_parallel_for(B, rmtl_grain(n, 32768), rmtl_softmax_grad_rows_range,
                      &softmax_grad_rows_args);
}

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
    int n;
    int W;
} rmtl_mix_args;

RMTL_CLONES static void rmtl_mix_rows_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_mix_args *args = ctx;
    int n = args->n;
    float *out = args->out;
    int ld_out = args->ld_out;
    const float *gate = args->gate;
    int ld_gate = args->ld_gate;
    int W = args->W;
    const int *ld_x = args->ld_x;
    for (int64_t i = lo_; i < hi_; i++) {
        float *o = out + (size_t)i * ld_out;
        const float *g = gate + (size_t)i * ld_gate;
        for (int c = 0; c < W; c++) {
            o[c] = 0.0f;
        }
        for (int e = 0; e < n; e++) {
            const float *xe = args->x[e] + (size_t)i * ld_x[e];
            float ge = g[e];
            for (int c = 0; c < W; c++) {
                o[c] += ge * xe[c];
            }
        }
    }
}

void rmtl_mix_forward(float *out, int ld_out, const float *gate, int ld_gate, const float *const *x,
                      const int *ld_x, int n, int B, int W) {
    rmtl_mix_args mix_rows_args = {out, NULL, NULL, NULL, ld_out, gate, ld_gate, x, ld_x, n, W};
    rmtl_parallel_for(B, rmtl_grain((double)n * W, 65536), rmtl_mix_rows_range, &mix_rows_args);
}

RMTL_CLONES static void rmtl_mix_grad_rows_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_mix_args *args = ctx;
    int n = args->n;
    const float *dout = args->dout;
    int ld_out = args->ld_out;
    const float *gate = args->gate;
    int ld_gate = args->ld_gate;
    float *dgate = args->dgate;
    const int *ld_x = args->ld_x;
    int W = args->W;
    for (int64_t i = lo_; i < hi_; i++) {
        const float *d = dout + (size_t)i * ld_out;
        const float *g = gate + (size_t)i * ld_gate;
        float *dg = dgate + (size_t)i * ld_gate;
        for (int e = 0; e < n; e++) {
            const float *xe = args->x[e] + (size_t)i * ld_x[e];
            float *dxe = args->dx[e] + (size_t)i * ld_x[e];
            float ge = g[e], dot = 0.0f;
            for (int c = 0; c < W; c++) {
                dot += d[c] * xe[c];
                dxe[c] += ge * d[c];
            }
            dg[e] += dot;
        }
    }
}

void rmtl_mix_backward(float *const *dx, float *dgate, const float *dout, int ld_out,
                       const float *gate, int ld_gate, const float *const *x, const int *ld_x,
                       int n, int B, int W) {
    rmtl_mix_args mix_grad_rows_args = {NULL,    dx, dgate, dout, ld_out, gate,
                                        ld_gate, x,  ld_x,  n,    W};
    rmtl_parallel_for(B, rmtl_grain((double)n * W, 65536), rmtl_mix_grad_rows_range,
                      &mix_grad_rows_args);
}

typedef struct {
    float *mix, *dx0, *dx1, *y;
    const float *attn, *dmix, *x0, *x1, *z, *c;
    float *attn_out;
    int ld_mix, ld_x0, ld_x1, ld_z, D;
    float inv;
} rmtl_attention2_args;

static void rmtl_attention2_rows_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_attention2_args *args = ctx;
    int D = args->D, ld_z = args->ld_z;
    const float *c = args->c;
    for (int64_t i = lo_; i < hi_; i++) {
        const float *x[2] = {args->x0 + (size_t)i * args->ld_x0,
                             args->x1 + (size_t)i * args->ld_x1};
        const float *z = args->z + (size_t)i * ld_z;
        float s[2];
        for (int t = 0; t < 2; t++) {
            float dot = 0.0f;
            for (int k = 0; k < D; k++) {
                dot += x[t][k] * (z[t * D + k] + c[k]);
            }
            s[t] = dot * args->inv;
        }
        float mx = s[0] > s[1] ? s[0] : s[1];
        float e0 = expf(s[0] - mx), e1 = expf(s[1] - mx);
        float a0 = e0 / (e0 + e1), a1 = e1 / (e0 + e1);
        args->attn_out[2 * (size_t)i] = a0;
        args->attn_out[2 * (size_t)i + 1] = a1;
        float *o = args->mix + (size_t)i * args->ld_mix;
        for (int k = 0; k < D; k++) {
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
    rmtl_parallel_for(B, rmtl_grain(4.0 * D, 32768), rmtl_attention2_rows_range, &args);
}

static void rmtl_attention2_grad_rows_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_attention2_args *args = ctx;
    int D = args->D, ld_z = args->ld_z;
    const float *c = args->c;
    for (int64_t i = lo_; i < hi_; i++) {
        const float *x[2] = {args->x0 + (size_t)i * args->ld_x0,
                             args->x1 + (size_t)i * args->ld_x1};
        float *dx[2] = {args->dx0 + (size_t)i * args->ld_x0, args->dx1 + (size_t)i * args->ld_x1};
        const float *z = args->z + (size_t)i * ld_z, *dm = args->dmix + (size_t)i * args->ld_mix;
        float *y = args->y + (size_t)i * ld_z;
        float a[2] = {args->attn[2 * (size_t)i], args->attn[2 * (size_t)i + 1]}, da[2];
        for (int t = 0; t < 2; t++) {
            float dot = 0.0f;
            for (int k = 0; k < D; k++) {
                dot += dm[k] * x[t][k];
            }
            da[t] = dot;
        }
        float mean = a[0] * da[0] + a[1] * da[1];
        for (int t = 0; t < 2; t++) {
            float ds = a[t] * (da[t] - mean) * args->inv;
            for (int k = 0; k < D; k++) {
                dx[t][k] += a[t] * dm[k] + ds * (2.0f * z[t * D + k] + c[k]);
                y[t * D + k] = ds * x[t][k];
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
    rmtl_parallel_for(B, rmtl_grain(6.0 * D, 32768), rmtl_attention2_grad_rows_range, &args);
}
