/* Critic networks (critic.c, SPEC section 4).

   A critic scores one task's action a_k in [0, 1] in the context of a state (codes, dense):
   its own front end (embedding + numerical_layer), action_layer = Linear(1, E) as one more
   field, a bottom MLP, a tower MLP with a final Linear(.., 1) and Q = -ReLU(out) <= 0.
   Parameter names and shapes follow the reference CriticNeg module. */
#ifndef RMTL_CRITIC_H
#define RMTL_CRITIC_H
#include "backbones.h"

/* a critic and its batch buffers */
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

/* a new critic into *out (NULL on failure) from cfg's F, D, E, field_dims, bottom, tower,
   dropout and seed; T must be 1, kind and n_experts are ignored */
int rmtl_critic_create(rmtl_critic **out, const rmtl_model_config *cfg);
/* frees c and what it owns; NULL does nothing */
void rmtl_critic_free(rmtl_critic *c);
/* grows the activation and batch buffers to `batch` rows (never shrinks) */
int rmtl_critic_reserve(rmtl_critic *c, int batch);
/* zeroes the parameter gradients and the arena's gradients of B rows */
void rmtl_critic_zero_grad(rmtl_critic *c, int B);
/* codes (B,F) dense (B,D) action (B) -> c->q (B), in the current mode; B <= reserved rows */
int rmtl_critic_forward(rmtl_critic *c, const int32_t *codes, const float *dense,
                        const float *action, int B);
/* after rmtl_critic_forward on the same inputs: adds dQ/dtheta * dq into the parameter
   gradients and dQ/da * dq into daction (B, may be NULL); arena gradients must be zero */
void rmtl_critic_backward(rmtl_critic *c, float *daction, const float *dq, const int32_t *codes,
                          const float *dense, const float *action, int B);
/* Q of n rows in the critic's current mode, B at a time, into out (n) */
int rmtl_critic_predict(rmtl_critic *c, float *out, const int32_t *codes, const float *dense,
                        const float *action, int64_t n, int B);
#endif
