/* Expert and attention backbones (OMoE, MMoE, PLE, AITM; ESMM's bottoms) as a program of fused ops
   over the arena (experts.c): the builders emit the ops once, forward runs them in order and
   backward in reverse. Linear layers that read the same input form one fanout (one GEMM). */
#ifndef RMTL_EXPERTS_H
#define RMTL_EXPERTS_H
#include "blocks.h"

/* where an activation lives: arena column block `col`, `off` columns into each row of it,
   rows `ld` floats apart; the same place in the arena's gradient holds its gradient */
typedef struct {
    size_t col;
    int off, ld;
} rmtl_loc;

/* declares the parameters between the front end and the towers; m->front[0] is built */
int rmtl_experts_build(rmtl_model *m);
/* frees m->experts */
void rmtl_experts_free(rmtl_model *m);
/* after the front end: ops [first, n_op) in order, then the features are ready; op 0 is the
   fanout over the front end (every program starts with it), skipped (first = 1) when a first
   layer (rmtl_first) wrote its output */
void rmtl_experts_forward(rmtl_model *m, int first, int B);
/* after the towers' backward filled the feature gradients: ops (n_op, first] in reverse, down
   to the front end's gradient with first = 0, to op 0's output gradient with first = 1.
   towers: bit k set where tower k's input has a gradient; the ops no such input reaches are
   skipped (their outputs' gradients are zero) */
void rmtl_experts_backward(rmtl_model *m, int first, unsigned towers, int B);
/* op 0, the fanout over the front end, as a first layer (without its tables' offset) */
rmtl_first rmtl_experts_first(const rmtl_model *m);
/* where task k's tower input (B, bottom[-1]) lives */
rmtl_loc rmtl_experts_feature(const rmtl_model *m, int k);
#endif
