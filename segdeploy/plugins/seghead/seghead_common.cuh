// The arithmetic of the fused segmentation head, shared by the CUDA kernel (seghead_kernel.cu)
// and the host build (seghead_host.cpp, compiled as plain C++).
//
//   labels[n, y, x] = ArgMax_c Resize_bilinear(logits)[n, c, y, x]      (uint8, first index wins)
//
// without materialising the resized logits. Bilinear interpolation is a convex combination of the
// four source pixels, so where all four have the same argmax k, and k leads each of them by more
// than the rounding of the four-term sum can undo (safe_margin), the interpolated argmax is k: the
// label is read off the sources. Everywhere else all C channels are interpolated in float32 with
// ONNX Runtime's Resize arithmetic (SetupUpsampleBilinear + UpsampleBilinear of its CPU provider):
//   source coordinate  half_pixel:    (x + 0.5f) / scale - 0.5f     (0 where out_len == 1,
//                                                                    pytorch_half_pixel)
//                      align_corners: x * (in_len - 1) / (out_len - 1)   (0 where out_len == 1)
//                      identity where scale == 1
//   clamp to [0, in_len - 1]; i1 = (int)x, i2 = min(i1 + 1, in_len - 1);
//   d1 = |x - i1|, d2 = |x - i2|, both 0.5 where i1 == i2;
//   value = dx2*dy2*X11 + dx1*dy2*X21 + dx2*dy1*X12 + dx1*dy1*X22   (left to right)
// and the argmax takes the first of equal maxima, as ONNX ArgMax (select_last_index = 0) does.
// Every float operation is a separately rounded IEEE operation on both sides: the kernel uses the
// _rn intrinsics (nvcc would otherwise contract a*b + c into one FMA), the host build is compiled
// with -ffp-contract=off. So the host build, the kernel and ONNX Runtime give the same labels.
//
// This header includes nothing on the device, so NVRTC compiles it without system headers.
#ifndef SEGDEPLOY_SEGHEAD_COMMON_CUH
#define SEGDEPLOY_SEGHEAD_COMMON_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define SEGHEAD_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define SEGHEAD_HD inline
#endif

namespace segdeploy {
namespace seghead {

// Labels are uint8: classes 0 .. 254.
static const int kMaxClasses = 255;
// A source pixel whose leader is not safely ahead (or whose four sources disagree).
static const int kUnsafe = -1;

SEGHEAD_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

SEGHEAD_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

SEGHEAD_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

SEGHEAD_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

SEGHEAD_HD float abs_f(float a) { return a < 0.0f ? -a : a; }

// The two source indices along one axis and their weights (ONNX Runtime's in_x1/in_x2, dx1/dx2).
struct Tap {
    int i1;
    int i2;
    float d1;  // weight of i2
    float d2;  // weight of i1
};

// Tap of output index `o` on an axis of in_len source and out_len output positions.
// scale: ONNX Runtime's scale of the axis (out_len / in_len as float for a Resize with sizes, the
// given float for a Resize with scales); align_corners: 1 for align_corners, 0 for half_pixel.
SEGHEAD_HD Tap axis_tap(int o, int in_len, int out_len, float scale, int align_corners) {
    float x;
    const float top = static_cast<float>(in_len - 1);
    if (scale == 1.0f) {
        x = static_cast<float>(o);
    } else if (align_corners) {
        x = out_len == 1 ? 0.0f
                         : div_rn(mul_rn(static_cast<float>(o), top),
                                  static_cast<float>(out_len - 1));
    } else {
        x = out_len > 1 ? sub_rn(div_rn(add_rn(static_cast<float>(o), 0.5f), scale), 0.5f) : 0.0f;
    }
    x = x < top ? x : top;  // std::max(0, std::min(x, top)) as ONNX Runtime writes it
    x = 0.0f < x ? x : 0.0f;
    Tap t;
    t.i1 = static_cast<int>(x);
    t.i1 = t.i1 < in_len - 1 ? t.i1 : in_len - 1;
    t.i2 = t.i1 + 1 < in_len - 1 ? t.i1 + 1 : in_len - 1;
    t.d1 = abs_f(sub_rn(x, static_cast<float>(t.i1)));
    t.d2 = abs_f(sub_rn(x, static_cast<float>(t.i2)));
    if (t.i1 == t.i2) {
        t.d1 = 0.5f;
        t.d2 = 0.5f;
    }
    return t;
}

// Whether top1 leads top2 by more than the rounding of a four-term weighted sum can undo.
// The interpolated value of class k is sum_i W_i a_k,i computed with 4 products and 3 additions,
// each rounded (unit 2^-24): its error is below 2^-21.9 * sum_i W_i |a_k,i|. If every source has
// a_k - a_j > 2^-20 (|a_k| + |a_j|) for every j (the worst j is the runner-up, since the margin
// shrinks as a_j grows), the computed v_k exceeds every computed v_j: k is the graph's label.
SEGHEAD_HD bool safe_margin(float top1, float top2) {
    const float bound = mul_rn(9.5367431640625e-07f, add_rn(abs_f(top1), abs_f(top2)));  // 2^-20
    return sub_rn(top1, top2) > bound;
}

// The argmax of one source pixel if it is safe (see safe_margin), else kUnsafe.
// pixel: the pixel's value in channel 0; plane: the distance between channels (H * W).
// Loader::load(p) returns the float value at p (exact for half inputs).
template <typename T, typename Loader>
SEGHEAD_HD int source_label(const T* pixel, long long plane, int classes) {
    if (classes == 1) {
        return 0;
    }
    float top1 = Loader::load(pixel);
    float top2 = -top1;  // replaced below: classes >= 2
    int best = 0;
    bool have2 = false;
    for (int c = 1; c < classes; ++c) {
        const float v = Loader::load(pixel + c * plane);
        if (v > top1) {
            top2 = top1;
            top1 = v;
            best = c;
            have2 = true;
        } else if (!have2 || v > top2) {
            top2 = v;  // a later equal maximum lands here: margin 0, unsafe
            have2 = true;
        }
    }
    return safe_margin(top1, top2) ? best : kUnsafe;
}

// Label of one output pixel from its four sources' safe labels (a fast path), or kUnsafe.
SEGHEAD_HD int agreed_label(int l11, int l21, int l12, int l22) {
    return (l11 >= 0 && l11 == l21 && l11 == l12 && l11 == l22) ? l11 : kUnsafe;
}

// The graph's label of one output pixel: all channels interpolated as ONNX Runtime's Resize does,
// then the first index of the maximum. image: channel 0 of the image (classes planes of h x w).
template <typename T, typename Loader>
SEGHEAD_HD int interpolated_label(const T* image, int width, long long plane, int classes,
                                  const Tap& ty, const Tap& tx) {
    const float w11 = mul_rn(tx.d2, ty.d2);
    const float w21 = mul_rn(tx.d1, ty.d2);
    const float w12 = mul_rn(tx.d2, ty.d1);
    const float w22 = mul_rn(tx.d1, ty.d1);
    const long long r1 = static_cast<long long>(ty.i1) * width;
    const long long r2 = static_cast<long long>(ty.i2) * width;
    const T* p11 = image + r1 + tx.i1;
    const T* p21 = image + r1 + tx.i2;
    const T* p12 = image + r2 + tx.i1;
    const T* p22 = image + r2 + tx.i2;
    float best_v = 0.0f;
    int best = 0;
    for (int c = 0; c < classes; ++c) {
        const long long off = c * plane;
        float v = mul_rn(w11, Loader::load(p11 + off));
        v = add_rn(v, mul_rn(w21, Loader::load(p21 + off)));
        v = add_rn(v, mul_rn(w12, Loader::load(p12 + off)));
        v = add_rn(v, mul_rn(w22, Loader::load(p22 + off)));
        if (c == 0 || v > best_v) {
            best_v = v;
            best = c;
        }
    }
    return best;
}

// Default loader (host, float).
template <typename T>
struct ScalarLoader {
    SEGHEAD_HD static float load(const T* p) { return static_cast<float>(*p); }
};

}  // namespace seghead
}  // namespace segdeploy

#endif  // SEGDEPLOY_SEGHEAD_COMMON_CUH
