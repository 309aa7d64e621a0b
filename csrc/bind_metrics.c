/* Metric functions: AUC, GAUC, logloss, session logloss and the oracle scores. */
#include "bind.h"

#include <math.h>

#include "metrics.h"

/* y_true (n,) float32 finite with n >= 1 */
static PyArrayObject *rmtl_check_labels(PyObject *lo, npy_intp n) {
    npy_intp shape[1] = {n};
    PyArrayObject *l = rmtl_check_array(lo, "y_true", NPY_FLOAT32, 1, shape, 0);
    if (l == NULL || rmtl_check_finite(l, "y_true") < 0) {
        return NULL;
    }
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "y_true: expected at least one row, got 0");
        return NULL;
    }
    return l;
}

/* auc(y_score, y_true, groups=None): y_score (n,) float64 (exact ranks), y_true (n,) float32 */
static PyObject *rmtl_py_auc(PyObject *self, PyObject *args) {
    PyObject *so, *lo, *go = Py_None;
    PyArrayObject *s, *l, *g = NULL;
    if (!PyArg_ParseTuple(args, "OO|O:auc", &so, &lo, &go) ||
        (s = rmtl_check_array(so, "y_score", NPY_FLOAT64, 1, NULL, 0)) == NULL) {
        return NULL;
    }
    npy_intp n = PyArray_DIM(s, 0);
    const double *sv = PyArray_DATA(s);
    for (npy_intp i = 0; i < n; i++) {
        if (!isfinite(sv[i])) {
            PyErr_Format(PyExc_ValueError, "y_score: contains NaN or infinity (flat index %zd)",
                         (Py_ssize_t)i);
            return NULL;
        }
    }
    if ((l = rmtl_check_labels(lo, n)) == NULL) {
        return NULL;
    }
    if (go != Py_None) {
        npy_intp shape[1] = {n};
        g = rmtl_check_array(go, "groups", NPY_INT64, 1, shape, 0);
        if (g == NULL) {
            return NULL;
        }
    }
    int64_t *scratch = PyMem_RawMalloc((size_t)n * RMTL_METRICS_SCRATCH * sizeof(int64_t));
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
    if (!PyArg_ParseTuple(args, "OO|O:logloss", &so, &lo, &oo) ||
        (s = rmtl_check_array(so, "y_prob", NPY_FLOAT32, 1, NULL, 0)) == NULL ||
        rmtl_check_unit(s, "y_prob") < 0 ||
        (l = rmtl_check_labels(lo, PyArray_DIM(s, 0))) == NULL) {
        return NULL;
    }
    npy_intp n = PyArray_DIM(s, 0);
    const float *p = PyArray_DATA(s);
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

/* oracle(prob, which): which 0 = expected AUC, 1 = expected BCE of the true probabilities */
static PyObject *rmtl_py_oracle(PyObject *self, PyObject *args) {
    PyObject *po;
    int which;
    if (!PyArg_ParseTuple(args, "Oi:oracle", &po, &which)) {
        return NULL;
    }
    PyArrayObject *p = rmtl_check_array(po, "truth", NPY_FLOAT32, 1, NULL, 0);
    if (p == NULL || rmtl_check_unit(p, "truth") < 0) {
        return NULL;
    }
    npy_intp n = PyArray_DIM(p, 0);
    const float *v = PyArray_DATA(p);
    double out = 0.0;
    int st = RMTL_OK;
    if (which == 0) {
        PyArrayObject *p64 = (PyArrayObject *)PyArray_Cast(p, NPY_FLOAT64);
        int64_t *scratch =
            PyMem_RawMalloc((size_t)(n > 0 ? n : 1) * RMTL_METRICS_SCRATCH * sizeof(int64_t));
        if (p64 == NULL || scratch == NULL) {
            Py_XDECREF(p64);
            PyMem_RawFree(scratch);
            return PyErr_Occurred() ? NULL : PyErr_NoMemory();
        }
        Py_BEGIN_ALLOW_THREADS;
        st = rmtl_oracle_auc(&out, PyArray_DATA(p64), n, scratch);
        Py_END_ALLOW_THREADS;
        PyMem_RawFree(scratch);
        Py_DECREF(p64);
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
static PyMethodDef rmtl_metrics_functions[] = {
    {"auc", rmtl_py_auc, METH_VARARGS,
     "auc(y_score, y_true, groups=None): AUC, or GAUC by group; y_score float64"},
    {"logloss", rmtl_py_logloss, METH_VARARGS,
     "logloss(y_prob, y_true, offsets=None): mean BCE, or mean of per-session mean BCE"},
    {"oracle", rmtl_py_oracle, METH_VARARGS,
     "oracle(truth, which) -> expected AUC (which 0) or expected BCE (which 1) of the truth"},
    {NULL}};

int rmtl_bind_metrics_init(PyObject *mod) {
    return PyModule_AddFunctions(mod, rmtl_metrics_functions);
}
