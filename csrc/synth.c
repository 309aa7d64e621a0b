/* The synthetic session generator (see synth.h and SPEC section 8). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "rng.h"
#include "synth.h"

/* random-number domains: each kind of draw has its own key so draws never collide */
enum {
    DOM_CENTRE = 1,    /* stream category, index k */
    DOM_SEGMENT = 2,   /* stream segment, index k */
    DOM_ITEM = 3,      /* stream item, index slot */
    DOM_USER = 4,      /* stream user, index slot */
    DOM_SESSION = 5,   /* stream (user, session), index slot */
    DOM_STEP = 6,      /* stream (user, session), index step * STEP_SLOTS + slot */
    DOM_RETRY = 7,     /* stream (user, session), index step * MAX_TRIES + try */
    DOM_DIRECTION = 8, /* stream field, index k: projection directions */
    DOM_CONTEXT = 9,   /* stream field, index level: context effects */
    /* the draws of tasks beyond the first two, of label noise and of task-context fields */
    DOM_TASK_ITEM = 10, /* stream item, index task * RMTL_SYNTH_MAX_LATENT + k: psi noise */
    DOM_TASK_USER = 11, /* stream user, index task: user biases c_uk, task >= 2 */
    DOM_LABEL = 12,     /* stream (user, session), index step * LABEL_SLOTS + slot */
    DOM_TASK_FIELD = 13 /* stream field, index level: task-context effects */
};

enum { STEP_SLOTS = 16 + RMTL_SYNTH_MAX_FIELDS, MAX_TRIES = 64, FAVOURITE_CANDIDATES = 8 };
/* step slots */
enum { S_FOCUS, S_PICK, S_CLICK, S_TASK2, S_LEAVE, S_GAP, S_TIE, S_JUMP, S_JUMP_CAT, S_CTX = 16 };
/* session slots */
enum { SS_FAV, SS_CAT, SS_GAP, SS_Z = 8 };
/* label slots of a step: task k >= 2's response at k, task k's label flip at FLIP + k (task 0's
   and 1's responses are the step slots S_CLICK and S_TASK2) */
enum { FLIP = RMTL_SYNTH_MAX_TASKS, LABEL_SLOTS = 2 * RMTL_SYNTH_MAX_TASKS };

static uint64_t synth_key(uint64_t seed, int domain) {
    return rmtl_rng_u64(seed, 0x5E17000ULL + (uint64_t)domain, 0);
}

/* uniform in (0, 1) with 53 random bits */
static double synth_u01(uint64_t key, uint64_t stream, uint64_t index) {
    return ((double)(rmtl_rng_u64(key, stream, index) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* standard normal by Box-Muller; normals have their own index space (a derived key), so
   normal index i and uniform index i of the same key are independent */
static double synth_normal(uint64_t key, uint64_t stream, uint64_t index) {
    uint64_t nkey = key ^ 0x6A09E667F3BCC909ULL;
    double u1 = synth_u01(nkey, stream, 2 * index), u2 = synth_u01(nkey, stream, 2 * index + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double synth_exponential(double mean, double u) {
    return -mean * log(u);
}

static double synth_sigmoid(double x) {
    return 1.0 / (1.0 + exp(-x));
}

static double synth_phi(double x) {
    return 0.5 * erfc(-x / 1.4142135623730951);
}

/* Poisson draw by inversion of one uniform (means here are small) */
static int64_t synth_poisson(double mean, double u) {
    double p = exp(-mean), cdf = p;
    int64_t k = 0;
    while (u > cdf && k < 100000) {
        k++;
        p *= mean / (double)k;
        cdf += p;
        if (p < 1e-300) {
            break;
        }
    }
    return k;
}

/* code of a field from a score x that is standard normal over the population */
static int32_t synth_code(const rmtl_synth_field *f, double x, double u_missing) {
    if (u_missing < (double)f->missing) {
        return 0;
    }
    double q = pow(synth_phi(x), (double)f->skew);
    int level = (int)(q * f->levels);
    return 1 + (level < f->levels ? level : f->levels - 1);
}

static int synth_is_user(int kind) {
    return kind <= RMTL_SYNTH_USER_NOISE;
}

static double synth_dot(const float *a, const float *b, int K) {
    double s = 0.0;
    for (int k = 0; k < K; k++) {
        s += (double)a[k] * (double)b[k];
    }
    return s;
}

/* quantised noisy projection of a latent vector v (K) with unit-variance entries onto the
   field's fixed random direction; the score is standardised before bucketing */
static double synth_projection(const rmtl_synth_config *c, int field, const float *v,
                               double noise) {
    uint64_t key = synth_key(c->seed, DOM_DIRECTION);
    double s = 0.0, norm = 0.0;
    for (int k = 0; k < c->latent_dim; k++) {
        double d = synth_normal(key, (uint64_t)field, (uint64_t)k);
        s += d * (double)v[k];
        norm += d * d;
    }
    double signal = norm > 0.0 ? s / sqrt(norm) : 0.0;
    double pn = (double)c->proj_noise;
    return (signal + pn * noise) / sqrt(1.0 + pn * pn);
}

static int synth_parent(const rmtl_synth_config *cfg, int category) {
    return (int)((int64_t)category * cfg->n_parents / cfg->n_categories);
}

int rmtl_synth_check(const rmtl_synth_config *c) {
    /* n_items >= max_len: a session can always show an item it has not shown yet */
    int ok = c->n_users >= 1 && c->n_categories >= 1 && c->n_items >= c->n_categories &&
             c->n_items >= c->max_len && c->n_parents >= 1 && c->n_parents <= c->n_categories &&
             c->n_segments >= 1 && c->latent_dim >= 1 && c->latent_dim <= RMTL_SYNTH_MAX_LATENT &&
             c->max_len >= 1 && c->max_len <= RMTL_SYNTH_MAX_LEN && c->max_sessions >= 1 &&
             c->max_sessions <= RMTL_SYNTH_MAX_SESSIONS && c->n_fields >= 1 &&
             c->n_fields <= RMTL_SYNTH_MAX_FIELDS && c->window_ms >= 0 && c->n_tasks >= 2 &&
             c->n_tasks <= RMTL_SYNTH_MAX_TASKS && c->segment_weight >= 0.0f &&
             c->segment_weight <= 1.0f && c->category_weight >= 0.0f &&
             c->category_weight <= 1.0f && c->availability >= 0.0f && c->availability <= 1.0f &&
             c->focus >= 0.0f && c->focus <= 1.0f && c->favourite >= 0.0f && c->favourite <= 1.0f &&
             c->jump >= 0.0f && c->jump <= 1.0f && c->drift >= 0.0f && c->drift <= 1.0f &&
             c->tie_prob >= 0.0f && c->tie_prob <= 1.0f && c->sessions_mean >= 0.0f &&
             c->gap_mean_s >= 0.0f && c->gap_max_s >= 1.0f && c->between_min_s >= 0.0f &&
             c->between_mean_s >= 0.0f;
    const float sds[] = {c->mood_sd,    c->bias_sd,           c->pop_sd,      c->exposure_sd,
                         c->price_sd,   c->price_category_sd, c->activity_sd, c->proj_noise,
                         c->context_sd, c->category_zipf};
    for (size_t i = 0; ok && i < sizeof(sds) / sizeof(sds[0]); i++) {
        ok = sds[i] >= 0.0f && isfinite(sds[i]);
    }
    const float any[] = {
        c->affinity,     c->task2_affinity,      c->fatigue,    c->momentum,   c->boost,
        c->price_weight, c->unavailable_penalty, c->click_lift, c->leave_base, c->leave_slope,
        c->price_mean};
    for (size_t i = 0; ok && i < sizeof(any) / sizeof(any[0]); i++) {
        ok = isfinite(any[i]);
    }
    for (int k = 0; ok && k < c->n_tasks; k++) {
        /* task_corr[0] is unused; NaN fails the comparisons */
        ok = (k == 0 || (c->task_corr[k] >= -1.0f && c->task_corr[k] <= 1.0f)) &&
             c->label_noise[k] >= 0.0f && c->label_noise[k] <= 0.5f;
    }
    for (int f = 0; ok && f < c->n_fields; f++) {
        const rmtl_synth_field *fd = &c->fields[f];
        ok = fd->kind >= 0 && fd->kind < RMTL_SYNTH_NUM_KINDS && fd->levels >= 1 &&
             fd->missing >= 0.0f && fd->missing < 1.0f && fd->skew > 0.0f && isfinite(fd->skew);
        ok = ok && (fd->kind != RMTL_SYNTH_USER_SEGMENT || fd->levels == c->n_segments) &&
             (fd->kind != RMTL_SYNTH_ITEM_CATEGORY || fd->levels == c->n_categories) &&
             (fd->kind != RMTL_SYNTH_ITEM_PARENT || fd->levels == c->n_parents) &&
             (fd->kind != RMTL_SYNTH_ITEM_AVAILABLE || fd->levels == 2) &&
             (fd->kind != RMTL_SYNTH_TASK_CONTEXT || (fd->task >= 0 && fd->task < c->n_tasks &&
                                                      fd->effect >= 0.0f && isfinite(fd->effect)));
    }
    return ok ? RMTL_OK : RMTL_ERR_ARG;
}

/* item ranges per category: sizes proportional to (c + 1)^-zipf, at least one item each */
static void synth_category_ranges(int64_t *start, const rmtl_synth_config *c) {
    double total = 0.0;
    for (int k = 0; k < c->n_categories; k++) {
        total += pow(k + 1.0, -(double)c->category_zipf);
    }
    int64_t spare = c->n_items - c->n_categories;
    double acc = 0.0;
    start[0] = 0;
    for (int k = 0; k < c->n_categories; k++) {
        acc += pow(k + 1.0, -(double)c->category_zipf);
        start[k + 1] = (k + 1) + (int64_t)floor((double)spare * acc / total + 1e-9);
    }
    start[c->n_categories] = c->n_items;
}

static void synth_item(rmtl_synth_world *w, int64_t i, int cat) {
    const rmtl_synth_config *c = &w->cfg;
    int K = c->latent_dim;
    uint64_t key = synth_key(c->seed, DOM_ITEM), ckey = synth_key(c->seed, DOM_CENTRE);
    double cw = c->category_weight, nw = sqrt(1.0 - cw * cw);
    double tc = c->task_corr[1], tn = sqrt(1.0 - tc * tc);
    float *phi = w->phi + i * K, *psi = w->psi + i * K;
    for (int k = 0; k < K; k++) {
        phi[k] = (float)(cw * w->centre[(int64_t)cat * K + k] +
                         nw * synth_normal(key, (uint64_t)i, (uint64_t)k));
        psi[k] = (float)(tc * phi[k] + tn * synth_normal(key, (uint64_t)i, (uint64_t)(K + k)));
    }
    /* tasks beyond the second: their own noise, from their own domain */
    uint64_t tkey = synth_key(c->seed, DOM_TASK_ITEM);
    for (int j = 2; j < c->n_tasks; j++) {
        double cj = c->task_corr[j], sj = sqrt(1.0 - cj * cj);
        float *pj = w->psi + ((int64_t)(j - 1) * c->n_items + i) * K;
        for (int k = 0; k < K; k++) {
            uint64_t idx = (uint64_t)j * RMTL_SYNTH_MAX_LATENT + (uint64_t)k;
            pj[k] = (float)(cj * phi[k] + sj * synth_normal(tkey, (uint64_t)i, idx));
        }
    }
    uint64_t slot = (uint64_t)(2 * K);
    double e1 = synth_normal(key, (uint64_t)i, slot), e2 = synth_normal(key, (uint64_t)i, slot + 1);
    w->pop[i] = (float)(c->pop_sd * e1);
    double weight = exp(c->exposure_sd * (0.6 * e1 + 0.8 * e2));
    /* log price: category mean (its own normal draw) + item noise, standardised */
    double pc = synth_normal(ckey, (uint64_t)cat, (uint64_t)RMTL_SYNTH_MAX_LATENT);
    double pi = synth_normal(key, (uint64_t)i, slot + 2);
    double psd = sqrt((double)c->price_category_sd * c->price_category_sd +
                      (double)c->price_sd * c->price_sd);
    w->price[i] = (float)(psd > 0.0 ? (c->price_category_sd * pc + c->price_sd * pi) / psd : 0.0);
    w->available[i] = synth_u01(key, (uint64_t)i, 0) < c->availability;
    w->category[i] = cat;
    w->cum_weight[i] = weight; /* turned cumulative after the parallel loop */
    double pn = (double)c->proj_noise;
    for (int f = 0; f < c->n_fields; f++) {
        const rmtl_synth_field *fd = &c->fields[f];
        int32_t *code = &w->codes[i * c->n_fields + f];
        double miss = synth_u01(key, (uint64_t)i, 1 + (uint64_t)f);
        double noise = synth_normal(key, (uint64_t)i, 2 * (uint64_t)K + 8 + (uint64_t)f);
        switch (fd->kind) {
        case RMTL_SYNTH_ITEM_CATEGORY:
            *code = miss < fd->missing ? 0 : cat + 1;
            break;
        case RMTL_SYNTH_ITEM_PARENT:
            *code = miss < fd->missing ? 0 : synth_parent(c, cat) + 1;
            break;
        case RMTL_SYNTH_ITEM_AVAILABLE:
            *code = miss < fd->missing ? 0 : (w->available[i] ? 1 : 2);
            break;
        case RMTL_SYNTH_ITEM_PRICE:
            *code = synth_code(fd, w->price[i], miss);
            break;
        case RMTL_SYNTH_ITEM_PROJ:
            *code = synth_code(fd, synth_projection(c, f, phi, noise), miss);
            break;
        case RMTL_SYNTH_ITEM_NOISE:
            *code = synth_code(fd, noise, miss);
            break;
        case RMTL_SYNTH_ITEM_POPULARITY:
            *code = synth_code(fd, (e1 + pn * noise) / sqrt(1.0 + pn * pn), miss);
            break;
        default:
            *code = 0;
        }
    }
}

void rmtl_synth_free(rmtl_synth_world *w) {
    if (w == NULL) {
        return;
    }
    free(w->centre);
    free(w->cat_start);
    free(w->phi);
    free(w->psi);
    free(w->pop);
    free(w->price);
    free(w->category);
    free(w->available);
    free(w->codes);
    free(w->cum_weight);
    free(w);
}

/* the items of categories [lo, hi) of the world ctx */
static void rmtl_synth_items_range(void *ctx, int64_t lo, int64_t hi) {
    rmtl_synth_world *w = ctx;
    for (int64_t k = lo; k < hi; k++) {
        for (int64_t i = w->cat_start[k]; i < w->cat_start[k + 1]; i++) {
            synth_item(w, i, (int)k);
        }
    }
}

int rmtl_synth_create(rmtl_synth_world **out, const rmtl_synth_config *cfg) {
    *out = NULL;
    if (rmtl_synth_check(cfg) != RMTL_OK) {
        return RMTL_ERR_ARG;
    }
    rmtl_synth_world *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return RMTL_ERR_NOMEM;
    }
    w->cfg = *cfg;
    int64_t n = cfg->n_items, K = cfg->latent_dim, C = cfg->n_categories;
    w->centre = malloc(sizeof(float) * (size_t)(C * K));
    w->cat_start = malloc(sizeof(int64_t) * (size_t)(C + 1));
    w->phi = malloc(sizeof(float) * (size_t)(n * K));
    w->psi = malloc(sizeof(float) * (size_t)((cfg->n_tasks - 1) * n * K));
    w->pop = malloc(sizeof(float) * (size_t)n);
    w->price = malloc(sizeof(float) * (size_t)n);
    w->category = malloc(sizeof(int32_t) * (size_t)n);
    w->available = malloc((size_t)n);
    w->codes = malloc(sizeof(int32_t) * (size_t)(n * cfg->n_fields));
    w->cum_weight = malloc(sizeof(double) * (size_t)n);
    if (!w->centre || !w->cat_start || !w->phi || !w->psi || !w->pop || !w->price || !w->category ||
        !w->available || !w->codes || !w->cum_weight) {
        rmtl_synth_free(w);
        return RMTL_ERR_NOMEM;
    }
    uint64_t ckey = synth_key(cfg->seed, DOM_CENTRE);
    for (int64_t j = 0; j < C * K; j++) {
        w->centre[j] = (float)synth_normal(ckey, (uint64_t)(j / K), (uint64_t)(j % K));
    }
    synth_category_ranges(w->cat_start, cfg);
    rmtl_parallel_for(C, 1, rmtl_synth_items_range, w);
    for (int64_t i = 1; i < n; i++) {
        w->cum_weight[i] += w->cum_weight[i - 1];
    }
    *out = w;
    return RMTL_OK;
}

/* ------------------------------------------------------------------ users */

typedef struct {
    float theta[RMTL_SYNTH_MAX_LATENT];
    double bias[RMTL_SYNTH_MAX_TASKS]; /* b_u (click), c_u1, c_u2, ... */
    double activity;
    int64_t n_sessions;
    int favourite;
    int64_t first_start;
    int32_t codes[RMTL_SYNTH_MAX_FIELDS]; /* user-field codes, 0 for other kinds */
} synth_user;

/* index of the item whose cumulative weight first exceeds target in [lo, hi) */
static int64_t synth_search(const double *cum, int64_t lo, int64_t hi, double target) {
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (cum[mid] > target) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* an item of category cat (or of all items when cat < 0) drawn by exposure weight */
static int64_t synth_draw_item(const rmtl_synth_world *w, int cat, double u) {
    int64_t lo = cat < 0 ? 0 : w->cat_start[cat],
            hi = cat < 0 ? w->cfg.n_items : w->cat_start[cat + 1];
    double base = lo > 0 ? w->cum_weight[lo - 1] : 0.0;
    int64_t i = synth_search(w->cum_weight, lo, hi, base + u * (w->cum_weight[hi - 1] - base));
    return i < hi ? i : hi - 1;
}

/* a category with probability proportional to its size */
static int synth_draw_category(const rmtl_synth_world *w, double u) {
    int64_t i = (int64_t)(u * (double)w->cfg.n_items);
    return w->category[i < w->cfg.n_items ? i : w->cfg.n_items - 1];
}

static void synth_make_user(synth_user *s, const rmtl_synth_world *w, int64_t u) {
    const rmtl_synth_config *c = &w->cfg;
    int K = c->latent_dim;
    uint64_t key = synth_key(c->seed, DOM_USER), skey = synth_key(c->seed, DOM_SEGMENT);
    uint64_t us = (uint64_t)u;
    int seg = (int)(synth_u01(key, us, 0) * c->n_segments);
    seg = seg < c->n_segments ? seg : c->n_segments - 1;
    double sw = c->segment_weight, nw = sqrt(1.0 - sw * sw);
    for (int k = 0; k < K; k++) {
        s->theta[k] = (float)(sw * synth_normal(skey, (uint64_t)seg, (uint64_t)k) +
                              nw * synth_normal(key, us, (uint64_t)(8 + k)));
    }
    double la = synth_normal(key, us, 1);
    s->activity = exp(c->activity_sd * la - 0.5 * (double)c->activity_sd * c->activity_sd);
    s->bias[0] = c->bias_sd * synth_normal(key, us, 2);
    s->bias[1] = c->bias_sd * synth_normal(key, us, 3);
    uint64_t tkey = synth_key(c->seed, DOM_TASK_USER);
    for (int j = 2; j < c->n_tasks; j++) {
        s->bias[j] = c->bias_sd * synth_normal(tkey, us, (uint64_t)j);
    }
    int64_t extra = synth_poisson((double)c->sessions_mean * s->activity, synth_u01(key, us, 1));
    s->n_sessions = 1 + extra < c->max_sessions ? 1 + extra : c->max_sessions;
    s->first_start = c->start_ms + (int64_t)(synth_u01(key, us, 2) * 0.5 * (double)c->window_ms);
    /* favourite: the best-matching of a few categories drawn by size */
    double best = -INFINITY;
    s->favourite = 0;
    for (int j = 0; j < FAVOURITE_CANDIDATES; j++) {
        int cat = synth_draw_category(w, synth_u01(key, us, (uint64_t)(16 + j)));
        double d = synth_dot(s->theta, w->centre + (int64_t)cat * K, K);
        if (d > best) {
            best = d;
            s->favourite = cat;
        }
    }
    for (int f = 0; f < c->n_fields; f++) {
        const rmtl_synth_field *fd = &c->fields[f];
        double miss = synth_u01(key, us, (uint64_t)(32 + f));
        double noise = synth_normal(key, us, (uint64_t)(RMTL_SYNTH_MAX_LATENT + 8 + f));
        switch (fd->kind) {
        case RMTL_SYNTH_USER_SEGMENT:
            s->codes[f] = miss < fd->missing ? 0 : seg + 1;
            break;
        case RMTL_SYNTH_USER_ACTIVITY:
            s->codes[f] = synth_code(fd, la, miss);
            break;
        case RMTL_SYNTH_USER_PROJ:
            s->codes[f] = synth_code(fd, synth_projection(c, f, s->theta, noise), miss);
            break;
        case RMTL_SYNTH_USER_NOISE:
            s->codes[f] = synth_code(fd, noise, miss);
            break;
        default:
            s->codes[f] = 0;
        }
    }
}

/* codes (F) of one impression (when codes != NULL): user fields from the user, item fields
   from the item, context fields drawn for this step; returns the context's click-logit shift
   and adds the task-context fields' shifts of each task's logit to task_shift (n_tasks) */
static double synth_row_codes(int32_t *codes, double *task_shift, const rmtl_synth_world *w,
                              const synth_user *s, int64_t i, uint64_t st, uint64_t base) {
    const rmtl_synth_config *c = &w->cfg;
    uint64_t skey = synth_key(c->seed, DOM_STEP), xkey = synth_key(c->seed, DOM_CONTEXT);
    uint64_t tkey = synth_key(c->seed, DOM_TASK_FIELD);
    double shift = 0.0;
    for (int f = 0; f < c->n_fields; f++) {
        const rmtl_synth_field *fd = &c->fields[f];
        int32_t code;
        if (fd->kind == RMTL_SYNTH_CONTEXT || fd->kind == RMTL_SYNTH_TASK_CONTEXT) {
            double x = synth_normal(skey, st, base + S_CTX + (uint64_t)f);
            code = synth_code(fd, x, synth_u01(skey, st, base + S_CTX + (uint64_t)f));
            if (code > 0 && fd->kind == RMTL_SYNTH_CONTEXT) {
                shift += c->context_sd * synth_normal(xkey, (uint64_t)f, (uint64_t)code);
            } else if (code > 0) {
                task_shift[fd->task] +=
                    fd->effect * synth_normal(tkey, (uint64_t)f, (uint64_t)code);
            }
        } else {
            code = synth_is_user(fd->kind) ? s->codes[f] : w->codes[i * c->n_fields + f];
        }
        if (codes) {
            codes[f] = code;
        }
    }
    return shift;
}

static uint64_t synth_stream(int64_t u, int64_t session) {
    return (uint64_t)u * RMTL_SYNTH_MAX_SESSIONS + (uint64_t)session;
}

/* impressions of one session: stop after step t with probability growing in t */
static int64_t synth_session_length(const rmtl_synth_config *c, uint64_t key, uint64_t stream) {
    int64_t t = 0;
    while (t + 1 < c->max_len) {
        double leave = synth_sigmoid((double)c->leave_base + (double)c->leave_slope * (double)t);
        if (synth_u01(key, stream, (uint64_t)t * STEP_SLOTS + S_LEAVE) < leave) {
            break;
        }
        t++;
    }
    return t + 1;
}

/* all impressions of a user */
static int64_t synth_user_rows(const rmtl_synth_world *w, const synth_user *s, int64_t u) {
    uint64_t key = synth_key(w->cfg.seed, DOM_STEP);
    int64_t n = 0;
    for (int64_t j = 0; j < s->n_sessions; j++) {
        n += synth_session_length(&w->cfg, key, synth_stream(u, j));
    }
    return n;
}

/* rmtl_synth_count's arguments; lo: the first user */
typedef struct {
    int64_t *rows, *sessions;
    const rmtl_synth_world *w;
    int64_t lo;
} rmtl_synth_count_args;

/* users a->lo + [lo, hi) of rmtl_synth_count */
static void rmtl_synth_count_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_synth_count_args *a = ctx;
    for (int64_t k = lo; k < hi; k++) {
        synth_user s;
        synth_make_user(&s, a->w, a->lo + k);
        a->rows[k] = synth_user_rows(a->w, &s, a->lo + k);
        a->sessions[k] = s.n_sessions;
    }
}

int rmtl_synth_count(int64_t *rows, int64_t *sessions, const rmtl_synth_world *w, int64_t lo,
                     int64_t hi) {
    if (lo < 0 || hi > w->cfg.n_users || lo > hi) {
        return RMTL_ERR_ARG;
    }
    rmtl_synth_count_args synth_count_args = {rows, sessions, w, lo};
    rmtl_parallel_for(hi - lo, 64, rmtl_synth_count_range, &synth_count_args);
    return RMTL_OK;
}

static int synth_seen(const int64_t *shown, int64_t t, int64_t i) {
    for (int64_t k = 0; k < t; k++) {
        if (shown[k] == i) {
            return 1;
        }
    }
    return 0;
}

/* the next item of a session: never one already shown in it (a session holds each item once,
   as RetailRocket's one-row-per-(session, item) recipe requires) */
static int64_t synth_next_item(const rmtl_synth_world *w, const int64_t *shown, int64_t t, int cat,
                               uint64_t skey, uint64_t rkey, uint64_t stream) {
    const rmtl_synth_config *c = &w->cfg;
    double focus = synth_u01(skey, stream, (uint64_t)t * STEP_SLOTS + S_FOCUS);
    int from = focus < c->focus ? cat : -1;
    for (int tr = 0; tr < MAX_TRIES; tr++) {
        uint64_t idx = (uint64_t)t * MAX_TRIES + (uint64_t)tr;
        double u = tr == 0 ? synth_u01(skey, stream, (uint64_t)t * STEP_SLOTS + S_PICK)
                           : synth_u01(rkey, stream, idx);
        int64_t i = synth_draw_item(w, tr < MAX_TRIES / 2 ? from : -1, u);
        if (!synth_seen(shown, t, i)) {
            return i;
        }
    }
    /* every draw repeated (tiny item sets): the first unshown item */
    for (int64_t i = 0; i < c->n_items; i++) {
        if (!synth_seen(shown, t, i)) {
            return i;
        }
    }
    return 0;
}

/* the recorded labels and truth (T) of one row from the unflipped labels y and their
   probabilities p: task k's label flips with probability label_noise[k], and its truth becomes
   the probability of the recorded label */
static void synth_record(float *labels, float *truth, const rmtl_synth_config *c, const int *y,
                         const double *p, uint64_t lkey, uint64_t st, uint64_t t) {
    for (int k = 0; k < c->n_tasks; k++) {
        double e = c->label_noise[k];
        int flip = e > 0.0 && synth_u01(lkey, st, t * LABEL_SLOTS + FLIP + (uint64_t)k) < e;
        labels[k] = (float)(y[k] ^ flip);
        truth[k] = (float)(e > 0.0 ? e + (1.0 - 2.0 * e) * p[k] : p[k]);
    }
}

/* Simulate all sessions of user u. With out != NULL rows go to out at offset `row`; sums
   (n_tasks) accumulate the unflipped truth of every row. Returns the number of rows. */
static int64_t synth_run_user(const rmtl_synth_world *w, const synth_user *s, int64_t u,
                              const rmtl_synth_rows *out, int64_t row, int64_t session_id,
                              const double *offsets, double *sums) {
    const rmtl_synth_config *c = &w->cfg;
    int K = c->latent_dim, F = c->n_fields, T = c->n_tasks;
    double sqk = sqrt((double)K), a0 = offsets[0], b0 = offsets[1];
    uint64_t skey = synth_key(c->seed, DOM_STEP), rkey = synth_key(c->seed, DOM_RETRY);
    uint64_t sskey = synth_key(c->seed, DOM_SESSION), lkey = synth_key(c->seed, DOM_LABEL);
    int64_t shown[RMTL_SYNTH_MAX_LEN];
    int clicked[RMTL_SYNTH_MAX_LEN];
    float z[RMTL_SYNTH_MAX_LATENT];
    int64_t n = 0, clock = s->first_start;
    for (int64_t j = 0; j < s->n_sessions; j++) {
        uint64_t st = synth_stream(u, j);
        int64_t len = synth_session_length(c, skey, st);
        /* the session's interest: the user's taste plus a session mood */
        for (int k = 0; k < K; k++) {
            z[k] = (float)(s->theta[k] + c->mood_sd * synth_normal(sskey, st, SS_Z + k));
        }
        int cat = synth_u01(sskey, st, SS_FAV) < c->favourite
                      ? s->favourite
                      : synth_draw_category(w, synth_u01(sskey, st, SS_CAT));
        int n_clicked = 0;
        for (int64_t t = 0; t < len; t++) {
            uint64_t base = (uint64_t)t * STEP_SLOTS;
            if (t > 0) {
                double gap =
                    1.0 + synth_exponential(c->gap_mean_s, synth_u01(skey, st, base + S_GAP));
                gap = gap < c->gap_max_s ? gap : c->gap_max_s;
                int tie = synth_u01(skey, st, base + S_TIE) < c->tie_prob;
                clock += tie ? 0 : (int64_t)(gap * 1000.0);
            }
            int64_t i = synth_next_item(w, shown, t, cat, skey, rkey, st);
            shown[t] = i;
            int icat = w->category[i];
            double logit = a0 + s->bias[0] + w->pop[i] +
                           c->affinity * synth_dot(z, w->phi + i * K, K) / sqk -
                           c->fatigue * (double)t + c->momentum * (double)n_clicked;
            int32_t *codes = out ? out->codes + (row + n) * F : NULL;
            double shift[RMTL_SYNTH_MAX_TASKS] = {0.0};
            logit += synth_row_codes(codes, shift, w, s, i, st, base);
            logit += shift[0];
            int same = 0;
            for (int k = 0; k < n_clicked; k++) {
                same += clicked[k] == icat;
            }
            double p[RMTL_SYNTH_MAX_TASKS];
            int y[RMTL_SYNTH_MAX_TASKS];
            p[0] = synth_sigmoid(logit);
            y[0] = synth_u01(skey, st, base + S_CLICK) < p[0];
            for (int k = 1; k < T; k++) {
                const float *psi = w->psi + ((int64_t)(k - 1) * c->n_items + i) * K;
                double lk = (k == 1 ? b0 : offsets[k]) + s->bias[k] +
                            c->task2_affinity * synth_dot(s->theta, psi, K) / sqk;
                if (k == 1) {
                    lk = lk - c->price_weight * w->price[i] + c->boost * same -
                         (w->available[i] ? 0.0 : c->unavailable_penalty);
                }
                lk += shift[k];
                double q1 = synth_sigmoid(lk + (c->nested ? 0.0 : c->click_lift));
                double q0 = c->nested ? 0.0 : synth_sigmoid(lk);
                double v = k == 1 ? synth_u01(skey, st, base + S_TASK2)
                                  : synth_u01(lkey, st, (uint64_t)t * LABEL_SLOTS + (uint64_t)k);
                y[k] = v < (y[0] ? q1 : q0);
                p[k] = p[0] * q1 + (1.0 - p[0]) * q0;
            }
            for (int k = 0; k < T; k++) {
                sums[k] += p[k];
            }
            if (out) {
                int64_t r = row + n;
                out->session[r] = session_id + j;
                out->time[r] = clock;
                out->user[r] = u;
                out->item[r] = i;
                synth_record(out->labels + T * r, out->truth + T * r, c, y, p, lkey, st,
                             (uint64_t)t);
            }
            if (y[0]) {
                const float *phi = w->phi + i * K;
                for (int k = 0; k < K; k++) {
                    z[k] = (float)((1.0 - c->drift) * z[k] + c->drift * phi[k]);
                }
                clicked[n_clicked++] = icat;
                cat = icat;
            } else if (synth_u01(skey, st, base + S_JUMP) < c->jump) {
                cat = synth_draw_category(w, synth_u01(skey, st, base + S_JUMP_CAT));
            }
            n++;
        }
        double between =
            c->between_min_s + synth_exponential(c->between_mean_s, synth_u01(sskey, st, SS_GAP));
        clock += (int64_t)(between * 1000.0);
    }
    return n;
}

/* the arguments of rmtl_synth_fill (out, row_start, session_base, bad_out) and
   rmtl_synth_mean_truth (scratch, n_out); lo: the first user */
typedef struct {
    const rmtl_synth_rows *out;
    const int64_t *row_start, *session_base;
    double *scratch;
    const rmtl_synth_world *w;
    const double *offsets;
    int64_t lo;
    int *bad_out;
    int64_t *n_out;
} rmtl_synth_users_args;

/* users a->lo + [lo, hi) of rmtl_synth_fill */
static void rmtl_synth_fill_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_synth_users_args *a = ctx;
    int bad = 0;
    for (int64_t k = lo; k < hi; k++) {
        /* check the slice before writing: a wrong layout must never write out of bounds */
        synth_user s;
        synth_make_user(&s, a->w, a->lo + k);
        if (synth_user_rows(a->w, &s, a->lo + k) != a->row_start[k + 1] - a->row_start[k]) {
            bad = 1;
            continue;
        }
        double sums[RMTL_SYNTH_MAX_TASKS] = {0.0};
        synth_run_user(a->w, &s, a->lo + k, a->out, a->row_start[k], a->session_base[k], a->offsets,
                       sums);
    }
    __atomic_or_fetch(a->bad_out, bad, __ATOMIC_RELAXED);
}

int rmtl_synth_fill(const rmtl_synth_rows *out, const int64_t *row_start,
                    const int64_t *session_base, const rmtl_synth_world *w, const double *offsets,
                    int64_t lo, int64_t hi) {
    if (lo < 0 || hi > w->cfg.n_users || lo > hi) {
        return RMTL_ERR_ARG;
    }
    int bad = 0;
    rmtl_synth_users_args synth_fill_args = {out,     row_start, session_base, NULL, w,
                                             offsets, lo,        &bad,         NULL};
    rmtl_parallel_for(hi - lo, 32, rmtl_synth_fill_range, &synth_fill_args);
    return bad ? RMTL_ERR_ARG : RMTL_OK;
}

/* users a->lo + [lo, hi) of rmtl_synth_mean_truth */
static void rmtl_synth_truth_range(void *ctx, int64_t lo, int64_t hi) {
    const rmtl_synth_users_args *a = ctx;
    int64_t n = 0;
    int T = a->w->cfg.n_tasks;
    for (int64_t k = lo; k < hi; k++) {
        double *sums = a->scratch + T * k;
        for (int j = 0; j < T; j++) {
            sums[j] = 0.0;
        }
        synth_user s;
        synth_make_user(&s, a->w, a->lo + k);
        n += synth_run_user(a->w, &s, a->lo + k, NULL, 0, 0, a->offsets, sums);
    }
    __atomic_add_fetch(a->n_out, n, __ATOMIC_RELAXED);
}

/* per-user sums go to scratch (hi - lo, n_tasks) in parallel, then add up in user order, so
   the result does not depend on the thread count */
int rmtl_synth_mean_truth(double *mean, double *scratch, const rmtl_synth_world *w,
                          const double *offsets, int64_t lo, int64_t hi) {
    if (lo < 0 || hi > w->cfg.n_users || lo >= hi) {
        return RMTL_ERR_ARG;
    }
    int64_t n = 0;
    int T = w->cfg.n_tasks;
    rmtl_synth_users_args synth_truth_args = {NULL, NULL, NULL, scratch, w, offsets, lo, NULL, &n};
    rmtl_parallel_for(hi - lo, 16, rmtl_synth_truth_range, &synth_truth_args);
    for (int k = 0; k < T; k++) {
        mean[k] = 0.0;
        for (int64_t u = lo; u < hi; u++) {
            mean[k] += scratch[T * (u - lo) + k];
        }
        mean[k] /= (double)n;
    }
    return RMTL_OK;
}
