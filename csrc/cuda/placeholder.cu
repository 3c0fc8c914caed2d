// CUDA kernels land here (issue #3). Kept so the CUDA build path is exercised.
#include <cuda_runtime.h>
__global__ void glad_noop_kernel() {}
