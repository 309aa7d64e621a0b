/* Balancers that weight the task losses from the losses alone (balancers.h): the direction is
   sum_k w_k g_k, so training runs one backward of the weighted loss. */
#include <math.h>

#include "balancers.h"

/* ---- ew: every weight 1 (LibMTL's EW: the summed loss) */

static int rmtl_bal_ew_weights(rmtl_balancer *b, double *w, const float *losses) {
    (void)losses;
    for (int k = 0; k < b->K; k++) {
        w[k] = 1.0;
    }
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_ew = {
    .name = "ew", .family = RMTL_BAL_LOSSES, .samples = 1, .weights = rmtl_bal_ew_weights};

/* ---- linear: fixed weights given by the user (b->fixed; the paper's "linear estimations") */

static int rmtl_bal_linear_weights(rmtl_balancer *b, double *w, const float *losses) {
    (void)losses;
    for (int k = 0; k < b->K; k++) {
        w[k] = b->fixed[k];
    }
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_linear = {
    .name = "linear", .family = RMTL_BAL_LOSSES, .samples = 1, .weights = rmtl_bal_linear_weights};

/* ---- uw: uncertainty weighting (Kendall et al., CVPR 2018), LibMTL's form: the loss
   sum_k L_k / (2 exp(s_k)) + s_k / 2 with trainable s (start -0.5), trained by the model's Adam
   (b->opt). State: s (K), Adam m (K), v (K). */

static void rmtl_bal_uw_init(rmtl_balancer *b) {
    for (int k = 0; k < b->K; k++) {
        b->state[k] = -0.5;
    }
}

static int rmtl_bal_uw_weights(rmtl_balancer *b, double *w, const float *losses) {
    int K = b->K;
    double *s = b->state, g[RMTL_MAX_TASKS];
    for (int k = 0; k < K; k++) {
        w[k] = 1.0 / (2.0 * exp(s[k]));
        g[k] = 0.5 - losses[k] * w[k];
    }
    rmtl_bal_adam(b, g, b->steps, &b->opt);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_uw = {.name = "uw",
                                          .family = RMTL_BAL_LOSSES,
                                          .samples = 1,
                                          .sizes = rmtl_bal_adam_sizes,
                                          .init = rmtl_bal_uw_init,
                                          .weights = rmtl_bal_uw_weights};

/* ---- gls: geometric loss strategy (Chennupati et al., "MultiNet++", CVPR workshops 2019),
   LibMTL's GLS: the loss (prod_k L_k)^(1/K), whose gradient weights are w_k = (prod_j L_j)^(1/K) /
   (K L_k), computed through logarithms so that many small losses do not underflow. Needs positive
   losses (RMTL_ERR_ARG otherwise; LibMTL gives NaN or infinity). No state. Deviation: LibMTL
   returns L_k / (K prod_j L_j) as its weights, which are not the weights of its gradient;
   b->weights are the gradient's weights. */

static int rmtl_bal_gls_weights(rmtl_balancer *b, double *w, const float *losses) {
    int K = b->K;
    double log_mean = 0.0;
    for (int k = 0; k < K; k++) {
        if (!(losses[k] > 0.0f)) {
            return RMTL_ERR_ARG;
        }
        log_mean += log((double)losses[k]);
    }
    double geo = exp(log_mean / K);
    for (int k = 0; k < K; k++) {
        w[k] = geo / (K * (double)losses[k]);
    }
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_gls = {
    .name = "gls", .family = RMTL_BAL_LOSSES, .samples = 1, .weights = rmtl_bal_gls_weights};

/* ---- dwa: dynamic weight average (Liu et al., "End-to-End Multi-Task Learning with Attention",
   CVPR 2019), LibMTL's DWA: from the third epoch on (b->epoch > 1) w = K softmax(r / T) with
   r_k = (mean loss of the last epoch) / (mean loss of the one before), else every weight 1. The
   history is the balancer's (loss_last, loss_before); no state of its own. A ratio that is not
   finite (an epoch mean of 0) gives RMTL_ERR_NONFINITE where LibMTL would train on NaN. */

static int rmtl_bal_dwa_weights(rmtl_balancer *b, double *w, const float *losses) {
    (void)losses;
    int K = b->K;
    if (b->epoch <= 1) {
        for (int k = 0; k < K; k++) {
            w[k] = 1.0;
        }
        return RMTL_OK;
    }
    double r[RMTL_MAX_TASKS] = {0.0};
    for (int k = 0; k < K; k++) {
        r[k] = b->loss_last[k] / b->loss_before[k] / b->h[0];
        if (!isfinite(r[k])) {
            return RMTL_ERR_NONFINITE;
        }
    }
    rmtl_bal_softmax(w, r, K);
    for (int k = 0; k < K; k++) {
        w[k] *= K;
    }
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_dwa = {
    .name = "dwa",
    .family = RMTL_BAL_LOSSES,
    .samples = 1,
    .hyper =
        {{.name = "T", .value = 2.0, .low = 0.0, .high = INFINITY, .open_low = 1, .open_high = 1}},
    .weights = rmtl_bal_dwa_weights};

/* ---- rlw: random loss weighting (Lin et al., "Reasonable Effectiveness of Random Weighting",
   TMLR 2022), LibMTL's RLW: w = softmax(z) with z K standard normal draws per step (the
   balancer's counter-based stream at (step, k)). Deviation: LibMTL 1.1.5's dist argument is not
   offered; its default, Normal, is the only form LibMTL's repository keeps. No state. */

static int rmtl_bal_rlw_weights(rmtl_balancer *b, double *w, const float *losses) {
    (void)losses;
    double z[RMTL_MAX_TASKS];
    for (int k = 0; k < b->K; k++) {
        z[k] = rmtl_bal_normal(b, k);
    }
    rmtl_bal_softmax(w, z, b->K);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_rlw = {
    .name = "rlw", .family = RMTL_BAL_LOSSES, .samples = 1, .weights = rmtl_bal_rlw_weights};

/* ---- famo: fast adaptive multitask optimization (Liu et al., NeurIPS 2023), LibMTL's FAMO with
   its minimum losses at 0 (LibMTL never sets them): with z = softmax(logits) and
   D_k = L_k + 1e-8, the loss sum_k z_k log(D_k) / c, c = sum_k z_k / D_k held fixed, so
   w_k = (z_k / D_k) / c (summing to 1). After the training step (after_step, LibMTL's update_w),
   delta_k = log(D_k) - log(L'_k + 1e-8) from the same batch's losses L' at the new parameters
   steps the logits by Adam (lr w_lr, weight decay w_gamma, betas 0.9, 0.999, eps 1e-8) on the
   gradient of softmax(logits) . delta. Needs losses >= 0 (RMTL_ERR_ARG otherwise: LibMTL takes
   logarithms of them); after_step before the first step does nothing. State: logits (K), Adam m
   (K), v (K), the last step's losses (K), the logits' Adam steps (1). LibMTL returns no weights;
   b->weights are w. */

static void rmtl_bal_famo_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = 4 * (int64_t)b->K + 1;
    *n_work = 0;
}

static int rmtl_bal_famo_weights(rmtl_balancer *b, double *w, const float *losses) {
    int K = b->K;
    double *logits = b->state, *prev = b->state + 3 * K, z[RMTL_MAX_TASKS], c = 0.0;
    for (int k = 0; k < K; k++) {
        if (!(losses[k] >= 0.0f)) {
            return RMTL_ERR_ARG;
        }
    }
    rmtl_bal_softmax(z, logits, K);
    for (int k = 0; k < K; k++) {
        w[k] = z[k] / ((double)losses[k] + 1e-8);
        c += w[k];
    }
    for (int k = 0; k < K; k++) {
        w[k] /= c;
        prev[k] = losses[k];
    }
    return RMTL_OK;
}

static int rmtl_bal_famo_after_step(rmtl_balancer *b, const float *losses) {
    int K = b->K;
    double *logits = b->state, *prev = b->state + 3 * K, *t = b->state + 4 * K;
    double z[RMTL_MAX_TASKS], delta[RMTL_MAX_TASKS], g[RMTL_MAX_TASKS], mean = 0.0;
    if (b->steps == 0) {
        return RMTL_OK;
    }
    for (int k = 0; k < K; k++) {
        if (!(losses[k] >= 0.0f)) {
            return RMTL_ERR_ARG;
        }
    }
    rmtl_bal_softmax(z, logits, K);
    for (int k = 0; k < K; k++) {
        delta[k] = log(prev[k] + 1e-8) - log((double)losses[k] + 1e-8);
        mean += z[k] * delta[k];
    }
    for (int k = 0; k < K; k++) {
        g[k] = z[k] * (delta[k] - mean);
    }
    const rmtl_adam opt = {(float)b->h[0], 0.9f, 0.999f, 1e-8f, (float)b->h[1]};
    rmtl_bal_adam(b, g, (int64_t)*t, &opt);
    *t += 1.0;
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_famo = {
    .name = "famo",
    .family = RMTL_BAL_LOSSES,
    .samples = 1,
    .hyper = {{.name = "w_lr", .value = 0.025, .low = 0.0, .high = INFINITY, .open_high = 1},
              {.name = "w_gamma", .value = 1e-3, .low = 0.0, .high = INFINITY, .open_high = 1}},
    .sizes = rmtl_bal_famo_sizes,
    .weights = rmtl_bal_famo_weights,
    .after_step = rmtl_bal_famo_after_step};

/* ---- stch: smooth Tchebycheff scalarization (Lin et al., ICML 2024), LibMTL's STCH. While
   b->epoch < warmup_epoch the loss is sum_k log(L_k + 1e-20) (w_k = 1 / (L_k + 1e-20)); during
   epoch warmup_epoch the same, and every step's losses join a sum (per step, not per row: LibMTL
   averages its backward calls). At the first step after it the nadir vector n is fixed to their
   mean; from then on l_k = log(L_k / n_k + 1e-20) and the loss is K mu logsumexp(l / mu), so
   w_k = K softmax(l / mu)_k / (n_k (L_k / n_k + 1e-20)). Needs losses >= 0 and a positive
   nadir (RMTL_ERR_ARG otherwise; LibMTL gives NaN). Deviation: when the warmup epoch had no
   step (LibMTL divides 0 by 0), the nadir is the first later step's losses. LibMTL returns
   weights of ones; b->weights are the gradient's w. State: the warmup sums (K), their steps
   (1), the nadir (K), 1 once it is fixed (1). */

static void rmtl_bal_stch_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = 2 * (int64_t)b->K + 2;
    *n_work = 0;
}

static int rmtl_bal_stch_weights(rmtl_balancer *b, double *w, const float *losses) {
    int K = b->K;
    double mu = b->h[0], warmup = b->h[1], epoch = (double)b->epoch;
    double *sum = b->state, *count = b->state + K, *nadir = b->state + K + 1;
    double *fixed = b->state + 2 * K + 1, l[RMTL_MAX_TASKS], s[RMTL_MAX_TASKS];
    for (int k = 0; k < K; k++) {
        if (!(losses[k] >= 0.0f)) {
            return RMTL_ERR_ARG;
        }
    }
    if (epoch <= warmup) {
        for (int k = 0; k < K; k++) {
            w[k] = 1.0 / ((double)losses[k] + 1e-20);
            if (epoch == warmup) {
                sum[k] += losses[k];
            }
        }
        *count += epoch == warmup ? 1.0 : 0.0;
        return RMTL_OK;
    }
    if (*fixed == 0.0) {
        for (int k = 0; k < K; k++) {
            l[k] = *count > 0.0 ? sum[k] / *count : (double)losses[k];
            if (!(l[k] > 0.0)) {
                return RMTL_ERR_ARG;
            }
        }
        for (int k = 0; k < K; k++) {
            nadir[k] = l[k];
        }
        *fixed = 1.0;
    }
    for (int k = 0; k < K; k++) {
        l[k] = (double)losses[k] / nadir[k] + 1e-20;
        s[k] = log(l[k]) / mu;
    }
    rmtl_bal_softmax(w, s, K);
    for (int k = 0; k < K; k++) {
        w[k] *= K / (nadir[k] * l[k]);
    }
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_stch = {
    .name = "stch",
    .family = RMTL_BAL_LOSSES,
    .samples = 1,
    .hyper =
        {{.name = "mu", .value = 1.0, .low = 0.0, .high = INFINITY, .open_low = 1, .open_high = 1},
         {.name = "warmup_epoch",
          .value = 4.0,
          .low = 0.0,
          .high = INFINITY,
          .open_high = 1,
          .integer = 1}},
    .sizes = rmtl_bal_stch_sizes,
    .weights = rmtl_bal_stch_weights};

const rmtl_bal_spec *const rmtl_bal_scale_family[] = {
    &rmtl_bal_ew,  &rmtl_bal_linear, &rmtl_bal_uw,   &rmtl_bal_gls, &rmtl_bal_dwa,
    &rmtl_bal_rlw, &rmtl_bal_famo,   &rmtl_bal_stch, NULL};
