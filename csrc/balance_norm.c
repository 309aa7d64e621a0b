/* Balancers that weight the task gradients by their norms (balancers.h): gradnorm, imtl,
   db_mtl, excess_mtl and metabalance. Each reads the Jacobian (K,P) of the step; the direction
   keeps LibMTL's scale convention (that of the summed loss sum_k w_k L_k). */
#include <math.h>

#include "balancers.h"

/* ---- shared pieces */

/* Eigenvalues lam (n) and eigenvectors (columns of V (n,n)) of the symmetric A (n,n), which is
   overwritten, by cyclic Jacobi rotations (n <= RMTL_MAX_TASKS: a few sweeps converge). */
static void rmtl_bal_eigh(double *lam, double *V, double *A, int n) {
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            V[i * n + j] = i == j ? 1.0 : 0.0;
        }
    }
    for (int sweep = 0; sweep < 64; sweep++) {
        double off = 0.0, all = 0.0;
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++) {
                all += A[i * n + j] * A[i * n + j];
                off += i != j ? A[i * n + j] * A[i * n + j] : 0.0;
            }
        }
        if (off <= 1e-30 * all) {
            break;
        }
        for (int p = 0; p < n - 1; p++) {
            for (int q = p + 1; q < n; q++) {
                double apq = A[p * n + q];
                if (apq == 0.0) {
                    continue;
                }
                double theta = (A[q * n + q] - A[p * n + p]) / (2.0 * apq);
                double t = (theta >= 0.0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) { /* columns p and q */
                    double akp = A[k * n + p], akq = A[k * n + q];
                    A[k * n + p] = c * akp - s * akq;
                    A[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { /* rows p and q */
                    double apk = A[p * n + k], aqk = A[q * n + k];
                    A[p * n + k] = c * apk - s * aqk;
                    A[q * n + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < n; k++) {
                    double vkp = V[k * n + p], vkq = V[k * n + q];
                    V[k * n + p] = c * vkp - s * vkq;
                    V[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    for (int i = 0; i < n; i++) {
        lam[i] = A[i * n + i];
    }
}

/* ---- gradnorm: GradNorm (Chen et al., ICML 2018), LibMTL's form. Task weights
   w = K softmax(s) with trainable s (start 1). Epoch 0 is ew (weights 1, s untouched). From
   epoch 1 on, with the norms G_k = w_k ||g_k||, their mean Gbar and the inverse training rates
   r_k = (L_k / L_k^(0)) / mean_j (L_j / L_j^(0)) (L^(0) = the first epoch's mean losses,
   b->loss_first), the loss sum_k |G_k - Gbar r_k^alpha| (the target held constant) gives s its
   gradient, and the model's Adam (b->opt) steps s once per step, as LibMTL's trainer does; the
   direction is sum_k w_k g_k with the weights before that step. State: s (K), Adam m (K), v (K),
   Adam steps taken (1; Adam first steps s in epoch 1). Deviation: where a ratio r_k is not a
   finite non-negative number (a first-epoch mean loss of 0, negative losses), LibMTL gives NaN;
   here every r_k is 1 that step (no restoring force). */

static void rmtl_bal_gradnorm_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = 3 * (int64_t)b->K + 1;
    *n_work = 0;
}

static int rmtl_bal_gradnorm_direction(rmtl_balancer *b, float *dir, const float *losses,
                                       const float *jac) {
    int K = b->K;
    int64_t P = b->P;
    double *s = b->state, *adam_t = b->state + 3 * K;
    double w[RMTL_MAX_TASKS], p[RMTL_MAX_TASKS], norm[RMTL_MAX_TASKS], r[RMTL_MAX_TASKS];
    double g[RMTL_MAX_TASKS], dw[RMTL_MAX_TASKS];
    b->has_weights = 1;
    if (b->epoch == 0) {
        for (int k = 0; k < K; k++) {
            w[k] = b->weights[k] = 1.0;
        }
        rmtl_bal_combine_coef(b, dir, w, jac);
        return RMTL_OK;
    }
    rmtl_bal_softmax(p, s, K);
    double gbar = 0.0, rsum = 0.0;
    int ok = 1;
    for (int k = 0; k < K; k++) {
        w[k] = K * p[k];
        norm[k] = rmtl_bal_norm2(jac + (size_t)k * P, P);
        gbar += w[k] * norm[k] / K;
        r[k] = losses[k] / b->loss_first[k];
        rsum += r[k];
    }
    for (int k = 0; k < K; k++) {
        r[k] /= rsum / K;
        ok = ok && isfinite(r[k]) && r[k] >= 0.0;
    }
    double dot = 0.0;
    for (int k = 0; k < K; k++) {
        double target = gbar * (ok ? pow(r[k], b->h[0]) : 1.0), gk = w[k] * norm[k];
        /* d |G_k - target| / d w_k (torch's abs' gradient is 0 at 0) */
        dw[k] = gk > target ? norm[k] : gk < target ? -norm[k] : 0.0;
        dot += dw[k] * w[k];
    }
    for (int k = 0; k < K; k++) { /* through w = K softmax(s) */
        g[k] = dw[k] * w[k] - p[k] * dot;
    }
    rmtl_bal_combine_coef(b, dir, w, jac);
    for (int k = 0; k < K; k++) {
        b->weights[k] = w[k];
    }
    rmtl_bal_adam(b, g, (int64_t)*adam_t, &b->opt);
    *adam_t += 1.0;
    return RMTL_OK;
}

/* the first epoch's steps are ew's */
static int rmtl_bal_gradnorm_equal(const rmtl_balancer *b) {
    return b->epoch == 0;
}

static const rmtl_bal_spec rmtl_bal_gradnorm = {
    .name = "gradnorm",
    .family = RMTL_BAL_GRADIENTS,
    .rep = RMTL_BAL_REP_COEF,
    .samples = 1,
    .hyper = {{.name = "alpha", .value = 1.5, .low = 0.0, .high = INFINITY, .open_high = 1}},
    .sizes = rmtl_bal_gradnorm_sizes,
    .init = rmtl_bal_init_ones,
    .direction = rmtl_bal_gradnorm_direction,
    .equal = rmtl_bal_gradnorm_equal};

/* ---- imtl: Impartial MTL (Liu et al., ICLR 2021), LibMTL's form, which joins both parts:
   IMTL-L scales task k's loss to e^{s_k} L_k - s_k with trainable s (start 0; the gradient
   e^{s_k} L_k - 1 steps s by the model's Adam, b->opt, after the direction is taken), and IMTL-G
   combines the scaled gradients g'_k = e^{s_k} g_k with weights alpha summing to 1 such that the
   direction has equal projections on every unit gradient u_k. b->weights are these alpha (as
   LibMTL returns them); the direction is sum_k alpha_k e^{s_k} g_k.

   LibMTL solves alpha from the (K-1, K-1) system (g_1 - g_k)(u_1 - u_k)^T; here the same alpha
   come from the correlation matrix C = D^-1 G D^-1 of the Gram matrix G of the scaled gradients
   (D = diag of their norms): alpha_k proportional to (C^+ 1)_k / ||g'_k|| (torchjd's IMTLG,
   G^+ d, when G is invertible). Equal to LibMTL's where its system is invertible; where it is
   not (a zero gradient, linearly dependent gradients), LibMTL gives NaN or noise and this form
   stays defined: the pseudo-inverse drops eigenvalues of C below 1e-10 of the largest (scale
   free, unlike a cut on G), a zero gradient gets alpha 0, and when sum_k of the unnormalised
   alpha vanishes (below 1e-12 of their absolute sum) every alpha is 0, as in torchjd.
   State: s (K), Adam m (K), v (K) (Adam steps = b->steps: s moves every step). */

static int rmtl_bal_imtl_direction(rmtl_balancer *b, float *dir, const float *losses,
                                   const float *jac) {
    int K = b->K, n = 0, idx[RMTL_MAX_TASKS];
    double *s = b->state;
    double G[RMTL_MAX_TASKS * RMTL_MAX_TASKS], C[RMTL_MAX_TASKS * RMTL_MAX_TASKS];
    double V[RMTL_MAX_TASKS * RMTL_MAX_TASKS], lam[RMTL_MAX_TASKS], e[RMTL_MAX_TASKS];
    double d[RMTL_MAX_TASKS], v[RMTL_MAX_TASKS], coef[RMTL_MAX_TASKS], g[RMTL_MAX_TASKS];
    rmtl_bal_gram(G, jac, K, b->P);
    for (int k = 0; k < K; k++) {
        e[k] = exp(s[k]);
        d[k] = e[k] * sqrt(G[k * K + k]); /* ||g'_k|| */
        v[k] = 0.0;
        if (d[k] > 0.0) {
            idx[n++] = k;
        }
    }
    /* C over the tasks with a nonzero gradient (scaling cancels in it) */
    for (int a = 0; a < n; a++) {
        for (int c = 0; c < n; c++) {
            int i = idx[a], j = idx[c];
            C[a * n + c] = G[i * K + j] / (sqrt(G[i * K + i]) * sqrt(G[j * K + j]));
        }
    }
    if (n > 0) {
        rmtl_bal_eigh(lam, V, C, n);
        double top = 0.0;
        for (int i = 0; i < n; i++) {
            top = lam[i] > top ? lam[i] : top;
        }
        for (int i = 0; i < n; i++) { /* v = C^+ 1 over the kept eigenvalues */
            if (lam[i] <= 1e-10 * top) {
                continue;
            }
            double proj = 0.0;
            for (int a = 0; a < n; a++) {
                proj += V[a * n + i];
            }
            for (int a = 0; a < n; a++) {
                v[idx[a]] += V[a * n + i] * proj / lam[i];
            }
        }
    }
    double sum = 0.0, mass = 0.0;
    for (int k = 0; k < K; k++) {
        v[k] = d[k] > 0.0 ? v[k] / d[k] : 0.0;
        sum += v[k];
        mass += fabs(v[k]);
    }
    int vanish = !(fabs(sum) > 1e-12 * mass);
    for (int k = 0; k < K; k++) {
        b->weights[k] = vanish ? 0.0 : v[k] / sum;
        coef[k] = b->weights[k] * e[k];
        g[k] = e[k] * losses[k] - 1.0;
        b->tower[k] = e[k]; /* the task-specific parameters see e^{s_k} L_k */
    }
    b->has_weights = 1;
    rmtl_bal_combine_coef(b, dir, coef, jac);
    rmtl_bal_adam(b, g, b->steps, &b->opt);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_imtl = {.name = "imtl",
                                            .rep = RMTL_BAL_REP_COEF,
                                            .family = RMTL_BAL_GRADIENTS,
                                            .samples = 1,
                                            .sizes = rmtl_bal_adam_sizes,
                                            .direction = rmtl_bal_imtl_direction};

/* ---- db_mtl: Dual-Balancing MTL (Lin et al., 2023), LibMTL's repository form. The gradients
   of the log losses, g_k / (L_k + 1e-8), enter a moving average per task,
   m_k <- h_k + (beta / t^beta_sigma) (m_k - h_k) (t the steps counted from 1, m starting at 0),
   and the direction is sum_k (max_j ||m_j|| / (||m_k|| + 1e-8)) m_k: every task's averaged
   gradient scaled to the largest norm. LibMTL returns weights of 1 (b->weights). State: m (K,P).
   Deviation: a loss with L_k + 1e-8 <= 0 (no logarithm) is RMTL_ERR_ARG, nothing advanced
   (LibMTL takes the gradient 1 / (L_k + 1e-8) of a NaN loss). */

static void rmtl_bal_db_mtl_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = (int64_t)b->K * b->P;
    *n_work = 0;
}

static int rmtl_bal_db_mtl_direction(rmtl_balancer *b, float *dir, const float *losses,
                                     const float *jac) {
    int K = b->K;
    int64_t P = b->P;
    double inv[RMTL_MAX_TASKS], norm[RMTL_MAX_TASKS], alpha[RMTL_MAX_TASKS], top = 0.0;
    for (int k = 0; k < K; k++) {
        double x = (double)losses[k] + 1e-8;
        if (!(x > 0.0)) {
            return RMTL_ERR_ARG;
        }
        inv[k] = 1.0 / x;
    }
    double f = b->h[0] / pow((double)(b->steps + 1), b->h[1]);
    for (int k = 0; k < K; k++) {
        double *m = b->state + (size_t)k * P, acc = 0.0;
        const float *row = jac + (size_t)k * P;
        for (int64_t j = 0; j < P; j++) {
            double h = row[j] * inv[k];
            m[j] = h + f * (m[j] - h);
            acc += m[j] * m[j];
        }
        norm[k] = sqrt(acc);
        top = norm[k] > top ? norm[k] : top;
    }
    for (int k = 0; k < K; k++) {
        alpha[k] = top / (norm[k] + 1e-8);
        b->weights[k] = 1.0;
        b->tower[k] = inv[k]; /* the task-specific parameters see log(L_k + 1e-8) */
    }
    b->has_weights = 1;
    rmtl_bal_combine_rows(dir, alpha, b->state, K, P);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_db_mtl = {
    .name = "db_mtl",
    .family = RMTL_BAL_GRADIENTS,
    .samples = 1,
    .hyper = {{.name = "beta", .value = 0.9, .low = 0.0, .high = 1.0, .open_high = 1},
              {.name = "beta_sigma", .value = 0.0, .low = 0.0, .high = INFINITY, .open_high = 1}},
    .sizes = rmtl_bal_db_mtl_sizes,
    .direction = rmtl_bal_db_mtl_direction};

/* ---- excess_mtl: ExcessMTL (He et al., ICML 2024), LibMTL's repository form. A running sum
   of squared gradients per element, A_k += g_k^2, gives each task's excess-risk estimate
   w_k = sum_j g_kj^2 / sqrt(A_kj + 1e-7) (an AdaGrad-preconditioned squared gradient norm). The
   first step (LibMTL's flag first_epoch is cleared at the first call, whatever the epoch) only
   records w^(0) = w; every later step multiplies the task weights by exp(robust_step_size
   w_k / w_k^(0)) and renormalises them to sum K (start 1). The direction is sum_k weights_k g_k
   with the step's updated weights (b->weights). State: A (K,P), w^(0) (K), weights (K).
   Deviation: a task whose first-step gradient was 0 (w^(0) = 0; LibMTL divides by it) gets the
   ratio 0 (its weight takes no multiplicative step). */

static void rmtl_bal_excess_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = (int64_t)b->K * b->P + 2 * (int64_t)b->K;
    *n_work = 0;
}

static void rmtl_bal_excess_init(rmtl_balancer *b) {
    double *lw = b->state + (size_t)b->K * b->P + b->K;
    for (int k = 0; k < b->K; k++) {
        lw[k] = 1.0;
    }
}

typedef struct {
    double *sq; /* A (K,P) */
    const float *jac;
    int64_t P;
} rmtl_excess_args;

/* A_kj += g_kj^2 over the columns [lo, hi) of row k, and their sum of g_kj^2 / sqrt(A_kj + 1e-7) */
static double rmtl_bal_excess_part(void *ctx, int k, int64_t lo, int64_t hi) {
    const rmtl_excess_args *a = ctx;
    double *sq = a->sq + (size_t)k * a->P, acc = 0.0;
    const float *row = a->jac + (size_t)k * a->P;
    for (int64_t j = lo; j < hi; j++) {
        double g2 = (double)row[j] * row[j];
        sq[j] += g2;
        acc += g2 / sqrt(sq[j] + 1e-7);
    }
    return acc;
}

static int rmtl_bal_excess_direction(rmtl_balancer *b, float *dir, const float *losses,
                                     const float *jac) {
    (void)losses;
    int K = b->K;
    int64_t P = b->P;
    double *w0 = b->state + (size_t)K * P, *lw = w0 + K, w[RMTL_MAX_TASKS];
    rmtl_excess_args args = {b->state, jac, P};
    rmtl_bal_row_sums(w, K, P, rmtl_bal_excess_part, &args);
    if (b->steps == 0) {
        for (int k = 0; k < K; k++) {
            w0[k] = w[k];
        }
    } else {
        double sum = 0.0;
        for (int k = 0; k < K; k++) {
            double ratio = w0[k] > 0.0 ? w[k] / w0[k] : 0.0;
            lw[k] *= exp(ratio * b->h[0]);
            sum += lw[k];
        }
        for (int k = 0; k < K; k++) {
            lw[k] = lw[k] / sum * K;
        }
    }
    for (int k = 0; k < K; k++) {
        b->weights[k] = lw[k];
        b->tower[k] = lw[k]; /* LibMTL ends with a backward of sum_k w_k L_k */
    }
    b->has_weights = 1;
    rmtl_bal_combine_coef(b, dir, lw, jac);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_excess_mtl = {.name = "excess_mtl",
                                                  .rep = RMTL_BAL_REP_COEF,
                                                  .family = RMTL_BAL_GRADIENTS,
                                                  .samples = 1,
                                                  .hyper = {{.name = "robust_step_size",
                                                             .value = 1e-2,
                                                             .low = 0.0,
                                                             .high = INFINITY,
                                                             .open_low = 1,
                                                             .open_high = 1}},
                                                  .sizes = rmtl_bal_excess_sizes,
                                                  .init = rmtl_bal_excess_init,
                                                  .direction = rmtl_bal_excess_direction};

/* ---- metabalance: MetaBalance (He et al., "MetaBalance: Improving Multi-Task Recommendations
   via Adapting Gradient Magnitudes of Auxiliary Tasks", WWW 2022), torch-rechub's form
   (torch_rechub/basic/metaoptimizer.py). Per shared parameter tensor (b->segments) and task,
   a moving average of the gradient norm, m_k <- beta m_k + (1 - beta) ||g_k|| (start 0, no bias
   correction); task 0 is the target task, and every task's gradient of the tensor is scaled by
   relax_factor m_0 / (m_k + 1e-5) + (1 - relax_factor) (task 0's too, by m_0 / (m_0 + 1e-5),
   as torch-rechub does); the direction is the sum. No task weights (they differ per tensor).
   torch-rechub accepts relax_factor in [0, 1); 1 (the paper's full magnitude matching) is
   allowed here. State: m (n_segments, K). */

static void rmtl_bal_metabalance_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = (int64_t)b->n_segments * b->K;
    *n_work = 0;
}

static int rmtl_bal_metabalance_direction(rmtl_balancer *b, float *dir, const float *losses,
                                          const float *jac) {
    (void)losses;
    int K = b->K;
    int64_t P = b->P, lo = 0;
    double relax = b->h[0], beta = b->h[1], scale[RMTL_MAX_TASKS];
    for (int seg = 0; seg < b->n_segments; seg++) {
        int64_t len = b->segments[seg];
        double *m = b->state + (size_t)seg * K;
        for (int k = 0; k < K; k++) {
            double norm = rmtl_bal_norm2(jac + (size_t)k * P + lo, len);
            m[k] = beta * m[k] + (1.0 - beta) * norm;
        }
        for (int k = 0; k < K; k++) {
            scale[k] = m[0] / (m[k] + 1e-5) * relax + (1.0 - relax);
        }
        rmtl_bal_combine_span(dir, scale, jac, K, P, lo, len);
        lo += len;
    }
    b->has_weights = 0;
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_metabalance = {
    .name = "metabalance",
    .family = RMTL_BAL_GRADIENTS,
    .samples = 1,
    .hyper = {{.name = "relax_factor", .value = 0.7, .low = 0.0, .high = 1.0},
              {.name = "beta", .value = 0.9, .low = 0.0, .high = 1.0, .open_high = 1}},
    .sizes = rmtl_bal_metabalance_sizes,
    .direction = rmtl_bal_metabalance_direction};

const rmtl_bal_spec *const rmtl_bal_norm_family[] = {&rmtl_bal_gradnorm,    &rmtl_bal_imtl,
                                                     &rmtl_bal_db_mtl,      &rmtl_bal_excess_mtl,
                                                     &rmtl_bal_metabalance, NULL};
