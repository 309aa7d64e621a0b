/* Loss balancers of the multi-task literature (LibMTL's weighting strategies, MetaBalance and
   fixed linear weights). A balancer turns the K task losses of a step and their gradients with
   respect to the shared parameters (a Jacobian (K, P), or S of them for the methods that sample
   S batches per step) into one direction (P) that training applies to the shared parameters,
   advancing its own state as one training step would.

   balancers.c holds the table of balancers and the calls below; each family of concern has its
   own file: balance_scale.c (weights from the losses: ew, linear, gls, uw, dwa, rlw, famo, stch),
   balance_norm.c (weights from gradient norms: gradnorm, db_mtl, excess_mtl, metabalance, imtl),
   balance_project.c (projections and min-norm combinations: mgda, pcgrad, gradvac, graddrop,
   aligned_mtl, moco) and balance_solve.c (iterative solvers: cagrad, nash_mtl, upgrad,
   fairgrad, modo, sdmgrad). Scale convention: LibMTL's, the direction of the summed loss
   sum_k w_k L_k (ew's direction is the sum of the task gradients). */
#ifndef RMTL_BALANCERS_H
#define RMTL_BALANCERS_H
#include "params.h"
#include "rng.h"

/* hyperparameters of one balancer */
#define RMTL_BAL_MAX_HYPER 6
/* the longest balancer name, with its NUL */
#define RMTL_BAL_NAME_LEN 16

/* what a balancer reads: the losses alone (its direction is sum_k w_k g_k with weights from the
   losses, so training needs one backward) or the per-task gradients */
enum { RMTL_BAL_LOSSES = 0, RMTL_BAL_GRADIENTS = 1 };

/* How a gradients-family balancer works on the representation the towers read (training's
   space "representation", LibMTL's rep_grad: its Jacobian row k is the batch sum of task k's
   per-row gradients of its tower input): not at all (LibMTL refuses it too), by task
   coefficients (its direction is sum_k c_k J_k and training sends sum_k c_k of the per-row
   gradients down; b->coef), or by per-element multipliers (GradDrop: the Jacobian pools the
   per-row gradients times the sign of the representation, and training sends down
   sum_k M_kx of the per-row gradients; b->mult) */
enum { RMTL_BAL_REP_NONE = 0, RMTL_BAL_REP_COEF = 1, RMTL_BAL_REP_MULT = 2 };

/* One hyperparameter: LibMTL's name without its method prefix, default and allowed range
   (integers when integer is set). choices, when set, lists the allowed words separated by '|'
   and the value is the chosen word's index. */
typedef struct {
    const char *name;
    double value, low, high;
    int open_low, open_high, integer;
    const char *choices;
} rmtl_bal_hyper;

typedef struct rmtl_balancer rmtl_balancer;

/* A balancer's description and calls (each family file defines its balancers' specs) */
typedef struct {
    const char *name;
    int family;  /* RMTL_BAL_LOSSES or RMTL_BAL_GRADIENTS */
    int samples; /* Jacobians per step: 1, or 3 for the double-sampling methods */
    /* training gives task-specific parameters the mean of their gradients over the samples
       (MoDo) instead of the sum */
    int tower_mean;
    int rep; /* RMTL_BAL_REP_*: the losses family works in either space */
    const rmtl_bal_hyper hyper[RMTL_BAL_MAX_HYPER]; /* up to a NULL name */
    /* doubles of state (kept across steps, saved in checkpoints) and of scratch per step */
    void (*sizes)(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work);
    /* the state at creation (state arrives zeroed) */
    void (*init)(rmtl_balancer *b);
    /* RMTL_BAL_LOSSES: the weights w (K) of this step from the losses (K) */
    int (*weights)(rmtl_balancer *b, double *w, const float *losses);
    /* RMTL_BAL_GRADIENTS: the direction (P) from losses (S,K) and jac (S,K,P); sets b->weights
       when the method has task weights */
    int (*direction)(rmtl_balancer *b, float *dir, const float *losses, const float *jac);
    /* after the training step, the losses (K) of the same batch at the new parameters (FAMO);
       NULL when unused */
    int (*after_step)(rmtl_balancer *b, const float *losses);
    /* RMTL_BAL_GRADIENTS, optional: 1 when the coming step's direction is the plain sum of the
       task gradients whatever they are (GradNorm's first epoch), so training runs the one
       backward of the summed loss (rmtl_balancer_step_weights gives weights 1) */
    int (*equal)(const rmtl_balancer *b);
} rmtl_bal_spec;

/* A balancer's settings and state. The caller allocates state and work (rmtl_balancer_sizes)
   and segments; the calls never allocate. */
struct rmtl_balancer {
    const rmtl_bal_spec *spec;
    int K, S;
    int64_t P;
    uint64_t seed;
    double h[RMTL_BAL_MAX_HYPER]; /* hyperparameters in spec order */
    rmtl_adam opt; /* the optimiser of trainable balancer parameters (UW, GradNorm) */
    double fixed[RMTL_MAX_TASKS]; /* linear's weights */
    /* the parameter tensors' lengths (summing to P) for methods that work per tensor */
    const int64_t *segments;
    int n_segments;
    /* steps taken, epochs finished; per-epoch mean losses: the first epoch's, the last two */
    int64_t steps;
    int64_t epoch;
    double epoch_sum[RMTL_MAX_TASKS], epoch_rows;
    double loss_first[RMTL_MAX_TASKS], loss_last[RMTL_MAX_TASKS], loss_before[RMTL_MAX_TASKS];
    /* the factor training gives task k's gradient of its task-specific parameters in a
       gradients-family step: LibMTL's per-task backward passes leave c_k g_k there, with c_k
       the derivative of the loss transform a method applies before taking gradients (IMTL
       e^{s_k}, DB-MTL 1 / L_k) or, for the methods that end with a backward of
       sum_k w_k L_k, their weight w_k. rmtl_balancer_step sets every c_k to 1 before the
       direction callback, which may change them. */
    double tower[RMTL_MAX_TASKS];
    /* the task weights of the last step (has_weights: the method has them) */
    double weights[RMTL_MAX_TASKS];
    int has_weights;
    /* the coefficients c of the last direction, sum_k c_k J_k, when it is one (has_coef; set by
       rmtl_bal_combine_coef); mult, when the caller sets it, receives the per-element
       multipliers (K,P) of a RMTL_BAL_REP_MULT balancer's step */
    double coef[RMTL_MAX_TASKS];
    int has_coef;
    float *mult;
    double *state, *work;
    int64_t n_state, n_work;
};

/* each family file's balancers, up to a NULL */
extern const rmtl_bal_spec *const rmtl_bal_scale_family[];
extern const rmtl_bal_spec *const rmtl_bal_norm_family[];
extern const rmtl_bal_spec *const rmtl_bal_project_family[];
extern const rmtl_bal_spec *const rmtl_bal_solve_family[];
/* balancer i of all families in the order above, or NULL past the last */
const rmtl_bal_spec *rmtl_bal_at(int i);

/* the doubles of state and work b needs (spec, K, S, P, segments set) */
void rmtl_balancer_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work);
/* sets the counters and weights and initialises the state (zeroed by the caller) */
void rmtl_balancer_init(rmtl_balancer *b);
/* One training step's direction dir (P) from losses (S,K) and jac (S,K,P) of batches of rows
   rows each (every sample's losses count for the epoch means, weighted by rows, as LibMTL's
   loss meter does); RMTL_ERR_NONFINITE when a loss or the Jacobian is not finite (nothing is
   advanced then). */
int rmtl_balancer_step(rmtl_balancer *b, float *dir, const float *losses, const float *jac,
                       double rows);
/* rmtl_balancer_step on a Jacobian its caller found finite as it filled it (training's copy
   of each task's gradient): the losses are checked, the Jacobian is not read again for it */
int rmtl_balancer_step_finite(rmtl_balancer *b, float *dir, const float *losses, const float *jac,
                              double rows);
/* 1 when b's coming step needs no per-task gradients: a losses balancer, or a gradient
   balancer whose step is the plain sum (its spec's equal) */
int rmtl_balancer_losses_only(const rmtl_balancer *b);
/* For a step that needs no per-task gradients (rmtl_balancer_losses_only): the weights w (K)
   from its losses (K), advancing the state as rmtl_balancer_step would; training then runs one
   backward of sum_k w_k L_k */
int rmtl_balancer_step_weights(rmtl_balancer *b, double *w, const float *losses, double rows);
/* the losses (K) of the step's batch at the updated parameters, for methods with after_step */
int rmtl_balancer_after_step(rmtl_balancer *b, const float *losses);
/* an epoch ended: its mean losses join the history (DWA, GradNorm, STCH read it) */
void rmtl_balancer_end_epoch(rmtl_balancer *b);

/* ---- helpers the family files share (balancers.c) */

/* uniform in [0, 1) and standard normal draws of the balancer's stream at (step, index) */
double rmtl_bal_uniform(const rmtl_balancer *b, int64_t index);
/* the key of this step's draws: rmtl_bal_uniform(b, i) is rmtl_bal_uniform_at(key, i), for
   loops that take many draws of one step */
uint64_t rmtl_bal_key(const rmtl_balancer *b);
static inline double rmtl_bal_uniform_at(uint64_t key, int64_t index) {
    return (double)(rmtl_rng_at(key, (uint64_t)index) >> 11) * 0x1.0p-53;
}
double rmtl_bal_normal(const rmtl_balancer *b, int64_t index);
/* dir (P) = sum_k w[k] jac[k] (jac (K,P)), accumulated in double per element */
void rmtl_bal_combine(float *dir, const double *w, const float *jac, int K, int64_t P);
/* rmtl_bal_combine with b's sizes, the coefficients kept in b->coef (training in the
   representation space applies them to the per-row gradients) */
void rmtl_bal_combine_coef(rmtl_balancer *b, float *dir, const double *coef, const float *jac);
/* the columns [from, from + n) of dir (P) = sum_k w[k] jac[k] (jac (K,P)), as rmtl_bal_combine
   (the span of one parameter tensor: gradvac's groups, metabalance's segments) */
void rmtl_bal_combine_span(float *dir, const double *w, const float *jac, int K, int64_t P,
                           int64_t from, int64_t n);
/* dir (P) = sum_k w[k] rows[k] for rows (K,P) in double (a balancer's averaged gradients) */
void rmtl_bal_combine_rows(float *dir, const double *w, const double *rows, int K, int64_t P);
/* the Gram matrix G (K,K) = jac jac^T in double */
void rmtl_bal_gram(double *G, const float *jac, int K, int64_t P);
/* the Gram matrix G (K,K) of the columns [from, from + n) of jac (K,P), as rmtl_bal_gram */
void rmtl_bal_gram_span(double *G, const float *jac, int K, int64_t P, int64_t from, int64_t n);
/* part (ctx, k, lo, hi): row k's contribution from the columns [lo, hi) of a sum over P
   columns; it may also update what it owns in those columns */
typedef double (*rmtl_bal_part_fn)(void *ctx, int k, int64_t lo, int64_t hi);
/* out (K): for each row k < K the sum over the columns [0, P) of part's contributions, taken
   per block of columns on the pool and added in block order (rmtl_bal_gram's sums too); K at
   most RMTL_MAX_TASKS (RMTL_MAX_TASKS + 1) / 2 */
void rmtl_bal_row_sums(double *out, int K, int64_t P, rmtl_bal_part_fn part, void *ctx);
/* the Euclidean norm of the n floats of x, in double */
double rmtl_bal_norm2(const float *x, int64_t n);
/* softmax of x (n) into out */
void rmtl_bal_softmax(double *out, const double *x, int n);
/* One torch.optim.Adam step (settings opt: b->opt, or FAMO's own) of a balancer's trainable
   values, the first K doubles of its state, whose moments m (K) and v (K) follow them; g (K) is
   their gradient and t the Adam steps taken before this one. */
void rmtl_bal_adam(rmtl_balancer *b, const double *g, int64_t t, const rmtl_adam *opt);
/* sizes of a balancer whose state is those trainable values and moments alone (3K, no work) */
void rmtl_bal_adam_sizes(const rmtl_balancer *b, int64_t *n_state, int64_t *n_work);
/* an init that sets the first K doubles of the state to 1 */
void rmtl_bal_init_ones(rmtl_balancer *b);
#endif
