/* The first layer over a front end (first.c) as the distinct first layer, computed over the
   distinct codes of each field in the batch: for field f with distinct codes U_f,
   P_f = E_f[U_f] W_f^T and every row sums its fields' rows of P_f; backward aggregates the
   upstream gradient by code into A_f, then dW_f += A_f^T E_f[U_f] and dE_f[U_f] += A_f W_f.
   Fields whose codes are nearly all distinct run as the plain product over the batch's rows, as
   do the dense columns; the front end's Linear blocks may be folded into the layer
   (rmtl_frontend.distinct_fold). */
#ifndef RMTL_FIRST_H
#define RMTL_FIRST_H
#include "blocks.h"

/* sizes m->distinct for cap rows (never shrinks); the first layers must be declared */
int rmtl_distinct_reserve(rmtl_model *m, int cap);
/* frees u's buffers and zeroes it */
void rmtl_distinct_free(rmtl_distinct *u);
/* the distinct codes of each field of codes (B,F) and, per m->first_layer, which fields use them */
void rmtl_distinct_build(rmtl_model *m, const int32_t *codes, int B);
/* after the front end's forward: the layer's (B, l->out) output in the current mode */
void rmtl_first_forward(rmtl_model *m, const rmtl_first *l, int B);
/* after the layers above filled the output's gradient: adds the weight, bias and front-end
   gradients */
void rmtl_first_backward(rmtl_model *m, const rmtl_first *l, int B);
#endif
