/* The backbones as compositions of blocks: which front end feeds which bottom,
   which bottom feeds which tower, and the head that turns logits into probabilities. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbones.h"
#include "experts.h"
#include "first.h"

/* the backbones whose middle is a program of fused ops (experts.h); ESMM's per-task bottoms
   read one embedding, so their first layers are one product there too */
static int rmtl_model_has_experts(const rmtl_model *m) {
    return m->kind >= RMTL_OMOE || m->kind == RMTL_ESMM;
}

/* the first layers over the front ends: each bottom's first layer, or the experts' op 0 */
static void rmtl_model_first_declare(rmtl_model *m) {
    m->n_first = rmtl_model_has_experts(m) ? 1 : m->n_bottom_mlp;
    for (int i = 0; i < m->n_first; i++) {
        rmtl_first *l = &m->first[i];
        if (rmtl_model_has_experts(m)) {
            *l = rmtl_experts_first(m);
        } else {
            const rmtl_linear *lin = &m->bottoms[i].layer[0];
            rmtl_first b = {m->n_front == 1 ? 0 : i,
                            lin->out,
                            lin->out,
                            lin->w,
                            lin->b,
                            lin->act,
                            0,
                            lin->salt};
            *l = b;
        }
        l->tab = m->tab_size;
        m->tab_size += (m->front[l->front].table_rows + (size_t)m->D + 1) * (size_t)l->out;
    }
}

/* the sizes of cfg (rmtl_model_init), the layers of m's kind, then the parameters allocated and
   initialised; m has its kind and n_experts */
static int rmtl_model_build(rmtl_model *m, const rmtl_model_config *cfg) {
    RMTL_TRY(rmtl_model_init(m, cfg));
    int in = (m->F + 1) * m->E;
    m->n_front = m->kind == RMTL_SINGLETASK ? m->T : 1;
    m->n_bottom_mlp = rmtl_model_has_experts(m) ? 0 : m->kind == RMTL_SHAREDBOTTOM ? 1 : m->T;
    m->bottoms = m->n_bottom_mlp > 0 ? calloc((size_t)m->n_bottom_mlp, sizeof(rmtl_mlp)) : NULL;
    m->towers = calloc((size_t)m->T, sizeof(rmtl_mlp));
    if ((m->n_bottom_mlp > 0 && m->bottoms == NULL) || m->towers == NULL) {
        return RMTL_ERR_NOMEM;
    }
    char name[RMTL_NAME_LEN];
    for (int f = 0; f < m->n_front; f++) {
        snprintf(name, sizeof(name), "%d.", f);
        RMTL_TRY(rmtl_frontend_build(m, &m->front[f], m->kind == RMTL_SINGLETASK ? name : "", 0));
    }
    for (int b = 0; b < m->n_bottom_mlp; b++) {
        if (m->kind != RMTL_SHAREDBOTTOM) {
            snprintf(name, sizeof(name), "bottom.%d.mlp", b);
        } else {
            snprintf(name, sizeof(name), "bottom.mlp");
        }
        RMTL_TRY(rmtl_mlp_build(m, &m->bottoms[b], name, in, m->bottom, m->n_bottom, 0));
    }
    if (rmtl_model_has_experts(m)) {
        RMTL_TRY(rmtl_experts_build(m));
    }
    for (int k = 0; k < m->T; k++) {
        snprintf(name, sizeof(name), "tower.%d.mlp", k);
        RMTL_TRY(rmtl_mlp_build(m, &m->towers[k], name, m->bottom[m->n_bottom - 1], m->tower,
                                m->n_tower, 1));
    }
    rmtl_model_first_declare(m);
    return rmtl_params_alloc(&m->params, m->seed);
}

int rmtl_model_init(rmtl_model *m, const rmtl_model_config *cfg) {
    int ok = cfg->F >= 1 && cfg->D >= 0 && cfg->T >= 1 && cfg->T <= RMTL_MAX_TASKS && cfg->E >= 1 &&
             cfg->n_bottom >= 1 && cfg->n_bottom <= RMTL_MAX_LAYERS && cfg->n_tower >= 0 &&
             cfg->n_tower <= RMTL_MAX_LAYERS && cfg->dropout >= 0.0f && cfg->dropout < 1.0f;
    for (int f = 0; ok && f < cfg->F; f++) {
        ok = cfg->field_dims[f] >= 1;
    }
    for (int j = 0; ok && j < cfg->n_bottom; j++) {
        ok = cfg->bottom[j] > 0;
        m->bottom[j] = cfg->bottom[j];
    }
    for (int j = 0; ok && j < cfg->n_tower; j++) {
        ok = cfg->tower[j] > 0;
        m->tower[j] = cfg->tower[j];
    }
    if (!ok) {
        return RMTL_ERR_ARG;
    }
    m->F = cfg->F;
    m->D = cfg->D;
    m->T = cfg->T;
    m->E = cfg->E;
    m->n_bottom = cfg->n_bottom;
    m->n_tower = cfg->n_tower;
    m->dropout = cfg->dropout;
    m->seed = cfg->seed;
    m->training = 1;
    m->field_dims = malloc((size_t)cfg->F * sizeof(int32_t));
    m->field_offset = malloc((size_t)cfg->F * sizeof(int64_t));
    if (m->field_dims == NULL || m->field_offset == NULL) {
        return RMTL_ERR_NOMEM;
    }
    int64_t off = 0;
    for (int f = 0; f < cfg->F; f++) {
        m->field_dims[f] = cfg->field_dims[f];
        m->field_offset[f] = off;
        off += cfg->field_dims[f];
    }
    return RMTL_OK;
}

int rmtl_model_create(rmtl_model **out, const rmtl_model_config *cfg) {
    *out = NULL;
    if (cfg->kind < 0 || cfg->kind >= RMTL_NUM_BACKBONES ||
        (cfg->kind == RMTL_ESMM && cfg->T != 2)) {
        return RMTL_ERR_ARG;
    }
    int moe = cfg->kind == RMTL_OMOE || cfg->kind == RMTL_MMOE;
    int ple = cfg->kind == RMTL_PLE || cfg->kind == RMTL_PLE_PAPER;
    if ((moe && (cfg->n_experts < 1 || cfg->n_experts > RMTL_MAX_EXPERTS)) ||
        (ple && (cfg->n_experts < 2 || cfg->n_experts % 2 != 0 ||
                 (cfg->T + 1) * (cfg->n_experts / 2) > RMTL_MAX_EXPERTS))) {
        return RMTL_ERR_ARG;
    }
    rmtl_model *m = calloc(1, sizeof(rmtl_model));
    if (m == NULL) {
        return RMTL_ERR_NOMEM;
    }
    m->kind = cfg->kind;
    m->n_experts = moe || ple ? cfg->n_experts : 0;
    int st = rmtl_model_build(m, cfg);
    if (st != RMTL_OK) {
        rmtl_model_free(m);
        return st;
    }
    *out = m;
    return RMTL_OK;
}

static void rmtl_model_free_batch(rmtl_model *m) {
    free(m->codes);
    free(m->dense);
    free(m->labels);
    free(m->prob);
    free(m->sig);
    m->codes = NULL;
    m->dense = m->labels = m->prob = m->sig = NULL;
}

void rmtl_model_release(rmtl_model *m) {
    rmtl_params_free(&m->params);
    rmtl_arena_free(&m->arena);
    rmtl_distinct_free(&m->distinct);
    rmtl_model_free_batch(m);
    free(m->chunk);
    rmtl_experts_free(m);
    free(m->bottoms);
    free(m->towers);
    free(m->field_dims);
    free(m->field_offset);
}

void rmtl_model_free(rmtl_model *m) {
    if (m != NULL) {
        rmtl_model_release(m);
        free(m);
    }
}

/* the batch buffers (freed before), the arena and the distinct codes' workspace for `batch` rows;
   on failure the caller frees the batch buffers and the arena */
static int rmtl_model_alloc_batch(rmtl_model *m, int batch) {
    size_t n = (size_t)batch;
    m->codes = malloc(n * (size_t)m->F * sizeof(int32_t));
    m->dense = malloc(n * (size_t)(m->D ? m->D : 1) * sizeof(float));
    m->labels = malloc(n * (size_t)m->T * sizeof(float));
    m->prob = malloc(n * (size_t)m->T * sizeof(float));
    m->sig = malloc(n * (size_t)m->T * sizeof(float));
    if (!m->codes || !m->dense || !m->labels || !m->prob || !m->sig) {
        return RMTL_ERR_NOMEM;
    }
    RMTL_TRY(rmtl_arena_resize(&m->arena, batch));
    return rmtl_distinct_reserve(m, batch);
}

int rmtl_model_reserve(rmtl_model *m, int batch) {
    if (batch <= m->arena.cap) {
        return RMTL_OK;
    }
    rmtl_model_free_batch(m);
    int st = rmtl_model_alloc_batch(m, batch);
    if (st != RMTL_OK) {
        rmtl_model_free_batch(m);
        rmtl_arena_free(&m->arena);
    }
    return st;
}

rmtl_loc rmtl_model_feature(const rmtl_model *m, int k) {
    if (rmtl_model_has_experts(m)) {
        return rmtl_experts_feature(m, k);
    }
    rmtl_loc l = {rmtl_mlp_out(&m->bottoms[m->n_bottom_mlp == 1 ? 0 : k]), 0,
                  m->bottom[m->n_bottom - 1]};
    return l;
}

/* codes (B,F) dense (B,D) -> m->prob (B,T); the caller reserved B rows */
int rmtl_model_forward(rmtl_model *m, const int32_t *codes, const float *dense, int B) {
    const float *logit[RMTL_MAX_TASKS], *inp[RMTL_MAX_TASKS];
    int ld[RMTL_MAX_TASKS];
    RMTL_TRY(rmtl_arena_layout(&m->arena, B));
    if (m->training) {
        m->counter++;
    }
    /* the first layers over the front ends: from tables, or over the batch's codes */
    if (!m->use_tab) {
        rmtl_distinct_build(m, codes, B);
    }
    for (int f = 0; f < m->n_front && !m->use_tab; f++) {
        rmtl_frontend_forward(m, &m->front[f], codes, dense, B);
    }
    for (int i = 0; i < m->n_first; i++) {
        const rmtl_first *l = &m->first[i];
        if (m->use_tab) {
            rmtl_tables_forward(rmtl_arena_val(&m->arena, l->act), l->out, codes, dense,
                                m->tab + l->tab, m->field_offset, l->n_relu, B, m->F, m->D, l->out,
                                (int64_t)m->front[l->front].table_rows);
        } else {
            rmtl_first_forward(m, l, B);
        }
    }
    if (m->n_bottom_mlp > 0) {
        rmtl_mlps_forward(m, m->bottoms, m->n_bottom_mlp, 1, NULL, NULL, B, NULL);
    }
    if (rmtl_model_has_experts(m)) {
        rmtl_experts_forward(m, 1, B);
    }
    for (int k = 0; k < m->T; k++) {
        rmtl_loc in = rmtl_model_feature(m, k);
        inp[k] = rmtl_arena_val(&m->arena, in.col) + in.off;
        ld[k] = in.ld;
    }
    rmtl_mlps_forward(m, m->towers, m->T, 0, inp, ld, B, logit);
    rmtl_head_forward(m->prob, m->sig, logit, m->kind == RMTL_ESMM, B, m->T);
    return RMTL_OK;
}

void rmtl_model_backward_towers(rmtl_model *m, int B, int task) {
    const float *inp[RMTL_MAX_TASKS];
    float *dinp[RMTL_MAX_TASKS];
    int ld[RMTL_MAX_TASKS];
    for (int k = 0; k < m->T; k++) {
        rmtl_loc in = rmtl_model_feature(m, k);
        inp[k] = rmtl_arena_val(&m->arena, in.col) + in.off;
        dinp[k] = rmtl_arena_grad(&m->arena, in.col) + in.off;
        ld[k] = in.ld;
    }
    int k, n = rmtl_model_towers_of(m, task, &k);
    rmtl_mlps_backward(m, m->towers + k, n, 0, dinp + k, inp + k, ld + k, B);
}

int rmtl_model_towers_of(const rmtl_model *m, int task, int *first) {
    /* ESMM's CTCVR logit gradient reaches both towers */
    int all = task < 0 || m->kind == RMTL_ESMM;
    *first = all ? 0 : task;
    return all ? m->T : 1;
}

void rmtl_model_backward_shared(rmtl_model *m, const int32_t *codes, const float *dense, int task,
                                int B) {
    int k, n = rmtl_model_towers_of(m, task, &k);
    unsigned towers = 0;
    for (int t = k; t < k + n; t++) {
        towers |= 1u << t;
    }
    for (int f = 0; f < m->n_front; f++) {
        m->front[f].lin[0].x = dense;
    }
    if (m->n_bottom_mlp > 0) {
        rmtl_mlps_backward(m, m->bottoms, m->n_bottom_mlp, 1, NULL, NULL, NULL, B);
    }
    if (rmtl_model_has_experts(m)) {
        rmtl_experts_backward(m, 1, towers, B);
    }
    for (int i = 0; i < m->n_first; i++) {
        rmtl_first_backward(m, &m->first[i], B);
    }
    for (int f = 0; f < m->n_front; f++) {
        rmtl_frontend_backward(m, &m->front[f], codes, B);
    }
}

void rmtl_model_backward(rmtl_model *m, const int32_t *codes, const float *dense, int B) {
    rmtl_model_backward_towers(m, B, -1);
    rmtl_model_backward_shared(m, codes, dense, -1, B);
}

void rmtl_model_zero_grad(rmtl_model *m, int B) {
    rmtl_params_zero_grad(&m->params);
    rmtl_arena_zero_grad(&m->arena, B);
}
