/* Building blocks with forward and backward: feature front end and MLP stacks. */
#ifndef RMTL_BLOCKS_H
#define RMTL_BLOCKS_H
#include "kernels.h"
#include "params.h"

size_t rmtl_arena_reserve(rmtl_arena *a, size_t width);
int rmtl_arena_resize(rmtl_arena *a, int cap);
void rmtl_arena_free(rmtl_arena *a);
float *rmtl_arena_val(const rmtl_arena *a, size_t col);
float *rmtl_arena_grad(const rmtl_arena *a, size_t col);
void rmtl_arena_zero_grad(rmtl_arena *a);

/* prefix "" gives "embedding.embedding.weight"; "0." gives "embedding.0.embedding.weight";
   extra fields of width E follow the numerical field in the output (a critic's action) */
int rmtl_frontend_build(rmtl_model *m, rmtl_frontend *fe, const char *index, int extra);
/* the front end reads m->uniq (rmtl_unique_build on the same codes must come first): a field
   using its distinct codes gathers and scatters only their rows. The inputs of lin[1..] (and
   the gradients wanted of them) are set before; forward chooses fe->fold for the batch. */
void rmtl_frontend_forward(rmtl_model *m, rmtl_frontend *fe, const int32_t *codes,
                           const float *dense, int B);
void rmtl_frontend_backward(rmtl_model *m, const rmtl_frontend *fe, const int32_t *codes, int B);

/* name e.g. "tower.1.mlp"; output_layer appends Linear(dims[n-1], 1) */
int rmtl_mlp_build(rmtl_model *m, rmtl_mlp *mlp, const char *name, int in, const int *dims, int n,
                   int output_layer);
const float *rmtl_mlp_forward(rmtl_model *m, const rmtl_mlp *mlp, const float *inp, int B);
void rmtl_mlp_backward(rmtl_model *m, const rmtl_mlp *mlp, float *dinp, const float *inp, int B);
/* the gradient of the MLP output must already be in the arena; dinp may be NULL */
const float *rmtl_mlp_forward_ld(rmtl_model *m, const rmtl_mlp *mlp, const float *inp, int ld_in,
                                 int B);
void rmtl_mlp_backward_ld(rmtl_model *m, const rmtl_mlp *mlp, float *dinp, const float *inp,
                          int ld_in, int B);
/* the same for an input (and its gradient dinp) whose rows are ld_in floats apart */
const float *rmtl_mlp_forward_from(rmtl_model *m, const rmtl_mlp *mlp, int first, const float *inp,
                                   int ld_in, int B);
/* layers [first, n) only: with first > 0 the output of layer first - 1 is already in the
   arena (a lookup wrote it) and inp is ignored */
void rmtl_mlp_backward_from(rmtl_model *m, const rmtl_mlp *mlp, int first, float *dinp,
                            const float *inp, int ld_in, int B);
/* layers [first, n) only, down to the gradient of layer first's input (first > 0: in the
   arena, dinp and inp ignored) */
size_t rmtl_mlp_out(const rmtl_mlp *mlp);
#endif
