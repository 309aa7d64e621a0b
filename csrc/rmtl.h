/* What every core file shares: status codes, RMTL_TRY, the limits of a net and the clone
   attribute of hot loops. Each core file X.c declares what other files use of it in X.h. */
#ifndef RMTL_H
#define RMTL_H

#include <stddef.h>
#include <stdint.h>

/* the status of every core call that can fail */
enum {
    RMTL_OK = 0,
    RMTL_ERR_NOMEM = 1,
    RMTL_ERR_ARG = 2,      /* an argument is out of its documented range */
    RMTL_ERR_INDEX = 3,    /* a categorical code is outside [0, field_dims) */
    RMTL_ERR_NONFINITE = 4 /* a NaN or infinity reached a place that forbids it */
};

/* evaluates expr, an RMTL_* status, once and returns it from the calling function unless it
   is RMTL_OK; only where nothing needs freeing on the way out */
#define RMTL_TRY(expr)                                                                             \
    do {                                                                                           \
        int rmtl_try_st_ = (expr);                                                                 \
        if (rmtl_try_st_ != RMTL_OK) {                                                             \
            return rmtl_try_st_;                                                                   \
        }                                                                                          \
    } while (0)

/* hidden layers of an MLP (bottom or tower) */
#define RMTL_MAX_LAYERS 8
/* tasks of a net */
#define RMTL_MAX_TASKS 8
/* experts one gate mixes */
#define RMTL_MAX_EXPERTS 64
/* Linear blocks after a front end's fields: the numerical layer and a critic's action layer */
#define RMTL_MAX_FRONT_LIN 2

/* The hot loop bodies also get AVX2 and AVX-512 (x86-64-v4) clones, one chosen when the module
   loads (GCC on x86-64 Linux: target_clones, an ifunc). Every clone gives the same bits: the core
   is built as ISO C (-std=c99, so no FMA contraction) and vectorizing these loops keeps each
   element's order of operations. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define RMTL_CLONES __attribute__((target_clones("default", "avx2", "arch=x86-64-v4")))
#else
#define RMTL_CLONES
#endif

#endif
