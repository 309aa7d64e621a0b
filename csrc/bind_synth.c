/* rmtl._core.SynthWorld (the synthetic session generator) and the generator draws. */
#include "bind.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "rng.h"
#include "synth.h"

/* parses (n, seed, stream) of a call that draws from the core's generator and returns a new
   vector of n values of typenum for the draws */
static PyObject *rmtl_new_draws(PyObject *args, int typenum, unsigned long long *seed,
                                unsigned long long *stream) {
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "nKK", &n, seed, stream)) {
        return NULL;
    }
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "n: expected >= 0, got %zd", n);
        return NULL;
    }
    npy_intp dims[1] = {n};
    return PyArray_SimpleNew(1, dims, typenum);
}

/* a new int64 permutation of n from (n, a, b) by draw(out, n, a, b) */
static PyObject *rmtl_new_permutation(PyObject *args,
                                      void (*draw)(int64_t *, int64_t, uint64_t, uint64_t)) {
    unsigned long long a, b;
    PyObject *out = rmtl_new_draws(args, NPY_INT64, &a, &b);
    if (out == NULL) {
        return NULL;
    }
    npy_intp n = PyArray_SIZE((PyArrayObject *)out);
    Py_BEGIN_ALLOW_THREADS;
    draw(PyArray_DATA((PyArrayObject *)out), n, a, b);
    Py_END_ALLOW_THREADS;
    return out;
}

static PyObject *rmtl_py_shuffle(PyObject *self, PyObject *args) {
    return rmtl_new_permutation(args, rmtl_shuffle);
}

/* permutation(n, seed, step): the batch permutation of the permuted weighting */
static PyObject *rmtl_py_permutation(PyObject *self, PyObject *args) {
    return rmtl_new_permutation(args, rmtl_step_permutation);
}

/* normal(n, seed, stream) -> n standard normal float32 draws of the core's generator */
static PyObject *rmtl_py_normal(PyObject *mod, PyObject *args) {
    unsigned long long seed, stream;
    PyObject *out = rmtl_new_draws(args, NPY_FLOAT32, &seed, &stream);
    if (out == NULL) {
        return NULL;
    }
    float *z = PyArray_DATA((PyArrayObject *)out);
    npy_intp n = PyArray_SIZE((PyArrayObject *)out);
    Py_BEGIN_ALLOW_THREADS;
    for (npy_intp i = 0; i < n; i++) {
        z[i] = rmtl_rng_normal(seed, stream, (uint64_t)i);
    }
    Py_END_ALLOW_THREADS;
    return out;
}

typedef struct {
    PyObject_HEAD rmtl_synth_world *w;
} SynthObject;

/* every rmtl_synth_config member the Python side sets, by name; 'K' uint64, 'L' int64,
   'i' int, 'f' float, 'v' the per-task floats (a number for every task, or one per task:
   task_corr from the second task on, the others from the first); n_tasks comes before the
   per-task keys. Optional keys may be left out (n_tasks 2, no label noise). */
static const struct {
    const char *name;
    size_t offset;
    char type;
    int optional;
} rmtl_synth_keys[] = {
#define RMTL_SYNTH_KEY(name, type) {#name, offsetof(rmtl_synth_config, name), type, 0}
#define RMTL_SYNTH_OPTIONAL(name, type) {#name, offsetof(rmtl_synth_config, name), type, 1}
    RMTL_SYNTH_OPTIONAL(n_tasks, 'i'),
    RMTL_SYNTH_KEY(seed, 'K'),
    RMTL_SYNTH_KEY(n_users, 'L'),
    RMTL_SYNTH_KEY(n_items, 'L'),
    RMTL_SYNTH_KEY(n_categories, 'i'),
    RMTL_SYNTH_KEY(n_parents, 'i'),
    RMTL_SYNTH_KEY(n_segments, 'i'),
    RMTL_SYNTH_KEY(latent_dim, 'i'),
    RMTL_SYNTH_KEY(max_len, 'i'),
    RMTL_SYNTH_KEY(max_sessions, 'i'),
    RMTL_SYNTH_KEY(nested, 'i'),
    RMTL_SYNTH_KEY(mood_sd, 'f'),
    RMTL_SYNTH_KEY(segment_weight, 'f'),
    RMTL_SYNTH_KEY(category_weight, 'f'),
    RMTL_SYNTH_KEY(task_corr, 'v'),
    RMTL_SYNTH_OPTIONAL(label_noise, 'v'),
    RMTL_SYNTH_KEY(bias_sd, 'f'),
    RMTL_SYNTH_KEY(pop_sd, 'f'),
    RMTL_SYNTH_KEY(exposure_sd, 'f'),
    RMTL_SYNTH_KEY(price_mean, 'f'),
    RMTL_SYNTH_KEY(price_sd, 'f'),
    RMTL_SYNTH_KEY(price_category_sd, 'f'),
    RMTL_SYNTH_KEY(availability, 'f'),
    RMTL_SYNTH_KEY(category_zipf, 'f'),
    RMTL_SYNTH_KEY(activity_sd, 'f'),
    RMTL_SYNTH_KEY(proj_noise, 'f'),
    RMTL_SYNTH_KEY(context_sd, 'f'),
    RMTL_SYNTH_KEY(affinity, 'f'),
    RMTL_SYNTH_KEY(task2_affinity, 'f'),
    RMTL_SYNTH_KEY(fatigue, 'f'),
    RMTL_SYNTH_KEY(momentum, 'f'),
    RMTL_SYNTH_KEY(drift, 'f'),
    RMTL_SYNTH_KEY(boost, 'f'),
    RMTL_SYNTH_KEY(price_weight, 'f'),
    RMTL_SYNTH_KEY(unavailable_penalty, 'f'),
    RMTL_SYNTH_KEY(click_lift, 'f'),
    RMTL_SYNTH_KEY(focus, 'f'),
    RMTL_SYNTH_KEY(favourite, 'f'),
    RMTL_SYNTH_KEY(jump, 'f'),
    RMTL_SYNTH_KEY(sessions_mean, 'f'),
    RMTL_SYNTH_KEY(leave_base, 'f'),
    RMTL_SYNTH_KEY(leave_slope, 'f'),
    RMTL_SYNTH_KEY(start_ms, 'L'),
    RMTL_SYNTH_KEY(window_ms, 'L'),
    RMTL_SYNTH_KEY(gap_mean_s, 'f'),
    RMTL_SYNTH_KEY(gap_max_s, 'f'),
    RMTL_SYNTH_KEY(tie_prob, 'f'),
    RMTL_SYNTH_KEY(between_min_s, 'f'),
    RMTL_SYNTH_KEY(between_mean_s, 'f'),
#undef RMTL_SYNTH_KEY
#undef RMTL_SYNTH_OPTIONAL
};

/* a per-task key: a number for every task or a sequence of one per task (task_corr: tasks
   1..n_tasks-1, the others 0..n_tasks-1) into dst (RMTL_SYNTH_MAX_TASKS) */
static int rmtl_synth_parse_tasks(float *dst, const char *name, const rmtl_synth_config *cfg,
                                  PyObject *v) {
    int first = strcmp(name, "task_corr") == 0 ? 1 : 0, T = cfg->n_tasks;
    if (T < 2 || T > RMTL_SYNTH_MAX_TASKS) {
        PyErr_Format(PyExc_ValueError, "config: n_tasks: expected 2 to %d, got %d",
                     RMTL_SYNTH_MAX_TASKS, T);
        return -1;
    }
    if (!PyList_Check(v) && !PyTuple_Check(v)) {
        double d = PyFloat_AsDouble(v);
        for (int k = first; k < RMTL_SYNTH_MAX_TASKS; k++) {
            dst[k] = (float)d;
        }
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *seq = PySequence_Fast(v, "config: per-task values: expected a list or tuple");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n != T - first) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "config: %s: expected %d values (one per task%s), got %zd",
                     name, T - first, first ? " after the first" : "", n);
        return -1;
    }
    for (Py_ssize_t k = 0; k < n && !PyErr_Occurred(); k++) {
        dst[first + k] = (float)PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, k));
    }
    Py_DECREF(seq);
    return PyErr_Occurred() ? -1 : 0;
}

static int rmtl_synth_parse_key(rmtl_synth_config *cfg, size_t k, PyObject *v) {
    char *dst = (char *)cfg + rmtl_synth_keys[k].offset;
    switch (rmtl_synth_keys[k].type) {
    case 'v':
        return rmtl_synth_parse_tasks((float *)dst, rmtl_synth_keys[k].name, cfg, v);
    case 'K':
        *(uint64_t *)dst = (uint64_t)PyLong_AsUnsignedLongLongMask(v);
        break;
    case 'L':
        *(int64_t *)dst = (int64_t)PyLong_AsLongLong(v);
        break;
    case 'i':
        *(int *)dst = (int)PyLong_AsLong(v);
        break;
    default: {
        double d = PyFloat_AsDouble(v);
        if (!PyErr_Occurred() && !isfinite(d)) {
            PyErr_Format(PyExc_ValueError, "config: %s must be finite, got %R",
                         rmtl_synth_keys[k].name, v);
        }
        *(float *)dst = (float)d;
    }
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* config: dict with the keys above (every key not optional); fields: sequence of
   (kind, levels, missing, skew[, task, effect]) */
static int rmtl_synth_parse(rmtl_synth_config *cfg, PyObject *co, PyObject *fo) {
    const size_t n_keys = sizeof(rmtl_synth_keys) / sizeof(rmtl_synth_keys[0]);
    if (!PyDict_Check(co)) {
        PyErr_Format(PyExc_TypeError, "config: expected a dict, got %s", Py_TYPE(co)->tp_name);
        return -1;
    }
    memset(cfg, 0, sizeof(*cfg));
    cfg->n_tasks = 2;
    size_t found = 0;
    for (size_t k = 0; k < n_keys; k++) {
        PyObject *v = PyDict_GetItemString(co, rmtl_synth_keys[k].name);
        if (v == NULL && rmtl_synth_keys[k].optional) {
            continue;
        }
        if (v == NULL) {
            PyErr_Format(PyExc_ValueError, "config: missing key '%s'", rmtl_synth_keys[k].name);
            return -1;
        }
        found++;
        if (rmtl_synth_parse_key(cfg, k, v) < 0) {
            return -1;
        }
    }
    if ((size_t)PyDict_Size(co) != found) {
        PyErr_Format(PyExc_ValueError, "config: %zd keys, of which %zu known: unknown keys",
                     PyDict_Size(co), found);
        return -1;
    }
    PyObject *seq = PySequence_Fast(
        fo, "fields: expected a sequence of (kind, levels, missing, skew[, task, effect])");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t F = PySequence_Fast_GET_SIZE(seq);
    if (F < 1 || F > RMTL_SYNTH_MAX_FIELDS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "fields: expected 1 to %d fields, got %zd",
                     RMTL_SYNTH_MAX_FIELDS, F);
        return -1;
    }
    cfg->n_fields = (int)F;
    for (Py_ssize_t f = 0; f < F; f++) {
        rmtl_synth_field *fd = &cfg->fields[f];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, f),
                              "iiff|if;fields: expected "
                              "(kind, levels, missing, skew[, task, effect])",
                              &fd->kind, &fd->levels, &fd->missing, &fd->skew, &fd->task,
                              &fd->effect)) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    if (rmtl_synth_check(cfg) != RMTL_OK) {
        PyErr_SetString(PyExc_ValueError,
                        "config: a value is out of range (sizes >= 1, n_items >= n_categories >= "
                        "n_parents, n_items >= max_len, latent_dim <= 64, probabilities in [0, 1], "
                        "sds >= 0, task_corr in [-1, 1], label_noise in [0, 0.5], field "
                        "levels matching n_segments / n_categories / n_parents / 2, a "
                        "task_context field's task < n_tasks and effect >= 0)");
        return -1;
    }
    return 0;
}

static int Synth_init(SynthObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"config", "fields", NULL};
    PyObject *co, *fo;
    rmtl_synth_config cfg;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:SynthWorld", kwlist, &co, &fo) ||
        rmtl_check_fresh(self->w, "SynthWorld") < 0 || rmtl_synth_parse(&cfg, co, fo) < 0) {
        return -1;
    }
    rmtl_synth_world *w = NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_synth_create(&w, &cfg);
    Py_END_ALLOW_THREADS;
    if (st == RMTL_OK && rmtl_check_fresh(self->w, "SynthWorld") < 0) {
        rmtl_synth_free(w); /* another thread's __init__ finished first */
        return -1;
    }
    self->w = w;
    if (st != RMTL_OK) {
        rmtl_raise(st, "config");
        return -1;
    }
    return 0;
}

static void Synth_dealloc(SynthObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    rmtl_synth_free(self->w);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* parses (lo, hi, ...) and checks 0 <= lo <= hi <= n_users */
static int Synth_range(SynthObject *self, long long lo, long long hi) {
    if (self->w == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "world: not initialised");
        return -1;
    }
    if (lo < 0 || lo > hi || hi > self->w->cfg.n_users) {
        PyErr_Format(PyExc_ValueError, "lo, hi: expected 0 <= lo <= hi <= %lld, got %lld, %lld",
                     (long long)self->w->cfg.n_users, lo, hi);
        return -1;
    }
    return 0;
}

static PyObject *Synth_count(SynthObject *self, PyObject *args) {
    long long lo, hi;
    if (!PyArg_ParseTuple(args, "LL:count", &lo, &hi) || Synth_range(self, lo, hi) < 0) {
        return NULL;
    }
    npy_intp dims[1] = {(npy_intp)(hi - lo)};
    PyObject *rows = PyArray_SimpleNew(1, dims, NPY_INT64);
    PyObject *sessions = rows ? PyArray_SimpleNew(1, dims, NPY_INT64) : NULL;
    if (sessions == NULL) {
        Py_XDECREF(rows);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    rmtl_synth_count(PyArray_DATA((PyArrayObject *)rows), PyArray_DATA((PyArrayObject *)sessions),
                     self->w, lo, hi);
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("(NN)", rows, sessions);
}

/* the intercepts (n_tasks finite numbers) of a world's tasks from the sequence o */
static int Synth_offsets(double *offsets, const SynthObject *self, PyObject *o) {
    int T = self->w->cfg.n_tasks;
    PyObject *seq = PySequence_Fast(o, "offsets: expected a sequence of numbers");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t k = 0; k < n && k < T && !PyErr_Occurred(); k++) {
        offsets[k] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, k));
        if (!PyErr_Occurred() && !isfinite(offsets[k])) {
            PyErr_Format(PyExc_ValueError, "offsets: expected finite numbers, got %R",
                         PySequence_Fast_GET_ITEM(seq, k));
        }
    }
    Py_DECREF(seq);
    if (!PyErr_Occurred() && n != T) {
        PyErr_Format(PyExc_ValueError, "offsets: expected %d intercepts (one per task), got %zd", T,
                     n);
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* fill(lo, hi, row_start, session_base, offsets, session, time, user, item, sparse, labels,
        truth) */
static PyObject *Synth_fill(SynthObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"lo",      "hi",    "row_start", "session_base", "offsets",
                             "session", "time",  "user",      "item",         "sparse",
                             "labels",  "truth", NULL};
    long long lo, hi;
    double offsets[RMTL_SYNTH_MAX_TASKS];
    PyObject *rso, *sbo, *oo, *o[7];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LLOOOOOOOOOO:fill", kwlist, &lo, &hi, &rso, &sbo,
                                     &oo, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6]) ||
        Synth_range(self, lo, hi) < 0 || Synth_offsets(offsets, self, oo) < 0) {
        return NULL;
    }
    npy_intp nu = (npy_intp)(hi - lo), shape_rs[1] = {nu + 1}, shape_sb[1] = {nu};
    PyArrayObject *rs = rmtl_check_array(rso, "row_start", NPY_INT64, 1, shape_rs, 0);
    PyArrayObject *sb =
        rs ? rmtl_check_array(sbo, "session_base", NPY_INT64, 1, shape_sb, 0) : NULL;
    rmtl_holds h = RMTL_HOLDS_INIT; /* the offsets the core writes by: a private copy */
    if (sb == NULL || (rs = rmtl_hold_copy(&h, rs)) == NULL) {
        rmtl_holds_release(&h);
        return NULL;
    }
    PyObject *result = NULL;
    const int64_t *r = PyArray_DATA(rs);
    int ok = r[0] == 0;
    for (npy_intp u = 0; ok && u < nu; u++) {
        ok = r[u] <= r[u + 1];
    }
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "row_start: expected non-decreasing offsets from 0");
        goto done;
    }
    npy_intp m = (npy_intp)r[nu], F = self->w->cfg.n_fields, T = self->w->cfg.n_tasks;
    static const char *names[7] = {"session", "time", "user", "item", "sparse", "labels", "truth"};
    const int types[7] = {NPY_INT64, NPY_INT64,   NPY_INT64,  NPY_INT64,
                          NPY_INT32, NPY_FLOAT32, NPY_FLOAT32};
    const npy_intp widths[7] = {0, 0, 0, 0, F, T, T};
    void *data[7];
    for (int k = 0; k < 7; k++) {
        npy_intp shape[2] = {m, widths[k]};
        PyArrayObject *a = rmtl_check_array(o[k], names[k], types[k], widths[k] ? 2 : 1, shape, 1);
        if (a == NULL) {
            goto done;
        }
        data[k] = PyArray_DATA(a);
    }
    rmtl_synth_rows out = {data[0], data[1], data[2], data[3], data[4], data[5], data[6]};
    int st;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_synth_fill(&out, r, PyArray_DATA(sb), self->w, offsets, lo, hi);
    Py_END_ALLOW_THREADS;
    if (st != RMTL_OK) {
        PyErr_SetString(PyExc_ValueError,
                        "row_start: the row counts differ from count(lo, hi); lay out the slices "
                        "from count()");
    } else {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    rmtl_holds_release(&h);
    return result;
}

static PyObject *Synth_mean_truth(SynthObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"lo", "hi", "offsets", NULL};
    long long lo, hi;
    double offsets[RMTL_SYNTH_MAX_TASKS], mean[RMTL_SYNTH_MAX_TASKS];
    PyObject *oo;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LLO:mean_truth", kwlist, &lo, &hi, &oo) ||
        Synth_range(self, lo, hi) < 0 || Synth_offsets(offsets, self, oo) < 0) {
        return NULL;
    }
    if (lo == hi) {
        PyErr_SetString(PyExc_ValueError, "mean_truth: expected lo < hi");
        return NULL;
    }
    int T = self->w->cfg.n_tasks;
    double *scratch = PyMem_RawMalloc(sizeof(double) * (size_t)T * (size_t)(hi - lo));
    if (scratch == NULL) {
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS;
    rmtl_synth_mean_truth(mean, scratch, self->w, offsets, lo, hi);
    Py_END_ALLOW_THREADS;
    PyMem_RawFree(scratch);
    PyObject *out = PyTuple_New(T);
    for (int k = 0; out != NULL && k < T; k++) {
        PyObject *v = PyFloat_FromDouble(mean[k]);
        if (v == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, k, v);
    }
    return out;
}

static PyObject *Synth_item_price(SynthObject *self, PyObject *noargs) {
    if (Synth_range(self, 0, 0) < 0) {
        return NULL;
    }
    npy_intp n = (npy_intp)self->w->cfg.n_items;
    PyObject *a = PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (a != NULL) {
        memcpy(PyArray_DATA((PyArrayObject *)a), self->w->price, sizeof(float) * (size_t)n);
    }
    return a;
}

static PyMethodDef Synth_methods[] = {
    {"count", (PyCFunction)Synth_count, METH_VARARGS,
     "count(lo, hi) -> (rows, sessions) of users [lo, hi), int64 each"},
    {"fill", RMTL_KW(Synth_fill), METH_VARARGS | METH_KEYWORDS,
     "fill(lo, hi, row_start, session_base, offsets, session, time, user, item, sparse, labels, "
     "truth): write the rows of users [lo, hi); offsets: the n_tasks intercepts"},
    {"mean_truth", RMTL_KW(Synth_mean_truth), METH_VARARGS | METH_KEYWORDS,
     "mean_truth(lo, hi, offsets) -> mean probability of each task's unflipped label"},
    {"item_price", (PyCFunction)Synth_item_price, METH_NOARGS,
     "a copy of the items' standardised log prices (float32, n_items)"},
    {NULL}};

static PyType_Slot Synth_slots[] = {
    {Py_tp_init, Synth_init},
    {Py_tp_dealloc, Synth_dealloc},
    {Py_tp_methods, Synth_methods},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "SynthWorld(config, fields): the items and rules of a synthetic dataset."},
    {0, NULL}};

static PyType_Spec Synth_spec = {"rmtl._core.SynthWorld", sizeof(SynthObject), 0,
                                 Py_TPFLAGS_DEFAULT, Synth_slots};
static PyMethodDef rmtl_synth_functions[] = {
    {"shuffle", rmtl_py_shuffle, METH_VARARGS, "shuffle(n, seed, stream) -> int64 permutation"},
    {"permutation", rmtl_py_permutation, METH_VARARGS,
     "permutation(n, seed, step) -> the int64 permutation of a batch of n rows that train_chunk's "
     "permuted weighting applies at Adam step `step` (the model's steps before it): row i takes "
     "the weights of row permutation[i]"},
    {"normal", rmtl_py_normal, METH_VARARGS, "normal(n, seed, stream) -> float32 N(0, 1) draws"},
    {NULL}};

static const rmtl_enum_entry rmtl_field_kind_enum[] = {
    {"user_segment", RMTL_SYNTH_USER_SEGMENT},
    {"user_activity", RMTL_SYNTH_USER_ACTIVITY},
    {"user_proj", RMTL_SYNTH_USER_PROJ},
    {"user_noise", RMTL_SYNTH_USER_NOISE},
    {"item_category", RMTL_SYNTH_ITEM_CATEGORY},
    {"item_parent", RMTL_SYNTH_ITEM_PARENT},
    {"item_available", RMTL_SYNTH_ITEM_AVAILABLE},
    {"item_price", RMTL_SYNTH_ITEM_PRICE},
    {"item_proj", RMTL_SYNTH_ITEM_PROJ},
    {"item_noise", RMTL_SYNTH_ITEM_NOISE},
    {"context", RMTL_SYNTH_CONTEXT},
    {"item_popularity", RMTL_SYNTH_ITEM_POPULARITY},
    {"task_context", RMTL_SYNTH_TASK_CONTEXT},
    {NULL, 0}};

int rmtl_bind_synth_init(PyObject *mod) {
    if (PyModule_AddFunctions(mod, rmtl_synth_functions) < 0 ||
        rmtl_add_enum(mod, "field_kind", rmtl_field_kind_enum) < 0) {
        return -1;
    }
    return rmtl_add_type(mod, &Synth_spec, NULL);
}
