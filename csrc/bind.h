/* What the binding files share. Only binding files (bind*.c, module.c) include Python.h: they
   validate every array, turn status codes into exceptions and release the GIL around long calls.
   Each family file registers its types and functions on the module in its own init function;
   module.c calls them in order. */
#ifndef RMTL_BIND_H
#define RMTL_BIND_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pycompat.h"
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL rmtl_numpy_api
#ifndef RMTL_BIND_IMPORTS_NUMPY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "blocks.h"

/* ---- errors and checks (bind.c) */

/* sets the exception for core status st, naming what failed; always returns NULL */
PyObject *rmtl_raise(int st, const char *what);
/* sets ValueError with a C printf message (for numbers: PyErr_Format has no %g); returns NULL */
PyObject *rmtl_value_error(const char *fmt, ...);
/* Borrowed check: obj must be an ndarray of exactly this dtype, C-contiguous and aligned,
   with ndim dimensions; shape entries >= 0 must match. Writable arrays are never copied. */
PyArrayObject *rmtl_check_array(PyObject *obj, const char *arg, int typenum, int ndim,
                                const npy_intp *shape, int writable);
/* 0 if every value of the float32 array a is finite, else -1 with ValueError naming arg */
int rmtl_check_finite(PyArrayObject *a, const char *arg);
/* a finite float32 vector of n values */
PyArrayObject *rmtl_check_vector(PyObject *o, const char *arg, npy_intp n);
/* a finite float32 (n, T) array */
PyArrayObject *rmtl_check_matrix(PyObject *o, const char *arg, npy_intp n, int T);
/* finite values in [0, 1] (actions, probabilities) */
int rmtl_check_unit(PyArrayObject *a, const char *arg);
/* 0 if 1 <= B <= INT32_MAX / 4, else -1 with ValueError */
int rmtl_check_batch_size(int B);
/* 1 <= n <= INT32_MAX / 4 rows for a call that runs them as one batch; -1 with ValueError */
int rmtl_check_one_batch(npy_intp n);
/* 0 if the Adam settings are in range, else -1 with ValueError naming arg */
int rmtl_check_adam(const rmtl_adam *opt, const char *arg);
/* Adam settings from a tuple (lr, beta1, beta2, eps, weight_decay), range-checked */
int rmtl_parse_adam(PyObject *tuple, rmtl_adam *opt, const char *arg);
/* the cast METH_VARARGS | METH_KEYWORDS functions need in a PyMethodDef */
#define RMTL_KW(fn) ((PyCFunction)(void (*)(void))(fn))
/* a new C-contiguous array (d0) or (d0, d1) of typenum, uninitialised; NULL with an exception */
PyObject *rmtl_new_array(int ndim, npy_intp d0, npy_intp d1, int typenum);
/* the data of the ndarray a */
void *rmtl_data(PyObject *a);
/* a new list of n Python floats */
PyObject *rmtl_float_list(const double *v, int n);
/* 0 if an object's core state is still NULL (__init__ not run yet), else -1 with
   RuntimeError: re-initialising would free buffers that views or running calls use */
int rmtl_check_fresh(const void *state, const char *type);
/* one C enum as Python sees it: its members' names (lower case) and values */
typedef struct {
    const char *name;
    int value;
} rmtl_enum_entry;
/* sets mod.enums[kind] = {name: value} for entries up to a NULL name; module.c creates the
   dict, so Python reads every C enum from one table */
int rmtl_add_enum(PyObject *mod, const char *kind, const rmtl_enum_entry *entries);
/* creates the type of spec (derived from base unless NULL) and adds it to mod by its short name */
int rmtl_add_type(PyObject *mod, PyType_Spec *spec, PyObject *base);

/* ---- networks (bind_models.c): a Critic begins with ModelObject's members */

typedef struct {
    PyObject_HEAD rmtl_model *m;
    int busy; /* a GIL-free call is running on this model */
} ModelObject;

/* 0 once the net is initialised and idle (a GIL-free call another thread is running on it
   is waited for, the GIL released meanwhile), else -1 with RuntimeError (not initialised) */
int rmtl_net_ready(ModelObject *self);

/* What one GIL-free call uses: every net, checked ready and kept alive until released, all
   marked busy together while the GIL is released (another thread's call on them waits),
   and private copies of index arrays the core reads then, so no other thread can change
   them after they were checked. Start with {{NULL}, 0, {NULL}, 0}; release on every path. */
typedef struct {
    ModelObject *obj[2 * RMTL_MAX_TASKS + 2];
    int n;
    PyObject *copies[4];
    int n_copies;
} rmtl_holds;
/* holds o (ready, kept alive); 0, or -1 with an exception (o NULL, or not ready) */
int rmtl_hold(rmtl_holds *h, ModelObject *o);
/* a private C-contiguous copy of a, owned by h; NULL with an exception on failure */
PyArrayObject *rmtl_hold_copy(rmtl_holds *h, PyArrayObject *a);
/* releases every net (no longer busy) and copy h holds */
void rmtl_holds_release(rmtl_holds *h);
/* waits until the held nets are idle, marks them busy and releases the GIL
   (Py_BEGIN_ALLOW_THREADS) for a core call */
PyThreadState *rmtl_holds_begin(rmtl_holds *h);
/* takes the GIL back (Py_END_ALLOW_THREADS) and releases everything held */
void rmtl_holds_end(rmtl_holds *h, PyThreadState *ts);
#define RMTL_HOLDS_INIT {{NULL}, 0, {NULL}, 0}

/* validates dense (n,D) float32 finite and codes (n,F) int32 in range, into a private copy of
   the codes held by h (*codes); returns n or -1 */
npy_intp rmtl_net_check_inputs(ModelObject *self, PyObject *co, PyObject *dob,
                               PyArrayObject **codes, PyArrayObject **dense, rmtl_holds *h);
/* Checks a data set's arrays, codes (n,F) int32, dense (n,D) float32, labels (n,T) float32,
   and the rows (int64) a chunk reads from them. 0, or -1 with an exception set. */
int rmtl_check_chunk_rows(const rmtl_model *m, PyObject *ro, PyObject *co, PyObject *dob,
                          PyObject *lo, PyArrayObject **rows, PyArrayObject **codes,
                          PyArrayObject **dense, PyArrayObject **labels);
/* 1 if obj is an rmtl._core.Model (by its dealloc slot, so a rebound attribute cannot smuggle
   in another type) */
int rmtl_is_model(PyObject *obj);

/* ---- the families' registration (each adds its types and functions to mod) */

/* Net, Model, gemm backend: first */
int rmtl_bind_models_init(PyObject *mod);
/* Critic (derives from Net), learning calls */
int rmtl_bind_learning_init(PyObject *mod);
/* Env, Replay, session context, session draws */
int rmtl_bind_env_init(PyObject *mod);
/* SynthWorld, random draws (shuffle, permutation, normal) */
int rmtl_bind_synth_init(PyObject *mod);
/* auc, logloss, oracle metrics */
int rmtl_bind_metrics_init(PyObject *mod);
/* Balancer, balancer_specs */
int rmtl_bind_balancers_init(PyObject *mod);
/* the core balancer of the rmtl._core.Balancer o, marked busy and kept alive until
   rmtl_balancer_release(o); NULL with TypeError naming arg (or RuntimeError: not initialised,
   or another thread's call is running on it) */
struct rmtl_balancer *rmtl_balancer_claim(PyObject *o, const char *arg);
void rmtl_balancer_release(PyObject *o);

#endif
