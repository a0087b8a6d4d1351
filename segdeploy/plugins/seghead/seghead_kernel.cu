// The fused segmentation head: labels = ArgMax(Resize_bilinear(logits)), uint8, NCHW logits in
// FP32 or FP16, in one launch that reads the low-resolution logits about once and writes only the
// labels (no full-resolution logits, no TopK).
//
// Work decomposition:
//   grid.z = N (one image per block), grid.y = output rows / kTileH, grid.x = output columns /
//   kTileW; blocks of 32 x kTileH threads; each thread owns kPix = 4 adjacent output pixels of one
//   row, so a warp writes 128 consecutive labels (one 32-bit store per lane where aligned).
//   Step 1: the block's output tile maps to a rectangle of source pixels (the taps of its first
//   and last rows and columns, monotone in the output index). The block computes each of those
//   source pixels' safe label (seghead_common.cuh: source_label reads the C channels of the pixel
//   once; adjacent threads read adjacent pixels of a channel, coalesced) into shared memory.
//   Step 2: each output pixel takes its four sources' labels from shared memory; where they agree
//   the label is written at once, elsewhere all C channels are interpolated from global memory
//   (L1/L2-resident: the block has just read them) with ONNX Runtime's arithmetic.
//   A downscaling head whose source rectangle exceeds the shared array (kRegion entries) computes
//   the four sources' labels per pixel instead: slower, same result.
// Labels: uint8, or int32 (what TensorRT's own ArgMax gives, and what a plugin's network output
// may be without a Cast layer).
// FP16: half logits are converted to float (exact) as they are loaded; all arithmetic is FP32.
//
// Compiled three ways: by nvcc into the TensorRT plugin (with the launcher below), by NVRTC in the
// compilation proofs (device code only: __CUDACC_RTC__ hides the launcher), and the arithmetic
// alone, from seghead_common.cuh, as plain C++ for the host build.
#include <cuda_fp16.h>

#include "seghead_common.cuh"

#ifndef __CUDACC_RTC__
#include "seghead_kernel.h"
#endif

namespace segdeploy {
namespace seghead {

static const int kPix = 4;     // adjacent output pixels per thread
static const int kTileH = 8;   // output rows per block (threadIdx.y)
static const int kTileW = 32 * kPix;
static const int kThreads = 32 * kTileH;
static const int kRegion = 2048;  // source labels staged per block (int16: 4 KB)

template <typename T>
struct DeviceLoader;

template <>
struct DeviceLoader<float> {
    __device__ __forceinline__ static float load(const float* p) { return __ldg(p); }
};

template <>
struct DeviceLoader<__half> {
    __device__ __forceinline__ static float load(const __half* p) {
        return __half2float(__ldg(p));
    }
};

// The kPix labels of one thread, packed one byte each (byte k = pixel x0 + k), stored as uint8 (one
// 32-bit store where aligned) or as int32 (one 128-bit store where aligned).
template <typename OutT>
struct Store;

template <>
struct Store<unsigned char> {
    __device__ __forceinline__ static void run(unsigned char* dst, unsigned int packed, int n) {
        if (n == kPix && (reinterpret_cast<unsigned long long>(dst) & 3ull) == 0) {
            *reinterpret_cast<unsigned int*>(dst) = packed;  // little-endian: byte k, pixel k
        } else {
            for (int k = 0; k < n; ++k) {
                dst[k] = static_cast<unsigned char>(packed >> (8 * k));
            }
        }
    }
};

template <>
struct Store<int> {
    __device__ __forceinline__ static void run(int* dst, unsigned int packed, int n) {
        if (n == kPix && (reinterpret_cast<unsigned long long>(dst) & 15ull) == 0) {
            *reinterpret_cast<int4*>(dst) =
                make_int4(static_cast<int>(packed & 0xffu), static_cast<int>((packed >> 8) & 0xffu),
                          static_cast<int>((packed >> 16) & 0xffu), static_cast<int>(packed >> 24));
        } else {
            for (int k = 0; k < n; ++k) {
                dst[k] = static_cast<int>((packed >> (8 * k)) & 0xffu);
            }
        }
    }
};

struct Params {
    int classes, height, width, out_h, out_w, align_corners;
    float scale_h, scale_w;
};

template <typename T>
__device__ __forceinline__ int direct_label(const T* image, long long plane, const Params& p,
                                            const Tap& ty, const Tap& tx) {
    typedef DeviceLoader<T> L;
    const T* r1 = image + static_cast<long long>(ty.i1) * p.width;
    const T* r2 = image + static_cast<long long>(ty.i2) * p.width;
    return agreed_label(source_label<T, L>(r1 + tx.i1, plane, p.classes),
                        source_label<T, L>(r1 + tx.i2, plane, p.classes),
                        source_label<T, L>(r2 + tx.i1, plane, p.classes),
                        source_label<T, L>(r2 + tx.i2, plane, p.classes));
}

template <typename T, typename OutT>
__device__ __forceinline__ void seghead_body(const T* __restrict__ logits, OutT* __restrict__ labels,
                                             Params p) {
    __shared__ short region[kRegion];
    typedef DeviceLoader<T> L;

    const long long plane = static_cast<long long>(p.height) * p.width;
    const T* image = logits + static_cast<long long>(blockIdx.z) * p.classes * plane;
    const int tid = threadIdx.y * 32 + threadIdx.x;
    const int x_first = blockIdx.x * kTileW;
    const int y_first = blockIdx.y * kTileH;
    const int x_last = min(x_first + kTileW, p.out_w) - 1;
    const int y_last = min(y_first + kTileH, p.out_h) - 1;

    // Step 1: the safe labels of the tile's source rectangle.
    const int col0 = axis_tap(x_first, p.width, p.out_w, p.scale_w, p.align_corners).i1;
    const int col1 = axis_tap(x_last, p.width, p.out_w, p.scale_w, p.align_corners).i2;
    const int row0 = axis_tap(y_first, p.height, p.out_h, p.scale_h, p.align_corners).i1;
    const int row1 = axis_tap(y_last, p.height, p.out_h, p.scale_h, p.align_corners).i2;
    const int cols = col1 - col0 + 1;
    const long long rect = static_cast<long long>(cols) * (row1 - row0 + 1);
    const bool staged = rect <= kRegion;  // the same for every thread of the block
    const int count = staged ? static_cast<int>(rect) : 0;
    if (staged) {
        for (int i = tid; i < count; i += kThreads) {
            const int r = i / cols;
            const int c = i - r * cols;
            const T* pixel = image + static_cast<long long>(row0 + r) * p.width + col0 + c;
            region[i] = static_cast<short>(source_label<T, L>(pixel, plane, p.classes));
        }
    }
    __syncthreads();

    // Step 2: kPix adjacent output pixels of one row per thread.
    const int y = y_first + threadIdx.y;
    const int x0 = x_first + threadIdx.x * kPix;
    if (y >= p.out_h || x0 >= p.out_w) {
        return;
    }
    const Tap ty = axis_tap(y, p.height, p.out_h, p.scale_h, p.align_corners);
    const int s1 = (ty.i1 - row0) * cols - col0;
    const int s2 = (ty.i2 - row0) * cols - col0;
    // The kPix labels packed into one word (byte k = pixel x0 + k); the loop is not unrolled:
    // the slow path (interpolated_label) is inlined once.
    unsigned int packed = 0;
#pragma unroll 1
    for (int k = 0; k < kPix; ++k) {
        const int x = x0 + k;
        if (x >= p.out_w) {
            break;
        }
        const Tap tx = axis_tap(x, p.width, p.out_w, p.scale_w, p.align_corners);
        int label;
        if (staged) {
            label = agreed_label(region[s1 + tx.i1], region[s1 + tx.i2], region[s2 + tx.i1],
                                 region[s2 + tx.i2]);
        } else {
            label = direct_label<T>(image, plane, p, ty, tx);
        }
        if (label < 0) {
            label = interpolated_label<T, L>(image, p.width, plane, p.classes, ty, tx);
        }
        packed |= static_cast<unsigned int>(label) << (8 * k);
    }
    OutT* dst = labels + (static_cast<long long>(blockIdx.z) * p.out_h + y) * p.out_w + x0;
    Store<OutT>::run(dst, packed, min(kPix, p.out_w - x0));
}

extern "C" __global__ void __launch_bounds__(kThreads)
    seghead_f32_u8(const float* __restrict__ logits, unsigned char* __restrict__ labels, Params p) {
    seghead_body<float, unsigned char>(logits, labels, p);
}

extern "C" __global__ void __launch_bounds__(kThreads)
    seghead_f32_i32(const float* __restrict__ logits, int* __restrict__ labels, Params p) {
    seghead_body<float, int>(logits, labels, p);
}

extern "C" __global__ void __launch_bounds__(kThreads)
    seghead_f16_u8(const __half* __restrict__ logits, unsigned char* __restrict__ labels, Params p) {
    seghead_body<__half, unsigned char>(logits, labels, p);
}

extern "C" __global__ void __launch_bounds__(kThreads)
    seghead_f16_i32(const __half* __restrict__ logits, int* __restrict__ labels, Params p) {
    seghead_body<__half, int>(logits, labels, p);
}

#ifndef __CUDACC_RTC__
cudaError_t seghead_forward(const void* logits, void* labels, int batch, int classes, int height,
                            int width, int out_h, int out_w, float scale_h, float scale_w,
                            int align_corners, bool half, bool int32_labels,
                            cudaStream_t stream) {
    if (batch < 0 || classes < 1 || classes > kMaxClasses || height < 1 || width < 1 ||
        out_h < 1 || out_w < 1 || !(scale_h > 0.0f) || !(scale_w > 0.0f) || batch > 65535) {
        return cudaErrorInvalidValue;
    }
    if (batch == 0) {
        return cudaSuccess;
    }
    Params p;
    p.classes = classes;
    p.height = height;
    p.width = width;
    p.out_h = out_h;
    p.out_w = out_w;
    p.align_corners = align_corners ? 1 : 0;
    p.scale_h = scale_h;
    p.scale_w = scale_w;
    const dim3 block(32, kTileH);
    const dim3 grid((out_w + kTileW - 1) / kTileW, (out_h + kTileH - 1) / kTileH, batch);
    const __half* x16 = static_cast<const __half*>(logits);
    const float* x32 = static_cast<const float*>(logits);
    if (int32_labels) {
        int* out = static_cast<int*>(labels);
        if (half) {
            seghead_f16_i32<<<grid, block, 0, stream>>>(x16, out, p);
        } else {
            seghead_f32_i32<<<grid, block, 0, stream>>>(x32, out, p);
        }
    } else {
        unsigned char* out = static_cast<unsigned char*>(labels);
        if (half) {
            seghead_f16_u8<<<grid, block, 0, stream>>>(x16, out, p);
        } else {
            seghead_f32_u8<<<grid, block, 0, stream>>>(x32, out, p);
        }
    }
    return cudaGetLastError();
}
#endif

}  // namespace seghead
}  // namespace segdeploy
