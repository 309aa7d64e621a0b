/* Balancers that project, align or re-combine the task gradients (balancers.h, family
   RMTL_BAL_GRADIENTS): mgda, pcgrad, gradvac, graddrop, aligned_mtl, moco.

   Most of them work in the span of the task gradients: a combination sum_k c_k g_k is kept as its
   coefficients c, and every inner product of combinations is read from the Gram matrix
   G = J J^T (rmtl_bal_gram), so a step costs one pass over the Jacobian for G and one for the
   direction, and needs no scratch of the gradient's length. This is the same arithmetic as
   LibMTL's projections of gradient vectors, only in double instead of float32.

   Random task orders (pcgrad, gradvac) are Python's random.shuffle (Fisher-Yates from the last
   element down) drawn from rmtl_bal_uniform: the order of task i at a step uses the draws
   i K + t for t = n - 1 down to 1, so a test can replay it. */
#include <float.h>
#include <math.h>

#include "balancers.h"
#include "pool.h"

/* Python's random.shuffle of order (n): for t = n - 1 down to 1, swap element t with element
   floor(u (t + 1)) of the draws u at base + t */
static void rmtl_bal_shuffle(const rmtl_balancer *b, int *order, int n, int64_t base) {
    for (int t = n - 1; t > 0; t--) {
        int j = (int)(rmtl_bal_uniform(b, base + t) * (double)(t + 1));
        int keep = order[t];
        order[t] = order[j];
        order[j] = keep;
    }
}

/* c^T G d for the combinations c, d (n) of the Gram matrix G (n,n) */
static double rmtl_bal_inner(const double *G, const double *c, const double *d, int n) {
    double acc = 0.0;
    for (int a = 0; a < n; a++) {
        for (int e = 0; e < n; e++) {
            acc += c[a] * d[e] * G[a * n + e];
        }
    }
    return acc;
}

/* ---- mgda: the multiple-gradient descent algorithm (Desideri 2012) as the min-norm problem of
   Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization" (NeurIPS 2018): weights
   w on the simplex minimising |sum_k w_k g_k / n_k|, with n_k the gradient normaliser gn (none: 1,
   l2: |g_k|, loss: L_k, loss+: L_k |g_k|). LibMTL's form (MGDA._find_min_norm_element, from the
   paper's code): the best pair of tasks by the closed-form two-point solution (clamped to 0.999 /
   0.001 at the edges), then for K >= 3 Frank-Wolfe steps towards the projected-gradient point,
   each a two-point line search, stopping when the step changes w by less than 1e-5 in L1 (the
   last w before that step is kept) or after 250 steps. The direction is sum_k w_k g_k / n_k
   (LibMTL combines the normalised gradients) and b->weights = w. No state.
   Deviations, only where LibMTL fails: LibMTL 1.1.5 never counts its iterations (it loops until
   the stopping rule holds; the repository stops after 250, as here); a pair cost >= 1e8 leaves
   LibMTL without a start (here the cheapest pair still starts); a zero normaliser (zero gradient
   under l2) keeps the zero gradient where LibMTL divides 0 by 0; a zero loss under loss or loss+
   with a nonzero gradient is RMTL_ERR_NONFINITE (LibMTL's normalised gradient is infinite). */

enum { RMTL_MGDA_NONE = 0, RMTL_MGDA_L2 = 1, RMTL_MGDA_LOSS = 2, RMTL_MGDA_LOSS_PLUS = 3 };

/* the min-norm point gamma v1 + (1 - gamma) v2 of two vectors from v1.v1, v1.v2, v2.v2; its
   squared norm in cost (LibMTL's _min_norm_element_from2) */
static double rmtl_mgda_pair(double v11, double v12, double v22, double *cost) {
    if (v12 >= v11) {
        *cost = v11;
        return 0.999;
    }
    if (v12 >= v22) {
        *cost = v22;
        return 0.001;
    }
    /* v11 + v22 - 2 v12 as a sum of two positive differences: never zero */
    double gamma = (v22 - v12) / ((v11 - v12) + (v22 - v12));
    *cost = v22 + gamma * (v12 - v22);
    return gamma;
}

/* x (n) projected on the simplex (LibMTL's _projection2simplex: the threshold from the sorted
   values, the first that exceeds the next value) */
static void rmtl_mgda_simplex(double *x, int n) {
    double s[RMTL_MAX_TASKS], total = 0.0;
    for (int i = 0; i < n; i++) {
        int j = i;
        for (; j > 0 && s[j - 1] < x[i]; j--) {
            s[j] = s[j - 1];
        }
        s[j] = x[i];
        total += x[i];
    }
    double tmax = (total - 1.0) / n, part = 0.0;
    for (int i = 0; i < n - 1; i++) {
        part += s[i];
        double t = (part - 1.0) / (i + 1.0);
        if (t > s[i + 1]) {
            tmax = t;
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        x[i] = x[i] - tmax > 0.0 ? x[i] - tmax : 0.0;
    }
}

/* LibMTL's _next_point: from cur (n) along the descent grad (n) made to sum to zero, by the
   shortest step t > 1e-7 that reaches a face of the simplex (1 if none), then projected */
static void rmtl_mgda_next(double *next, const double *cur, const double *grad, int n) {
    double mean = 0.0, proj[RMTL_MAX_TASKS], t = 1.0;
    for (int i = 0; i < n; i++) {
        mean += grad[i];
    }
    mean /= n;
    int any_low = 0, any_high = 0;
    double low = 0.0, high = 0.0;
    for (int i = 0; i < n; i++) {
        proj[i] = grad[i] - mean;
        if (proj[i] < 0.0) {
            double tm = -cur[i] / proj[i];
            if (tm > 1e-7 && (!any_low || tm < low)) {
                low = tm;
                any_low = 1;
            }
        } else if (proj[i] > 0.0) {
            double tm = (1.0 - cur[i]) / proj[i];
            if (tm > 1e-7 && (!any_high || tm < high)) {
                high = tm;
                any_high = 1;
            }
        }
    }
    /* as LibMTL: the lower faces' step replaces 1 (it may exceed 1), the upper faces' is a min */
    if (any_low) {
        t = low;
    }
    if (any_high && high < t) {
        t = high;
    }
    for (int i = 0; i < n; i++) {
        next[i] = proj[i] * t + cur[i];
    }
    rmtl_mgda_simplex(next, n);
}

/* the min-norm weights sol (n) of the Gram matrix G (n,n) (LibMTL's _find_min_norm_element) */
static void rmtl_mgda_solve(double *sol, const double *G, int n) {
    double best = INFINITY, gamma = 0.999;
    int bi = 0, bj = 1;
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            double cost, c = rmtl_mgda_pair(G[i * n + i], G[i * n + j], G[j * n + j], &cost);
            if (cost < best) {
                best = cost;
                gamma = c;
                bi = i;
                bj = j;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        sol[i] = 0.0;
    }
    sol[bi] = gamma;
    sol[bj] = 1.0 - gamma;
    if (n < 3) {
        return;
    }
    double descent[RMTL_MAX_TASKS], next[RMTL_MAX_TASKS], moved[RMTL_MAX_TASKS];
    for (int iter = 0; iter < 250; iter++) {
        for (int i = 0; i < n; i++) {
            descent[i] = 0.0;
            for (int j = 0; j < n; j++) {
                descent[i] -= G[i * n + j] * sol[j];
            }
        }
        rmtl_mgda_next(next, sol, descent, n);
        double cost,
            nc = rmtl_mgda_pair(rmtl_bal_inner(G, sol, sol, n), rmtl_bal_inner(G, sol, next, n),
                                rmtl_bal_inner(G, next, next, n), &cost);
        double change = 0.0;
        for (int i = 0; i < n; i++) {
            moved[i] = nc * sol[i] + (1.0 - nc) * next[i];
            change += fabs(moved[i] - sol[i]);
        }
        if (change < 1e-5) {
            return;
        }
        for (int i = 0; i < n; i++) {
            sol[i] = moved[i];
        }
    }
}

static int rmtl_bal_mgda_direction(rmtl_balancer *b, float *dir, const float *losses,
                                   const float *jac) {
    int K = b->K, gn = (int)b->h[0];
    double G[RMTL_MAX_TASKS * RMTL_MAX_TASKS], norm[RMTL_MAX_TASKS], w[RMTL_MAX_TASKS];
    rmtl_bal_gram(G, jac, K, b->P);
    for (int k = 0; k < K; k++) {
        double length = sqrt(G[k * K + k]);
        norm[k] = gn == RMTL_MGDA_L2          ? length
                  : gn == RMTL_MGDA_LOSS      ? (double)losses[k]
                  : gn == RMTL_MGDA_LOSS_PLUS ? (double)losses[k] * length
                                              : 1.0;
        if (norm[k] == 0.0) {
            if (length > 0.0) {
                return RMTL_ERR_NONFINITE;
            }
            norm[k] = 1.0;
        }
    }
    for (int a = 0; a < K; a++) {
        for (int c = 0; c < K; c++) {
            G[a * K + c] /= norm[a] * norm[c];
        }
    }
    rmtl_mgda_solve(b->weights, G, K);
    for (int k = 0; k < K; k++) {
        w[k] = b->weights[k] / norm[k];
    }
    b->has_weights = 1;
    rmtl_bal_combine_coef(b, dir, w, jac);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_mgda = {.name = "mgda",
                                            .rep = RMTL_BAL_REP_COEF,
                                            .family = RMTL_BAL_GRADIENTS,
                                            .samples = 1,
                                            .hyper = {{.name = "gn",
                                                       .value = RMTL_MGDA_NONE,
                                                       .low = 0.0,
                                                       .high = 3.0,
                                                       .integer = 1,
                                                       .choices = "none|l2|loss|loss+"}},
                                            .direction = rmtl_bal_mgda_direction};

/* ---- pcgrad: projecting conflicting gradients (Yu et al., "Gradient Surgery for Multi-Task
   Learning", NeurIPS 2020). LibMTL 1.1.5's form: for each task i, its gradient pc_i visits the
   tasks j in a random order (all K tasks, i included, as LibMTL shuffles them; a fresh order per
   i and per step) and loses its component along g_j when pc_i . g_j < 0:
   pc_i -= (pc_i . g_j / |g_j|^2) g_j. The direction is sum_i pc_i = sum_j w_j g_j and b->weights
   = w (1 plus the projection coefficients on g_j, LibMTL's batch_weight). The repository adds
   1e-8 to |g_j|^2 (not here). No state; pc_i lives as its coefficients over the g_j. */

static int rmtl_bal_pcgrad_direction(rmtl_balancer *b, float *dir, const float *losses,
                                     const float *jac) {
    (void)losses;
    int K = b->K, order[RMTL_MAX_TASKS];
    double G[RMTL_MAX_TASKS * RMTL_MAX_TASKS], c[RMTL_MAX_TASKS];
    rmtl_bal_gram(G, jac, K, b->P);
    for (int k = 0; k < K; k++) {
        b->weights[k] = 1.0;
    }
    for (int i = 0; i < K; i++) {
        for (int k = 0; k < K; k++) {
            c[k] = k == i ? 1.0 : 0.0;
            order[k] = k;
        }
        rmtl_bal_shuffle(b, order, K, (int64_t)i * K);
        for (int t = 0; t < K; t++) {
            int j = order[t];
            double gij = 0.0;
            for (int l = 0; l < K; l++) {
                gij += c[l] * G[l * K + j];
            }
            if (gij < 0.0) { /* then |g_j| > 0 */
                double step = gij / G[j * K + j];
                c[j] -= step;
                b->weights[j] -= step;
            }
        }
    }
    b->has_weights = 1;
    rmtl_bal_combine(dir, b->weights, jac, K, b->P);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_pcgrad = {.name = "pcgrad",
                                              .family = RMTL_BAL_GRADIENTS,
                                              .samples = 1,
                                              .direction = rmtl_bal_pcgrad_direction};

/* ---- gradvac: gradient vaccine (Wang et al., "Gradient Vaccine: Investigating and Improving
   Multi-task Optimization in Massively Multilingual Models", ICLR 2021). For each task i and each
   other task j in a random order (fresh per i and per step), and each parameter group: with rho
   the cosine of pc_i and g_j (|pc_i| |g_j| + 1e-8 below) and target T_ij the EMA of past cosines,
   when rho < T_ij, pc_i += w g_j with
   w = |pc_i| (T sqrt(1 - rho^2) - rho sqrt(1 - T^2)) / (|g_j| sqrt(1 - T^2) + 1e-8),
   which raises the cosine to T; then T_ij = (1 - beta) T_ij + beta rho. The direction is
   sum_i pc_i. LibMTL repository's form (GradVac, with GradVac_group_type): groups are the whole
   model (group_type 0) or the parameter tensors b->segments (group_type 1 and 2: LibMTL's 2,
   all_matrix, is one group per tensor; its 1, all_layer, groups each leaf module's tensors,
   which the balancer cannot see: pass the layers' lengths as segments for it).
   Deviation from LibMTL 1.1.5: it updates the target only when rho < T_ij (so the target can only
   fall), has no 1e-8 terms and no groups; the repository and the paper update it at every visit,
   as here. Weights: with one group, b->weights = 1 + the coefficients added to each g_j (the
   direction is sum_j w_j g_j; LibMTL 1.1.5 returns these, the repository returns ones); with
   several groups no task weights (has_weights 0; the repository returns ones).
   State: the targets T (K, K, groups). Work: per group the Gram matrix (K, K) of the group's
   slice and the coefficients (K, K) of pc_i over the g_j. 1 - rho^2 is clamped at 0 (float
   rounding could push |rho| past 1). */

/* the groups of gradvac: 1, or one per segment */
static int rmtl_gradvac_groups(const rmtl_balancer *b) {
    return (int)b->h[1] == 0 ? 1 : b->n_segments;
}

static void rmtl_bal_gradvac_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    int64_t KK = (int64_t)b->K * b->K, groups = rmtl_gradvac_groups(b);
    *n_state = KK * groups;
    *n_work = 2 * KK * groups;
}

static int rmtl_bal_gradvac_direction(rmtl_balancer *b, float *dir, const float *losses,
                                      const float *jac) {
    (void)losses;
    int K = b->K, KK = K * K, groups = rmtl_gradvac_groups(b), order[RMTL_MAX_TASKS];
    double beta = b->h[0], *target = b->state, *gram = b->work, *coef = b->work + KK * groups;
    int64_t from = 0;
    for (int g = 0; g < groups; g++) {
        int64_t len = groups == 1 ? b->P : b->segments[g];
        rmtl_bal_gram_span(gram + g * KK, jac, K, b->P, from, len);
        from += len;
        for (int e = 0; e < KK; e++) {
            coef[g * KK + e] = e / K == e % K ? 1.0 : 0.0;
        }
    }
    for (int i = 0; i < K; i++) {
        int n = 0;
        for (int k = 0; k < K; k++) {
            if (k != i) {
                order[n++] = k;
            }
        }
        rmtl_bal_shuffle(b, order, n, (int64_t)i * K);
        for (int t = 0; t < n; t++) {
            int j = order[t];
            for (int g = 0; g < groups; g++) {
                const double *G = gram + g * KK, *gj = G + j * K;
                double *c = coef + g * KK + i * K, *T = target + (i * K + j) * groups + g;
                double dot = 0.0, pc_norm = sqrt(fmax(rmtl_bal_inner(G, c, c, K), 0.0));
                double g_norm = sqrt(G[j * K + j]);
                for (int l = 0; l < K; l++) {
                    dot += c[l] * gj[l];
                }
                double rho = dot / (pc_norm * g_norm + 1e-8);
                if (rho < *T) {
                    double off = sqrt(fmax(1.0 - *T * *T, 0.0));
                    c[j] += pc_norm * (*T * sqrt(fmax(1.0 - rho * rho, 0.0)) - rho * off) /
                            (g_norm * off + 1e-8);
                }
                *T = (1.0 - beta) * *T + beta * rho;
            }
        }
    }
    /* the direction of each group: sum_l (sum_i coef_il) g_l over the group's columns */
    from = 0;
    for (int g = 0; g < groups; g++) {
        int64_t len = groups == 1 ? b->P : b->segments[g];
        double w[RMTL_MAX_TASKS];
        for (int l = 0; l < K; l++) {
            w[l] = 0.0;
            for (int i = 0; i < K; i++) {
                w[l] += coef[g * KK + i * K + l];
            }
        }
        rmtl_bal_combine_span(dir, w, jac, K, b->P, from, len);
        if (groups == 1) {
            for (int l = 0; l < K; l++) {
                b->weights[l] = w[l];
            }
        }
        from += len;
    }
    b->has_weights = groups == 1;
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_gradvac = {
    .name = "gradvac",
    .family = RMTL_BAL_GRADIENTS,
    .samples = 1,
    .hyper = {{.name = "beta", .value = 0.5, .low = 0.0, .high = 1.0},
              {.name = "group_type", .value = 0.0, .low = 0.0, .high = 2.0, .integer = 1}},
    .sizes = rmtl_bal_gradvac_sizes,
    .direction = rmtl_bal_gradvac_direction};

/* ---- graddrop: gradient sign dropout (Chen et al., "Just Pick a Sign: Optimizing Deep
   Multitask Models with Gradient Sign Dropout", NeurIPS 2020). For each element x of the
   representation, the positive sign purity P_x = (1 + sum_k J_kx / (sum_k |J_kx| + 1e-7)) / 2
   and one uniform draw U_x (rmtl_bal_uniform at index x): task k's gradient passes when
   P_x > U_x and J_kx > 0, or P_x < U_x and J_kx < 0; the output is
   sum_k J_kx (leak + (1 - leak) M_kx). With leak 0 every element keeps gradients of one sign.
   What the Jacobian holds: column x is one feature of the representation (LibMTL's rep_grad:
   the gradients of the task losses with respect to the shared representation the towers read),
   and the direction is the gradient to send back into the shared bottom. Training in the
   representation space pools the batch rows of one feature as LibMTL does (J_kx sums task k's
   per-row gradients times the sign of the representation's value) and sends each row's
   gradients down multiplied by leak + (1 - leak) M_kx (b->mult). On any other Jacobian every
   column is its own feature: torchjd's GradDrop (per column, no 1e-7). No weights (LibMTL
   returns None), no state. */

typedef struct {
    float *dir, *mult;
    const float *jac;
    uint64_t key; /* the step's draws (rmtl_bal_key) */
    double leak;
    int K;
    int64_t P;
} rmtl_bal_graddrop_args;

/* columns [lo, hi): each its own draw (rmtl_bal_uniform at its index), so any split of the
   columns gives the same bits; in tiles of columns, each pass a loop over the tile that the
   compiler vectorises (every column sums its tasks in task order, as one loop per column) */
RMTL_CLONES static void rmtl_bal_graddrop_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_bal_graddrop_args a = *(const rmtl_bal_graddrop_args *)ctx;
    enum { TILE = 256 };
    /* u: the draws, then the multipliers of one task */
    double sum[TILE], size[TILE], purity[TILE], u[2 * TILE], acc[TILE];
    for (int64_t x0 = lo; x0 < hi; x0 += TILE) {
        int n = hi - x0 < TILE ? (int)(hi - x0) : TILE;
        for (int t = 0; t < n; t++) {
            sum[t] = size[t] = acc[t] = 0.0;
        }
        for (int k = 0; k < a.K; k++) {
            const float *row = a.jac + (size_t)k * a.P + x0;
            for (int t = 0; t < n; t++) {
                double v = row[t];
                sum[t] += v;
                size[t] += fabs(v);
            }
        }
        for (int t = 0; t < n; t++) {
            purity[t] = 0.5 * (1.0 + sum[t] / (size[t] + 1e-7));
            u[t] = rmtl_bal_uniform_at(a.key, x0 + t);
        }
        for (int k = 0; k < a.K; k++) {
            const float *row = a.jac + (size_t)k * a.P + x0;
            float *mult = a.mult != NULL ? a.mult + (size_t)k * a.P + x0 : NULL;
            for (int t = 0; t < n; t++) {
                double v = row[t];
                int keep = ((purity[t] > u[t]) & (v > 0.0)) | ((purity[t] < u[t]) & (v < 0.0));
                double m = a.leak + (1.0 - a.leak) * keep;
                acc[t] += v * m;
                u[TILE + t] = m;
            }
            for (int t = 0; mult != NULL && t < n; t++) {
                mult[t] = (float)u[TILE + t];
            }
        }
        for (int t = 0; t < n; t++) {
            a.dir[x0 + t] = (float)acc[t];
        }
    }
}

static int rmtl_bal_graddrop_direction(rmtl_balancer *b, float *dir, const float *losses,
                                       const float *jac) {
    (void)losses;
    rmtl_bal_graddrop_args a = {dir, b->mult, jac, rmtl_bal_key(b), b->h[0], b->K, b->P};
    rmtl_parallel_for(b->P, RMTL_GRAIN_COMPUTE / b->K, rmtl_bal_graddrop_range, &a);
    b->has_weights = 0;
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_graddrop = {
    .name = "graddrop",
    .family = RMTL_BAL_GRADIENTS,
    .rep = RMTL_BAL_REP_MULT,
    .samples = 1,
    .hyper = {{.name = "leak", .value = 0.0, .low = 0.0, .high = 1.0}},
    .direction = rmtl_bal_graddrop_direction};

/* ---- aligned_mtl: Aligned-MTL (Senushkin et al., "Independent Component Alignment for
   Multi-Task Learning", CVPR 2023). The Gram matrix M = J J^T = V diag(lambda) V^T; keeping the
   eigenpairs with lambda > max(lambda) K eps (eps of float32, as LibMTL's torch.finfo()), the
   balance transformation B = sqrt(lambda_min) V diag(1 / sqrt(lambda)) V^T makes the combined
   gradients J^T B orthogonal with equal norms (the condition number of the system is 1), and
   the weights are alpha = B 1 (column sums of B); the direction is sum_k alpha_k g_k and
   b->weights = alpha. LibMTL repository's form (Aligned_MTL, which calls the removed
   torch.symeig); the eigen-decomposition here is a cyclic Jacobi solver on the K x K Gram
   matrix. Scale: LibMTL's alpha = B 1; torchjd's AlignedMTL (default mean preference) returns
   B 1 / K, so this direction is K times torchjd's. Where every eigenvalue is at most the
   tolerance (all gradients zero) LibMTL fails; here alpha = 1 (torchjd's identity transform
   times K). No state. */

/* eigenvalues lam (n) and eigenvectors V (n,n), column i for lam[i], of the symmetric matrix A
   (n,n), overwritten, by cyclic Jacobi rotations until the off-diagonal part is negligible */
static void rmtl_bal_jacobi(double *lam, double *V, double *A, int n) {
    for (int i = 0; i < n * n; i++) {
        V[i] = i / n == i % n ? 1.0 : 0.0;
    }
    for (int sweep = 0; sweep < 64; sweep++) {
        double off = 0.0, diag = 0.0;
        for (int p = 0; p < n; p++) {
            diag += A[p * n + p] * A[p * n + p];
            for (int q = p + 1; q < n; q++) {
                off += A[p * n + q] * A[p * n + q];
            }
        }
        if (!(off > DBL_EPSILON * DBL_EPSILON * 1e-4 * diag)) {
            break;
        }
        for (int p = 0; p < n; p++) {
            for (int q = p + 1; q < n; q++) {
                double apq = A[p * n + q];
                if (apq == 0.0) {
                    continue;
                }
                /* the rotation by angle phi with t = tan(phi) the smaller root of
                   t^2 + 2 theta t - 1 = 0 zeroes A[p][q] */
                double theta = (A[q * n + q] - A[p * n + p]) / (2.0 * apq);
                double t = fabs(theta) > 1e150 ? 0.5 / theta
                                               : (theta >= 0.0 ? 1.0 : -1.0) /
                                                     (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) {
                    double x = A[p * n + k], y = A[q * n + k];
                    A[p * n + k] = c * x - s * y;
                    A[q * n + k] = s * x + c * y;
                }
                for (int k = 0; k < n; k++) {
                    double x = A[k * n + p], y = A[k * n + q];
                    A[k * n + p] = c * x - s * y;
                    A[k * n + q] = s * x + c * y;
                    x = V[k * n + p];
                    y = V[k * n + q];
                    V[k * n + p] = c * x - s * y;
                    V[k * n + q] = s * x + c * y;
                }
            }
        }
    }
    for (int i = 0; i < n; i++) {
        lam[i] = A[i * n + i];
    }
}

static int rmtl_bal_aligned_mtl_direction(rmtl_balancer *b, float *dir, const float *losses,
                                          const float *jac) {
    (void)losses;
    int K = b->K, rank = 0, keep[RMTL_MAX_TASKS];
    double M[RMTL_MAX_TASKS * RMTL_MAX_TASKS], V[RMTL_MAX_TASKS * RMTL_MAX_TASKS];
    double lam[RMTL_MAX_TASKS], top = -INFINITY, low = INFINITY;
    rmtl_bal_gram(M, jac, K, b->P);
    rmtl_bal_jacobi(lam, V, M, K);
    for (int k = 0; k < K; k++) {
        top = lam[k] > top ? lam[k] : top;
    }
    double tol = top * K * (double)FLT_EPSILON;
    for (int k = 0; k < K; k++) {
        if (lam[k] > tol) {
            keep[rank++] = k;
            low = lam[k] < low ? lam[k] : low;
        }
    }
    for (int a = 0; a < K; a++) {
        /* alpha_a = sum_c B[c][a] = sqrt(low) sum_r V[a][r] (sum_c V[c][r]) / sqrt(lam_r) */
        double acc = 0.0;
        for (int r = 0; r < rank; r++) {
            double column = 0.0;
            for (int c = 0; c < K; c++) {
                column += V[c * K + keep[r]];
            }
            acc += V[a * K + keep[r]] * column / sqrt(lam[keep[r]]);
        }
        b->weights[a] = rank == 0 ? 1.0 : sqrt(low) * acc;
    }
    b->has_weights = 1;
    rmtl_bal_combine_coef(b, dir, b->weights, jac);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_aligned_mtl = {.name = "aligned_mtl",
                                                   .rep = RMTL_BAL_REP_COEF,
                                                   .family = RMTL_BAL_GRADIENTS,
                                                   .samples = 1,
                                                   .direction = rmtl_bal_aligned_mtl_direction};

/* ---- moco: MoCo (Fernando et al., "Mitigating Gradient Bias in Multi-objective Learning: A
   Provably Convergent Approach", ICLR 2023). LibMTL repository's form (MoCo): at step t
   (1-based), each gradient is rescaled to its loss, h_k = L_k g_k / (|g_k| + 1e-8); the tracking
   variables follow y_k -= beta / t^beta_sigma (y_k - h_k); the weights take one softmax step
   lambda = softmax(lambda - gamma / t^gamma_sigma (Y Y^T + rho I) lambda); the direction is
   Y^T lambda = sum_k lambda_k y_k (not a combination of this step's gradients) and b->weights =
   lambda. State: y (K, P) from zeros, then lambda (K) from 1/K. */

static void rmtl_bal_moco_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = (int64_t)b->K * b->P + b->K;
    *n_work = 0;
}

static void rmtl_bal_moco_init(rmtl_balancer *b) {
    for (int k = 0; k < b->K; k++) {
        b->state[(int64_t)b->K * b->P + k] = 1.0 / b->K;
    }
}

static int rmtl_bal_moco_direction(rmtl_balancer *b, float *dir, const float *losses,
                                   const float *jac) {
    int K = b->K;
    int64_t P = b->P;
    double *y = b->state, *lambda = b->state + (int64_t)K * P, t = (double)b->steps + 1.0;
    double rate_y = b->h[0] / pow(t, b->h[1]), rate_l = b->h[2] / pow(t, b->h[3]);
    double A[RMTL_MAX_TASKS * RMTL_MAX_TASKS], z[RMTL_MAX_TASKS] = {0.0};
    for (int k = 0; k < K; k++) {
        const float *g = jac + (size_t)k * P;
        double *yk = y + (size_t)k * P, scale = (double)losses[k] / (rmtl_bal_norm2(g, P) + 1e-8);
        for (int64_t x = 0; x < P; x++) {
            yk[x] -= rate_y * (yk[x] - scale * g[x]);
        }
    }
    for (int a = 0; a < K; a++) {
        for (int c = 0; c <= a; c++) {
            const double *ya = y + (size_t)a * P, *yc = y + (size_t)c * P;
            double acc = 0.0;
            for (int64_t x = 0; x < P; x++) {
                acc += ya[x] * yc[x];
            }
            A[a * K + c] = A[c * K + a] = acc;
        }
        A[a * K + a] += b->h[4];
    }
    for (int a = 0; a < K; a++) {
        double acc = 0.0;
        for (int c = 0; c < K; c++) {
            acc += A[a * K + c] * lambda[c];
        }
        z[a] = lambda[a] - rate_l * acc;
    }
    rmtl_bal_softmax(lambda, z, K);
    rmtl_bal_combine_rows(dir, lambda, y, K, P);
    for (int k = 0; k < K; k++) {
        b->weights[k] = lambda[k];
    }
    b->has_weights = 1;
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_moco = {
    .name = "moco",
    .family = RMTL_BAL_GRADIENTS,
    .samples = 1,
    .hyper = {{.name = "beta", .value = 0.5, .low = 0.0, .high = 1.0},
              {.name = "beta_sigma", .value = 0.5, .low = 0.0, .high = INFINITY, .open_high = 1},
              {.name = "gamma", .value = 0.1, .low = 0.0, .high = INFINITY, .open_high = 1},
              {.name = "gamma_sigma", .value = 0.5, .low = 0.0, .high = INFINITY, .open_high = 1},
              {.name = "rho", .value = 0.0, .low = 0.0, .high = INFINITY, .open_high = 1}},
    .sizes = rmtl_bal_moco_sizes,
    .init = rmtl_bal_moco_init,
    .direction = rmtl_bal_moco_direction};

const rmtl_bal_spec *const rmtl_bal_project_family[] = {&rmtl_bal_mgda,
                                                        &rmtl_bal_pcgrad,
                                                        &rmtl_bal_gradvac,
                                                        &rmtl_bal_graddrop,
                                                        &rmtl_bal_aligned_mtl,
                                                        &rmtl_bal_moco,
                                                        NULL};
