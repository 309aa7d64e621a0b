/* rmtl._core.Env (vectorised session MDP), rmtl._core.Replay (ring buffer, collection) and
   draw_sessions. */
#include "bind.h"

#include <math.h>
#include <string.h>

#include "replay.h"

/* offsets (S+1) int64 CSR bounds from 0 to n with no empty session, labels (n,T) float32 and
   the reward kind into mdp's session fields; codes and dense stay unset. The offsets are read
   from a private copy held by h, checked here, so no later write to the caller's array can
   send the core outside the data. */
static int rmtl_parse_mdp(rmtl_mdp *mdp, PyObject *oo, PyObject *lo, int reward, rmtl_holds *h) {
    PyArrayObject *off = rmtl_check_array(oo, "offsets", NPY_INT64, 1, NULL, 0);
    PyArrayObject *lab = off ? rmtl_check_array(lo, "labels", NPY_FLOAT32, 2, NULL, 0) : NULL;
    if (lab == NULL || rmtl_check_finite(lab, "labels") < 0 ||
        (off = rmtl_hold_copy(h, off)) == NULL) {
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
    if (reward < RMTL_REWARD_BCE || reward > RMTL_REWARD_BCE_WRAPPED) {
        PyErr_Format(PyExc_ValueError,
                     "reward: expected 0 (bce), 1 (abs) or 2 (bce_wrapped), got %d", reward);
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
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOiiipK:Env", kwlist, &oo, &co, &dob, &lo, &n,
                                     &reward, &order, &autoreset, &seed) ||
        rmtl_check_fresh(self->e, "Env") < 0) {
        return -1;
    }
    rmtl_mdp mdp;
    rmtl_holds h = RMTL_HOLDS_INIT;
    if (rmtl_parse_mdp(&mdp, oo, lo, reward, &h) < 0) {
        rmtl_holds_release(&h);
        return -1;
    }
    npy_intp rows = PyArray_DIM((PyArrayObject *)lo, 0), shape[2] = {rows, -1};
    PyArrayObject *codes = rmtl_check_array(co, "sparse", NPY_INT32, 2, shape, 0);
    PyArrayObject *dense = codes ? rmtl_check_array(dob, "dense", NPY_FLOAT32, 2, shape, 0) : NULL;
    int ok = dense != NULL && rmtl_check_finite(dense, "dense") == 0;
    if (ok && n < 1) {
        PyErr_Format(PyExc_ValueError, "num_envs: expected >= 1, got %d", n);
        ok = 0;
    }
    if (ok && order != RMTL_ORDER_RANDOM && order != RMTL_ORDER_SEQUENTIAL) {
        PyErr_Format(PyExc_ValueError, "order: expected 0 (random) or 1 (sequential), got %d",
                     order);
        ok = 0;
    }
    if (!ok) {
        rmtl_holds_release(&h);
        return -1;
    }
    mdp.codes = PyArray_DATA(codes);
    mdp.dense = PyArray_DATA(dense);
    mdp.F = (int)PyArray_DIM(codes, 1);
    mdp.D = (int)PyArray_DIM(dense, 1);
    rmtl_env *e = NULL;
    int st = rmtl_env_create(&e, &mdp, n, order, autoreset, (uint64_t)seed);
    PyObject *offsets = h.copies[0]; /* the env reads its private offsets */
    if (st != RMTL_OK) {
        rmtl_holds_release(&h);
        rmtl_raise(st, "env config");
        return -1;
    }
    self->e = e;
    PyObject *objs[4] = {offsets, co, dob, lo};
    for (int i = 0; i < 4; i++) {
        Py_INCREF(objs[i]);
        self->arrays[i] = objs[i];
    }
    rmtl_holds_release(&h);
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
    if (!PyArg_ParseTuple(args, "OO:reset", &so, &sso) || Env_ready(self) < 0) {
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
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "niK:Replay", kwlist, &capacity, &T, &seed) ||
        rmtl_check_fresh(self->b, "Replay") < 0) {
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
static PyObject *Replay_push(ReplayObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"state", "next_state", "action", "reward", "done", NULL};
    PyObject *so, *no, *ao, *ro, *doo;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO:push", kwlist, &so, &no, &ao, &ro, &doo) ||
        Replay_ready(self) < 0) {
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
static PyObject *Replay_collect(ReplayObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"offsets", "labels", "sessions", "first", "reward",
                             "policy",  "action", "noise",    "seed",  NULL};
    PyObject *oo, *lo, *so, *ao, *result = NULL;
    long long first;
    int reward, kind;
    float noise;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOLiiOfK:collect", kwlist, &oo, &lo, &so, &first,
                                     &reward, &kind, &ao, &noise, &seed) ||
        Replay_ready(self) < 0) {
        return NULL;
    }
    rmtl_replay *b = self->b;
    rmtl_mdp mdp;
    rmtl_holds h = RMTL_HOLDS_INIT; /* private offsets and sessions, read with the GIL released */
    PyArrayObject *sess;
    if (rmtl_parse_mdp(&mdp, oo, lo, reward, &h) < 0) {
        goto done;
    }
    if (mdp.T != b->T) {
        PyErr_Format(PyExc_ValueError, "data: has %d tasks, the buffer was made for %d", mdp.T,
                     b->T);
        goto done;
    }
    sess = rmtl_check_array(so, "sessions", NPY_INT64, 1, NULL, 0);
    if (sess == NULL || (sess = rmtl_hold_copy(&h, sess)) == NULL) {
        goto done;
    }
    npy_intp E = PyArray_DIM(sess, 0);
    const int64_t *sp = PyArray_DATA(sess);
    npy_intp total = 0;
    for (npy_intp e = 0; e < E; e++) {
        if (sp[e] < 0 || sp[e] >= mdp.n_sessions) {
            PyErr_Format(PyExc_ValueError, "sessions: expected indices in [0, %lld), got %lld",
                         (long long)mdp.n_sessions, (long long)sp[e]);
            goto done;
        }
        total += (npy_intp)(mdp.offsets[sp[e] + 1] - mdp.offsets[sp[e]]);
    }
    if (first < 0) {
        PyErr_Format(PyExc_ValueError, "first: expected >= 0, got %lld", first);
        goto done;
    }
    if (!(noise >= 0.0f) || !isfinite(noise)) {
        PyErr_SetString(PyExc_ValueError, "noise: expected a finite standard deviation >= 0");
        goto done;
    }
    rmtl_policy pol = {kind, NULL, noise, (uint64_t)seed};
    if (kind == RMTL_POLICY_ROWS || kind == RMTL_POLICY_GIVEN) {
        npy_intp n = kind == RMTL_POLICY_ROWS ? PyArray_DIM((PyArrayObject *)lo, 0) : total;
        PyArrayObject *a = rmtl_check_matrix(ao, "action", n, b->T);
        if (a == NULL || (kind == RMTL_POLICY_GIVEN && rmtl_check_unit(a, "action") < 0)) {
            goto done;
        }
        pol.action = PyArray_DATA(a);
    } else if (kind != RMTL_POLICY_UNIFORM || ao != Py_None) {
        PyErr_Format(PyExc_ValueError, "policy: expected 0 (uniform, no action), 1 or 2, got %d",
                     kind);
        goto done;
    }
    int st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS;
    st = rmtl_collect(b, &mdp, sp, (int64_t)E, (int64_t)first, &pol);
    Py_END_ALLOW_THREADS;
    self->busy = 0;
    result = st == RMTL_OK ? PyLong_FromSsize_t(total) : rmtl_raise(st, "collect");
done:
    rmtl_holds_release(&h);
    return result;
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
    {"push", RMTL_KW(Replay_push), METH_VARARGS | METH_KEYWORDS,
     "push(state, next_state, action, reward, done): append transitions, oldest first"},
    {"sample", (PyCFunction)Replay_sample, METH_O,
     "sample(batch_size) -> (state, next_state, action, reward, done) without replacement"},
    {"export", (PyCFunction)Replay_export, METH_NOARGS,
     "export() -> (state, next_state, action, reward, done), oldest first"},
    {"collect", RMTL_KW(Replay_collect), METH_VARARGS | METH_KEYWORDS,
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
static PyObject *rmtl_py_draw_sessions(PyObject *mod, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"n_sessions", "count", "order", "seed", NULL};
    long long S;
    Py_ssize_t n;
    int order;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LniK:draw_sessions", kwlist, &S, &n, &order,
                                     &seed)) {
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
/* session_context(offsets, time, labels) -> float32 (n, 2+T): the session context features of
   rmtl_session_context (fast: one pass over the rows, the GIL stays held) */
static PyObject *rmtl_py_session_context(PyObject *mod, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"offsets", "time", "labels", NULL};
    PyObject *oo, *to, *lo;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:session_context", kwlist, &oo, &to, &lo)) {
        return NULL;
    }
    rmtl_mdp mdp;
    rmtl_holds h = RMTL_HOLDS_INIT;
    PyArrayObject *time = NULL;
    PyObject *out = NULL;
    if (rmtl_parse_mdp(&mdp, oo, lo, RMTL_REWARD_BCE, &h) == 0) {
        npy_intp shape[1] = {(npy_intp)mdp.offsets[mdp.n_sessions]};
        time = rmtl_check_array(to, "time", NPY_INT64, 1, shape, 0);
    }
    if (time != NULL) {
        out = rmtl_new_array(2, (npy_intp)mdp.offsets[mdp.n_sessions], RMTL_CONTEXT_BASE + mdp.T,
                             NPY_FLOAT32);
    }
    if (out != NULL && rmtl_session_context(rmtl_data(out), mdp.offsets, mdp.n_sessions,
                                            PyArray_DATA(time), mdp.labels, mdp.T) != RMTL_OK) {
        PyErr_SetString(PyExc_ValueError,
                        "time: decreases inside a session; sort every session by time");
        Py_CLEAR(out);
    }
    rmtl_holds_release(&h);
    return out;
}

static PyMethodDef rmtl_env_functions[] = {
    {"session_context", RMTL_KW(rmtl_py_session_context), METH_VARARGS | METH_KEYWORDS,
     "session_context(offsets, time, labels) -> float32 (n, 2+T) session context features"},
    {"draw_sessions", RMTL_KW(rmtl_py_draw_sessions), METH_VARARGS | METH_KEYWORDS,
     "draw_sessions(n_sessions, count, order, seed) -> int64 sessions of episodes 0..count-1"},
    {NULL}};

static const rmtl_enum_entry rmtl_reward_enum[] = {{"bce", RMTL_REWARD_BCE},
                                                   {"abs", RMTL_REWARD_ABS},
                                                   {"bce_wrapped", RMTL_REWARD_BCE_WRAPPED},
                                                   {NULL, 0}};

static const rmtl_enum_entry rmtl_order_enum[] = {
    {"random", RMTL_ORDER_RANDOM}, {"sequential", RMTL_ORDER_SEQUENTIAL}, {NULL, 0}};

static const rmtl_enum_entry rmtl_policy_enum[] = {{"uniform", RMTL_POLICY_UNIFORM},
                                                   {"rows", RMTL_POLICY_ROWS},
                                                   {"given", RMTL_POLICY_GIVEN},
                                                   {NULL, 0}};

int rmtl_bind_env_init(PyObject *mod) {
    if (PyModule_AddFunctions(mod, rmtl_env_functions) < 0 ||
        rmtl_add_enum(mod, "reward", rmtl_reward_enum) < 0 ||
        rmtl_add_enum(mod, "order", rmtl_order_enum) < 0 ||
        rmtl_add_enum(mod, "policy", rmtl_policy_enum) < 0 ||
        rmtl_add_type(mod, &Env_spec, NULL) < 0) {
        return -1;
    }
    return rmtl_add_type(mod, &Replay_spec, NULL);
}
