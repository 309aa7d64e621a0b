/* Chunked loops over batches: one call runs many steps with no Python in between. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "rng.h"
#include "train.h"

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
    RMTL_TRY(rmtl_model_reserve(m, B));
    rmtl_model_zero_grad(m, B);
    RMTL_TRY(rmtl_model_forward(m, codes, dense, B));
    *loss = rmtl_model_head_backward(m, codes, dense, labels, weights, B);
    return RMTL_OK;
}

/* rmtl_gather_batch's arguments; *bad_out is set when a row or code is out of range */
typedef struct {
    int32_t *codes;
    float *dense, *labels;
    const rmtl_rows *data;
    const int64_t *rows;
    int F, D, T;
    const int32_t *field_dims;
    int *bad_out;
} rmtl_gather_rows_args;

/* batch rows [lo, hi) of rmtl_gather_batch */
static void rmtl_gather_rows_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_gather_rows_args *a = ctx;
    /* locals: the copy loops read their bounds per element, and their stores could alias *a */
    int F = a->F, D = a->D, T = a->T;
    int bad = 0;
    for (int64_t i = lo; i < hi; i++) {
        int64_t r = a->rows[i];
        if (r < 0 || r >= a->data->n) {
            bad = 1;
            continue;
        }
        /* the codes checked in the copy, which only this thread writes: the value checked is
           the value kept, whatever another thread does to the caller's array; loops, not
           memcpy calls, for rows this short */
        const int32_t *src = a->data->codes + (size_t)r * F;
        int32_t *row = a->codes + (size_t)i * F;
        for (int f = 0; f < F; f++) {
            row[f] = src[f];
        }
        bad |= rmtl_codes_check(row, 1, F, a->field_dims) >= 0;
        const float *dsrc = a->data->dense + (size_t)r * D;
        float *drow = a->dense + (size_t)i * D;
        for (int j = 0; j < D; j++) {
            drow[j] = dsrc[j];
        }
        if (a->labels != NULL) {
            const float *lsrc = a->data->labels + (size_t)r * T;
            float *lrow = a->labels + (size_t)i * T;
            for (int k = 0; k < T; k++) {
                lrow[k] = lsrc[k];
            }
        }
    }
    __atomic_or_fetch(a->bad_out, bad, __ATOMIC_RELAXED);
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

void rmtl_column(float *out, const float *a, int k, int B, int T) {
    for (int i = 0; i < B; i++) {
        out[i] = a[(size_t)i * T + k];
    }
}

void rmtl_loss_weights(float *w, const float *q, int64_t q_stride, const float *labels, int k,
                       int64_t n, int T, const rmtl_loss_weighting *wt) {
    int weighting = wt->weighting;
    for (int64_t i = 0; i < n; i++) {
        size_t ik = (size_t)i * T + k;
        float v = 0.5f;
        if (weighting == RMTL_WEIGHT_RMTL || weighting == RMTL_WEIGHT_PERMUTED) {
            v = 1.0f - wt->lam * q[i * q_stride];
        } else if (weighting == RMTL_WEIGHT_LABEL) {
            v = 1.0f - wt->lam * labels[ik] * q[i * q_stride];
        } else if (weighting == RMTL_WEIGHT_NEG_Q) {
            v = -q[i * q_stride];
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
    int T = m->T;
    for (int k = 0; k < T; k++) {
        const float *q = NULL;
        if (wt->critics != NULL) {
            rmtl_critic *c = wt->critics[k];
            rmtl_column(c->action, m->prob, k, B, T);
            /* in the critic's own mode: eval (rmtl), or training with dropout (the authors) */
            RMTL_TRY(rmtl_critic_forward(c, m->codes, state, c->action, B));
            q = c->q;
        }
        rmtl_loss_weights(w, q, 1, m->labels, k, B, T, wt);
        for (int i = 0; i < B; i++) {
            weight_sum[k] += w[(size_t)i * T + k];
        }
    }
    return RMTL_OK;
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

/* the task losses L (T) = mean_i w_ik BCE(y_ik, p_ik) of m's last forward (w NULL: 1), with the
   clamping of rmtl_head_backward */
static void rmtl_task_losses(float *L, const rmtl_model *m, const float *w, int B) {
    int T = m->T;
    double acc[RMTL_MAX_TASKS] = {0.0};
    for (int i = 0; i < B; i++) {
        for (int k = 0; k < T; k++) {
            size_t ik = (size_t)i * T + k;
            double p = m->prob[ik], y = m->labels[ik];
            double lp = log(p), l1p = log1p(-p);
            lp = lp < -100.0 ? -100.0 : lp;
            l1p = l1p < -100.0 ? -100.0 : l1p;
            acc[k] -= (w ? w[ik] : 1.0) * (y * lp + (1.0 - y) * l1p);
        }
    }
    for (int k = 0; k < T; k++) {
        L[k] = (float)(acc[k] / B);
    }
}

/* The representation the towers read (space "representation"): the distinct tower inputs
   at[l] (l < n; SharedBottom's and OMoE's towers read one, MMoE's and PLE's one each), loc[k]
   the one task k's tower reads, H their width; from, the first arena column among them (the
   towers' activations are reserved after them, so a towers' backward touches only the
   arena's columns from there on) */
typedef struct {
    rmtl_loc at[RMTL_MAX_TASKS];
    int loc[RMTL_MAX_TASKS];
    /* touches[k][l]: task k's towers' backward writes a gradient into tower input l (the
       other gradients of task k's stay zero: neither copied nor combined) */
    unsigned char touches[RMTL_MAX_TASKS][RMTL_MAX_TASKS];
    int n, H;
    size_t from;
} rmtl_rep_layout;

static rmtl_rep_layout rmtl_rep_layout_of(const rmtl_model *m) {
    rmtl_rep_layout r;
    r.n = 0;
    r.H = m->bottom[m->n_bottom - 1];
    for (int k = 0; k < m->T; k++) {
        rmtl_loc f = rmtl_model_feature(m, k);
        int l = 0;
        while (l < r.n && !(r.at[l].col == f.col && r.at[l].off == f.off)) {
            l++;
        }
        if (l == r.n) {
            r.at[r.n++] = f;
        }
        r.loc[k] = l;
        r.from = k == 0 || f.col < r.from ? f.col : r.from;
    }
    memset(r.touches, 0, sizeof r.touches);
    for (int k = 0; k < m->T; k++) {
        int first, n = rmtl_model_towers_of(m, k, &first);
        for (int j = first; j < first + n; j++) {
            r.touches[k][r.loc[j]] = 1;
        }
    }
    return r;
}

/* What a balanced step needs besides the model: scratch laid out by rmtl_balanced_block.
   The task-specific parameters fill the gaps between the shared spans: N floats. */
typedef struct {
    float *jac;    /* (S, T, P) the per-task gradients the balancer reads */
    float *dir;    /* (P) the balancer's direction */
    float *losses; /* (S, T) */
    float *own;    /* (S, T, N) the task-specific parameters' per-task gradients */
    float *wk;     /* (B, T) one task's weights */
    /* representation space: rep (T, lay.n, B, H) task k's per-row gradients of every tower
       input, mult (T, H) the balancer's per-element multipliers (RMTL_BAL_REP_MULT) */
    float *rep, *mult;
    rmtl_rep_layout lay;
    int64_t N;
} rmtl_balanced_scratch;

/* the floats the shared spans hold */
static int64_t rmtl_balanced_shared_len(const rmtl_balanced *bal) {
    int64_t n = 0;
    for (int i = 0; i < bal->n; i++) {
        n += bal->hi[i] - bal->lo[i];
    }
    return n;
}

/* floats of scratch a balanced chunk needs */
static size_t rmtl_balanced_floats(const rmtl_model *m, const rmtl_balanced *bal, int B) {
    const rmtl_balancer *b = bal->b;
    size_t S = (size_t)b->S, T = (size_t)m->T, P = (size_t)b->P;
    size_t N = m->params.total - (size_t)rmtl_balanced_shared_len(bal);
    size_t rep = 0;
    if (bal->rep) {
        rmtl_rep_layout lay = rmtl_rep_layout_of(m);
        rep = T * (size_t)lay.n * (size_t)B * (size_t)lay.H + T * P;
    }
    return S * T * P + P + S * T + S * T * N + (size_t)B * T + rep;
}

static rmtl_balanced_scratch rmtl_balanced_block(float *block, const rmtl_model *m,
                                                 const rmtl_balanced *bal, int B) {
    const rmtl_balancer *b = bal->b;
    size_t S = (size_t)b->S, T = (size_t)m->T, P = (size_t)b->P;
    rmtl_balanced_scratch sc;
    sc.N = (int64_t)m->params.total - rmtl_balanced_shared_len(bal);
    sc.jac = block;
    sc.dir = sc.jac + S * T * P;
    sc.losses = sc.dir + P;
    sc.own = sc.losses + S * T;
    sc.wk = sc.own + S * T * (size_t)sc.N;
    sc.rep = sc.wk + (size_t)B * T;
    sc.lay = rmtl_rep_layout_of(m);
    sc.mult = sc.rep + (bal->rep ? T * (size_t)sc.lay.n * (size_t)B * (size_t)sc.lay.H : 0);
    return sc;
}

/* what rmtl_balanced_own does with the task-specific positions of the gradient buffer */
enum { RMTL_OWN_GET, RMTL_OWN_ADD, RMTL_OWN_SET, RMTL_OWN_ZERO };

/* the gradient buffer's task-specific positions (outside the shared spans, in order) and own
   (N): copied into own, own added into them, own copied into them, or zeroed */
static void rmtl_balanced_own(rmtl_model *m, const rmtl_balanced *bal, float *own, int op) {
    float *g = m->params.grad;
    int64_t at = 0;
    for (int i = 0; i <= bal->n; i++) {
        int64_t lo = i < bal->n ? bal->lo[i] : (int64_t)m->params.total;
        for (; at < lo; at++) {
            if (op == RMTL_OWN_GET) {
                *own++ = g[at];
            } else if (op == RMTL_OWN_ADD) {
                g[at] += *own++;
            } else if (op == RMTL_OWN_SET) {
                g[at] = *own++;
            } else {
                g[at] = 0.0f;
            }
        }
        at = i < bal->n ? bal->hi[i] : at;
    }
}

/* rmtl_balanced_shared's arguments: the gradient buffer g, the concatenation shared (P) of its
   shared spans, the direction of the copy and where a non-finite gradient is reported */
typedef struct {
    float *g, *shared;
    const rmtl_balanced *bal;
    int set;
    int *bad;
} rmtl_shared_copy_args;

/* floats [lo, hi) of the concatenated shared spans */
RMTL_CLONES static void rmtl_shared_copy_range(void *ctx, int64_t lo, int64_t hi) {
    /* a copy of the arguments: the copy loops' stores cannot alias it */
    const rmtl_shared_copy_args a = *(const rmtl_shared_copy_args *)ctx;
    int bad = 0;
    int64_t at = 0; /* where span i starts in shared */
    for (int i = 0; i < a.bal->n && at < hi; i++) {
        int64_t len = a.bal->hi[i] - a.bal->lo[i];
        int64_t j0 = lo > at ? lo - at : 0, j1 = hi - at < len ? hi - at : len;
        float *restrict g = a.g + a.bal->lo[i], *restrict x = a.shared + at;
        if (j0 < j1 && a.set) {
            memcpy(g + j0, x + j0, (size_t)(j1 - j0) * sizeof(float));
        } else if (j0 < j1) {
            for (int64_t j = j0; j < j1; j++) {
                x[j] = g[j];
                bad |= !isfinite(g[j]);
            }
        }
        at += len;
    }
    if (bad) {
        __atomic_store_n(a.bad, 1, __ATOMIC_RELAXED);
    }
}

/* the gradient buffer's shared spans, in order, copied into shared (P), or from it (set);
   copying into shared checks each gradient where it is read: 0 when one is not finite */
static int rmtl_balanced_shared(rmtl_model *m, const rmtl_balanced *bal, float *shared, int set) {
    int bad = 0;
    rmtl_shared_copy_args a = {m->params.grad, shared, bal, set, &bad};
    rmtl_parallel_for(rmtl_balanced_shared_len(bal), RMTL_GRAIN_STREAM, rmtl_shared_copy_range, &a);
    return !bad;
}

/* sc->wk (nb, T): task k's row weights T w_ik (w NULL: 1) in column k, 0 elsewhere, so a
   backward gives the gradient of L_k */
static void rmtl_balanced_task_weights(rmtl_balanced_scratch *sc, const float *w, int k, int nb,
                                       int T) {
    for (int i = 0; i < nb; i++) {
        for (int c = 0; c < T; c++) {
            size_t ic = (size_t)i * T + c;
            sc->wk[ic] = c == k ? (float)T * (w ? w[ic] : 1.0f) : 0.0f;
        }
    }
}

/* After m's forward and with the gradients zeroed: the backward of task k's loss L_k alone
   through the head and task k's tower (rmtl_balanced_task_weights), leaving the gradients of
   its tower input and of the task-specific parameters above it */
static void rmtl_balanced_task_backward(rmtl_model *m, rmtl_balanced_scratch *sc, const float *w,
                                        int k, int nb) {
    float *dlogit[RMTL_MAX_TASKS];
    rmtl_balanced_task_weights(sc, w, k, nb, m->T);
    rmtl_model_dlogit(m, dlogit);
    rmtl_head_backward(dlogit, m->prob, m->sig, m->labels, sc->wk, m->kind == RMTL_ESMM, nb, m->T);
    rmtl_model_backward_towers(m, nb, k);
}

/* Representation space, after m's forward (nb rows, row weights w or NULL): for each task k
   the towers' backward of L_k alone gives its per-row gradients of every tower input (sc->rep)
   and of the task-specific parameters above them (sc->own); the Jacobian row k pools the
   rows of task k's own tower input (times the sign of its value for RMTL_BAL_REP_MULT). */
static void rmtl_balanced_rep_sample(rmtl_model *m, const rmtl_balanced *bal,
                                     rmtl_balanced_scratch *sc, const float *w, int nb) {
    const rmtl_rep_layout *lay = &sc->lay;
    int T = m->T, H = lay->H, sign = bal->b->spec->rep == RMTL_BAL_REP_MULT;
    for (int k = 0; k < T; k++) {
        rmtl_arena_zero_grad_from(&m->arena, lay->from, nb);
        rmtl_balanced_own(m, bal, NULL, RMTL_OWN_ZERO);
        rmtl_balanced_task_backward(m, sc, w, k, nb);
        for (int l = 0; l < lay->n; l++) {
            if (!lay->touches[k][l]) {
                continue;
            }
            const float *src = rmtl_arena_grad(&m->arena, lay->at[l].col) + lay->at[l].off;
            float *dst = sc->rep + ((size_t)k * lay->n + l) * (size_t)nb * H;
            for (int i = 0; i < nb; i++) {
                memcpy(dst + (size_t)i * H, src + (size_t)i * lay->at[l].ld, H * sizeof(float));
            }
        }
        rmtl_balanced_own(m, bal, sc->own + (size_t)k * sc->N, RMTL_OWN_GET);
        const rmtl_loc *at = &lay->at[lay->loc[k]];
        const float *g = sc->rep + ((size_t)k * lay->n + lay->loc[k]) * (size_t)nb * H;
        const float *val = rmtl_arena_val(&m->arena, at->col) + at->off;
        for (int j = 0; j < H; j++) {
            double acc = 0.0;
            for (int i = 0; i < nb; i++) {
                float v = val[(size_t)i * at->ld + j];
                double s = sign ? (v > 0.0f) - (v < 0.0f) : 1.0;
                acc += s * g[(size_t)i * H + j];
            }
            sc->jac[(size_t)k * H + j] = (float)acc;
        }
    }
}

/* After m's forward of sample s (nb rows, row weights w or NULL): its task losses and, for a
   gradient balancer, T backwards (rmtl_balanced_task_weights) into the Jacobian and the
   task-specific gradients (in the representation space: rmtl_balanced_rep_sample). A losses
   balancer instead takes its weights and runs the one weighted backward (S is 1 then). */
static int rmtl_balanced_sample(rmtl_model *m, const rmtl_balanced *bal, rmtl_balanced_scratch *sc,
                                const float *w, int nb, int s) {
    rmtl_balancer *b = bal->b;
    int T = m->T;
    float *L = sc->losses + (size_t)s * T;
    rmtl_task_losses(L, m, w, nb);
    if (rmtl_balancer_losses_only(b)) {
        double v[RMTL_MAX_TASKS];
        RMTL_TRY(rmtl_balancer_step_weights(b, v, L, nb));
        for (int i = 0; i < nb; i++) {
            for (int k = 0; k < T; k++) {
                size_t ik = (size_t)i * T + k;
                sc->wk[ik] = (float)(T * v[k]) * (w ? w[ik] : 1.0f);
            }
        }
        rmtl_model_head_backward(m, m->codes, m->dense, m->labels, sc->wk, nb);
        return RMTL_OK;
    }
    if (bal->rep) {
        rmtl_balanced_rep_sample(m, bal, sc, w, nb);
        return RMTL_OK;
    }
    size_t P = (size_t)b->P;
    for (int k = 0; k < T; k++) {
        rmtl_model_zero_grad(m, nb);
        rmtl_balanced_task_backward(m, sc, w, k, nb);
        rmtl_model_backward_shared(m, m->codes, m->dense, k, nb);
        size_t row = (size_t)s * T + k;
        if (!rmtl_balanced_shared(m, bal, sc->jac + row * P, 0)) {
            return RMTL_ERR_NONFINITE;
        }
        rmtl_balanced_own(m, bal, sc->own + row * (size_t)sc->N, RMTL_OWN_GET);
    }
    return RMTL_OK;
}

/* own (N) = the task-specific gradients of the step: the sum over samples and tasks of
   c_k g_k (their mean over the samples with tower_mean), accumulated in sample 0's first row */
static void rmtl_balanced_own_sum(const rmtl_balancer *b, rmtl_balanced_scratch *sc, int T) {
    int S = b->S;
    double scale = b->spec->tower_mean ? 1.0 / S : 1.0;
    float *own = sc->own;
    for (int64_t j = 0; j < sc->N; j++) {
        double acc = 0.0;
        for (int r = 0; r < S * T; r++) {
            acc += b->tower[r % T] * own[(size_t)r * sc->N + j];
        }
        own[j] = (float)(acc * scale);
    }
}

typedef struct {
    rmtl_model *m;
    const rmtl_balancer *b;
    const rmtl_balanced_scratch *sc;
    int nb;
} rmtl_rep_combine_args;

/* rows [lo, hi) of every tower input's gradient: sum_k c_kx G_k over the tasks whose towers
   touch it, in task order (the same bits however the rows are split) */
static void rmtl_rep_combine_rows(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_rep_combine_args *a = ctx;
    const rmtl_balanced_scratch *sc = a->sc;
    const rmtl_rep_layout *lay = &sc->lay;
    int T = a->m->T, H = lay->H, nb = a->nb, mult = a->b->spec->rep == RMTL_BAL_REP_MULT;
    for (int l = 0; l < lay->n; l++) {
        float *dst = rmtl_arena_grad(&a->m->arena, lay->at[l].col) + lay->at[l].off;
        for (int64_t i = lo; i < hi; i++) {
            for (int j = 0; j < H; j++) {
                double acc = 0.0;
                for (int k = 0; k < T; k++) {
                    if (lay->touches[k][l]) {
                        double c = mult ? sc->mult[(size_t)k * H + j] : a->b->coef[k];
                        acc += c * sc->rep[(((size_t)k * lay->n + l) * nb + i) * H + j];
                    }
                }
                dst[(size_t)i * lay->at[l].ld + j] = (float)acc;
            }
        }
    }
}

/* Representation space, after the balancer's step: every tower input's gradient becomes
   sum_k c_kx G_k (c_kx the step's coefficient c_k, or GradDrop's multiplier M_kx), one
   backward below the towers takes it to every parameter there, and the towers' parameters
   get their task sums */
static void rmtl_balanced_rep_finish(rmtl_model *m, const rmtl_balanced *bal,
                                     rmtl_balanced_scratch *sc, int nb) {
    const rmtl_balancer *b = bal->b;
    const rmtl_rep_layout *lay = &sc->lay;
    rmtl_model_zero_grad(m, nb);
    rmtl_rep_combine_args args = {m, b, sc, nb};
    double per_row = (double)lay->n * lay->H * m->T;
    rmtl_parallel_for(nb, rmtl_grain(per_row, RMTL_GRAIN_COMPUTE), rmtl_rep_combine_rows, &args);
    rmtl_model_backward_shared(m, m->codes, m->dense, -1, nb);
    rmtl_balanced_own_sum(b, sc, m->T);
    rmtl_balanced_own(m, bal, sc->own, RMTL_OWN_ADD);
}

/* a gradient balancer's direction into the shared spans, the task-specific sums elsewhere */
static int rmtl_balanced_finish(rmtl_model *m, const rmtl_balanced *bal, rmtl_balanced_scratch *sc,
                                int nb, int losses_only) {
    rmtl_balancer *b = bal->b;
    if (losses_only) {
        return RMTL_OK;
    }
    if (bal->rep && b->spec->rep == RMTL_BAL_REP_NONE) {
        return RMTL_ERR_ARG;
    }
    b->mult = bal->rep ? sc->mult : NULL;
    /* the parameter space's Jacobian was checked as its rows were copied */
    int st = bal->rep ? rmtl_balancer_step(b, sc->dir, sc->losses, sc->jac, nb)
                      : rmtl_balancer_step_finite(b, sc->dir, sc->losses, sc->jac, nb);
    b->mult = NULL;
    RMTL_TRY(st);
    if (bal->rep) {
        if (b->spec->rep == RMTL_BAL_REP_COEF && !b->has_coef) {
            return RMTL_ERR_ARG;
        }
        rmtl_balanced_rep_finish(m, bal, sc, nb);
        return RMTL_OK;
    }
    rmtl_balanced_own_sum(b, sc, m->T);
    (void)rmtl_balanced_shared(m, bal, sc->dir, 1);
    rmtl_balanced_own(m, bal, sc->own, RMTL_OWN_SET);
    return RMTL_OK;
}

int rmtl_train_chunk(rmtl_model *m, double *loss_sum, double *weight_sum, const int64_t *rows,
                     int64_t n_rows, const rmtl_rows *data, int B, const rmtl_loss_weighting *wt,
                     const rmtl_balanced *bal, const rmtl_adam *opt) {
    int T = m->T, S = bal != NULL ? bal->b->S : 1;
    /* no batch holds more rows than the chunk: a huge B on small data reserves only those */
    B = n_rows < B ? (int)(n_rows > 0 ? n_rows : 1) : B;
    RMTL_TRY(rmtl_model_reserve(m, B));
    for (int k = 0; wt != NULL && wt->critics != NULL && k < T; k++) {
        RMTL_TRY(rmtl_critic_reserve(wt->critics[k], B));
    }
    /* one block: the permutation (B int64, permuted only), then w (B,T), its copy (B,T,
       permuted only), the critics' states (B, Dc) and the balancer's scratch */
    int Dc = wt != NULL && wt->critics != NULL ? wt->critics[0]->net.D : 0;
    int permuted = wt != NULL && wt->weighting == RMTL_WEIGHT_PERMUTED;
    size_t n_perm = permuted ? (size_t)B : 0, n_w = (size_t)B * T, n_copy = permuted ? n_w : 0;
    size_t n_bal = bal != NULL ? rmtl_balanced_floats(m, bal, B) : 0;
    size_t n_float = (wt != NULL ? n_w + n_copy + (size_t)B * Dc : 0) + n_bal;
    size_t bytes = n_perm * sizeof(int64_t) + n_float * sizeof(float);
    if (bytes > m->chunk_bytes) {
        free(m->chunk);
        m->chunk = malloc(bytes);
        m->chunk_bytes = m->chunk != NULL ? bytes : 0;
        if (m->chunk == NULL) {
            return RMTL_ERR_NOMEM;
        }
    }
    void *block = m->chunk;
    int64_t *perm = block;
    float *w = wt == NULL ? NULL : (float *)(perm + n_perm);
    float *copy = w == NULL ? NULL : w + n_w;
    float *state = copy == NULL ? NULL : copy + n_copy;
    rmtl_balanced_scratch sc;
    if (bal != NULL) {
        sc = rmtl_balanced_block((float *)(perm + n_perm) + (n_float - n_bal), m, bal, B);
    }
    *loss_sum = 0.0;
    for (int k = 0; wt != NULL && k < T; k++) {
        weight_sum[k] = 0.0;
    }
    int st = RMTL_OK;
    for (int64_t start = 0; start < n_rows && st == RMTL_OK; start += (int64_t)B * S) {
        int nb = 0;
        /* this step needs one backward only (a losses balancer, GradNorm's first epoch) */
        int losses_only = bal != NULL && rmtl_balancer_losses_only(bal->b);
        for (int s = 0; s < S && st == RMTL_OK; s++) {
            int64_t first = (start + (int64_t)s * B) % n_rows;
            nb = (int)(n_rows - first < B ? n_rows - first : B);
            st = rmtl_gather_batch(m->codes, m->dense, m->labels, data, rows + first, nb, m->F,
                                   m->D, T, m->field_dims);
            if (st != RMTL_OK) {
                break;
            }
            if (bal == NULL || losses_only) {
                /* a gradient balancer's backwards zero what they use */
                rmtl_model_zero_grad(m, nb);
            }
            st = rmtl_model_forward(m, m->codes, m->dense, nb);
            if (st != RMTL_OK) {
                break;
            }
            if (Dc > 0) {
                rmtl_gather_state(state, data, rows + first, nb, m->D, Dc - data->X);
            }
            if (wt != NULL) {
                st = rmtl_batch_weights(m, w, weight_sum, state, wt, nb);
                if (st != RMTL_OK) {
                    break;
                }
            }
            if (permuted) {
                rmtl_permute_rows(w, copy, perm, nb, T, wt->seed, (uint64_t)m->params.adam_step);
            }
            if (bal == NULL) {
                *loss_sum += rmtl_model_head_backward(m, m->codes, m->dense, m->labels, w, nb) * nb;
            } else {
                st = rmtl_balanced_sample(m, bal, &sc, w, nb, s);
                double mean = 0.0;
                for (int k = 0; s == 0 && k < T; k++) {
                    mean += sc.losses[k] / T;
                }
                *loss_sum += s == 0 ? mean * nb : 0.0;
            }
        }
        if (st == RMTL_OK && bal != NULL) {
            st = rmtl_balanced_finish(m, bal, &sc, nb, losses_only);
        }
        if (st != RMTL_OK) {
            break;
        }
        rmtl_params_adam_step(&m->params, opt);
        if (bal != NULL && bal->b->spec->after_step != NULL) {
            /* the last sample's batch at the new parameters (its codes are still gathered) */
            st = rmtl_model_forward(m, m->codes, m->dense, nb);
            if (st == RMTL_OK) {
                rmtl_task_losses(sc.losses, m, w, nb);
                st = rmtl_balancer_after_step(bal->b, sc.losses);
            }
        }
    }
    return st;
}

/* Tables cap: PLE's level 0 in bench_backbones.py (12 experts of 512 and 3 gates over 4641
   codes) needs 109 MB */
#define RMTL_TABLES_MAX_BYTES ((size_t)256 << 20)
/* Below this embedding width the products are cheap: reading F + D + 1 table rows per output
   costs about what the 2 (F+1) E multiply-adds it replaces do (measured on 2 cores, SharedBottom
   and MMoE: E = 8 0.9x, 16 1.1x, 32 1.1-1.2x, 128 2-2.5x the plain prediction) */
#define RMTL_TABLES_MIN_E 16

/* Tables pay for n rows when they fit and building them (table_rows products of width E per
   output) costs at most a quarter of the n products of width (F+1) E they replace */
static int rmtl_model_tables_pay(const rmtl_model *m, int64_t n) {
    return m->E >= RMTL_TABLES_MIN_E && m->tab_size * sizeof(float) <= RMTL_TABLES_MAX_BYTES &&
           (int64_t)m->front[0].table_rows * 4 <= n * (m->F + 1);
}

/* Sets m->use_tab for a prediction of n rows (tables: RMTL_TABLES_*) and builds the tables
   from the current parameters, which may have changed since the last prediction */
static int rmtl_model_tables_begin(rmtl_model *m, int64_t n, int tables) {
    const float *p = m->params.param;
    if (tables < RMTL_TABLES_AUTO || tables > RMTL_TABLES_ALWAYS) {
        return RMTL_ERR_ARG;
    }
    m->use_tab = m->n_first > 0 && (tables == RMTL_TABLES_ALWAYS ||
                                    (tables == RMTL_TABLES_AUTO && rmtl_model_tables_pay(m, n)));
    if (m->use_tab && m->tab == NULL) {
        m->tab = malloc(m->tab_size * sizeof(float));
    }
    if (m->use_tab && m->tab == NULL) {
        /* the plain path needs no extra memory: only forced tables fail */
        m->use_tab = 0;
        return tables == RMTL_TABLES_ALWAYS ? RMTL_ERR_NOMEM : RMTL_OK;
    }
    for (int i = 0; i < m->n_first && m->use_tab; i++) {
        const rmtl_first *l = &m->first[i];
        const rmtl_frontend *fe = &m->front[l->front];
        rmtl_tables_build(m->tab + l->tab, p + fe->table, p + fe->num_w, p + fe->num_b, p + l->w,
                          p + l->b, m->field_offset, (int64_t)fe->table_rows, m->F, m->D, m->E,
                          l->out);
    }
    return RMTL_OK;
}

/* rmtl_model_predict's batches, m in eval mode; the caller frees the tables */
static int rmtl_model_predict_batches(rmtl_model *m, float *out, const int32_t *codes,
                                      const float *dense, int64_t n, int B, int tables) {
    RMTL_TRY(rmtl_model_reserve(m, B));
    RMTL_TRY(rmtl_model_tables_begin(m, n, tables));
    for (int64_t start = 0; start < n; start += B) {
        int nb = (int)(n - start < B ? n - start : B);
        RMTL_TRY(
            rmtl_model_forward(m, codes + (size_t)start * m->F, dense + (size_t)start * m->D, nb));
        memcpy(out + (size_t)start * m->T, m->prob, (size_t)nb * m->T * sizeof(float));
    }
    return RMTL_OK;
}

int rmtl_model_predict(rmtl_model *m, float *out, const int32_t *codes, const float *dense,
                       int64_t n, int B, int tables) {
    int training = m->training;
    m->training = 0;
    int st = rmtl_model_predict_batches(m, out, codes, dense, n, n < B ? (int)(n > 0 ? n : 1) : B,
                                        tables);
    /* the tables can be hundreds of MB and are stale after the next step: not kept */
    free(m->tab);
    m->tab = NULL;
    m->use_tab = 0;
    m->training = training;
    return st;
}
