/* The parameter table over one flat buffer each for values, gradients, Adam m and v (params.c). */
#ifndef RMTL_PARAMS_H
#define RMTL_PARAMS_H
#include "rmtl.h"

/* the longest tensor name, with its terminating NUL */
#define RMTL_NAME_LEN 64

/* how rmtl_params_alloc initialises a tensor: Xavier-uniform (embedding tables) or PyTorch's
   Linear default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
enum { RMTL_INIT_XAVIER = 0, RMTL_INIT_LINEAR = 1 };

/* One named tensor inside a flat buffer; rows x cols, cols == 0 for a vector. */
typedef struct {
    char name[RMTL_NAME_LEN];
    int rows, cols;
    size_t offset, size;
    int init; /* RMTL_INIT_* */
    int fan_in;
} rmtl_tensor;

/* a net's tensors, in declaration order, and its four buffers of total floats each */
typedef struct {
    rmtl_tensor *tensors;
    int count, capacity;
    size_t total;
    float *param, *grad, *adam_m, *adam_v;
    /* spans [frozen_lo[i], frozen_hi[i]) the optimiser never touches (padding rows) */
    size_t *frozen_lo, *frozen_hi;
    int n_frozen;
    long adam_step;
} rmtl_params;

/* torch.optim.Adam's settings */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} rmtl_adam;

/* declares a (rows, cols) tensor (cols 0: a vector of rows) after the others; *offset
   receives its offset in the buffers */
int rmtl_params_add(rmtl_params *p, size_t *offset, const char *name, int rows, int cols, int init,
                    int fan_in);
/* marks [lo, hi) of the buffers as never updated by the optimiser (spans added in order) */
int rmtl_params_freeze(rmtl_params *p, size_t lo, size_t hi);
/* allocates the four buffers (zeroed) and initialises every tensor from (seed, its index) */
int rmtl_params_alloc(rmtl_params *p, uint64_t seed);
/* frees the table and buffers and zeroes p */
void rmtl_params_free(rmtl_params *p);
/* x[0, n) = 0, split over the pool in blocks of at least 1 MB */
void rmtl_zero(float *x, size_t n);
/* zeroes every gradient */
void rmtl_params_zero_grad(rmtl_params *p);
/* one torch.optim.Adam step (amsgrad off) of every tensor outside the frozen spans */
void rmtl_params_adam_step(rmtl_params *p, const rmtl_adam *opt);
#endif
