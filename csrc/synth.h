/* Synthetic sessions with known truth (synth.c, SPEC section 8).

   A "world" holds the items (category, latent factors, popularity, price, observed codes);
   users are pure functions of (seed, user id) and are recomputed where needed, so any range
   of users can be generated on its own. Generation is two passes: rmtl_synth_count gives
   every user's rows and sessions, the caller lays out disjoint output slices, and
   rmtl_synth_fill writes them. Every random number comes from rmtl_rng_u64 keyed by
   (seed, domain), (user, session) and (step, slot), so the data never depends on thread
   count or on how users are split into calls. */
#ifndef RMTL_SYNTH_H
#define RMTL_SYNTH_H
#include "rmtl.h"

/* the limits of a world: observed fields, latent dimensions, impressions per session,
   sessions per user, tasks */
#define RMTL_SYNTH_MAX_FIELDS 64
#define RMTL_SYNTH_MAX_LATENT 64
#define RMTL_SYNTH_MAX_LEN 1024
#define RMTL_SYNTH_MAX_SESSIONS 4096
#define RMTL_SYNTH_MAX_TASKS 6

/* Where an observed field comes from. Codes are 1..levels, 0 = missing. */
enum {
    RMTL_SYNTH_USER_SEGMENT = 0,   /* the user's segment; levels == n_segments */
    RMTL_SYNTH_USER_ACTIVITY = 1,  /* quantile bucket of the activity level */
    RMTL_SYNTH_USER_PROJ = 2,      /* quantised noisy projection of the taste theta_u */
    RMTL_SYNTH_USER_NOISE = 3,     /* per-user value unrelated to the responses */
    RMTL_SYNTH_ITEM_CATEGORY = 4,  /* levels == n_categories */
    RMTL_SYNTH_ITEM_PARENT = 5,    /* parent category; levels == n_parents */
    RMTL_SYNTH_ITEM_AVAILABLE = 6, /* 1 available, 2 not; levels == 2 */
    RMTL_SYNTH_ITEM_PRICE = 7,     /* quantile bucket of log price */
    RMTL_SYNTH_ITEM_PROJ = 8,      /* quantised noisy projection of phi_i */
    RMTL_SYNTH_ITEM_NOISE = 9,
    RMTL_SYNTH_CONTEXT = 10,         /* drawn per impression; each level shifts the click logit */
    RMTL_SYNTH_ITEM_POPULARITY = 11, /* quantised noisy popularity pop_i (sales-rank-like) */
    RMTL_SYNTH_TASK_CONTEXT = 12,    /* drawn per impression; each level shifts only the logit of
                                        the field's task (effect * a normal draw per level) */
    RMTL_SYNTH_NUM_KINDS = 13
};

/* one observed field */
typedef struct {
    int kind, levels;
    float missing; /* probability the code is 0 */
    float skew;    /* bucket = floor(levels * q^skew) for a uniform score q: > 1 gives a long
                      tail of rare high levels, 1 equal-frequency buckets */
    int task;      /* RMTL_SYNTH_TASK_CONTEXT: the task (0..n_tasks-1) whose logit it shifts */
    float effect;  /* RMTL_SYNTH_TASK_CONTEXT: sd of the logit shift of each level */
} rmtl_synth_field;

/* the generator's settings */
typedef struct {
    uint64_t seed;
    int64_t n_users, n_items;
    int n_categories, n_parents, n_segments, latent_dim;
    int max_len, max_sessions;
    int n_tasks; /* 2..RMTL_SYNTH_MAX_TASKS; task 0 is the click, tasks 1.. follow it */
    int nested;  /* 1: every task k >= 1 needs the click (y_k = click * Bern(q_k)); 0: all free */
    /* latent structure */
    float mood_sd;         /* session interest z starts at theta_u + mood_sd * noise */
    float segment_weight;  /* share of theta_u explained by the user's segment centre */
    float category_weight; /* share of phi_i explained by its category centre */
    /* task k >= 1's item factor psi_ik = task_corr[k] phi_i + sqrt(1 - task_corr[k]^2) noise_ik
       with its own noise per task ([0] unused); tasks j, k >= 1 then correlate by
       task_corr[j] task_corr[k] */
    float task_corr[RMTL_SYNTH_MAX_TASKS];
    /* probability task k's recorded label is flipped, in [0, 0.5]: the session runs on the
       unflipped responses and truth becomes noise + (1 - 2 noise) p */
    float label_noise[RMTL_SYNTH_MAX_TASKS];
    float bias_sd;     /* sd of the user biases of every task (b_u, c_uk) */
    float pop_sd;      /* sd of the item click popularity */
    float exposure_sd; /* sd of the log exposure weight of an item */
    float price_mean, price_sd, price_category_sd; /* log price: category mean + item noise */
    float availability;                            /* probability an item is available */
    float category_zipf; /* category sizes proportional to (c + 1)^-category_zipf */
    float activity_sd;   /* sd of log activity (mean activity 1) */
    float proj_noise;    /* noise sd added to projections before quantising (signal sd 1) */
    float context_sd;    /* sd of the click-logit shift of each context level */
    /* responses. Task 0 (click): a0 + b_u + pop_i + affinity z . phi_i / sqrt(K) - fatigue t
       + momentum clicks + context; task 1: b0 + c_u1 + task2_affinity theta_u . psi_i1 / sqrt(K)
       - price - unavailable + boost; tasks k >= 2 only b_k + c_uk + task2_affinity theta_u .
       psi_ik / sqrt(K); every task adds its task-context fields and, non-nested, click_lift
       after a click */
    float affinity;            /* weight of z . phi_i / sqrt(K) in the click logit */
    float task2_affinity;      /* weight of theta_u . psi_ik / sqrt(K) in task k's logit, k >= 1 */
    float fatigue;             /* click logit falls by fatigue * t */
    float momentum;            /* click logit rises by momentum per earlier click in the session */
    float drift;               /* after a click z <- (1 - drift) z + drift * phi_i */
    float boost;               /* task-2 logit rises by boost per earlier same-category click */
    float price_weight;        /* task-2 logit falls by price_weight * standardised log price */
    float unavailable_penalty; /* task-2 logit falls by this for unavailable items */
    float click_lift;          /* non-nested: task k's logit rises by this after a click */
    /* exposure inside a session */
    float focus;     /* probability the next item comes from the current category */
    float favourite; /* probability a session starts in the user's favourite category */
    float jump;      /* probability the current category changes after a non-click */
    /* session lengths and counts */
    float sessions_mean;           /* extra sessions ~ Poisson(sessions_mean * activity) */
    float leave_base, leave_slope; /* leave after step t with sigmoid(leave_base + leave_slope t) */
    /* time */
    int64_t start_ms, window_ms; /* first sessions start in [start_ms, start_ms + window_ms / 2) */
    float gap_mean_s, gap_max_s; /* in-session gap: 1 s + Exp(gap_mean_s), at most gap_max_s */
    float tie_prob;              /* probability an in-session gap is 0 ms */
    float between_min_s, between_mean_s; /* between sessions: between_min_s + Exp(mean) */
    int n_fields;
    rmtl_synth_field fields[RMTL_SYNTH_MAX_FIELDS];
} rmtl_synth_config;

/* the items and category structure users are generated against */
typedef struct {
    rmtl_synth_config cfg;
    float *centre;      /* (n_categories, K) category centres */
    int64_t *cat_start; /* (n_categories + 1) item ranges: items are grouped by category */
    float *phi;         /* (n_items, K) */
    float *psi;         /* (n_tasks - 1, n_items, K): psi of tasks 1.. */
    float *pop;         /* (n_items) click popularity */
    float *price;       /* (n_items) standardised log price */
    int32_t *category;  /* (n_items) */
    uint8_t *available; /* (n_items) */
    int32_t *codes;     /* (n_items, F) codes of item fields, 0 for the other kinds */
    double *cum_weight; /* (n_items) cumulative exposure weight */
} rmtl_synth_world;

/* One chunk of output rows, m rows: session id, time (ms), user, item (m); codes (m, F);
   labels and truth (m, n_tasks) with truth the probability of each recorded label given the
   history. */
typedef struct {
    int64_t *session, *time, *user, *item;
    int32_t *codes;
    float *labels, *truth;
} rmtl_synth_rows;

/* RMTL_OK if every setting of cfg is in range, else RMTL_ERR_ARG */
int rmtl_synth_check(const rmtl_synth_config *cfg);
/* the world of cfg (its items) into *out (NULL on failure); RMTL_ERR_ARG unless cfg passes
   rmtl_synth_check */
int rmtl_synth_create(rmtl_synth_world **out, const rmtl_synth_config *cfg);
/* frees w; NULL does nothing */
void rmtl_synth_free(rmtl_synth_world *w);
/* rows and sessions (hi - lo) per user of [lo, hi) */
int rmtl_synth_count(int64_t *rows, int64_t *sessions, const rmtl_synth_world *w, int64_t lo,
                     int64_t hi);
/* users [lo, hi): user u's rows go to [row_start[u-lo], row_start[u-lo+1]) of out, which must
   match rmtl_synth_count; its sessions get ids session_base[u-lo], +1, ...
   offsets (n_tasks): the intercepts of the tasks' logits (a0, b0, ...). */
int rmtl_synth_fill(const rmtl_synth_rows *out, const int64_t *row_start,
                    const int64_t *session_base, const rmtl_synth_world *w, const double *offsets,
                    int64_t lo, int64_t hi);
/* mean (n_tasks) probability of each task's unflipped label over users [lo, hi) without
   writing rows (for calibration), with the intercepts offsets (n_tasks);
   scratch: (hi - lo, n_tasks) doubles */
int rmtl_synth_mean_truth(double *mean, double *scratch, const rmtl_synth_world *w,
                          const double *offsets, int64_t lo, int64_t hi);

#endif
