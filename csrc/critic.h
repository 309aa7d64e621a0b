/* Critic networks (SPEC section 4) and the RL loops of RMTL's stages 2 and 3 (SPEC section 5).

   A critic scores one task's action a_k in [0, 1] in the context of a state (codes, dense):
   its own front end (embedding + numerical_layer), action_layer = Linear(1, E) as one more
   field, a bottom MLP, a tower MLP with a final Linear(.., 1) and Q = -ReLU(out) <= 0.
   Parameter names and shapes follow the reference CriticNeg module. */
#ifndef RMTL_CRITIC_H
#define RMTL_CRITIC_H
#include "blocks.h"

typedef struct {
    /* the parameter table, arena, mode and dropout state the shared blocks read; its one
       front end holds [fields, numerical field, action field] ((F+2)*E) and its one first
       layer is the bottom's first layer; no towers, experts or head */
    rmtl_model net;
    rmtl_mlp bottom, tower;
    size_t act_w, act_b; /* action_layer weight (E, 1) and bias (E) */
    /* batch buffers, arena.cap rows each, carved from one block: Q values, a contiguous
       action copy, TD targets, upstream gradient of Q and gradient of the action */
    float *block, *q, *action, *y, *dq, *daction;
} rmtl_critic;

/* critic.c: the network */
int rmtl_critic_create(rmtl_critic **out, const rmtl_model_config *cfg);
/* cfg's F, D, E, field_dims, bottom, tower, dropout and seed; T must be 1, kind and
   n_experts are ignored */
void rmtl_critic_free(rmtl_critic *c);
int rmtl_critic_reserve(rmtl_critic *c, int batch);
void rmtl_critic_zero_grad(rmtl_critic *c, int B);
int rmtl_critic_forward(rmtl_critic *c, const int32_t *codes, const float *dense,
                        const float *action, int B);
/* codes (B,F) dense (B,D) action (B) -> c->q (B), in the current mode; B <= reserved rows */
void rmtl_critic_backward(rmtl_critic *c, float *daction, const float *dq, const int32_t *codes,
                          const float *dense, const float *action, int B);
/* after rmtl_critic_forward on the same inputs: adds dQ/dtheta * dq into the parameter
   gradients and dQ/da * dq into daction (B, may be NULL); arena gradients must be zero */
int rmtl_critic_predict(rmtl_critic *c, float *out, const int32_t *codes, const float *dense,
                        const float *action, int64_t n, int B);
/* Q of n rows in the critic's current mode, B at a time, into out (n) */

/* rl.c: losses, target networks and the stage-2 loop */
void rmtl_soft_update(float *dst, const float *src, size_t n, float tau);
/* dst = tau * src + (1 - tau) * dst over n values (target networks) */
int rmtl_critic_eval(rmtl_critic *c, const int32_t *codes, const float *dense, const float *action,
                     int B);
/* eval-mode Q of c at (codes, dense, action) into c->q, restoring c's mode */
void rmtl_column(float *out, const float *a, int k, int B, int T);
/* column k of a (B,T) array into out (B) */

int rmtl_critic_td_backward(rmtl_critic *q, rmtl_critic *qt, double *loss, const int32_t *codes,
                            const float *dense, const float *action, const int32_t *ncodes,
                            const float *ndense, const float *naction, const float *reward,
                            const float *done, const float *weight, float gamma, int td3, int B);
/* One TD regression of critic q on a batch of B transitions, gradients zeroed first:
   y = r + gamma (1 - done) Qn with Qn = min(qt(s', a'), q(s', a')) (td3) or qt(s', a')
   (both in eval mode, y not differentiated); loss = mean_i w_i (q(s_i, a_i) - y_i)^2 with
   q in its current mode. weight (B) may be NULL for all ones. */

int rmtl_actor_backward(rmtl_model *actor, rmtl_critic *const *critics, double *loss, float *dprob,
                        const int32_t *codes, const float *dense, const float *state,
                        const float *weight, int B);
/* The paper's actor loss L = -(1/B) sum_i sum_k w_ik Q_k(s_i, mu_k(s_i)) backpropagated
   through the critics (their current mode) into the actor (its current mode); the actor's
   gradients are zeroed first, the critics' are overwritten. The actor reads dense (B, actor
   D), the critics state (B, critic D). weight (B,T) may be NULL;
   dprob (B,T) is scratch that receives dL/dmu. */

typedef struct {
    float gamma;
    int td3;                     /* code target (min of target and current critic, noise) */
    float noise_std, noise_clip; /* target action noise clip(N(0, std), -clip, clip) (td3) */
    int ips;                     /* inverse propensity weights per batch and task */
    float tau;
    int soft_update_freq;
    int actor_update, actor_update_freq;
    int64_t init_training_step;
    rmtl_adam critic_opt, actor_opt;
    uint64_t seed;
} rmtl_td_config;

typedef struct {
    /* one minibatch of transitions: state rows, next-state rows (into the data arrays),
       actions (B,T), rewards (B,T), done flags (B) */
    const int64_t *state, *next;
    const float *action, *reward, *done;
} rmtl_td_batch;

typedef struct {
    rmtl_critic *const *critics, *const *targets; /* T each */
    rmtl_model *actor, *actor_target;
    int T;
} rmtl_agent_nets;

typedef struct {
    /* scratch of one stage-2 step, cap rows: gathered states and next states (the actor's
       dense and the critics' state), labels, target actions, IPS weights and dL/dmu (B,T),
       and four task columns (B each); codes and ncodes share the block at codes, the floats
       the block at dense */
    int cap;
    int32_t *codes, *ncodes;
    float *dense, *ndense, *state, *nstate, *labels, *naction, *weight, *dprob, *col;
} rmtl_td_work;

int rmtl_td_work_reserve(rmtl_td_work *w, int B, int F, int D, int Dc, int T);
void rmtl_td_work_free(rmtl_td_work *w);

int rmtl_td_step(const rmtl_agent_nets *nets, rmtl_td_work *w, double *critic_loss,
                 double *actor_loss, const rmtl_td_batch *batch, const rmtl_rows *data, int B,
                 int64_t step, const rmtl_td_config *cfg);
/* One stage-2 step at global step index `step`: every critic k takes an Adam step on its TD
   loss (critic_loss[k] receives it); then, when cfg->actor_update and (step + 1) %
   actor_update_freq == 0 and step > init_training_step, the actor takes an Adam step on the
   actor loss (*actor_loss, else NaN); then, when step % soft_update_freq == 0, every target
   moves toward its network by tau. */

int rmtl_td_chunk(const rmtl_agent_nets *nets, double *critic_loss_sum, double *actor_loss_sum,
                  int64_t *actor_steps, const rmtl_td_batch *batches, const rmtl_rows *data, int B,
                  int64_t n_steps, int64_t step, const rmtl_td_config *cfg);
/* n_steps stage-2 steps with global indices step, step + 1, ...; minibatch s is entries
   [s*B, (s+1)*B) of the batch arrays. Sums the critic losses (T) and the actor losses of the
   steps that updated the actor (counted in actor_steps). */

enum {
    RMTL_WEIGHT_RMTL = 0,
    RMTL_WEIGHT_CONSTANT = 1,
    RMTL_WEIGHT_LABEL = 2,
    RMTL_WEIGHT_NEG_Q = 3,
    RMTL_WEIGHT_STATIC = 4,
    RMTL_WEIGHT_PERMUTED = 5
};

typedef struct {
    rmtl_critic *const *critics; /* T critics; NULL for constant and static */
    int weighting;               /* RMTL_WEIGHT_* */
    float lam;
    const float *task_weights; /* static: (T) finite weights >= 0; NULL for the others */
    uint64_t seed;             /* permuted: the seed of the batch permutations */
} rmtl_loss_weighting;

/* train.c: the one chunked training loop */
int rmtl_train_chunk(rmtl_model *m, double *loss_sum, double *weight_sum, const int64_t *rows,
                     int64_t n_rows, const rmtl_rows *data, int B, const rmtl_loss_weighting *wt,
                     const rmtl_adam *opt);
/* One Adam step of m per batch of B consecutive entries of rows (the last may be short) on
   (1/T) sum_k mean_i w_ik BCE(y_ik, p_ik), p from m's forward in its current mode. Without a
   weighting (wt NULL) w = 1; stage 3 (wt) takes w from critic k in eval mode at action p_k
   (not differentiated): rmtl 1 - lam Q, constant 0.5, label 1 - lam y Q, neg_q -Q, static
   task_weights[k] (no critic read), permuted rmtl's weights with the batch's rows permuted
   (row i takes row perm[i] of every task, perm = rmtl_step_permutation(B, seed, m's Adam
   steps before this one)); weight_sum (T) receives the sums of the weights applied. loss_sum
   receives the sum over batches of loss * batch size. */
#endif
