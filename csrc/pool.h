/* The core's own thread pool (pool.c): parallel loops over index ranges and the thread count. */
#ifndef RMTL_POOL_H
#define RMTL_POOL_H
#include "rmtl.h"

/* The least work a chunk of a parallel loop gets (rmtl_grain's min_work, as PyTorch's
   GRAIN_SIZE), in the units the loop counts its work_per_index in: a chunk must outweigh what the
   pool spends on it (about 0.04 us to claim it from the shared counter with the workers awake,
   plus its output's cache lines moving between cores; waking sleeping workers costs about 2.5 us
   per loop) while a batch of 2048 rows still splits over the threads.
   RMTL_GRAIN_COMPUTE counts elements of loops with work beyond a load and a store per element:
   ReLU and dropout epilogues, their backward's masks and column sums, softmax, attention rows,
   table lookups. RMTL_GRAIN_STREAM counts floats of loops that stream their operands once:
   embedding gathers and scatters, the experts' mix, Adam, soft updates; cheaper per unit, so
   twice as many. On one core of the 2-core Xeon a COMPUTE chunk takes 24 us in the dropout
   epilogue (0.72 ns per element) and 150 us in an 8-way softmax, a STREAM chunk 15 us in the mix
   (0.22 ns per multiply-add), 24 us in the embedding gather (0.37 ns per float) and 50 us in Adam
   (0.75 ns per parameter). Results never depend on the grains (chunks write disjoint outputs);
   speed does, so change them only with timings. */
#define RMTL_GRAIN_COMPUTE 32768
#define RMTL_GRAIN_STREAM 65536

/* the body of a parallel loop: indices [lo, hi) of the loop over ctx */
typedef void (*rmtl_range_fn)(void *ctx, int64_t lo, int64_t hi);
/* runs fn(ctx, lo, hi) over chunks of [0, n) of at least grain indices (fewer than 2 chunks:
   inline on the caller), returning when all are done; chunk boundaries depend only on n and
   grain, and bodies must not depend on which thread runs a chunk */
void rmtl_parallel_for(int64_t n, int64_t grain, rmtl_range_fn fn, void *ctx);
/* the grain of a loop whose index costs work_per_index: chunks of at least min_work */
int64_t rmtl_grain(double work_per_index, double min_work);
/* the most threads the pool runs, the caller included */
#define RMTL_MAX_THREADS 256
/* the pool's thread count (at most RMTL_MAX_THREADS); n <= 0: OMP_NUM_THREADS, else the cores
   this process may use. Safe while loops run on other threads: waits for the running loop to
   finish (a loop reads the count once, as it starts) */
void rmtl_threads_set(int n);
/* the pool's thread count, the caller included */
int rmtl_threads(void);
/* the CPUs the machine has (whatever this process may use), at least 1 */
int rmtl_machine_cpus(void);
#endif
