/* Expert and attention backbones (OMoE, MMoE, PLE, AITM; ESMM's bottoms) as a program of fused ops
   over the arena: the builders emit the ops once, forward runs them in order and backward
   in reverse. Linear layers that read the same input form one fanout (one GEMM). */
#ifndef RMTL_EXPERTS_H
#define RMTL_EXPERTS_H
#include "blocks.h"

/* where an activation lives: arena column block `col`, `off` columns into each row of it,
   rows `ld` floats apart; the same place in the arena's gradient holds its gradient */
typedef struct {
    size_t col;
    int off, ld;
} rmtl_loc;

/* Linear layers over one input stored side by side: weights (out, in) and biases (out) are
   each contiguous in the parameter buffer, so one GEMM computes every member. Columns
   [0, n_relu) get ReLU + dropout (hidden layers), the rest are plain (gate logits). */
typedef struct {
    int in, out, n_relu;
    size_t w, b;
    uint32_t salt; /* distinguishes dropout masks */
} rmtl_fanout;

enum { RMTL_OP_DENSE = 0, RMTL_OP_SOFTMAX = 1, RMTL_OP_MIX = 2, RMTL_OP_ATTN = 3 };

/* DENSE: fanout `fan` reads `in`, writes `out`.
   SOFTMAX: in place over `n` columns at `out` (a gate).
   MIX: out (B,W) = sum_e gate[:, e] * x[e] over n experts.
   ATTN: AITM's attention of fanout `fan` = [V|K|Q] over positions x[0], x[1] (B,W) without
   applying the fanout to them (experts.c); x[2] (B,2W) and x[3] (B,W) hold its intermediate
   rows, `gate` the (B,2) attention. */
typedef struct {
    int type, fan, n, W;
    rmtl_loc in, out, gate;
    rmtl_loc x[RMTL_MAX_EXPERTS];
} rmtl_op;

struct rmtl_experts {
    int n_fan, n_op;
    rmtl_fanout *fan;
    rmtl_op *op;
    rmtl_loc feature[RMTL_MAX_TASKS]; /* the (B, bottom[-1]) tower input of each task */
    float *attn; /* AITM's attention: S (D,D), c (D), two (D,D) and a (2D) gradient buffers */
};

/* declares the parameters between the front end and the towers; m->front[0] is built */
int rmtl_experts_build(rmtl_model *m);
void rmtl_experts_free(rmtl_model *m);
/* after the front end: ops [first, n_op) in order, then the features are ready; op 0 is the
   fanout over the front end (every program starts with it), skipped (first = 1) when a lookup
   wrote its output */
void rmtl_experts_forward(rmtl_model *m, int first, int B);
/* after the towers' backward filled the feature gradients: ops (n_op, first] in reverse, down
   to the front end's gradient with first = 0, to op 0's output gradient with first = 1 */
void rmtl_experts_backward(rmtl_model *m, int first, int B);
/* op 0, the fanout over the front end, as a lookup (without its table offset) */
rmtl_lookup rmtl_experts_lookup(const rmtl_model *m);
/* where task k's tower input (B, bottom[-1]) lives */
rmtl_loc rmtl_experts_feature(const rmtl_model *m, int k);
#endif
