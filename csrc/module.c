/* rmtl._core: registers the binding families (bind_*.c) and the core's limits. */
#define RMTL_BIND_IMPORTS_NUMPY
#include "bind.h"

static int rmtl_exec(PyObject *mod) {
    PyObject *enums = PyDict_New();
    if (enums == NULL || PyModule_AddObject(mod, "enums", enums) < 0) {
        Py_XDECREF(enums);
        return -1;
    }
    if (PyArray_ImportNumPyAPI() < 0 || rmtl_bind_models_init(mod) < 0 ||
        rmtl_bind_learning_init(mod) < 0 || rmtl_bind_env_init(mod) < 0 ||
        rmtl_bind_synth_init(mod) < 0 || rmtl_bind_metrics_init(mod) < 0 ||
        rmtl_bind_balancers_init(mod) < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(mod, "max_layers", RMTL_MAX_LAYERS) < 0 ||
        PyModule_AddIntConstant(mod, "max_tasks", RMTL_MAX_TASKS) < 0 ||
        PyModule_AddIntConstant(mod, "max_experts", RMTL_MAX_EXPERTS) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot rmtl_slots[] = {{Py_mod_exec, rmtl_exec}, {0, NULL}};

static struct PyModuleDef rmtl_module = {PyModuleDef_HEAD_INIT,
                                         "rmtl._core",
                                         "C core of rmtl: kernels, models, metrics.",
                                         0,
                                         NULL,
                                         rmtl_slots};

PyMODINIT_FUNC PyInit__core(void) {
    return PyModuleDef_Init(&rmtl_module);
}
