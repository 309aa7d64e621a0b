/* RMTL's learning rules over the critics (rl.c, SPEC section 5): TD regression, the paper's actor
   loss, target networks and the chunked loop of stage 2; stage 3 runs train.c's loop. */
#ifndef RMTL_RL_H
#define RMTL_RL_H
#include "train.h"

/* dst = tau * src + (1 - tau) * dst over n values (target networks) */
void rmtl_soft_update(float *dst, const float *src, size_t n, float tau);

/* One TD regression of critic q on a batch of B transitions, gradients zeroed first:
   y = r + gamma (1 - done) Qn with Qn = min(qt(s', a'), q(s', a')) (td3) or qt(s', a')
   (both in eval mode, y not differentiated); loss = mean_i w_i (q(s_i, a_i) - y_i)^2 with
   q in its current mode. weight (B) may be NULL for all ones. */
int rmtl_critic_td_backward(rmtl_critic *q, rmtl_critic *qt, double *loss, const int32_t *codes,
                            const float *dense, const float *action, const int32_t *ncodes,
                            const float *ndense, const float *naction, const float *reward,
                            const float *done, const float *weight, float gamma, int td3, int B);

/* The paper's actor loss L = -(1/B) sum_i sum_k w_ik Q_k(s_i, mu_k(s_i)) backpropagated
   through the critics (their current mode) into the actor (its current mode); the actor's
   gradients are zeroed first, the critics' are overwritten. The actor reads dense (B, actor
   D), the critics state (B, critic D). weight (B,T) may be NULL;
   dprob (B,T) is scratch that receives dL/dmu. */
int rmtl_actor_backward(rmtl_model *actor, rmtl_critic *const *critics, double *loss, float *dprob,
                        const int32_t *codes, const float *dense, const float *state,
                        const float *weight, int B);

/* the settings of stage 2 */
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

/* one minibatch of transitions: state rows, next-state rows (into the data arrays),
   actions (B,T), rewards (B,T), done flags (B) */
typedef struct {
    const int64_t *state, *next;
    const float *action, *reward, *done;
} rmtl_td_batch;

/* the nets stage 2 trains */
typedef struct {
    rmtl_critic *const *critics, *const *targets; /* T each */
    rmtl_model *actor, *actor_target;
    int T;
} rmtl_agent_nets;

/* n_steps stage-2 steps with global indices step, step + 1, ...; minibatch s is entries
   [s*B, (s+1)*B) of the batch arrays. Sums the critic losses (T) and the actor losses of the
   steps that updated the actor (counted in actor_steps). One step at global index `step`:
   every critic k takes an Adam step on its TD loss; then, when cfg->actor_update and
   (step + 1) % actor_update_freq == 0 and step > init_training_step, the actor takes an Adam
   step on the actor loss; then, when step % soft_update_freq == 0, every target moves toward
   its network by tau. */
int rmtl_td_chunk(const rmtl_agent_nets *nets, double *critic_loss_sum, double *actor_loss_sum,
                  int64_t *actor_steps, const rmtl_td_batch *batches, const rmtl_rows *data, int B,
                  int64_t n_steps, int64_t step, const rmtl_td_config *cfg);
#endif
