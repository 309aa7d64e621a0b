/* The first layer over a front end (first.c), computed over the distinct codes of each field in
   the batch: for field f with distinct codes U_f, P_f = E_f[U_f] W_f^T and every row sums its
   fields' rows of P_f; backward aggregates the upstream gradient by code into A_f, then
   dW_f += A_f^T E_f[U_f] and dE_f[U_f] += A_f W_f. Fields whose codes are nearly all distinct
   run as the plain product over the batch's rows, as do the dense columns. */
#ifndef RMTL_FIRST_H
#define RMTL_FIRST_H
#include "blocks.h"

/* sizes m->uniq for cap rows (never shrinks); the first layers must be declared */
int rmtl_unique_reserve(rmtl_model *m, int cap);
/* frees u's buffers and zeroes it */
void rmtl_unique_free(rmtl_unique *u);
/* the distinct codes of each field of codes (B,F) and, per m->unique, which fields use them */
void rmtl_unique_build(rmtl_model *m, const int32_t *codes, int B);
/* after the front end's forward: the layer's (B, l->out) output in the current mode */
void rmtl_first_forward(rmtl_model *m, const rmtl_lookup *l, int B);
/* after the layers above filled the output's gradient: adds the weight, bias and front-end
   gradients */
void rmtl_first_backward(rmtl_model *m, const rmtl_lookup *l, int B);
#endif
