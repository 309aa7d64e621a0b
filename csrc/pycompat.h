/* Python C-API names newer than Python 3.9 (the oldest version rmtl supports), for the
 * binding files only: include after Python.h. */
#ifndef RMTL_PYCOMPAT_H
#define RMTL_PYCOMPAT_H

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *obj) {
    Py_INCREF(obj);
    return obj;
}

static inline int PyModule_AddObjectRef(PyObject *mod, const char *name, PyObject *value) {
    if (value == NULL) {
        return -1;
    }
    Py_INCREF(value);
    if (PyModule_AddObject(mod, name, value) < 0) {
        Py_DECREF(value);
        return -1;
    }
    return 0;
}

/* 3.9 takes the bases only as a tuple (3.10 also takes one type). */
static inline PyObject *rmtl_type_from_spec(PyObject *mod, PyType_Spec *spec, PyObject *base) {
    if (base == NULL || PyTuple_Check(base)) {
        return PyType_FromModuleAndSpec(mod, spec, base);
    }
    PyObject *bases = PyTuple_Pack(1, base);
    if (bases == NULL) {
        return NULL;
    }
    PyObject *type = PyType_FromModuleAndSpec(mod, spec, bases);
    Py_DECREF(bases);
    return type;
}
#define PyType_FromModuleAndSpec rmtl_type_from_spec

/* 3.9 has no flag for it: rmtl_disallow_new clears tp_new after the type is made. */
#define Py_TPFLAGS_DISALLOW_INSTANTIATION 0
static inline void rmtl_disallow_new(PyObject *type) {
    ((PyTypeObject *)type)->tp_new = NULL;
}
#else
static inline void rmtl_disallow_new(PyObject *type) {
    (void)type;
}
#endif

#endif
