/* Supervised training and prediction of a backbone (train.c): gathering batches from a data set,
   the loss backward, the one chunked training loop (stages 1 and 3) and batched prediction. */
#ifndef RMTL_TRAIN_H
#define RMTL_TRAIN_H
#include "balancers.h"
#include "critic.h"

/* How rmtl_model_predict runs the first layers over the front ends: from per-code tables when
   that pays (AUTO), never, or always */
enum { RMTL_TABLES_AUTO = 0, RMTL_TABLES_NEVER = 1, RMTL_TABLES_ALWAYS = 2 };

/* a data set's rows: features, labels and the critics' extra state columns */
typedef struct {
    const int32_t *codes; /* (n,F) */
    const float *dense;   /* (n,D) */
    const float *labels;  /* (n,T) */
    int64_t n;
    const float *extra; /* (n,X) features only the critics see; NULL when X = 0 */
    int X;
} rmtl_rows;

/* index of the first code outside [0, field_dims[f]) of the (n, F) codes, or -1; inline, so a
   per-row check in a gather loop costs no call (a field index i % F per code would cost a
   division each) */
static inline int64_t rmtl_codes_check(const int32_t *codes, int64_t n, int F,
                                       const int32_t *field_dims) {
    for (int64_t r = 0; r < n; r++) {
        const int32_t *row = codes + (size_t)r * F;
        for (int f = 0; f < F; f++) {
            if ((uint32_t)row[f] >= (uint32_t)field_dims[f]) { /* negative codes wrap above */
                return r * F + f;
            }
        }
    }
    return -1;
}

/* copies rows[0..B) of data into codes (B,F), dense (B,D) and labels (B,T; skipped if NULL);
   RMTL_ERR_INDEX if a row is outside [0, data->n) or a copied code outside [0, field_dims).
   Loops read only these private copies, checked here: the data arrays may be changed by
   another thread after the binding validated them. */
int rmtl_gather_batch(int32_t *codes, float *dense, float *labels, const rmtl_rows *data,
                      const int64_t *rows, int B, int F, int D, int T, const int32_t *field_dims);
/* the critics' dense state of rows[0..B) into out (B, keep + X): the first keep of the D
   dense columns of each row, then its X extra columns (rows checked by rmtl_gather_batch) */
void rmtl_gather_state(float *out, const rmtl_rows *data, const int64_t *rows, int B, int D,
                       int keep);
/* column k of a (B,T) array into out (B) */
void rmtl_column(float *out, const float *a, int k, int B, int T);

/* after rmtl_model_forward on (codes, dense) with zeroed gradients: the weighted BCE head
   (weights (B,T) or NULL) and the backward below it; returns the loss */
double rmtl_model_head_backward(rmtl_model *m, const int32_t *codes, const float *dense,
                                const float *labels, const float *weights, int B);
/* after rmtl_model_forward on (codes, dense) with zeroed gradients: backward of a given
   gradient dprob (B,T) of the probabilities */
void rmtl_model_prob_backward(rmtl_model *m, const float *dprob, const int32_t *codes,
                              const float *dense, int B);
/* zero grads, forward in the current mode, BCE head (weights (B,T) or NULL), backward; the
   loss into *loss, the gradients stay in the model */
int rmtl_model_loss_backward(rmtl_model *m, double *loss, const int32_t *codes, const float *dense,
                             const float *labels, const float *weights, int B);
/* eval-mode probabilities of n rows, B at a time, into out (n,T); tables (RMTL_TABLES_*)
   chooses how the first layers over the front ends run. The workspace holds min(n, B) rows. */
int rmtl_model_predict(rmtl_model *m, float *out, const int32_t *codes, const float *dense,
                       int64_t n, int B, int tables);

/* the stage-3 loss weightings: RMTL's and its controls */
enum {
    RMTL_WEIGHT_RMTL = 0,
    RMTL_WEIGHT_CONSTANT = 1,
    RMTL_WEIGHT_LABEL = 2,
    RMTL_WEIGHT_NEG_Q = 3,
    RMTL_WEIGHT_STATIC = 4,
    RMTL_WEIGHT_PERMUTED = 5
};

/* how stage 3 weights each row's loss */
typedef struct {
    rmtl_critic *const *critics; /* T critics; NULL for constant and static */
    int weighting;               /* RMTL_WEIGHT_* */
    float lam;
    const float *task_weights; /* static: (T) finite weights >= 0; NULL for the others */
    uint64_t seed;             /* permuted: the seed of the batch permutations */
} rmtl_loss_weighting;

/* The stage-3 loss weights w (n,T), column k, from task k's Q (q[i * q_stride] for row i;
   NULL for constant and static) and labels (n,T): rmtl and permuted 1 - lam Q (permuted's rows
   are permuted afterwards, per training batch), constant 0.5, label 1 - lam y Q, neg_q -Q,
   static task_weights[k]. The one place the formulas live: training and
   rmtl._core.loss_weights call it. */
void rmtl_loss_weights(float *w, const float *q, int64_t q_stride, const float *labels, int k,
                       int64_t n, int T, const rmtl_loss_weighting *wt);

/* Training with a loss balancer (balancers.h): the balancer and the spans [lo[i], hi[i]) of the
   flat parameter buffer that the tasks share, in buffer order. The other parameters are
   task-specific. rep 0: the balancer reads the gradients of the shared spans (their lengths
   sum to its P); rep 1: of the representation the towers read (its P is their input width,
   rmtl_model_feature), and the spans only tell the task-specific parameters apart. */
typedef struct {
    rmtl_balancer *b;
    const int64_t *lo, *hi;
    int n, rep;
} rmtl_balanced;

/* One Adam step of m per batch of B consecutive entries of rows (the last may be short) on
   (1/T) sum_k mean_i w_ik BCE(y_ik, p_ik), p from m's forward in its current mode. Without a
   weighting (wt NULL) w = 1; stage 3 (wt) takes w from critic k in eval mode at action p_k
   (not differentiated): rmtl 1 - lam Q, constant 0.5, label 1 - lam y Q, neg_q -Q, static
   task_weights[k] (no critic read), permuted rmtl's weights with the batch's rows permuted
   (row i takes row perm[i] of every task, perm = rmtl_step_permutation(B, seed, m's Adam
   steps before this one)); weight_sum (T) receives the sums of the weights applied. loss_sum
   receives the sum over batches of loss * batch size.
   With a balancer (bal not NULL) the task losses L_k = mean_i w_ik BCE_ik are balanced as
   LibMTL does (its scale: the summed loss). A balancer of the losses family weights them and
   one backward of sum_k v_k L_k follows (every parameter sees the weights). A gradient
   balancer reads S batches per step (B consecutive rows each; a sample past the end of rows
   wraps to its start): for each, one forward and T backwards, one per task, give the Jacobian
   of the shared spans; the balancer's direction replaces their gradient, and every other
   parameter gets the sum of its tasks' gradients (their mean over the S samples for balancers
   with tower_mean). In the representation space (bal->rep) the T backwards stop at the
   towers' inputs, the balancer reads their batch sums, and one backward below the towers
   follows from the combination it gives (RMTL_BAL_REP_*; RMTL_ERR_ARG for a balancer that has
   none). Balancers with after_step (FAMO) then see the last batch's losses after
   the update (one more forward). RMTL_ERR_NONFINITE when a loss or gradient is not finite. */
int rmtl_train_chunk(rmtl_model *m, double *loss_sum, double *weight_sum, const int64_t *rows,
                     int64_t n_rows, const rmtl_rows *data, int B, const rmtl_loss_weighting *wt,
                     const rmtl_balanced *bal, const rmtl_adam *opt);
#endif
