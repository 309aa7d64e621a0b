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

static void rmtl_bal_uw_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = 3 * (int64_t)b->K;
    *n_work = 0;
}

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
    rmtl_bal_adam(s, g, s + K, s + 2 * K, b->steps, K, &b->opt);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_uw = {.name = "uw",
                                          .family = RMTL_BAL_LOSSES,
                                          .samples = 1,
                                          .sizes = rmtl_bal_uw_sizes,
                                          .init = rmtl_bal_uw_init,
                                          .weights = rmtl_bal_uw_weights};

const rmtl_bal_spec *const rmtl_bal_scale_family[] = {&rmtl_bal_ew, &rmtl_bal_linear, &rmtl_bal_uw,
                                                      NULL};
