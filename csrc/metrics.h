/* Ranking and likelihood metrics (metrics.c). Scratch arrays are the caller's, so the metrics
   never allocate; each returns RMTL_ERR_ARG where the metric is undefined (one class, no rows). */
#ifndef RMTL_METRICS_H
#define RMTL_METRICS_H
#include "rmtl.h"

/* the scratch the ranking metrics take: RMTL_METRICS_SCRATCH n int64 */
#define RMTL_METRICS_SCRATCH 4
/* AUC of score (n) against 0/1 label (n); ties count one half */
int rmtl_auc(double *out, const double *score, const float *label, int64_t n, int64_t *scratch);
/* mean BCE of prob (n) against label (n), each log clamped at -100 */
int rmtl_logloss(double *out, const float *prob, const float *label, int64_t n);
/* mean over sessions of each session's mean BCE; offsets (n_sessions + 1) */
int rmtl_session_logloss(double *out, const float *prob, const float *label, const int64_t *offsets,
                         int64_t n_sessions);
/* impression-weighted mean of per-group AUC over the groups (group (n)) holding both classes */
int rmtl_gauc(double *out, const double *score, const float *label, const int64_t *group, int64_t n,
              int64_t *scratch);
/* expected AUC of ranking by the true probabilities prob (n) (synthetic data) */
int rmtl_oracle_auc(double *out, const double *prob, int64_t n, int64_t *scratch);
/* expected mean BCE of predicting the true probabilities prob (n) */
int rmtl_oracle_logloss(double *out, const float *prob, int64_t n);
#endif
