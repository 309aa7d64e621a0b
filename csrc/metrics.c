/* Ranking metrics over float64 scores (float32 ones convert exactly; ranking float64 scores as
   float32 would merge near ties) and likelihood metrics over float32 predictions, accumulated
   in double. */
#include <math.h>
#include <string.h>

#include "metrics.h"

/* a double's bits as an unsigned key in the order of the values: the sign bit set, or all bits
   flipped when negative (-0.0 and +0.0 become neighbouring keys, so their rows stay together) */
static uint64_t rmtl_score_key(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u >> 63 ? ~u : u | (UINT64_C(1) << 63);
}

/* (key, idx) pairs (n each) sorted by key, stably: least significant byte first, a byte that
   every key shares skipped; key2 and idx2 (n each) are scratch */
static void rmtl_radix_sort(uint64_t *key, int64_t *idx, uint64_t *key2, int64_t *idx2, int64_t n) {
    int64_t count[8][256] = {{0}};
    for (int64_t i = 0; i < n; i++) {
        for (int d = 0; d < 8; d++) {
            count[d][(key[i] >> (8 * d)) & 255]++;
        }
    }
    uint64_t *ks = key, *kd = key2;
    int64_t *is = idx, *id = idx2;
    for (int d = 0; d < 8 && n > 0; d++) {
        int64_t *c = count[d], sum = 0;
        if (c[(ks[0] >> (8 * d)) & 255] == n) {
            continue;
        }
        for (int b = 0; b < 256; b++) {
            int64_t t = c[b];
            c[b] = sum;
            sum += t;
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t o = c[(ks[i] >> (8 * d)) & 255]++;
            kd[o] = ks[i];
            id[o] = is[i];
        }
        uint64_t *kt = ks;
        int64_t *it = is;
        ks = kd;
        kd = kt;
        is = id;
        id = it;
    }
    if (ks != key) {
        memcpy(key, ks, (size_t)n * sizeof(*key));
        memcpy(idx, is, (size_t)n * sizeof(*idx));
    }
}

/* idx (scratch's first n) ascending by score, each group's rows together when group is given
   (by score, then stably by the group's bits). scratch: RMTL_METRICS_SCRATCH n int64 */
static void rmtl_sort_rows(int64_t *scratch, const double *score, const int64_t *group, int64_t n) {
    int64_t *idx = scratch, *idx2 = scratch + n;
    uint64_t *key = (uint64_t *)(scratch + 2 * n), *key2 = key + n;
    for (int64_t i = 0; i < n; i++) {
        idx[i] = i;
        key[i] = rmtl_score_key(score[i]);
    }
    rmtl_radix_sort(key, idx, key2, idx2, n);
    if (group != NULL) {
        for (int64_t i = 0; i < n; i++) {
            key[i] = (uint64_t)group[idx[i]];
        }
        rmtl_radix_sort(key, idx, key2, idx2, n);
    }
}

/* AUC of rows idx[0..n) already sorted by score; ties count one half. -1 if one class. */
static double rmtl_auc_sorted(const int64_t *idx, int64_t n, const double *score,
                              const float *label) {
    double pairs = 0.0, neg_below = 0.0, pos = 0.0, neg = 0.0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        double gp = 0.0, gn = 0.0;
        while (j < n && score[idx[j]] == score[idx[i]]) {
            if (label[idx[j]] > 0.5f) {
                gp += 1.0;
            } else {
                gn += 1.0;
            }
            j++;
        }
        pairs += gp * neg_below + 0.5 * gp * gn;
        neg_below += gn;
        pos += gp;
        neg += gn;
        i = j;
    }
    return (pos > 0.0 && neg > 0.0) ? pairs / (pos * neg) : -1.0;
}

int rmtl_auc(double *out, const double *score, const float *label, int64_t n, int64_t *scratch) {
    rmtl_sort_rows(scratch, score, NULL, n);
    *out = rmtl_auc_sorted(scratch, n, score, label);
    return *out < 0.0 ? RMTL_ERR_ARG : RMTL_OK;
}

static double rmtl_bce(float p, float y) {
    double lp = log((double)p), l1p = log1p(-(double)p);
    lp = lp < -100.0 ? -100.0 : lp;
    l1p = l1p < -100.0 ? -100.0 : l1p;
    return -((double)y * lp + (1.0 - (double)y) * l1p);
}

int rmtl_logloss(double *out, const float *prob, const float *label, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        s += rmtl_bce(prob[i], label[i]);
    }
    *out = n > 0 ? s / (double)n : 0.0;
    return n > 0 ? RMTL_OK : RMTL_ERR_ARG;
}

/* mean over sessions of each session's mean BCE; offsets (n_sessions + 1) */
int rmtl_session_logloss(double *out, const float *prob, const float *label, const int64_t *offsets,
                         int64_t n_sessions) {
    double s = 0.0;
    int64_t counted = 0;
    for (int64_t k = 0; k < n_sessions; k++) {
        int64_t lo = offsets[k], hi = offsets[k + 1];
        if (hi <= lo) {
            continue;
        }
        double t = 0.0;
        for (int64_t i = lo; i < hi; i++) {
            t += rmtl_bce(prob[i], label[i]);
        }
        s += t / (double)(hi - lo);
        counted++;
    }
    *out = counted > 0 ? s / (double)counted : 0.0;
    return counted > 0 ? RMTL_OK : RMTL_ERR_ARG;
}

/* impression-weighted mean of per-group AUC over groups holding both classes */
int rmtl_gauc(double *out, const double *score, const float *label, const int64_t *group, int64_t n,
              int64_t *scratch) {
    int64_t *idx = scratch;
    rmtl_sort_rows(scratch, score, group, n);
    double s = 0.0, w = 0.0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && group[idx[j]] == group[idx[i]]) {
            j++;
        }
        double a = rmtl_auc_sorted(idx + i, j - i, score, label);
        if (a >= 0.0) {
            s += a * (double)(j - i);
            w += (double)(j - i);
        }
        i = j;
    }
    *out = w > 0.0 ? s / w : 0.0;
    return w > 0.0 ? RMTL_OK : RMTL_ERR_ARG;
}

/* Expected AUC of the scorer that ranks by the true probabilities prob (n) when every label
   is an independent Bernoulli(prob_i): E[correctly ordered positive-negative pairs] divided by
   E[positive-negative pairs] (the ratio of expectations; it differs from E[AUC] by O(1/n)).
   Pairs are ordered (i, j), i != j, weighted p_i (1 - p_j); ties in prob count one half.
   After sorting by prob, each row adds p_i * (sum of 1 - p_j below it), and a tie group of
   size g at probability p adds p (1 - p) g (g - 1) / 2. */
int rmtl_oracle_auc(double *out, const double *prob, int64_t n, int64_t *scratch) {
    rmtl_sort_rows(scratch, prob, NULL, n);
    double good = 0.0, neg_below = 0.0, pos = 0.0, neg = 0.0, self = 0.0;
    for (int64_t i = 0; i < n;) {
        double p = prob[scratch[i]];
        int64_t j = i;
        while (j < n && prob[scratch[j]] == prob[scratch[i]]) {
            j++;
        }
        double g = (double)(j - i);
        good += g * p * neg_below + 0.5 * p * (1.0 - p) * g * (g - 1.0);
        neg_below += g * (1.0 - p);
        pos += g * p;
        neg += g * (1.0 - p);
        self += g * p * (1.0 - p);
        i = j;
    }
    double pairs = pos * neg - self;
    *out = pairs > 0.0 ? good / pairs : 0.0;
    return pairs > 0.0 ? RMTL_OK : RMTL_ERR_ARG;
}

/* Expected mean BCE of predicting prob when labels are Bernoulli(prob): the mean entropy,
   with the same clamping of each log at -100 as rmtl_logloss. */
int rmtl_oracle_logloss(double *out, const float *prob, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double p = (double)prob[i];
        s += p * rmtl_bce(prob[i], 1.0f) + (1.0 - p) * rmtl_bce(prob[i], 0.0f);
    }
    *out = n > 0 ? s / (double)n : 0.0;
    return n > 0 ? RMTL_OK : RMTL_ERR_ARG;
}
