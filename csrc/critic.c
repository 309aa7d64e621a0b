/* The critic network: the backbones' front end and MLP blocks plus the action field. */
#include <stdlib.h>
#include <string.h>

#include "critic.h"
#include "first.h"

/* the sizes of cfg (rmtl_model_init), the reference's layers in its parameter order, then the
   parameters allocated and initialised */
static int rmtl_critic_build(rmtl_critic *c, const rmtl_model_config *cfg) {
    rmtl_model *m = &c->net;
    RMTL_TRY(rmtl_model_init(m, cfg));
    int E = m->E, in = (m->F + 2) * E;
    m->n_front = 1;
    RMTL_TRY(rmtl_frontend_build(m, &m->front[0], "", 1));
    RMTL_TRY(
        rmtl_params_add(&m->params, &c->act_w, "action_layer.weight", E, 1, RMTL_INIT_LINEAR, 1));
    RMTL_TRY(
        rmtl_params_add(&m->params, &c->act_b, "action_layer.bias", E, 0, RMTL_INIT_LINEAR, 1));
    RMTL_TRY(rmtl_mlp_build(m, &c->bottom, "bottom.mlp", in, m->bottom, m->n_bottom, 0));
    /* the bottom's first layer reads the front end: one first layer over it */
    const rmtl_linear *l = &c->bottom.layer[0];
    rmtl_first layer = {0, l->out, l->out, l->w, l->b, l->act, 0, l->salt};
    rmtl_front_linear act = {c->act_w, c->act_b, 1, NULL, NULL};
    m->first[0] = layer;
    m->n_first = 1;
    m->front[0].lin[m->front[0].n_lin++] = act;
    RMTL_TRY(rmtl_mlp_build(m, &c->tower, "tower.mlp", m->bottom[m->n_bottom - 1], m->tower,
                            m->n_tower, 1));
    return rmtl_params_alloc(&m->params, cfg->seed);
}

int rmtl_critic_create(rmtl_critic **out, const rmtl_model_config *cfg) {
    *out = NULL;
    if (cfg->T != 1) {
        return RMTL_ERR_ARG;
    }
    rmtl_critic *c = calloc(1, sizeof(rmtl_critic));
    if (c == NULL) {
        return RMTL_ERR_NOMEM;
    }
    int st = rmtl_critic_build(c, cfg);
    if (st != RMTL_OK) {
        rmtl_critic_free(c);
        return st;
    }
    *out = c;
    return RMTL_OK;
}

void rmtl_critic_free(rmtl_critic *c) {
    if (c != NULL) {
        rmtl_model_release(&c->net);
        free(c->block);
        free(c);
    }
}

/* grows the activation and batch buffers to `batch` rows (never shrinks) */
int rmtl_critic_reserve(rmtl_critic *c, int batch) {
    if (batch <= c->net.arena.cap) {
        return RMTL_OK;
    }
    float *block = malloc(5 * (size_t)batch * sizeof(float));
    int st = block != NULL ? rmtl_arena_resize(&c->net.arena, batch) : RMTL_ERR_NOMEM;
    if (st == RMTL_OK) {
        st = rmtl_distinct_reserve(&c->net, batch);
    }
    if (st != RMTL_OK) {
        free(block);
        return st;
    }
    free(c->block);
    c->block = c->q = block;
    c->action = c->q + batch;
    c->y = c->action + batch;
    c->dq = c->y + batch;
    c->daction = c->dq + batch;
    return RMTL_OK;
}

void rmtl_critic_zero_grad(rmtl_critic *c, int B) {
    rmtl_params_zero_grad(&c->net.params);
    rmtl_arena_zero_grad(&c->net.arena, B);
}

int rmtl_critic_forward(rmtl_critic *c, const int32_t *codes, const float *dense,
                        const float *action, int B) {
    rmtl_model *m = &c->net;
    RMTL_TRY(rmtl_arena_layout(&m->arena, B));
    if (m->training) {
        m->counter++;
    }
    /* the reference concatenates [embedding fields, numerical field, action field] */
    rmtl_distinct_build(m, codes, B);
    m->front[0].lin[1].x = action;
    rmtl_frontend_forward(m, &m->front[0], codes, dense, B);
    rmtl_first_forward(m, &m->first[0], B);
    const float *h, *out;
    rmtl_mlps_forward(m, &c->bottom, 1, 1, NULL, NULL, B, &h);
    rmtl_mlps_forward(m, &c->tower, 1, 0, &h, &c->tower.layer[0].in, B, &out);
    for (int i = 0; i < B; i++) {
        c->q[i] = out[i] > 0.0f ? -out[i] : 0.0f;
    }
    return RMTL_OK;
}

void rmtl_critic_backward(rmtl_critic *c, float *daction, const float *dq, const int32_t *codes,
                          const float *dense, const float *action, int B) {
    rmtl_model *m = &c->net;
    size_t tower_out = rmtl_mlp_out(&c->tower), bottom_out = rmtl_mlp_out(&c->bottom);
    const float *out = rmtl_arena_val(&m->arena, tower_out);
    float *dout = rmtl_arena_grad(&m->arena, tower_out);
    /* Q = -ReLU(out): dQ/dout = -1 where out > 0, else 0 (torch's ReLU gradient at 0) */
    for (int i = 0; i < B; i++) {
        dout[i] = out[i] > 0.0f ? -dq[i] : 0.0f;
    }
    float *dh = rmtl_arena_grad(&m->arena, bottom_out);
    const float *h = rmtl_arena_val(&m->arena, bottom_out);
    rmtl_mlps_backward(m, &c->tower, 1, 0, &dh, &h, &c->tower.layer[0].in, B);
    rmtl_mlps_backward(m, &c->bottom, 1, 1, NULL, NULL, NULL, B);
    m->front[0].lin[0].x = dense;
    m->front[0].lin[1].x = action;
    m->front[0].lin[1].dx = daction;
    rmtl_first_backward(m, &m->first[0], B);
    rmtl_frontend_backward(m, &m->front[0], codes, B);
}

int rmtl_critic_predict(rmtl_critic *c, float *out, const int32_t *codes, const float *dense,
                        const float *action, int64_t n, int B) {
    RMTL_TRY(rmtl_critic_reserve(c, B));
    for (int64_t start = 0; start < n; start += B) {
        int nb = (int)(n - start < B ? n - start : B);
        RMTL_TRY(rmtl_critic_forward(c, codes + (size_t)start * c->net.F,
                                     dense + (size_t)start * c->net.D, action + start, nb));
        memcpy(out + start, c->q, (size_t)nb * sizeof(float));
    }
    return RMTL_OK;
}
