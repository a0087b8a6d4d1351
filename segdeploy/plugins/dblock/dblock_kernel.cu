// The fused split-dilation D-block kernel: Y = relu?(DBlockConv(X, W, B)), NCHW, FP32 or FP16.
//
// Work decomposition (one launch for both halves):
//   grid.z = N * groups: one image and one group of 16 channels per block; the group's
//            dilation is d1 for the first C/32 groups and d2 for the rest (group_dilation).
//   grid.y = row tiles of kBlockRows rows, grid.x = column tiles of kTileW = 32 * kPix columns.
//   block  = 32 x kBlockRows threads; lane i of a warp owns pixels x0 = tile_x + kPix * i and
//            x0 + 1 of one row, so a warp reads 64 consecutive values of a row per tap: coalesced
//            along W, as one float2 / half2 (8 or 4 bytes per lane) where the address is aligned.
//   Each thread keeps 16 x kPix accumulators (all 16 output channels of its group at its two
//   pixels): every input value is loaded once per tap and used 16 times, every weight read from
//   shared memory is used kPix times.
//   The group's 16 x 16 x 9 weights are staged in shared memory once per block, as float in the
//   packed layout [ci][tap][co] (dblock_common.cuh): all threads of a block read the same weight
//   at the same time (a broadcast, no bank conflicts), 16 contiguous floats per (ci, tap).
//   Bias and ReLU are applied before the one store of each output: no split, no concat, no
//   extra pass over memory.
// FP16: inputs, weights and bias are half, outputs half; arithmetic is FP32 (exact half->float
// conversions, fmaf accumulation, one rounding at the store). half2 carries the pixel pairs in
// loads and stores, where bandwidth is spent. FP32 accumulation keeps the kernel's result within
// one half ulp of the exact one, and is the fast path on the GTX 1080 Ti (sm_61 runs half
// arithmetic at 1/64 of its FP32 rate).
//
// Compiled three ways: by nvcc into the TensorRT plugin (with the launcher below), by NVRTC in the
// compilation proofs (device code only: __CUDACC_RTC__ hides the launcher), and the arithmetic
// alone, from dblock_common.cuh, as plain C++ for the host build.
#include <cuda_fp16.h>

#include "dblock_common.cuh"

#ifndef __CUDACC_RTC__
#include "dblock_kernel.h"
#endif

namespace segdeploy {
namespace dblock {

static const int kPix = 2;         // adjacent pixels per thread
static const int kBlockRows = 4;   // rows per block (threadIdx.y)
static const int kTileW = 32 * kPix;
static const int kThreads = 32 * kBlockRows;

template <typename T>
struct Io;

template <>
struct Io<float> {
    __device__ __forceinline__ static float to_float(float v) { return v; }
    __device__ __forceinline__ static float from_float(float v) { return v; }
    __device__ __forceinline__ static float load(const float* p) { return __ldg(p); }
    __device__ __forceinline__ static void load2(const float* p, float v[2]) {
        const float2 pair = __ldg(reinterpret_cast<const float2*>(p));
        v[0] = pair.x;
        v[1] = pair.y;
    }
    __device__ __forceinline__ static void store2(float* p, float a, float b) {
        *reinterpret_cast<float2*>(p) = make_float2(a, b);
    }
};

template <>
struct Io<__half> {
    __device__ __forceinline__ static float to_float(__half v) { return __half2float(v); }
    __device__ __forceinline__ static __half from_float(float v) { return __float2half_rn(v); }
    __device__ __forceinline__ static float load(const __half* p) { return __half2float(__ldg(p)); }
    __device__ __forceinline__ static void load2(const __half* p, float v[2]) {
        const float2 pair = __half22float2(__ldg(reinterpret_cast<const __half2*>(p)));
        v[0] = pair.x;
        v[1] = pair.y;
    }
    __device__ __forceinline__ static void store2(__half* p, float a, float b) {
        *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
    }
};

// Two adjacent values of one row, zero outside [0, width): one vector load where both are inside
// and the address is aligned to the pair (always, for even widths and even tap offsets).
template <typename T>
__device__ __forceinline__ bool pair_aligned(const T* p) {
    return (reinterpret_cast<unsigned long long>(p) % (2 * sizeof(T))) == 0;
}

template <typename T>
struct DeviceRowLoader {
    __device__ __forceinline__ static void load(const T* __restrict__ row, int width, int x,
                                                float v[kPix]) {
        if (x >= 0 && x + 1 < width && pair_aligned(row + x)) {
            Io<T>::load2(row + x, v);
        } else {
            v[0] = (x >= 0 && x < width) ? Io<T>::load(row + x) : 0.0f;
            v[1] = (x + 1 >= 0 && x + 1 < width) ? Io<T>::load(row + x + 1) : 0.0f;
        }
    }
};

template <typename T>
__device__ __forceinline__ void dblock_conv_body(const T* __restrict__ x, const T* __restrict__ w,
                                                 const T* __restrict__ b, T* __restrict__ y,
                                                 int channels, int height, int width, int d1,
                                                 int d2, int relu) {
    __shared__ __align__(16) float wg[kGroupWeights];

    const int groups = channels / kGroupWidth;
    const int image = blockIdx.z / groups;
    const int g = blockIdx.z - image * groups;
    const int tid = threadIdx.y * 32 + threadIdx.x;

    // Stage the group's weights: coalesced reads of the contract layout [co][ci][tap] (the
    // group's 2304 values are contiguous), scattered into the packed layout [ci][tap][co].
    const T* wsrc = w + static_cast<long long>(g) * kGroupWeights;
    for (int i = tid; i < kGroupWeights; i += kThreads) {
        const int co = i / (kGroupWidth * kTaps);
        const int rest = i - co * (kGroupWidth * kTaps);
        const int ci = rest / kTaps;
        const int tap = rest - ci * kTaps;
        wg[packed_index(ci, tap, co)] = Io<T>::to_float(wsrc[i]);
    }
    __syncthreads();

    const int row = blockIdx.y * kBlockRows + threadIdx.y;
    const int x0 = blockIdx.x * kTileW + threadIdx.x * kPix;
    if (row >= height || x0 >= width) {
        return;
    }
    const long long plane = static_cast<long long>(height) * width;
    const long long first = (static_cast<long long>(image) * channels + g * kGroupWidth) * plane;

    float acc[kPix][kGroupWidth];
#pragma unroll
    for (int p = 0; p < kPix; ++p) {
#pragma unroll
        for (int co = 0; co < kGroupWidth; ++co) {
            acc[p][co] = 0.0f;
        }
    }
    dblock_accumulate<kPix, T, DeviceRowLoader<T> >(x + first, height, width, row, x0,
                                                    group_dilation(g, groups, d1, d2), wg, acc);

    T* out = y + first + static_cast<long long>(row) * width + x0;
    const T* bias = b + g * kGroupWidth;
    const bool pair = x0 + 1 < width;
#pragma unroll
    for (int co = 0; co < kGroupWidth; ++co) {
        const float bv = Io<T>::to_float(bias[co]);
        const float v0 = dblock_finish(acc[0][co], bv, relu);
        const float v1 = dblock_finish(acc[1][co], bv, relu);
        T* o = out + co * plane;
        if (pair && pair_aligned(o)) {
            Io<T>::store2(o, v0, v1);
        } else {
            o[0] = Io<T>::from_float(v0);
            if (pair) {
                o[1] = Io<T>::from_float(v1);
            }
        }
    }
}

}  // namespace dblock
}  // namespace segdeploy

// Entry points with C names, so NVRTC users and the launcher find them without mangling.
extern "C" __global__ void __launch_bounds__(segdeploy::dblock::kThreads)
    dblock_conv_f32(const float* __restrict__ x, const float* __restrict__ w,
                    const float* __restrict__ b, float* __restrict__ y, int channels, int height,
                    int width, int d1, int d2, int relu) {
    segdeploy::dblock::dblock_conv_body<float>(x, w, b, y, channels, height, width, d1, d2, relu);
}

extern "C" __global__ void __launch_bounds__(segdeploy::dblock::kThreads)
    dblock_conv_f16(const __half* __restrict__ x, const __half* __restrict__ w,
                    const __half* __restrict__ b, __half* __restrict__ y, int channels, int height,
                    int width, int d1, int d2, int relu) {
    segdeploy::dblock::dblock_conv_body<__half>(x, w, b, y, channels, height, width, d1, d2,
                                                relu);
}

#ifndef __CUDACC_RTC__
namespace segdeploy {
namespace dblock {

dim3 launch_grid(int batch, int channels, int height, int width) {
    return dim3((width + kTileW - 1) / kTileW, (height + kBlockRows - 1) / kBlockRows,
                batch * (channels / kGroupWidth));
}

cudaError_t dblock_forward(const void* x, const void* w, const void* b, void* y, int batch,
                           int channels, int height, int width, int d1, int d2, int relu,
                           bool half, cudaStream_t stream) {
    if (batch == 0 || height == 0 || width == 0) {
        return cudaSuccess;
    }
    if (channels <= 0 || channels % (2 * kGroupWidth) != 0 || d1 < 1 || d2 < 1) {
        return cudaErrorInvalidValue;
    }
    const dim3 grid = launch_grid(batch, channels, height, width);
    if (grid.y > 65535 || grid.z > 65535) {
        return cudaErrorInvalidConfiguration;
    }
    const dim3 block(32, kBlockRows);
    if (half) {
        dblock_conv_f16<<<grid, block, 0, stream>>>(
            static_cast<const __half*>(x), static_cast<const __half*>(w),
            static_cast<const __half*>(b), static_cast<__half*>(y), channels, height, width, d1,
            d2, relu);
    } else {
        dblock_conv_f32<<<grid, block, 0, stream>>>(
            static_cast<const float*>(x), static_cast<const float*>(w),
            static_cast<const float*>(b), static_cast<float*>(y), channels, height, width, d1, d2,
            relu);
    }
    return cudaGetLastError();
}

}  // namespace dblock
}  // namespace segdeploy
#endif  // __CUDACC_RTC__
