#include "blocks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t rmtl_arena_reserve(rmtl_arena *a, size_t width) {
    size_t col = a->width;
    a->width += width;
    return col;
}

int rmtl_arena_resize(rmtl_arena *a, int cap) {
    if (cap <= a->cap) {
        return RMTL_OK;
    }
    size_t n = a->width * (size_t)cap;
    float *v = malloc(n * sizeof(float));
    float *g = malloc(n * sizeof(float));
    if (v == NULL || g == NULL) {
        free(v);
        free(g);
        return RMTL_ERR_NOMEM;
    }
    free(a->val);
    free(a->grad);
    a->val = v;
    a->grad = g;
    a->cap = cap;
    return RMTL_OK;
}

void rmtl_arena_free(rmtl_arena *a) {
    free(a->val);
    free(a->grad);
    a->val = a->grad = NULL;
    a->cap = 0;
}

float *rmtl_arena_val(const rmtl_arena *a, size_t col) {
    return a->val + col * (size_t)a->rows;
}

float *rmtl_arena_grad(const rmtl_arena *a, size_t col) {
    return a->grad + col * (size_t)a->rows;
}

int rmtl_arena_layout(rmtl_arena *a, int rows) {
    if (rows > a->cap) {
        return RMTL_ERR_ARG;
    }
    a->rows = rows;
    return RMTL_OK;
}

void rmtl_arena_zero_grad(rmtl_arena *a, int rows) {
    rmtl_arena_zero_grad_from(a, 0, rows);
}

void rmtl_arena_zero_grad_from(rmtl_arena *a, size_t col, int rows) {
    a->rows = rows;
    rmtl_zero(a->grad + col * (size_t)rows, (a->width - col) * (size_t)rows);
}

int rmtl_frontend_build(rmtl_model *m, rmtl_frontend *fe, const char *index, int extra) {
    char name[RMTL_NAME_LEN];
    fe->F = m->F;
    fe->D = m->D;
    fe->E = m->E;
    fe->width = (m->F + 1 + extra) * m->E;
    fe->table_rows = (size_t)(m->field_offset[m->F - 1] + m->field_dims[m->F - 1]);
    snprintf(name, sizeof(name), "embedding.%sembedding.weight", index);
    RMTL_TRY(rmtl_params_add(&m->params, &fe->table, name, (int)fe->table_rows, m->E,
                             RMTL_INIT_XAVIER, m->E));
    RMTL_TRY(rmtl_params_freeze(&m->params, fe->table, fe->table + (size_t)m->E));
    snprintf(name, sizeof(name), "numerical_layer.%sweight", index);
    RMTL_TRY(rmtl_params_add(&m->params, &fe->num_w, name, m->E, m->D, RMTL_INIT_LINEAR, m->D));
    snprintf(name, sizeof(name), "numerical_layer.%sbias", index);
    RMTL_TRY(rmtl_params_add(&m->params, &fe->num_b, name, m->E, 0, RMTL_INIT_LINEAR, m->D));
    fe->act = rmtl_arena_reserve(&m->arena, (size_t)fe->width);
    rmtl_front_linear num = {fe->num_w, fe->num_b, m->D, NULL, NULL};
    fe->lin[0] = num;
    fe->n_lin = 1;
    return RMTL_OK;
}

/* The distinct first layer folding a block into itself (width OC) costs B d OC + E d OC
   multiply-adds per product instead of B E OC: it pays for narrow inputs (the numerical and action
   layers) */
static int rmtl_frontend_distinct_fold(const rmtl_model *m, const rmtl_frontend *fe, int B) {
    if (m->first_layer != RMTL_FIRST_LAYER_AUTO) {
        return m->first_layer == RMTL_FIRST_LAYER_DISTINCT;
    }
    for (int k = 0; k < fe->n_lin; k++) {
        if ((long)fe->lin[k].d * (B + fe->E) >= (long)B * fe->E) {
            return 0;
        }
    }
    return 1;
}

void rmtl_frontend_forward(rmtl_model *m, rmtl_frontend *fe, const int32_t *codes,
                           const float *dense, int B) {
    int W = fe->width;
    float *out = rmtl_arena_val(&m->arena, fe->act), *p = m->params.param;
    rmtl_dropout none = {0.0f, 0, 0};
    rmtl_embedding_forward(out, codes, &m->distinct, p + fe->table, m->field_offset, B, fe->F,
                           fe->E, W);
    fe->lin[0].x = dense;
    fe->distinct_fold = rmtl_frontend_distinct_fold(m, fe, B);
    for (int k = 0; k < fe->n_lin && !fe->distinct_fold; k++) {
        const rmtl_front_linear *l = &fe->lin[k];
        rmtl_dense_forward(out + (size_t)(fe->F + k) * fe->E, W, l->x, l->d, p + l->w, p + l->b, 0,
                           none, B, l->d, fe->E);
    }
}

void rmtl_frontend_backward(rmtl_model *m, const rmtl_frontend *fe, const int32_t *codes, int B) {
    int W = fe->width;
    float *dout = rmtl_arena_grad(&m->arena, fe->act), *g = m->params.grad;
    const float *out = rmtl_arena_val(&m->arena, fe->act);
    rmtl_embedding_backward(g + fe->table, dout, codes, &m->distinct, m->field_offset, B, fe->F,
                            fe->E, W);
    for (int k = 0; k < fe->n_lin && !fe->distinct_fold; k++) {
        const rmtl_front_linear *l = &fe->lin[k];
        size_t c = (size_t)(fe->F + k) * fe->E;
        rmtl_dense_backward(l->dx, l->d, g + l->w, g + l->b, dout + c, W, out + c, l->x,
                            m->params.param + l->w, 0, 0.0f, B, l->d, fe->E);
    }
}

int rmtl_mlp_build(rmtl_model *m, rmtl_mlp *mlp, const char *name, int in, const int *dims, int n,
                   int output_layer) {
    char buf[RMTL_NAME_LEN];
    mlp->n = n + (output_layer ? 1 : 0);
    for (int j = 0; j < mlp->n; j++) {
        rmtl_linear *l = &mlp->layer[j];
        l->in = in;
        l->out = j < n ? dims[j] : 1;
        l->relu = j < n;
        l->salt = (uint32_t)m->params.count;
        snprintf(buf, sizeof(buf), "%s.%d.weight", name, 3 * j);
        RMTL_TRY(rmtl_params_add(&m->params, &l->w, buf, l->out, l->in, RMTL_INIT_LINEAR, l->in));
        snprintf(buf, sizeof(buf), "%s.%d.bias", name, 3 * j);
        RMTL_TRY(rmtl_params_add(&m->params, &l->b, buf, l->out, 0, RMTL_INIT_LINEAR, l->in));
        l->act = rmtl_arena_reserve(&m->arena, (size_t)l->out);
        in = l->out;
    }
    return RMTL_OK;
}

void rmtl_mlps_forward(rmtl_model *m, const rmtl_mlp *mlp, int count, int first,
                       const float *const *inp, const int *ld_in, int B, const float **out) {
    const float *p = m->params.param;
    rmtl_gemm_op ops[RMTL_MAX_TASKS];
    for (int j = first; j < mlp[0].n; j++) {
        for (int k = 0; k < count; k++) {
            const rmtl_linear *l = &mlp[k].layer[j];
            const float *x = j > 0 ? rmtl_arena_val(&m->arena, mlp[k].layer[j - 1].act) : inp[k];
            ops[k] = rmtl_dense_forward_op(rmtl_arena_val(&m->arena, l->act), l->out, x,
                                           j > 0 ? l->in : ld_in[k], p + l->w, B, l->in, l->out);
        }
        rmtl_gemm_many(ops, count);
        for (int k = 0; k < count; k++) {
            const rmtl_linear *l = &mlp[k].layer[j];
            rmtl_dropout drop = {m->training ? m->dropout : 0.0f, m->seed,
                                 (m->counter << 12) | (uint64_t)l->salt};
            rmtl_dense_epilogue(rmtl_arena_val(&m->arena, l->act), l->out, p + l->b, 0, NULL, NULL,
                                l->relu ? l->out : 0, drop, B, l->out);
        }
    }
    for (int k = 0; k < count && out != NULL; k++) {
        out[k] = rmtl_arena_val(&m->arena, rmtl_mlp_out(&mlp[k]));
    }
}

void rmtl_mlps_backward(rmtl_model *m, const rmtl_mlp *mlp, int count, int first,
                        float *const *dinp, const float *const *inp, const int *ld_in, int B) {
    const float *p = m->params.param;
    float *g = m->params.grad, drop_p = m->training ? m->dropout : 0.0f;
    /* ops: every weight gradient and the input gradients with distinct targets; late: input
       gradients into a target an earlier MLP's already adds into (a shared input), in order */
    rmtl_gemm_op ops[2 * RMTL_MAX_TASKS], late[RMTL_MAX_TASKS];
    for (int j = mlp[0].n - 1; j >= first; j--) {
        int n = 0, n_late = 0;
        for (int k = 0; k < count; k++) {
            const rmtl_linear *l = &mlp[k].layer[j];
            const float *x = j > 0 ? rmtl_arena_val(&m->arena, mlp[k].layer[j - 1].act) : inp[k];
            float *dx = j > 0 ? rmtl_arena_grad(&m->arena, mlp[k].layer[j - 1].act) : dinp[k];
            float *dout = rmtl_arena_grad(&m->arena, l->act);
            rmtl_dense_prologue(g + l->b, NULL, NULL, NULL, dout, l->out,
                                rmtl_arena_val(&m->arena, l->act), l->relu ? l->out : 0, drop_p, B,
                                l->out);
            int shared = 0;
            for (int i = 0; i < k && dx != NULL; i++) {
                shared |= j == 0 && dinp[i] == dx;
            }
            rmtl_gemm_op pair[2];
            int got = rmtl_dense_backward_ops(pair, dx, j > 0 ? l->in : ld_in[k], g + l->w, dout,
                                              l->out, x, p + l->w, B, l->in, l->out);
            ops[n++] = pair[0];
            if (got == 2) {
                *(shared ? &late[n_late++] : &ops[n++]) = pair[1];
            }
        }
        rmtl_gemm_many(ops, n);
        for (int i = 0; i < n_late; i++) {
            rmtl_gemm_many(&late[i], 1);
        }
    }
}

size_t rmtl_mlp_out(const rmtl_mlp *mlp) {
    return mlp->layer[mlp->n - 1].act;
}
