/* The session MDP (SPEC section 3) and environments stepped many sessions per call. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "pool.h"
#include "rng.h"

#define RMTL_REWARD_CLIP 1e-4f
/* the stream of the session draws (ASCII "EPIS"), keyed by a user seed */
#define RMTL_STREAM_EPISODE 0x45504953ULL

static float rmtl_clip_prob(float p) {
    return p < RMTL_REWARD_CLIP ? RMTL_REWARD_CLIP : p > 1.0f ? 1.0f : p;
}

void rmtl_mdp_reward(float *r, const float *action, const float *label, int T, int kind) {
    for (int k = 0; k < T; k++) {
        float a = kind == RMTL_REWARD_BCE_WRAPPED ? 0.5f + 0.5f * action[k] : action[k],
              y = label[k];
        if (kind == RMTL_REWARD_ABS) {
            r[k] = -fabsf(a - y);
        } else {
            r[k] = y * logf(rmtl_clip_prob(a)) + (1.0f - y) * logf(rmtl_clip_prob(1.0f - a));
        }
    }
}

int64_t rmtl_mdp_draw(int64_t n_sessions, int order, uint64_t seed, int64_t episode) {
    uint64_t S = (uint64_t)n_sessions;
    if (order == RMTL_ORDER_SEQUENTIAL) {
        return (int64_t)((uint64_t)episode % S);
    }
    /* the modulo bias is below S / 2^64: negligible for any real number of sessions */
    return (int64_t)(rmtl_rng_u64(seed, RMTL_STREAM_EPISODE, (uint64_t)episode) % S);
}

/* rmtl_session_context's arguments; C columns per row; *bad_out is set when time decreases */
typedef struct {
    float *out;
    const int64_t *offsets, *time_ms;
    const float *labels;
    int T, C;
    int *bad_out;
} rmtl_session_context_args;

/* sessions [lo, hi) of rmtl_session_context */
static void rmtl_session_context_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_session_context_args *a = ctx;
    int bad = 0;
    for (int64_t s = lo; s < hi; s++) {
        double seen[RMTL_MAX_TASKS] = {0.0};
        int64_t start = a->offsets[s];
        for (int64_t r = start; r < a->offsets[s + 1]; r++) {
            float *o = a->out + (size_t)r * a->C;
            int64_t dt = a->time_ms[r] - a->time_ms[start];
            bad |= r > start && a->time_ms[r] < a->time_ms[r - 1];
            o[0] = (float)log1p((double)(r - start));
            o[1] = (float)log1p((double)(dt > 0 ? dt : 0) / 1000.0);
            for (int k = 0; k < a->T; k++) {
                o[RMTL_CONTEXT_BASE + k] = (float)log1p(seen[k]);
                seen[k] += a->labels[(size_t)r * a->T + k];
            }
        }
    }
    __atomic_or_fetch(a->bad_out, bad, __ATOMIC_RELAXED);
}

int rmtl_session_context(float *out, const int64_t *offsets, int64_t n_sessions,
                         const int64_t *time_ms, const float *labels, int T) {
    int C = RMTL_CONTEXT_BASE + T, bad = 0;
    rmtl_session_context_args session_context_args = {out, offsets, time_ms, labels, T, C, &bad};
    rmtl_parallel_for(n_sessions, 1024, rmtl_session_context_range, &session_context_args);
    return bad ? RMTL_ERR_ARG : RMTL_OK;
}

void rmtl_env_free(rmtl_env *e) {
    if (e != NULL) {
        free(e->session);
        free(e->row);
        free(e->finished);
        free(e);
    }
}

int rmtl_env_create(rmtl_env **out, const rmtl_mdp *mdp, int n, int order, int autoreset,
                    uint64_t seed) {
    *out = NULL;
    if (n < 1 || mdp->n_sessions < 1 || mdp->T < 1 || mdp->F < 1 || mdp->D < 0 ||
        (order != RMTL_ORDER_RANDOM && order != RMTL_ORDER_SEQUENTIAL) ||
        mdp->reward < RMTL_REWARD_BCE || mdp->reward > RMTL_REWARD_BCE_WRAPPED) {
        return RMTL_ERR_ARG;
    }
    rmtl_env *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return RMTL_ERR_NOMEM;
    }
    e->mdp = *mdp;
    e->n = n;
    e->order = order;
    e->autoreset = autoreset;
    e->seed = seed;
    e->session = malloc((size_t)n * sizeof(int64_t));
    e->row = malloc((size_t)n * sizeof(int64_t));
    e->finished = malloc((size_t)n);
    if (e->session == NULL || e->row == NULL || e->finished == NULL) {
        rmtl_env_free(e);
        return RMTL_ERR_NOMEM;
    }
    /* not started: every environment must be reset before its first step */
    memset(e->finished, 1, (size_t)n);
    for (int i = 0; i < n; i++) {
        e->session[i] = 0;
        e->row[i] = mdp->offsets[0];
    }
    *out = e;
    return RMTL_OK;
}

/* environment i starts session s (-1: the next draw) */
static void rmtl_env_start(rmtl_env *e, int i, int64_t s) {
    if (s < 0) {
        s = rmtl_mdp_draw(e->mdp.n_sessions, e->order, e->seed, e->episodes++);
    }
    e->session[i] = s;
    e->row[i] = e->mdp.offsets[s];
    e->finished[i] = 0;
}

/* observation of environment i: the features of its current row */
static void rmtl_env_observe(const rmtl_env *e, int i, int32_t *codes, float *dense) {
    const rmtl_mdp *m = &e->mdp;
    int64_t r = e->row[i];
    memcpy(codes + (size_t)i * m->F, m->codes + (size_t)r * m->F, (size_t)m->F * sizeof(int32_t));
    memcpy(dense + (size_t)i * m->D, m->dense + (size_t)r * m->D, (size_t)m->D * sizeof(float));
}

int rmtl_env_reset(rmtl_env *e, int32_t *codes, float *dense, const int64_t *sessions) {
    if (sessions != NULL) {
        for (int i = 0; i < e->n; i++) {
            if (sessions[i] < 0 || sessions[i] >= e->mdp.n_sessions) {
                return RMTL_ERR_INDEX;
            }
        }
    }
    for (int i = 0; i < e->n; i++) {
        rmtl_env_start(e, i, sessions != NULL ? sessions[i] : -1);
        rmtl_env_observe(e, i, codes, dense);
    }
    return RMTL_OK;
}

int rmtl_env_step(rmtl_env *e, const rmtl_env_step_out *out, const float *action) {
    const rmtl_mdp *m = &e->mdp;
    int T = m->T;
    for (int i = 0; i < e->n; i++) {
        if (e->finished[i]) { /* never reset, or ended without autoreset */
            return RMTL_ERR_ARG;
        }
    }
    /* sequential: auto-resets draw episodes in environment order, so results never depend
       on threads; the work per environment is a few dozen flops */
    for (int i = 0; i < e->n; i++) {
        int64_t r = e->row[i], s = e->session[i];
        int last = r + 1 >= m->offsets[s + 1];
        const float *y = m->labels + (size_t)r * T;
        rmtl_mdp_reward(out->reward + (size_t)i * T, action + (size_t)i * T, y, T, m->reward);
        memcpy(out->labels + (size_t)i * T, y, (size_t)T * sizeof(float));
        out->done[i] = (uint8_t)last;
        out->state[i] = r;
        out->next[i] = last ? r : r + 1;
        out->session[i] = s;
        if (!last) {
            e->row[i] = r + 1;
        } else if (e->autoreset) {
            rmtl_env_start(e, i, -1);
        } else {
            e->finished[i] = 1; /* the observation stays the last row (SPEC: next state) */
        }
        rmtl_env_observe(e, i, out->codes, out->dense);
    }
    return RMTL_OK;
}
