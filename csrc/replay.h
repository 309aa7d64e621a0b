/* The replay ring buffer (replay.c): transitions as row indices into the session data (no
   feature copies), batches drawn without replacement, and the one-pass collection of whole
   sessions into it. */
#ifndef RMTL_REPLAY_H
#define RMTL_REPLAY_H
#include "env.h"

/* the behaviour policy of a collection */
enum { RMTL_POLICY_UNIFORM = 0, RMTL_POLICY_ROWS = 1, RMTL_POLICY_GIVEN = 2 };

/* the ring of stored transitions */
typedef struct {
    int64_t capacity, size, head; /* head: the slot the next transition goes to */
    int T;
    uint64_t seed, draws;   /* sample() calls so far: the next batch's stream */
    int64_t *state, *next;  /* (capacity) */
    float *action, *reward; /* (capacity, T) */
    float *done;            /* (capacity) */
    uint64_t *taken;        /* (capacity / 64 + 1) scratch bitmap of one sample() call */
} rmtl_replay;

/* an empty buffer of capacity transitions of T tasks into *out (NULL on failure) */
int rmtl_replay_create(rmtl_replay **out, int64_t capacity, int T, uint64_t seed);
/* frees b; NULL does nothing */
void rmtl_replay_free(rmtl_replay *b);
/* appends n transitions (oldest first); past capacity the oldest are overwritten */
void rmtl_replay_push(rmtl_replay *b, const int64_t *state, const int64_t *next,
                      const float *action, const float *reward, const float *done, int64_t n);
/* B distinct transitions drawn uniformly from (seed, draws), then draws += 1; RMTL_ERR_ARG if
   B > size. Depends only on the stored sequence, not on where the ring starts. */
int rmtl_replay_sample(rmtl_replay *b, int64_t *state, int64_t *next, float *action, float *reward,
                       float *done, int64_t B);
/* the stored transitions, oldest first (size rows each) */
void rmtl_replay_export(const rmtl_replay *b, int64_t *state, int64_t *next, float *action,
                        float *reward, float *done);

/* the behaviour actions of a collection */
typedef struct {
    int kind;            /* RMTL_POLICY_* */
    const float *action; /* ROWS: (n rows, T) per data row; GIVEN: (transitions, T) */
    float noise;         /* ROWS: std of the Gaussian added before clipping to [0, 1] */
    uint64_t seed;
} rmtl_policy;

/* replays the sessions sessions[0..n_episodes) into b in one pass. first is the global index of
   the first transition (keys its random action, so chunked calls equal one call); GIVEN actions
   are indexed from 0 at first. */
int rmtl_collect(rmtl_replay *b, const rmtl_mdp *mdp, const int64_t *sessions, int64_t n_episodes,
                 int64_t first, const rmtl_policy *pol);
#endif
