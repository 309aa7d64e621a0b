/* The backbones (backbones.c): which front end feeds which bottom, which bottom feeds which
   tower, and the head that turns logits into probabilities. */
#ifndef RMTL_BACKBONES_H
#define RMTL_BACKBONES_H
#include "blocks.h"
#include "experts.h"

/* the sizes and settings of a net */
typedef struct {
    int kind, F, D, T, E;
    const int32_t *field_dims;
    int n_bottom, n_tower;
    const int *bottom, *tower;
    float dropout;
    uint64_t seed;
    int n_experts; /* OMoE, MMoE: >= 1; both PLEs: even >= 2; ignored otherwise */
} rmtl_model_config;

/* a new backbone of kind cfg->kind into *out (NULL on failure), its parameters initialised */
int rmtl_model_create(rmtl_model **out, const rmtl_model_config *cfg);
/* frees m and what it owns; NULL does nothing */
void rmtl_model_free(rmtl_model *m);
/* checks and copies what every net shares (sizes, layer widths, dropout, seed, field offsets)
   into a zeroed m; kind and n_experts are the caller's. The caller builds the layers. */
int rmtl_model_init(rmtl_model *m, const rmtl_model_config *cfg);
/* frees what m owns but not m itself (a net embedded in a larger struct, e.g. a critic) */
void rmtl_model_release(rmtl_model *m);
/* grows the activation and batch buffers to hold `batch` rows (never shrinks) */
int rmtl_model_reserve(rmtl_model *m, int batch);
/* codes (B,F) dense (B,D) -> m->prob (B,T) in the current mode; the caller reserved B rows */
int rmtl_model_forward(rmtl_model *m, const int32_t *codes, const float *dense, int B);
/* after the head's logit gradients are in the arena: everything below them
   (rmtl_model_backward_towers, then rmtl_model_backward_shared) */
void rmtl_model_backward(rmtl_model *m, const int32_t *codes, const float *dense, int B);
/* the towers' backward: from the logit gradients to their parameters and the gradients of
   their inputs (rmtl_model_feature) in the arena; task >= 0: only that task's tower (whose
   logit alone has a gradient; ESMM's both), -1: all */
void rmtl_model_backward_towers(rmtl_model *m, int B, int task);
/* the towers rmtl_model_backward_towers(m, B, task) runs: n of them from *first (task -1:
   all) */
int rmtl_model_towers_of(const rmtl_model *m, int task, int *first);
/* the backward below the towers' inputs, whose gradients are in the arena: every other layer.
   task >= 0: only the towers rmtl_model_backward_towers(m, B, task) ran have input gradients,
   and the layers none of them reaches are skipped; -1: all */
void rmtl_model_backward_shared(rmtl_model *m, const int32_t *codes, const float *dense, int task,
                                int B);
/* where task k's tower input lives in the arena: a (B, width) block at column col, offset off,
   leading dimension ld; the width is the last bottom layer's */
rmtl_loc rmtl_model_feature(const rmtl_model *m, int k);
/* zeroes the parameter gradients and the arena's gradients of B rows */
void rmtl_model_zero_grad(rmtl_model *m, int B);
#endif
