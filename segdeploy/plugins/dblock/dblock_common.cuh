// The arithmetic of RegSeg's split-dilation D-block stage, shared by the CUDA kernel
// (dblock_kernel.cu) and the host build (dblock_host.cpp, compiled as plain C++).
//
// The stage: X (N x C x H x W) -> Y (N x C x H x W). Output channels [0, C/2) are a grouped 3x3
// convolution of input channels [0, C/2) with dilation d1, channels [C/2, C) the same with
// dilation d2; groups of G = 16 channels (output group g reads input group g only); stride 1,
// zero padding = dilation, so H and W are kept; then + bias (folded BatchNorm) and optional ReLU.
//
// One call of dblock_accumulate computes, for one group and one run of PIX adjacent pixels of a
// row, all 16 output channels: every input value is read once per tap and used 16 times. The
// group's weights are read in the "packed" layout [ci][tap][co] (16 x 9 x 16 floats), so that the
// 16 output-channel weights of one (input channel, tap) are contiguous: the kernel keeps them in
// shared memory and reads them as four float4; the host reads the same layout from memory.
// Every product is added with fmaf, in the same order on host and device, so the FP32 host build
// and the FP32 kernel round identically.
//
// This header includes nothing, so NVRTC compiles it without any system header.
#ifndef SEGDEPLOY_DBLOCK_COMMON_CUH
#define SEGDEPLOY_DBLOCK_COMMON_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define DBLOCK_HD __host__ __device__ __forceinline__
#define DBLOCK_RESTRICT __restrict__
#else
#include <cmath>
#define DBLOCK_HD inline
#define DBLOCK_RESTRICT __restrict__
#endif

namespace segdeploy {
namespace dblock {

// Channels per group (RegSeg: 16). Fixed at compile time: 16 accumulators per pixel.
static const int kGroupWidth = 16;
// Taps of a 3x3 kernel.
static const int kTaps = 9;
// Floats of one group's packed weights: [ci][tap][co].
static const int kGroupWeights = kGroupWidth * kTaps * kGroupWidth;

DBLOCK_HD float fma_f(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
    return __fmaf_rn(a, b, c);
#else
    return std::fma(a, b, c);  // the float overload: one rounding
#endif
}

// Dilation of group g among `groups` groups: the first half uses d1, the second d2.
DBLOCK_HD int group_dilation(int g, int groups, int d1, int d2) {
    return g < groups / 2 ? d1 : d2;
}

// Index into the packed layout of one group's weights.
DBLOCK_HD int packed_index(int ci, int tap, int co) {
    return (ci * kTaps + tap) * kGroupWidth + co;
}

// Index into the contract layout W[C][16][3][3] of the full weight tensor.
DBLOCK_HD int contract_index(int c_out, int ci, int tap) {
    return (c_out * kGroupWidth + ci) * kTaps + tap;
}

// Default loader: PIX adjacent values of one input row, zero outside the image. T is float on
// the host; the kernel passes its own loader (vector loads, half inputs).
template <int PIX, typename T>
struct ScalarRowLoader {
    DBLOCK_HD static void load(const T* DBLOCK_RESTRICT row, int width, int x, float v[PIX]) {
#pragma unroll
        for (int p = 0; p < PIX; ++p) {
            const int xx = x + p;
            v[p] = (xx >= 0 && xx < width) ? static_cast<float>(row[xx]) : 0.0f;
        }
    }
};

// Accumulate the 16 output channels of one group at pixels (y, x0 .. x0 + PIX - 1).
//   plane0: the group's first input channel plane of this image (16 planes of height*width)
//   wg:     the group's packed weights (kGroupWeights floats)
//   acc:    PIX x 16 accumulators, added to (the caller zeroes them)
// Loader::load(row, width, x, v) fills v[0..PIX) with row[x .. x + PIX), zero outside [0, width).
template <int PIX, typename T, typename Loader>
DBLOCK_HD void dblock_accumulate(const T* DBLOCK_RESTRICT plane0, int height, int width, int y,
                                 int x0, int dilation, const float* DBLOCK_RESTRICT wg,
                                 float acc[PIX][kGroupWidth]) {
    const long long plane_size = static_cast<long long>(height) * width;
    for (int ci = 0; ci < kGroupWidth; ++ci) {
        const T* plane = plane0 + ci * plane_size;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const int yy = y + (ky - 1) * dilation;
            if (yy < 0 || yy >= height) {
                continue;  // a zero-padded row adds nothing
            }
            const T* row = plane + static_cast<long long>(yy) * width;
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                float v[PIX];
                Loader::load(row, width, x0 + (kx - 1) * dilation, v);
                const float* w = wg + packed_index(ci, ky * 3 + kx, 0);
#pragma unroll
                for (int co = 0; co < kGroupWidth; ++co) {
                    const float wv = w[co];
#pragma unroll
                    for (int p = 0; p < PIX; ++p) {
                        acc[p][co] = fma_f(wv, v[p], acc[p][co]);
                    }
                }
            }
        }
    }
}

// Bias and optional ReLU of one accumulated output.
DBLOCK_HD float dblock_finish(float acc, float bias, int relu) {
    const float out = acc + bias;
    return (relu && out < 0.0f) ? 0.0f : out;
}

}  // namespace dblock
}  // namespace segdeploy

#endif  // SEGDEPLOY_DBLOCK_COMMON_CUH
