/* Row-major matrix products (gemm.c): a BLAS sgemm handed in by the binding, else the core's own
   blocked kernel. */
#ifndef RMTL_GEMM_H
#define RMTL_GEMM_H
#include "rmtl.h"

/* one product C = alpha op(A) op(B) + beta C, row-major, with op(A) (M, K) and op(B) (K, N) */
typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
} rmtl_gemm_op;

/* a Fortran BLAS sgemm (column-major, arguments by reference) */
typedef void (*rmtl_sgemm_fn)(char *ta, char *tb, int *m, int *n, int *k, float *alpha, float *a,
                              int *lda, float *b, int *ldb, float *beta, float *c, int *ldc);
/* OpenBLAS's openblas_set_num_threads_local: sets this thread's count, returns the previous */
typedef int (*rmtl_blas_threads_fn)(int n);
/* products go to fn (NULL: the built-in kernel); with set_local (or NULL), large products are
   split over the pool, each part on one thread */
void rmtl_gemm_set_blas(rmtl_sgemm_fn fn, rmtl_blas_threads_fn set_local);
/* 1 if products go to a BLAS */
int rmtl_gemm_uses_blas(void);
/* C (M, N) row stride ldc = alpha op(A) op(B) + beta C; ta, tb: A, B transposed */
void rmtl_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);
/* independent products (no op reads another's C) in one parallel region; reorders ops */
void rmtl_gemm_many(rmtl_gemm_op *ops, int n);
#endif
