#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "rng.h"

int rmtl_params_add(rmtl_params *p, size_t *offset, const char *name, int rows, int cols, int init,
                    int fan_in) {
    if (p->count == p->capacity) {
        int cap = p->capacity ? 2 * p->capacity : 32;
        rmtl_tensor *t = realloc(p->tensors, (size_t)cap * sizeof(rmtl_tensor));
        if (t == NULL) {
            return RMTL_ERR_NOMEM;
        }
        p->tensors = t;
        p->capacity = cap;
    }
    rmtl_tensor *t = &p->tensors[p->count++];
    snprintf(t->name, RMTL_NAME_LEN, "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->size = (size_t)rows * (size_t)(cols ? cols : 1);
    t->offset = p->total;
    t->init = init;
    t->fan_in = fan_in;
    p->total += t->size;
    *offset = t->offset;
    return RMTL_OK;
}

int rmtl_params_freeze(rmtl_params *p, size_t lo, size_t hi) {
    size_t *l = realloc(p->frozen_lo, (size_t)(p->n_frozen + 1) * sizeof(size_t));
    if (l == NULL) {
        return RMTL_ERR_NOMEM;
    }
    p->frozen_lo = l;
    size_t *h = realloc(p->frozen_hi, (size_t)(p->n_frozen + 1) * sizeof(size_t));
    if (h == NULL) {
        return RMTL_ERR_NOMEM;
    }
    p->frozen_hi = h;
    p->frozen_lo[p->n_frozen] = lo;
    p->frozen_hi[p->n_frozen] = hi;
    p->n_frozen++;
    return RMTL_OK;
}

/* Allocates the four buffers and initialises every tensor from (seed, tensor index):
   Xavier-uniform for embedding tables (fan_in = cols, fan_out = rows, as torch),
   PyTorch's Linear default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases. */
int rmtl_params_alloc(rmtl_params *p, uint64_t seed) {
    size_t n = p->total ? p->total : 1;
    p->param = calloc(n, sizeof(float));
    p->grad = calloc(n, sizeof(float));
    p->adam_m = calloc(n, sizeof(float));
    p->adam_v = calloc(n, sizeof(float));
    if (!p->param || !p->grad || !p->adam_m || !p->adam_v) {
        return RMTL_ERR_NOMEM;
    }
    for (int i = 0; i < p->count; i++) {
        const rmtl_tensor *t = &p->tensors[i];
        double bound;
        if (t->init == RMTL_INIT_XAVIER) {
            bound = sqrt(6.0 / (double)(t->rows + t->cols));
        } else {
            bound = t->fan_in > 0 ? 1.0 / sqrt((double)t->fan_in) : 0.0;
        }
        float *w = p->param + t->offset;
        for (size_t j = 0; j < t->size; j++) {
            w[j] = (float)(bound * (2.0 * rmtl_rng_uniform(seed, (uint64_t)i + 1, j) - 1.0));
        }
    }
    return RMTL_OK;
}

void rmtl_params_free(rmtl_params *p) {
    free(p->tensors);
    free(p->param);
    free(p->grad);
    free(p->adam_m);
    free(p->adam_v);
    free(p->frozen_lo);
    free(p->frozen_hi);
    memset(p, 0, sizeof(*p));
}

/* zeroes blocks [lo, hi) of 16384 floats of the (n) buffer ctx points to */
typedef struct {
    float *x;
    size_t n;
} rmtl_zero_args;
#define RMTL_ZERO_BLOCK 16384

static void rmtl_zero_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_zero_args *a = ctx;
    size_t i0 = (size_t)lo * RMTL_ZERO_BLOCK, i1 = (size_t)hi * RMTL_ZERO_BLOCK;
    memset(a->x + i0, 0, ((i1 < a->n ? i1 : a->n) - i0) * sizeof(float));
}

void rmtl_zero(float *x, size_t n) {
    rmtl_zero_args a = {x, n};
    rmtl_parallel_for((int64_t)((n + RMTL_ZERO_BLOCK - 1) / RMTL_ZERO_BLOCK), 16, rmtl_zero_range,
                      &a);
}

void rmtl_params_zero_grad(rmtl_params *p) {
    rmtl_zero(p->grad, p->total);
}

/* one span of rmtl_params_adam_step: values, gradients, m and v from its first parameter on */
typedef struct {
    float *w, *g, *m, *v;
    float b1, b2, eps, wd, step_size, bc2_sqrt;
} rmtl_adam_args;

/* parameters [lo, hi) of a span */
RMTL_CLONES static void rmtl_adam_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_adam_args *a = ctx;
    /* locals: the loop reads them all per parameter; restrict: four distinct flat buffers, so
       the loop vectorizes */
    float *restrict w = a->w, *restrict m = a->m, *restrict v = a->v;
    const float *restrict g = a->g;
    float b1 = a->b1, b2 = a->b2, eps = a->eps, wd = a->wd, step_size = a->step_size;
    float bc2_sqrt = a->bc2_sqrt;
    for (int64_t i = lo; i < hi; i++) {
        float gi = g[i] + wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}

/* torch.optim.Adam (amsgrad off): weight decay added to the gradient, bias-corrected
   step lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps). Frozen spans (sorted) are skipped. */
void rmtl_params_adam_step(rmtl_params *p, const rmtl_adam *opt) {
    p->adam_step++;
    float b1 = opt->beta1, b2 = opt->beta2, eps = opt->eps, wd = opt->weight_decay;
    float step_size = (float)(opt->lr / (1.0 - pow(opt->beta1, (double)p->adam_step)));
    float bc2_sqrt = (float)sqrt(1.0 - pow(opt->beta2, (double)p->adam_step));
    float *w = p->param, *g = p->grad, *m = p->adam_m, *v = p->adam_v;
    size_t lo = 0;
    for (int s = 0; s <= p->n_frozen; s++) {
        size_t hi = s < p->n_frozen ? p->frozen_lo[s] : p->total;
        rmtl_adam_args adam_args = {w + lo, g + lo, m + lo, v + lo,    b1,
                                    b2,     eps,    wd,     step_size, bc2_sqrt};
        rmtl_parallel_for(hi - lo, rmtl_grain(1, RMTL_GRAIN_STREAM), rmtl_adam_range, &adam_args);
        lo = s < p->n_frozen ? p->frozen_hi[s] : p->total;
    }
}
