/* The thread count of the core's parallel loops: every `omp parallel` region asks for
   rmtl_threads() threads, so a count set from any Python thread holds for all of them. */
#include "rmtl.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int rmtl_thread_count = 0; /* 0: OpenMP's default */

void rmtl_threads_set(int n) {
    rmtl_thread_count = n > 0 ? n : 0;
}

int rmtl_threads(void) {
#ifdef _OPENMP
    return rmtl_thread_count > 0 ? rmtl_thread_count : omp_get_max_threads();
#else
    return 1;
#endif
}
