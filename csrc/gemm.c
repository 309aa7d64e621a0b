/* Row-major sgemm: C = alpha op(A) op(B) + beta C with op(A) (M,K), op(B) (K,N).
   Goes to the BLAS sgemm handed in by the binding (Fortran, column-major), or to
   the blocked kernel below, which is also the oracle the tests compare BLAS with. */
#include "rmtl.h"

static rmtl_sgemm_fn rmtl_blas_sgemm = NULL;

void rmtl_gemm_set_blas(rmtl_sgemm_fn fn) {
    rmtl_blas_sgemm = fn;
}

int rmtl_gemm_uses_blas(void) {
    return rmtl_blas_sgemm != NULL;
}

/* Tile sizes: a (KC, NC) panel of op(B) packed on the stack stays in L2. */
#define GEMM_MC 64
#define GEMM_KC 256
#define GEMM_NC 256

void rmtl_gemm_builtin(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc) {
    int mt = (M + GEMM_MC - 1) / GEMM_MC, nt = (N + GEMM_NC - 1) / GEMM_NC;
    long tiles = (long)mt * nt;
#pragma omp parallel for num_threads(rmtl_threads()) schedule(static) if ((double)M * N * K > 1e6)
    for (long t = 0; t < tiles; t++) {
        float panel[GEMM_KC * GEMM_NC];
        int i0 = (int)(t / nt) * GEMM_MC, j0 = (int)(t % nt) * GEMM_NC;
        int i1 = i0 + GEMM_MC < M ? i0 + GEMM_MC : M;
        int j1 = j0 + GEMM_NC < N ? j0 + GEMM_NC : N;
        int nc = j1 - j0;
        for (int i = i0; i < i1; i++) {
            float *c = C + (size_t)i * ldc + j0;
            for (int j = 0; j < nc; j++) {
                c[j] = beta == 0.0f ? 0.0f : beta * c[j];
            }
        }
        for (int k0 = 0; k0 < K; k0 += GEMM_KC) {
            int kc = k0 + GEMM_KC < K ? GEMM_KC : K - k0;
            for (int k = 0; k < kc; k++) {
                float *p = panel + (size_t)k * nc;
                for (int j = 0; j < nc; j++) {
                    p[j] = tb ? B[(size_t)(j0 + j) * ldb + k0 + k]
                              : B[(size_t)(k0 + k) * ldb + j0 + j];
                }
            }
            for (int i = i0; i < i1; i++) {
                float *c = C + (size_t)i * ldc + j0;
                for (int k = 0; k < kc; k++) {
                    float a =
                        alpha * (ta ? A[(size_t)(k0 + k) * lda + i] : A[(size_t)i * lda + k0 + k]);
                    const float *p = panel + (size_t)k * nc;
                    for (int j = 0; j < nc; j++) {
                        c[j] += a * p[j];
                    }
                }
            }
        }
    }
}

void rmtl_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) {
        return;
    }
    if (rmtl_blas_sgemm == NULL || K == 0) {
        rmtl_gemm_builtin(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap operands */
    char tra = tb ? 'T' : 'N', trb = ta ? 'T' : 'N';
    rmtl_blas_sgemm(&tra, &trb, &N, &M, &K, &alpha, (float *)B, &ldb, (float *)A, &lda, &beta, C,
                    &ldc);
}
