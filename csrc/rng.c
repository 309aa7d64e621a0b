/* Counter-based random numbers: every draw is a pure function of
   (seed, stream, index), so results never depend on thread count or order. */
#include <math.h>

#include "rng.h"

uint64_t rmtl_rng_u64(uint64_t seed, uint64_t stream, uint64_t index) {
    return rmtl_rng_at(rmtl_rng_key(seed, stream), index);
}

/* uniform in [0, 1) with 24 random bits, exact in float32 */
float rmtl_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    return (float)(rmtl_rng_u64(seed, stream, index) >> 40) * (1.0f / 16777216.0f);
}

/* a standard normal draw (Box-Muller on two counter-based uniforms) */
float rmtl_rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    /* 1 - u lies in (0, 1], so the log is finite; |z| <= sqrt(2 * 24 ln 2) ~ 5.8 */
    double u1 = 1.0 - (double)rmtl_rng_uniform(seed, stream, 2 * index);
    double u2 = (double)rmtl_rng_uniform(seed, stream, 2 * index + 1);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* out holds a permutation of 0..n-1 (Fisher-Yates from the counter stream) */
void rmtl_shuffle(int64_t *out, int64_t n, uint64_t seed, uint64_t stream) {
    for (int64_t i = 0; i < n; i++) {
        out[i] = i;
    }
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rmtl_rng_u64(seed, stream, (uint64_t)i) % (uint64_t)(i + 1));
        int64_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

/* the stream of the batch permutations (ASCII "PERM") */
#define RMTL_STREAM_PERMUTE 0x5045524dULL

/* a new permutation per (seed, step): the shuffle's seed is one draw of the step's index */
void rmtl_step_permutation(int64_t *out, int64_t n, uint64_t seed, uint64_t step) {
    rmtl_shuffle(out, n, rmtl_rng_u64(seed, RMTL_STREAM_PERMUTE, step), RMTL_STREAM_PERMUTE);
}
