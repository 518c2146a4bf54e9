// HERD_HD marks a function compiled for both the host and the GPU: `__host__ __device__` under
// nvcc, nothing under the host compiler. The per-block decode/dot routines and index computations
// of the CUDA backend are written this way so the CPU tests compile the very same code with g++
// and check it against the reference backend ([cuda]: proof without a GPU). A header that uses it
// includes only <cstdint>/<cstddef> and other HD headers: no std:: containers, no exceptions.
#pragma once

#if defined(__CUDACC__)
#define HERD_HD __host__ __device__ __forceinline__
#else
#define HERD_HD inline
#endif
