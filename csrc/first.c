/* The distinct first layer: the first layer over a front end over the batch's distinct codes;
   see first.h. */
#include "first.h"

#include <stdlib.h>
#include <string.h>

#include "pool.h"

/* A field runs over its u distinct codes when the multiply-adds saved, (B - u) E per output
   column, outweigh reading and adding one gathered row per batch row in the forward and
   the backward, which costs about this many multiply-adds per row and column: training
   ESMM and MMoE with every field forced one way and the other crossed over at 10-16 for
   embed 16-128 and first layers 64-1,024 wide (benchmarks/RESULTS.md) */
#define RMTL_DISTINCT_GATHER_COST 12

void rmtl_distinct_free(rmtl_distinct *u) {
    free(u->code);
    free(u->slot);
    free(u->mark);
    free(u->u);
    free(u->use);
    free(u->woff);
    free(u->work);
    free(u->field);
    free(u->field_u);
    free(u->rows);
    free(u->start);
    free(u->order);
    free(u->field_start);
    free(u->field_order);
    free(u->fold);
    free(u->ops);
    memset(u, 0, sizeof(*u));
}

int rmtl_distinct_reserve(rmtl_model *m, int cap) {
    rmtl_distinct *u = &m->distinct;
    if (cap <= u->cap) {
        return RMTL_OK;
    }
    int F = m->F, out = 0, d = 0;
    size_t rows = (size_t)(m->field_offset[F - 1] + m->field_dims[F - 1]), n = 0;
    for (int i = 0; i < m->n_first; i++) {
        out = m->first[i].out > out ? m->first[i].out : out;
    }
    for (int f = 0; f < m->n_front; f++) {
        for (int k = 0; k < m->front[f].n_lin; k++) {
            d = m->front[f].lin[k].d > d ? m->front[f].lin[k].d : d;
        }
    }
    rmtl_distinct_free(u);
    u->code = malloc((size_t)cap * F * sizeof(int32_t));
    u->slot = malloc((size_t)cap * F * sizeof(int32_t));
    u->mark = malloc(rows * sizeof(int32_t));
    u->u = calloc((size_t)F, sizeof(int));
    u->use = calloc((size_t)F, sizeof(int));
    u->woff = malloc((size_t)F * sizeof(size_t));
    u->field = malloc((size_t)F * sizeof(int));
    u->field_u = malloc((size_t)F * sizeof(int));
    u->rows = malloc((size_t)F * sizeof(float *));
    u->start = malloc((size_t)(cap + 1) * F * sizeof(int32_t));
    u->order = malloc((size_t)cap * F * sizeof(int32_t));
    u->field_start = malloc((size_t)F * sizeof(int32_t *));
    u->field_order = malloc((size_t)F * sizeof(int32_t *));
    for (int f = 0; u->woff != NULL && f < F; f++) {
        u->woff[f] = n;
        n += (size_t)(m->field_dims[f] < cap ? m->field_dims[f] : cap) * (size_t)out;
    }
    u->work = malloc((n ? n : 1) * sizeof(float));
    /* the bias, RMTL_MAX_FRONT_LIN blocks' (1 + d, out) rows, one block's (E, 1 + d) */
    u->fold_d = d;
    u->fold = malloc(((size_t)out * (1 + RMTL_MAX_FRONT_LIN * (1 + (size_t)d)) +
                      (size_t)m->E * (1 + (size_t)d)) *
                     sizeof(float));
    /* per field two products, per run of plain columns (at most F + 1) two */
    u->ops = malloc((4 * (size_t)F + 2) * sizeof(rmtl_gemm_op));
    if (!u->code || !u->slot || !u->mark || !u->u || !u->use || !u->woff || !u->work || !u->field ||
        !u->field_u || !u->rows || !u->start || !u->order || !u->field_start || !u->field_order ||
        !u->fold || !u->ops) {
        rmtl_distinct_free(u);
        return RMTL_ERR_NOMEM;
    }
    memset(u->mark, 0xff, rows * sizeof(int32_t));
    u->cap = cap;
    return RMTL_OK;
}

/* rmtl_distinct_build's arguments; mode: RMTL_FIRST_LAYER_* for this batch */
typedef struct {
    rmtl_distinct *u;
    const int32_t *codes;
    const rmtl_model *m;
    int B, F, mode;
} rmtl_distinct_fields_args;

/* fields [lo, hi) of rmtl_distinct_build */
static void rmtl_distinct_fields_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_distinct_fields_args *a = ctx;
    rmtl_distinct *u = a->u;
    /* locals: the loops over rows read them per row, and their stores into u's arrays could
       alias *a for all the compiler knows */
    const int32_t *codes = a->codes;
    int B = a->B, F = a->F;
    for (int64_t f = lo; f < hi; f++) {
        int32_t *mark = u->mark + a->m->field_offset[f], *code = u->code + (size_t)f * u->cap;
        int32_t *slot = u->slot + (size_t)f * u->cap;
        int n = 0;
        u->use[f] = 0;
        if (a->mode == RMTL_FIRST_LAYER_PLAIN) {
            continue;
        }
        for (int i = 0; i < B; i++) {
            int32_t c = codes[(size_t)i * F + f];
            if (mark[c] < 0) {
                mark[c] = n;
                code[n++] = c;
            }
            slot[i] = mark[c];
        }
        for (int s = 0; s < n; s++) {
            mark[code[s]] = -1;
        }
        u->u[f] = n;
        u->use[f] = a->mode == RMTL_FIRST_LAYER_DISTINCT ||
                    (long)(B - n) * a->m->E > (long)RMTL_DISTINCT_GATHER_COST * B;
        if (u->use[f]) {
            /* the rows by slot, each slot's in row order (a counting sort) */
            int32_t *start = u->start + (size_t)f * (u->cap + 1);
            int32_t *order = u->order + (size_t)f * u->cap;
            memset(start, 0, (size_t)(n + 1) * sizeof(int32_t));
            for (int i = 0; i < B; i++) {
                start[slot[i] + 1]++;
            }
            for (int s = 0; s < n; s++) {
                start[s + 1] += start[s];
            }
            for (int i = 0; i < B; i++) {
                order[start[slot[i]]++] = i;
            }
            memmove(start + 1, start, (size_t)n * sizeof(int32_t));
            start[0] = 0;
        }
    }
}

void rmtl_distinct_build(rmtl_model *m, const int32_t *codes, int B) {
    rmtl_distinct *u = &m->distinct;
    int F = m->F, mode = m->first_layer;
    if (mode == RMTL_FIRST_LAYER_AUTO && m->E <= RMTL_DISTINCT_GATHER_COST) {
        mode = RMTL_FIRST_LAYER_PLAIN; /* (B - u) E > cost B cannot hold: no field would pay */
    }
    /* fields own disjoint ranges of mark: threads split by field never collide */
    rmtl_distinct_fields_args distinct_fields_args = {u, codes, m, B, F, mode};
    rmtl_parallel_for(F, (mode != RMTL_FIRST_LAYER_PLAIN && (long)B * F > 4096) ? 1 : F,
                      rmtl_distinct_fields_range, &distinct_fields_args);
    u->B = B;
    u->n_use = 0;
    for (int f = 0; f < F; f++) {
        if (u->use[f]) {
            u->field[u->n_use] = f;
            u->field_u[u->n_use] = u->u[f];
            u->field_start[u->n_use] = u->start + (size_t)f * (u->cap + 1);
            u->field_order[u->n_use] = u->order + (size_t)f * u->cap;
            u->rows[u->n_use++] = u->work + u->woff[f];
        }
    }
}

/* the next run [*c0, *c1) of plain columns at or after *c1 (start with *c1 = 0): fields that
   do not use their distinct codes and the dense columns [F E, C); returns 0 after the last */
static int rmtl_plain_run(const rmtl_model *m, int C, int *c0, int *c1) {
    int E = m->E, FE = m->F * E, c = *c1;
    while (c < FE && m->distinct.use[c / E]) {
        c += E;
    }
    if (c >= C) {
        return 0;
    }
    *c0 = c;
    while (c < C && (c >= FE || !m->distinct.use[c / E])) {
        c += E;
    }
    *c1 = c;
    return 1;
}

static rmtl_gather rmtl_distinct_gather(const rmtl_model *m) {
    const rmtl_distinct *u = &m->distinct;
    rmtl_gather g = {u->n_use, u->cap,  u->field,       u->field_u,
                     u->rows,  u->slot, u->field_start, u->field_order};
    return g;
}

/* A front end's Linear blocks through the distinct first layer (fe->distinct_fold): block k,
   columns c = (F + k) E of the front end, reaches the layer's output as
   x_k (w_k^T W_c^T) + W_c b_k with W_c the layer's (OC, E) weight columns at c, so the only
   batch-sized work is a d_k-wide low-rank term, added in the epilogue (and its gradient
   dout^T x_k taken in the prologue). The workspace m->distinct.fold holds the bias (OC; the
   output's column sums in the backward), per block the (1 + d_k, OC) rows
   Z_k = [b_k w_k]^T W_c^T (the bias term, then w_k^T W_c^T; in the backward [column sums;
   x_k^T dout]), and one block's (E, 1 + d_k) [b_k w_k] or gradient of it. */
static float *rmtl_distinct_fold_rows(const rmtl_model *m, const rmtl_first *l, int k) {
    return m->distinct.fold + (size_t)l->out * (1 + (size_t)k * (1 + m->distinct.fold_d));
}

static float *rmtl_distinct_fold_pack(const rmtl_model *m, const rmtl_first *l,
                                      const rmtl_front_linear *lin) {
    float *bw = rmtl_distinct_fold_rows(m, l, RMTL_MAX_FRONT_LIN);
    const float *p = m->params.param;
    int d = lin->d;
    for (int e = 0; e < m->E; e++) {
        bw[(size_t)e * (d + 1)] = p[lin->b + e];
        memcpy(bw + (size_t)e * (d + 1) + 1, p + lin->w + (size_t)e * d, (size_t)d * sizeof(float));
    }
    return bw;
}

/* the blocks' low-rank terms, their rows v[k] in the workspace */
static rmtl_lowrank rmtl_distinct_fold_terms(const rmtl_model *m, const rmtl_frontend *fe,
                                             const rmtl_first *l) {
    rmtl_lowrank lr = {0};
    for (int k = 0; fe->distinct_fold && k < fe->n_lin; k++) {
        lr.x[k] = fe->lin[k].x;
        lr.d[k] = fe->lin[k].d;
        lr.v[k] = rmtl_distinct_fold_rows(m, l, k) + l->out;
        lr.n++;
    }
    return lr;
}

/* fills the blocks' rows; returns the layer's bias plus the blocks' bias terms */
static const float *rmtl_distinct_fold_forward(rmtl_model *m, const rmtl_frontend *fe,
                                               const rmtl_first *l) {
    const float *W = m->params.param + l->w;
    float *bias = m->distinct.fold;
    int C = fe->width, E = m->E, OC = l->out;
    memcpy(bias, m->params.param + l->b, (size_t)OC * sizeof(float));
    for (int k = 0; k < fe->n_lin; k++) {
        const rmtl_front_linear *lin = &fe->lin[k];
        float *Z = rmtl_distinct_fold_rows(m, l, k);
        rmtl_gemm(1, 1, 1 + lin->d, OC, E, 1.0f, rmtl_distinct_fold_pack(m, l, lin), 1 + lin->d,
                  W + (size_t)(m->F + k) * E, C, 0.0f, Z, OC);
        for (int j = 0; j < OC; j++) {
            bias[j] += Z[j];
        }
    }
    return bias;
}

/* with dout (B, OC) the pre-activation gradient, the column sums in the workspace's bias and
   each block's x_k^T dout in its rows (the prologue's): adds the gradients of the layer's
   block columns, the blocks' weights and biases and (lin.dx) inputs */
static void rmtl_distinct_fold_backward(rmtl_model *m, const rmtl_frontend *fe, const rmtl_first *l,
                                        const float *dout, int B) {
    const float *p = m->params.param, *W = p + l->w;
    float *g = m->params.grad;
    int C = fe->width, E = m->E, OC = l->out;
    for (int k = 0; k < fe->n_lin; k++) {
        const rmtl_front_linear *lin = &fe->lin[k];
        const float *Wc = W + (size_t)(m->F + k) * E;
        float *T = rmtl_distinct_fold_rows(m, l, k), *bw = rmtl_distinct_fold_pack(m, l, lin);
        int d = lin->d;
        memcpy(T, m->distinct.fold, (size_t)OC * sizeof(float));
        /* dW_c += T^T [b_k w_k]^T; the block's gradients [db_k dw_k] = W_c^T T^T */
        rmtl_gemm(1, 1, OC, E, 1 + d, 1.0f, T, OC, bw, 1 + d, 1.0f,
                  g + l->w + (size_t)(m->F + k) * E, C);
        rmtl_gemm(1, 1, E, 1 + d, OC, 1.0f, Wc, C, T, OC, 0.0f, bw, 1 + d);
        for (int e = 0; e < E; e++) {
            g[lin->b + e] += bw[(size_t)e * (d + 1)];
            for (int c = 0; c < d; c++) {
                g[lin->w + (size_t)e * d + c] += bw[(size_t)e * (d + 1) + 1 + c];
            }
        }
        if (lin->dx != NULL && d > 0) { /* dx += dout W_c w_k, through V^T = w_k^T W_c^T */
            rmtl_gemm(1, 1, d, OC, E, 1.0f, p + lin->w, d, Wc, C, 0.0f, T + OC, OC);
            rmtl_gemm(0, 1, B, d, OC, 1.0f, dout, OC, T + OC, OC, 1.0f, lin->dx, d);
        }
    }
}

void rmtl_first_forward(rmtl_model *m, const rmtl_first *l, int B) {
    const rmtl_frontend *fe = &m->front[l->front];
    const float *p = m->params.param, *X = rmtl_arena_val(&m->arena, fe->act), *W = p + l->w;
    const float *bias = p + l->b;
    float *out = rmtl_arena_val(&m->arena, l->act), beta = 0.0f;
    int C = fe->width, E = m->E, OC = l->out, c0 = 0, c1 = 0;
    rmtl_gather g = rmtl_distinct_gather(m);
    /* the plain runs stop before the blocks when they are folded */
    while (rmtl_plain_run(m, fe->distinct_fold ? m->F * E : C, &c0, &c1)) {
        rmtl_gemm(0, 1, B, OC, c1 - c0, 1.0f, X + c0, C, W + c0, C, beta, out, OC);
        beta = 1.0f;
    }
    if (fe->distinct_fold) {
        bias = rmtl_distinct_fold_forward(m, fe, l);
    }
    rmtl_gemm_op *ops = m->distinct.ops;
    for (int k = 0; k < g.n; k++) {
        size_t f = (size_t)g.field[k] * E;
        rmtl_gemm_op op = {0, 1, g.u[k], OC, E, C, C, OC, 1.0f, 0.0f, X + f, W + f, g.rows[k]};
        ops[k] = op;
    }
    rmtl_gemm_many(ops, g.n);
    rmtl_dropout drop = {m->training ? m->dropout : 0.0f, m->seed,
                         (m->counter << 12) | (uint64_t)l->salt};
    rmtl_lowrank lr = rmtl_distinct_fold_terms(m, fe, l);
    rmtl_dense_epilogue(out, OC, bias, beta == 0.0f, &g, &lr, l->n_relu, drop, B, OC);
}

void rmtl_first_backward(rmtl_model *m, const rmtl_first *l, int B) {
    const rmtl_frontend *fe = &m->front[l->front];
    const float *W = m->params.param + l->w, *X = rmtl_arena_val(&m->arena, fe->act);
    const float *out = rmtl_arena_val(&m->arena, l->act);
    float *dout = rmtl_arena_grad(&m->arena, l->act), *dX = rmtl_arena_grad(&m->arena, fe->act);
    float *dW = m->params.grad + l->w;
    int C = fe->width, E = m->E, OC = l->out, c0 = 0, c1 = 0;
    rmtl_gather g = rmtl_distinct_gather(m);
    rmtl_lowrank lr = rmtl_distinct_fold_terms(m, fe, l);
    rmtl_dense_prologue(m->params.grad + l->b, fe->distinct_fold ? m->distinct.fold : NULL, &g, &lr,
                        dout, OC, out, l->n_relu, m->training ? m->dropout : 0.0f, B, OC);
    if (fe->distinct_fold) {
        rmtl_distinct_fold_backward(m, fe, l, dout, B);
    }
    /* the weight and input gradients of every plain run and every field, all disjoint */
    rmtl_gemm_op *ops = m->distinct.ops;
    int n = 0;
    while (rmtl_plain_run(m, fe->distinct_fold ? m->F * E : C, &c0, &c1)) {
        rmtl_gemm_op dw = {1, 0, OC, c1 - c0, B, OC, C, C, 1.0f, 1.0f, dout, X + c0, dW + c0};
        rmtl_gemm_op dx = {0, 0, B, c1 - c0, OC, OC, C, C, 1.0f, 1.0f, dout, W + c0, dX + c0};
        ops[n++] = dw;
        ops[n++] = dx;
    }
    for (int k = 0; k < g.n; k++) {
        size_t f = (size_t)g.field[k] * E;
        rmtl_gemm_op dw = {1, 0, OC, E, g.u[k], OC, C, C, 1.0f, 1.0f, g.rows[k], X + f, dW + f};
        rmtl_gemm_op dx = {0, 0, g.u[k], E, OC, OC, C, C, 1.0f, 1.0f, g.rows[k], W + f, dX + f};
        ops[n++] = dw;
        ops[n++] = dx;
    }
    rmtl_gemm_many(ops, n);
}
