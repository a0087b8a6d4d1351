// Stand-in for CUDA's cuda_fp16.h and the CUDA built-ins seghead_kernel.cu uses, so that the
// kernel's own source compiles as C++ and runs block by block on the CPU (emulate.cpp).
#ifndef SEGHEAD_EMU_CUDA_FP16_H
#define SEGHEAD_EMU_CUDA_FP16_H

#include <algorithm>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct __half {
    _Float16 v;
};
inline float __half2float(__half h) { return static_cast<float>(h.v); }

struct Dim3 {
    unsigned int x, y, z;
};
extern Dim3 blockIdx, threadIdx;

inline float __ldg(const float* p) { return *p; }
inline __half __ldg(const __half* p) { return *p; }
inline void __syncthreads() {}
using std::min;

struct int4 {
    int x, y, z, w;
};
inline int4 make_int4(int x, int y, int z, int w) {
    int4 v = {x, y, z, w};
    return v;
}

#endif
