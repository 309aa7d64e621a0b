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
/* lays the arena out for a pass over `rows` rows (RMTL_ERR_ARG beyond its capacity) */
int rmtl_arena_layout(rmtl_arena *a, int rows);
/* lays the arena out for a pass over `rows` rows (reserved) and zeroes those rows' gradients */
void rmtl_arena_zero_grad(rmtl_arena *a, int rows);

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
/* layers [first, n) of `count` MLPs of the same depth (count <= RMTL_MAX_TASKS), layer j of
   all of them one group of products. With first == 0 MLP k reads inp[k], whose rows are
   ld_in[k] floats apart; with first > 0 it reads its own layer first - 1 in the arena (a
   lookup wrote it) and inp, ld_in may be NULL. out[k] (unless out is NULL) receives MLP k's
   output. */
void rmtl_mlps_forward(rmtl_model *m, const rmtl_mlp *mlp, int count, int first,
                       const float *const *inp, const int *ld_in, int B, const float **out);
/* the same layers backward, the gradients of the outputs already in the arena; with first == 0
   MLP k adds its input's gradient into dinp[k] (NULL: not wanted; MLPs reading one input pass
   the same pointer) */
void rmtl_mlps_backward(rmtl_model *m, const rmtl_mlp *mlp, int count, int first,
                        float *const *dinp, const float *const *inp, const int *ld_in, int B);
size_t rmtl_mlp_out(const rmtl_mlp *mlp);
#endif
