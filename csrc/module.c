/* rmtl._core: the only file that sees Python. Validates every array, turns status
   codes into exceptions and releases the GIL around long calls. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#include <numpy/arrayobject.h>
#include <stdlib.h>
#include <string.h>

#include <stddef.h>

#include "critic.h"
#include "env.h"
#include "rmtl.h"
#include "synth.h"

/* ---------------------------------------------------------------- helpers */

static PyObject *rmtl_raise(int st, const char *what) {
    switch (st) {
    case RMTL_ERR_NOMEM:
        return PyErr_NoMemory();
    case RMTL_ERR_INDEX:
        PyErr_Format(PyExc_ValueError, "%s: a categorical code is outside [0, field_dims)", what);
        return NULL;
    case RMTL_ERR_NONFINITE:
        PyErr_Format(PyExc_ValueError, "%s: contains NaN or infinity", what);
        return NULL;
    default:
        PyErr_Format(PyExc_ValueError, "%s: invalid argument (status %d)", what, st);
        return NULL;
    }
}

static const char *rmtl_dtype_name(int typenum) {
    switch (typenum) {
    case NPY_FLOAT32:
        return "float32";
    case NPY_INT32:
        return "int32";
    case NPY_INT64:
        return "int64";
    default:
        return "?";
    }
}

/* Borrowed check: obj must be an ndarray of exactly this dtype, C-contiguous and aligned,
   with ndim dimensions; shape entries >= 0 must match. Writable arrays are never copied. */
static PyArrayObject *rmtl_check_array(PyObject *obj, const char *arg, int typenum, int ndim,
                                       const npy_intp *shape, int writable) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a numpy.ndarray of %s, got %s", arg,
                     rmtl_dtype_name(typenum), Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_TYPE(a) != typenum) {
        PyObject *dt = PyObject_Str((PyObject *)PyArray_DESCR(a));
        PyErr_Format(PyExc_TypeError, "%s: expected dtype %s, got %S", arg,
                     rmtl_dtype_name(typenum), dt);
        Py_XDECREF(dt);
        return NULL;
    }
    if (PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d dimensions, got %d", arg, ndim,
                     PyArray_NDIM(a));
        return NULL;
    }
    for (int d = 0; d < ndim; d++) {
        if (shape != NULL && shape[d] >= 0 && PyArray_DIM(a, d) != shape[d]) {
            PyErr_Format(PyExc_ValueError, "%s: expected size %zd in dimension %d, got %zd", arg,
                         (Py_ssize_t)shape[d], d, (Py_ssize_t)PyArray_DIM(a, d));
            return NULL;
        }
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous aligned array", arg);
        return NULL;
    }
    if (writable && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a writable array", arg);
        return NULL;
    }
    return a;
}

static int rmtl_check_finite(PyArrayObject *a, const char *arg) {
    const float *p = (const float *)PyArray_DATA(a);
    npy_intp n = PyArray_SIZE(a);
    for (npy_intp i = 0; i < n; i++) {
        if (!isfinite(p[i])) {
            PyErr_Format(PyExc_ValueError, "%s: contains NaN or infinity (flat index %zd)", arg,
                         (Py_ssize_t)i);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- BLAS */

static rmtl_sgemm_fn rmtl_scipy_sgemm = NULL;

static int rmtl_load_scipy_blas(void) {
    PyObject *mod = PyImport_ImportModule("scipy.linalg.cython_blas");
    PyObject *capi = NULL, *cap = NULL;
    int ok = -1;
    if (mod == NULL) {
        goto cleanup;
    }
    capi = PyObject_GetAttrString(mod, "__pyx_capi__");
    if (capi == NULL) {
        goto cleanup;
    }
    cap = PyMapping_GetItemString(capi, "sgemm");
    if (cap == NULL || !PyCapsule_CheckExact(cap)) {
        goto cleanup;
    }
    /* Cython names the capsule by the C signature; check it is the float32 Fortran sgemm */
    const char *name = PyCapsule_GetName(cap);
    if (name == NULL || strncmp(name, "void (char *, char *, int *, int *, int *, ", 43) != 0 ||
        strstr(name, "cython_blas_s *") == NULL) {
        goto cleanup;
    }
    rmtl_scipy_sgemm = (rmtl_sgemm_fn)PyCapsule_GetPointer(cap, name);
    ok = rmtl_scipy_sgemm != NULL ? 0 : -1;
cleanup:
    PyErr_Clear();
    Py_XDECREF(cap);
    Py_XDECREF(capi);
    Py_XDECREF(mod);
    return ok;
}

static PyObject *rmtl_py_set_gemm_backend(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return NULL;
    }
    if (strcmp(name, "builtin") == 0) {
        rmtl_gemm_set_blas(NULL);
    } else if (strcmp(name, "blas") == 0) {
        if (rmtl_scipy_sgemm == NULL) {
            PyErr_SetString(PyExc_RuntimeError,
                            "backend: SciPy's BLAS sgemm could not be loaded; use 'builtin'");
            return NULL;
        }
        rmtl_gemm_set_blas(rmtl_scipy_sgemm);
    } else {
        PyErr_Format(PyExc_ValueError, "backend: expected 'blas' or 'builtin', got '%s'", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *rmtl_py_gemm_backend(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(rmtl_gemm_uses_blas() ? "blas" : "builtin");
}

static PyObject *rmtl_py_gemm(PyObject *self, PyObject *args) {
    PyObject *ao, *bo, *co;
    int ta, tb;
    float alpha, beta;
    if (!PyArg_ParseTuple(args, "OOOppff", &ao, &bo, &co, &ta, &tb, &alpha, &beta)) {
        return NULL;
    }
    PyArrayObject *a = rmtl_check_array(ao, "a", NPY_FLOAT32, 2, NULL, 0);
    PyArrayObject *b = a ? rmtl_check_array(bo, "b", NPY_FLOAT32, 2, NULL, 0) : NULL;
    PyArrayObject *c = b ? rmtl_check_array(co, "c", NPY_FLOAT32, 2, NULL, 1) : NULL;
    if (c == NULL) {
        return NULL;
    }
    int M = (int)PyArray_DIM(c, 0), N = (int)PyArray_DIM(c, 1);
    int K = (int)(ta ? PyArray_DIM(a, 0) : PyArray_DIM(a, 1));
    if ((ta ? PyArray_DIM(a, 1) : PyArray_DIM(a, 0)) != M ||
        (tb ? PyArray_DIM(b, 1) : PyArray_DIM(b, 0)) != K ||
        (tb ? PyArray_DIM(b, 0) : PyArray_DIM(b, 1)) != N) {
        PyErr_SetString(PyExc_ValueError, "a, b, c: shapes do not chain to c = op(a) op(b)");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    rmtl_gemm(ta, tb, M, N, K, alpha, PyArray_DATA(a), (int)PyArray_DIM(a, 1), PyArray_DATA(b),
              (int)PyArray_DIM(b, 1), beta, PyArray_DATA(c), N);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- Model */

typedef struct {
    PyObject_HEAD rmtl_model *m;
    int busy; /* a GIL-free call is running on this model */
} ModelObject;

static int Model_init(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"kind",      "field_dims",  "num_dense",  "num_tasks",
                             "embed_dim", "bottom_dims", "tower_dims", "dropout",
                             "seed",      "num_experts", NULL};
    int kind, D, T, E, n_experts = 0;
    PyObject *fdo, *bo, *to;
    float dropout;
    unsigned long long seed;
    int bottom[RMTL_MAX_LAYERS], tower[RMTL_MAX_LAYERS];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOiiiOOfK|i", kwlist, &kind, &fdo, &D, &T, &E,
                                     &bo, &to, &dropout, &seed, &n_experts)) {
        return -1;
    }
    PyArrayObject *fd = rmtl_check_array(fdo, "field_dims", NPY_INT32, 1, NULL, 0);
    if (fd == NULL) {
        return -1;
    }
    PyObject *lists[2] = {bo, to};
    int *dst[2] = {bottom, tower}, counts[2];
    for (int l = 0; l < 2; l++) {
        PyObject *seq = PySequence_Fast(lists[l], "bottom_dims/tower_dims: expected a sequence");
        if (seq == NULL) {
            return -1;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        if (n > RMTL_MAX_LAYERS) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "%s: at most %d layers, got %zd",
                         l ? "tower_dims" : "bottom_dims", RMTL_MAX_LAYERS, n);
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            dst[l][i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        }
        counts[l] = (int)n;
        Py_DECREF(seq);
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    rmtl_model_config cfg = {kind,      (int)PyArray_DIM(fd, 0),
                             D,         T,
                             E,         PyArray_DATA(fd),
                             counts[0], counts[1],
                             bottom,    tower,
                             dropout,   (uint64_t)seed,
                             n_experts};
    rmtl_model_free(self->m);
    self->m = NULL;
    int st = rmtl_model_create(&self->m, &cfg);
    if (st != RMTL_OK) {
        rmtl_raise(st, "model config");
        return -1;
    }
    return 0;
}

static void Model_dealloc(ModelObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    rmtl_model_free(self->m);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int Model_ready(ModelObject *self) {
    if (self->m == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "model: not initialised");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "model: another thread is running a call on this model; wait for it");
        return -1;
    }
    return 0;
}

static PyObject *Model_param_table(ModelObject *self, PyObject *noargs) {
    if (Model_ready(self) < 0) {
        return NULL;
    }
    const rmtl_params *p = &self->m->params;
    PyObject *list = PyList_New(p->count);
    if (list == NULL) {
        return NULL;
    }
    for (int i = 0; i < p->count; i++) {
        const rmtl_tensor *t = &p->tensors[i];
        PyObject *shape =
            t->cols ? Py_BuildValue("(ii)", t->rows, t->cols) : Py_BuildValue("(i)", t->rows);
        PyObject *row =
            shape ? Py_BuildValue("(snN)", t->name, (Py_ssize_t)t->offset, shape) : NULL;
        if (row == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, row);
    }
    return list;
}

/* a zero-copy float32 view of one of the model's flat buffers; it keeps the model alive */
static PyObject *Model_buffer(ModelObject *self, PyObject *arg) {
    if (Model_ready(self) < 0) {
        return NULL;
    }
    const char *which = PyUnicode_AsUTF8(arg);
    if (which == NULL) {
        return NULL;
    }
    rmtl_params *p = &self->m->params;
    float *ptr = strcmp(which, "param") == 0    ? p->param
                 : strcmp(which, "grad") == 0   ? p->grad
                 : strcmp(which, "adam_m") == 0 ? p->adam_m
                 : strcmp(which, "adam_v") == 0 ? p->adam_v
                                                : NULL;
    if (ptr == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "which: expected 'param', 'grad', 'adam_m' or 'adam_v', got '%s'", which);
        return NULL;
    }
    npy_intp n = (npy_intp)p->total;
    PyObject *arr = PyArray_SimpleNewFromData(1, &n, NPY_FLOAT32, ptr);
    if (arr == NULL) {
        return NULL;
    }
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)self) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* validates codes (n,F) int32 in range and dense (n,D) float32 finite; returns n or -1 */
static npy_intp Model_check_inputs(ModelObject *self, PyObject *co, PyObject *dob,
                                   PyArrayObject **codes, PyArrayObject **dense) {
    rmtl_model *m = self->m;
    npy_intp cshape[2] = {-1, m->F};
    *codes = rmtl_check_array(co, "sparse", NPY_INT32, 2, cshape, 0);
    if (*codes == NULL) {
        return -1;
    }
    npy_intp dshape[2] = {PyArray_DIM(*codes, 0), m->D};
    *dense = rmtl_check_array(dob, "dense", NPY_FLOAT32, 2, dshape, 0);
    if (*dense == NULL || rmtl_check_finite(*dense, "dense") < 0) {
        return -1;
    }
    npy_intp n = PyArray_DIM(*codes, 0);
    int64_t bad = rmtl_codes_check(PyArray_DATA(*codes), n, m->F, m->field_dims);
    if (bad >= 0) {
        int f = (int)(bad % m->F);
        PyErr_Format(PyExc_ValueError,
                     "sparse: code %d at row %lld, field %d is outside [0, %d) (field_dims[%d])",
                     ((int32_t *)PyArray_DATA(*codes))[bad], (long long)(bad / m->F), f,
                     m->field_dims[f], f);
        return -1;
    }
    return n;
}

static int Model_check_labels(ModelObject *self, PyObject *lo, npy_intp n, const char *arg,
                              PyArrayObject **labels, int binary) {
    npy_intp shape[2] = {n, self->m->T};
    *labels = rmtl_check_array(lo, arg, NPY_FLOAT32, 2, shape, 0);
    if (*labels == NULL || rmtl_check_finite(*labels, arg) < 0) {
        return -1;
    }
    const float *y = PyArray_DATA(*labels);
    for (npy_intp i = 0; i < PyArray_SIZE(*labels); i++) {
        if (binary ? (y[i] != 0.0f && y[i] != 1.0f) : y[i] < 0.0f) {
            PyErr_Format(PyExc_ValueError, "%s: expected %s values, got %g at flat index %zd", arg,
                         binary ? "0/1" : "non-negative", (double)y[i], (Py_ssize_t)i);
            return -1;
        }
    }
    return 0;
}

static PyObject *Model_forward(ModelObject *self, PyObject *args) {
    PyObject *co, *dob;
    PyArrayObject *codes, *dense;
    if (!PyArg_ParseTuple(args, "OO", &co, &dob) || Model_ready(self) < 0) {
        return NULL;
    }
    npy_intp n = Model_check_inputs(self, co, dob, &codes, &dense);
    if (n < 0) {
        return NULL;
    }
    if (n == 0 || n > INT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "sparse: expected between 1 and %d rows, got %zd",
                     INT32_MAX / 4, (Py_ssize_t)n);
        return NULL;
    }
    npy_intp oshape[2] = {n, self->m->T};
    PyObject *out = PyArray_SimpleNew(2, oshape, NPY_FLOAT32);
    if (out == NULL) {
        return NULL;
    }
    int st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_model_reserve(self->m, (int)n);
    if (st == RMTL_OK) {
        st = rmtl_model_forward(self->m, PyArray_DATA(codes), PyArray_DATA(dense), (int)n);
    }
    if (st == RMTL_OK) {
        memcpy(PyArray_DATA((PyArrayObject *)out), self->m->prob,
               (size_t)n * self->m->T * sizeof(float));
    }
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    if (st != RMTL_OK) {
        Py_DECREF(out);
        return rmtl_raise(st, "forward");
    }
    return out;
}

static PyObject *Model_predict(ModelObject *self, PyObject *args) {
    PyObject *co, *dob, *oo;
    int B, lookup = RMTL_LOOKUP_AUTO;
    PyArrayObject *codes, *dense;
    if (!PyArg_ParseTuple(args, "OOOi|i", &co, &dob, &oo, &B, &lookup) || Model_ready(self) < 0) {
        return NULL;
    }
    npy_intp n = Model_check_inputs(self, co, dob, &codes, &dense);
    if (n < 0) {
        return NULL;
    }
    npy_intp oshape[2] = {n, self->m->T};
    PyArrayObject *out = rmtl_check_array(oo, "out", NPY_FLOAT32, 2, oshape, 1);
    if (out == NULL) {
        return NULL;
    }
    if (B < 1) {
        PyErr_Format(PyExc_ValueError, "batch_size: expected >= 1, got %d", B);
        return NULL;
    }
    if (lookup < RMTL_LOOKUP_AUTO || lookup > RMTL_LOOKUP_ALWAYS) {
        PyErr_Format(PyExc_ValueError, "lookup: expected 0 (auto), 1 (never) or 2 (always), got %d",
                     lookup);
        return NULL;
    }
    int st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_model_predict(self->m, PyArray_DATA(out), PyArray_DATA(codes), PyArray_DATA(dense),
                            (int64_t)n, B, lookup);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    if (st != RMTL_OK) {
        return rmtl_raise(st, "predict");
    }
    Py_RETURN_NONE;
}

static PyObject *Model_loss_backward(ModelObject *self, PyObject *args) {
    PyObject *co, *dob, *lo, *wo = Py_None;
    PyArrayObject *codes, *dense, *labels, *weights = NULL;
    if (!PyArg_ParseTuple(args, "OOO|O", &co, &dob, &lo, &wo) || Model_ready(self) < 0) {
        return NULL;
    }
    npy_intp n = Model_check_inputs(self, co, dob, &codes, &dense);
    if (n < 0 || Model_check_labels(self, lo, n, "labels", &labels, 1) < 0) {
        return NULL;
    }
    if (wo != Py_None && Model_check_labels(self, wo, n, "weights", &weights, 0) < 0) {
        return NULL;
    }
    if (n == 0 || n > INT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "sparse: expected between 1 and %d rows, got %zd",
                     INT32_MAX / 4, (Py_ssize_t)n);
        return NULL;
    }
    double loss = 0.0;
    int st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_model_loss_backward(self->m, &loss, PyArray_DATA(codes), PyArray_DATA(dense),
                                  PyArray_DATA(labels), weights ? PyArray_DATA(weights) : NULL,
                                  (int)n);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    if (st != RMTL_OK) {
        return rmtl_raise(st, "loss_backward");
    }
    return PyFloat_FromDouble(loss);
}

static int rmtl_parse_adam(PyObject *args, rmtl_adam *opt, int offset) {
    PyObject *t = PyTuple_GetSlice(args, offset, PyTuple_GET_SIZE(args));
    if (t == NULL) {
        return -1;
    }
    int ok = PyArg_ParseTuple(t, "fffff", &opt->lr, &opt->beta1, &opt->beta2, &opt->eps,
                              &opt->weight_decay);
    Py_DECREF(t);
    if (!ok) {
        return -1;
    }
    if (!(opt->lr >= 0.0f) || !(opt->beta1 >= 0.0f && opt->beta1 < 1.0f) ||
        !(opt->beta2 >= 0.0f && opt->beta2 < 1.0f) || !(opt->eps > 0.0f) ||
        !(opt->weight_decay >= 0.0f)) {
        PyErr_Format(PyExc_ValueError,
                     "adam: expected lr >= 0, 0 <= betas < 1, eps > 0, weight_decay >= 0; got "
                     "lr=%g betas=(%g, %g) eps=%g weight_decay=%g",
                     (double)opt->lr, (double)opt->beta1, (double)opt->beta2, (double)opt->eps,
                     (double)opt->weight_decay);
        return -1;
    }
    return 0;
}

static PyObject *Model_adam_step(ModelObject *self, PyObject *args) {
    rmtl_adam opt;
    if (Model_ready(self) < 0 || rmtl_parse_adam(args, &opt, 0) < 0) {
        return NULL;
    }
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    rmtl_params_adam_step(&self->m->params, &opt);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    Py_RETURN_NONE;
}

/* Checks a data set's arrays, codes (n,F) int32, dense (n,D) float32, labels (n,T) float32,
   and the rows (int64) a chunk reads from them; only those rows' values are checked, so a
   chunk costs validation in proportion to its own work. 0, or -1 with an exception set. */
static int rmtl_check_chunk_rows(const rmtl_model *m, PyObject *ro, PyObject *co, PyObject *dob,
                                 PyObject *lo, PyArrayObject **rows, PyArrayObject **codes,
                                 PyArrayObject **dense, PyArrayObject **labels) {
    npy_intp cshape[2] = {-1, m->F};
    *rows = rmtl_check_array(ro, "rows", NPY_INT64, 1, NULL, 0);
    *codes = *rows ? rmtl_check_array(co, "sparse", NPY_INT32, 2, cshape, 0) : NULL;
    if (*codes == NULL) {
        return -1;
    }
    npy_intp n = PyArray_DIM(*codes, 0);
    npy_intp dshape[2] = {n, m->D}, lshape[2] = {n, m->T};
    *dense = rmtl_check_array(dob, "dense", NPY_FLOAT32, 2, dshape, 0);
    *labels = *dense ? rmtl_check_array(lo, "labels", NPY_FLOAT32, 2, lshape, 0) : NULL;
    if (*labels == NULL) {
        return -1;
    }
    const int64_t *r = PyArray_DATA(*rows);
    const int32_t *c = PyArray_DATA(*codes);
    const float *d = PyArray_DATA(*dense), *y = PyArray_DATA(*labels);
    npy_intp nr = PyArray_DIM(*rows, 0);
    for (npy_intp i = 0; i < nr; i++) {
        if (r[i] < 0 || r[i] >= n) {
            PyErr_Format(PyExc_ValueError, "rows: index %lld at position %zd is outside [0, %zd)",
                         (long long)r[i], (Py_ssize_t)i, (Py_ssize_t)n);
            return -1;
        }
        if (rmtl_codes_check(c + (size_t)r[i] * m->F, 1, m->F, m->field_dims) >= 0) {
            PyErr_Format(PyExc_ValueError, "sparse: row %lld has a code outside [0, field_dims)",
                         (long long)r[i]);
            return -1;
        }
        for (int j = 0; j < m->D; j++) {
            if (!isfinite(d[(size_t)r[i] * m->D + j])) {
                PyErr_Format(PyExc_ValueError, "dense: row %lld holds NaN or infinity",
                             (long long)r[i]);
                return -1;
            }
        }
        for (int k = 0; k < m->T; k++) {
            float v = y[(size_t)r[i] * m->T + k];
            if (v != 0.0f && v != 1.0f) {
                PyErr_Format(PyExc_ValueError, "labels: row %lld task %d is %g, expected 0 or 1",
                             (long long)r[i], k, (double)v);
                return -1;
            }
        }
    }
    return 0;
}

/* train_chunk(rows, sparse, dense, labels, batch_size, lr, beta1, beta2, eps, weight_decay):
   the arrays are a whole training set; only the rows this chunk reads are checked, so a
   chunk costs validation in proportion to its own work */
static PyObject *Model_train_chunk(ModelObject *self, PyObject *args) {
    PyObject *ro, *co, *dob, *lo;
    int B;
    rmtl_adam opt;
    PyArrayObject *rows, *codes, *dense, *labels;
    if (Model_ready(self) < 0) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 10) {
        PyErr_SetString(PyExc_TypeError, "train_chunk: expected 10 arguments");
        return NULL;
    }
    ro = PyTuple_GET_ITEM(args, 0);
    co = PyTuple_GET_ITEM(args, 1);
    dob = PyTuple_GET_ITEM(args, 2);
    lo = PyTuple_GET_ITEM(args, 3);
    B = (int)PyLong_AsLong(PyTuple_GET_ITEM(args, 4));
    if ((B == -1 && PyErr_Occurred()) || rmtl_parse_adam(args, &opt, 5) < 0) {
        return NULL;
    }
    if (B < 1 || B > INT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "batch_size: expected >= 1, got %d", B);
        return NULL;
    }
    rmtl_model *m = self->m;
    if (rmtl_check_chunk_rows(m, ro, co, dob, lo, &rows, &codes, &dense, &labels) < 0) {
        return NULL;
    }
    const int64_t *r = PyArray_DATA(rows);
    const int32_t *c = PyArray_DATA(codes);
    const float *d = PyArray_DATA(dense), *y = PyArray_DATA(labels);
    npy_intp nr = PyArray_DIM(rows, 0);
    double loss = 0.0;
    int st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_model_train_chunk(m, &loss, r, (int64_t)nr, c, d, y, B, &opt);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    if (st != RMTL_OK) {
        return rmtl_raise(st, "train_chunk");
    }
    return PyFloat_FromDouble(loss);
}

static PyObject *Model_get_training(ModelObject *self, void *closure) {
    if (Model_ready(self) < 0) {
        return NULL;
    }
    return PyBool_FromLong(self->m->training);
}

static int Model_set_training(ModelObject *self, PyObject *value, void *closure) {
    if (Model_ready(self) < 0) {
        return -1;
    }
    int t = value ? PyObject_IsTrue(value) : -1;
    if (t < 0) {
        PyErr_SetString(PyExc_TypeError, "training: expected a bool");
        return -1;
    }
    self->m->training = t;
    return 0;
}

/* RMTL_UNIQUE_*: how first layers run (rmtl.models.Net.first_layer) */
static PyObject *Model_get_unique(ModelObject *self, void *closure) {
    if (Model_ready(self) < 0) {
        return NULL;
    }
    return PyLong_FromLong(self->m->unique);
}

static int Model_set_unique(ModelObject *self, PyObject *value, void *closure) {
    if (Model_ready(self) < 0) {
        return -1;
    }
    long u = value ? PyLong_AsLong(value) : -1;
    if (u < RMTL_UNIQUE_AUTO || u > RMTL_UNIQUE_ALWAYS) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "unique: expected 0 (auto), 1 (never) or 2 (always)");
        return -1;
    }
    self->m->unique = (int)u;
    return 0;
}

static PyObject *Model_get_steps(ModelObject *self, void *closure) {
    if (Model_ready(self) < 0) {
        return NULL;
    }
    return Py_BuildValue("(LK)", (long long)self->m->params.adam_step,
                         (unsigned long long)self->m->counter);
}

/* (adam steps, dropout counter): restored with the weights so a reloaded model resumes */
static int Model_set_steps(ModelObject *self, PyObject *value, void *closure) {
    long long steps;
    unsigned long long counter;
    if (Model_ready(self) < 0) {
        return -1;
    }
    if (value == NULL || !PyArg_ParseTuple(value, "LK", &steps, &counter)) {
        PyErr_SetString(PyExc_TypeError, "steps: expected a tuple (adam_steps, dropout_counter)");
        return -1;
    }
    if (steps < 0) {
        PyErr_Format(PyExc_ValueError, "steps: expected adam_steps >= 0, got %lld", steps);
        return -1;
    }
    self->m->params.adam_step = (long)steps;
    self->m->counter = (uint64_t)counter;
    return 0;
}

/* param_table, buffer, adam_step, training and steps come from the base type Net */
static PyMethodDef Model_methods[] = {
    {"forward", (PyCFunction)Model_forward, METH_VARARGS,
     "forward(sparse, dense) -> (n, T) probabilities in the current mode"},
    {"predict", (PyCFunction)Model_predict, METH_VARARGS,
     "predict(sparse, dense, out, batch_size, lookup=0): eval-mode probabilities into out; lookup "
     "0 lets the size rule choose whether first layers come from tables, 1 never, 2 always"},
    {"loss_backward", (PyCFunction)Model_loss_backward, METH_VARARGS,
     "loss_backward(sparse, dense, labels, weights=None) -> loss; gradients in buffer('grad')"},
    {"train_chunk", (PyCFunction)Model_train_chunk, METH_VARARGS,
     "train_chunk(rows, sparse, dense, labels, batch_size, lr, beta1, beta2, eps, "
     "weight_decay) -> sum of batch loss * batch size"},
    {NULL}};

static PyType_Slot Model_slots[] = {{Py_tp_init, Model_init},
                                    {Py_tp_dealloc, Model_dealloc},
                                    {Py_tp_methods, Model_methods},
                                    {Py_tp_new, PyType_GenericNew},
                                    {Py_tp_doc, "A backbone's parameters, buffers and kernels."},
                                    {0, NULL}};

static PyType_Spec Model_spec = {"rmtl._core.Model", sizeof(ModelObject), 0, Py_TPFLAGS_DEFAULT,
                                 Model_slots};

/* ---------------------------------------------------------------- metrics */

static int rmtl_check_score_label(PyObject *so, PyObject *lo, PyArrayObject **s,
                                  PyArrayObject **l) {
    *s = rmtl_check_array(so, "y_score", NPY_FLOAT32, 1, NULL, 0);
    if (*s == NULL || rmtl_check_finite(*s, "y_score") < 0) {
        return -1;
    }
    npy_intp shape[1] = {PyArray_DIM(*s, 0)};
    *l = rmtl_check_array(lo, "y_true", NPY_FLOAT32, 1, shape, 0);
    if (*l == NULL || rmtl_check_finite(*l, "y_true") < 0) {
        return -1;
    }
    if (shape[0] == 0) {
        PyErr_SetString(PyExc_ValueError, "y_true: expected at least one row, got 0");
        return -1;
    }
    return 0;
}

static PyObject *rmtl_py_auc(PyObject *self, PyObject *args) {
    PyObject *so, *lo, *go = Py_None;
    PyArrayObject *s, *l, *g = NULL;
    if (!PyArg_ParseTuple(args, "OO|O", &so, &lo, &go) ||
        rmtl_check_score_label(so, lo, &s, &l) < 0) {
        return NULL;
    }
    npy_intp n = PyArray_DIM(s, 0);
    if (go != Py_None) {
        npy_intp shape[1] = {n};
        g = rmtl_check_array(go, "groups", NPY_INT64, 1, shape, 0);
        if (g == NULL) {
            return NULL;
        }
    }
    int64_t *scratch = PyMem_RawMalloc((size_t)n * 2 * sizeof(int64_t));
    if (scratch == NULL) {
        return PyErr_NoMemory();
    }
    double out = 0.0;
    int st;
    Py_BEGIN_ALLOW_THREADS;
    st = g ? rmtl_gauc(&out, PyArray_DATA(s), PyArray_DATA(l), PyArray_DATA(g), n, scratch)
           : rmtl_auc(&out, PyArray_DATA(s), PyArray_DATA(l), n, scratch);
    Py_END_ALLOW_THREADS;
    PyMem_RawFree(scratch);
    if (st != RMTL_OK) {
        PyErr_SetString(PyExc_ValueError,
                        g ? "y_true: no group holds both classes, so GAUC is undefined"
                          : "y_true: only one class present, so AUC is undefined");
        return NULL;
    }
    return PyFloat_FromDouble(out);
}

static PyObject *rmtl_py_logloss(PyObject *self, PyObject *args) {
    PyObject *so, *lo, *oo = Py_None;
    PyArrayObject *s, *l, *off = NULL;
    if (!PyArg_ParseTuple(args, "OO|O", &so, &lo, &oo) ||
        rmtl_check_score_label(so, lo, &s, &l) < 0) {
        return NULL;
    }
    npy_intp n = PyArray_DIM(s, 0);
    const float *p = PyArray_DATA(s);
    for (npy_intp i = 0; i < n; i++) {
        if (p[i] < 0.0f || p[i] > 1.0f) {
            PyErr_Format(PyExc_ValueError, "y_prob: expected values in [0, 1], got %g at %zd",
                         (double)p[i], (Py_ssize_t)i);
            return NULL;
        }
    }
    if (oo != Py_None) {
        off = rmtl_check_array(oo, "offsets", NPY_INT64, 1, NULL, 0);
        if (off == NULL) {
            return NULL;
        }
        const int64_t *o = PyArray_DATA(off);
        npy_intp S = PyArray_DIM(off, 0) - 1;
        int ok = S >= 1 && o[0] == 0 && o[S] == n;
        for (npy_intp k = 0; ok && k < S; k++) {
            ok = o[k] <= o[k + 1];
        }
        if (!ok) {
            PyErr_Format(PyExc_ValueError,
                         "offsets: expected non-decreasing session offsets from 0 to %zd",
                         (Py_ssize_t)n);
            return NULL;
        }
    }
    double out = 0.0;
    if (off) {
        rmtl_session_logloss(&out, p, PyArray_DATA(l), PyArray_DATA(off), PyArray_DIM(off, 0) - 1);
    } else {
        rmtl_logloss(&out, p, PyArray_DATA(l), n);
    }
    return PyFloat_FromDouble(out);
}

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

static PyObject *rmtl_py_shuffle(PyObject *self, PyObject *args) {
    unsigned long long seed, stream;
    PyObject *out = rmtl_new_draws(args, NPY_INT64, &seed, &stream);
    if (out == NULL) {
        return NULL;
    }
    npy_intp n = PyArray_SIZE((PyArrayObject *)out);
    Py_BEGIN_ALLOW_THREADS;
    rmtl_shuffle(PyArray_DATA((PyArrayObject *)out), n, seed, stream);
    Py_END_ALLOW_THREADS;
    return out;
}

/* ---------------------------------------------------------------- critic */

/* What Models and Critics share: a Critic begins with ModelObject's members, so the methods
   that read only m and busy (parameter table, buffers, Adam step, mode, counters) live on one
   base type, rmtl._core.Net, that both derive from. */
static PyMethodDef Net_methods[] = {
    {"param_table", (PyCFunction)Model_param_table, METH_NOARGS,
     "[(name, offset, shape)] of every tensor in the flat buffers"},
    {"buffer", (PyCFunction)Model_buffer, METH_O,
     "zero-copy float32 view of 'param', 'grad', 'adam_m' or 'adam_v'"},
    {"adam_step", (PyCFunction)Model_adam_step, METH_VARARGS,
     "adam_step(lr, beta1, beta2, eps, weight_decay)"},
    {NULL}};

static PyGetSetDef Net_getset[] = {
    {"training", (getter)Model_get_training, (setter)Model_set_training, "dropout active", NULL},
    {"unique", (getter)Model_get_unique, (setter)Model_set_unique,
     "first layers over the batch's distinct codes: 0 auto, 1 never, 2 always", NULL},
    {"steps", (getter)Model_get_steps, (setter)Model_set_steps,
     "(adam steps taken, training forwards taken)", NULL},
    {NULL}};

static PyType_Slot Net_slots[] = {
    {Py_tp_methods, Net_methods},
    {Py_tp_getset, Net_getset},
    {Py_tp_doc,
     "A network's flat parameter buffers, optimizer and mode (base of Model and Critic)."},
    {0, NULL}};

static PyType_Spec Net_spec = {
    "rmtl._core.Net", sizeof(ModelObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION, Net_slots};

typedef struct {
    PyObject_HEAD rmtl_model *m; /* &c->net */
    int busy;
    rmtl_critic *c;
} CriticObject;

static void Critic_dealloc(CriticObject *self);

/* obj as a Model (critic == 0) or Critic (critic == 1), identified by its own dealloc slot so a
   rebound module attribute cannot smuggle in another type; NULL with TypeError naming arg */
static ModelObject *rmtl_as_net(PyObject *obj, int critic, const char *arg) {
    void *want = critic ? (void *)Critic_dealloc : (void *)Model_dealloc;
    if (PyType_GetSlot(Py_TYPE(obj), Py_tp_dealloc) != want) {
        PyErr_Format(PyExc_TypeError, "%s: expected rmtl._core.%s, got %s", arg,
                     critic ? "Critic" : "Model", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return (ModelObject *)obj;
}

/* every net one call uses: each is checked ready and kept alive until released, and all are
   marked busy together while the GIL is released */
typedef struct {
    ModelObject *obj[2 * RMTL_MAX_TASKS + 2];
    int n;
} rmtl_holds;

static int rmtl_hold(rmtl_holds *h, ModelObject *o) {
    if (o == NULL || Model_ready(o) < 0) {
        return -1;
    }
    Py_INCREF(o);
    h->obj[h->n++] = o;
    return 0;
}

static void rmtl_holds_release(rmtl_holds *h) {
    for (int i = 0; i < h->n; i++) {
        h->obj[i]->busy = 0;
        Py_DECREF(h->obj[i]);
    }
    h->n = 0;
}

/* marks the held nets busy and releases the GIL (Py_BEGIN_ALLOW_THREADS) for a core call */
static PyThreadState *rmtl_holds_begin(rmtl_holds *h) {
    for (int i = 0; i < h->n; i++) {
        h->obj[i]->busy = 1;
    }
    return PyEval_SaveThread();
}

/* takes the GIL back (Py_END_ALLOW_THREADS) and releases the held nets */
static void rmtl_holds_end(rmtl_holds *h, PyThreadState *ts) {
    PyEval_RestoreThread(ts);
    rmtl_holds_release(h);
}

/* b reads the same inputs as a: same fields, cardinalities and dense width */
static int rmtl_same_inputs(const rmtl_model *a, const rmtl_model *b, const char *arg) {
    if (a->F != b->F || a->D != b->D ||
        memcmp(a->field_dims, b->field_dims, (size_t)a->F * sizeof(int32_t)) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: expects %d fields and %d dense features with other field_dims than the "
                     "model (%d fields, %d dense); build it for the same data",
                     arg, b->F, b->D, a->F, a->D);
        return -1;
    }
    return 0;
}

/* b is a copy of a's architecture (a target network): same parameter count */
static int rmtl_same_shape(const rmtl_model *a, const rmtl_model *b, const char *arg) {
    if (a->params.total != b->params.total || a->T != b->T || rmtl_same_inputs(a, b, arg) < 0) {
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

/* a list or tuple of T critics reading the same inputs as m, held in h; out receives them */
static int rmtl_hold_critics(rmtl_holds *h, PyObject *seq, const char *arg, const rmtl_model *m,
                             rmtl_critic **out) {
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
        if (rmtl_hold(h, o) < 0 || rmtl_same_inputs(m, o->m, arg) < 0) {
            return -1;
        }
        out[k] = ((CriticObject *)o)->c;
    }
    return 0;
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
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OiiOOfK", kwlist, &fdo, &D, &E, &bo, &to,
                                     &dropout, &seed)) {
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "critic: a call is running on it; wait for it");
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
    rmtl_critic_free(self->c);
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

/* a finite float32 vector of n values */
static PyArrayObject *rmtl_check_vector(PyObject *o, const char *arg, npy_intp n) {
    npy_intp shape[1] = {n};
    PyArrayObject *a = rmtl_check_array(o, arg, NPY_FLOAT32, 1, shape, 0);
    return a != NULL && rmtl_check_finite(a, arg) == 0 ? a : NULL;
}

/* states for net (codes (n,F), dense (n,D)) and, unless ao is NULL, a finite action vector
   (n), with 1 <= n <= INT32_MAX / 4; returns n or -1 */
static npy_intp rmtl_check_states(ModelObject *net, PyObject *co, PyObject *dob, PyObject *ao,
                                  const char *action_arg, PyArrayObject **codes,
                                  PyArrayObject **dense, PyArrayObject **action) {
    npy_intp n = Model_check_inputs(net, co, dob, codes, dense);
    if (n < 0 || (ao != NULL && (*action = rmtl_check_vector(ao, action_arg, n)) == NULL)) {
        return -1;
    }
    if (n == 0 || n > INT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "sparse: expected between 1 and %d rows, got %zd",
                     INT32_MAX / 4, (Py_ssize_t)n);
        return -1;
    }
    return n;
}

static int rmtl_check_batch_size(int B) {
    if (B < 1 || B > INT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "batch_size: expected 1 to %d, got %d", INT32_MAX / 4, B);
        return -1;
    }
    return 0;
}

/* predict(sparse, dense, action, out, batch_size): Q values in the critic's current mode into
   out (n,), batch_size rows per forward */
static PyObject *Critic_predict(CriticObject *self, PyObject *args) {
    PyObject *co, *dob, *ao, *oo;
    int B;
    PyArrayObject *codes, *dense, *action, *out;
    rmtl_holds h = {{NULL}, 0};
    if (!PyArg_ParseTuple(args, "OOOOi", &co, &dob, &ao, &oo, &B) || rmtl_check_batch_size(B) < 0 ||
        rmtl_hold(&h, (ModelObject *)self) < 0) {
        return NULL;
    }
    npy_intp n =
        rmtl_check_states((ModelObject *)self, co, dob, ao, "action", &codes, &dense, &action);
    npy_intp shape[1] = {n};
    if (n < 0 || (out = rmtl_check_array(oo, "out", NPY_FLOAT32, 1, shape, 1)) == NULL) {
        rmtl_holds_release(&h);
        return NULL;
    }
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st = rmtl_critic_predict(self->c, PyArray_DATA(out), PyArray_DATA(codes),
                                 PyArray_DATA(dense), PyArray_DATA(action), (int64_t)n, B);
    rmtl_holds_end(&h, ts);
    return st == RMTL_OK ? Py_NewRef(Py_None) : rmtl_raise(st, "predict");
}

/* backward(sparse, dense, action, grad_q) -> grad_action: zero the gradients, forward in the
   current mode, backpropagate sum_i grad_q_i Q_i into the parameter gradients */
static PyObject *Critic_backward(CriticObject *self, PyObject *args) {
    PyObject *co, *dob, *ao, *go;
    PyArrayObject *codes, *dense, *action, *dq;
    rmtl_holds h = {{NULL}, 0};
    if (!PyArg_ParseTuple(args, "OOOO", &co, &dob, &ao, &go) ||
        rmtl_hold(&h, (ModelObject *)self) < 0) {
        return NULL;
    }
    npy_intp n =
        rmtl_check_states((ModelObject *)self, co, dob, ao, "action", &codes, &dense, &action);
    PyObject *out = n < 0 || (dq = rmtl_check_vector(go, "grad_q", n)) == NULL
                        ? NULL
                        : PyArray_ZEROS(1, &n, NPY_FLOAT32, 0);
    if (out == NULL) {
        rmtl_holds_release(&h);
        return NULL;
    }
    rmtl_critic *c = self->c;
    const int32_t *cd = PyArray_DATA(codes);
    const float *d = PyArray_DATA(dense), *a = PyArray_DATA(action);
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st = rmtl_critic_reserve(c, (int)n);
    if (st == RMTL_OK) {
        rmtl_critic_zero_grad(c);
        st = rmtl_critic_forward(c, cd, d, a, (int)n);
    }
    if (st == RMTL_OK) {
        rmtl_critic_backward(c, PyArray_DATA((PyArrayObject *)out), PyArray_DATA(dq), cd, d, a,
                             (int)n);
    }
    rmtl_holds_end(&h, ts);
    if (st != RMTL_OK) {
        Py_DECREF(out);
        return rmtl_raise(st, "backward");
    }
    return out;
}

static PyMethodDef Critic_methods[] = {
    {"predict", (PyCFunction)Critic_predict, METH_VARARGS,
     "predict(sparse, dense, action, out, batch_size): Q values in the current mode into out"},
    {"backward", (PyCFunction)Critic_backward, METH_VARARGS,
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
static PyObject *rmtl_py_td_backward(PyObject *mod, PyObject *args) {
    PyObject *qo, *qto, *co, *dob, *ao, *nco, *ndo, *nao, *ro, *doo, *wo;
    float gamma;
    int td3;
    PyArrayObject *codes, *dense, *action, *ncodes, *ndense, *naction, *reward, *done,
        *weight = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOfp", &qo, &qto, &co, &dob, &ao, &nco, &ndo, &nao, &ro,
                          &doo, &wo, &gamma, &td3)) {
        return NULL;
    }
    rmtl_holds h = {{NULL}, 0};
    ModelObject *q = rmtl_as_net(qo, 1, "q"), *qt = q ? rmtl_as_net(qto, 1, "q_target") : NULL;
    if (rmtl_hold(&h, q) < 0 || rmtl_hold(&h, qt) < 0 ||
        rmtl_same_shape(q->m, qt->m, "q_target") < 0) {
        rmtl_holds_release(&h);
        return NULL;
    }
    npy_intp n = rmtl_check_states(q, co, dob, ao, "action", &codes, &dense, &action);
    npy_intp n2 =
        n < 0 ? -1 : rmtl_check_states(q, nco, ndo, nao, "next_action", &ncodes, &ndense, &naction);
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
static PyObject *rmtl_py_actor_backward(PyObject *mod, PyObject *args) {
    PyObject *ao, *cso, *co, *dob, *wo;
    PyArrayObject *codes, *dense, *weight = NULL;
    rmtl_critic *critics[RMTL_MAX_TASKS];
    if (!PyArg_ParseTuple(args, "OOOOO", &ao, &cso, &co, &dob, &wo)) {
        return NULL;
    }
    rmtl_holds h = {{NULL}, 0};
    ModelObject *actor = rmtl_as_net(ao, 0, "actor");
    if (rmtl_hold(&h, actor) < 0 || rmtl_hold_critics(&h, cso, "critics", actor->m, critics) < 0) {
        rmtl_holds_release(&h);
        return NULL;
    }
    int T = actor->m->T;
    npy_intp n = rmtl_check_states(actor, co, dob, NULL, NULL, &codes, &dense, NULL);
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
                                 PyArray_DATA(dense), weight ? PyArray_DATA(weight) : NULL, (int)n);
    rmtl_holds_end(&h, ts);
    PyMem_RawFree(dprob);
    return st == RMTL_OK ? PyFloat_FromDouble(loss) : rmtl_raise(st, "actor_backward");
}

/* soft_update(target, source, tau): target = tau source + (1 - tau) target, two Models or two
   Critics of one architecture */
static PyObject *rmtl_py_soft_update(PyObject *mod, PyObject *args) {
    PyObject *to, *so;
    float tau;
    if (!PyArg_ParseTuple(args, "OOf", &to, &so, &tau)) {
        return NULL;
    }
    if (!(tau >= 0.0f && tau <= 1.0f)) {
        PyErr_Format(PyExc_ValueError, "tau: expected a value in [0, 1], got %g", (double)tau);
        return NULL;
    }
    int critic = rmtl_as_net(to, 1, "target") != NULL;
    PyErr_Clear();
    rmtl_holds h = {{NULL}, 0};
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

/* a new list of n Python floats */
static PyObject *rmtl_float_list(const double *v, int n) {
    PyObject *list = PyList_New(n);
    for (int k = 0; list != NULL && k < n; k++) {
        PyObject *x = PyFloat_FromDouble(v[k]);
        if (x == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, k, x);
    }
    return list;
}

/* weighted_chunk(model, critics, rows, sparse, dense, labels, batch_size, weighting, lam,
   lr, beta1, beta2, eps, weight_decay) -> (sum of batch loss * batch size, [sum of weights]);
   critics may be None for the constant weighting (1) */
static PyObject *rmtl_py_weighted_chunk(PyObject *mod, PyObject *args) {
    PyObject *mo, *cso, *ro, *co, *dob, *lo;
    int B, weighting;
    float lam;
    rmtl_adam opt;
    PyArrayObject *rows, *codes, *dense, *labels;
    rmtl_critic *critics[RMTL_MAX_TASKS];
    PyObject *head = PyTuple_GetSlice(args, 0, 9);
    int ok = head != NULL && PyArg_ParseTuple(head, "OOOOOOiif", &mo, &cso, &ro, &co, &dob, &lo, &B,
                                              &weighting, &lam);
    Py_XDECREF(head);
    if (!ok || rmtl_parse_adam(args, &opt, 9) < 0 || rmtl_check_batch_size(B) < 0) {
        return NULL;
    }
    if (weighting < RMTL_WEIGHT_RMTL || weighting > RMTL_WEIGHT_NEG_Q || !isfinite(lam)) {
        PyErr_Format(PyExc_ValueError,
                     "weighting, lam: expected a weighting in 0..3 and a finite lam, got %d, %g",
                     weighting, (double)lam);
        return NULL;
    }
    rmtl_holds h = {{NULL}, 0};
    ModelObject *model = rmtl_as_net(mo, 0, "model");
    if (rmtl_hold(&h, model) < 0 ||
        ((cso != Py_None || weighting != RMTL_WEIGHT_CONSTANT) &&
         rmtl_hold_critics(&h, cso, "critics", model->m, critics) < 0) ||
        rmtl_check_chunk_rows(model->m, ro, co, dob, lo, &rows, &codes, &dense, &labels) < 0) {
        rmtl_holds_release(&h);
        return NULL;
    }
    rmtl_rows data = {PyArray_DATA(codes), PyArray_DATA(dense), PyArray_DATA(labels)};
    double loss = 0.0, wsum[RMTL_MAX_TASKS];
    int T = model->m->T;
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st =
        rmtl_weighted_train_chunk(model->m, critics, &loss, wsum, PyArray_DATA(rows),
                                  (int64_t)PyArray_DIM(rows, 0), &data, B, weighting, lam, &opt);
    rmtl_holds_end(&h, ts);
    if (st != RMTL_OK) {
        return rmtl_raise(st, "weighted_chunk");
    }
    return Py_BuildValue("(dN)", loss, rmtl_float_list(wsum, T));
}

/* the stage-2 settings: (gamma, td3, noise_std, noise_clip, ips, tau, soft_update_freq,
   actor_update, actor_update_freq, init_training_step, seed), then two Adam tuples */
static int rmtl_parse_td_config(PyObject *cfgo, PyObject *copt, PyObject *aopt,
                                rmtl_td_config *cfg) {
    long long init;
    unsigned long long seed;
    if (!PyTuple_Check(cfgo) || !PyTuple_Check(copt) || !PyTuple_Check(aopt)) {
        PyErr_SetString(PyExc_TypeError, "config, critic_adam, actor_adam: expected tuples");
        return -1;
    }
    if (!PyArg_ParseTuple(cfgo, "fpffpfipiLK", &cfg->gamma, &cfg->td3, &cfg->noise_std,
                          &cfg->noise_clip, &cfg->ips, &cfg->tau, &cfg->soft_update_freq,
                          &cfg->actor_update, &cfg->actor_update_freq, &init, &seed) ||
        rmtl_parse_adam(copt, &cfg->critic_opt, 0) < 0 ||
        rmtl_parse_adam(aopt, &cfg->actor_opt, 0) < 0) {
        return -1;
    }
    cfg->init_training_step = (int64_t)init;
    cfg->seed = (uint64_t)seed;
    if (!(cfg->gamma >= 0.0f && cfg->gamma <= 1.0f) || !(cfg->tau >= 0.0f && cfg->tau <= 1.0f) ||
        !(cfg->noise_std >= 0.0f) || !(cfg->noise_clip >= 0.0f) || cfg->soft_update_freq < 1 ||
        cfg->actor_update_freq < 1) {
        PyErr_Format(PyExc_ValueError,
                     "config: expected gamma and tau in [0, 1], noise_std and noise_clip >= 0, "
                     "update frequencies >= 1; got gamma=%g tau=%g noise_std=%g noise_clip=%g "
                     "soft_update_freq=%d actor_update_freq=%d",
                     (double)cfg->gamma, (double)cfg->tau, (double)cfg->noise_std,
                     (double)cfg->noise_clip, cfg->soft_update_freq, cfg->actor_update_freq);
        return -1;
    }
    return 0;
}

/* a finite float32 (n, T) array */
static PyArrayObject *rmtl_check_matrix(PyObject *o, const char *arg, npy_intp n, int T) {
    npy_intp shape[2] = {n, T};
    PyArrayObject *a = rmtl_check_array(o, arg, NPY_FLOAT32, 2, shape, 0);
    return a != NULL && rmtl_check_finite(a, arg) == 0 ? a : NULL;
}

/* td_chunk(actor, actor_target, critics, targets, state, next, action, reward, done, sparse,
   dense, labels, batch_size, step, config, critic_adam, actor_adam)
   -> ([sum of TD losses per task], sum of actor losses, actor steps taken).
   state and next (N,) int64 rows of the data arrays, action and reward (N,T), done (N): N / B
   minibatches of B transitions, one stage-2 step each, global step indices from `step` on */
static PyObject *rmtl_py_td_chunk(PyObject *mod, PyObject *args) {
    PyObject *ao, *ato, *cso, *tso, *so, *no, *aco, *ro, *doo, *co, *dob, *lo, *cfgo, *copt, *aopt;
    int B;
    long long step;
    rmtl_td_config cfg;
    PyArrayObject *state, *next, *action, *reward, *done, *codes, *dense, *labels;
    rmtl_critic *critics[RMTL_MAX_TASKS], *targets[RMTL_MAX_TASKS];
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOiLOOO", &ao, &ato, &cso, &tso, &so, &no, &aco, &ro,
                          &doo, &co, &dob, &lo, &B, &step, &cfgo, &copt, &aopt) ||
        rmtl_parse_td_config(cfgo, copt, aopt, &cfg) < 0 || rmtl_check_batch_size(B) < 0) {
        return NULL;
    }
    rmtl_holds h = {{NULL}, 0};
    ModelObject *actor = rmtl_as_net(ao, 0, "actor");
    ModelObject *at = actor ? rmtl_as_net(ato, 0, "actor_target") : NULL;
    int ok = rmtl_hold(&h, actor) == 0 && rmtl_hold(&h, at) == 0 &&
             rmtl_same_shape(actor->m, at->m, "actor_target") == 0 &&
             rmtl_hold_critics(&h, cso, "critics", actor->m, critics) == 0 &&
             rmtl_hold_critics(&h, tso, "targets", actor->m, targets) == 0;
    for (int k = 0; ok && k < actor->m->T; k++) {
        ok = rmtl_same_shape(&critics[k]->net, &targets[k]->net, "targets") == 0;
    }
    ok = ok &&
         rmtl_check_chunk_rows(actor->m, so, co, dob, lo, &state, &codes, &dense, &labels) == 0 &&
         rmtl_check_chunk_rows(actor->m, no, co, dob, lo, &next, &codes, &dense, &labels) == 0;
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
    rmtl_rows data = {PyArray_DATA(codes), PyArray_DATA(dense), PyArray_DATA(labels)};
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

/* ---------------------------------------------------------------- synthetic data */

typedef struct {
    PyObject_HEAD rmtl_synth_world *w;
} SynthObject;

/* every rmtl_synth_config member the Python side sets, by name; 'K' uint64, 'L' int64,
   'i' int, 'f' float */
static const struct {
    const char *name;
    size_t offset;
    char type;
} rmtl_synth_keys[] = {
#define RMTL_SYNTH_KEY(name, type) {#name, offsetof(rmtl_synth_config, name), type}
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
    RMTL_SYNTH_KEY(task_corr, 'f'),
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
};

static int rmtl_synth_parse_key(rmtl_synth_config *cfg, size_t k, PyObject *v) {
    char *dst = (char *)cfg + rmtl_synth_keys[k].offset;
    switch (rmtl_synth_keys[k].type) {
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

/* config: dict with exactly the keys above; fields: sequence of (kind, levels, missing, skew) */
static int rmtl_synth_parse(rmtl_synth_config *cfg, PyObject *co, PyObject *fo) {
    const size_t n_keys = sizeof(rmtl_synth_keys) / sizeof(rmtl_synth_keys[0]);
    if (!PyDict_Check(co)) {
        PyErr_Format(PyExc_TypeError, "config: expected a dict, got %s", Py_TYPE(co)->tp_name);
        return -1;
    }
    memset(cfg, 0, sizeof(*cfg));
    for (size_t k = 0; k < n_keys; k++) {
        PyObject *v = PyDict_GetItemString(co, rmtl_synth_keys[k].name);
        if (v == NULL) {
            PyErr_Format(PyExc_ValueError, "config: missing key '%s'", rmtl_synth_keys[k].name);
            return -1;
        }
        if (rmtl_synth_parse_key(cfg, k, v) < 0) {
            return -1;
        }
    }
    if ((size_t)PyDict_Size(co) != n_keys) {
        PyErr_Format(PyExc_ValueError, "config: expected exactly %zu keys, got %zd", n_keys,
                     PyDict_Size(co));
        return -1;
    }
    PyObject *seq =
        PySequence_Fast(fo, "fields: expected a sequence of (kind, levels, missing, skew)");
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
                              "iiff;fields: expected "
                              "(kind, levels, missing, skew)",
                              &fd->kind, &fd->levels, &fd->missing, &fd->skew)) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    if (rmtl_synth_check(cfg) != RMTL_OK) {
        PyErr_SetString(PyExc_ValueError,
                        "config: a value is out of range (sizes >= 1, n_items >= n_categories >= "
                        "n_parents, n_items >= max_len, latent_dim <= 64, probabilities in [0, 1], "
                        "sds >= 0, field "
                        "levels matching n_segments / n_categories / n_parents / 2)");
        return -1;
    }
    return 0;
}

static int Synth_init(SynthObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"config", "fields", NULL};
    PyObject *co, *fo;
    rmtl_synth_config cfg;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO", kwlist, &co, &fo) ||
        rmtl_synth_parse(&cfg, co, fo) < 0) {
        return -1;
    }
    rmtl_synth_free(self->w);
    self->w = NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_synth_create(&self->w, &cfg);
    Py_END_ALLOW_THREADS;
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
    if (!PyArg_ParseTuple(args, "LL", &lo, &hi) || Synth_range(self, lo, hi) < 0) {
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

/* fill(lo, hi, row_start, session_base, click_offset, task2_offset,
        session, time, user, item, sparse, labels, truth) */
static PyObject *Synth_fill(SynthObject *self, PyObject *args) {
    long long lo, hi;
    double a0, b0;
    PyObject *rso, *sbo, *o[7];
    if (!PyArg_ParseTuple(args, "LLOOddOOOOOOO", &lo, &hi, &rso, &sbo, &a0, &b0, &o[0], &o[1],
                          &o[2], &o[3], &o[4], &o[5], &o[6]) ||
        Synth_range(self, lo, hi) < 0) {
        return NULL;
    }
    if (!isfinite(a0) || !isfinite(b0)) {
        PyErr_SetString(PyExc_ValueError, "click_offset, task2_offset: expected finite numbers");
        return NULL;
    }
    npy_intp nu = (npy_intp)(hi - lo), shape_rs[1] = {nu + 1}, shape_sb[1] = {nu};
    PyArrayObject *rs = rmtl_check_array(rso, "row_start", NPY_INT64, 1, shape_rs, 0);
    PyArrayObject *sb =
        rs ? rmtl_check_array(sbo, "session_base", NPY_INT64, 1, shape_sb, 0) : NULL;
    if (sb == NULL) {
        return NULL;
    }
    const int64_t *r = PyArray_DATA(rs);
    int ok = r[0] == 0;
    for (npy_intp u = 0; ok && u < nu; u++) {
        ok = r[u] <= r[u + 1];
    }
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "row_start: expected non-decreasing offsets from 0");
        return NULL;
    }
    npy_intp m = (npy_intp)r[nu], F = self->w->cfg.n_fields;
    static const char *names[7] = {"session", "time", "user", "item", "sparse", "labels", "truth"};
    const int types[7] = {NPY_INT64, NPY_INT64,   NPY_INT64,  NPY_INT64,
                          NPY_INT32, NPY_FLOAT32, NPY_FLOAT32};
    const npy_intp widths[7] = {0, 0, 0, 0, F, RMTL_SYNTH_TASKS, RMTL_SYNTH_TASKS};
    void *data[7];
    for (int k = 0; k < 7; k++) {
        npy_intp shape[2] = {m, widths[k]};
        PyArrayObject *a = rmtl_check_array(o[k], names[k], types[k], widths[k] ? 2 : 1, shape, 1);
        if (a == NULL) {
            return NULL;
        }
        data[k] = PyArray_DATA(a);
    }
    rmtl_synth_rows out = {data[0], data[1], data[2], data[3], data[4], data[5], data[6]};
    int st;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_synth_fill(&out, r, PyArray_DATA(sb), self->w, a0, b0, lo, hi);
    Py_END_ALLOW_THREADS;
    if (st != RMTL_OK) {
        PyErr_SetString(PyExc_ValueError,
                        "row_start: the row counts differ from count(lo, hi); lay out the slices "
                        "from count()");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Synth_mean_truth(SynthObject *self, PyObject *args) {
    long long lo, hi;
    double a0, b0, mean[RMTL_SYNTH_TASKS];
    if (!PyArg_ParseTuple(args, "LLdd", &lo, &hi, &a0, &b0) || Synth_range(self, lo, hi) < 0) {
        return NULL;
    }
    if (lo == hi || !isfinite(a0) || !isfinite(b0)) {
        PyErr_SetString(PyExc_ValueError, "mean_truth: expected lo < hi and finite offsets");
        return NULL;
    }
    double *scratch = PyMem_RawMalloc(sizeof(double) * 2 * (size_t)(hi - lo));
    if (scratch == NULL) {
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS;
    rmtl_synth_mean_truth(mean, scratch, self->w, a0, b0, lo, hi);
    Py_END_ALLOW_THREADS;
    PyMem_RawFree(scratch);
    return Py_BuildValue("(dd)", mean[0], mean[1]);
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
    {"fill", (PyCFunction)Synth_fill, METH_VARARGS,
     "fill(lo, hi, row_start, session_base, click_offset, task2_offset, session, time, user, "
     "item, sparse, labels, truth): write the rows of users [lo, hi)"},
    {"mean_truth", (PyCFunction)Synth_mean_truth, METH_VARARGS,
     "mean_truth(lo, hi, click_offset, task2_offset) -> mean true probability per task"},
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

/* ---------------------------------------------------------------- oracle metrics */

/* oracle(prob, which): which 0 = expected AUC, 1 = expected BCE of the true probabilities */
static PyObject *rmtl_py_oracle(PyObject *self, PyObject *args) {
    PyObject *po;
    int which;
    if (!PyArg_ParseTuple(args, "Oi", &po, &which)) {
        return NULL;
    }
    PyArrayObject *p = rmtl_check_array(po, "truth", NPY_FLOAT32, 1, NULL, 0);
    if (p == NULL || rmtl_check_finite(p, "truth") < 0) {
        return NULL;
    }
    npy_intp n = PyArray_DIM(p, 0);
    const float *v = PyArray_DATA(p);
    for (npy_intp i = 0; i < n; i++) {
        if (v[i] < 0.0f || v[i] > 1.0f) {
            PyErr_Format(PyExc_ValueError, "truth: expected probabilities in [0, 1], got %g at %zd",
                         (double)v[i], (Py_ssize_t)i);
            return NULL;
        }
    }
    double out = 0.0;
    int st = RMTL_OK;
    if (which == 0) {
        int64_t *scratch = PyMem_RawMalloc((size_t)(n > 0 ? n : 1) * 2 * sizeof(int64_t));
        if (scratch == NULL) {
            return PyErr_NoMemory();
        }
        Py_BEGIN_ALLOW_THREADS;
        st = rmtl_oracle_auc(&out, v, n, scratch);
        Py_END_ALLOW_THREADS;
        PyMem_RawFree(scratch);
    } else {
        st = rmtl_oracle_logloss(&out, v, n);
    }
    if (st != RMTL_OK) {
        PyErr_SetString(PyExc_ValueError,
                        which == 0 ? "truth: expected positives and negatives have no pairs "
                                     "(all probabilities 0 or all 1, or fewer than 2 rows)"
                                   : "truth: expected at least one row");
        return NULL;
    }
    return PyFloat_FromDouble(out);
}

/* ---- env: session MDP environments, replay buffer and collection (csrc/env.h) */

/* offsets (S+1) int64 CSR bounds from 0 to n with no empty session, labels (n,T) float32 and
   the reward kind into mdp's session fields; codes and dense stay unset */
static int rmtl_parse_mdp(rmtl_mdp *mdp, PyObject *oo, PyObject *lo, int reward) {
    PyArrayObject *off = rmtl_check_array(oo, "offsets", NPY_INT64, 1, NULL, 0);
    PyArrayObject *lab = off ? rmtl_check_array(lo, "labels", NPY_FLOAT32, 2, NULL, 0) : NULL;
    if (lab == NULL || rmtl_check_finite(lab, "labels") < 0) {
        return -1;
    }
    npy_intp S = PyArray_DIM(off, 0) - 1, n = PyArray_DIM(lab, 0), T = PyArray_DIM(lab, 1);
    const int64_t *o = PyArray_DATA(off);
    if (S < 1 || n < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "data: holds no sessions; expected at least one session with one row");
        return -1;
    }
    if (T < 1 || T > RMTL_MAX_TASKS) {
        PyErr_Format(PyExc_ValueError, "labels: expected 1 to %d task columns, got %zd",
                     RMTL_MAX_TASKS, (Py_ssize_t)T);
        return -1;
    }
    if (o[0] != 0 || o[S] != n) {
        PyErr_Format(PyExc_ValueError,
                     "offsets: expected boundaries from 0 to %zd rows, got %lld to %lld",
                     (Py_ssize_t)n, (long long)o[0], (long long)o[S]);
        return -1;
    }
    for (npy_intp s = 0; s < S; s++) {
        if (o[s + 1] <= o[s]) {
            PyErr_Format(PyExc_ValueError,
                         "offsets: session %zd has no rows; every session needs at least one",
                         (Py_ssize_t)s);
            return -1;
        }
    }
    if (reward != RMTL_REWARD_BCE && reward != RMTL_REWARD_ABS) {
        PyErr_Format(PyExc_ValueError, "reward: expected 0 (bce) or 1 (abs), got %d", reward);
        return -1;
    }
    memset(mdp, 0, sizeof(*mdp));
    mdp->offsets = o;
    mdp->n_sessions = (int64_t)S;
    mdp->labels = PyArray_DATA(lab);
    mdp->T = (int)T;
    mdp->reward = reward;
    return 0;
}

/* finite values in [0, 1] (actions, probabilities) */
static int rmtl_check_unit(PyArrayObject *a, const char *arg) {
    if (rmtl_check_finite(a, arg) < 0) {
        return -1;
    }
    const float *p = PyArray_DATA(a);
    for (npy_intp i = 0; i < PyArray_SIZE(a); i++) {
        if (p[i] < 0.0f || p[i] > 1.0f) {
            char v[32];
            PyOS_snprintf(v, sizeof(v), "%g", (double)p[i]);
            PyErr_Format(PyExc_ValueError,
                         "%s: expected values in [0, 1], got %s at flat index %zd", arg, v,
                         (Py_ssize_t)i);
            return -1;
        }
    }
    return 0;
}

static PyObject *rmtl_new_array(int ndim, npy_intp d0, npy_intp d1, int typenum) {
    npy_intp dims[2] = {d0, d1};
    return PyArray_SimpleNew(ndim, dims, typenum);
}

static void *rmtl_data(PyObject *a) {
    return PyArray_DATA((PyArrayObject *)a);
}

/* ------------------------------------ Env */

typedef struct {
    PyObject_HEAD rmtl_env *e;
    PyObject *arrays[4]; /* offsets, sparse, dense, labels: kept alive while e points into them */
} EnvObject;

static int Env_init(EnvObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"offsets", "sparse", "dense",     "labels", "num_envs",
                             "reward",  "order",  "autoreset", "seed",   NULL};
    PyObject *oo, *co, *dob, *lo;
    int n, reward, order, autoreset;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOiiipK", kwlist, &oo, &co, &dob, &lo, &n,
                                     &reward, &order, &autoreset, &seed)) {
        return -1;
    }
    rmtl_mdp mdp;
    if (rmtl_parse_mdp(&mdp, oo, lo, reward) < 0) {
        return -1;
    }
    npy_intp rows = PyArray_DIM((PyArrayObject *)lo, 0), shape[2] = {rows, -1};
    PyArrayObject *codes = rmtl_check_array(co, "sparse", NPY_INT32, 2, shape, 0);
    PyArrayObject *dense = codes ? rmtl_check_array(dob, "dense", NPY_FLOAT32, 2, shape, 0) : NULL;
    if (dense == NULL || rmtl_check_finite(dense, "dense") < 0) {
        return -1;
    }
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "num_envs: expected >= 1, got %d", n);
        return -1;
    }
    if (order != RMTL_ORDER_RANDOM && order != RMTL_ORDER_SEQUENTIAL) {
        PyErr_Format(PyExc_ValueError, "order: expected 0 (random) or 1 (sequential), got %d",
                     order);
        return -1;
    }
    mdp.codes = PyArray_DATA(codes);
    mdp.dense = PyArray_DATA(dense);
    mdp.F = (int)PyArray_DIM(codes, 1);
    mdp.D = (int)PyArray_DIM(dense, 1);
    rmtl_env *e = NULL;
    int st = rmtl_env_create(&e, &mdp, n, order, autoreset, (uint64_t)seed);
    if (st != RMTL_OK) {
        rmtl_raise(st, "env config");
        return -1;
    }
    rmtl_env_free(self->e);
    self->e = e;
    PyObject *objs[4] = {oo, co, dob, lo};
    for (int i = 0; i < 4; i++) {
        Py_INCREF(objs[i]);
        Py_XSETREF(self->arrays[i], objs[i]);
    }
    return 0;
}

static void Env_dealloc(EnvObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    rmtl_env_free(self->e);
    for (int i = 0; i < 4; i++) {
        Py_XDECREF(self->arrays[i]);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int Env_ready(EnvObject *self) {
    if (self->e == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "env: not initialised");
        return -1;
    }
    return 0;
}

/* reset(seed or None, sessions or None) -> (sparse (N,F), dense (N,D), session (N,), row (N,)).
   A seed restarts the session draws; sessions (N,) int64 picks each environment's session.
   Environment calls are O(N) copies and hold the GIL. */
static PyObject *Env_reset(EnvObject *self, PyObject *args) {
    PyObject *so, *sso;
    if (!PyArg_ParseTuple(args, "OO", &so, &sso) || Env_ready(self) < 0) {
        return NULL;
    }
    rmtl_env *e = self->e;
    const int64_t *sessions = NULL;
    if (sso != Py_None) {
        npy_intp shape[1] = {e->n};
        PyArrayObject *sa = rmtl_check_array(sso, "sessions", NPY_INT64, 1, shape, 0);
        if (sa == NULL) {
            return NULL;
        }
        sessions = PyArray_DATA(sa);
        for (int i = 0; i < e->n; i++) {
            if (sessions[i] < 0 || sessions[i] >= e->mdp.n_sessions) {
                PyErr_Format(PyExc_ValueError, "session: expected an index in [0, %lld), got %lld",
                             (long long)e->mdp.n_sessions, (long long)sessions[i]);
                return NULL;
            }
        }
    }
    if (so != Py_None) {
        unsigned long long seed = PyLong_AsUnsignedLongLongMask(so);
        if (PyErr_Occurred()) {
            return NULL;
        }
        e->seed = (uint64_t)seed;
        e->episodes = 0;
    }
    PyObject *codes = rmtl_new_array(2, e->n, e->mdp.F, NPY_INT32);
    PyObject *dense = rmtl_new_array(2, e->n, e->mdp.D, NPY_FLOAT32);
    PyObject *sess = rmtl_new_array(1, e->n, 0, NPY_INT64);
    PyObject *row = rmtl_new_array(1, e->n, 0, NPY_INT64);
    if (codes == NULL || dense == NULL || sess == NULL || row == NULL) {
        Py_XDECREF(codes);
        Py_XDECREF(dense);
        Py_XDECREF(sess);
        Py_XDECREF(row);
        return NULL;
    }
    rmtl_env_reset(e, rmtl_data(codes), rmtl_data(dense), sessions);
    memcpy(rmtl_data(sess), e->session, (size_t)e->n * sizeof(int64_t));
    memcpy(rmtl_data(row), e->row, (size_t)e->n * sizeof(int64_t));
    return Py_BuildValue("(NNNN)", codes, dense, sess, row);
}

/* step(action (N,T) float32 in [0, 1]) -> (sparse (N,F), dense (N,D),
   reward (N,T), done (N,) bool, labels (N,T), state (N,), next_state (N,), session (N,)) */
static PyObject *Env_step(EnvObject *self, PyObject *ao) {
    if (Env_ready(self) < 0) {
        return NULL;
    }
    rmtl_env *e = self->e;
    int N = e->n, T = e->mdp.T;
    npy_intp shape[2] = {N, T};
    PyArrayObject *a = rmtl_check_array(ao, "action", NPY_FLOAT32, 2, shape, 0);
    if (a == NULL || rmtl_check_unit(a, "action") < 0) {
        return NULL;
    }
    PyObject *o[8] = {
        rmtl_new_array(2, N, e->mdp.F, NPY_INT32), rmtl_new_array(2, N, e->mdp.D, NPY_FLOAT32),
        rmtl_new_array(2, N, T, NPY_FLOAT32),      rmtl_new_array(1, N, 0, NPY_BOOL),
        rmtl_new_array(2, N, T, NPY_FLOAT32),      rmtl_new_array(1, N, 0, NPY_INT64),
        rmtl_new_array(1, N, 0, NPY_INT64),        rmtl_new_array(1, N, 0, NPY_INT64)};
    int st = RMTL_ERR_NOMEM;
    if (o[0] && o[1] && o[2] && o[3] && o[4] && o[5] && o[6] && o[7]) {
        rmtl_env_step_out out = {rmtl_data(o[0]), rmtl_data(o[1]), rmtl_data(o[2]),
                                 rmtl_data(o[4]), rmtl_data(o[3]), rmtl_data(o[5]),
                                 rmtl_data(o[6]), rmtl_data(o[7])};
        st = rmtl_env_step(e, &out, PyArray_DATA(a));
    }
    if (st != RMTL_OK) {
        for (int i = 0; i < 8; i++) {
            Py_XDECREF(o[i]);
        }
        if (st == RMTL_ERR_ARG) {
            PyErr_SetString(PyExc_RuntimeError,
                            "step: the episode has ended (terminated=True) or was never started; "
                            "call reset() first");
            return NULL;
        }
        return PyErr_Occurred() ? NULL : rmtl_raise(st, "step");
    }
    return Py_BuildValue("(NNNNNNNN)", o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]);
}

static PyObject *Env_get_int(EnvObject *self, void *closure) {
    if (Env_ready(self) < 0) {
        return NULL;
    }
    return strcmp((const char *)closure, "num_envs") == 0 ? PyLong_FromLong(self->e->n)
                                                          : PyLong_FromLongLong(self->e->episodes);
}

static PyMethodDef Env_methods[] = {
    {"reset", (PyCFunction)Env_reset, METH_VARARGS,
     "reset(seed, sessions) -> (sparse, dense, session, row)"},
    {"step", (PyCFunction)Env_step, METH_O,
     "step(action) -> (sparse, dense, reward, done, labels, state, next_state, session)"},
    {NULL}};

static PyGetSetDef Env_getset[] = {
    {"num_envs", (getter)Env_get_int, NULL, "environments stepped together", "num_envs"},
    {"episodes", (getter)Env_get_int, NULL, "sessions drawn since the last seeding", "episodes"},
    {NULL}};

static PyType_Slot Env_slots[] = {{Py_tp_init, Env_init},         {Py_tp_dealloc, Env_dealloc},
                                  {Py_tp_methods, Env_methods},   {Py_tp_getset, Env_getset},
                                  {Py_tp_new, PyType_GenericNew}, {0, NULL}};

static PyType_Spec Env_spec = {"rmtl._core.Env", sizeof(EnvObject), 0, Py_TPFLAGS_DEFAULT,
                               Env_slots};

/* ------------------------------------ Replay */

typedef struct {
    PyObject_HEAD rmtl_replay *b;
    int busy; /* a GIL-free call is running on this buffer */
} ReplayObject;

static int Replay_init(ReplayObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"capacity", "num_tasks", "seed", NULL};
    Py_ssize_t capacity;
    int T;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "niK", kwlist, &capacity, &T, &seed)) {
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "buffer: a call is running on it; wait for it");
        return -1;
    }
    if (capacity < 1) {
        PyErr_Format(PyExc_ValueError, "capacity: expected >= 1, got %zd", capacity);
        return -1;
    }
    if (T < 1 || T > RMTL_MAX_TASKS) {
        PyErr_Format(PyExc_ValueError, "num_tasks: expected 1 to %d, got %d", RMTL_MAX_TASKS, T);
        return -1;
    }
    rmtl_replay *b = NULL;
    int st = rmtl_replay_create(&b, (int64_t)capacity, T, (uint64_t)seed);
    if (st != RMTL_OK) {
        rmtl_raise(st, "capacity");
        return -1;
    }
    rmtl_replay_free(self->b);
    self->b = b;
    return 0;
}

static void Replay_dealloc(ReplayObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    rmtl_replay_free(self->b);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int Replay_ready(ReplayObject *self) {
    if (self->b == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "buffer: not initialised");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "buffer: another thread is running a call on it; wait for it");
        return -1;
    }
    return 0;
}

/* five fresh arrays of n transitions: state, next_state (int64), action, reward (n,T), done */
static PyObject *rmtl_replay_arrays(const rmtl_replay *b, npy_intp n, void **p) {
    PyObject *o[5] = {rmtl_new_array(1, n, 0, NPY_INT64), rmtl_new_array(1, n, 0, NPY_INT64),
                      rmtl_new_array(2, n, b->T, NPY_FLOAT32),
                      rmtl_new_array(2, n, b->T, NPY_FLOAT32),
                      rmtl_new_array(1, n, 0, NPY_FLOAT32)};
    if (!(o[0] && o[1] && o[2] && o[3] && o[4])) {
        for (int i = 0; i < 5; i++) {
            Py_XDECREF(o[i]);
        }
        return NULL;
    }
    for (int i = 0; i < 5; i++) {
        p[i] = rmtl_data(o[i]);
    }
    return Py_BuildValue("(NNNNN)", o[0], o[1], o[2], o[3], o[4]);
}

/* push(state, next_state, action, reward, done): appends transitions, oldest first */
static PyObject *Replay_push(ReplayObject *self, PyObject *args) {
    PyObject *so, *no, *ao, *ro, *doo;
    if (!PyArg_ParseTuple(args, "OOOOO", &so, &no, &ao, &ro, &doo) || Replay_ready(self) < 0) {
        return NULL;
    }
    rmtl_replay *b = self->b;
    PyArrayObject *s = rmtl_check_array(so, "state", NPY_INT64, 1, NULL, 0);
    npy_intp n = s ? PyArray_DIM(s, 0) : 0, shape[1] = {n};
    PyArrayObject *nx = s ? rmtl_check_array(no, "next_state", NPY_INT64, 1, shape, 0) : NULL;
    PyArrayObject *a = nx ? rmtl_check_matrix(ao, "action", n, b->T) : NULL;
    PyArrayObject *r = a ? rmtl_check_matrix(ro, "reward", n, b->T) : NULL;
    PyArrayObject *d = r ? rmtl_check_vector(doo, "done", n) : NULL;
    if (d == NULL || rmtl_check_unit(a, "action") < 0) {
        return NULL;
    }
    const int64_t *sp = PyArray_DATA(s), *np_ = PyArray_DATA(nx);
    const float *dp = PyArray_DATA(d);
    for (npy_intp i = 0; i < n; i++) {
        if (sp[i] < 0 || np_[i] < 0 || (dp[i] != 0.0f && dp[i] != 1.0f)) {
            PyErr_Format(PyExc_ValueError,
                         "state, next_state, done: expected row indices >= 0 and done 0 or 1, "
                         "got %lld, %lld, %d at %zd",
                         (long long)sp[i], (long long)np_[i], (int)dp[i], (Py_ssize_t)i);
            return NULL;
        }
    }
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    rmtl_replay_push(b, sp, np_, PyArray_DATA(a), PyArray_DATA(r), dp, (int64_t)n);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    Py_RETURN_NONE;
}

/* sample(batch_size) -> (state, next_state, action, reward, done), distinct transitions */
static PyObject *Replay_sample(ReplayObject *self, PyObject *arg) {
    Py_ssize_t B = PyLong_AsSsize_t(arg);
    if ((B == -1 && PyErr_Occurred()) || Replay_ready(self) < 0) {
        return NULL;
    }
    rmtl_replay *b = self->b;
    if (B < 1 || B > b->size) {
        PyErr_Format(PyExc_ValueError,
                     "batch_size: expected 1 to len(buffer) = %lld (sampling is without "
                     "replacement), got %zd; collect more transitions or use a smaller batch",
                     (long long)b->size, B);
        return NULL;
    }
    void *p[5];
    PyObject *out = rmtl_replay_arrays(b, B, p);
    if (out == NULL) {
        return NULL;
    }
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    rmtl_replay_sample(b, p[0], p[1], p[2], p[3], p[4], (int64_t)B);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    return out;
}

/* export() -> (state, next_state, action, reward, done) of every stored transition, oldest first */
static PyObject *Replay_export(ReplayObject *self, PyObject *noargs) {
    if (Replay_ready(self) < 0) {
        return NULL;
    }
    void *p[5];
    PyObject *out = rmtl_replay_arrays(self->b, (npy_intp)self->b->size, p);
    if (out != NULL) {
        rmtl_replay_export(self->b, p[0], p[1], p[2], p[3], p[4]);
    }
    return out;
}

/* collect(offsets, labels, sessions, first, reward, policy, action, noise, seed) -> transitions
   added. policy 0 uniform (action None), 1 per-row base actions (n,T) plus N(0, noise) clipped
   to [0, 1], 2 given actions (transitions, T) in [0, 1]. */
static PyObject *Replay_collect(ReplayObject *self, PyObject *args) {
    PyObject *oo, *lo, *so, *ao;
    long long first;
    int reward, kind;
    float noise;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OOOLiiOfK", &oo, &lo, &so, &first, &reward, &kind, &ao, &noise,
                          &seed) ||
        Replay_ready(self) < 0) {
        return NULL;
    }
    rmtl_replay *b = self->b;
    rmtl_mdp mdp;
    if (rmtl_parse_mdp(&mdp, oo, lo, reward) < 0) {
        return NULL;
    }
    if (mdp.T != b->T) {
        PyErr_Format(PyExc_ValueError, "data: has %d tasks, the buffer was made for %d", mdp.T,
                     b->T);
        return NULL;
    }
    PyArrayObject *sess = rmtl_check_array(so, "sessions", NPY_INT64, 1, NULL, 0);
    if (sess == NULL) {
        return NULL;
    }
    npy_intp E = PyArray_DIM(sess, 0);
    const int64_t *sp = PyArray_DATA(sess);
    npy_intp total = 0;
    for (npy_intp e = 0; e < E; e++) {
        if (sp[e] < 0 || sp[e] >= mdp.n_sessions) {
            PyErr_Format(PyExc_ValueError, "sessions: expected indices in [0, %lld), got %lld",
                         (long long)mdp.n_sessions, (long long)sp[e]);
            return NULL;
        }
        total += (npy_intp)(mdp.offsets[sp[e] + 1] - mdp.offsets[sp[e]]);
    }
    if (first < 0) {
        PyErr_Format(PyExc_ValueError, "first: expected >= 0, got %lld", first);
        return NULL;
    }
    if (!(noise >= 0.0f) || !isfinite(noise)) {
        PyErr_SetString(PyExc_ValueError, "noise: expected a finite standard deviation >= 0");
        return NULL;
    }
    rmtl_policy pol = {kind, NULL, noise, (uint64_t)seed};
    if (kind == RMTL_POLICY_ROWS || kind == RMTL_POLICY_GIVEN) {
        npy_intp n = kind == RMTL_POLICY_ROWS ? PyArray_DIM((PyArrayObject *)lo, 0) : total;
        PyArrayObject *a = rmtl_check_matrix(ao, "action", n, b->T);
        if (a == NULL || (kind == RMTL_POLICY_GIVEN && rmtl_check_unit(a, "action") < 0)) {
            return NULL;
        }
        pol.action = PyArray_DATA(a);
    } else if (kind != RMTL_POLICY_UNIFORM || ao != Py_None) {
        PyErr_Format(PyExc_ValueError, "policy: expected 0 (uniform, no action), 1 or 2, got %d",
                     kind);
        return NULL;
    }
    int st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_collect(b, &mdp, sp, (int64_t)E, (int64_t)first, &pol);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    if (st != RMTL_OK) {
        return rmtl_raise(st, "collect");
    }
    return PyLong_FromSsize_t(total);
}

static PyObject *Replay_get(ReplayObject *self, void *closure) {
    if (self->b == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "buffer: not initialised");
        return NULL;
    }
    const char *name = closure;
    const rmtl_replay *b = self->b;
    if (strcmp(name, "seed") == 0) {
        return PyLong_FromUnsignedLongLong(b->seed);
    }
    if (strcmp(name, "draws") == 0) {
        return PyLong_FromUnsignedLongLong(b->draws);
    }
    return PyLong_FromLongLong(strcmp(name, "size") == 0       ? b->size
                               : strcmp(name, "capacity") == 0 ? b->capacity
                                                               : b->T);
}

/* draws is settable so a saved buffer continues its sampling sequence when loaded */
static int Replay_set_draws(ReplayObject *self, PyObject *value, void *closure) {
    if (value == NULL || Replay_ready(self) < 0) {
        if (value == NULL) {
            PyErr_SetString(PyExc_TypeError, "draws: cannot be deleted");
        }
        return -1;
    }
    unsigned long long d = PyLong_AsUnsignedLongLong(value);
    if (PyErr_Occurred()) {
        return -1;
    }
    self->b->draws = (uint64_t)d;
    return 0;
}

static PyMethodDef Replay_methods[] = {
    {"push", (PyCFunction)Replay_push, METH_VARARGS,
     "push(state, next_state, action, reward, done): append transitions, oldest first"},
    {"sample", (PyCFunction)Replay_sample, METH_O,
     "sample(batch_size) -> (state, next_state, action, reward, done) without replacement"},
    {"export", (PyCFunction)Replay_export, METH_NOARGS,
     "export() -> (state, next_state, action, reward, done), oldest first"},
    {"collect", (PyCFunction)Replay_collect, METH_VARARGS,
     "collect(offsets, labels, sessions, first, reward, policy, action, noise, seed) -> count"},
    {NULL}};

static PyGetSetDef Replay_getset[] = {
    {"size", (getter)Replay_get, NULL, "transitions stored", "size"},
    {"capacity", (getter)Replay_get, NULL, "transitions kept at most", "capacity"},
    {"num_tasks", (getter)Replay_get, NULL, "tasks per action and reward", "num_tasks"},
    {"seed", (getter)Replay_get, NULL, "seed of the sampling sequence", "seed"},
    {"draws", (getter)Replay_get, (setter)Replay_set_draws, "sample() calls so far", "draws"},
    {NULL}};

static PyType_Slot Replay_slots[] = {
    {Py_tp_init, Replay_init},     {Py_tp_dealloc, Replay_dealloc}, {Py_tp_methods, Replay_methods},
    {Py_tp_getset, Replay_getset}, {Py_tp_new, PyType_GenericNew},  {0, NULL}};

static PyType_Spec Replay_spec = {"rmtl._core.Replay", sizeof(ReplayObject), 0, Py_TPFLAGS_DEFAULT,
                                  Replay_slots};

/* draw_sessions(n_sessions, count, order, seed) -> the sessions (count,) int64 of episodes
   0..count-1 as an environment with this order and seed plays them */
static PyObject *rmtl_py_draw_sessions(PyObject *mod, PyObject *args) {
    long long S;
    Py_ssize_t n;
    int order;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "LniK", &S, &n, &order, &seed)) {
        return NULL;
    }
    if (S < 1 || n < 0 || (order != RMTL_ORDER_RANDOM && order != RMTL_ORDER_SEQUENTIAL)) {
        PyErr_Format(PyExc_ValueError,
                     "n_sessions, count, order: expected >= 1, >= 0 and 0 or 1, got %lld, %zd, %d",
                     S, n, order);
        return NULL;
    }
    PyObject *out = rmtl_new_array(1, n, 0, NPY_INT64);
    if (out != NULL) {
        int64_t *p = rmtl_data(out);
        for (Py_ssize_t e = 0; e < n; e++) {
            p[e] = rmtl_mdp_draw((int64_t)S, order, (uint64_t)seed, (int64_t)e);
        }
    }
    return out;
}

/* ---------------------------------------------------------------- module */

static PyMethodDef rmtl_methods[] = {
    {"set_gemm_backend", rmtl_py_set_gemm_backend, METH_O, "'blas' or 'builtin'"},
    {"gemm_backend", rmtl_py_gemm_backend, METH_NOARGS, "the active sgemm: 'blas' or 'builtin'"},
    {"gemm", rmtl_py_gemm, METH_VARARGS,
     "gemm(a, b, c, trans_a, trans_b, alpha, beta): c = alpha op(a) op(b) + beta c"},
    {"auc", rmtl_py_auc, METH_VARARGS, "auc(y_score, y_true, groups=None): AUC, or GAUC by group"},
    {"logloss", rmtl_py_logloss, METH_VARARGS,
     "logloss(y_prob, y_true, offsets=None): mean BCE, or mean of per-session mean BCE"},
    {"shuffle", rmtl_py_shuffle, METH_VARARGS, "shuffle(n, seed, stream) -> int64 permutation"},
    {"oracle", rmtl_py_oracle, METH_VARARGS,
     "oracle(truth, which) -> expected AUC (which 0) or expected BCE (which 1) of the truth"},
    {"td_backward", rmtl_py_td_backward, METH_VARARGS,
     "td_backward(q, q_target, sparse, dense, action, next_sparse, next_dense, next_action, "
     "reward, done, weight, gamma, td3) -> TD loss; gradients in q.buffer('grad')"},
    {"actor_backward", rmtl_py_actor_backward, METH_VARARGS,
     "actor_backward(actor, critics, sparse, dense, weight) -> actor loss; gradients in "
     "actor.buffer('grad')"},
    {"soft_update", rmtl_py_soft_update, METH_VARARGS,
     "soft_update(target, source, tau): target = tau source + (1 - tau) target"},
    {"normal", rmtl_py_normal, METH_VARARGS, "normal(n, seed, stream) -> float32 N(0, 1) draws"},
    {"weighted_chunk", rmtl_py_weighted_chunk, METH_VARARGS,
     "weighted_chunk(model, critics, rows, sparse, dense, labels, batch_size, weighting, lam, lr, "
     "beta1, beta2, eps, weight_decay) -> (loss sum, [weight sums])"},
    {"td_chunk", rmtl_py_td_chunk, METH_VARARGS,
     "td_chunk(actor, actor_target, critics, targets, state, next, action, reward, done, sparse, "
     "dense, labels, batch_size, step, config, critic_adam, actor_adam) -> ([TD loss sums], "
     "actor loss sum, actor steps)"},
    {"draw_sessions", rmtl_py_draw_sessions, METH_VARARGS,
     "draw_sessions(n_sessions, count, order, seed) -> int64 sessions of episodes 0..count-1"},
    {NULL}};

static int rmtl_exec(PyObject *mod) {
    if (PyArray_ImportNumPyAPI() < 0) {
        return -1;
    }
    PyObject *net_type = PyType_FromModuleAndSpec(mod, &Net_spec, NULL);
    if (net_type == NULL || PyModule_AddObjectRef(mod, "Net", net_type) < 0) {
        Py_XDECREF(net_type);
        return -1;
    }
    PyObject *model_type = PyType_FromModuleAndSpec(mod, &Model_spec, net_type);
    if (model_type == NULL) {
        Py_DECREF(net_type);
        return -1;
    }
    if (PyModule_AddObjectRef(mod, "Model", model_type) < 0) {
        Py_DECREF(model_type);
        Py_DECREF(net_type);
        return -1;
    }
    Py_DECREF(model_type);
    PyObject *critic_type = PyType_FromModuleAndSpec(mod, &Critic_spec, net_type);
    Py_DECREF(net_type);
    if (critic_type == NULL || PyModule_AddObjectRef(mod, "Critic", critic_type) < 0) {
        Py_XDECREF(critic_type);
        return -1;
    }
    Py_DECREF(critic_type);
    PyObject *synth_type = PyType_FromModuleAndSpec(mod, &Synth_spec, NULL);
    if (synth_type == NULL || PyModule_AddObjectRef(mod, "SynthWorld", synth_type) < 0) {
        Py_XDECREF(synth_type);
        return -1;
    }
    Py_DECREF(synth_type);
    PyObject *env_type = PyType_FromModuleAndSpec(mod, &Env_spec, NULL);
    if (env_type == NULL || PyModule_AddObjectRef(mod, "Env", env_type) < 0) {
        Py_XDECREF(env_type);
        return -1;
    }
    Py_DECREF(env_type);
    PyObject *replay_type = PyType_FromModuleAndSpec(mod, &Replay_spec, NULL);
    if (replay_type == NULL || PyModule_AddObjectRef(mod, "Replay", replay_type) < 0) {
        Py_XDECREF(replay_type);
        return -1;
    }
    Py_DECREF(replay_type);
    int loaded = rmtl_load_scipy_blas() == 0;
    const char *env = getenv("RMTL_BLAS");
    int forced = env != NULL && strcmp(env, "builtin") == 0;
    rmtl_gemm_set_blas(loaded && !forced ? rmtl_scipy_sgemm : NULL);
    if (PyModule_AddIntConstant(mod, "blas_available", loaded) < 0 ||
        PyModule_AddIntConstant(mod, "max_layers", RMTL_MAX_LAYERS) < 0 ||
        PyModule_AddIntConstant(mod, "max_tasks", RMTL_MAX_TASKS) < 0 ||
        PyModule_AddIntConstant(mod, "max_experts", RMTL_MAX_EXPERTS) < 0) {
        return -1;
    }
#ifdef _OPENMP
    return PyModule_AddIntConstant(mod, "openmp", 1);
#else
    return PyModule_AddIntConstant(mod, "openmp", 0);
#endif
}

static PyModuleDef_Slot rmtl_slots[] = {{Py_mod_exec, rmtl_exec}, {0, NULL}};

static struct PyModuleDef rmtl_module = {
    PyModuleDef_HEAD_INIT, "rmtl._core", "C core of rmtl: kernels, models, metrics.", 0,
    rmtl_methods,          rmtl_slots};

PyMODINIT_FUNC PyInit__core(void) {
    return PyModuleDef_Init(&rmtl_module);
}
