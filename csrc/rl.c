/* RMTL's learning rules over the critics: TD regression, the paper's actor loss, target
   networks and the chunked loop of stage 2 (critics); stage 3 runs train.c's loop. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "rl.h"
#include "rng.h"

/* rmtl_soft_update's arguments; keep = 1 - tau */
typedef struct {
    float *dst;
    const float *src;
    float tau, keep;
} rmtl_soft_update_args;

/* values [lo, hi) of rmtl_soft_update */
RMTL_CLONES static void rmtl_soft_update_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_soft_update_args *a = ctx;
    /* locals: the loop reads them all per value, and stores through dst could alias *a */
    float *dst = a->dst, tau = a->tau, keep = a->keep;
    const float *src = a->src;
    for (int64_t i = lo; i < hi; i++) {
        dst[i] = tau * src[i] + keep * dst[i];
    }
}

void rmtl_soft_update(float *dst, const float *src, size_t n, float tau) {
    float keep = 1.0f - tau;
    rmtl_soft_update_args soft_update_args = {dst, src, tau, keep};
    rmtl_parallel_for(n, rmtl_grain(1, RMTL_GRAIN_STREAM), rmtl_soft_update_range,
                      &soft_update_args);
}

/* eval-mode Q of c at (codes, dense, action) into c->q, restoring c's mode */
static int rmtl_critic_eval(rmtl_critic *c, const int32_t *codes, const float *dense,
                            const float *action, int B) {
    int training = c->net.training;
    c->net.training = 0;
    int st = rmtl_critic_forward(c, codes, dense, action, B);
    c->net.training = training;
    return st;
}

int rmtl_critic_td_backward(rmtl_critic *q, rmtl_critic *qt, double *loss, const int32_t *codes,
                            const float *dense, const float *action, const int32_t *ncodes,
                            const float *ndense, const float *naction, const float *reward,
                            const float *done, const float *weight, float gamma, int td3, int B) {
    RMTL_TRY(rmtl_critic_reserve(q, B));
    RMTL_TRY(rmtl_critic_reserve(qt, B));
    RMTL_TRY(rmtl_critic_eval(qt, ncodes, ndense, naction, B));
    memcpy(q->y, qt->q, (size_t)B * sizeof(float));
    if (td3) {
        RMTL_TRY(rmtl_critic_eval(q, ncodes, ndense, naction, B));
        for (int i = 0; i < B; i++) {
            q->y[i] = q->q[i] < q->y[i] ? q->q[i] : q->y[i];
        }
    }
    for (int i = 0; i < B; i++) {
        q->y[i] = reward[i] + gamma * (1.0f - done[i]) * q->y[i];
    }
    rmtl_critic_zero_grad(q, B);
    RMTL_TRY(rmtl_critic_forward(q, codes, dense, action, B));
    double sum = 0.0;
    for (int i = 0; i < B; i++) {
        float w = weight ? weight[i] : 1.0f, diff = q->q[i] - q->y[i];
        sum += (double)w * (double)diff * (double)diff;
        q->dq[i] = 2.0f * w * diff / (float)B;
    }
    *loss = sum / (double)B;
    rmtl_critic_backward(q, NULL, q->dq, codes, dense, action, B);
    return RMTL_OK;
}

int rmtl_actor_backward(rmtl_model *actor, rmtl_critic *const *critics, double *loss, float *dprob,
                        const int32_t *codes, const float *dense, const float *state,
                        const float *weight, int B) {
    int T = actor->T;
    RMTL_TRY(rmtl_model_reserve(actor, B));
    for (int k = 0; k < T; k++) {
        RMTL_TRY(rmtl_critic_reserve(critics[k], B));
    }
    rmtl_model_zero_grad(actor, B);
    RMTL_TRY(rmtl_model_forward(actor, codes, dense, B));
    double sum = 0.0;
    for (int k = 0; k < T; k++) {
        rmtl_critic *c = critics[k];
        for (int i = 0; i < B; i++) {
            c->action[i] = actor->prob[(size_t)i * T + k];
        }
        rmtl_critic_zero_grad(c, B);
        RMTL_TRY(rmtl_critic_forward(c, codes, state, c->action, B));
        for (int i = 0; i < B; i++) {
            float w = weight ? weight[(size_t)i * T + k] : 1.0f;
            sum -= (double)w * (double)c->q[i];
            c->dq[i] = -w / (float)B;
            c->daction[i] = 0.0f;
        }
        rmtl_critic_backward(c, c->daction, c->dq, codes, state, c->action, B);
        for (int i = 0; i < B; i++) {
            dprob[(size_t)i * T + k] = c->daction[i];
        }
    }
    *loss = sum / (double)B;
    rmtl_model_prob_backward(actor, dprob, codes, dense, B);
    return RMTL_OK;
}

/* scratch of one stage-2 step, cap rows: gathered states and next states (the actor's dense and
   the critics' state), labels, target actions, IPS weights and dL/dmu (B,T), and four task
   columns (B each); codes and ncodes share the block at codes, the floats the block at dense */
typedef struct {
    int cap;
    int32_t *codes, *ncodes;
    float *dense, *ndense, *state, *nstate, *labels, *naction, *weight, *dprob, *col;
} rmtl_td_work;

static void rmtl_td_work_free(rmtl_td_work *w) {
    free(w->codes);
    free(w->dense);
    memset(w, 0, sizeof(*w));
}

/* two blocks, one of codes and one of floats, carved into the buffers of rmtl_td_work */
static int rmtl_td_work_reserve(rmtl_td_work *w, int B, int F, int D, int Dc, int T) {
    if (B <= w->cap) {
        return RMTL_OK;
    }
    size_t n = (size_t)B, d = n * (size_t)D, dc = n * (size_t)Dc, t = n * (size_t)T;
    int32_t *codes = malloc(2 * n * (size_t)F * sizeof(int32_t));
    float *f = malloc((2 * d + 2 * dc + 4 * t + 4 * n) * sizeof(float));
    if (codes == NULL || f == NULL) {
        free(codes);
        free(f);
        return RMTL_ERR_NOMEM;
    }
    rmtl_td_work_free(w);
    w->codes = codes;
    w->ncodes = codes + n * (size_t)F;
    w->dense = f;
    w->ndense = f + d;
    w->state = w->ndense + d;
    w->nstate = w->state + dc;
    w->labels = w->nstate + dc;
    w->naction = w->labels + t;
    w->weight = w->naction + t;
    w->dprob = w->weight + t;
    w->col = w->dprob + t;
    w->cap = B;
    return RMTL_OK;
}

/* IPS weights per task over a batch with n_k positives: y (B+1)/(n_k+1) + (B+1)/(B-n_k);
   a batch of positives only uses B - n_k = 1 instead of dividing by zero */
static void rmtl_ips_weights(float *weight, const float *labels, int B, int T) {
    for (int k = 0; k < T; k++) {
        double pos = 0.0;
        for (int i = 0; i < B; i++) {
            pos += labels[(size_t)i * T + k];
        }
        double neg = (double)B - pos;
        float wp = (float)((B + 1.0) / (pos + 1.0)),
              wn = (float)((B + 1.0) / (neg > 1.0 ? neg : 1.0));
        for (int i = 0; i < B; i++) {
            weight[(size_t)i * T + k] = labels[(size_t)i * T + k] * wp + wn;
        }
    }
}

/* next actions a' = mu'(s') (+ clipped Gaussian noise for the TD3-like target) into w->naction */
static int rmtl_target_actions(const rmtl_agent_nets *nets, rmtl_td_work *w, int B, int64_t step,
                               const rmtl_td_config *cfg) {
    rmtl_model *mt = nets->actor_target;
    int T = nets->T, training = mt->training;
    RMTL_TRY(rmtl_model_reserve(mt, B));
    mt->training = 0;
    int st = rmtl_model_forward(mt, w->ncodes, w->ndense, B);
    mt->training = training;
    if (st != RMTL_OK) {
        return st;
    }
    for (size_t j = 0; j < (size_t)B * T; j++) {
        float a = mt->prob[j];
        if (cfg->td3) {
            float z = cfg->noise_std * rmtl_rng_normal(cfg->seed, (uint64_t)step, j);
            a += z < -cfg->noise_clip  ? -cfg->noise_clip
                 : z > cfg->noise_clip ? cfg->noise_clip
                                       : z;
        }
        w->naction[j] = a;
    }
    return RMTL_OK;
}

static void rmtl_soft_update_all(const rmtl_agent_nets *nets, float tau) {
    for (int k = 0; k < nets->T; k++) {
        rmtl_params *dst = &nets->targets[k]->net.params, *src = &nets->critics[k]->net.params;
        rmtl_soft_update(dst->param, src->param, src->total, tau);
    }
    rmtl_soft_update(nets->actor_target->params.param, nets->actor->params.param,
                     nets->actor->params.total, tau);
}

/* One stage-2 step at global step index `step` (rmtl_td_chunk): the critics' losses into
   critic_loss (T), the actor's into *actor_loss (NaN when it takes no step) */
static int rmtl_td_step(const rmtl_agent_nets *nets, rmtl_td_work *w, double *critic_loss,
                        double *actor_loss, const rmtl_td_batch *batch, const rmtl_rows *data,
                        int B, int64_t step, const rmtl_td_config *cfg) {
    const rmtl_model *actor = nets->actor;
    int F = actor->F, D = actor->D, T = nets->T, keep = nets->critics[0]->net.D - data->X;
    RMTL_TRY(rmtl_td_work_reserve(w, B, F, D, keep + data->X, T));
    RMTL_TRY(rmtl_gather_batch(w->codes, w->dense, w->labels, data, batch->state, B, F, D, T,
                               actor->field_dims));
    RMTL_TRY(rmtl_gather_batch(w->ncodes, w->ndense, NULL, data, batch->next, B, F, D, T,
                               actor->field_dims));
    rmtl_gather_state(w->state, data, batch->state, B, D, keep);
    rmtl_gather_state(w->nstate, data, batch->next, B, D, keep);
    RMTL_TRY(rmtl_target_actions(nets, w, B, step, cfg));
    if (cfg->ips) {
        rmtl_ips_weights(w->weight, w->labels, B, T);
    }
    float *a = w->col, *na = a + B, *r = na + B, *wk = r + B;
    for (int k = 0; k < T; k++) {
        rmtl_column(a, batch->action, k, B, T);
        rmtl_column(na, w->naction, k, B, T);
        rmtl_column(r, batch->reward, k, B, T);
        if (cfg->ips) {
            rmtl_column(wk, w->weight, k, B, T);
        }
        RMTL_TRY(rmtl_critic_td_backward(
            nets->critics[k], nets->targets[k], &critic_loss[k], w->codes, w->state, a, w->ncodes,
            w->nstate, na, r, batch->done, cfg->ips ? wk : NULL, cfg->gamma, cfg->td3, B));
        rmtl_params_adam_step(&nets->critics[k]->net.params, &cfg->critic_opt);
    }
    *actor_loss = NAN;
    if (cfg->actor_update && (step + 1) % cfg->actor_update_freq == 0 &&
        step > cfg->init_training_step) {
        RMTL_TRY(rmtl_actor_backward(nets->actor, nets->critics, actor_loss, w->dprob, w->codes,
                                     w->dense, w->state, cfg->ips ? w->weight : NULL, B));
        rmtl_params_adam_step(&nets->actor->params, &cfg->actor_opt);
    }
    if (step % cfg->soft_update_freq == 0) {
        rmtl_soft_update_all(nets, cfg->tau);
    }
    return RMTL_OK;
}

int rmtl_td_chunk(const rmtl_agent_nets *nets, double *critic_loss_sum, double *actor_loss_sum,
                  int64_t *actor_steps, const rmtl_td_batch *batches, const rmtl_rows *data, int B,
                  int64_t n_steps, int64_t step, const rmtl_td_config *cfg) {
    rmtl_td_work w = {0};
    double closs[RMTL_MAX_TASKS], aloss;
    int st = RMTL_OK, T = nets->T;
    for (int k = 0; k < T; k++) {
        critic_loss_sum[k] = 0.0;
    }
    *actor_loss_sum = 0.0;
    *actor_steps = 0;
    /* a failing step breaks out of the loop: the scratch is freed on every path */
    for (int64_t s = 0; s < n_steps; s++) {
        size_t off = (size_t)s * B;
        rmtl_td_batch b = {batches->state + off, batches->next + off, batches->action + off * T,
                           batches->reward + off * T, batches->done + off};
        st = rmtl_td_step(nets, &w, closs, &aloss, &b, data, B, step + s, cfg);
        if (st != RMTL_OK) {
            break;
        }
        for (int k = 0; k < T; k++) {
            critic_loss_sum[k] += closs[k];
        }
        if (!isnan(aloss)) {
            *actor_loss_sum += aloss;
            (*actor_steps)++;
        }
    }
    rmtl_td_work_free(&w);
    return st;
}
