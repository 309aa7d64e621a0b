/* A dot product in fixed-order lanes, inlined into the callers' target clones. */
#ifndef RMTL_LANES_H
#define RMTL_LANES_H
#include <stdint.h>

/* partial sums rmtl_dot_lanes keeps: element j adds into lane j % RMTL_DOT_LANES, and the lanes
   add in one fixed order at the end (the same bits on every machine and clone; the lanes let
   the sum run as vectors instead of one chain of dependent adds) */
#define RMTL_DOT_LANES 16

/* sum_j x_j y_j over n floats, in double */
#if defined(__GNUC__)
__attribute__((always_inline)) /* into each clone */
#endif
static inline double rmtl_dot_lanes(const float *restrict x, const float *restrict y, int64_t n) {
    double acc[RMTL_DOT_LANES] = {0};
    int64_t j = 0;
    for (; j + RMTL_DOT_LANES <= n; j += RMTL_DOT_LANES) {
        for (int l = 0; l < RMTL_DOT_LANES; l++) {
            acc[l] += (double)x[j + l] * y[j + l];
        }
    }
    for (int l = 0; j + l < n; l++) {
        acc[l] += (double)x[j + l] * y[j + l];
    }
    for (int w = RMTL_DOT_LANES / 2; w > 0; w /= 2) {
        for (int l = 0; l < w; l++) {
            acc[l] += acc[l + w];
        }
    }
    return acc[0];
}
#endif
