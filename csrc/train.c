/* Chunked loops over batches: one call runs many steps with no Python in between. */
#include <stdlib.h>
#include <string.h>

#include "critic.h"

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
    rmtl_model_zero_grad(m, B);
    st = rmtl_model_forward(m, codes, dense, B);
    if (st != RMTL_OK) {
        return st;
    }
    *loss = rmtl_model_head_backward(m, codes, dense, labels, weights, B);
    return RMTL_OK;
}

typedef struct {
    int32_t *codes;
    float *dense;
    float *labels;
    const rmtl_rows *data;
    const int64_t *rows;
    int F;
    int D;
    int T;
    const int32_t *field_dims;
    int *bad_out;
} rmtl_gather_rows_args;

static void rmtl_gather_rows_range(void *ctx, int64_t lo_, int64_t hi_) {
    const rmtl_gather_rows_args *args = ctx;
    const int64_t *rows = args->rows;
    const rmtl_rows *data = args->data;
    int32_t *codes = args->codes;
    int F = args->F;
    float *dense = args->dense;
    int D = args->D;
    float *labels = args->labels;
    int T = args->T;
    const int32_t *field_dims = args->field_dims;
    int *bad_out = args->bad_out;
    int bad = 0;
    for (int64_t i = lo_; i < hi_; i++) {
        int64_t r = rows[i];
        if (r < 0 || r >= data->n) {
            bad = 1;
            continue;
        }
        /* the codes checked in the copy, which only this thread writes: the value checked is
           the value kept, whatever another thread does to the caller's array; loops, not
           memcpy calls, for rows this short */
        const int32_t *src = data->codes + (size_t)r * F;
        int32_t *row = codes + (size_t)i * F;
        for (int f = 0; f < F; f++) {
            row[f] = src[f];
        }
        bad |= rmtl_codes_check(row, 1, F, field_dims) >= 0;
        for (int j = 0; j < D; j++) {
            dense[(size_t)i * D + j] = data->dense[(size_t)r * D + j];
        }
        for (int k = 0; labels != NULL && k < T; k++) {
            labels[(size_t)i * T + k] = data->labels[(size_t)r * T + k];
        }
    }
    __atomic_or_fetch(bad_out, bad, __ATOMIC_RELAXED);
}

int rmtl_gather_batch(int32_t *codes, float *dense, float *labels, const rmtl_rows *data,
                      const int64_t *rows, int B, int F, int D, int T, const int32_t *field_dims) {
    int bad = 0;
    rmtl_gather_rows_args gather_rows_args = {codes, dense, labels, data,       rows,
                                              F,     D,     T,      field_dims, &bad};
    rmtl_parallel_for(B, 512, rmtl_gather_rows_range, &gather_rows_args);
    return bad ? RMTL_ERR_INDEX : RMTL_OK;
}

void rmtl_gather_state(float *out, const rmtl_rows *data, const int64_t *rows, int B, int D,
                       int keep) {
    int Dc = keep + data->X;
    for (int i = 0; i < B; i++) {
        size_t r = (size_t)rows[i];
        memcpy(out + (size_t)i * Dc, data->dense + r * D, (size_t)keep * sizeof(float));
        if (data->X > 0) {
            memcpy(out + (size_t)i * Dc + keep, data->extra + r * data->X,
                   (size_t)data->X * sizeof(float));
        }
    }
}

/* the stage-3 loss weights of one task from Q (B; NULL for constant and static), labels (B,T)
   column k, into w (B,T); permuted takes rmtl's, permuted afterwards (rmtl_permute_rows) */
static void rmtl_loss_weights(float *w, const float *q, const float *labels, int k, int B, int T,
                              const rmtl_loss_weighting *wt) {
    int weighting = wt->weighting;
    for (int i = 0; i < B; i++) {
        size_t ik = (size_t)i * T + k;
        float v = 0.5f;
        if (weighting == RMTL_WEIGHT_RMTL || weighting == RMTL_WEIGHT_PERMUTED) {
            v = 1.0f - wt->lam * q[i];
        } else if (weighting == RMTL_WEIGHT_LABEL) {
            v = 1.0f - wt->lam * labels[ik] * q[i];
        } else if (weighting == RMTL_WEIGHT_NEG_Q) {
            v = -q[i];
        } else if (weighting == RMTL_WEIGHT_STATIC) {
            v = wt->task_weights[k];
        }
        w[ik] = v;
    }
}

/* the weights w (B,T) of one batch at m's predictions, summed per task into weight_sum; the
   critics read their dense state from state (B, critic D) */
static int rmtl_batch_weights(rmtl_model *m, float *w, double *weight_sum, const float *state,
                              const rmtl_loss_weighting *wt, int B) {
    int T = m->T, st = RMTL_OK;
    for (int k = 0; k < T && st == RMTL_OK; k++) {
        const float *q = NULL;
        if (wt->critics != NULL) {
            rmtl_critic *c = wt->critics[k];
            rmtl_column(c->action, m->prob, k, B, T);
            /* in the critic's own mode: eval (rmtl), or training with dropout (the authors) */
            st = rmtl_critic_forward(c, m->codes, state, c->action, B);
            q = c->q;
        }
        rmtl_loss_weights(w, q, m->labels, k, B, T, wt);
        for (int i = 0; i < B; i++) {
            weight_sum[k] += w[(size_t)i * T + k];
        }
    }
    return st;
}

/* row i of w (B,T) becomes row perm[i], perm the permutation of the step (rmtl_step_permutation);
   copy (B,T) and perm (B) are scratch */
static void rmtl_permute_rows(float *w, float *copy, int64_t *perm, int B, int T, uint64_t seed,
                              uint64_t step) {
    rmtl_step_permutation(perm, B, seed, step);
    memcpy(copy, w, (size_t)B * T * sizeof(float));
    for (int i = 0; i < B; i++) {
        memcpy(w + (size_t)i * T, copy + (size_t)perm[i] * T, (size_t)T * sizeof(float));
    }
}

int rmtl_train_chunk(rmtl_model *m, double *loss_sum, double *weight_sum, const int64_t *rows,
                     int64_t n_rows, const rmtl_rows *data, int B, const rmtl_loss_weighting *wt,
                     const rmtl_adam *opt) {
    int T = m->T;
    int st = rmtl_model_reserve(m, B);
    for (int k = 0; wt != NULL && wt->critics != NULL && k < T && st == RMTL_OK; k++) {
        st = rmtl_critic_reserve(wt->critics[k], B);
    }
    /* one block: the permutation (B int64, permuted only), then w (B,T), its copy (B,T,
       permuted only) and the critics' states (B, Dc) */
    int Dc = wt != NULL && wt->critics != NULL ? wt->critics[0]->net.D : 0;
    int permuted = wt != NULL && wt->weighting == RMTL_WEIGHT_PERMUTED;
    size_t n_perm = permuted ? (size_t)B : 0, n_w = (size_t)B * T, n_copy = permuted ? n_w : 0;
    void *block =
        st == RMTL_OK && wt != NULL
            ? malloc(n_perm * sizeof(int64_t) + (n_w + n_copy + (size_t)B * Dc) * sizeof(float))
            : NULL;
    int64_t *perm = block;
    float *w = block == NULL ? NULL : (float *)(perm + n_perm);
    float *copy = w == NULL ? NULL : w + n_w;
    float *state = copy == NULL ? NULL : copy + n_copy;
    if (st == RMTL_OK && wt != NULL && block == NULL) {
        st = RMTL_ERR_NOMEM;
    }
    *loss_sum = 0.0;
    for (int k = 0; wt != NULL && k < T; k++) {
        weight_sum[k] = 0.0;
    }
    for (int64_t start = 0; start < n_rows && st == RMTL_OK; start += B) {
        int nb = (int)(n_rows - start < B ? n_rows - start : B);
        st = rmtl_gather_batch(m->codes, m->dense, m->labels, data, rows + start, nb, m->F, m->D, T,
                               m->field_dims);
        if (st == RMTL_OK) {
            rmtl_model_zero_grad(m, nb);
            st = rmtl_model_forward(m, m->codes, m->dense, nb);
        }
        if (st == RMTL_OK && Dc > 0) {
            rmtl_gather_state(state, data, rows + start, nb, m->D, Dc - data->X);
        }
        if (st == RMTL_OK && wt != NULL) {
            st = rmtl_batch_weights(m, w, weight_sum, state, wt, nb);
        }
        if (st == RMTL_OK && permuted) {
            rmtl_permute_rows(w, copy, perm, nb, T, wt->seed, (uint64_t)m->params.adam_step);
        }
        if (st == RMTL_OK) {
            double loss = rmtl_model_head_backward(m, m->codes, m->dense, m->labels, w, nb);
            rmtl_params_adam_step(&m->params, opt);
            *loss_sum += loss * nb;
        }
    }
    free(block);
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
   chooses how the first layers over the front ends run. The workspace holds min(n, B) rows. */
int rmtl_model_predict(rmtl_model *m, float *out, const int32_t *codes, const float *dense,
                       int64_t n, int B, int lookup) {
    B = n < B ? (int)(n > 0 ? n : 1) : B;
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
