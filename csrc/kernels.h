/* Small fused kernels with their backward (kernels.c). Kernels never allocate; backward adds
   (+=) into parameter gradients and input gradients. */
#ifndef RMTL_KERNELS_H
#define RMTL_KERNELS_H
#include "gemm.h"

/* The distinct codes of each field in a batch and the workspace of the products over them,
   sized for cap rows by rmtl_distinct_reserve and built by rmtl_distinct_build (first.c); the
   embedding kernels read it. For a field with use[f]: its u[f] distinct codes in
   first-occurrence order at code + f * cap, row i's index among them at slot[f * cap + i], the
   rows holding slot s at order[f * cap + start[f * (cap + 1) + s] ..], and the (u[f], out)
   products or aggregated gradients at work + woff[f]. The n_use fields with use[f] are listed
   in field, with their counts in field_u, products in rows, starts and orders in field_start
   and field_order. */
typedef struct {
    int cap, B;             /* rows reserved, rows of the last build */
    int32_t *code, *slot;   /* (F, cap) each */
    int32_t *start, *order; /* (F, cap + 1) and (F, cap) */
    int32_t *mark;          /* (table_rows): a code's slot during a build, else -1 */
    int *u, *use;           /* (F) each */
    size_t *woff;           /* (F) */
    float *work;
    int n_use;
    int *field, *field_u;                       /* (F) each */
    float **rows;                               /* (F) */
    const int32_t **field_start, **field_order; /* (F) each */
    float *fold;       /* the distinct first layer's folded blocks (first.c) */
    int fold_d;        /* the widest block's d */
    rmtl_gemm_op *ops; /* (4 F + 2): a first layer's products, run together (first.c) */
} rmtl_distinct;

/* dropout of one layer: p == 0 means identity; masks are keyed by (seed, stream, element) */
typedef struct {
    float p;
    uint64_t seed, stream;
} rmtl_dropout;

/* rows of per-field tables selected by each batch row's slot: row i uses
   rows[g] + slot[field[g] * ld + i] * OC for g < n (slots field by field: threads building
   different fields write different cache lines); rows[g] holds u[g] rows, and the batch rows
   of its slot s are order[g][start[g][s] .. start[g][s + 1]) in increasing order */
typedef struct {
    int n, ld;
    const int *field, *u;
    float *const *rows;
    const int32_t *slot;
    const int32_t *const *start, *const *order;
} rmtl_gather;

/* low-rank terms of a layer's output: row i adds x[k][i, :] v[k] for k < n, x[k] (B, d[k]) and
   v[k] (d[k], OC) (a front end's Linear blocks folded into the distinct first layer, first.c) */
typedef struct {
    int n;
    const float *x[RMTL_MAX_FRONT_LIN];
    int d[RMTL_MAX_FRONT_LIN];
    float *v[RMTL_MAX_FRONT_LIN];
} rmtl_lowrank;

/* out (B,OC) row stride ld_out = (init ? 0 : out) + b + the low-rank terms + the gathered rows
   (gather and lowrank may be NULL); columns [0, n_relu) then get ReLU and dropout */
void rmtl_dense_epilogue(float *out, int ld_out, const float *b, int init,
                         const rmtl_gather *gather, const rmtl_lowrank *lowrank, int n_relu,
                         rmtl_dropout drop, int B, int OC);
/* turns dout (B,OC)'s ReLU columns in place into pre-activation gradients, adds their column
   sums into db (and stores them in colsum (OC) unless NULL), when scatter is not NULL
   overwrites its tables with the sums of the resulting rows by slot (aggregated gradients)
   and, when lowrank is not NULL, overwrites each v[k] with x[k]^T dout */
void rmtl_dense_prologue(float *db, float *colsum, const rmtl_gather *scatter,
                         const rmtl_lowrank *lowrank, float *dout, int ld_out, const float *out,
                         int n_relu, float drop_p, int B, int OC);

/* inp (B,C) row stride ld_in, w (OC,C), b (OC) -> out (B,OC) row stride ld_out; columns
   [0, n_relu) get ReLU then dropout, the rest only the bias (e.g. gate logits) */
void rmtl_dense_forward(float *out, int ld_out, const float *inp, int ld_in, const float *w,
                        const float *b, int n_relu, rmtl_dropout drop, int B, int C, int OC);
/* backward of rmtl_dense_forward: dout's ReLU columns are turned in place into pre-activation
   gradients, then dw, db and dinp (NULL: not wanted) receive theirs */
void rmtl_dense_backward(float *dinp, int ld_in, float *dw, float *db, float *dout, int ld_out,
                         const float *out, const float *inp, const float *w, int n_relu,
                         float drop_p, int B, int C, int OC);
/* rmtl_dense_forward's product, to run with others (rmtl_gemm_many) before its epilogue */
rmtl_gemm_op rmtl_dense_forward_op(float *out, int ld_out, const float *inp, int ld_in,
                                   const float *w, int B, int C, int OC);
/* rmtl_dense_backward's products (dw, then dinp unless NULL) into ops; returns how many */
int rmtl_dense_backward_ops(rmtl_gemm_op *ops, float *dinp, int ld_in, float *dw, const float *dout,
                            int ld_out, const float *inp, const float *w, int B, int C, int OC);

/* x (B,n) row stride ld: logits in, softmax over each row out (in place) */
void rmtl_softmax_forward(float *x, int ld, int B, int n);
/* d (B,n): gradient of the softmax output p in, gradient of the logits out (in place) */
void rmtl_softmax_backward(float *d, const float *p, int ld, int B, int n);

/* out (B,W) = sum_e gate[:, e] * x[e], gate (B,n), x[e] (B,W) with row stride ld_x[e] */
void rmtl_mix_forward(float *out, int ld_out, const float *gate, int ld_gate, const float *const *x,
                      const int *ld_x, int n, int B, int W);
/* adds gate * dout into dx[e] (same strides as x[e]) and <dout, x[e]> into dgate */
void rmtl_mix_backward(float *const *dx, float *dgate, const float *dout, int ld_out,
                       const float *gate, int ld_gate, const float *const *x, const int *ld_x,
                       int n, int B, int W);

/* AITM's attention over two positions x0, x1 (B,D) (row strides ld_x0, ld_x1), from z (B,2D) row
   stride ld_z = [x0 S | x1 S] and c (D): attn (B,2) = softmax_t((x_t . (z_t + c)) / sqrt(D)), the
   logits x_t^T S x_t + c . x_t; mix (B,D) = a_0 x0 + a_1 x1 */
void rmtl_attention2_forward(float *mix, int ld_mix, float *attn, const float *x0, int ld_x0,
                             const float *x1, int ld_x1, const float *z, int ld_z, const float *c,
                             int B, int D);
/* for dmix (B,D) the gradient of mix, through the softmax and the mixing: adds into dx0, dx1
   (x0's and x1's strides) and writes y (B,2D) = [s_0 x0 | s_1 x1] with s_t the logit gradients over
   sqrt(D), so that the gradient of S is sum_t y_t^T x_t and that of c the column sums of y */
void rmtl_attention2_backward(float *dx0, float *dx1, float *y, int ld_z, const float *dmix,
                              int ld_mix, const float *attn, const float *x0, int ld_x0,
                              const float *x1, int ld_x1, const float *z, const float *c, int B,
                              int D);

/* codes (B,F) table (rows,E) out (B,ld_out), field f at columns f*E; a field with u->use[f]
   (u may be NULL) gathers its u->u[f] distinct codes into rows [0, u->u[f]) instead */
void rmtl_embedding_forward(float *out, const int32_t *codes, const rmtl_distinct *u,
                            const float *table, const int64_t *field_offset, int B, int F, int E,
                            int ld_out);
/* adds the gradient of the rows rmtl_embedding_forward wrote into dtable, except row 0 */
void rmtl_embedding_backward(float *dtable, const float *dout, const int32_t *codes,
                             const rmtl_distinct *u, const int64_t *field_offset, int B, int F,
                             int E, int ld_out);

/* Tables of a Linear w (OC,(F+1)E), b (OC) over the front end [emb_1 .. emb_F | num_w x + num_b]:
   tab (rows + D + 1, OC) holds table (rows,E) times each field's column block of w in rows
   [0, rows), w's dense block times num_w (E,D) column d in row rows + d, and b + w's dense
   block times num_b (E) in the last row. Calls rmtl_gemm: not inside a parallel region. */
void rmtl_tables_build(float *tab, const float *table, const float *num_w, const float *num_b,
                       const float *w, const float *b, const int64_t *field_offset, int64_t rows,
                       int F, int D, int E, int OC);
/* eval-mode output of that Linear from its tables: codes (B,F), dense (B,D) -> out (B,OC)
   row stride ld_out = last row + sum_f tab[field_offset[f] + code] + sum_d dense_d tab[rows + d];
   columns [0, n_relu) get ReLU */
void rmtl_tables_forward(float *out, int ld_out, const int32_t *codes, const float *dense,
                         const float *tab, const int64_t *field_offset, int n_relu, int B, int F,
                         int D, int OC, int64_t rows);

/* logit: T pointers to (B) values; sig, prob (B,T); esmm: prob[:,1] = sig[:,1] * sig[:,0] */
void rmtl_head_forward(float *prob, float *sig, const float *const *logit, int esmm, int B, int T);
/* returns (1/T) sum_k mean_i w_ik BCE(y_ik, p_ik) and writes its logit gradients;
   weight (B,T) or NULL for all ones */
double rmtl_head_backward(float *const *dlogit, const float *prob, const float *sig,
                          const float *label, const float *weight, int esmm, int B, int T);
/* writes the logit gradients for a given probability gradient dprob (B,T) (the actor update) */
void rmtl_head_backward_prob(float *const *dlogit, const float *dprob, const float *sig, int esmm,
                             int B, int T);
#endif
