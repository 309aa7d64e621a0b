/* rmtl._core.Balancer: one loss balancer (balancers.h) with its state, and the table of
   balancers with their hyperparameters (balancer_specs). The hyperparameters are checked here,
   where they enter, against the ranges in the family files' specs. */
#include "bind.h"

#include <math.h>
#include <string.h>

#include "balancers.h"

typedef struct {
    PyObject_HEAD rmtl_balancer b;
    int64_t *segments;
    int busy;
} BalancerObject;

static const char *rmtl_bal_family_name(int family) {
    return family == RMTL_BAL_LOSSES ? "losses" : "gradients";
}

/* the spec named name, or NULL with ValueError listing the names */
static const rmtl_bal_spec *rmtl_bal_find(const char *name) {
    const rmtl_bal_spec *s;
    for (int i = 0; (s = rmtl_bal_at(i)) != NULL; i++) {
        if (strcmp(s->name, name) == 0) {
            return s;
        }
    }
    PyObject *names = PyList_New(0);
    for (int i = 0; names != NULL && (s = rmtl_bal_at(i)) != NULL; i++) {
        PyObject *n = PyUnicode_FromString(s->name);
        if (n == NULL || PyList_Append(names, n) < 0) {
            Py_XDECREF(n);
            Py_CLEAR(names);
            break;
        }
        Py_DECREF(n);
    }
    if (names != NULL) {
        PyErr_Format(PyExc_ValueError, "balancer: expected one of %R, got '%s'", names, name);
        Py_DECREF(names);
    }
    return NULL;
}

/* value v of hyperparameter h of balancer spec, in range; 0 or -1 with ValueError */
static int rmtl_bal_check_hyper(const rmtl_bal_spec *spec, const rmtl_bal_hyper *h, double v) {
    int inside =
        (h->open_low ? v > h->low : v >= h->low) && (h->open_high ? v < h->high : v <= h->high);
    if (!isfinite(v) || !inside || (h->integer && v != floor(v))) {
        if (h->choices != NULL) {
            rmtl_value_error("%s: expected one of '%s' for %s, got index %g", h->name, h->choices,
                             spec->name, v);
            return -1;
        }
        char msg[256];
        snprintf(msg, sizeof msg, "%s: expected a finite %s in %s%g, %g%s for %s, got %g", h->name,
                 h->integer ? "integer" : "value", h->open_low ? "(" : "[", h->low, h->high,
                 h->open_high ? ")" : "]", spec->name, v);
        PyErr_SetString(PyExc_ValueError, msg);
        return -1;
    }
    return 0;
}

/* Balancer(name, num_tasks, dim, seed, hyper, adam, fixed=None, segments=None):
   hyper a tuple of every hyperparameter in spec order (floats; a choice's index), adam the
   tuple (lr, beta1, beta2, eps, weight_decay) of trainable balancer parameters, fixed linear's
   weights (num_tasks) float32 >= 0, segments an int64 vector of tensor lengths summing to dim */
static int Balancer_init(BalancerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"name", "num_tasks", "dim",      "seed", "hyper",
                             "adam", "fixed",     "segments", NULL};
    const char *name;
    int K;
    long long P, seed;
    PyObject *ho, *ao, *fo = Py_None, *so = Py_None;
    if (rmtl_check_fresh(self->b.spec, "Balancer") < 0 ||
        !PyArg_ParseTupleAndKeywords(args, kw, "siLLOO|OO:Balancer", kwlist, &name, &K, &P, &seed,
                                     &ho, &ao, &fo, &so)) {
        return -1;
    }
    const rmtl_bal_spec *spec = rmtl_bal_find(name);
    if (spec == NULL) {
        return -1;
    }
    rmtl_balancer *b = &self->b;
    if (K < 2 || K > RMTL_MAX_TASKS) {
        PyErr_Format(PyExc_ValueError, "num_tasks: expected 2 to %d tasks to balance, got %d",
                     RMTL_MAX_TASKS, K);
        return -1;
    }
    if (P < 1 || P > INT64_MAX / 64 / RMTL_MAX_TASKS) {
        PyErr_Format(PyExc_ValueError, "dim: expected a positive gradient length, got %lld", P);
        return -1;
    }
    int n_hyper = 0;
    while (n_hyper < RMTL_BAL_MAX_HYPER && spec->hyper[n_hyper].name != NULL) {
        n_hyper++;
    }
    if (!PyTuple_Check(ho) || PyTuple_GET_SIZE(ho) != n_hyper) {
        PyErr_Format(PyExc_TypeError, "hyper: expected a tuple of %d values for %s, got %R",
                     n_hyper, spec->name, ho);
        return -1;
    }
    for (int i = 0; i < n_hyper; i++) {
        double v = PyFloat_AsDouble(PyTuple_GET_ITEM(ho, i));
        if ((v == -1.0 && PyErr_Occurred()) || rmtl_bal_check_hyper(spec, &spec->hyper[i], v) < 0) {
            return -1;
        }
        b->h[i] = v;
    }
    if (rmtl_parse_adam(ao, &b->opt, "adam") < 0) {
        return -1;
    }
    for (int k = 0; k < RMTL_MAX_TASKS; k++) {
        b->fixed[k] = 1.0;
    }
    if (fo != Py_None) {
        PyArrayObject *f = rmtl_check_vector(fo, "weights", K);
        if (f == NULL) {
            return -1;
        }
        const float *fv = PyArray_DATA(f);
        for (int k = 0; k < K; k++) {
            if (fv[k] < 0.0f) {
                rmtl_value_error("weights: expected non-negative task weights, got %g at task %d",
                                 fv[k], k);
                return -1;
            }
            b->fixed[k] = fv[k];
        }
    }
    int n_seg = 1;
    const int64_t *sv = NULL;
    if (so != Py_None) {
        PyArrayObject *s = rmtl_check_array(so, "segments", NPY_INT64, 1, NULL, 0);
        if (s == NULL) {
            return -1;
        }
        n_seg = (int)PyArray_DIM(s, 0);
        sv = PyArray_DATA(s);
        int64_t total = 0;
        for (int i = 0; i < n_seg; i++) {
            if (sv[i] < 1 || sv[i] > P) {
                PyErr_Format(PyExc_ValueError,
                             "segments: expected positive tensor lengths, got %lld at %d",
                             (long long)sv[i], i);
                return -1;
            }
            total += sv[i];
        }
        if (n_seg < 1 || total != P) {
            PyErr_Format(PyExc_ValueError,
                         "segments: expected tensor lengths summing to dim %lld, got %lld", P,
                         (long long)total);
            return -1;
        }
    }
    self->segments = PyMem_RawMalloc((size_t)n_seg * sizeof(int64_t));
    if (self->segments == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (sv != NULL) {
        memcpy(self->segments, sv, (size_t)n_seg * sizeof(int64_t));
    } else {
        self->segments[0] = P;
    }
    b->K = K;
    b->S = spec->samples;
    b->P = (int64_t)P;
    b->seed = (uint64_t)seed;
    b->segments = self->segments;
    b->n_segments = n_seg;
    b->spec = spec;
    rmtl_balancer_sizes(b, &b->n_state, &b->n_work);
    b->state = PyMem_RawCalloc((size_t)(b->n_state + b->n_work) + 1, sizeof(double));
    if (b->state == NULL) {
        b->spec = NULL;
        PyErr_NoMemory();
        return -1;
    }
    b->work = b->state + b->n_state;
    rmtl_balancer_init(b);
    return 0;
}

static void Balancer_dealloc(BalancerObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyMem_RawFree(self->b.state);
    PyMem_RawFree(self->segments);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* 0 if initialised and idle, else -1 with RuntimeError */
static int rmtl_bal_ready(BalancerObject *self) {
    if (self->b.spec == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Balancer: not initialised");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Balancer: another thread is running a call on this balancer");
        return -1;
    }
    return 0;
}

/* step(losses (S,K) float32, jacobian (S,K,P) float32, out (P) float32, rows=1.0): the direction
   into out; GIL released (copies of the inputs are read) */
static PyObject *Balancer_step(BalancerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"losses", "jacobian", "out", "rows", NULL};
    PyObject *lo, *jo, *oo;
    double rows = 1.0;
    if (rmtl_bal_ready(self) < 0 ||
        !PyArg_ParseTupleAndKeywords(args, kw, "OOO|d:step", kwlist, &lo, &jo, &oo, &rows)) {
        return NULL;
    }
    rmtl_balancer *b = &self->b;
    npy_intp ls[2] = {b->S, b->K}, js[3] = {b->S, b->K, (npy_intp)b->P}, os[1] = {(npy_intp)b->P};
    PyArrayObject *l = rmtl_check_array(lo, "losses", NPY_FLOAT32, 2, ls, 0);
    PyArrayObject *j = l == NULL ? NULL : rmtl_check_array(jo, "jacobian", NPY_FLOAT32, 3, js, 0);
    PyArrayObject *o = j == NULL ? NULL : rmtl_check_array(oo, "out", NPY_FLOAT32, 1, os, 1);
    if (o == NULL) {
        return NULL;
    }
    if (!(rows > 0.0) || !isfinite(rows)) {
        return rmtl_value_error("rows: expected a positive batch size, got %g", rows);
    }
    PyObject *lc = PyArray_NewCopy(l, NPY_CORDER);
    PyObject *jc = lc == NULL ? NULL : PyArray_NewCopy(j, NPY_CORDER);
    if (jc == NULL) {
        Py_XDECREF(lc);
        return NULL;
    }
    int st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_balancer_step(b, PyArray_DATA(o), rmtl_data(lc), rmtl_data(jc), rows);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    Py_DECREF(lc);
    Py_DECREF(jc);
    if (st != RMTL_OK) {
        return rmtl_raise(st, "losses or jacobian");
    }
    Py_RETURN_NONE;
}

/* step_weights(losses (K) float32, rows=1.0) -> float64 (K): a loss balancer's weights */
static PyObject *Balancer_step_weights(BalancerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"losses", "rows", NULL};
    PyObject *lo;
    double rows = 1.0;
    if (rmtl_bal_ready(self) < 0 ||
        !PyArg_ParseTupleAndKeywords(args, kw, "O|d:step_weights", kwlist, &lo, &rows)) {
        return NULL;
    }
    rmtl_balancer *b = &self->b;
    if (b->spec->family != RMTL_BAL_LOSSES) {
        PyErr_Format(PyExc_ValueError,
                     "step_weights: %s needs the task gradients; call step with the Jacobian",
                     b->spec->name);
        return NULL;
    }
    npy_intp ls[1] = {b->K};
    PyArrayObject *l = rmtl_check_array(lo, "losses", NPY_FLOAT32, 1, ls, 0);
    if (l == NULL) {
        return NULL;
    }
    if (!(rows > 0.0) || !isfinite(rows)) {
        return rmtl_value_error("rows: expected a positive batch size, got %g", rows);
    }
    PyObject *out = rmtl_new_array(1, b->K, 0, NPY_FLOAT64);
    if (out == NULL) {
        return NULL;
    }
    int st = rmtl_balancer_step_weights(b, rmtl_data(out), PyArray_DATA(l), rows);
    if (st != RMTL_OK) {
        Py_DECREF(out);
        return rmtl_raise(st, "losses");
    }
    return out;
}

/* after_step(losses (K) float32): the step's batch losses at the updated parameters (FAMO) */
static PyObject *Balancer_after_step(BalancerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"losses", NULL};
    PyObject *lo;
    if (rmtl_bal_ready(self) < 0 ||
        !PyArg_ParseTupleAndKeywords(args, kw, "O:after_step", kwlist, &lo)) {
        return NULL;
    }
    npy_intp ls[1] = {self->b.K};
    PyArrayObject *l = rmtl_check_array(lo, "losses", NPY_FLOAT32, 1, ls, 0);
    if (l == NULL) {
        return NULL;
    }
    int st = rmtl_balancer_after_step(&self->b, PyArray_DATA(l));
    return st == RMTL_OK ? Py_NewRef(Py_None) : rmtl_raise(st, "losses");
}

static PyObject *Balancer_end_epoch(BalancerObject *self, PyObject *unused) {
    if (rmtl_bal_ready(self) < 0) {
        return NULL;
    }
    rmtl_balancer_end_epoch(&self->b);
    Py_RETURN_NONE;
}

/* the counters, epoch history and state as a dict of Python values and float64 arrays */
static PyObject *Balancer_get_state(BalancerObject *self, PyObject *unused) {
    if (rmtl_bal_ready(self) < 0) {
        return NULL;
    }
    rmtl_balancer *b = &self->b;
    PyObject *state = rmtl_new_array(1, (npy_intp)b->n_state, 0, NPY_FLOAT64);
    PyObject *hist = rmtl_new_array(1, 5 * b->K + 1, 0, NPY_FLOAT64);
    if (state == NULL || hist == NULL) {
        Py_XDECREF(state);
        Py_XDECREF(hist);
        return NULL;
    }
    memcpy(rmtl_data(state), b->state, (size_t)b->n_state * sizeof(double));
    double *h = rmtl_data(hist);
    for (int k = 0; k < b->K; k++) {
        h[k] = b->epoch_sum[k];
        h[b->K + k] = b->loss_first[k];
        h[2 * b->K + k] = b->loss_last[k];
        h[3 * b->K + k] = b->loss_before[k];
        h[4 * b->K + k] = b->weights[k];
    }
    h[5 * b->K] = b->epoch_rows;
    return Py_BuildValue("{s:L,s:L,s:i,s:N,s:N}", "steps", (long long)b->steps, "epoch",
                         (long long)b->epoch, "has_weights", b->has_weights, "history", hist,
                         "state", state);
}

/* set_state(dict from get_state of a balancer of the same name, tasks and dim) */
static PyObject *Balancer_set_state(BalancerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"state", NULL};
    PyObject *d;
    if (rmtl_bal_ready(self) < 0 ||
        !PyArg_ParseTupleAndKeywords(args, kw, "O!:set_state", kwlist, &PyDict_Type, &d)) {
        return NULL;
    }
    rmtl_balancer *b = &self->b;
    PyObject *so = PyDict_GetItemString(d, "state"), *ho = PyDict_GetItemString(d, "history");
    PyObject *to = PyDict_GetItemString(d, "steps"), *eo = PyDict_GetItemString(d, "epoch");
    PyObject *wo = PyDict_GetItemString(d, "has_weights");
    if (so == NULL || ho == NULL || to == NULL || eo == NULL || wo == NULL) {
        PyErr_SetString(PyExc_KeyError,
                        "state: expected the keys steps, epoch, has_weights, history and state "
                        "of Balancer.get_state()");
        return NULL;
    }
    npy_intp ss[1] = {(npy_intp)b->n_state}, hs[1] = {5 * b->K + 1};
    PyArrayObject *s = rmtl_check_array(so, "state['state']", NPY_FLOAT64, 1, ss, 0);
    PyArrayObject *h =
        s == NULL ? NULL : rmtl_check_array(ho, "state['history']", NPY_FLOAT64, 1, hs, 0);
    long long steps = h == NULL ? -1 : PyLong_AsLongLong(to), epoch = PyLong_AsLongLong(eo);
    if (h == NULL || PyErr_Occurred()) {
        return NULL;
    }
    if (steps < 0 || epoch < 0) {
        PyErr_SetString(PyExc_ValueError, "state: expected non-negative steps and epoch");
        return NULL;
    }
    memcpy(b->state, PyArray_DATA(s), (size_t)b->n_state * sizeof(double));
    const double *hv = PyArray_DATA(h);
    for (int k = 0; k < b->K; k++) {
        b->epoch_sum[k] = hv[k];
        b->loss_first[k] = hv[b->K + k];
        b->loss_last[k] = hv[2 * b->K + k];
        b->loss_before[k] = hv[3 * b->K + k];
        b->weights[k] = hv[4 * b->K + k];
    }
    b->epoch_rows = hv[5 * b->K];
    b->steps = steps;
    b->epoch = epoch;
    b->has_weights = PyObject_IsTrue(wo) == 1;
    Py_RETURN_NONE;
}

static PyObject *Balancer_get_weights(BalancerObject *self, void *closure) {
    if (self->b.spec == NULL || !self->b.has_weights) {
        Py_RETURN_NONE;
    }
    PyObject *out = rmtl_new_array(1, self->b.K, 0, NPY_FLOAT64);
    if (out != NULL) {
        memcpy(rmtl_data(out), self->b.weights, (size_t)self->b.K * sizeof(double));
    }
    return out;
}

static PyObject *Balancer_get_info(BalancerObject *self, void *closure) {
    const rmtl_balancer *b = &self->b;
    if (b->spec == NULL) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("{s:s,s:s,s:i,s:i,s:L,s:L,s:L}", "name", b->spec->name, "family",
                         rmtl_bal_family_name(b->spec->family), "samples", b->S, "num_tasks", b->K,
                         "dim", (long long)b->P, "steps", (long long)b->steps, "epoch",
                         (long long)b->epoch);
}

/* balancer_specs() -> [{name, family, samples, representation (works on the representation
   the towers read), hyper: [{name, default, low, high, open_low, open_high, integer,
   choices}]}] in table order */
static PyObject *rmtl_py_balancer_specs(PyObject *mod, PyObject *unused) {
    PyObject *out = PyList_New(0);
    const rmtl_bal_spec *s;
    for (int i = 0; out != NULL && (s = rmtl_bal_at(i)) != NULL; i++) {
        PyObject *hyper = PyList_New(0);
        for (int j = 0; hyper != NULL && j < RMTL_BAL_MAX_HYPER && s->hyper[j].name != NULL; j++) {
            const rmtl_bal_hyper *h = &s->hyper[j];
            PyObject *e = Py_BuildValue("{s:s,s:d,s:d,s:d,s:O,s:O,s:O,s:z}", "name", h->name,
                                        "default", h->value, "low", h->low, "high", h->high,
                                        "open_low", h->open_low ? Py_True : Py_False, "open_high",
                                        h->open_high ? Py_True : Py_False, "integer",
                                        h->integer ? Py_True : Py_False, "choices", h->choices);
            if (e == NULL || PyList_Append(hyper, e) < 0) {
                Py_XDECREF(e);
                Py_CLEAR(hyper);
            } else {
                Py_DECREF(e);
            }
        }
        PyObject *e =
            hyper == NULL
                ? NULL
                : Py_BuildValue(
                      "{s:s,s:s,s:i,s:O,s:N}", "name", s->name, "family",
                      rmtl_bal_family_name(s->family), "samples", s->samples, "representation",
                      s->family == RMTL_BAL_LOSSES || s->rep != RMTL_BAL_REP_NONE ? Py_True
                                                                                  : Py_False,
                      "hyper", hyper);
        if (e == NULL || PyList_Append(out, e) < 0) {
            Py_XDECREF(e);
            Py_CLEAR(out);
        } else {
            Py_DECREF(e);
        }
    }
    return out;
}

static PyMethodDef Balancer_methods[] = {
    {"step", RMTL_KW(Balancer_step), METH_VARARGS | METH_KEYWORDS,
     "step(losses, jacobian, out, rows=1.0): the direction of one training step into out"},
    {"step_weights", RMTL_KW(Balancer_step_weights), METH_VARARGS | METH_KEYWORDS,
     "step_weights(losses, rows=1.0): a loss balancer's weights of one training step"},
    {"after_step", RMTL_KW(Balancer_after_step), METH_VARARGS | METH_KEYWORDS,
     "after_step(losses): the step's batch losses at the updated parameters"},
    {"end_epoch", (PyCFunction)Balancer_end_epoch, METH_NOARGS, "an epoch ended"},
    {"get_state", (PyCFunction)Balancer_get_state, METH_NOARGS, "counters, history and state"},
    {"set_state", RMTL_KW(Balancer_set_state), METH_VARARGS | METH_KEYWORDS,
     "set_state(state): restore what get_state returned"},
    {NULL}};

static PyGetSetDef Balancer_getset[] = {
    {"weights", (getter)Balancer_get_weights, NULL, "the last step's task weights, or None", NULL},
    {"info", (getter)Balancer_get_info, NULL, "name, family, samples, tasks, dim, steps, epoch",
     NULL},
    {NULL}};

static PyType_Slot Balancer_slots[] = {{Py_tp_init, Balancer_init},
                                       {Py_tp_dealloc, Balancer_dealloc},
                                       {Py_tp_methods, Balancer_methods},
                                       {Py_tp_getset, Balancer_getset},
                                       {Py_tp_new, PyType_GenericNew},
                                       {Py_tp_doc, "one loss balancer and its state"},
                                       {0, NULL}};

static PyType_Spec Balancer_spec = {"rmtl._core.Balancer", sizeof(BalancerObject), 0,
                                    Py_TPFLAGS_DEFAULT, Balancer_slots};

rmtl_balancer *rmtl_balancer_claim(PyObject *o, const char *arg) {
    if (PyType_GetSlot(Py_TYPE(o), Py_tp_dealloc) != (void *)Balancer_dealloc) {
        PyErr_Format(PyExc_TypeError, "%s: expected rmtl._core.Balancer, got %s", arg,
                     Py_TYPE(o)->tp_name);
        return NULL;
    }
    BalancerObject *self = (BalancerObject *)o;
    if (rmtl_bal_ready(self) < 0) {
        return NULL;
    }
    self->busy = 1;
    Py_INCREF(o);
    return &self->b;
}

void rmtl_balancer_release(PyObject *o) {
    ((BalancerObject *)o)->busy = 0;
    Py_DECREF(o);
}

static PyMethodDef rmtl_balancer_functions[] = {
    {"balancer_specs", (PyCFunction)rmtl_py_balancer_specs, METH_NOARGS,
     "the balancers and their hyperparameters, in table order"},
    {NULL}};

int rmtl_bind_balancers_init(PyObject *mod) {
    if (rmtl_add_type(mod, &Balancer_spec, NULL) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(mod, rmtl_balancer_functions);
}
