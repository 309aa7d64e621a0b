/* Chunked loops over batches: one call runs many steps with no Python in between. */
#include <stdlib.h>
#include <string.h>

#include "blocks.h"

/* the arena gradients of the task logits (the towers' outputs) */
static void rmtl_model_dlogit(rmtl_model *m, float **dlogit) {
    for (int k = 0; k < m->T; k++) {
        dlogit[k] = rmtl_arena_grad(&m->arena, rmtl_mlp_out(&m->towers[k]));
    }
}

/* after rmtl_model_forward on (codes, dense) with zeroed gradients: the weighted BCE head and
   the backward below it; returns the loss */
double rmtl_model_head_backward(rmtl_model *m, const int32_t *codes, const float *dense,
                                const float *labels, const float *weights, int B) {
    float *dlogit[RMTL_MAX_TASKS];
    rmtl_model_dlogit(m, dlogit);
    double loss =
        rmtl_head_backward(dlogit, m->prob, m->sig, labels, weights, m->kind == RMTL_ESMM, B, m->T);
    rmtl_model_backward(m, codes, dense, B);
    return loss;
}

/* after rmtl_model_forward on (codes, dense) with zeroed gradients: backward of a given
   gradient dprob (B,T) of the probabilities */
void rmtl_model_prob_backward(rmtl_model *m, const float *dprob, const int32_t *codes,
                              const float *dense, int B) {
    float *dlogit[RMTL_MAX_TASKS];
    rmtl_model_dlogit(m, dlogit);
    rmtl_head_backward_prob(dlogit, dprob, m->sig, m->kind == RMTL_ESMM, B, m->T);
    rmtl_model_backward(m, codes, dense, B);
}

/* zero grads, forward in the current mode, BCE head, backward; gradients stay in the model */
int rmtl_model_loss_backward(rmtl_model *m, double *loss, const int32_t *codes, const float *dense,
                             const float *labels, const float *weights, int B) {
    int st = rmtl_model_reserve(m, B);
    if (st != RMTL_OK) {
        return st;
    }
    rmtl_model_zero_grad(m);
    st = rmtl_model_forward(m, codes, dense, B);
    if (st != RMTL_OK) {
        return st;
    }
    *loss = rmtl_model_head_backward(m, codes, dense, labels, weights, B);
    return RMTL_OK;
}

/* copies rows[0..B) of the full arrays into the model's batch buffers */
static void rmtl_gather_batch(rmtl_model *m, const int64_t *rows, int B, const int32_t *codes,
                              const float *dense, const float *labels) {
    int F = m->F, D = m->D, T = m->T;
#pragma omp parallel for num_threads(rmtl_threads()) schedule(static) if (B > 4096)
    for (int i = 0; i < B; i++) {
        int64_t r = rows[i];
        memcpy(m->codes + (size_t)i * F, codes + (size_t)r * F, (size_t)F * sizeof(int32_t));
        memcpy(m->dense + (size_t)i * D, dense + (size_t)r * D, (size_t)D * sizeof(float));
        memcpy(m->labels + (size_t)i * T, labels + (size_t)r * T, (size_t)T * sizeof(float));
    }
}

/* one Adam step per batch of B consecutive entries of rows (the last may be short);
   loss_sum receives the sum over batches of batch loss * batch size */
int rmtl_model_train_chunk(rmtl_model *m, double *loss_sum, const int64_t *rows, int64_t n_rows,
                           const int32_t *codes, const float *dense, const float *labels, int B,
                           const rmtl_adam *opt) {
    int st = rmtl_model_reserve(m, B);
    *loss_sum = 0.0;
    for (int64_t start = 0; start < n_rows && st == RMTL_OK; start += B) {
        int nb = (int)(n_rows - start < B ? n_rows - start : B);
        double loss = 0.0;
        rmtl_gather_batch(m, rows + start, nb, codes, dense, labels);
        st = rmtl_model_loss_backward(m, &loss, m->codes, m->dense, m->labels, NULL, nb);
        if (st == RMTL_OK) {
            rmtl_params_adam_step(&m->params, opt);
            *loss_sum += loss * nb;
        }
    }
    return st;
}

/* Tables cap: PLE's level 0 in bench_backbones.py (12 experts of 512 and 3 gates over 4641
   codes) needs 109 MB */
#define RMTL_LOOKUP_MAX_BYTES ((size_t)256 << 20)
/* Below this embedding width the products are cheap: reading F + D + 1 table rows per output
   costs about what the 2 (F+1) E multiply-adds it replaces do (measured on 2 cores, SharedBottom
   and MMoE: E = 8 0.9x, 16 1.1x, 32 1.1-1.2x, 128 2-2.5x the plain prediction) */
#define RMTL_LOOKUP_MIN_E 16

/* Tables pay for n rows when they fit and building them (table_rows products of width E per
   output) costs at most a quarter of the n products of width (F+1) E they replace */
static int rmtl_model_lookup_pays(const rmtl_model *m, int64_t n) {
    return m->E >= RMTL_LOOKUP_MIN_E && m->tab_size * sizeof(float) <= RMTL_LOOKUP_MAX_BYTES &&
           (int64_t)m->front[0].table_rows * 4 <= n * (m->F + 1);
}

/* Sets m->use_tab for a prediction of n rows (lookup: RMTL_LOOKUP_*) and builds the tables
   from the current parameters, which may have changed since the last prediction */
static int rmtl_model_lookup_begin(rmtl_model *m, int64_t n, int lookup) {
    const float *p = m->params.param;
    if (lookup < RMTL_LOOKUP_AUTO || lookup > RMTL_LOOKUP_ALWAYS) {
        return RMTL_ERR_ARG;
    }
    m->use_tab = m->n_lookup > 0 && (lookup == RMTL_LOOKUP_ALWAYS ||
                                     (lookup == RMTL_LOOKUP_AUTO && rmtl_model_lookup_pays(m, n)));
    if (m->use_tab && m->tab == NULL) {
        m->tab = malloc(m->tab_size * sizeof(float));
    }
    if (m->use_tab && m->tab == NULL) {
        /* the plain path needs no extra memory: only a forced lookup fails */
        m->use_tab = 0;
        return lookup == RMTL_LOOKUP_ALWAYS ? RMTL_ERR_NOMEM : RMTL_OK;
    }
    for (int i = 0; i < m->n_lookup && m->use_tab; i++) {
        const rmtl_lookup *l = &m->lookup[i];
        const rmtl_frontend *fe = &m->front[l->front];
        rmtl_lookup_build(m->tab + l->tab, p + fe->table, p + fe->num_w, p + fe->num_b, p + l->w,
                          p + l->b, m->field_offset, (int64_t)fe->table_rows, m->F, m->D, m->E,
                          l->out);
    }
    return RMTL_OK;
}

/* eval-mode probabilities of n rows, B at a time, into out (n,T); lookup (RMTL_LOOKUP_*)
   chooses how the first layers over the front ends run */
int rmtl_model_predict(rmtl_model *m, float *out, const int32_t *codes, const float *dense,
                       int64_t n, int B, int lookup) {
    int st = rmtl_model_reserve(m, B), training = m->training;
    m->training = 0;
    if (st == RMTL_OK) {
        st = rmtl_model_lookup_begin(m, n, lookup);
    }
    for (int64_t start = 0; start < n && st == RMTL_OK; start += B) {
        int nb = (int)(n - start < B ? n - start : B);
        st = rmtl_model_forward(m, codes + (size_t)start * m->F, dense + (size_t)start * m->D, nb);
        if (st == RMTL_OK) {
            memcpy(out + (size_t)start * m->T, m->prob, (size_t)nb * m->T * sizeof(float));
        }
    }
    /* the tables can be hundreds of MB and are stale after the next step: not kept */
    free(m->tab);
    m->tab = NULL;
    m->use_tab = 0;
    m->training = training;
    return st;
}
