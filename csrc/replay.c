/* The replay ring buffer: transitions as row indices into the session data (no feature copies),
   batches drawn without replacement, and the one-pass collection of whole sessions into it. */
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "replay.h"
#include "rng.h"

/* the streams of the behaviour actions (ASCII "ACT") and the replay batches ("SAMP"), keyed by
   a user seed */
#define RMTL_STREAM_ACTION 0x41435400ULL
#define RMTL_STREAM_SAMPLE 0x53414d50ULL

void rmtl_replay_free(rmtl_replay *b) {
    if (b != NULL) {
        free(b->state);
        free(b->next);
        free(b->action);
        free(b->reward);
        free(b->done);
        free(b->taken);
        free(b);
    }
}

int rmtl_replay_create(rmtl_replay **out, int64_t capacity, int T, uint64_t seed) {
    *out = NULL;
    if (capacity < 1 || T < 1 || T > RMTL_MAX_TASKS) {
        return RMTL_ERR_ARG;
    }
    rmtl_replay *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return RMTL_ERR_NOMEM;
    }
    size_t n = (size_t)capacity;
    b->capacity = capacity;
    b->T = T;
    b->seed = seed;
    b->state = malloc(n * sizeof(int64_t));
    b->next = malloc(n * sizeof(int64_t));
    b->action = malloc(n * (size_t)T * sizeof(float));
    b->reward = malloc(n * (size_t)T * sizeof(float));
    b->done = malloc(n * sizeof(float));
    b->taken = calloc(n / 64 + 1, sizeof(uint64_t));
    if (b->state == NULL || b->next == NULL || b->action == NULL || b->reward == NULL ||
        b->done == NULL || b->taken == NULL) {
        rmtl_replay_free(b);
        return RMTL_ERR_NOMEM;
    }
    *out = b;
    return RMTL_OK;
}

/* the slot of the i-th oldest stored transition */
static int64_t rmtl_replay_slot(const rmtl_replay *b, int64_t i) {
    return (b->head - b->size + i + b->capacity) % b->capacity;
}

/* after n appends: the ring advances and fills up to capacity */
static void rmtl_replay_advance(rmtl_replay *b, int64_t n) {
    b->head = (int64_t)(((uint64_t)b->head + (uint64_t)n) % (uint64_t)b->capacity);
    b->size = n >= b->capacity - b->size ? b->capacity : b->size + n;
}

void rmtl_replay_push(rmtl_replay *b, const int64_t *state, const int64_t *next,
                      const float *action, const float *reward, const float *done, int64_t n) {
    size_t T = (size_t)b->T;
    /* only the newest capacity transitions survive, so older ones are never written */
    for (int64_t j = n > b->capacity ? n - b->capacity : 0; j < n; j++) {
        int64_t s = (b->head + j) % b->capacity;
        b->state[s] = state[j];
        b->next[s] = next[j];
        memcpy(b->action + (size_t)s * T, action + (size_t)j * T, T * sizeof(float));
        memcpy(b->reward + (size_t)s * T, reward + (size_t)j * T, T * sizeof(float));
        b->done[s] = done[j];
    }
    rmtl_replay_advance(b, n);
}

/* copies stored transition at slot s into row i of the output arrays */
static void rmtl_replay_copy(const rmtl_replay *b, int64_t s, int64_t i, int64_t *state,
                             int64_t *next, float *action, float *reward, float *done) {
    size_t T = (size_t)b->T;
    state[i] = b->state[s];
    next[i] = b->next[s];
    memcpy(action + (size_t)i * T, b->action + (size_t)s * T, T * sizeof(float));
    memcpy(reward + (size_t)i * T, b->reward + (size_t)s * T, T * sizeof(float));
    done[i] = b->done[s];
}

int rmtl_replay_sample(rmtl_replay *b, int64_t *state, int64_t *next, float *action, float *reward,
                       float *done, int64_t B) {
    if (B < 0 || B > b->size) {
        return RMTL_ERR_ARG;
    }
    /* one key per call; rejection of repeats through a bitmap of logical positions: for
       B <= size / 2 fewer than 1.4 B draws are expected, and B = size costs size ln(size) */
    uint64_t key = rmtl_rng_u64(b->seed, RMTL_STREAM_SAMPLE, b->draws++), c = 0;
    uint64_t size = (uint64_t)b->size;
    for (int64_t i = 0; i < B; i++) {
        uint64_t p;
        do {
            p = rmtl_rng_u64(key, 0, c++) % size;
        } while (b->taken[p >> 6] >> (p & 63) & 1u);
        b->taken[p >> 6] |= (uint64_t)1 << (p & 63);
        state[i] = (int64_t)p; /* the position for now; replaced by the transition below */
    }
    for (int64_t i = 0; i < B; i++) {
        int64_t p = state[i];
        b->taken[p >> 6] = 0;
        rmtl_replay_copy(b, rmtl_replay_slot(b, p), i, state, next, action, reward, done);
    }
    return RMTL_OK;
}

void rmtl_replay_export(const rmtl_replay *b, int64_t *state, int64_t *next, float *action,
                        float *reward, float *done) {
    for (int64_t i = 0; i < b->size; i++) {
        rmtl_replay_copy(b, rmtl_replay_slot(b, i), i, state, next, action, reward, done);
    }
}

/* the behaviour action (T) of transition j (global index g) in state row r */
static void rmtl_policy_act(float *a, const rmtl_policy *pol, int64_t r, int64_t j, uint64_t g,
                            int T) {
    for (int k = 0; k < T; k++) {
        uint64_t idx = g * (uint64_t)T + (uint64_t)k;
        if (pol->kind == RMTL_POLICY_UNIFORM) {
            a[k] = rmtl_rng_uniform(pol->seed, RMTL_STREAM_ACTION, idx);
        } else if (pol->kind == RMTL_POLICY_GIVEN) {
            a[k] = pol->action[(size_t)j * T + k];
        } else {
            float v = pol->action[(size_t)r * T + k];
            if (pol->noise > 0.0f) {
                v += pol->noise * rmtl_rng_normal(pol->seed, RMTL_STREAM_ACTION, idx);
            }
            a[k] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
    }
}

/* rmtl_collect's arguments: transition j (from 0 in this call) goes to slot (head + j) % cap,
   the first skip are never written */
typedef struct {
    rmtl_replay *b;
    const rmtl_mdp *mdp;
    const int64_t *sessions, *start;
    const rmtl_policy *pol;
    int64_t first, skip, head, cap;
    int T;
} rmtl_collect_episodes_args;

/* episodes [lo, hi) of rmtl_collect */
static void rmtl_collect_episodes_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_collect_episodes_args *a = ctx;
    const rmtl_mdp *mdp = a->mdp;
    rmtl_replay *b = a->b;
    for (int64_t e = lo; e < hi; e++) {
        int64_t r0 = mdp->offsets[a->sessions[e]], r1 = mdp->offsets[a->sessions[e] + 1];
        for (int64_t r = r0; r < r1; r++) {
            int64_t j = a->start[e] + (r - r0);
            if (j < a->skip) {
                continue;
            }
            int64_t s = (a->head + j) % a->cap;
            float *act = b->action + (size_t)s * a->T;
            rmtl_policy_act(act, a->pol, r, j, (uint64_t)(a->first + j), a->T);
            rmtl_mdp_reward(b->reward + (size_t)s * a->T, act, mdp->labels + (size_t)r * a->T, a->T,
                            mdp->reward);
            b->state[s] = r;
            b->next[s] = r + 1 < r1 ? r + 1 : r;
            b->done[s] = r + 1 < r1 ? 0.0f : 1.0f;
        }
    }
}

int rmtl_collect(rmtl_replay *b, const rmtl_mdp *mdp, const int64_t *sessions, int64_t n_episodes,
                 int64_t first, const rmtl_policy *pol) {
    if (mdp->T != b->T || n_episodes < 0 || first < 0) {
        return RMTL_ERR_ARG;
    }
    /* start[e]: index of episode e's first transition within this call */
    int64_t *start = malloc(((size_t)n_episodes + 1) * sizeof(int64_t));
    if (start == NULL) {
        return RMTL_ERR_NOMEM;
    }
    start[0] = 0;
    for (int64_t e = 0; e < n_episodes; e++) {
        int64_t s = sessions[e];
        if (s < 0 || s >= mdp->n_sessions) {
            free(start);
            return RMTL_ERR_INDEX;
        }
        start[e + 1] = start[e] + (mdp->offsets[s + 1] - mdp->offsets[s]);
    }
    int64_t total = start[n_episodes], skip = total - b->capacity, head = b->head,
            cap = b->capacity;
    int T = b->T;
    /* transition j goes to slot (head + j) mod capacity; only the newest capacity transitions
       are written, so every written slot is distinct and the episodes run in parallel */
    rmtl_collect_episodes_args collect_episodes_args = {b,     mdp,  sessions, start, pol,
                                                        first, skip, head,     cap,   T};
    rmtl_parallel_for(n_episodes, n_episodes > 4096 ? 256 : n_episodes, rmtl_collect_episodes_range,
                      &collect_episodes_args);
    free(start);
    rmtl_replay_advance(b, total);
    return RMTL_OK;
}
