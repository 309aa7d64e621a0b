/* Counter-based random numbers (rng.c): every draw is a pure function of (seed, stream, index),
   so results never depend on thread count or order. */
#ifndef RMTL_RNG_H
#define RMTL_RNG_H
#include "rmtl.h"

/* the SplitMix64 finaliser: a bijection of 64-bit words that mixes every bit */
static inline uint64_t rmtl_rng_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* the key of stream `stream` of seed: draw index of (seed, stream) is
   rmtl_rng_at(rmtl_rng_key(seed, stream), index), inline for loops that take many draws of one
   stream */
static inline uint64_t rmtl_rng_key(uint64_t seed, uint64_t stream) {
    return rmtl_rng_mix(seed ^ rmtl_rng_mix(stream * 0xD1B54A32D192ED03ULL + 1));
}

/* draw index of the stream with this key */
static inline uint64_t rmtl_rng_at(uint64_t key, uint64_t index) {
    return rmtl_rng_mix(key ^ rmtl_rng_mix(index + 0xA0761D6478BD642FULL));
}

/* draw index of (seed, stream): 64 random bits */
uint64_t rmtl_rng_u64(uint64_t seed, uint64_t stream, uint64_t index);
/* uniform in [0, 1) with 24 random bits, exact in float32 */
float rmtl_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);
/* a standard normal draw (Box-Muller on draws 2 index and 2 index + 1) */
float rmtl_rng_normal(uint64_t seed, uint64_t stream, uint64_t index);
/* out (n) holds a permutation of 0..n-1 (Fisher-Yates from the counter stream) */
void rmtl_shuffle(int64_t *out, int64_t n, uint64_t seed, uint64_t stream);
/* the permutation of n batch rows at optimiser step `step` (the steps taken before it):
   rmtl_shuffle(out, n, rmtl_rng_u64(seed, PERM, step), PERM) with PERM the stream "PERM" */
void rmtl_step_permutation(int64_t *out, int64_t n, uint64_t seed, uint64_t step);
#endif
