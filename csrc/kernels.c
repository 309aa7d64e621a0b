#include "kernels.h"

#include <math.h>
#include <string.h>

void rmtl_linear_forward(float *out, const float *inp, const float *w, const float *b, int relu,
                         rmtl_dropout drop, int B, int C, int OC, int ld_out) {
    rmtl_gemm(0, 1, B, OC, C, 1.0f, inp, C, w, C, 0.0f, out, ld_out);
    float scale = drop.p > 0.0f ? 1.0f / (1.0f - drop.p) : 1.0f;
#pragma omp parallel for schedule(static) if ((long)B * OC > 32768)
    for (int i = 0; i < B; i++) {
        float *o = out + (size_t)i * ld_out;
        for (int j = 0; j < OC; j++) {
            o[j] += b[j];
        }
        if (!relu) {
            continue;
        }
        if (drop.p > 0.0f) {
            for (int j = 0; j < OC; j++) {
                float u = rmtl_rng_uniform(drop.seed, drop.stream, (uint64_t)i * OC + j);
                o[j] = (o[j] > 0.0f && u >= drop.p) ? o[j] * scale : 0.0f;
            }
        } else {
            for (int j = 0; j < OC; j++) {
                o[j] = o[j] > 0.0f ? o[j] : 0.0f;
            }
        }
    }
}

void rmtl_linear_backward(float *dinp, float *dw, float *db, float *dout, const float *out,
                          const float *inp, const float *w, int relu, float drop_p, int B, int C,
                          int OC, int ld_out) {
    if (relu) {
        /* out > 0 exactly where ReLU passed and dropout kept, so no mask is stored */
        float scale = drop_p > 0.0f ? 1.0f / (1.0f - drop_p) : 1.0f;
#pragma omp parallel for schedule(static) if ((long)B * OC > 32768)
        for (int i = 0; i < B; i++) {
            float *d = dout + (size_t)i * ld_out;
            const float *o = out + (size_t)i * ld_out;
            for (int j = 0; j < OC; j++) {
                d[j] = o[j] > 0.0f ? d[j] * scale : 0.0f;
            }
        }
    }
    /* column sums in row order per column block: the same bits for any thread count */
    int nblk = (OC + 63) / 64;
#pragma omp parallel for schedule(static) if ((long)B * OC > 32768)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * 64, j1 = j0 + 64 < OC ? j0 + 64 : OC;
        float acc[64] = {0};
        for (int i = 0; i < B; i++) {
            const float *d = dout + (size_t)i * ld_out;
            for (int j = j0; j < j1; j++) {
                acc[j - j0] += d[j];
            }
        }
        for (int j = j0; j < j1; j++) {
            db[j] += acc[j - j0];
        }
    }
    rmtl_gemm(1, 0, OC, C, B, 1.0f, dout, ld_out, inp, C, 1.0f, dw, C);
    if (dinp != NULL) {
        rmtl_gemm(0, 0, B, C, OC, 1.0f, dout, ld_out, w, C, 1.0f, dinp, C);
    }
}

void rmtl_embedding_forward(float *out, const int32_t *codes, const float *table,
                            const int64_t *field_offset, int B, int F, int E, int ld_out) {
#pragma omp parallel for schedule(static) if ((long)B * F * E > 65536)
    for (int i = 0; i < B; i++) {
        for (int f = 0; f < F; f++) {
            const float *row = table + (size_t)(field_offset[f] + codes[(size_t)i * F + f]) * E;
            memcpy(out + (size_t)i * ld_out + (size_t)f * E, row, (size_t)E * sizeof(float));
        }
    }
}

void rmtl_embedding_backward(float *dtable, const float *dout, const int32_t *codes,
                             const int64_t *field_offset, int B, int F, int E, int ld_out) {
    /* fields own disjoint row ranges, so threads split by field never collide;
       row 0 is the padding row (padding_idx=0) and never receives a gradient */
#pragma omp parallel for schedule(static) if ((long)B * F * E > 65536)
    for (int f = 0; f < F; f++) {
        for (int i = 0; i < B; i++) {
            int64_t r = field_offset[f] + codes[(size_t)i * F + f];
            if (r == 0) {
                continue;
            }
            float *g = dtable + (size_t)r * E;
            const float *d = dout + (size_t)i * ld_out + (size_t)f * E;
            for (int e = 0; e < E; e++) {
                g[e] += d[e];
            }
        }
    }
}

void rmtl_head_forward(float *prob, float *sig, const float *const *logit, int esmm, int B, int T) {
    for (int i = 0; i < B; i++) {
        for (int k = 0; k < T; k++) {
            float s = 1.0f / (1.0f + expf(-logit[k][i]));
            sig[(size_t)i * T + k] = s;
            prob[(size_t)i * T + k] = (esmm && k == 1) ? s * sig[(size_t)i * T] : s;
        }
    }
}

/* BCE as torch.nn.functional.binary_cross_entropy: logs clamped at -100,
   d/dp = (p - y) / max(p (1 - p), 1e-12) */
double rmtl_head_backward(float *const *dlogit, const float *prob, const float *sig,
                          const float *label, const float *weight, int esmm, int B, int T) {
    double loss = 0.0;
    float norm = 1.0f / ((float)B * (float)T);
    for (int i = 0; i < B; i++) {
        float dp[2] = {0.0f, 0.0f};
        for (int k = 0; k < T; k++) {
            size_t ik = (size_t)i * T + k;
            float p = prob[ik], y = label[ik], w = weight ? weight[ik] : 1.0f;
            double lp = log((double)p), l1p = log1p(-(double)p);
            lp = lp < -100.0 ? -100.0 : lp;
            l1p = l1p < -100.0 ? -100.0 : l1p;
            loss -= (double)w * ((double)y * lp + (1.0 - (double)y) * l1p);
            float den = p * (1.0f - p);
            float g = w * norm * (p - y) / (den > 1e-12f ? den : 1e-12f);
            if (esmm && k < 2) {
                dp[k] = g;
                continue;
            }
            float s = sig[ik];
            dlogit[k][i] = g * s * (1.0f - s);
        }
        if (esmm) {
            float s0 = sig[(size_t)i * T], s1 = sig[(size_t)i * T + 1];
            float ds0 = dp[0] + dp[1] * s1, ds1 = dp[1] * s0;
            dlogit[0][i] = ds0 * s0 * (1.0f - s0);
            dlogit[1][i] = ds1 * s1 * (1.0f - s1);
        }
    }
    return loss / ((double)B * (double)T);
}
