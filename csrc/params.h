/* The parameter table over one flat buffer each for values, gradients, Adam m and v. */
#ifndef RMTL_PARAMS_H
#define RMTL_PARAMS_H
#include "rmtl.h"

enum { RMTL_INIT_XAVIER = 0, RMTL_INIT_LINEAR = 1 };

int rmtl_params_add(rmtl_params *p, size_t *offset, const char *name, int rows, int cols, int init,
                    int fan_in);
int rmtl_params_freeze(rmtl_params *p, size_t lo, size_t hi);
int rmtl_params_alloc(rmtl_params *p, uint64_t seed);
void rmtl_params_free(rmtl_params *p);
/* x[0, n) = 0, split over the pool in blocks of at least 1 MB */
void rmtl_zero(float *x, size_t n);
void rmtl_params_zero_grad(rmtl_params *p);
#endif
