/* Helpers every binding file shares: argument and array checks, status codes to exceptions. */
#include "bind.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

PyObject *rmtl_raise(int st, const char *what) {
    switch (st) {
    case RMTL_ERR_NOMEM:
        return PyErr_NoMemory();
    case RMTL_ERR_INDEX:
        PyErr_Format(PyExc_ValueError,
                     "%s: a categorical code is outside [0, field_dims) or a row index outside "
                     "the data (was an input array changed while the call ran?)",
                     what);
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
PyArrayObject *rmtl_check_array(PyObject *obj, const char *arg, int typenum, int ndim,
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

int rmtl_check_finite(PyArrayObject *a, const char *arg) {
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

int rmtl_check_adam(const rmtl_adam *opt, const char *arg) {
    if (!(opt->lr >= 0.0f && isfinite(opt->lr)) || !(opt->beta1 >= 0.0f && opt->beta1 < 1.0f) ||
        !(opt->beta2 >= 0.0f && opt->beta2 < 1.0f) || !(opt->eps > 0.0f && isfinite(opt->eps)) ||
        !(opt->weight_decay >= 0.0f && isfinite(opt->weight_decay))) {
        rmtl_value_error("%s: expected finite lr >= 0, 0 <= betas < 1, finite eps > 0 and "
                         "weight_decay >= 0; got "
                         "lr=%g betas=(%g, %g) eps=%g weight_decay=%g",
                         arg, (double)opt->lr, (double)opt->beta1, (double)opt->beta2,
                         (double)opt->eps, (double)opt->weight_decay);
        return -1;
    }
    return 0;
}

int rmtl_parse_adam(PyObject *tuple, rmtl_adam *opt, const char *arg) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != 5) {
        PyErr_Format(PyExc_TypeError,
                     "%s: expected a tuple (lr, beta1, beta2, eps, weight_decay), got %R", arg,
                     tuple);
        return -1;
    }
    if (!PyArg_ParseTuple(tuple, "fffff", &opt->lr, &opt->beta1, &opt->beta2, &opt->eps,
                          &opt->weight_decay)) {
        return -1;
    }
    return rmtl_check_adam(opt, arg);
}

/* a finite float32 vector of n values */
PyArrayObject *rmtl_check_vector(PyObject *o, const char *arg, npy_intp n) {
    npy_intp shape[1] = {n};
    PyArrayObject *a = rmtl_check_array(o, arg, NPY_FLOAT32, 1, shape, 0);
    return a != NULL && rmtl_check_finite(a, arg) == 0 ? a : NULL;
}

int rmtl_check_batch_size(int B) {
    if (B < 1 || B > INT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "batch_size: expected 1 to %d, got %d", INT32_MAX / 4, B);
        return -1;
    }
    return 0;
}

/* a new list of n Python floats */
PyObject *rmtl_float_list(const double *v, int n) {
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

/* a finite float32 (n, T) array */
PyArrayObject *rmtl_check_matrix(PyObject *o, const char *arg, npy_intp n, int T) {
    npy_intp shape[2] = {n, T};
    PyArrayObject *a = rmtl_check_array(o, arg, NPY_FLOAT32, 2, shape, 0);
    return a != NULL && rmtl_check_finite(a, arg) == 0 ? a : NULL;
}

/* finite values in [0, 1] (actions, probabilities) */
int rmtl_check_unit(PyArrayObject *a, const char *arg) {
    if (rmtl_check_finite(a, arg) < 0) {
        return -1;
    }
    const float *p = PyArray_DATA(a);
    for (npy_intp i = 0; i < PyArray_SIZE(a); i++) {
        if (p[i] < 0.0f || p[i] > 1.0f) {
            rmtl_value_error("%s: expected values in [0, 1], got %g at flat index %zd", arg,
                             (double)p[i], (Py_ssize_t)i);
            return -1;
        }
    }
    return 0;
}

PyObject *rmtl_new_array(int ndim, npy_intp d0, npy_intp d1, int typenum) {
    npy_intp dims[2] = {d0, d1};
    return PyArray_SimpleNew(ndim, dims, typenum);
}

void *rmtl_data(PyObject *a) {
    return PyArray_DATA((PyArrayObject *)a);
}

int rmtl_add_type(PyObject *mod, PyType_Spec *spec, PyObject *base) {
    PyObject *tp = PyType_FromModuleAndSpec(mod, spec, base);
    int st = tp == NULL ? -1 : PyModule_AddType(mod, (PyTypeObject *)tp);
    Py_XDECREF(tp);
    return st;
}

int rmtl_add_enum(PyObject *mod, const char *kind, const rmtl_enum_entry *entries) {
    PyObject *enums = PyObject_GetAttrString(mod, "enums");
    PyObject *table = enums ? PyDict_New() : NULL;
    int st = table == NULL ? -1 : PyDict_SetItemString(enums, kind, table);
    for (const rmtl_enum_entry *e = entries; st == 0 && e->name != NULL; e++) {
        PyObject *v = PyLong_FromLong(e->value);
        st = v == NULL ? -1 : PyDict_SetItemString(table, e->name, v);
        Py_XDECREF(v);
    }
    Py_XDECREF(table);
    Py_XDECREF(enums);
    return st;
}

int rmtl_check_one_batch(npy_intp n) {
    if (n == 0 || n > INT32_MAX / 4) {
        PyErr_Format(PyExc_ValueError, "sparse: expected between 1 and %d rows, got %zd",
                     INT32_MAX / 4, (Py_ssize_t)n);
        return -1;
    }
    return 0;
}

int rmtl_check_fresh(const void *state, const char *type) {
    if (state != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s: already initialised; __init__ runs once (views and running calls use "
                     "its buffers), create a new object instead",
                     type);
        return -1;
    }
    return 0;
}

PyObject *rmtl_value_error(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    PyOS_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    PyErr_SetString(PyExc_ValueError, msg);
    return NULL;
}
