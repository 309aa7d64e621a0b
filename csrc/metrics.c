/* Ranking metrics over float64 scores (float32 ones convert exactly; ranking float64 scores as
   float32 would merge near ties) and likelihood metrics over float32 predictions, accumulated
   in double. */
#include <math.h>

#include "rmtl.h"

/* ascending by (group, score); stable bottom-up merge sort of idx using tmp (both n) */
static void rmtl_sort_rows(int64_t *idx, int64_t *tmp, const double *score, const int64_t *group,
                           int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        idx[i] = i;
    }
    int64_t *src = idx, *dst = tmp;
    for (int64_t width = 1; width < n; width *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * width) {
            int64_t mid = lo + width < n ? lo + width : n;
            int64_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            int64_t a = lo, b = mid, o = lo;
            while (a < mid && b < hi) {
                int64_t x = src[a], y = src[b];
                int take_b =
                    group && group[y] != group[x] ? group[y] < group[x] : score[y] < score[x];
                dst[o++] = take_b ? src[b++] : src[a++];
            }
            while (a < mid) {
                dst[o++] = src[a++];
            }
            while (b < hi) {
                dst[o++] = src[b++];
            }
        }
        int64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != idx) {
        for (int64_t i = 0; i < n; i++) {
            idx[i] = src[i];
        }
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

/* scratch: 2n int64 */
int rmtl_auc(double *out, const double *score, const float *label, int64_t n, int64_t *scratch) {
    rmtl_sort_rows(scratch, scratch + n, score, NULL, n);
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

/* impression-weighted mean of per-group AUC over groups holding both classes;
   scratch: 2n int64 */
int rmtl_gauc(double *out, const double *score, const float *label, const int64_t *group, int64_t n,
              int64_t *scratch) {
    int64_t *idx = scratch;
    rmtl_sort_rows(idx, scratch + n, score, group, n);
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
   size g at probability p adds p (1 - p) g (g - 1) / 2. scratch: 2n int64. */
int rmtl_oracle_auc(double *out, const double *prob, int64_t n, int64_t *scratch) {
    rmtl_sort_rows(scratch, scratch + n, prob, NULL, n);
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
