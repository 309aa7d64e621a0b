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
/* OpenBLAS's process-wide thread count: get, and set (returns nothing useful) */
typedef int (*rmtl_blas_threads_fn)(void);
typedef void (*rmtl_blas_set_threads_fn)(int n);
/* a BLAS: its sgemm, and OpenBLAS's process-wide thread count when its threads are pthreads
   (get_threads and set_threads both set; then large products are split over the pool, each
   part one single-threaded sgemm call), else NULL (another BLAS, whose own threads split each
   product called whole from the calling thread) */
typedef struct {
    rmtl_sgemm_fn sgemm;
    rmtl_blas_threads_fn get_threads;
    rmtl_blas_set_threads_fn set_threads;
} rmtl_blas;
/* the BLAS rmtl_gemm_use(1) selects (NULL or no sgemm: none); once, before any product */
void rmtl_gemm_init(const rmtl_blas *blas);
/* products go to the BLAS (blas 1; RMTL_ERR_ARG if rmtl_gemm_init gave none) or to the
   built-in kernel (0). Safe while products run on other threads: each rmtl_gemm_many reads
   the choice once and uses it for all its parts. */
int rmtl_gemm_use(int blas);
/* 1 if products go to a BLAS */
int rmtl_gemm_uses_blas(void);
/* C (M, N) row stride ldc = alpha op(A) op(B) + beta C; ta, tb: A, B transposed */
void rmtl_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);
/* independent products (no op reads another's C) in one parallel region; reorders ops */
void rmtl_gemm_many(rmtl_gemm_op *ops, int n);
#endif
