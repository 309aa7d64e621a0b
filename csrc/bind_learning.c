/* rmtl._core.Critic and the learning calls: TD and actor backward, soft update, the stage-2
   (td_chunk) and stage-3 (train_chunk with a weighting) chunks. */
#include "bind.h"

#include <math.h>
#include <string.h>

#include "rl.h"
#include "train.h"

typedef struct {
    PyObject_HEAD rmtl_model *m; /* &c->net */
    int busy;
    rmtl_critic *c;
} CriticObject;

static void Critic_dealloc(CriticObject *self);

/* obj as a Model (critic == 0) or Critic (critic == 1), identified by its own dealloc slot so a
   rebound module attribute cannot smuggle in another type; NULL with TypeError naming arg */
static ModelObject *rmtl_as_net(PyObject *obj, int critic, const char *arg) {
    int ok = critic ? PyType_GetSlot(Py_TYPE(obj), Py_tp_dealloc) == (void *)Critic_dealloc
                    : rmtl_is_model(obj);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s: expected rmtl._core.%s, got %s", arg,
                     critic ? "Critic" : "Model", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return (ModelObject *)obj;
}

/* b reads the same fields and cardinalities as a, and D dense features */
static int rmtl_same_inputs(const rmtl_model *a, const rmtl_model *b, const char *arg, int D) {
    if (a->F != b->F || b->D != D ||
        memcmp(a->field_dims, b->field_dims, (size_t)a->F * sizeof(int32_t)) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: expects %d fields and %d dense features with other field_dims than the "
                     "model (%d fields, %d dense); build it for the same data",
                     arg, b->F, b->D, a->F, D);
        return -1;
    }
    return 0;
}

/* b is a copy of a's architecture (a target network): same parameter count */
static int rmtl_same_shape(const rmtl_model *a, const rmtl_model *b, const char *arg) {
    if (a->params.total != b->params.total || a->T != b->T ||
        rmtl_same_inputs(a, b, arg, a->D) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError,
                         "%s: expected a copy of its network's architecture (%zu parameters), got "
                         "%zu parameters",
                         arg, a->params.total, b->params.total);
        }
        return -1;
    }
    return 0;
}

/* a list or tuple of T critics, held in h; out receives them. X < 0: they read the same inputs
   as m. X >= 0: the same fields as m and one dense width keep + X with 0 <= keep <= m's D (the
   critics' state: m's first keep dense columns and X extra columns, rmtl_gather_state). */
static int rmtl_hold_critics(rmtl_holds *h, PyObject *seq, const char *arg, const rmtl_model *m,
                             int X, rmtl_critic **out) {
    if (!PyList_Check(seq) && !PyTuple_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a list of %d Critic objects, got %s", arg, m->T,
                     Py_TYPE(seq)->tp_name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n != m->T) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d critics (one per task), got %zd", arg, m->T,
                     n);
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        ModelObject *o = rmtl_as_net(PySequence_Fast_GET_ITEM(seq, k), 1, arg);
        if (rmtl_hold(h, o) < 0) {
            return -1;
        }
        int keep = o->m->D - (X < 0 ? 0 : X), D0 = k > 0 ? out[0]->net.D : o->m->D;
        if (X >= 0 && (keep < 0 || keep > m->D || o->m->D != D0)) {
            PyErr_Format(PyExc_ValueError,
                         "%s: critic %zd reads %d dense features; expected the same number for "
                         "every critic, between the %d extra columns and %d + %d",
                         arg, k, o->m->D, X, m->D, X);
            return -1;
        }
        if (rmtl_same_inputs(m, o->m, arg, X < 0 ? m->D : o->m->D) < 0) {
            return -1;
        }
        out[k] = ((CriticObject *)o)->c;
    }
    return 0;
}

/* extra: None (no extra columns) or a finite float32 (n, X >= 1) array of the critics' extra
   state columns; 0 or -1 with an exception */
static int rmtl_parse_extra(PyObject *eo, npy_intp n, PyArrayObject **extra) {
    npy_intp shape[2] = {n, -1};
    *extra = NULL;
    if (eo == Py_None) {
        return 0;
    }
    *extra = rmtl_check_array(eo, "extra", NPY_FLOAT32, 2, shape, 0);
    if (*extra == NULL || rmtl_check_finite(*extra, "extra") < 0) {
        return -1;
    }
    if (PyArray_DIM(*extra, 1) < 1 || PyArray_DIM(*extra, 1) > INT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "extra: expected None or at least one column, got %zd",
                     (Py_ssize_t)PyArray_DIM(*extra, 1));
        return -1;
    }
    return 0;
}

static int rmtl_extra_width(const PyArrayObject *extra) {
    return extra == NULL ? 0 : (int)PyArray_DIM(extra, 1);
}

/* the checked training arrays (and the critics' extra columns, or NULL) as the core reads them */
static rmtl_rows rmtl_rows_of(PyArrayObject *codes, PyArrayObject *dense, PyArrayObject *labels,
                              PyArrayObject *extra) {
    rmtl_rows data = {PyArray_DATA(codes),
                      PyArray_DATA(dense),
                      PyArray_DATA(labels),
                      (int64_t)PyArray_DIM(codes, 0),
                      extra ? PyArray_DATA(extra) : NULL,
                      rmtl_extra_width(extra)};
    return data;
}

static PyArrayObject *rmtl_check_layers(PyObject *o, const char *arg, int lo) {
    PyArrayObject *a = rmtl_check_array(o, arg, NPY_INT32, 1, NULL, 0);
    if (a != NULL && (PyArray_DIM(a, 0) < lo || PyArray_DIM(a, 0) > RMTL_MAX_LAYERS)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d to %d layers, got %zd", arg, lo,
                     RMTL_MAX_LAYERS, (Py_ssize_t)PyArray_DIM(a, 0));
        return NULL;
    }
    return a;
}

static int Critic_init(CriticObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"field_dims", "num_dense", "embed_dim", "bottom_dims",
                             "tower_dims", "dropout",   "seed",      NULL};
    PyObject *fdo, *bo, *to;
    int D, E;
    float dropout;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OiiOOfK:Critic", kwlist, &fdo, &D, &E, &bo, &to,
                                     &dropout, &seed) ||
        rmtl_check_fresh(self->c, "Critic") < 0) {
        return -1;
    }
    PyArrayObject *fd = rmtl_check_array(fdo, "field_dims", NPY_INT32, 1, NULL, 0);
    PyArrayObject *bd = fd ? rmtl_check_layers(bo, "bottom_dims", 1) : NULL;
    PyArrayObject *td = bd ? rmtl_check_layers(to, "tower_dims", 0) : NULL;
    if (td == NULL) {
        return -1;
    }
    rmtl_model_config cfg = {0,
                             (int)PyArray_DIM(fd, 0),
                             D,
                             1,
                             E,
                             PyArray_DATA(fd),
                             (int)PyArray_DIM(bd, 0),
                             (int)PyArray_DIM(td, 0),
                             PyArray_DATA(bd),
                             PyArray_DATA(td),
                             dropout,
                             (uint64_t)seed,
                             0};
    rmtl_critic *c = NULL;
    int st = rmtl_critic_create(&c, &cfg);
    if (st != RMTL_OK) {
        rmtl_raise(st, "critic config");
        return -1;
    }
    self->c = c;
    self->m = &c->net;
    return 0;
}

static void Critic_dealloc(CriticObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    rmtl_critic_free(self->c);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* states for net (codes (n,F), dense (n,D)) and, unless ao is NULL, a finite action vector
   (n), with 1 <= n <= INT32_MAX / 4; returns n or -1 */
static npy_intp rmtl_check_states(ModelObject *net, PyObject *co, PyObject *dob, PyObject *ao,
                                  const char *action_arg, PyArrayObject **codes,
                                  PyArrayObject **dense, PyArrayObject **action, rmtl_holds *h) {
    npy_intp n = rmtl_net_check_inputs(net, co, dob, codes, dense, h);
    if (n < 0 || (ao != NULL && (*action = rmtl_check_vector(ao, action_arg, n)) == NULL) ||
        rmtl_check_one_batch(n) < 0) {
        return -1;
    }
    return n;
}

/* predict(sparse, dense, action, out, batch_size): Q values in the critic's current mode into
   out (n,), batch_size rows per forward */
static PyObject *Critic_predict(CriticObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sparse", "dense", "action", "out", "batch_size", NULL};
    PyObject *co, *dob, *ao, *oo;
    int B;
    /* NULL: rmtl_check_states sets them on success only, which gcc cannot see */
    PyArrayObject *codes = NULL, *dense = NULL, *action = NULL, *out;
    rmtl_holds h = RMTL_HOLDS_INIT;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOi:predict", kwlist, &co, &dob, &ao, &oo,
                                     &B) ||
        rmtl_check_batch_size(B) < 0 || rmtl_hold(&h, (ModelObject *)self) < 0) {
        return NULL;
    }
    npy_intp n =
        rmtl_check_states((ModelObject *)self, co, dob, ao, "action", &codes, &dense, &action, &h);
    npy_intp shape[1] = {n};
    if (n < 0 || (out = rmtl_check_array(oo, "out", NPY_FLOAT32, 1, shape, 1)) == NULL) {
        rmtl_holds_release(&h);
        return NULL;
    }
    PyThreadState *ts = rmtl_holds_begin(&h);
    /* the workspace holds min(n, B) rows */
    int st =
        rmtl_critic_predict(self->c, PyArray_DATA(out), PyArray_DATA(codes), PyArray_DATA(dense),
                            PyArray_DATA(action), (int64_t)n, n < B ? (int)n : B);
    rmtl_holds_end(&h, ts);
    if (st != RMTL_OK) {
        return rmtl_raise(st, "predict");
    }
    Py_RETURN_NONE;
}

/* Critic.backward's core calls over n rows (the GIL released): zeroed gradients, forward, then
   dq_i dQ_i/da_i added into daction (n) and the parameter gradients */
static int rmtl_critic_grad(rmtl_critic *c, float *daction, const float *dq, const int32_t *codes,
                            const float *dense, const float *action, int n) {
    RMTL_TRY(rmtl_critic_reserve(c, n));
    rmtl_critic_zero_grad(c, n);
    RMTL_TRY(rmtl_critic_forward(c, codes, dense, action, n));
    rmtl_critic_backward(c, daction, dq, codes, dense, action, n);
    return RMTL_OK;
}

/* backward(sparse, dense, action, grad_q) -> grad_action: zero the gradients, forward in the
   current mode, backpropagate sum_i grad_q_i Q_i into the parameter gradients */
static PyObject *Critic_backward(CriticObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sparse", "dense", "action", "grad_q", NULL};
    PyObject *co, *dob, *ao, *go;
    PyArrayObject *codes = NULL, *dense = NULL, *action = NULL, *dq; /* as in predict */
    rmtl_holds h = RMTL_HOLDS_INIT;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO:backward", kwlist, &co, &dob, &ao, &go) ||
        rmtl_hold(&h, (ModelObject *)self) < 0) {
        return NULL;
    }
    npy_intp n =
        rmtl_check_states((ModelObject *)self, co, dob, ao, "action", &codes, &dense, &action, &h);
    PyObject *out = n < 0 || (dq = rmtl_check_vector(go, "grad_q", n)) == NULL
                        ? NULL
                        : PyArray_ZEROS(1, &n, NPY_FLOAT32, 0);
    if (out == NULL) {
        rmtl_holds_release(&h);
        return NULL;
    }
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st =
        rmtl_critic_grad(self->c, PyArray_DATA((PyArrayObject *)out), PyArray_DATA(dq),
                         PyArray_DATA(codes), PyArray_DATA(dense), PyArray_DATA(action), (int)n);
    rmtl_holds_end(&h, ts);
    if (st != RMTL_OK) {
        Py_DECREF(out);
        return rmtl_raise(st, "backward");
    }
    return out;
}

static PyMethodDef Critic_methods[] = {
    {"predict", RMTL_KW(Critic_predict), METH_VARARGS | METH_KEYWORDS,
     "predict(sparse, dense, action, out, batch_size): Q values in the current mode into out"},
    {"backward", RMTL_KW(Critic_backward), METH_VARARGS | METH_KEYWORDS,
     "backward(sparse, dense, action, grad_q) -> grad_action; parameter gradients in "
     "buffer('grad')"},
    {NULL}};

static PyType_Slot Critic_slots[] = {
    {Py_tp_init, Critic_init},
    {Py_tp_dealloc, Critic_dealloc},
    {Py_tp_methods, Critic_methods},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "A critic's parameters, buffers and kernels (SPEC section 4)."},
    {0, NULL}};

static PyType_Spec Critic_spec = {"rmtl._core.Critic", sizeof(CriticObject), 0, Py_TPFLAGS_DEFAULT,
                                  Critic_slots};

/* td_backward(q, q_target, sparse, dense, action, next_sparse, next_dense, next_action, reward,
   done, weight, gamma, td3) -> loss; gradients of q in its buffer('grad') */
static PyObject *rmtl_py_td_backward(PyObject *mod, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"q",           "q_target",   "sparse",      "dense",  "action",
                             "next_sparse", "next_dense", "next_action", "reward", "done",
                             "weight",      "gamma",      "td3",         NULL};
    PyObject *qo, *qto, *co, *dob, *ao, *nco, *ndo, *nao, *ro, *doo, *wo;
    float gamma;
    int td3;
    PyArrayObject *codes = NULL, *dense = NULL, *action = NULL, *ncodes = NULL, *ndense = NULL,
                  *naction = NULL, *reward, *done, *weight = NULL; /* as in Critic.predict */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOOOOfp:td_backward", kwlist, &qo, &qto,
                                     &co, &dob, &ao, &nco, &ndo, &nao, &ro, &doo, &wo, &gamma,
                                     &td3)) {
        return NULL;
    }
    rmtl_holds h = RMTL_HOLDS_INIT;
    ModelObject *q = rmtl_as_net(qo, 1, "q"), *qt = q ? rmtl_as_net(qto, 1, "q_target") : NULL;
    if (rmtl_hold(&h, q) < 0 || rmtl_hold(&h, qt) < 0 ||
        rmtl_same_shape(q->m, qt->m, "q_target") < 0) {
        rmtl_holds_release(&h);
        return NULL;
    }
    npy_intp n = rmtl_check_states(q, co, dob, ao, "action", &codes, &dense, &action, &h);
    npy_intp n2 =
        n < 0 ? -1
              : rmtl_check_states(q, nco, ndo, nao, "next_action", &ncodes, &ndense, &naction, &h);
    if (n2 >= 0 && n2 != n) {
        PyErr_Format(PyExc_ValueError, "next_sparse: expected %zd rows like sparse, got %zd",
                     (Py_ssize_t)n, (Py_ssize_t)n2);
        n2 = -1;
    }
    if (n2 < 0 || (reward = rmtl_check_vector(ro, "reward", n)) == NULL ||
        (done = rmtl_check_vector(doo, "done", n)) == NULL ||
        (wo != Py_None && (weight = rmtl_check_vector(wo, "weight", n)) == NULL)) {
        rmtl_holds_release(&h);
        return NULL;
    }
    double loss = 0.0;
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st = rmtl_critic_td_backward(
        ((CriticObject *)q)->c, ((CriticObject *)qt)->c, &loss, PyArray_DATA(codes),
        PyArray_DATA(dense), PyArray_DATA(action), PyArray_DATA(ncodes), PyArray_DATA(ndense),
        PyArray_DATA(naction), PyArray_DATA(reward), PyArray_DATA(done),
        weight ? PyArray_DATA(weight) : NULL, gamma, td3, (int)n);
    rmtl_holds_end(&h, ts);
    return st == RMTL_OK ? PyFloat_FromDouble(loss) : rmtl_raise(st, "td_backward");
}

/* actor_backward(actor, critics, sparse, dense, weight) -> loss; the actor's gradients of
   -(1/B) sum_i sum_k w_ik Q_k(s_i, mu_k(s_i)) in its buffer('grad') */
static PyObject *rmtl_py_actor_backward(PyObject *mod, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"actor", "critics", "sparse", "dense", "weight", NULL};
    PyObject *ao, *cso, *co, *dob, *wo;
    PyArrayObject *codes, *dense, *weight = NULL;
    rmtl_critic *critics[RMTL_MAX_TASKS];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO:actor_backward", kwlist, &ao, &cso, &co,
                                     &dob, &wo)) {
        return NULL;
    }
    rmtl_holds h = RMTL_HOLDS_INIT;
    ModelObject *actor = rmtl_as_net(ao, 0, "actor");
    if (rmtl_hold(&h, actor) < 0 ||
        rmtl_hold_critics(&h, cso, "critics", actor->m, -1, critics) < 0) {
        rmtl_holds_release(&h);
        return NULL;
    }
    int T = actor->m->T;
    npy_intp n = rmtl_check_states(actor, co, dob, NULL, NULL, &codes, &dense, NULL, &h);
    npy_intp wshape[2] = {n, T};
    if (n < 0 || (wo != Py_None &&
                  ((weight = rmtl_check_array(wo, "weight", NPY_FLOAT32, 2, wshape, 0)) == NULL ||
                   rmtl_check_finite(weight, "weight") < 0))) {
        rmtl_holds_release(&h);
        return NULL;
    }
    float *dprob = PyMem_RawMalloc((size_t)n * T * sizeof(float));
    if (dprob == NULL) {
        rmtl_holds_release(&h);
        return PyErr_NoMemory();
    }
    double loss = 0.0;
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st = rmtl_actor_backward(actor->m, critics, &loss, dprob, PyArray_DATA(codes),
                                 PyArray_DATA(dense), PyArray_DATA(dense),
                                 weight ? PyArray_DATA(weight) : NULL, (int)n);
    rmtl_holds_end(&h, ts);
    PyMem_RawFree(dprob);
    return st == RMTL_OK ? PyFloat_FromDouble(loss) : rmtl_raise(st, "actor_backward");
}

/* soft_update(target, source, tau): target = tau source + (1 - tau) target, two Models or two
   Critics of one architecture */
static PyObject *rmtl_py_soft_update(PyObject *mod, PyObject *args) {
    PyObject *to, *so;
    float tau;
    if (!PyArg_ParseTuple(args, "OOf:soft_update", &to, &so, &tau)) {
        return NULL;
    }
    if (!(tau >= 0.0f && tau <= 1.0f)) {
        rmtl_value_error("tau: expected a value in [0, 1], got %g", (double)tau);
        return NULL;
    }
    int critic = rmtl_as_net(to, 1, "target") != NULL;
    PyErr_Clear();
    rmtl_holds h = RMTL_HOLDS_INIT;
    ModelObject *t = rmtl_as_net(to, critic, "target"),
                *s = t ? rmtl_as_net(so, critic, "source") : NULL;
    if (rmtl_hold(&h, t) < 0 || rmtl_hold(&h, s) < 0 || rmtl_same_shape(s->m, t->m, "target") < 0) {
        rmtl_holds_release(&h);
        return NULL;
    }
    PyThreadState *ts = rmtl_holds_begin(&h);
    rmtl_soft_update(t->m->params.param, s->m->params.param, t->m->params.total, tau);
    rmtl_holds_end(&h, ts);
    Py_RETURN_NONE;
}

/* task_weights of the static weighting (a finite float32 (T) array >= 0, copied into out,
   which the core reads with the GIL released) or None for every other weighting; 0 or -1 with
   ValueError */
static int rmtl_parse_task_weights(PyObject *o, int weighting, int T, float *out) {
    if (weighting != RMTL_WEIGHT_STATIC) {
        if (o != Py_None) {
            PyErr_Format(PyExc_ValueError,
                         "task_weights: only read by the static weighting; expected None, got %s",
                         Py_TYPE(o)->tp_name);
            return -1;
        }
        return 0;
    }
    if (o == Py_None) {
        PyErr_Format(PyExc_ValueError,
                     "task_weights: expected a float32 array of %d weights (one per task) for the "
                     "static weighting, got None",
                     T);
        return -1;
    }
    npy_intp shape[1] = {T};
    PyArrayObject *a = rmtl_check_array(o, "task_weights", NPY_FLOAT32, 1, shape, 0);
    for (int k = 0; a != NULL && k < T; k++) {
        out[k] = ((const float *)PyArray_DATA(a))[k];
        if (!(out[k] >= 0.0f && isfinite(out[k]))) {
            rmtl_value_error("task_weights: expected finite weights >= 0, got %g for task %d",
                             (double)out[k], k);
            return -1;
        }
    }
    return a == NULL ? -1 : 0;
}

/* loss_weights(q, labels, weighting, lam=0, task_weights=None) -> w (n,T) float32: stage 3's
   weights (rmtl_loss_weights) at Q values q (n,T) float32 (None for constant and static) and
   labels (n,T) float32; permuted gives rmtl's weights (training permutes them per batch) */
static PyObject *rmtl_py_loss_weights(PyObject *mod, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"q", "labels", "weighting", "lam", "task_weights", NULL};
    PyObject *qo, *lo, *two = Py_None;
    int weighting;
    float lam = 0.0f, task_weights[RMTL_MAX_TASKS];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOi|fO:loss_weights", kwlist, &qo, &lo,
                                     &weighting, &lam, &two)) {
        return NULL;
    }
    if (weighting < RMTL_WEIGHT_RMTL || weighting > RMTL_WEIGHT_PERMUTED) {
        PyErr_Format(PyExc_ValueError,
                     "weighting: expected one of rmtl._core.enums['weighting'], got %d", weighting);
        return NULL;
    }
    if (!isfinite(lam)) {
        PyErr_SetString(PyExc_ValueError, "lam: expected a finite number");
        return NULL;
    }
    PyArrayObject *labels = rmtl_check_array(lo, "labels", NPY_FLOAT32, 2, NULL, 0);
    if (labels == NULL) {
        return NULL;
    }
    npy_intp n = PyArray_DIM(labels, 0), shape[2] = {n, PyArray_DIM(labels, 1)};
    int T = (int)shape[1];
    if (T < 1 || T > RMTL_MAX_TASKS) {
        rmtl_value_error("labels: expected 1 to %d tasks (columns), got %d", RMTL_MAX_TASKS, T);
        return NULL;
    }
    int needs_q = weighting != RMTL_WEIGHT_CONSTANT && weighting != RMTL_WEIGHT_STATIC;
    PyArrayObject *q = NULL;
    if (needs_q || qo != Py_None) {
        q = rmtl_check_array(qo, "q", NPY_FLOAT32, 2, shape, 0);
        if (q == NULL) {
            return NULL;
        }
    }
    if (rmtl_parse_task_weights(two, weighting, T, task_weights) < 0) {
        return NULL;
    }
    PyArrayObject *w = (PyArrayObject *)PyArray_SimpleNew(2, shape, NPY_FLOAT32);
    if (w == NULL) {
        return NULL;
    }
    rmtl_loss_weighting wt = {NULL, weighting, lam, task_weights, 0};
    for (int k = 0; k < T; k++) {
        rmtl_loss_weights(PyArray_DATA(w), q == NULL ? NULL : (const float *)PyArray_DATA(q) + k, T,
                          PyArray_DATA(labels), k, (int64_t)n, T, &wt);
    }
    return (PyObject *)w;
}

/* Spans [lo, hi) of the model's flat buffers, an int64 (n, 2) array in increasing order, disjoint
   and inside the buffers, whose lengths sum to the balancer's dim (rep 0), or a balancer over
   the towers' input width that can work there (rep 1): into lo and hi (PyMem_Raw, freed by the
   caller); 0 or -1 with ValueError naming shared, balancer or representation */
static int rmtl_parse_shared(PyObject *o, const rmtl_model *m, const rmtl_balancer *b, int rep,
                             int64_t **lo, int64_t **hi, int *n) {
    npy_intp shape[2] = {-1, 2};
    PyArrayObject *a = rmtl_check_array(o, "shared", NPY_INT64, 2, shape, 0);
    if (a == NULL) {
        return -1;
    }
    *n = (int)PyArray_DIM(a, 0);
    const int64_t *v = PyArray_DATA(a);
    *lo = PyMem_RawMalloc(((size_t)*n + 1) * sizeof(int64_t));
    *hi = PyMem_RawMalloc(((size_t)*n + 1) * sizeof(int64_t));
    if (*lo == NULL || *hi == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int64_t end = 0, total = 0;
    for (int i = 0; i < *n; i++) {
        (*lo)[i] = v[2 * i];
        (*hi)[i] = v[2 * i + 1];
        if ((*lo)[i] < end || (*hi)[i] <= (*lo)[i] || (*hi)[i] > (int64_t)m->params.total) {
            PyErr_Format(PyExc_ValueError,
                         "shared: expected increasing disjoint spans inside the %zu parameters, "
                         "got [%lld, %lld) at row %d",
                         m->params.total, (long long)(*lo)[i], (long long)(*hi)[i], i);
            return -1;
        }
        end = (*hi)[i];
        total += (*hi)[i] - (*lo)[i];
    }
    int width = m->bottom[m->n_bottom - 1];
    if (rep && b->P != width) {
        PyErr_Format(PyExc_ValueError,
                     "balancer: expected dim %d (the width of the representation the towers "
                     "read), got %lld",
                     width, (long long)b->P);
        return -1;
    }
    if (rep && b->spec->family != RMTL_BAL_LOSSES && b->spec->rep == RMTL_BAL_REP_NONE) {
        PyErr_Format(PyExc_ValueError,
                     "representation: %s cannot work on the representation the towers read "
                     "(as in LibMTL); train it with space='parameters'",
                     b->spec->name);
        return -1;
    }
    if (!rep && total != b->P) {
        PyErr_Format(PyExc_ValueError,
                     "shared: expected spans of %lld parameters in all (the balancer's dim), "
                     "got %lld",
                     (long long)b->P, (long long)total);
        return -1;
    }
    if (b->K != m->T) {
        PyErr_Format(PyExc_ValueError, "balancer: balances %d tasks, the model has %d", b->K, m->T);
        return -1;
    }
    return 0;
}

/* train_chunk(model, rows, sparse, dense, labels, batch_size, lr, beta1, beta2, eps,
   weight_decay, critics=None, weighting=None, lam=0, extra=None, task_weights=None, seed=0,
   balancer=None, shared=None)
   -> (sum of batch loss * batch size, [sum of weights per task] or None). One Adam step per
   batch of batch_size consecutive rows (the last may be short) on the BCE loss; with a
   weighting (RMTL_WEIGHT_*) each row's loss is weighted as stage 3 does it, from the critics'
   eval-mode Q at the model's predictions (critics may be None for the constant and static
   weightings; static reads task_weights, permuted its seed: rmtl_train_chunk); the critics
   read their state from the first dense columns and extra (rmtl_hold_critics). The arrays are
   a whole training set; only the rows this chunk reads are checked, so a chunk costs
   validation in proportion to its own work. With a balancer (rmtl._core.Balancer) and shared
   (rmtl_parse_shared) the task losses are balanced (rmtl_train_chunk). */
static PyObject *rmtl_py_train_chunk(PyObject *mod, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {
        "model", "rows",         "sparse", "dense",        "labels",  "batch_size",     "lr",
        "beta1", "beta2",        "eps",    "weight_decay", "critics", "weighting",      "lam",
        "extra", "task_weights", "seed",   "balancer",     "shared",  "representation", NULL};
    PyObject *mo, *ro, *co, *dob, *lo, *cso = Py_None, *wo = Py_None, *eo = Py_None, *two = Py_None;
    PyObject *bo = Py_None, *so = Py_None;
    int B, weighting = -1, rep = 0;
    float lam = 0.0f, task_weights[RMTL_MAX_TASKS];
    unsigned long long seed = 0;
    rmtl_adam opt;
    PyArrayObject *rows, *codes, *dense, *labels, *extra = NULL;
    rmtl_critic *critics[RMTL_MAX_TASKS];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOifffff|OOfOOKOOp:train_chunk", kwlist, &mo,
                                     &ro, &co, &dob, &lo, &B, &opt.lr, &opt.beta1, &opt.beta2,
                                     &opt.eps, &opt.weight_decay, &cso, &wo, &lam, &eo, &two, &seed,
                                     &bo, &so, &rep) ||
        rmtl_check_adam(&opt, "adam") < 0 || rmtl_check_batch_size(B) < 0) {
        return NULL;
    }
    if (wo != Py_None) {
        weighting = (int)PyLong_AsLong(wo);
        if (weighting == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (weighting < RMTL_WEIGHT_RMTL || weighting > RMTL_WEIGHT_PERMUTED) {
            PyErr_Format(PyExc_ValueError,
                         "weighting: expected None or one of rmtl._core.enums['weighting'], got %d",
                         weighting);
            return NULL;
        }
    } else if (cso != Py_None) {
        PyErr_SetString(PyExc_ValueError, "critics: only used with a weighting; leave it None");
        return NULL;
    }
    if (!isfinite(lam)) {
        PyErr_SetString(PyExc_ValueError, "lam: expected a finite number");
        return NULL;
    }
    int critic_free = weighting == RMTL_WEIGHT_CONSTANT || weighting == RMTL_WEIGHT_STATIC;
    int use_critics = wo != Py_None && (cso != Py_None || !critic_free);
    if (!use_critics && eo != Py_None) {
        PyErr_SetString(PyExc_ValueError, "extra: only read by critics; leave it None");
        return NULL;
    }
    rmtl_holds h = RMTL_HOLDS_INIT;
    ModelObject *model = rmtl_as_net(mo, 0, "model");
    if (rmtl_hold(&h, model) < 0 ||
        rmtl_check_chunk_rows(model->m, ro, co, dob, lo, &rows, &codes, &dense, &labels) < 0 ||
        rmtl_parse_extra(eo, PyArray_DIM(codes, 0), &extra) < 0 ||
        rmtl_parse_task_weights(two, weighting, model->m->T, task_weights) < 0 ||
        (use_critics &&
         rmtl_hold_critics(&h, cso, "critics", model->m, rmtl_extra_width(extra), critics) < 0)) {
        rmtl_holds_release(&h);
        return NULL;
    }
    if ((bo == Py_None) != (so == Py_None)) {
        rmtl_holds_release(&h);
        PyErr_SetString(PyExc_ValueError,
                        "balancer, shared: give both (a Balancer and its shared spans) or neither");
        return NULL;
    }
    rmtl_balanced bal = {NULL, NULL, NULL, 0, rep};
    int64_t *span_lo = NULL, *span_hi = NULL;
    if (bo != Py_None) {
        bal.b = rmtl_balancer_claim(bo, "balancer");
        if (bal.b == NULL ||
            rmtl_parse_shared(so, model->m, bal.b, rep, &span_lo, &span_hi, &bal.n) < 0) {
            if (bal.b != NULL) {
                rmtl_balancer_release(bo);
            }
            PyMem_RawFree(span_lo);
            PyMem_RawFree(span_hi);
            rmtl_holds_release(&h);
            return NULL;
        }
        bal.lo = span_lo;
        bal.hi = span_hi;
    }
    rmtl_rows data = rmtl_rows_of(codes, dense, labels, extra);
    rmtl_loss_weighting wt = {critic_free ? NULL : critics, weighting, lam,
                              two == Py_None ? NULL : task_weights, (uint64_t)seed};
    double loss = 0.0, wsum[RMTL_MAX_TASKS];
    int T = model->m->T;
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st =
        rmtl_train_chunk(model->m, &loss, wsum, PyArray_DATA(rows), (int64_t)PyArray_DIM(rows, 0),
                         &data, B, wo == Py_None ? NULL : &wt, bal.b == NULL ? NULL : &bal, &opt);
    rmtl_holds_end(&h, ts);
    if (bal.b != NULL) {
        rmtl_balancer_release(bo);
    }
    PyMem_RawFree(span_lo);
    PyMem_RawFree(span_hi);
    if (st == RMTL_ERR_NONFINITE) {
        PyErr_SetString(PyExc_FloatingPointError,
                        "train_chunk: a task loss or gradient became NaN or infinite; nothing of "
                        "that step was applied");
        return NULL;
    }
    if (st != RMTL_OK) {
        return rmtl_raise(st, "train_chunk");
    }
    if (wo == Py_None) {
        return Py_BuildValue("(dO)", loss, Py_None);
    }
    return Py_BuildValue("(dN)", loss, rmtl_float_list(wsum, T));
}

/* the stage-2 settings in cfg are in range; -1 with ValueError if not */
static int rmtl_check_td_config(const rmtl_td_config *cfg) {
    if (!(cfg->gamma >= 0.0f && cfg->gamma <= 1.0f) || !(cfg->tau >= 0.0f && cfg->tau <= 1.0f) ||
        !(cfg->noise_std >= 0.0f && isfinite(cfg->noise_std)) ||
        !(cfg->noise_clip >= 0.0f && isfinite(cfg->noise_clip)) || cfg->soft_update_freq < 1 ||
        cfg->actor_update_freq < 1) {
        rmtl_value_error(
            "config: expected gamma and tau in [0, 1], finite noise_std and noise_clip >= 0, "
            "update frequencies >= 1; got gamma=%g tau=%g noise_std=%g noise_clip=%g "
            "soft_update_freq=%d actor_update_freq=%d",
            (double)cfg->gamma, (double)cfg->tau, (double)cfg->noise_std, (double)cfg->noise_clip,
            cfg->soft_update_freq, cfg->actor_update_freq);
        return -1;
    }
    return 0;
}

/* td_chunk(actor, actor_target, critics, targets, state, next, action, reward, done, sparse,
   dense, labels, batch_size, step, gamma, td3, noise_std, noise_clip, ips, tau,
   soft_update_freq, actor_update, actor_update_freq, init_training_step, seed, critic_adam,
   actor_adam, extra=None) -> ([sum of TD losses per task], sum of actor losses, actor steps
   taken). The critics read their state from the first dense columns and extra
   (rmtl_hold_critics).
   state and next (N,) int64 rows of the data arrays, action and reward (N,T), done (N): N / B
   minibatches of B transitions, one stage-2 step each, global step indices from `step` on;
   critic_adam and actor_adam are tuples (lr, beta1, beta2, eps, weight_decay) */
static PyObject *rmtl_py_td_chunk(PyObject *mod, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"actor",
                             "actor_target",
                             "critics",
                             "targets",
                             "state",
                             "next",
                             "action",
                             "reward",
                             "done",
                             "sparse",
                             "dense",
                             "labels",
                             "batch_size",
                             "step",
                             "gamma",
                             "td3",
                             "noise_std",
                             "noise_clip",
                             "ips",
                             "tau",
                             "soft_update_freq",
                             "actor_update",
                             "actor_update_freq",
                             "init_training_step",
                             "seed",
                             "critic_adam",
                             "actor_adam",
                             "extra",
                             NULL};
    PyObject *ao, *ato, *cso, *tso, *so, *no, *aco, *ro, *doo, *co, *dob, *lo, *copt, *aopt,
        *eo = Py_None;
    int B;
    long long step, init;
    unsigned long long seed;
    rmtl_td_config cfg;
    PyArrayObject *state, *next, *action, *reward, *done, *codes, *dense, *labels, *extra = NULL;
    rmtl_critic *critics[RMTL_MAX_TASKS], *targets[RMTL_MAX_TASKS];
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "OOOOOOOOOOOOiLfpffpfipiLKOO|O:td_chunk", kwlist, &ao, &ato, &cso, &tso,
            &so, &no, &aco, &ro, &doo, &co, &dob, &lo, &B, &step, &cfg.gamma, &cfg.td3,
            &cfg.noise_std, &cfg.noise_clip, &cfg.ips, &cfg.tau, &cfg.soft_update_freq,
            &cfg.actor_update, &cfg.actor_update_freq, &init, &seed, &copt, &aopt, &eo) ||
        rmtl_parse_adam(copt, &cfg.critic_opt, "critic_adam") < 0 ||
        rmtl_parse_adam(aopt, &cfg.actor_opt, "actor_adam") < 0 || rmtl_check_td_config(&cfg) < 0 ||
        rmtl_check_batch_size(B) < 0) {
        return NULL;
    }
    cfg.init_training_step = (int64_t)init;
    cfg.seed = (uint64_t)seed;
    rmtl_holds h = RMTL_HOLDS_INIT;
    ModelObject *actor = rmtl_as_net(ao, 0, "actor");
    ModelObject *at = actor ? rmtl_as_net(ato, 0, "actor_target") : NULL;
    int ok =
        rmtl_hold(&h, actor) == 0 && rmtl_hold(&h, at) == 0 &&
        rmtl_same_shape(actor->m, at->m, "actor_target") == 0 &&
        rmtl_check_chunk_rows(actor->m, so, co, dob, lo, &state, &codes, &dense, &labels) == 0 &&
        rmtl_check_chunk_rows(actor->m, no, co, dob, lo, &next, &codes, &dense, &labels) == 0 &&
        rmtl_parse_extra(eo, PyArray_DIM(codes, 0), &extra) == 0 &&
        rmtl_hold_critics(&h, cso, "critics", actor->m, rmtl_extra_width(extra), critics) == 0 &&
        rmtl_hold_critics(&h, tso, "targets", actor->m, rmtl_extra_width(extra), targets) == 0;
    for (int k = 0; ok && k < actor->m->T; k++) {
        ok = rmtl_same_shape(&critics[k]->net, &targets[k]->net, "targets") == 0;
    }
    npy_intp N = ok ? PyArray_DIM(state, 0) : 0;
    int T = actor ? actor->m->T : 0;
    if (ok && (PyArray_DIM(next, 0) != N || N % B != 0 || N == 0)) {
        PyErr_Format(PyExc_ValueError,
                     "state, next: expected equal lengths, a positive multiple of batch_size %d; "
                     "got %zd and %zd",
                     B, (Py_ssize_t)N, (Py_ssize_t)PyArray_DIM(next, 0));
        ok = 0;
    }
    ok = ok && (action = rmtl_check_matrix(aco, "action", N, T)) != NULL &&
         (reward = rmtl_check_matrix(ro, "reward", N, T)) != NULL &&
         (done = rmtl_check_vector(doo, "done", N)) != NULL;
    if (!ok) {
        rmtl_holds_release(&h);
        return NULL;
    }
    rmtl_agent_nets nets = {critics, targets, actor->m, at->m, T};
    rmtl_td_batch batches = {PyArray_DATA(state), PyArray_DATA(next), PyArray_DATA(action),
                             PyArray_DATA(reward), PyArray_DATA(done)};
    rmtl_rows data = rmtl_rows_of(codes, dense, labels, extra);
    double closs[RMTL_MAX_TASKS], aloss = 0.0;
    int64_t asteps = 0;
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st = rmtl_td_chunk(&nets, closs, &aloss, &asteps, &batches, &data, B, (int64_t)(N / B),
                           (int64_t)step, &cfg);
    rmtl_holds_end(&h, ts);
    if (st != RMTL_OK) {
        return rmtl_raise(st, "td_chunk");
    }
    return Py_BuildValue("(NdL)", rmtl_float_list(closs, T), aloss, (long long)asteps);
}
static PyMethodDef rmtl_learning_functions[] = {
    {"td_backward", RMTL_KW(rmtl_py_td_backward), METH_VARARGS | METH_KEYWORDS,
     "td_backward(q, q_target, sparse, dense, action, next_sparse, next_dense, next_action, "
     "reward, done, weight, gamma, td3) -> TD loss; gradients in q.buffer('grad')"},
    {"actor_backward", RMTL_KW(rmtl_py_actor_backward), METH_VARARGS | METH_KEYWORDS,
     "actor_backward(actor, critics, sparse, dense, weight) -> actor loss; gradients in "
     "actor.buffer('grad')"},
    {"soft_update", rmtl_py_soft_update, METH_VARARGS,
     "soft_update(target, source, tau): target = tau source + (1 - tau) target"},
    {"loss_weights", RMTL_KW(rmtl_py_loss_weights), METH_VARARGS | METH_KEYWORDS,
     "loss_weights(q, labels, weighting, lam=0, task_weights=None) -> the stage-3 weights (n,T)"},
    {"train_chunk", RMTL_KW(rmtl_py_train_chunk), METH_VARARGS | METH_KEYWORDS,
     "train_chunk(model, rows, sparse, dense, labels, batch_size, lr, beta1, beta2, eps, "
     "weight_decay, critics=None, weighting=None, lam=0, extra=None, task_weights=None, seed=0) "
     "-> (loss sum, [weight sums] or None)"},
    {"td_chunk", RMTL_KW(rmtl_py_td_chunk), METH_VARARGS | METH_KEYWORDS,
     "td_chunk(actor, actor_target, critics, targets, state, next, action, reward, done, sparse, "
     "dense, labels, batch_size, step, gamma, td3, noise_std, noise_clip, ips, tau, "
     "soft_update_freq, actor_update, actor_update_freq, init_training_step, seed, critic_adam, "
     "actor_adam, extra=None) -> ([TD loss sums], actor loss sum, actor steps)"},
    {NULL}};

static const rmtl_enum_entry rmtl_weighting_enum[] = {{"rmtl", RMTL_WEIGHT_RMTL},
                                                      {"constant", RMTL_WEIGHT_CONSTANT},
                                                      {"label", RMTL_WEIGHT_LABEL},
                                                      {"neg_q", RMTL_WEIGHT_NEG_Q},
                                                      {"static", RMTL_WEIGHT_STATIC},
                                                      {"permuted", RMTL_WEIGHT_PERMUTED},
                                                      {NULL, 0}};

int rmtl_bind_learning_init(PyObject *mod) {
    if (PyModule_AddFunctions(mod, rmtl_learning_functions) < 0 ||
        rmtl_add_enum(mod, "weighting", rmtl_weighting_enum) < 0) {
        return -1;
    }
    PyObject *net_type = PyObject_GetAttrString(mod, "Net");
    int st = net_type == NULL ? -1 : rmtl_add_type(mod, &Critic_spec, net_type);
    Py_XDECREF(net_type);
    return st;
}
