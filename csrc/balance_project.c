/* (being written) */
#include "balancers.h"

const rmtl_bal_spec *const rmtl_bal_project_family[] = {NULL};
