/* A net and its building blocks with forward and backward (blocks.c): the activation arena, the
   feature front end and MLP stacks. The backbones (backbones.c) and the critics (critic.c) are
   nets built from these blocks. */
#ifndef RMTL_BLOCKS_H
#define RMTL_BLOCKS_H
#include "kernels.h"
#include "params.h"

/* the backbones' kinds (rmtl_model.kind) */
enum {
    RMTL_SINGLETASK = 0,
    RMTL_SHAREDBOTTOM = 1,
    RMTL_ESMM = 2,
    RMTL_OMOE = 3,
    RMTL_MMOE = 4,
    RMTL_PLE = 5,
    RMTL_AITM = 6,
    RMTL_PLE_PAPER = 7, /* the PLE paper's version; RMTL_PLE is the authors' module */
    RMTL_NUM_BACKBONES = 8
};

/* How first layers treat a field (rmtl_model.first_layer): RMTL_FIRST_LAYER_AUTO chooses per
   field and batch by cost, PLAIN always runs the plain product over the batch's rows, DISTINCT
   the product over the field's distinct codes (the distinct first layer, rmtl_distinct) */
enum { RMTL_FIRST_LAYER_AUTO = 0, RMTL_FIRST_LAYER_PLAIN = 1, RMTL_FIRST_LAYER_DISTINCT = 2 };

/* Activation buffers sized per batch row: for a pass over B rows (rows = B, set by the
   forward pass or by zeroing the gradients), an activation of width w at column offset c lives
   at buf + c * rows and holds (rows, w) row-major values, so a pass over B rows uses the first
   B * width floats whatever the capacity. */
typedef struct {
    size_t width; /* sum of reserved widths */
    int cap;      /* batch rows the buffers can hold */
    int rows;     /* batch rows of the current pass, <= cap */
    float *val, *grad;
} rmtl_arena;

/* one Linear layer of an MLP */
typedef struct {
    int in, out;
    size_t w, b;   /* parameter offsets of weight (out, in) and bias (out) */
    size_t act;    /* arena column of the output */
    int relu;      /* ReLU + dropout epilogue (hidden layers) or plain (output layer) */
    uint32_t salt; /* distinguishes dropout masks of different layers */
} rmtl_linear;

/* an MLP: hidden layers, then an output layer when built with one */
typedef struct {
    int n;
    rmtl_linear layer[RMTL_MAX_LAYERS + 1];
} rmtl_mlp;

/* A Linear(d, E) block of the front end's output: the numerical layer, a critic's action
   layer. Its input (B, d) and, when wanted, the input's gradient are set per batch. */
typedef struct {
    size_t w, b; /* parameter offsets of weight (E, d) and bias (E) */
    int d;
    const float *x; /* (B, d) input of the current batch */
    float *dx;      /* (B, d) gradient the backward adds into, or NULL */
} rmtl_front_linear;

/* the feature front end: the fields' embeddings and the Linear blocks, side by side */
typedef struct {
    int F, D, E;
    int width;                /* (F+1)*E, or (F+2)*E with a critic's action field */
    size_t table, table_rows; /* embedding table offset and sum(field_dims) */
    size_t num_w, num_b;      /* numerical_layer (E, D), (E) */
    size_t act;               /* arena column of the (B, width) front-end output */
    /* the blocks after the fields, columns [(F + k) E, (F + k + 1) E): lin[0] is the
       numerical layer. With distinct_fold (set by each forward), the distinct first layers
       fold the blocks in: they read the blocks' inputs through their folded weights (first.c)
       and the blocks are not computed. */
    int n_lin, distinct_fold;
    rmtl_front_linear lin[RMTL_MAX_FRONT_LIN];
} rmtl_frontend;

/* A first layer over a front end (first.c). Training and prediction run it over the batch's
   codes, as the distinct first layer (over each field's distinct codes, rmtl_distinct) or the
   plain product; prediction may instead evaluate it from per-code tables over the whole
   vocabulary (rmtl_tables_build): its output is then a sum of table rows instead of a GEMM
   over the front-end output */
typedef struct {
    int front;       /* index into rmtl_model.front */
    int out, n_relu; /* output width; columns [0, n_relu) get ReLU + dropout */
    size_t w, b;     /* parameter offsets of weight (out, front width) and bias (out) */
    size_t act;      /* arena column of the (B, out) output */
    size_t tab;      /* offset of its (table_rows + D + 1, out) tables in rmtl_model.tab */
    uint32_t salt;   /* the layer's dropout salt */
} rmtl_first;

/* A net: its sizes, parameter table, arena, mode and dropout state, and the blocks the
   backbones (backbones.c) and critics (critic.c) are built of */
typedef struct {
    int kind, F, D, T, E;
    int n_bottom, n_tower;
    int bottom[RMTL_MAX_LAYERS], tower[RMTL_MAX_LAYERS];
    float dropout;
    uint64_t seed;
    int32_t *field_dims;
    int64_t *field_offset;

    rmtl_params params;
    rmtl_arena arena;
    int n_front, n_bottom_mlp;
    rmtl_frontend front[RMTL_MAX_TASKS]; /* one, or one per task (SingleTask) */
    rmtl_mlp *bottoms;                   /* one, or one per task */
    rmtl_mlp *towers;                    /* one per task */
    int n_experts; /* OMoE, MMoE, both PLEs: experts (PLE: E/2 per task + E/2 shared) */
    struct rmtl_experts
        *experts; /* ESMM, OMoE, MMoE, PLE, AITM: the layers between front end and towers */

    int n_first;     /* the first layers over the front ends */
    int first_layer; /* how they run: RMTL_FIRST_LAYER_* */
    rmtl_distinct distinct;
    rmtl_first first[RMTL_MAX_TASKS];
    float *tab; /* their tables, tab_size floats, alive during a prediction using them */
    size_t tab_size;
    int use_tab; /* forward reads the first layers from tab (inside rmtl_model_predict only) */

    int training;     /* dropout active */
    uint64_t counter; /* training forwards so far: keys the dropout masks */

    /* batch buffers, cap rows each: gathered inputs and the head */
    int32_t *codes;
    float *dense, *labels, *prob, *sig;
    /* a training chunk's workspace (rmtl_train_chunk: loss weights, critics' states, a
       balancer's Jacobian), chunk_bytes long, kept for the next chunk: fresh pages for a
       Jacobian of the shared parameters each chunk cost more than the balancer itself */
    void *chunk;
    size_t chunk_bytes;
} rmtl_model;

/* reserves an activation of `width` columns; returns its column */
size_t rmtl_arena_reserve(rmtl_arena *a, size_t width);
/* grows the buffers to hold cap rows of every reserved activation (never shrinks) */
int rmtl_arena_resize(rmtl_arena *a, int cap);
/* frees the buffers (the reserved widths stay) */
void rmtl_arena_free(rmtl_arena *a);
/* the (rows, width) values of the activation at column col, in the current pass */
float *rmtl_arena_val(const rmtl_arena *a, size_t col);
/* the gradient of the activation at column col, in the current pass */
float *rmtl_arena_grad(const rmtl_arena *a, size_t col);
/* lays the arena out for a pass over `rows` rows (RMTL_ERR_ARG beyond its capacity) */
int rmtl_arena_layout(rmtl_arena *a, int rows);
/* lays the arena out for a pass over `rows` rows (reserved) and zeroes those rows' gradients */
void rmtl_arena_zero_grad(rmtl_arena *a, int rows);
/* the same for the activations reserved from column col on (those after it in build order) */
void rmtl_arena_zero_grad_from(rmtl_arena *a, size_t col, int rows);

/* declares fe's tensors: prefix "" gives "embedding.embedding.weight"; "0." gives
   "embedding.0.embedding.weight"; extra fields of width E follow the numerical field in the
   output (a critic's action) */
int rmtl_frontend_build(rmtl_model *m, rmtl_frontend *fe, const char *index, int extra);
/* codes (B,F) dense (B,D) -> fe's (B, width) output. The front end reads m->distinct
   (rmtl_distinct_build on the same codes must come first): a field using its distinct codes
   gathers and scatters only their rows. The inputs of lin[1..] (and the gradients wanted of
   them) are set before; forward chooses fe->distinct_fold for the batch. */
void rmtl_frontend_forward(rmtl_model *m, rmtl_frontend *fe, const int32_t *codes,
                           const float *dense, int B);
/* after the output's gradient is in the arena: adds the embedding table's gradient and, unless
   distinct_fold, the blocks' (and their input gradients wanted) */
void rmtl_frontend_backward(rmtl_model *m, const rmtl_frontend *fe, const int32_t *codes, int B);

/* declares an MLP over `in` columns with hidden widths dims (n), named e.g. "tower.1.mlp";
   output_layer appends Linear(dims[n-1], 1) */
int rmtl_mlp_build(rmtl_model *m, rmtl_mlp *mlp, const char *name, int in, const int *dims, int n,
                   int output_layer);
/* layers [first, n) of `count` MLPs of the same depth (count <= RMTL_MAX_TASKS), layer j of
   all of them one group of products. With first == 0 MLP k reads inp[k], whose rows are
   ld_in[k] floats apart; with first > 0 it reads its own layer first - 1 in the arena (a
   first layer wrote it) and inp, ld_in may be NULL. out[k] (unless out is NULL) receives MLP k's
   output. */
void rmtl_mlps_forward(rmtl_model *m, const rmtl_mlp *mlp, int count, int first,
                       const float *const *inp, const int *ld_in, int B, const float **out);
/* the same layers backward, the gradients of the outputs already in the arena; with first == 0
   MLP k adds its input's gradient into dinp[k] (NULL: not wanted; MLPs reading one input pass
   the same pointer) */
void rmtl_mlps_backward(rmtl_model *m, const rmtl_mlp *mlp, int count, int first,
                        float *const *dinp, const float *const *inp, const int *ld_in, int B);
/* the arena column of the MLP's output */
size_t rmtl_mlp_out(const rmtl_mlp *mlp);
#endif
