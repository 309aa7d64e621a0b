/* The session MDP of SPEC section 3 and environments stepped many sessions at a time (env.c).

   Episode = one session (rows offsets[s] .. offsets[s+1]-1 in time order); state s_t = row t;
   action a_t in [0,1]^T; reward r_k from the label of row t; next state row t+1, or the last
   row itself with done = 1 at the session's last row. */
#ifndef RMTL_ENV_H
#define RMTL_ENV_H
#include "rmtl.h"

/* the reward of an action; BCE_WRAPPED: BCE at the action 0.5 + 0.5 a, as the authors' code
   computes it */
enum { RMTL_REWARD_BCE = 0, RMTL_REWARD_ABS = 1, RMTL_REWARD_BCE_WRAPPED = 2 };
/* the order environments draw sessions in */
enum { RMTL_ORDER_RANDOM = 0, RMTL_ORDER_SEQUENTIAL = 1 };

/* a data set's sessions as an MDP */
typedef struct {
    const int64_t *offsets; /* (S+1) CSR session boundaries */
    int64_t n_sessions;
    const int32_t *codes; /* (n,F) */
    const float *dense;   /* (n,D) */
    const float *labels;  /* (n,T) */
    int F, D, T;
    int reward; /* RMTL_REWARD_* */
} rmtl_mdp;

/* r (T) from action (T) in [0,1] and 0/1 label (T): BCE y log(clip(a)) + (1-y) log(clip(1-a))
   with clip to [1e-4, 1], or ABS -|a - y| */
void rmtl_mdp_reward(float *r, const float *action, const float *label, int T, int kind);
/* the session of the episode-th episode among S = n_sessions: uniform with replacement from
   (seed, episode), or episode mod S in order */
int64_t rmtl_mdp_draw(int64_t n_sessions, int order, uint64_t seed, int64_t episode);

/* session context: RMTL_CONTEXT_BASE + T columns per row */
#define RMTL_CONTEXT_BASE 2
/* out (n, 2+T) for the n = offsets[S] rows of S sessions, time_ms (n) and labels (n,T), rows of
   a session in time order: log1p(position in the session), log1p(seconds since the session's
   first row) and, per task k, log1p(positive labels of task k in the EARLIER rows of the
   session) (a row's own labels never reach its features). RMTL_ERR_ARG if time_ms decreases
   inside a session. */
int rmtl_session_context(float *out, const int64_t *offsets, int64_t n_sessions,
                         const int64_t *time_ms, const float *labels, int T);

/* n environments over one MDP */
typedef struct {
    rmtl_mdp mdp;
    int n;         /* environments stepped together */
    int order;     /* RMTL_ORDER_* */
    int autoreset; /* a finished environment starts its next episode in the same step */
    uint64_t seed;
    int64_t episodes; /* episodes drawn since the last seeding: the next draw's counter */
    /* per environment (n each): session, current row, 1 while its episode has ended */
    int64_t *session, *row;
    uint8_t *finished;
} rmtl_env;

/* one step of n environments; every array has n rows */
typedef struct {
    int32_t *codes;   /* (n,F) observation after the step */
    float *dense;     /* (n,D) */
    float *reward;    /* (n,T) */
    float *labels;    /* (n,T) labels of the rows acted on */
    uint8_t *done;    /* (n) the row acted on was its session's last */
    int64_t *state;   /* (n) rows acted on */
    int64_t *next;    /* (n) next-state rows (SPEC: the last row itself at done) */
    int64_t *session; /* (n) sessions acted in */
} rmtl_env_step_out;

/* n environments over mdp into *out (NULL on failure), none started (reset them first) */
int rmtl_env_create(rmtl_env **out, const rmtl_mdp *mdp, int n, int order, int autoreset,
                    uint64_t seed);
/* frees e; NULL does nothing */
void rmtl_env_free(rmtl_env *e);
/* every environment starts an episode: session sessions[i] (NULL: the next draws); writes the
   first observations codes (n,F) and dense (n,D) */
int rmtl_env_reset(rmtl_env *e, int32_t *codes, float *dense, const int64_t *sessions);
/* one step of every environment with action (n,T) in [0,1]; RMTL_ERR_ARG if one was never
   reset or has finished without autoreset (call reset). With autoreset, a finished
   environment's observation is the first row of its next episode. */
int rmtl_env_step(rmtl_env *e, const rmtl_env_step_out *out, const float *action);
#endif
