/* Small fused kernels with their backward. Kernels never allocate; backward adds (+=)
   into parameter gradients and input gradients. */
#ifndef RMTL_KERNELS_H
#define RMTL_KERNELS_H
#include "rmtl.h"

/* dropout of one layer: p == 0 means identity; masks are keyed by (seed, stream, element) */
typedef struct {
    float p;
    uint64_t seed, stream;
} rmtl_dropout;

void rmtl_linear_forward(float *out, const float *inp, const float *w, const float *b, int relu,
                         rmtl_dropout drop, int B, int C, int OC, int ld_out);
/* inp (B,C) w (OC,C) b (OC) out (B,OC) with row stride ld_out; relu applies ReLU then dropout */
void rmtl_linear_backward(float *dinp, float *dw, float *db, float *dout, const float *out,
                          const float *inp, const float *w, int relu, float drop_p, int B, int C,
                          int OC, int ld_out);
/* dout (B,OC) is turned in place into the pre-activation gradient; dinp may be NULL */

void rmtl_embedding_forward(float *out, const int32_t *codes, const float *table,
                            const int64_t *field_offset, int B, int F, int E, int ld_out);
/* codes (B,F) table (rows,E) out (B,ld_out), field f at columns f*E */
void rmtl_embedding_backward(float *dtable, const float *dout, const int32_t *codes,
                             const int64_t *field_offset, int B, int F, int E, int ld_out);

void rmtl_head_forward(float *prob, float *sig, const float *const *logit, int esmm, int B, int T);
/* logit: T pointers to (B) values; sig, prob (B,T); esmm: prob[:,1] = sig[:,1] * sig[:,0] */
double rmtl_head_backward(float *const *dlogit, const float *prob, const float *sig,
                          const float *label, const float *weight, int esmm, int B, int T);
/* returns (1/T) sum_k mean_i w_ik BCE(y_ik, p_ik) and writes its logit gradients;
   weight (B,T) or NULL for all ones */
#endif
