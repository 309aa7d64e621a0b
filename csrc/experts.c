/* OMoE, MMoE, PLE (the authors' and the paper's), AITM and ESMM's bottoms (SPEC section 4) as
   programs of fused ops; see experts.h. Parameter names and shapes follow the reference modules;
   the table declares tensors in the order that puts every fanout's weights (and biases) side by
   side. */
#include "experts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef char rmtl_name[RMTL_NAME_LEN];

/* Linear layers over one input stored side by side: weights (out, in) and biases (out) are
   each contiguous in the parameter buffer, so one GEMM computes every member. Columns
   [0, n_relu) get ReLU + dropout (hidden layers), the rest are plain (gate logits). */
typedef struct {
    int in, out, n_relu;
    size_t w, b;
    uint32_t salt; /* distinguishes dropout masks */
} rmtl_fanout;

/* the kinds of op */
enum { RMTL_OP_DENSE = 0, RMTL_OP_SOFTMAX = 1, RMTL_OP_MIX = 2, RMTL_OP_ATTN = 3 };

/* DENSE: fanout `fan` reads `in`, writes `out`.
   SOFTMAX: in place over `n` columns at `out` (a gate).
   MIX: out (B,W) = sum_e gate[:, e] * x[e] over n experts.
   ATTN: AITM's attention of fanout `fan` = [V|K|Q] over positions x[0], x[1] (B,W) without
   applying the fanout to them (rmtl_attn_forward); x[2] (B,2W) and x[3] (B,W) hold its
   intermediate rows, `gate` the (B,2) attention. */
typedef struct {
    int type, fan, n, W;
    rmtl_loc in, out, gate;
    rmtl_loc x[RMTL_MAX_EXPERTS];
    unsigned reach; /* bit k: tower k's input gradient reaches the output (rmtl_experts_reach) */
} rmtl_op;

/* a net's program (rmtl_model.experts) */
struct rmtl_experts {
    int n_fan, n_op;
    rmtl_fanout *fan;
    rmtl_op *op;
    rmtl_loc feature[RMTL_MAX_TASKS]; /* the (B, bottom[-1]) tower input of each task */
    float *attn; /* AITM's attention: S (D,D), c (D), two (D,D) and a (2D) gradient buffers */
};

static float *rmtl_loc_val(const rmtl_model *m, rmtl_loc l) {
    return rmtl_arena_val(&m->arena, l.col) + l.off;
}

static float *rmtl_loc_grad(const rmtl_model *m, rmtl_loc l) {
    return rmtl_arena_grad(&m->arena, l.col) + l.off;
}

static rmtl_loc rmtl_loc_at(rmtl_loc l, int off) {
    l.off += off;
    return l;
}

static rmtl_loc rmtl_loc_new(rmtl_model *m, int width) {
    rmtl_loc l = {rmtl_arena_reserve(&m->arena, (size_t)width), 0, width};
    return l;
}

static rmtl_op *rmtl_op_add(rmtl_model *m, int type) {
    struct rmtl_experts *ex = m->experts;
    rmtl_op *ops = realloc(ex->op, (size_t)(ex->n_op + 1) * sizeof(rmtl_op));
    if (ops == NULL) {
        return NULL;
    }
    ex->op = ops;
    rmtl_op *op = &ops[ex->n_op++];
    memset(op, 0, sizeof(*op));
    op->type = type;
    return op;
}

/* declares n Linear(in, widths[k]) members "<names[k]>.weight" then all "<names[k]>.bias";
   the first n_relu members are hidden layers (ReLU + dropout) */
static int rmtl_fan_add(rmtl_model *m, int *idx, int in, const rmtl_name *names, const int *widths,
                        int n, int n_relu) {
    struct rmtl_experts *ex = m->experts;
    rmtl_fanout *fans = realloc(ex->fan, (size_t)(ex->n_fan + 1) * sizeof(rmtl_fanout));
    if (fans == NULL) {
        return RMTL_ERR_NOMEM;
    }
    ex->fan = fans;
    rmtl_fanout f = {in, 0, 0, 0, 0, (uint32_t)m->params.count};
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < n; k++) {
            rmtl_name buf;
            size_t off;
            snprintf(buf, sizeof(buf), "%s.%s", names[k], pass ? "bias" : "weight");
            RMTL_TRY(rmtl_params_add(&m->params, &off, buf, widths[k], pass ? 0 : in,
                                     RMTL_INIT_LINEAR, in));
            if (k == 0) {
                *(pass ? &f.b : &f.w) = off;
            }
        }
    }
    for (int k = 0; k < n; k++) {
        f.out += widths[k];
        f.n_relu += k < n_relu ? widths[k] : 0;
    }
    fans[ex->n_fan] = f;
    *idx = ex->n_fan++;
    return RMTL_OK;
}

/* out = fanout(in), into a new arena block */
static int rmtl_fan_apply(rmtl_model *m, int fan, rmtl_loc in, rmtl_loc *out) {
    rmtl_op *op = rmtl_op_add(m, RMTL_OP_DENSE);
    if (op == NULL) {
        return RMTL_ERR_NOMEM;
    }
    op->fan = fan;
    op->in = in;
    op->out = *out = rmtl_loc_new(m, m->experts->fan[fan].out);
    return RMTL_OK;
}

/* One fanout over `in`: n hidden layers of width w (experts, names[0..n)), then n_gate
   softmax gates of widths gw (names[n..n+n_gate)). x[e] and g[k] receive their places. */
static int rmtl_expert_fan(rmtl_model *m, rmtl_loc in, int in_w, const rmtl_name *names, int n,
                           int w, int n_gate, const int *gw, rmtl_loc *x, rmtl_loc *g) {
    int widths[RMTL_MAX_EXPERTS + RMTL_MAX_TASKS + 1] = {0}, fan;
    rmtl_loc out;
    for (int k = 0; k < n + n_gate; k++) {
        widths[k] = k < n ? w : gw[k - n];
    }
    RMTL_TRY(rmtl_fan_add(m, &fan, in_w, names, widths, n + n_gate, n));
    RMTL_TRY(rmtl_fan_apply(m, fan, in, &out));
    for (int k = 0, off = 0; k < n + n_gate; off += widths[k++]) {
        rmtl_loc at = rmtl_loc_at(out, off);
        if (k < n) {
            x[k] = at;
            continue;
        }
        g[k - n] = at;
        rmtl_op *op = rmtl_op_add(m, RMTL_OP_SOFTMAX);
        if (op == NULL) {
            return RMTL_ERR_NOMEM;
        }
        op->out = at;
        op->n = widths[k];
    }
    return RMTL_OK;
}

/* out (new block, width W) = sum_e gate[:, e] * x[e] */
static int rmtl_mix_add(rmtl_model *m, rmtl_loc gate, const rmtl_loc *x, int n, int W,
                        rmtl_loc *out) {
    rmtl_op *op = rmtl_op_add(m, RMTL_OP_MIX);
    if (op == NULL) {
        return RMTL_ERR_NOMEM;
    }
    op->n = n;
    op->W = W;
    op->gate = gate;
    memcpy(op->x, x, (size_t)n * sizeof(rmtl_loc));
    op->out = *out = rmtl_loc_new(m, W);
    return RMTL_OK;
}

/* n experts MLP(in, bottom_dims) named "<prefix>.<e>.mlp" over the front end, whose first
   layers share one fanout with n_gate softmax gates of width n (names gate_names); x[e]
   receives each expert's output, gate[k] each gate's values */
static int rmtl_bank_build(rmtl_model *m, rmtl_loc emb, const char *prefix, int n,
                           const rmtl_name *gate_names, int n_gate, rmtl_loc *x, rmtl_loc *gate) {
    rmtl_name names[RMTL_MAX_EXPERTS + RMTL_MAX_TASKS];
    int gw[RMTL_MAX_TASKS] = {0};
    for (int e = 0; e < n; e++) {
        snprintf(names[e], sizeof(names[e]), "%s.%d.mlp.0", prefix, e);
    }
    for (int k = 0; k < n_gate; k++) {
        memcpy(names[n + k], gate_names[k], sizeof(rmtl_name));
        gw[k] = n;
    }
    RMTL_TRY(rmtl_expert_fan(m, emb, emb.ld, names, n, m->bottom[0], n_gate, gw, x, gate));
    for (int j = 1; j < m->n_bottom; j++) {
        for (int e = 0; e < n; e++) {
            int fan;
            snprintf(names[0], sizeof(names[0]), "%s.%d.mlp.%d", prefix, e, 3 * j);
            RMTL_TRY(rmtl_fan_add(m, &fan, m->bottom[j - 1], names, &m->bottom[j], 1, 1));
            RMTL_TRY(rmtl_fan_apply(m, fan, x[e], &x[e]));
        }
    }
    return RMTL_OK;
}

/* OMoE: one gate "gate.0" for all tasks; MMoE: one gate "gate.<k>.0" per task */
static int rmtl_moe_build(rmtl_model *m, rmtl_loc emb) {
    struct rmtl_experts *ex = m->experts;
    int E = m->n_experts, G = m->kind == RMTL_MMOE ? m->T : 1, W = m->bottom[m->n_bottom - 1];
    rmtl_name gates[RMTL_MAX_TASKS];
    rmtl_loc x[RMTL_MAX_EXPERTS], gate[RMTL_MAX_TASKS], mixed;
    for (int k = 0; k < G; k++) {
        if (m->kind == RMTL_MMOE) {
            snprintf(gates[k], sizeof(gates[k]), "gate.%d.0", k);
        } else {
            snprintf(gates[k], sizeof(gates[k]), "gate.0");
        }
    }
    RMTL_TRY(rmtl_bank_build(m, emb, "expert", E, gates, G, x, gate));
    for (int k = 0; k < G; k++) {
        RMTL_TRY(rmtl_mix_add(m, gate[k], x, E, W, &mixed));
        for (int t = 0; t < m->T; t++) {
            if (G == 1 || t == k) {
                ex->feature[t] = mixed;
            }
        }
    }
    return RMTL_OK;
}

/* declares a gate that nothing reads (same state_dict as the reference) and freezes it, as
   torch's Adam skips a parameter without a gradient */
static int rmtl_unused_gate(rmtl_model *m, const char *name, int in_w, int width) {
    rmtl_name names[1];
    int fan;
    snprintf(names[0], sizeof(names[0]), "%s", name);
    RMTL_TRY(rmtl_fan_add(m, &fan, in_w, names, &width, 1, 0));
    const rmtl_fanout *f = &m->experts->fan[fan];
    return rmtl_params_freeze(&m->params, f->w, f->b + (size_t)f->out);
}

/* out = fanout fan (a view of it with dropout salt `salt`) applied to in */
static int rmtl_fan_view_apply(rmtl_model *m, int fan, uint32_t salt, rmtl_loc in, rmtl_loc *out) {
    struct rmtl_experts *ex = m->experts;
    rmtl_fanout *fans = realloc(ex->fan, (size_t)(ex->n_fan + 1) * sizeof(rmtl_fanout));
    if (fans == NULL) {
        return RMTL_ERR_NOMEM;
    }
    ex->fan = fans;
    fans[ex->n_fan] = fans[fan];
    fans[ex->n_fan].salt = salt;
    return rmtl_fan_apply(m, ex->n_fan++, in, out);
}

/* the authors' PLE level i >= 1 (see the class docstring of rmtl.models.PLE): task stream t's
   fanout holds its h experts "expert.<i>.<t*h+k>" and its gate "gate.<i>.<t>"; the s shared
   experts (one fanout, declared after the task ones) run again on every task stream, each
   time with its own dropout salt: the index of the stream fanout's second tensor, where no
   layer starts.
   x[t * (h + s) ..] receives stream t's experts, own then shared, g[t] its gate. */
static int rmtl_ple_level(rmtl_model *m, int i, const rmtl_loc *cur, int in_w, rmtl_loc *x,
                          rmtl_loc *g) {
    int T = m->T, h = m->n_experts / 2, s = h, w = m->bottom[i], gw = h + s, fan;
    rmtl_name names[RMTL_MAX_EXPERTS + 1];
    uint32_t salt[RMTL_MAX_TASKS];
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < h; k++) {
            snprintf(names[k], sizeof(names[k]), "expert.%d.%d.mlp.0", i, t * h + k);
        }
        snprintf(names[h], sizeof(names[h]), "gate.%d.%d.0", i, t);
        salt[t] = (uint32_t)m->params.count + 1;
        RMTL_TRY(rmtl_expert_fan(m, cur[t], in_w, names, h, w, 1, &gw, x + t * (h + s), g + t));
    }
    int widths[RMTL_MAX_EXPERTS];
    for (int k = 0; k < s; k++) {
        snprintf(names[k], sizeof(names[k]), "expert.%d.%d.mlp.0", i, T * h + k);
        widths[k] = w;
    }
    RMTL_TRY(rmtl_fan_add(m, &fan, in_w, names, widths, s, s));
    for (int t = 0; t < T; t++) {
        rmtl_loc out;
        RMTL_TRY(rmtl_fan_view_apply(m, fan, salt[t], cur[t], &out));
        for (int k = 0; k < s; k++) {
            x[t * (h + s) + h + k] = rmtl_loc_at(out, k * w);
        }
    }
    return RMTL_OK;
}

/* The authors' PLE (see the class docstring of rmtl.models.PLE): L = len(bottom) levels of
   T * E/2 task experts then E/2 shared ones, T task streams. Level 0 is one fanout over the
   front end (every stream is the embedding there). Their shared stream feeds no task
   stream, so it is not computed: its gates "gate.<i>.<T>" get no gradient (None in torch)
   and are declared frozen. */
static int rmtl_ple_build(rmtl_model *m, rmtl_loc emb) {
    int T = m->T, h = m->n_experts / 2, s = h, in_w = emb.ld;
    /* x: every task stream's h + s experts, at most 2 * (T + 1) * h <= 2 * RMTL_MAX_EXPERTS */
    rmtl_loc cur[RMTL_MAX_TASKS], x[2 * RMTL_MAX_EXPERTS], g[RMTL_MAX_TASKS], y[RMTL_MAX_EXPERTS];
    for (int i = 0; i < m->n_bottom; i++) {
        int w = m->bottom[i];
        if (i == 0) {
            rmtl_name names[RMTL_MAX_EXPERTS + RMTL_MAX_TASKS];
            int gw[RMTL_MAX_TASKS];
            for (int e = 0; e < T * h + s; e++) {
                snprintf(names[e], sizeof(names[e]), "expert.0.%d.mlp.0", e);
            }
            for (int t = 0; t < T; t++) {
                snprintf(names[T * h + s + t], sizeof(names[0]), "gate.0.%d.0", t);
                gw[t] = h + s;
            }
            RMTL_TRY(rmtl_expert_fan(m, emb, in_w, names, T * h + s, w, T, gw, y, g));
            for (int t = 0; t < T; t++) {
                memcpy(x + t * (h + s), y + t * h, (size_t)h * sizeof(rmtl_loc));
                memcpy(x + t * (h + s) + h, y + T * h, (size_t)s * sizeof(rmtl_loc));
            }
        } else {
            RMTL_TRY(rmtl_ple_level(m, i, cur, in_w, x, g));
        }
        for (int t = 0; t < T; t++) {
            RMTL_TRY(rmtl_mix_add(m, g[t], x + t * (h + s), h + s, w, &cur[t]));
        }
        rmtl_name name;
        snprintf(name, sizeof(name), "gate.%d.%d.0", i, T);
        RMTL_TRY(rmtl_unused_gate(m, name, in_w, T * h + s));
        in_w = w;
    }
    memcpy(m->experts->feature, cur, (size_t)T * sizeof(rmtl_loc));
    return RMTL_OK;
}

/* The PLE paper's level i: x holds the task experts (task-major, h each) then the s shared
   experts, g the task gates then the shared gate (absent at the last level) */
static int rmtl_ple_paper_level(rmtl_model *m, int i, rmtl_loc *cur, int in_w, rmtl_loc *x,
                                rmtl_loc *g) {
    int T = m->T, h = m->n_experts / 2, s = h, w = m->bottom[i], last = i == m->n_bottom - 1;
    rmtl_name names[RMTL_MAX_EXPERTS + RMTL_MAX_TASKS + 1];
    int gw[RMTL_MAX_TASKS + 1], n = 0;
    for (int t = 0; t <= T; t++) {
        int shared = t == T, ne = shared ? s : h;
        for (int k = 0; k < ne; k++, n++) {
            if (shared) {
                snprintf(names[n], sizeof(names[n]), "share_experts.%d.%d.mlp.0", i, k);
            } else {
                snprintf(names[n], sizeof(names[n]), "task_experts.%d.%d.%d.mlp.0", i, t, k);
            }
        }
        if (i > 0) {
            /* past level 0 every stream has its own input: one fanout per stream */
            int ng = shared && last ? 0 : 1;
            gw[0] = shared ? T * h + s : h + s;
            if (shared) {
                snprintf(names[n], sizeof(names[n]), "share_gates.%d.0", i);
            } else {
                snprintf(names[n], sizeof(names[n]), "task_gates.%d.%d.0", i, t);
            }
            RMTL_TRY(rmtl_expert_fan(m, cur[t], in_w, names, n, w, ng, gw, x + t * h, g + t));
            n = 0;
        }
    }
    if (i > 0) {
        return RMTL_OK;
    }
    /* every stream is the front end: all experts and gates of the level in one fanout */
    for (int t = 0; t <= T - (last ? 1 : 0); t++) {
        gw[t] = t == T ? T * h + s : h + s;
        if (t == T) {
            snprintf(names[n + t], sizeof(names[0]), "share_gates.0.0");
        } else {
            snprintf(names[n + t], sizeof(names[0]), "task_gates.0.%d.0", t);
        }
    }
    return rmtl_expert_fan(m, cur[0], in_w, names, n, w, T + (last ? 0 : 1), gw, x, g);
}

/* The PLE paper's version (see the class docstring of rmtl.models.PLEPaper): L = len(bottom)
   levels, E/2 experts per task and E/2 shared experts per level, T + 1 streams; the shared
   experts read the shared stream. Its last level declares a shared gate that nothing uses. */
static int rmtl_ple_paper_build(rmtl_model *m, rmtl_loc emb) {
    struct rmtl_experts *ex = m->experts;
    int T = m->T, h = m->n_experts / 2, s = h, in_w = emb.ld;
    rmtl_loc cur[RMTL_MAX_TASKS + 1], x[RMTL_MAX_EXPERTS], g[RMTL_MAX_TASKS + 1],
        mx[RMTL_MAX_EXPERTS];
    for (int t = 0; t <= T; t++) {
        cur[t] = emb;
    }
    for (int i = 0; i < m->n_bottom; i++) {
        int w = m->bottom[i], last = i == m->n_bottom - 1;
        RMTL_TRY(rmtl_ple_paper_level(m, i, cur, in_w, x, g));
        for (int t = 0; t < T; t++) {
            memcpy(mx, x + t * h, (size_t)h * sizeof(rmtl_loc));
            memcpy(mx + h, x + T * h, (size_t)s * sizeof(rmtl_loc));
            RMTL_TRY(rmtl_mix_add(m, g[t], mx, h + s, w, &cur[t]));
        }
        if (!last) {
            RMTL_TRY(rmtl_mix_add(m, g[T], x, T * h + s, w, &cur[T]));
        } else {
            rmtl_name name;
            snprintf(name, sizeof(name), "share_gates.%d.0", i);
            RMTL_TRY(rmtl_unused_gate(m, name, in_w, T * h + s));
        }
        in_w = w;
    }
    for (int t = 0; t < T; t++) {
        ex->feature[t] = cur[t];
    }
    return RMTL_OK;
}

/* AITM: per-task bottoms; for task i >= 1, p = g[i-1](f[i-1]), q = bottom i, and
   f[i] = attention over [p, q] with V, K, Q = h1, h2, h3 (shared, applied to both) */
static int rmtl_aitm_build(rmtl_model *m, rmtl_loc emb) {
    struct rmtl_experts *ex = m->experts;
    int T = m->T, D = m->bottom[m->n_bottom - 1], hfan, gfan[RMTL_MAX_TASKS];
    int widths[3] = {D, D, D};
    rmtl_name names[3] = {"h1", "h2", "h3"};
    rmtl_loc q[RMTL_MAX_TASKS];
    RMTL_TRY(rmtl_bank_build(m, emb, "bottom", T, NULL, 0, q, NULL));
    for (int i = 0; i + 1 < T; i++) {
        rmtl_name g;
        snprintf(g, sizeof(g), "g.%d", i);
        RMTL_TRY(rmtl_fan_add(m, &gfan[i], D, &g, widths, 1, 0));
    }
    RMTL_TRY(rmtl_fan_add(m, &hfan, D, names, widths, 3, 0));
    if (T == 1) {
        /* the reference declares h1..h3 even without a transfer: kept, never trained */
        const rmtl_fanout *f = &ex->fan[hfan];
        RMTL_TRY(rmtl_params_freeze(&m->params, f->w, f->b + (size_t)f->out));
    } else {
        ex->attn = malloc((3 * (size_t)D * D + 3 * (size_t)D) * sizeof(float));
        if (ex->attn == NULL) {
            return RMTL_ERR_NOMEM;
        }
    }
    ex->feature[0] = q[0];
    for (int i = 1; i < T; i++) {
        rmtl_loc p;
        RMTL_TRY(rmtl_fan_apply(m, gfan[i - 1], ex->feature[i - 1], &p));
        rmtl_op *op = rmtl_op_add(m, RMTL_OP_ATTN);
        if (op == NULL) {
            return RMTL_ERR_NOMEM;
        }
        op->fan = hfan;
        op->W = D;
        op->x[0] = p;
        op->x[1] = q[i];
        op->x[2] = rmtl_loc_new(m, 2 * D);
        op->x[3] = rmtl_loc_new(m, D);
        op->gate = rmtl_loc_new(m, 2);
        op->out = ex->feature[i] = rmtl_loc_new(m, D);
    }
    return RMTL_OK;
}

static int rmtl_loc_apart(rmtl_loc a, int wa, rmtl_loc b, int wb) {
    return a.col != b.col || a.off + wa <= b.off || b.off + wb <= a.off;
}

/* the width of op's output (a SOFTMAX's is its gate, in place) */
static int rmtl_op_width(const struct rmtl_experts *ex, const rmtl_op *op) {
    switch (op->type) {
    case RMTL_OP_DENSE:
        return ex->fan[op->fan].out;
    case RMTL_OP_SOFTMAX:
        return op->n;
    default:
        return op->W;
    }
}

/* whether op reads columns of (at, width): its input, gate and experts, or for a SOFTMAX the
   gate it rewrites (an ATTN's x[2], x[3] and gate are its own workspace) */
static int rmtl_op_reads(const struct rmtl_experts *ex, const rmtl_op *op, rmtl_loc at, int width) {
    switch (op->type) {
    case RMTL_OP_DENSE:
        return !rmtl_loc_apart(op->in, ex->fan[op->fan].in, at, width);
    case RMTL_OP_SOFTMAX:
        return !rmtl_loc_apart(op->out, op->n, at, width);
    case RMTL_OP_MIX:
        for (int e = 0; e < op->n; e++) {
            if (!rmtl_loc_apart(op->x[e], op->W, at, width)) {
                return 1;
            }
        }
        return !rmtl_loc_apart(op->gate, op->n, at, width);
    default:
        return !rmtl_loc_apart(op->x[0], op->W, at, width) ||
               !rmtl_loc_apart(op->x[1], op->W, at, width);
    }
}

/* every op's reach, from the last op back: the towers whose inputs its output is, and the
   reach of every later op that reads it. A backward from some towers' inputs alone leaves
   the gradients of the other ops' outputs zero, so it can skip them. */
static void rmtl_experts_reach(const rmtl_model *m) {
    struct rmtl_experts *ex = m->experts;
    int W = m->bottom[m->n_bottom - 1];
    for (int i = ex->n_op - 1; i >= 0; i--) {
        rmtl_op *op = &ex->op[i];
        int width = rmtl_op_width(ex, op);
        op->reach = 0;
        for (int k = 0; k < m->T; k++) {
            if (!rmtl_loc_apart(ex->feature[k], W, op->out, width)) {
                op->reach |= 1u << k;
            }
        }
        for (int j = i + 1; j < ex->n_op; j++) {
            if (rmtl_op_reads(ex, &ex->op[j], op->out, width)) {
                op->reach |= ex->op[j].reach;
            }
        }
    }
}

static int rmtl_experts_program(rmtl_model *m) {
    m->experts = calloc(1, sizeof(struct rmtl_experts));
    if (m->experts == NULL) {
        return RMTL_ERR_NOMEM;
    }
    rmtl_loc emb = {m->front[0].act, 0, (m->F + 1) * m->E};
    switch (m->kind) {
    case RMTL_ESMM:
        return rmtl_bank_build(m, emb, "bottom", m->T, NULL, 0, m->experts->feature, NULL);
    case RMTL_PLE:
        return rmtl_ple_build(m, emb);
    case RMTL_PLE_PAPER:
        return rmtl_ple_paper_build(m, emb);
    case RMTL_AITM:
        return rmtl_aitm_build(m, emb);
    default:
        return rmtl_moe_build(m, emb);
    }
}

int rmtl_experts_build(rmtl_model *m) {
    RMTL_TRY(rmtl_experts_program(m));
    rmtl_experts_reach(m);
    return RMTL_OK;
}

void rmtl_experts_free(rmtl_model *m) {
    if (m->experts != NULL) {
        free(m->experts->fan);
        free(m->experts->op);
        free(m->experts->attn);
        free(m->experts);
        m->experts = NULL;
    }
}

rmtl_loc rmtl_experts_feature(const rmtl_model *m, int k) {
    return m->experts->feature[k];
}

static rmtl_dropout rmtl_fan_dropout(const rmtl_model *m, const rmtl_fanout *f) {
    rmtl_dropout d = {m->training ? m->dropout : 0.0f, m->seed, (m->counter << 12) | f->salt};
    return d;
}

rmtl_first rmtl_experts_first(const rmtl_model *m) {
    const rmtl_op *op = &m->experts->op[0];
    const rmtl_fanout *f = &m->experts->fan[op->fan];
    rmtl_first l = {0, f->out, f->n_relu, f->w, f->b, op->out.col, 0, f->salt};
    return l;
}

/* Consecutive DENSE ops that share no columns (none reads another's output, no two read the
   same input, whose gradients they would both add into) run their products together. */
#define RMTL_DENSE_RUN 16

/* whether op may join the ops run[0], run[step], .. (n of them): a DENSE op with other
   weights (a fanout's views share them), sharing no columns with them */
static int rmtl_dense_joins(const struct rmtl_experts *ex, const rmtl_op *op, const rmtl_op *run,
                            int n, int step) {
    const rmtl_fanout *f = &ex->fan[op->fan];
    if (op->type != RMTL_OP_DENSE || n == RMTL_DENSE_RUN) {
        return 0;
    }
    for (int k = 0; k < n; k++) {
        const rmtl_op *o = run + (ptrdiff_t)k * step;
        const rmtl_fanout *g = &ex->fan[o->fan];
        if (g->w == f->w || !rmtl_loc_apart(op->in, f->in, o->in, g->in) ||
            !rmtl_loc_apart(op->in, f->in, o->out, g->out) ||
            !rmtl_loc_apart(op->out, f->out, o->in, g->in) ||
            !rmtl_loc_apart(op->out, f->out, o->out, g->out)) {
            return 0;
        }
    }
    return 1;
}

/* the run of DENSE ops from i up: products, then epilogues; returns the op after it */
static int rmtl_dense_run_forward(rmtl_model *m, int i, int B) {
    const struct rmtl_experts *ex = m->experts;
    const float *p = m->params.param;
    rmtl_gemm_op ops[RMTL_DENSE_RUN];
    int n = 0;
    while (i + n < ex->n_op && rmtl_dense_joins(ex, &ex->op[i + n], &ex->op[i], n, 1)) {
        const rmtl_op *op = &ex->op[i + n];
        const rmtl_fanout *f = &ex->fan[op->fan];
        ops[n++] =
            rmtl_dense_forward_op(rmtl_loc_val(m, op->out), op->out.ld, rmtl_loc_val(m, op->in),
                                  op->in.ld, p + f->w, B, f->in, f->out);
    }
    rmtl_gemm_many(ops, n);
    for (int k = 0; k < n; k++) {
        const rmtl_op *op = &ex->op[i + k];
        const rmtl_fanout *f = &ex->fan[op->fan];
        rmtl_dense_epilogue(rmtl_loc_val(m, op->out), op->out.ld, p + f->b, 0, NULL, NULL,
                            f->n_relu, rmtl_fan_dropout(m, f), B, f->out);
    }
    return i + n;
}

/* the run of DENSE ops from i down to first: prologues, then products; returns the op
   before it */
static int rmtl_dense_run_backward(rmtl_model *m, int i, int first, unsigned towers, int B) {
    const struct rmtl_experts *ex = m->experts;
    const float *p = m->params.param;
    float *g = m->params.grad;
    rmtl_gemm_op ops[2 * RMTL_DENSE_RUN];
    int n = 0, k = 0;
    while (i - k >= first && rmtl_dense_joins(ex, &ex->op[i - k], &ex->op[i], k, -1)) {
        const rmtl_op *op = &ex->op[i - k++];
        const rmtl_fanout *f = &ex->fan[op->fan];
        if (!(op->reach & towers)) {
            continue;
        }
        float *dout = rmtl_loc_grad(m, op->out);
        rmtl_dense_prologue(g + f->b, NULL, NULL, NULL, dout, op->out.ld, rmtl_loc_val(m, op->out),
                            f->n_relu, rmtl_fan_dropout(m, f).p, B, f->out);
        n += rmtl_dense_backward_ops(ops + n, rmtl_loc_grad(m, op->in), op->in.ld, g + f->w, dout,
                                     op->out.ld, rmtl_loc_val(m, op->in), p + f->w, B, f->in,
                                     f->out);
    }
    rmtl_gemm_many(ops, n);
    return i - k;
}

/* AITM's attention through the fanout h = [V|K|Q] = (W1, W2, W3), biases (b1, b2, b3), without
   applying h to either position x_t: the logits <K_t, Q_t> are x_t^T S x_t + c . x_t + b2 . b3
   with S = (W2^T W3 + W3^T W2) / 2 and c = W2^T b3 + W3^T b2 (the constant cancels in the
   softmax), and sum_t a_t V_t = W1 mix + b1 with mix = sum_t a_t x_t (the a_t sum to one). Per
   training step that is 7 products of (B, D, D) instead of the 18 that apply h to both
   positions, plus 3 of (D, D, D). The workspace: S, c, then the backward's two (D, D) and (2D). */
static void rmtl_attn_forward(rmtl_model *m, const rmtl_op *op, int B) {
    const rmtl_fanout *f = &m->experts->fan[op->fan];
    const float *W = m->params.param + f->w, *b = m->params.param + f->b;
    int D = op->W;
    size_t DD = (size_t)D * D;
    float *S = m->experts->attn, *c = S + DD, *P = c + D;
    rmtl_gemm(1, 0, D, D, D, 1.0f, W + DD, D, W + 2 * DD, D, 0.0f, P, D);
    for (int i = 0; i < D; i++) {
        for (int j = 0; j < D; j++) {
            S[(size_t)i * D + j] = 0.5f * (P[(size_t)i * D + j] + P[(size_t)j * D + i]);
        }
    }
    memset(c, 0, (size_t)D * sizeof(float));
    for (int o = 0; o < D; o++) {
        const float *w2 = W + DD + (size_t)o * D, *w3 = W + 2 * DD + (size_t)o * D;
        for (int k = 0; k < D; k++) {
            c[k] += w2[k] * b[2 * D + o] + w3[k] * b[D + o];
        }
    }
    rmtl_loc x0 = op->x[0], x1 = op->x[1], z = op->x[2], mix = op->x[3];
    rmtl_gemm_op zs[2] = {
        {0, 0, B, D, D, x0.ld, D, z.ld, 1.0f, 0.0f, rmtl_loc_val(m, x0), S, rmtl_loc_val(m, z)},
        {0, 0, B, D, D, x1.ld, D, z.ld, 1.0f, 0.0f, rmtl_loc_val(m, x1), S,
         rmtl_loc_val(m, z) + D}};
    rmtl_gemm_many(zs, 2);
    rmtl_attention2_forward(rmtl_loc_val(m, mix), mix.ld, rmtl_loc_val(m, op->gate),
                            rmtl_loc_val(m, x0), x0.ld, rmtl_loc_val(m, x1), x1.ld,
                            rmtl_loc_val(m, z), z.ld, c, B, D);
    rmtl_dropout none = {0.0f, 0, 0};
    float *out = rmtl_loc_val(m, op->out);
    rmtl_gemm(0, 1, B, D, D, 1.0f, rmtl_loc_val(m, mix), mix.ld, W, D, 0.0f, out, op->out.ld);
    rmtl_dense_epilogue(out, op->out.ld, b, 0, NULL, NULL, 0, none, B, D);
}

static void rmtl_attn_backward(rmtl_model *m, const rmtl_op *op, int B) {
    const rmtl_fanout *f = &m->experts->fan[op->fan];
    const float *W = m->params.param + f->w, *b = m->params.param + f->b;
    float *dW = m->params.grad + f->w, *db = m->params.grad + f->b;
    int D = op->W;
    size_t DD = (size_t)D * D;
    float *S = m->experts->attn, *c = S + DD, *G = c + D, *G1 = G + DD, *dc = G1 + DD;
    rmtl_loc x0 = op->x[0], x1 = op->x[1], z = op->x[2], mix = op->x[3];
    float *dout = rmtl_loc_grad(m, op->out), *y = rmtl_loc_grad(m, z);
    int ld_out = op->out.ld;
    /* b1's gradient: the column sums of dout (no ReLU columns: dout is only read) */
    rmtl_dense_prologue(db, NULL, NULL, NULL, dout, ld_out, dout, 0, 0.0f, B, D);
    rmtl_gemm_op v[2] = {
        {1, 0, D, D, B, ld_out, mix.ld, D, 1.0f, 1.0f, dout, rmtl_loc_val(m, mix), dW},
        {0, 0, B, D, D, ld_out, D, mix.ld, 1.0f, 0.0f, dout, W, rmtl_loc_grad(m, mix)}};
    rmtl_gemm_many(v, 2);
    rmtl_attention2_backward(rmtl_loc_grad(m, x0), rmtl_loc_grad(m, x1), y, z.ld,
                             rmtl_loc_grad(m, mix), mix.ld, rmtl_loc_val(m, op->gate),
                             rmtl_loc_val(m, x0), x0.ld, rmtl_loc_val(m, x1), x1.ld,
                             rmtl_loc_val(m, z), c, B, D);
    memset(dc, 0, 2 * (size_t)D * sizeof(float));
    rmtl_dense_prologue(dc, NULL, NULL, NULL, y, z.ld, y, 0, 0.0f, B, 2 * D);
    rmtl_gemm_op gs[2] = {
        {1, 0, D, D, B, z.ld, x0.ld, D, 1.0f, 0.0f, y, rmtl_loc_val(m, x0), G},
        {1, 0, D, D, B, z.ld, x1.ld, D, 1.0f, 0.0f, y + D, rmtl_loc_val(m, x1), G1}};
    rmtl_gemm_many(gs, 2);
    /* S's gradient G (symmetric, as S), c's gradient dc */
    for (size_t k = 0; k < DD; k++) {
        G[k] += G1[k];
    }
    for (int i = 0; i < D; i++) {
        dc[i] += dc[D + i];
    }
    /* through S: W2 gets W3 G, W3 gets W2 G; through c: W2 gets b3 dc^T, W3 b2 dc^T, b3 W2 dc,
       b2 W3 dc */
    rmtl_gemm_op ws[2] = {{0, 0, D, D, D, D, D, D, 1.0f, 1.0f, W + 2 * DD, G, dW + DD},
                          {0, 0, D, D, D, D, D, D, 1.0f, 1.0f, W + DD, G, dW + 2 * DD}};
    rmtl_gemm_many(ws, 2);
    for (int o = 0; o < D; o++) {
        const float *w2 = W + DD + (size_t)o * D, *w3 = W + 2 * DD + (size_t)o * D;
        float *d2 = dW + DD + (size_t)o * D, *d3 = dW + 2 * DD + (size_t)o * D, s2 = 0.0f,
              s3 = 0.0f;
        for (int k = 0; k < D; k++) {
            d2[k] += b[2 * D + o] * dc[k];
            d3[k] += b[D + o] * dc[k];
            s2 += w3[k] * dc[k];
            s3 += w2[k] * dc[k];
        }
        db[D + o] += s2;
        db[2 * D + o] += s3;
    }
}

void rmtl_experts_forward(rmtl_model *m, int first, int B) {
    const struct rmtl_experts *ex = m->experts;
    const float *x[RMTL_MAX_EXPERTS];
    int ld[RMTL_MAX_EXPERTS];
    for (int i = first; i < ex->n_op; i++) {
        const rmtl_op *op = &ex->op[i];
        switch (op->type) {
        case RMTL_OP_DENSE:
            i = rmtl_dense_run_forward(m, i, B) - 1;
            break;
        case RMTL_OP_SOFTMAX:
            rmtl_softmax_forward(rmtl_loc_val(m, op->out), op->out.ld, B, op->n);
            break;
        case RMTL_OP_MIX:
            for (int e = 0; e < op->n; e++) {
                x[e] = rmtl_loc_val(m, op->x[e]);
                ld[e] = op->x[e].ld;
            }
            rmtl_mix_forward(rmtl_loc_val(m, op->out), op->out.ld, rmtl_loc_val(m, op->gate),
                             op->gate.ld, x, ld, op->n, B, op->W);
            break;
        default:
            rmtl_attn_forward(m, op, B);
        }
    }
}

void rmtl_experts_backward(rmtl_model *m, int first, unsigned towers, int B) {
    const struct rmtl_experts *ex = m->experts;
    float *dx[RMTL_MAX_EXPERTS];
    const float *x[RMTL_MAX_EXPERTS];
    int ld[RMTL_MAX_EXPERTS];
    for (int i = ex->n_op - 1; i >= first; i--) {
        const rmtl_op *op = &ex->op[i];
        if (op->type != RMTL_OP_DENSE && !(op->reach & towers)) {
            continue;
        }
        switch (op->type) {
        case RMTL_OP_DENSE:
            i = rmtl_dense_run_backward(m, i, first, towers, B) + 1;
            break;
        case RMTL_OP_SOFTMAX:
            rmtl_softmax_backward(rmtl_loc_grad(m, op->out), rmtl_loc_val(m, op->out), op->out.ld,
                                  B, op->n);
            break;
        case RMTL_OP_MIX:
            for (int e = 0; e < op->n; e++) {
                x[e] = rmtl_loc_val(m, op->x[e]);
                dx[e] = rmtl_loc_grad(m, op->x[e]);
                ld[e] = op->x[e].ld;
            }
            rmtl_mix_backward(dx, rmtl_loc_grad(m, op->gate), rmtl_loc_grad(m, op->out), op->out.ld,
                              rmtl_loc_val(m, op->gate), op->gate.ld, x, ld, op->n, B, op->W);
            break;
        default:
            rmtl_attn_backward(m, op, B);
        }
    }
}
