/* rmtl._core.Net (the flat buffers, Adam and mode Model and Critic share), rmtl._core.Model
   (a backbone) and the sgemm backend. */
#include "bind.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <dlfcn.h>
#include <sys/resource.h>
#include <time.h>
#endif

#include "pool.h"
#include "train.h"

/* ---------------------------------------------------------------- BLAS */

static rmtl_blas rmtl_scipy_blas = {NULL, NULL, NULL};

/* GIL-free calls on nets running now (rmtl_holds_begin to rmtl_holds_end); read and written
   with the GIL held only, so a backend switch that sees 0 runs before any of them starts */
static int rmtl_calls = 0;

/* the function named name, with or without SciPy's prefix for its bundled OpenBLAS, in lib */
static void *rmtl_blas_symbol(void *lib, const char *name) {
#ifdef _WIN32
    (void)lib;
    (void)name;
    return NULL;
#else
    char prefixed[64];
    void *fn = dlsym(lib, name);
    snprintf(prefixed, sizeof prefixed, "scipy_%s", name);
    return fn != NULL ? fn : dlsym(lib, prefixed);
#endif
}

/* OpenBLAS's process-wide thread count, from the library that defines sgemm or one it links,
   when that OpenBLAS runs its threads as pthreads or none (openblas_get_parallel 1 or 0):
   then a call made with the count at 1 runs on the calling thread alone, whichever thread
   that is. Left NULL for another BLAS, and for an OpenMP OpenBLAS (each thread has its own
   OpenMP count there, which a pool thread cannot be relied on to read as 1). */
static void rmtl_find_blas_threads(rmtl_blas *blas) {
#ifndef _WIN32
    Dl_info info;
    void *sgemm, *lib = NULL;
    memcpy(&sgemm, &blas->sgemm, sizeof sgemm);
    if (dladdr(sgemm, &info) != 0 && info.dli_fname != NULL) {
        lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    }
    if (lib == NULL) {
        return;
    }
    void *parallel = rmtl_blas_symbol(lib, "openblas_get_parallel");
    void *get = rmtl_blas_symbol(lib, "openblas_get_num_threads");
    void *set = rmtl_blas_symbol(lib, "openblas_set_num_threads");
    int (*get_parallel)(void);
    memcpy(&get_parallel, &parallel, sizeof get_parallel); /* as POSIX dlsym intends */
    if (get_parallel != NULL && get != NULL && set != NULL &&
        (get_parallel() == 0 || get_parallel() == 1)) {
        memcpy(&blas->get_threads, &get, sizeof get);
        memcpy(&blas->set_threads, &set, sizeof set);
    }
    dlclose(lib);
#endif
}

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
    rmtl_scipy_blas.sgemm = (rmtl_sgemm_fn)PyCapsule_GetPointer(cap, name);
    ok = rmtl_scipy_blas.sgemm != NULL ? 0 : -1;
    if (ok == 0) {
        rmtl_find_blas_threads(&rmtl_scipy_blas);
    }
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
    int blas = strcmp(name, "blas") == 0;
    if (!blas && strcmp(name, "builtin") != 0) {
        PyErr_Format(PyExc_ValueError, "backend: expected 'blas' or 'builtin', got '%s'", name);
        return NULL;
    }
    if (blas && rmtl_scipy_blas.sgemm == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "backend: SciPy's BLAS sgemm could not be loaded; use 'builtin'");
        return NULL;
    }
    /* the GIL orders this check against every call's start and end (rmtl_calls) */
    if (blas != rmtl_gemm_uses_blas() && rmtl_calls > 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "backend: another thread is running a call of the core (training, "
                        "prediction, a critic step); switch the backend between calls");
        return NULL;
    }
    rmtl_gemm_use(blas);
    Py_RETURN_NONE;
}

static PyObject *rmtl_py_set_num_threads(PyObject *self, PyObject *arg) {
    if (PyBool_Check(arg)) {
        PyErr_Format(PyExc_ValueError, "n: expected an integer 1..%d, got %R", RMTL_MAX_THREADS,
                     arg);
        return NULL;
    }
    PyObject *index = PyNumber_Index(arg);
    if (index == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "n: expected an integer 1..%d, got %R", RMTL_MAX_THREADS,
                     arg);
        return NULL;
    }
    int overflow = 0;
    long n = PyLong_AsLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (overflow != 0 || n < 1 || n > RMTL_MAX_THREADS) {
        PyErr_Format(PyExc_ValueError,
                     "n: expected 1..%d threads (the pool's maximum is %d), got %R",
                     RMTL_MAX_THREADS, RMTL_MAX_THREADS, arg);
        return NULL;
    }
    /* waits for a parallel loop another thread is running to finish */
    Py_BEGIN_ALLOW_THREADS;
    rmtl_threads_set((int)n);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static PyObject *rmtl_py_get_num_threads(PyObject *self, PyObject *noargs) {
    return PyLong_FromLong(rmtl_threads());
}

static PyObject *rmtl_py_gemm_backend(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(rmtl_gemm_uses_blas() ? "blas" : "builtin");
}

/* one product from (a, b, c, trans_a, trans_b, alpha, beta) arguments into op; -1 with the
   exception set */
static int rmtl_gemm_op_parse(rmtl_gemm_op *op, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"a", "b", "c", "trans_a", "trans_b", "alpha", "beta", NULL};
    PyObject *ao, *bo, *co;
    int ta, tb;
    float alpha, beta;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOppff:gemm", kwlist, &ao, &bo, &co, &ta, &tb,
                                     &alpha, &beta)) {
        return -1;
    }
    PyArrayObject *a = rmtl_check_array(ao, "a", NPY_FLOAT32, 2, NULL, 0);
    PyArrayObject *b = a ? rmtl_check_array(bo, "b", NPY_FLOAT32, 2, NULL, 0) : NULL;
    PyArrayObject *c = b ? rmtl_check_array(co, "c", NPY_FLOAT32, 2, NULL, 1) : NULL;
    if (c == NULL) {
        return -1;
    }
    int M = (int)PyArray_DIM(c, 0), N = (int)PyArray_DIM(c, 1);
    int K = (int)(ta ? PyArray_DIM(a, 0) : PyArray_DIM(a, 1));
    if ((ta ? PyArray_DIM(a, 1) : PyArray_DIM(a, 0)) != M ||
        (tb ? PyArray_DIM(b, 1) : PyArray_DIM(b, 0)) != K ||
        (tb ? PyArray_DIM(b, 0) : PyArray_DIM(b, 1)) != N) {
        PyErr_SetString(PyExc_ValueError, "a, b, c: shapes do not chain to c = op(a) op(b)");
        return -1;
    }
    rmtl_gemm_op g = {ta,
                      tb,
                      M,
                      N,
                      K,
                      (int)PyArray_DIM(a, 1),
                      (int)PyArray_DIM(b, 1),
                      N,
                      alpha,
                      beta,
                      PyArray_DATA(a),
                      PyArray_DATA(b),
                      PyArray_DATA(c)};
    *op = g;
    return 0;
}

static PyObject *rmtl_py_gemm(PyObject *self, PyObject *args, PyObject *kwds) {
    rmtl_gemm_op op;
    if (rmtl_gemm_op_parse(&op, args, kwds) < 0) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    rmtl_gemm(op.ta, op.tb, op.M, op.N, op.K, op.alpha, op.A, op.lda, op.B, op.ldb, op.beta, op.C,
              op.ldc);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* whether the bytes of op's output meet those of x (rows x ld floats at p) */
static int rmtl_gemm_meets(const rmtl_gemm_op *op, const float *p, size_t n) {
    const float *c = op->C, *c_end = op->C + (size_t)op->M * op->ldc;
    return op->M > 0 && op->N > 0 && n > 0 && p < c_end && c < p + n;
}

static PyObject *rmtl_py_gemm_many(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "products: expected a list of (a, b, c, trans_a, "
                                         "trans_b, alpha, beta) tuples");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    rmtl_gemm_op *ops =
        n <= INT32_MAX ? PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(*ops)) : NULL;
    int ok = ops != NULL;
    if (ops == NULL) {
        PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        ok = PyTuple_Check(t) && rmtl_gemm_op_parse(&ops[i], t, NULL) == 0;
        if (ok == 0 && !PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "products[%zd]: expected a tuple, got %s", i,
                         Py_TYPE(t)->tp_name);
        }
        for (Py_ssize_t j = 0; ok && j < i; j++) {
            const rmtl_gemm_op *o = &ops[j], *q = &ops[i];
            if (rmtl_gemm_meets(o, q->C, (size_t)q->M * q->ldc) ||
                rmtl_gemm_meets(o, q->A, (size_t)(q->ta ? q->K : q->M) * q->lda) ||
                rmtl_gemm_meets(o, q->B, (size_t)(q->tb ? q->N : q->K) * q->ldb) ||
                rmtl_gemm_meets(q, o->A, (size_t)(o->ta ? o->K : o->M) * o->lda) ||
                rmtl_gemm_meets(q, o->B, (size_t)(o->tb ? o->N : o->K) * o->ldb)) {
                PyErr_Format(PyExc_ValueError,
                             "products[%zd]: its arrays share memory with the output of "
                             "products[%zd] (products run at the same time: give each its own c)",
                             i, j);
                ok = 0;
            }
        }
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS;
        rmtl_gemm_many(ops, (int)n);
        Py_END_ALLOW_THREADS;
    }
    PyMem_Free(ops);
    Py_DECREF(seq);
    if (!ok) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int Model_init(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"kind",      "field_dims",  "num_dense",  "num_tasks",
                             "embed_dim", "bottom_dims", "tower_dims", "dropout",
                             "seed",      "num_experts", NULL};
    int kind, D, T, E, n_experts = 0;
    PyObject *fdo, *bo, *to;
    float dropout;
    unsigned long long seed;
    int bottom[RMTL_MAX_LAYERS], tower[RMTL_MAX_LAYERS];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOiiiOOfK|i:Model", kwlist, &kind, &fdo, &D, &T,
                                     &E, &bo, &to, &dropout, &seed, &n_experts) ||
        rmtl_check_fresh(self->m, "Model") < 0) {
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

/* a pause of about 50 microseconds, called with the GIL released */
static void rmtl_pause(void) {
#ifdef _WIN32
    Sleep(0);
#else
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
#endif
}

/* 1 if another thread's GIL-free call is running on any of the n nets */
static int rmtl_any_busy(ModelObject *const *obj, int n) {
    for (int i = 0; i < n; i++) {
        if (obj[i]->busy) {
            return 1;
        }
    }
    return 0;
}

/* Waits until no other thread's GIL-free call runs on any of the n nets: the GIL is released
   while waiting (the running call needs it to end), and a call marks its nets busy only with
   the GIL held after every one of them was seen idle, so a waiting thread holds no net busy and
   two threads never wait for each other. On return (GIL held) all n are idle. */
static void rmtl_wait_idle(ModelObject *const *obj, int n) {
    while (rmtl_any_busy(obj, n)) {
        Py_BEGIN_ALLOW_THREADS;
        rmtl_pause();
        Py_END_ALLOW_THREADS;
    }
}

int rmtl_net_ready(ModelObject *self) {
    if (self->m == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "model: not initialised");
        return -1;
    }
    rmtl_wait_idle(&self, 1);
    return 0;
}

static PyObject *Model_param_table(ModelObject *self, PyObject *noargs) {
    if (rmtl_net_ready(self) < 0) {
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
    if (rmtl_net_ready(self) < 0) {
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

int rmtl_hold(rmtl_holds *h, ModelObject *o) {
    if (o == NULL || rmtl_net_ready(o) < 0) {
        return -1;
    }
    Py_INCREF(o);
    h->obj[h->n++] = o;
    return 0;
}

PyArrayObject *rmtl_hold_copy(rmtl_holds *h, PyArrayObject *a) {
    PyObject *c = PyArray_NewCopy(a, NPY_CORDER);
    if (c != NULL) {
        h->copies[h->n_copies++] = c;
    }
    return (PyArrayObject *)c;
}

void rmtl_holds_release(rmtl_holds *h) {
    for (int i = 0; i < h->n; i++) {
        h->obj[i]->busy = 0;
        Py_DECREF(h->obj[i]);
    }
    for (int i = 0; i < h->n_copies; i++) {
        Py_DECREF(h->copies[i]);
    }
    h->n = h->n_copies = 0;
}

PyThreadState *rmtl_holds_begin(rmtl_holds *h) {
    /* another thread may have started a call on one of them since rmtl_hold (the GIL can be
       released in between, by numpy's copies of the inputs) */
    rmtl_wait_idle(h->obj, h->n);
    for (int i = 0; i < h->n; i++) {
        h->obj[i]->busy = 1;
    }
    rmtl_calls++;
    return PyEval_SaveThread();
}

void rmtl_holds_end(rmtl_holds *h, PyThreadState *ts) {
    PyEval_RestoreThread(ts);
    rmtl_calls--;
    rmtl_holds_release(h);
}

npy_intp rmtl_net_check_inputs(ModelObject *self, PyObject *co, PyObject *dob,
                               PyArrayObject **codes, PyArrayObject **dense, rmtl_holds *h) {
    rmtl_model *m = self->m;
    npy_intp cshape[2] = {-1, m->F};
    *codes = rmtl_check_array(co, "sparse", NPY_INT32, 2, cshape, 0);
    if (*codes == NULL) {
        return -1;
    }
    npy_intp dshape[2] = {PyArray_DIM(*codes, 0), m->D};
    *dense = rmtl_check_array(dob, "dense", NPY_FLOAT32, 2, dshape, 0);
    if (*dense == NULL || rmtl_check_finite(*dense, "dense") < 0 ||
        (*codes = rmtl_hold_copy(h, *codes)) == NULL) {
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
            rmtl_value_error("%s: expected %s values, got %g at flat index %zd", arg,
                             binary ? "0/1" : "non-negative", (double)y[i], (Py_ssize_t)i);
            return -1;
        }
    }
    return 0;
}

/* Model.forward's core calls over n rows (the GIL released): the probabilities into out (n,T) */
static int rmtl_model_forward_copy(rmtl_model *m, float *out, const int32_t *codes,
                                   const float *dense, int n) {
    RMTL_TRY(rmtl_model_reserve(m, n));
    RMTL_TRY(rmtl_model_forward(m, codes, dense, n));
    memcpy(out, m->prob, (size_t)n * m->T * sizeof(float));
    return RMTL_OK;
}

static PyObject *Model_forward(ModelObject *self, PyObject *args) {
    PyObject *co, *dob, *out = NULL;
    PyArrayObject *codes, *dense;
    rmtl_holds h = RMTL_HOLDS_INIT;
    if (!PyArg_ParseTuple(args, "OO:forward", &co, &dob) || rmtl_hold(&h, self) < 0) {
        return NULL;
    }
    npy_intp n = rmtl_net_check_inputs(self, co, dob, &codes, &dense, &h);
    npy_intp oshape[2] = {n, self->m->T};
    if (n < 0 || rmtl_check_one_batch(n) < 0 ||
        (out = PyArray_SimpleNew(2, oshape, NPY_FLOAT32)) == NULL) {
        rmtl_holds_release(&h);
        return NULL;
    }
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st = rmtl_model_forward_copy(self->m, PyArray_DATA((PyArrayObject *)out),
                                     PyArray_DATA(codes), PyArray_DATA(dense), (int)n);
    rmtl_holds_end(&h, ts);
    if (st != RMTL_OK) {
        Py_DECREF(out);
        return rmtl_raise(st, "forward");
    }
    return out;
}

static PyObject *Model_predict(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sparse", "dense", "out", "batch_size", "tables", NULL};
    PyObject *co, *dob, *oo;
    int B, tables = RMTL_TABLES_AUTO;
    PyArrayObject *codes, *dense, *out = NULL;
    rmtl_holds h = RMTL_HOLDS_INIT;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOi|i:predict", kwlist, &co, &dob, &oo, &B,
                                     &tables)) {
        return NULL;
    }
    if (B < 1) {
        PyErr_Format(PyExc_ValueError, "batch_size: expected >= 1, got %d", B);
        return NULL;
    }
    if (tables < RMTL_TABLES_AUTO || tables > RMTL_TABLES_ALWAYS) {
        PyErr_Format(PyExc_ValueError, "tables: expected 0 (auto), 1 (never) or 2 (always), got %d",
                     tables);
        return NULL;
    }
    if (rmtl_hold(&h, self) < 0) {
        return NULL;
    }
    npy_intp n = rmtl_net_check_inputs(self, co, dob, &codes, &dense, &h);
    npy_intp oshape[2] = {n, self->m->T};
    if (n < 0 || (out = rmtl_check_array(oo, "out", NPY_FLOAT32, 2, oshape, 1)) == NULL) {
        rmtl_holds_release(&h);
        return NULL;
    }
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st = rmtl_model_predict(self->m, PyArray_DATA(out), PyArray_DATA(codes),
                                PyArray_DATA(dense), (int64_t)n, B, tables);
    rmtl_holds_end(&h, ts);
    if (st != RMTL_OK) {
        return rmtl_raise(st, "predict");
    }
    Py_RETURN_NONE;
}

static PyObject *Model_loss_backward(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sparse", "dense", "labels", "weights", NULL};
    PyObject *co, *dob, *lo, *wo = Py_None;
    PyArrayObject *codes, *dense, *labels, *weights = NULL;
    rmtl_holds h = RMTL_HOLDS_INIT;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|O:loss_backward", kwlist, &co, &dob, &lo,
                                     &wo) ||
        rmtl_hold(&h, self) < 0) {
        return NULL;
    }
    npy_intp n = rmtl_net_check_inputs(self, co, dob, &codes, &dense, &h);
    if (n < 0 || Model_check_labels(self, lo, n, "labels", &labels, 1) < 0 ||
        (wo != Py_None && Model_check_labels(self, wo, n, "weights", &weights, 0) < 0) ||
        rmtl_check_one_batch(n) < 0) {
        rmtl_holds_release(&h);
        return NULL;
    }
    double loss = 0.0;
    PyThreadState *ts = rmtl_holds_begin(&h);
    int st = rmtl_model_loss_backward(self->m, &loss, PyArray_DATA(codes), PyArray_DATA(dense),
                                      PyArray_DATA(labels), weights ? PyArray_DATA(weights) : NULL,
                                      (int)n);
    rmtl_holds_end(&h, ts);
    return st == RMTL_OK ? PyFloat_FromDouble(loss) : rmtl_raise(st, "loss_backward");
}

static PyObject *Model_adam_step(ModelObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"lr", "beta1", "beta2", "eps", "weight_decay", NULL};
    rmtl_adam opt;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "fffff:adam_step", kwlist, &opt.lr, &opt.beta1,
                                     &opt.beta2, &opt.eps, &opt.weight_decay) ||
        rmtl_net_ready(self) < 0 || rmtl_check_adam(&opt, "adam") < 0) {
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
int rmtl_check_chunk_rows(const rmtl_model *m, PyObject *ro, PyObject *co, PyObject *dob,
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
                rmtl_value_error("labels: row %lld task %d is %g, expected 0 or 1", (long long)r[i],
                                 k, (double)v);
                return -1;
            }
        }
    }
    return 0;
}

static PyObject *Model_get_training(ModelObject *self, void *closure) {
    if (rmtl_net_ready(self) < 0) {
        return NULL;
    }
    return PyBool_FromLong(self->m->training);
}

static int Model_set_training(ModelObject *self, PyObject *value, void *closure) {
    if (rmtl_net_ready(self) < 0) {
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

/* RMTL_FIRST_LAYER_*: how first layers run (rmtl.models.Net.first_layer) */
static PyObject *Model_get_first_layer(ModelObject *self, void *closure) {
    if (rmtl_net_ready(self) < 0) {
        return NULL;
    }
    return PyLong_FromLong(self->m->first_layer);
}

static int Model_set_first_layer(ModelObject *self, PyObject *value, void *closure) {
    if (rmtl_net_ready(self) < 0) {
        return -1;
    }
    long u = value ? PyLong_AsLong(value) : -1;
    if (u < RMTL_FIRST_LAYER_AUTO || u > RMTL_FIRST_LAYER_DISTINCT) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError,
                        "first_layer: expected a value of rmtl._core.enums['first_layer']");
        return -1;
    }
    self->m->first_layer = (int)u;
    return 0;
}

static PyObject *Model_get_first_layer_rows(ModelObject *self, void *closure) {
    if (rmtl_net_ready(self) < 0) {
        return NULL;
    }
    const rmtl_distinct *u = &self->m->distinct;
    PyObject *out = PyTuple_New(self->m->F);
    for (int f = 0; out != NULL && f < self->m->F; f++) {
        PyTuple_SET_ITEM(out, f, PyLong_FromLong(u->cap == 0 ? 0 : u->use[f] ? u->u[f] : u->B));
    }
    return out;
}

static PyObject *Model_get_distinct_fold(ModelObject *self, void *closure) {
    if (rmtl_net_ready(self) < 0) {
        return NULL;
    }
    return PyBool_FromLong(self->m->front[0].distinct_fold);
}

static PyObject *Model_get_steps(ModelObject *self, void *closure) {
    if (rmtl_net_ready(self) < 0) {
        return NULL;
    }
    return Py_BuildValue("(LK)", (long long)self->m->params.adam_step,
                         (unsigned long long)self->m->counter);
}

/* (adam steps, dropout counter): restored with the weights so a reloaded model resumes */
static int Model_set_steps(ModelObject *self, PyObject *value, void *closure) {
    long long steps;
    unsigned long long counter;
    if (rmtl_net_ready(self) < 0) {
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
    {"predict", RMTL_KW(Model_predict), METH_VARARGS | METH_KEYWORDS,
     "predict(sparse, dense, out, batch_size, tables=0): eval-mode probabilities into out; tables "
     "0 lets the size rule choose whether first layers come from per-code tables, 1 never, 2 "
     "always"},
    {"loss_backward", RMTL_KW(Model_loss_backward), METH_VARARGS | METH_KEYWORDS,
     "loss_backward(sparse, dense, labels, weights=None) -> loss; gradients in buffer('grad')"},
    {NULL}};

static PyType_Slot Model_slots[] = {{Py_tp_init, Model_init},
                                    {Py_tp_dealloc, Model_dealloc},
                                    {Py_tp_methods, Model_methods},
                                    {Py_tp_new, PyType_GenericNew},
                                    {Py_tp_doc, "A backbone's parameters, buffers and kernels."},
                                    {0, NULL}};

static PyType_Spec Model_spec = {"rmtl._core.Model", sizeof(ModelObject), 0, Py_TPFLAGS_DEFAULT,
                                 Model_slots};

/* What Models and Critics share: a Critic begins with ModelObject's members, so the methods
   that read only m and busy (parameter table, buffers, Adam step, mode, counters) live on one
   base type, rmtl._core.Net, that both derive from. */
static PyMethodDef Net_methods[] = {
    {"param_table", (PyCFunction)Model_param_table, METH_NOARGS,
     "[(name, offset, shape)] of every tensor in the flat buffers"},
    {"buffer", (PyCFunction)Model_buffer, METH_O,
     "zero-copy float32 view of 'param', 'grad', 'adam_m' or 'adam_v'"},
    {"adam_step", RMTL_KW(Model_adam_step), METH_VARARGS | METH_KEYWORDS,
     "adam_step(lr, beta1, beta2, eps, weight_decay)"},
    {NULL}};

static PyGetSetDef Net_getset[] = {
    {"training", (getter)Model_get_training, (setter)Model_set_training, "dropout active", NULL},
    {"first_layer", (getter)Model_get_first_layer, (setter)Model_set_first_layer,
     "how first layers run: a value of rmtl._core.enums['first_layer']", NULL},
    {"first_layer_rows", (getter)Model_get_first_layer_rows, NULL,
     "per field, the rows the first layers ran over in the last forward over a batch's codes "
     "(its distinct codes, or the batch's rows)",
     NULL},
    {"distinct_fold", (getter)Model_get_distinct_fold, NULL,
     "whether the last forward over a batch's codes folded the numerical (and action) layers "
     "into the distinct first layers instead of computing them",
     NULL},
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
int rmtl_is_model(PyObject *obj) {
    return PyType_GetSlot(Py_TYPE(obj), Py_tp_dealloc) == (void *)Model_dealloc;
}

static PyMethodDef rmtl_models_functions[] = {
    {"set_gemm_backend", rmtl_py_set_gemm_backend, METH_O, "'blas' or 'builtin'"},
    {"gemm_backend", rmtl_py_gemm_backend, METH_NOARGS, "the active sgemm: 'blas' or 'builtin'"},
    {"set_num_threads", rmtl_py_set_num_threads, METH_O, "threads of the core's parallel loops"},
    {"get_num_threads", rmtl_py_get_num_threads, METH_NOARGS,
     "threads of the core's parallel loops"},
    {"gemm", RMTL_KW(rmtl_py_gemm), METH_VARARGS | METH_KEYWORDS,
     "gemm(a, b, c, trans_a, trans_b, alpha, beta): c = alpha op(a) op(b) + beta c"},
    {"gemm_many", rmtl_py_gemm_many, METH_O,
     "gemm_many([(a, b, c, trans_a, trans_b, alpha, beta), ...]): the products at once (each c "
     "its own memory)"},
    {NULL}};

static const rmtl_enum_entry rmtl_backbone_enum[] = {{"singletask", RMTL_SINGLETASK},
                                                     {"sharedbottom", RMTL_SHAREDBOTTOM},
                                                     {"esmm", RMTL_ESMM},
                                                     {"omoe", RMTL_OMOE},
                                                     {"mmoe", RMTL_MMOE},
                                                     {"ple", RMTL_PLE},
                                                     {"aitm", RMTL_AITM},
                                                     {"ple_paper", RMTL_PLE_PAPER},
                                                     {NULL, 0}};

static const rmtl_enum_entry rmtl_tables_enum[] = {{"auto", RMTL_TABLES_AUTO},
                                                   {"never", RMTL_TABLES_NEVER},
                                                   {"always", RMTL_TABLES_ALWAYS},
                                                   {NULL, 0}};

static const rmtl_enum_entry rmtl_first_layer_enum[] = {{"auto", RMTL_FIRST_LAYER_AUTO},
                                                        {"plain", RMTL_FIRST_LAYER_PLAIN},
                                                        {"distinct", RMTL_FIRST_LAYER_DISTINCT},
                                                        {NULL, 0}};

/* 1 if the process runs under an address-space limit (ulimit -v, RLIMIT_AS). OpenBLAS then
   hangs instead of failing when its 32 MB buffer for a new calling thread cannot be mapped
   (its blas_memory_alloc retries forever): `rmtl run` under ulimit -v 400000 spun in
   scipy_sgemm_ until killed. The built-in kernel fails such an allocation cleanly
   (MemoryError), so it is the default there; set_gemm_backend("blas") still chooses BLAS. */
static int rmtl_address_space_limited(void) {
#ifdef _WIN32
    return 0;
#else
    struct rlimit lim;
    return getrlimit(RLIMIT_AS, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY;
#endif
}

int rmtl_bind_models_init(PyObject *mod) {
    if (PyModule_AddFunctions(mod, rmtl_models_functions) < 0 ||
        rmtl_add_enum(mod, "backbone", rmtl_backbone_enum) < 0 ||
        rmtl_add_enum(mod, "tables", rmtl_tables_enum) < 0 ||
        rmtl_add_enum(mod, "first_layer", rmtl_first_layer_enum) < 0 ||
        rmtl_add_type(mod, &Net_spec, NULL) < 0) {
        return -1;
    }
    PyObject *net_type = PyObject_GetAttrString(mod, "Net");
    if (net_type != NULL) {
        rmtl_disallow_new(net_type);
    }
    int st = net_type == NULL ? -1 : rmtl_add_type(mod, &Model_spec, net_type);
    Py_XDECREF(net_type);
    if (st < 0) {
        return -1;
    }
    int loaded = rmtl_load_scipy_blas() == 0;
    const char *env = getenv("RMTL_BLAS");
    int forced = env != NULL && strcmp(env, "builtin") == 0;
    int limited = rmtl_address_space_limited();
    rmtl_gemm_init(loaded ? &rmtl_scipy_blas : NULL);
    rmtl_gemm_use(loaded && !forced && !limited);
    if (PyModule_AddIntConstant(mod, "blas_per_thread", rmtl_scipy_blas.set_threads != NULL) < 0 ||
        PyModule_AddIntConstant(mod, "address_space_limited", limited) < 0 ||
        PyModule_AddIntConstant(mod, "max_threads", RMTL_MAX_THREADS) < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(mod, "blas_available", loaded);
}
