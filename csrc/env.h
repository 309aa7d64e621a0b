/* The session MDP of SPEC section 3: environments stepped many sessions at a time, the replay
   ring buffer and the one-pass collection of transitions into it.

   Episode = one session (rows offsets[s] .. offsets[s+1]-1 in time order); state s_t = row t;
   action a_t in [0,1]^T; reward r_k from the label of row t; next state row t+1, or the last
   row itself with done = 1 at the session's last row. */
#ifndef RMTL_ENV_H
#define RMTL_ENV_H
#include "rmtl.h"

/* BCE_WRAPPED: BCE at the action 0.5 + 0.5 a, as the authors' code computes it */
enum { RMTL_REWARD_BCE = 0, RMTL_REWARD_ABS = 1, RMTL_REWARD_BCE_WRAPPED = 2 };
enum { RMTL_ORDER_RANDOM = 0, RMTL_ORDER_SEQUENTIAL = 1 };
enum { RMTL_POLICY_UNIFORM = 0, RMTL_POLICY_ROWS = 1, RMTL_POLICY_GIVEN = 2 };

/* random streams keyed by a user seed: session draws, behaviour actions, replay sampling */
#define RMTL_STREAM_EPISODE 0x45504953ULL
#define RMTL_STREAM_ACTION 0x41435400ULL
#define RMTL_STREAM_SAMPLE 0x53414d50ULL

typedef struct {
    const int64_t *offsets; /* (S+1) CSR session boundaries */
    int64_t n_sessions;
    const int32_t *codes; /* (n,F) */
    const float *dense;   /* (n,D) */
    const float *labels;  /* (n,T) */
    int F, D, T;
    int reward; /* RMTL_REWARD_* */
} rmtl_mdp;

/* ---- env.c */
void rmtl_mdp_reward(float *r, const float *action, const float *label, int T, int kind);
/* r (T) from action (T) in [0,1] and 0/1 label (T): BCE y log(clip(a)) + (1-y) log(clip(1-a))
   with clip to [1e-4, 1], or ABS -|a - y| */
int64_t rmtl_mdp_draw(int64_t n_sessions, int order, uint64_t seed, int64_t episode);
/* the session of the episode-th episode among S = n_sessions: uniform with replacement from
   (seed, episode), or episode mod S in order */

/* session context: RMTL_CONTEXT_BASE + T columns per row */
#define RMTL_CONTEXT_BASE 2
int rmtl_session_context(float *out, const int64_t *offsets, int64_t n_sessions,
                         const int64_t *time_ms, const float *labels, int T);
/* out (n, 2+T) for the n = offsets[S] rows of S sessions, time_ms (n) and labels (n,T), rows of
   a session in time order: log1p(position in the session), log1p(seconds since the session's
   first row) and, per task k, log1p(positive labels of task k in the EARLIER rows of the
   session) (a row's own labels never reach its features). RMTL_ERR_ARG if time_ms decreases
   inside a session. */

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

typedef struct {
    /* one step of n environments; every array has n rows */
    int32_t *codes;   /* (n,F) observation after the step */
    float *dense;     /* (n,D) */
    float *reward;    /* (n,T) */
    float *labels;    /* (n,T) labels of the rows acted on */
    uint8_t *done;    /* (n) the row acted on was its session's last */
    int64_t *state;   /* (n) rows acted on */
    int64_t *next;    /* (n) next-state rows (SPEC: the last row itself at done) */
    int64_t *session; /* (n) sessions acted in */
} rmtl_env_step_out;

int rmtl_env_create(rmtl_env **out, const rmtl_mdp *mdp, int n, int order, int autoreset,
                    uint64_t seed);
void rmtl_env_free(rmtl_env *e);
int rmtl_env_reset(rmtl_env *e, int32_t *codes, float *dense, const int64_t *sessions);
/* every environment starts an episode: session sessions[i] (NULL: the next draws); writes the
   first observations codes (n,F) and dense (n,D) */
int rmtl_env_step(rmtl_env *e, const rmtl_env_step_out *out, const float *action);
/* one step of every environment with action (n,T) in [0,1]; RMTL_ERR_ARG if one was never
   reset or has finished without autoreset (call reset). With autoreset, a finished
   environment's observation is the first row of its next episode. */

/* ---- replay.c */
typedef struct {
    int64_t capacity, size, head; /* head: the slot the next transition goes to */
    int T;
    uint64_t seed, draws;   /* sample() calls so far: the next batch's stream */
    int64_t *state, *next;  /* (capacity) */
    float *action, *reward; /* (capacity, T) */
    float *done;            /* (capacity) */
    uint64_t *taken;        /* (capacity / 64 + 1) scratch bitmap of one sample() call */
} rmtl_replay;

int rmtl_replay_create(rmtl_replay **out, int64_t capacity, int T, uint64_t seed);
void rmtl_replay_free(rmtl_replay *b);
void rmtl_replay_push(rmtl_replay *b, const int64_t *state, const int64_t *next,
                      const float *action, const float *reward, const float *done, int64_t n);
/* appends n transitions (oldest first); past capacity the oldest are overwritten */
int rmtl_replay_sample(rmtl_replay *b, int64_t *state, int64_t *next, float *action, float *reward,
                       float *done, int64_t B);
/* B distinct transitions drawn uniformly from (seed, draws), then draws += 1; RMTL_ERR_ARG if
   B > size. Depends only on the stored sequence, not on where the ring starts. */
void rmtl_replay_export(const rmtl_replay *b, int64_t *state, int64_t *next, float *action,
                        float *reward, float *done);
/* the stored transitions, oldest first (size rows each) */

typedef struct {
    int kind;            /* RMTL_POLICY_* */
    const float *action; /* ROWS: (n rows, T) per data row; GIVEN: (transitions, T) */
    float noise;         /* ROWS: std of the Gaussian added before clipping to [0, 1] */
    uint64_t seed;
} rmtl_policy;

int rmtl_collect(rmtl_replay *b, const rmtl_mdp *mdp, const int64_t *sessions, int64_t n_episodes,
                 int64_t first, const rmtl_policy *pol);
/* replays the sessions sessions[0..n_episodes) into b in one pass. first is the global index of
   the first transition (keys its random action, so chunked calls equal one call); GIVEN actions
   are indexed from 0 at first. */
#endif
