/* Balancers that solve a small problem over the K task weights at every step (balancers.h):
   cagrad, nash_mtl, upgrad, fairgrad, modo and sdmgrad. LibMTL calls scipy, cvxpy (ECOS) and
   quadprog for these problems; here each has a small dense solver of its own in double
   (Cholesky, an active-set method, Newton and barrier iterations), exact to about 1e-12 where
   the reference stops at its solver's tolerance (stated per balancer). K <= RMTL_MAX_TASKS, so
   every K-sized buffer lives on the stack; the only passes over the P gradient entries are the
   Gram matrices and the final combination. */
#include <math.h>

#include "balancers.h"

#define RMTL_SOLVE_KK (RMTL_MAX_TASKS * RMTL_MAX_TASKS)

/* ---- dense helpers */

/* Cholesky factor L (n,n, lower) of A + ridge I for symmetric A (n,n); 0, or -1 when that is
   not positive definite */
static int rmtl_solve_chol_at(double *L, const double *A, int n, double ridge) {
    for (int i = 0; i < n; i++) {
        for (int j = 0; j <= i; j++) {
            double s = A[i * n + j] + (i == j ? ridge : 0.0);
            for (int k = 0; k < j; k++) {
                s -= L[i * n + k] * L[j * n + k];
            }
            if (i == j) {
                if (!(s > 0.0) || !isfinite(s)) {
                    return -1;
                }
                L[i * n + i] = sqrt(s);
            } else {
                L[i * n + j] = s / L[j * n + j];
            }
        }
    }
    return 0;
}

/* Cholesky factor L of A (n,n), adding the smallest ridge 1e-14 * 100^r * (largest diagonal
   entry) that makes it positive definite when A is not (a singular Gram matrix) */
static void rmtl_solve_chol(double *L, const double *A, int n) {
    double scale = 0.0;
    for (int i = 0; i < n; i++) {
        scale = fmax(scale, fabs(A[i * n + i]));
    }
    scale = scale > 0.0 && isfinite(scale) ? scale : 1.0;
    double ridge = 0.0;
    while (rmtl_solve_chol_at(L, A, n, ridge) < 0 && ridge < scale) {
        ridge = ridge == 0.0 ? 1e-14 * scale : 100.0 * ridge;
    }
}

/* x (n) = (L L^T)^-1 x in place */
static void rmtl_solve_chol_apply(const double *L, double *x, int n) {
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < i; k++) {
            x[i] -= L[i * n + k] * x[k];
        }
        x[i] /= L[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        for (int k = i + 1; k < n; k++) {
            x[i] -= L[k * n + i] * x[k];
        }
        x[i] /= L[i * n + i];
    }
}

/* y (n) = A x for A (n,n) */
static void rmtl_solve_matvec(double *y, const double *A, const double *x, int n) {
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int j = 0; j < n; j++) {
            s += A[i * n + j] * x[j];
        }
        y[i] = s;
    }
}

/* the Euclidean projection x (n) of y (n) on the simplex {x >= 0, sum x = 1} (x may be y): the
   threshold from the sorted values (LibMTL's _projection2simplex and euclidean_proj_simplex) */
static void rmtl_solve_simplex(double *x, const double *y, int n) {
    double u[RMTL_MAX_TASKS], sum = 0.0, theta = 0.0;
    for (int i = 0; i < n; i++) {
        int j = i;
        for (; j > 0 && u[j - 1] < y[i]; j--) {
            u[j] = u[j - 1];
        }
        u[j] = y[i];
    }
    for (int i = 0; i < n; i++) {
        sum += u[i];
        double t = (sum - 1.0) / (double)(i + 1);
        if (u[i] - t > 0.0) {
            theta = t;
        }
    }
    for (int i = 0; i < n; i++) {
        x[i] = fmax(y[i] - theta, 0.0);
    }
}

/* M (K,K) = x y^T for x, y (K,P): M[a][c] = x_a . y_c in double */
static void rmtl_solve_cross(double *M, const float *x, const float *y, int K, int64_t P) {
    for (int a = 0; a < K; a++) {
        for (int c = 0; c < K; c++) {
            const float *u = x + (size_t)a * P, *v = y + (size_t)c * P;
            double acc = 0.0;
            for (int64_t j = 0; j < P; j++) {
                acc += (double)u[j] * v[j];
            }
            M[a * K + c] = acc;
        }
    }
}

/* the norm of sum_k w_k g_k over the P entries in double (jac (K,P)) */
static double rmtl_solve_combined_norm(const double *w, const float *jac, int K, int64_t P) {
    double s = 0.0;
    for (int64_t j = 0; j < P; j++) {
        double acc = 0.0;
        for (int k = 0; k < K; k++) {
            acc += w[k] * jac[(size_t)k * P + j];
        }
        s += acc * acc;
    }
    return sqrt(s);
}

/* The non-negative quadratic program min_z 1/2 z^T G z + q^T z subject to z >= 0 (G (n,n)
   positive semi-definite), by Lawson and Hanson's active-set method: exact up to rounding
   after at most a few passes per index. */
static void rmtl_solve_qp_nonneg(double *z, const double *G, const double *q, int n) {
    double L[RMTL_SOLVE_KK], S[RMTL_SOLVE_KK], y[RMTL_MAX_TASKS], r[RMTL_MAX_TASKS];
    int free_[RMTL_MAX_TASKS], idx[RMTL_MAX_TASKS];
    double scale = 0.0;
    for (int i = 0; i < n; i++) {
        z[i] = 0.0;
        free_[i] = 0;
        scale = fmax(scale, fmax(fabs(q[i]), fabs(G[i * n + i])));
    }
    double tol = 1e-13 * (scale > 0.0 ? scale : 1.0);
    for (int outer = 0; outer < 8 * n + 8; outer++) {
        /* the gradient r = G z + q: the multipliers of the indices held at zero */
        rmtl_solve_matvec(r, G, z, n);
        int enter = -1;
        for (int i = 0; i < n; i++) {
            r[i] += q[i];
            if (!free_[i] && r[i] < -tol && (enter < 0 || r[i] < r[enter])) {
                enter = i;
            }
        }
        if (enter < 0) {
            return;
        }
        free_[enter] = 1;
        for (int inner = 0; inner < n + 1; inner++) {
            /* y: the minimiser over the free indices with the others at zero */
            int m = 0;
            for (int i = 0; i < n; i++) {
                if (free_[i]) {
                    idx[m++] = i;
                }
            }
            for (int a = 0; a < m; a++) {
                for (int c = 0; c < m; c++) {
                    S[a * m + c] = G[idx[a] * n + idx[c]];
                }
                y[a] = -q[idx[a]];
            }
            rmtl_solve_chol(L, S, m);
            rmtl_solve_chol_apply(L, y, m);
            /* step towards y until a free index reaches zero (it leaves the free set) */
            double step = 1.0;
            int block = -1;
            for (int a = 0; a < m; a++) {
                double zi = z[idx[a]];
                if (y[a] <= 0.0 && zi / (zi - y[a]) < step) {
                    step = zi / (zi - y[a]);
                    block = idx[a];
                }
            }
            for (int a = 0; a < m; a++) {
                int i = idx[a];
                z[i] += step * (y[a] - z[i]);
                if (i == block || (step < 1.0 && z[i] <= 0.0)) {
                    z[i] = 0.0;
                    free_[i] = 0;
                }
            }
            if (step >= 1.0) {
                break;
            }
        }
    }
}

/* ---- cagrad: Conflict-Averse Gradient descent (Liu et al., NeurIPS 2021). LibMTL's form
   (CAGrad.backward): with the Gram matrix A of the task gradients, b = 1/K and
   c = calpha sqrt(mean(A) + 1e-8) + 1e-8, the weights w minimise
   w^T A b + c sqrt(w^T A w + 1e-8) over the simplex; with g_w = sum_k w_k g_k the direction is
   (mean_k g_k + c g_w / (|g_w| + 1e-8)) / r, r = 1, 1 + calpha^2 or 1 + calpha for rescale 0, 1,
   2. LibMTL returns w. No state.

   Deviation: LibMTL solves for w with scipy's SLSQP at its default tolerance (ftol 1e-6 on the
   objective, about 1e-4 on w when the optimum is inside a face); here an active-set Newton
   method solves it to about 1e-12, so directions agree to SLSQP's precision, not to float
   rounding. (LibMTL 1.1.5's CAGrad reshapes to 3 tasks and runs only for K = 3; the
   repository's runs for any K.) */

/* CAGrad's objective f(w) = a.w + c sqrt(w^T A w + 1e-8) */
static double rmtl_cagrad_f(const double *w, const double *A, const double *a, double c, int K) {
    double Aw[RMTL_MAX_TASKS], lin = 0.0, quad = 0.0;
    rmtl_solve_matvec(Aw, A, w, K);
    for (int k = 0; k < K; k++) {
        lin += a[k] * w[k];
        quad += w[k] * Aw[k];
    }
    return lin + c * sqrt(fmax(quad, 0.0) + 1e-8);
}

/* the minimiser w (K) of CAGrad's objective over the simplex: Newton steps within the face of
   the free weights (the others at zero) with a backtracking line search that stops at the face's
   border, freeing a zero weight whose multiplier is negative once the face's optimum is reached */
static void rmtl_cagrad_solve(double *w, const double *A, double c, int K) {
    double a[RMTL_MAX_TASKS], g[RMTL_MAX_TASKS], Aw[RMTL_MAX_TASKS], d[RMTL_MAX_TASKS];
    double H[RMTL_SOLVE_KK], R[RMTL_SOLVE_KK], L[RMTL_SOLVE_KK], y[RMTL_MAX_TASKS];
    double trial[RMTL_MAX_TASKS];
    int free_[RMTL_MAX_TASKS], stuck[RMTL_MAX_TASKS], idx[RMTL_MAX_TASKS];
    for (int k = 0; k < K; k++) {
        double s = 0.0;
        stuck[k] = 0;
        for (int j = 0; j < K; j++) {
            s += A[k * K + j];
        }
        a[k] = s / K;
        w[k] = 1.0 / K;
        free_[k] = 1;
    }
    int face_iters = 0;
    for (int it = 0; it < 400; it++) {
        rmtl_solve_matvec(Aw, A, w, K);
        double quad = 0.0, gmax = 0.0;
        for (int k = 0; k < K; k++) {
            quad += w[k] * Aw[k];
        }
        double s = sqrt(fmax(quad, 0.0) + 1e-8);
        for (int k = 0; k < K; k++) {
            g[k] = a[k] + c * Aw[k] / s;
            gmax = fmax(gmax, fabs(g[k]));
        }
        int m = 0;
        for (int k = 0; k < K; k++) {
            if (free_[k]) {
                idx[m++] = k;
            }
        }
        /* the Newton step d on the face: minimise g.d + d^T H d / 2 with sum d = 0, H the Hessian
           c (A / s - A w w^T A / s^3) (singular along w). In the basis d = Z y of the face
           (d_p = y_p for the first m - 1 free weights, the last -sum y) the reduced Hessian
           Z^T H Z is positive definite; nu, the multiplier of sum w = 1, is the mean of
           g + H d over the free weights. */
        double nu = 0.0, dmax = 0.0, dec = 0.0;
        for (int k = 0; k < K; k++) {
            d[k] = 0.0;
        }
        for (int p = 0; p < m; p++) {
            for (int q = 0; q < m; q++) {
                int i = idx[p], j = idx[q];
                H[p * m + q] = c * (A[i * K + j] / s - Aw[i] * Aw[j] / (s * s * s));
            }
        }
        if (m >= 2) {
            int n = m - 1, l = m - 1;
            for (int p = 0; p < n; p++) {
                for (int q = 0; q < n; q++) {
                    R[p * n + q] = H[p * m + q] - H[p * m + l] - H[l * m + q] + H[l * m + l];
                }
                y[p] = -(g[idx[p]] - g[idx[l]]);
            }
            rmtl_solve_chol(L, R, n);
            rmtl_solve_chol_apply(L, y, n);
            d[idx[l]] = 0.0;
            for (int p = 0; p < n; p++) {
                d[idx[p]] = y[p];
                d[idx[l]] -= y[p];
            }
            for (int p = 0; p < m; p++) {
                dmax = fmax(dmax, fabs(d[idx[p]]));
                dec -= g[idx[p]] * d[idx[p]];
            }
        }
        for (int p = 0; p < m; p++) {
            double Hd = 0.0;
            for (int q = 0; q < m; q++) {
                Hd += H[p * m + q] * d[idx[q]];
            }
            nu += (g[idx[p]] + Hd) / m;
        }
        double t = 0.0;
        if (dmax > 1e-13 && dec > 0.0 && face_iters < 60) {
            /* the longest step inside the simplex, then backtracking (Armijo) */
            double t_max = 1.0, f0 = rmtl_cagrad_f(w, A, a, c, K);
            int block = -1;
            for (int p = 0; p < m; p++) {
                int i = idx[p];
                if (d[i] < 0.0 && -w[i] / d[i] < t_max) {
                    t_max = -w[i] / d[i];
                    block = i;
                }
            }
            if (block >= 0 && t_max * dmax <= 1e-15) {
                /* a free weight already at zero blocks the step: it leaves the face (and is not
                   freed again before a step moves w, which would cycle) */
                w[block] = 0.0;
                free_[block] = 0;
                stuck[block] = 1;
                face_iters = 0;
                continue;
            }
            for (t = t_max; t * dmax > 1e-15; t *= 0.5) {
                for (int k = 0; k < K; k++) {
                    trial[k] = w[k] + t * d[k];
                }
                /* Armijo, or a full step too small for f to show its decrease */
                double f = rmtl_cagrad_f(trial, A, a, c, K);
                if (f <= f0 - 1e-4 * t * dec ||
                    (t == 1.0 && dec <= 1e-10 * fabs(f0) && f <= f0 + 1e-13 * fabs(f0))) {
                    break;
                }
            }
            if (t * dmax > 1e-15) {
                for (int k = 0; k < K; k++) {
                    w[k] = trial[k];
                    stuck[k] = 0;
                }
                if (t == t_max && block >= 0) {
                    w[block] = 0.0;
                    free_[block] = 0;
                    face_iters = 0;
                } else {
                    face_iters++;
                }
                for (int k = 0; k < K; k++) {
                    w[k] = fmax(w[k], 0.0);
                }
                continue;
            }
        }
        /* the face's optimum: free the zero weight with the most negative multiplier g_j - nu */
        int enter = -1;
        for (int k = 0; k < K; k++) {
            if (!free_[k] && !stuck[k] && g[k] - nu < -1e-12 * gmax &&
                (enter < 0 || g[k] < g[enter])) {
                enter = k;
            }
        }
        if (enter < 0) {
            break;
        }
        free_[enter] = 1;
        face_iters = 0;
    }
    double sum = 0.0;
    for (int k = 0; k < K; k++) {
        sum += w[k];
    }
    for (int k = 0; k < K; k++) {
        w[k] /= sum;
    }
}

static int rmtl_bal_cagrad_direction(rmtl_balancer *b, float *dir, const float *losses,
                                     const float *jac) {
    (void)losses;
    int K = b->K;
    double calpha = b->h[0], A[RMTL_SOLVE_KK], v[RMTL_MAX_TASKS], mean = 0.0;
    rmtl_bal_gram(A, jac, K, b->P);
    for (int i = 0; i < K * K; i++) {
        mean += A[i];
    }
    mean /= (double)(K * K);
    double c = calpha * sqrt(mean + 1e-8) + 1e-8;
    rmtl_cagrad_solve(b->weights, A, c, K);
    b->has_weights = 1;
    double gw_norm = rmtl_solve_combined_norm(b->weights, jac, K, b->P);
    double lmbda = c / (gw_norm + 1e-8);
    int rescale = (int)b->h[1];
    double r = rescale == 0 ? 1.0 : rescale == 1 ? 1.0 + calpha * calpha : 1.0 + calpha;
    for (int k = 0; k < K; k++) {
        v[k] = (1.0 / K + lmbda * b->weights[k]) / r;
    }
    rmtl_bal_combine(dir, v, jac, K, b->P);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_cagrad = {
    .name = "cagrad",
    .family = RMTL_BAL_GRADIENTS,
    .samples = 1,
    .hyper = {{"calpha", 0.5, 0.0, INFINITY, 0, 1, 0, NULL}, {"rescale", 1, 0, 2, 0, 0, 1, NULL}},
    .direction = rmtl_bal_cagrad_direction};

/* ---- nash_mtl: Multi-Task Learning as a Bargaining Game (Navon et al., ICML 2022). LibMTL's
   form (Nash_MTL, from the authors' code): every update_weights_every steps, with the Gram matrix
   G of the task gradients, n = |G|_F and Gn = G / n, it runs up to optim_niter convex problems
   from the previous weights p (1 at the start):
       minimise  sum(Gn a) + phi'(p).(a - p) / n,  phi'(p) = 1/p + Gn (1 / (Gn p)),
       subject to  log(a_i n) + log((Gn a)_i) >= 0  for every task i  (so a >= 0, Gn a > 0),
   stopping (and keeping p) when the problem fails, |Gn p - 1/(p + 1e-10)| < 1e-3 or
   |a - p| < 1e-6, else p = a. The direction is sum_k p_k g_k, clipped as torch's
   clip_grad_norm_(max_norm) clips the shared gradient (times max_norm / (|d| + 1e-6) when below
   1; max_norm 0: no clipping); LibMTL returns p. State: p (K).

   Deviation: LibMTL solves each problem with cvxpy's ECOS (tolerances 1e-8); here a log-barrier
   Newton method solves it to a duality gap of 1e-12 relative, from a strictly feasible start
   (p scaled, else the point a > 0 with Gn a >= 1/2 from a non-negative QP). A problem without a
   strictly feasible point or with an unbounded objective counts as failed, where ECOS reports
   it infeasible or unbounded. */

/* the log-barrier of the constraints h_i(x) = log(x_i) + log((G x)_i) + log(n) > 0 at x: h (K),
   Gx (K); 0 inside the domain, -1 outside */
static int rmtl_nash_constraints(double *h, double *Gx, const double *G, const double *x,
                                 double logn, int K) {
    rmtl_solve_matvec(Gx, G, x, K);
    for (int i = 0; i < K; i++) {
        if (!(x[i] > 0.0) || !(Gx[i] > 0.0)) {
            return -1;
        }
        h[i] = log(x[i]) + log(Gx[i]) + logn;
        if (!(h[i] > 0.0) || !isfinite(h[i])) {
            return -1;
        }
    }
    return 0;
}

/* one of Nash-MTL's convex problems (above) from weights p: the solution x (K); 0, or -1 when it
   has no strictly feasible point, its objective is unbounded or p is unusable */
static int rmtl_nash_solve(double *x, const double *G, double n, const double *p, int K) {
    double cost[RMTL_MAX_TASKS], Gp[RMTL_MAX_TASKS], h[RMTL_MAX_TASKS], Gx[RMTL_MAX_TASKS];
    double grad[RMTL_MAX_TASKS], dh[RMTL_MAX_TASKS], dx[RMTL_MAX_TASKS];
    double trial[RMTL_MAX_TASKS], th[RMTL_MAX_TASKS], tGx[RMTL_MAX_TASKS];
    double H[RMTL_SOLVE_KK], L[RMTL_SOLVE_KK];
    double logn = log(n);
    rmtl_solve_matvec(Gp, G, p, K);
    for (int i = 0; i < K; i++) {
        if (p[i] == 0.0 || Gp[i] == 0.0 || !isfinite(p[i])) {
            return -1;
        }
    }
    /* the cost c = Gn 1 + phi'(p) / n (the constant -phi'(p).p / n dropped) */
    for (int j = 0; j < K; j++) {
        double row = 0.0, tag = 1.0 / p[j];
        for (int i = 0; i < K; i++) {
            row += G[i * K + j];
            tag += G[i * K + j] / Gp[i];
        }
        cost[j] = row + tag / n;
    }
    /* a strictly feasible start: p, else z + 1/(2 max|Gn 1|) for the z >= 0 minimising
       z^T Gn z / 2 - sum z (so Gn z >= 1); then scaled so that min_i h_i = 1 */
    int inside = 1;
    for (int i = 0; i < K; i++) {
        x[i] = p[i];
        inside = inside && p[i] > 0.0 && Gp[i] > 0.0;
    }
    if (!inside) {
        double minus1[RMTL_MAX_TASKS], rowmax = 0.0;
        for (int i = 0; i < K; i++) {
            double row = 0.0;
            for (int j = 0; j < K; j++) {
                row += G[i * K + j];
            }
            rowmax = fmax(rowmax, fabs(row));
            minus1[i] = -1.0;
        }
        rmtl_solve_qp_nonneg(x, G, minus1, K);
        for (int i = 0; i < K; i++) {
            x[i] += 0.5 / fmax(rowmax, 1.0);
        }
    }
    rmtl_solve_matvec(Gx, G, x, K);
    double hmin = INFINITY;
    for (int i = 0; i < K; i++) {
        if (!(x[i] > 0.0) || !(Gx[i] > 0.0) || !isfinite(x[i])) {
            return -1;
        }
        hmin = fmin(hmin, log(x[i]) + log(Gx[i]) + logn);
    }
    double grow = exp((1.0 - hmin) / 2.0);
    for (int i = 0; i < K; i++) {
        x[i] *= grow;
    }
    /* the barrier path: minimise t c.x - sum_i log h_i(x) by Newton for t growing 10 times
       until the duality gap K / t is below 1e-12 |c.x| */
    double cx = 0.0;
    for (int i = 0; i < K; i++) {
        cx += cost[i] * x[i];
    }
    double t = (double)K / fmax(fabs(cx), 1e-12);
    for (int outer = 0; outer < 60; outer++) {
        for (int newton = 0; newton < 80; newton++) {
            if (rmtl_nash_constraints(h, Gx, G, x, logn, K) < 0) {
                return -1;
            }
            /* gradient t c - sum_i dh_i / h_i, Hessian sum_i dh_i dh_i^T / h_i^2 +
               (e_i e_i^T / x_i^2 + G_i G_i^T / (G x)_i^2) / h_i with dh_i = e_i / x_i +
               G_i / (G x)_i */
            for (int j = 0; j < K; j++) {
                grad[j] = t * cost[j];
                for (int k = 0; k < K; k++) {
                    H[j * K + k] = 0.0;
                }
            }
            for (int i = 0; i < K; i++) {
                for (int j = 0; j < K; j++) {
                    dh[j] = G[i * K + j] / Gx[i] + (j == i ? 1.0 / x[i] : 0.0);
                    grad[j] -= dh[j] / h[i];
                }
                for (int j = 0; j < K; j++) {
                    for (int k = 0; k < K; k++) {
                        H[j * K + k] += dh[j] * dh[k] / (h[i] * h[i]) +
                                        G[i * K + j] * G[i * K + k] / (Gx[i] * Gx[i] * h[i]);
                    }
                }
                H[i * K + i] += 1.0 / (x[i] * x[i] * h[i]);
            }
            rmtl_solve_chol(L, H, K);
            double lam2 = 0.0, cdx = 0.0;
            for (int j = 0; j < K; j++) {
                dx[j] = -grad[j];
            }
            rmtl_solve_chol_apply(L, dx, K);
            for (int j = 0; j < K; j++) {
                lam2 -= grad[j] * dx[j];
                cdx += cost[j] * dx[j];
            }
            if (!(lam2 > 1e-20)) {
                break;
            }
            /* backtracking inside the domain; the change of the barrier function is summed
               from its parts, which stays exact when t c.x is large */
            double s = 1.0;
            for (; s > 1e-14; s *= 0.5) {
                for (int j = 0; j < K; j++) {
                    trial[j] = x[j] + s * dx[j];
                }
                if (rmtl_nash_constraints(th, tGx, G, trial, logn, K) < 0) {
                    continue;
                }
                double change = t * s * cdx;
                for (int i = 0; i < K; i++) {
                    change -= log(th[i] / h[i]);
                }
                if (change <= -0.25 * s * lam2) {
                    break;
                }
            }
            if (s <= 1e-14) {
                break;
            }
            for (int j = 0; j < K; j++) {
                x[j] = trial[j];
            }
        }
        cx = 0.0;
        double xmax = 0.0;
        for (int i = 0; i < K; i++) {
            cx += cost[i] * x[i];
            xmax = fmax(xmax, x[i]);
        }
        if (!(cx > 0.0) || !isfinite(cx) || xmax > 1e100) {
            /* unbounded: the feasible set holds s x for every s >= 1, so a feasible x with
               c.x <= 0 sends the objective to minus infinity */
            return -1;
        }
        if ((double)K / t < 1e-12 * fabs(cx)) {
            break;
        }
        t *= 10.0;
    }
    return 0;
}

/* the sizes of the balancers whose state is K task weights (nash_mtl, modo, sdmgrad) */
static void rmtl_bal_weights_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work) {
    *n_state = b->K;
    *n_work = 0;
}

static int rmtl_bal_nash_mtl_direction(rmtl_balancer *b, float *dir, const float *losses,
                                       const float *jac) {
    (void)losses;
    int K = b->K, every = (int)b->h[0], niter = (int)b->h[1];
    double max_norm = b->h[2], *p = b->state, G[RMTL_SOLVE_KK], v[RMTL_MAX_TASKS];
    if (b->steps % every == 0) {
        rmtl_bal_gram(G, jac, K, b->P);
        double n = 0.0;
        for (int i = 0; i < K * K; i++) {
            n += G[i] * G[i];
        }
        n = sqrt(n);
        if (n > 0.0 && isfinite(n)) {
            for (int i = 0; i < K * K; i++) {
                G[i] /= n;
            }
            double next[RMTL_MAX_TASKS], Gp[RMTL_MAX_TASKS];
            for (int it = 0; it < niter; it++) {
                if (rmtl_nash_solve(next, G, n, p, K) < 0) {
                    break;
                }
                double stop1 = 0.0, stop2 = 0.0;
                rmtl_solve_matvec(Gp, G, p, K);
                for (int k = 0; k < K; k++) {
                    double e = Gp[k] - 1.0 / (p[k] + 1e-10);
                    stop1 += e * e;
                    stop2 += (next[k] - p[k]) * (next[k] - p[k]);
                }
                if (sqrt(stop1) < 1e-3 || sqrt(stop2) < 1e-6) {
                    break;
                }
                for (int k = 0; k < K; k++) {
                    p[k] = next[k];
                }
            }
        }
    }
    for (int k = 0; k < K; k++) {
        /* LibMTL ends with a backward of sum_k alpha_k L_k, then clips only the shared part */
        b->weights[k] = b->tower[k] = v[k] = p[k];
    }
    b->has_weights = 1;
    if (max_norm > 0.0) {
        double coef = max_norm / (rmtl_solve_combined_norm(v, jac, K, b->P) + 1e-6);
        for (int k = 0; coef < 1.0 && k < K; k++) {
            v[k] *= coef;
        }
    }
    rmtl_bal_combine(dir, v, jac, K, b->P);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_nash_mtl = {
    .name = "nash_mtl",
    .family = RMTL_BAL_GRADIENTS,
    .samples = 1,
    .hyper = {{"update_weights_every", 1, 1, 1e9, 0, 0, 1, NULL},
              {"optim_niter", 20, 1, 1e6, 0, 0, 1, NULL},
              {"max_norm", 1.0, 0.0, INFINITY, 0, 1, 0, NULL}},
    .sizes = rmtl_bal_weights_sizes,
    .init = rmtl_bal_init_ones,
    .direction = rmtl_bal_nash_mtl_direction};

/* ---- upgrad: Unconflicting Projection of Gradients (Quinton and Rey, "Jacobian Descent for
   Multi-Objective Optimization", 2024). LibMTL's form (UPGrad, from torchjd): the Gram matrix G
   of the task gradients is divided by its trace (zero when the trace is below norm_eps) and
   reg_eps I is added; for every task i, v_i minimises v^T G v subject to v >= e_i / K (the
   weights of the projection of g_i / K onto the dual cone of the gradients); the weights are
   w = sum_i v_i, the direction sum_k w_k g_k, and LibMTL returns w. No state.

   LibMTL and torchjd solve the K problems with quadprog (an exact active-set method); here the
   substitution v = e_i / K + z gives non-negative QPs in z, solved exactly by Lawson and
   Hanson's active-set method. */

static int rmtl_bal_upgrad_direction(rmtl_balancer *b, float *dir, const float *losses,
                                     const float *jac) {
    (void)losses;
    int K = b->K;
    double G[RMTL_SOLVE_KK], q[RMTL_MAX_TASKS], z[RMTL_MAX_TASKS], trace = 0.0;
    rmtl_bal_gram(G, jac, K, b->P);
    for (int k = 0; k < K; k++) {
        trace += G[k * K + k];
    }
    for (int i = 0; i < K * K; i++) {
        G[i] = trace < b->h[0] ? 0.0 : G[i] / trace;
    }
    for (int k = 0; k < K; k++) {
        G[k * K + k] += b->h[1];
        b->weights[k] = 0.0;
    }
    for (int i = 0; i < K; i++) {
        /* min z^T G z / 2 + (G u)^T z over z >= 0, u = e_i / K; v = u + z */
        for (int k = 0; k < K; k++) {
            q[k] = G[k * K + i] / K;
        }
        rmtl_solve_qp_nonneg(z, G, q, K);
        for (int k = 0; k < K; k++) {
            b->weights[k] += z[k] + (k == i ? 1.0 / K : 0.0);
        }
    }
    b->has_weights = 1;
    rmtl_bal_combine(dir, b->weights, jac, K, b->P);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_upgrad = {
    .name = "upgrad",
    .family = RMTL_BAL_GRADIENTS,
    .samples = 1,
    .hyper = {{"norm_eps", 1e-4, 0.0, INFINITY, 0, 1, 0, NULL},
              {"reg_eps", 1e-4, 0.0, INFINITY, 0, 1, 0, NULL}},
    .direction = rmtl_bal_upgrad_direction};

/* ---- fairgrad: Fair Resource Allocation in Multi-Task Learning (Ban and Ji, ICML 2024).
   LibMTL's form (FairGrad): the weights w > 0 solve G w = w^(-1/alpha) (G the Gram matrix of the
   task gradients), the direction is sum_k w_k g_k, and LibMTL returns w. No state.

   LibMTL finds the root with scipy's least_squares (trust-region reflective, bounds w >= 0,
   tolerances 1e-8) from w = 1/K; here Newton's method minimises the strictly convex
   F(w) = w^T G w / 2 - sum_k H(w_k), H' (w) = w^(-1/alpha), whose stationary point is that
   root, with a backtracking line search that keeps w > 0, to |dw_k| <= 1e-14 w_k. */

/* sum_k H(w_k): log w for alpha = 1, else w^(1 - 1/alpha) / (1 - 1/alpha) */
static double rmtl_fairgrad_h(double w, double alpha) {
    return alpha == 1.0 ? log(w) : pow(w, 1.0 - 1.0 / alpha) / (1.0 - 1.0 / alpha);
}

static int rmtl_bal_fairgrad_direction(rmtl_balancer *b, float *dir, const float *losses,
                                       const float *jac) {
    (void)losses;
    int K = b->K;
    double alpha = b->h[0], G[RMTL_SOLVE_KK], L[RMTL_SOLVE_KK], J[RMTL_SOLVE_KK] = {0.0};
    double *w = b->weights, Gw[RMTL_MAX_TASKS], r[RMTL_MAX_TASKS], dw[RMTL_MAX_TASKS];
    double trial[RMTL_MAX_TASKS], Gt[RMTL_MAX_TASKS];
    rmtl_bal_gram(G, jac, K, b->P);
    for (int k = 0; k < K; k++) {
        w[k] = 1.0 / K;
    }
    for (int it = 0; it < 200; it++) {
        rmtl_solve_matvec(Gw, G, w, K);
        for (int i = 0; i < K; i++) {
            r[i] = Gw[i] - pow(w[i], -1.0 / alpha);
            for (int j = 0; j < K; j++) {
                J[i * K + j] = G[i * K + j];
            }
            J[i * K + i] += pow(w[i], -1.0 / alpha - 1.0) / alpha;
            dw[i] = -r[i];
        }
        rmtl_solve_chol(L, J, K);
        rmtl_solve_chol_apply(L, dw, K);
        /* converged when every weight moves by less than 1e-14 of itself (a small weight
           matters: the residual's slope in w_k grows as w_k^(-1/alpha-1)) */
        double dec = 0.0, dmax = 0.0;
        for (int k = 0; k < K; k++) {
            dec -= r[k] * dw[k];
            dmax = fmax(dmax, fabs(dw[k]) / w[k]);
        }
        if (!(dmax > 1e-14) || !(dec > 0.0)) {
            break;
        }
        double s = 1.0;
        for (; s > 1e-14; s *= 0.5) {
            int positive = 1;
            for (int k = 0; k < K; k++) {
                trial[k] = w[k] + s * dw[k];
                positive = positive && trial[k] > 0.0 && isfinite(trial[k]);
            }
            if (!positive) {
                continue;
            }
            /* Armijo on F (its change summed from its parts), or, near the root where that
               change is below F's rounding, a residual |G w - w^(-1/alpha)| that shrinks */
            rmtl_solve_matvec(Gt, G, trial, K);
            double change = 0.0, res = 0.0, res_trial = 0.0;
            for (int k = 0; k < K; k++) {
                double rt = Gt[k] - pow(trial[k], -1.0 / alpha);
                change += 0.5 * (trial[k] * Gt[k] - w[k] * Gw[k]) -
                          (rmtl_fairgrad_h(trial[k], alpha) - rmtl_fairgrad_h(w[k], alpha));
                res += r[k] * r[k];
                res_trial += rt * rt;
            }
            if (change <= -1e-4 * s * dec || res_trial <= (1.0 - 0.5 * s) * res) {
                break;
            }
        }
        if (s <= 1e-14) {
            break;
        }
        for (int k = 0; k < K; k++) {
            w[k] = trial[k];
        }
    }
    for (int k = 0; k < K; k++) {
        b->tower[k] = w[k]; /* LibMTL ends with a backward of sum_k w_k L_k */
    }
    b->has_weights = 1;
    rmtl_bal_combine(dir, w, jac, K, b->P);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_fairgrad = {
    .name = "fairgrad",
    .family = RMTL_BAL_GRADIENTS,
    .samples = 1,
    .hyper = {{"alpha", 1.0, 0.0, INFINITY, 1, 1, 0, NULL}},
    .direction = rmtl_bal_fairgrad_direction};

/* ---- modo: Multi-objective gradient with Double sampling (Chen et al., "Three-Way Trade-Off
   in Multi-Objective Learning", NeurIPS 2023). LibMTL's form (MoDo): three samples per step with
   Jacobians J0, J1, J2; the weights move by one projected gradient step
   lambda = proj_simplex(lambda - gamma (J0 J1^T lambda + rho lambda)), the direction is
   J2^T lambda, and LibMTL returns lambda (the task-specific parameters get the mean of their
   three gradients: tower_mean). State: lambda (K), 1/K at the start. Exact up to rounding. */

static void rmtl_bal_weights_init(rmtl_balancer *b) {
    for (int k = 0; k < b->K; k++) {
        b->state[k] = 1.0 / b->K;
    }
}

static int rmtl_bal_modo_direction(rmtl_balancer *b, float *dir, const float *losses,
                                   const float *jac) {
    (void)losses;
    int K = b->K;
    size_t KP = (size_t)K * b->P;
    double gamma = b->h[0], rho = b->h[1], *lam = b->state, M[RMTL_SOLVE_KK],
           Ml[RMTL_MAX_TASKS] = {0.0};
    rmtl_solve_cross(M, jac, jac + KP, K, b->P);
    rmtl_solve_matvec(Ml, M, lam, K);
    for (int k = 0; k < K; k++) {
        Ml[k] = lam[k] - gamma * (Ml[k] + rho * lam[k]);
    }
    rmtl_solve_simplex(lam, Ml, K);
    for (int k = 0; k < K; k++) {
        b->weights[k] = lam[k];
    }
    b->has_weights = 1;
    rmtl_bal_combine(dir, lam, jac + 2 * KP, K, b->P);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_modo = {.name = "modo",
                                            .family = RMTL_BAL_GRADIENTS,
                                            .samples = 3,
                                            .tower_mean = 1,
                                            .hyper = {{"gamma", 1e-3, 0.0, INFINITY, 1, 1, 0, NULL},
                                                      {"rho", 0.1, 0.0, INFINITY, 0, 1, 0, NULL}},
                                            .sizes = rmtl_bal_weights_sizes,
                                            .init = rmtl_bal_weights_init,
                                            .direction = rmtl_bal_modo_direction};

/* ---- sdmgrad: Stochastic Direction-oriented Multi-objective Gradient descent (Xiao et al.,
   NeurIPS 2023). LibMTL's form (SDMGrad): three samples per step, zeta, xi1 and xi2
   (Jacobians J0, J1, J2); A = J1 J2^T is divided by s^2 + 1e-8, s the mean of the square roots
   of its diagonal clipped at 0; the weights w take niter steps of SGD (lr 5, momentum 0.5, a
   fresh momentum buffer each training step) on the gradient A w + lamda A 1/K, each followed by
   the projection on the simplex; the direction is (J0^T w + lamda mean_k J0_k) / (1 + lamda).
   LibMTL returns no weights. State: w (K), 1/K at the start. Exact up to rounding (LibMTL
   iterates in float32). */

static int rmtl_bal_sdmgrad_direction(rmtl_balancer *b, float *dir, const float *losses,
                                      const float *jac) {
    (void)losses;
    int K = b->K, niter = (int)b->h[1];
    size_t KP = (size_t)K * b->P;
    double lamda = b->h[0], *w = b->state, A[RMTL_SOLVE_KK], Ag[RMTL_MAX_TASKS];
    double grad[RMTL_MAX_TASKS], buf[RMTL_MAX_TASKS], v[RMTL_MAX_TASKS], scale = 0.0;
    rmtl_solve_cross(A, jac + KP, jac + 2 * KP, K, b->P);
    for (int k = 0; k < K; k++) {
        scale += sqrt(fmax(A[k * K + k], 0.0));
    }
    scale /= K;
    for (int i = 0; i < K * K; i++) {
        A[i] /= scale * scale + 1e-8;
    }
    for (int i = 0; i < K; i++) {
        double s = 0.0;
        for (int j = 0; j < K; j++) {
            s += A[i * K + j];
        }
        Ag[i] = s / K;
    }
    for (int it = 0; it < niter; it++) {
        rmtl_solve_matvec(grad, A, w, K);
        for (int k = 0; k < K; k++) {
            grad[k] += lamda * Ag[k];
            buf[k] = it == 0 ? grad[k] : 0.5 * buf[k] + grad[k];
            v[k] = w[k] - 5.0 * buf[k];
        }
        rmtl_solve_simplex(w, v, K);
    }
    for (int k = 0; k < K; k++) {
        v[k] = (w[k] + lamda / K) / (1.0 + lamda);
    }
    rmtl_bal_combine(dir, v, jac, K, b->P);
    return RMTL_OK;
}

static const rmtl_bal_spec rmtl_bal_sdmgrad = {
    .name = "sdmgrad",
    .family = RMTL_BAL_GRADIENTS,
    .samples = 3,
    .hyper = {{"lamda", 0.3, 0.0, INFINITY, 0, 1, 0, NULL}, {"niter", 20, 1, 1e6, 0, 0, 1, NULL}},
    .sizes = rmtl_bal_weights_sizes,
    .init = rmtl_bal_weights_init,
    .direction = rmtl_bal_sdmgrad_direction};

const rmtl_bal_spec *const rmtl_bal_solve_family[] = {&rmtl_bal_cagrad,
                                                      &rmtl_bal_nash_mtl,
                                                      &rmtl_bal_upgrad,
                                                      &rmtl_bal_fairgrad,
                                                      &rmtl_bal_modo,
                                                      &rmtl_bal_sdmgrad,
                                                      NULL};
