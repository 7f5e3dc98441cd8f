// RT_HD marks a function compiled for the host and, under nvcc, for CUDA kernels too: one definition, so
// that the GPU computes the CPU's bits.
#pragma once

#ifdef __CUDACC__
#define RT_HD __host__ __device__
#else
#define RT_HD
#endif
