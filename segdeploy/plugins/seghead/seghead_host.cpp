// Host build of the fused segmentation head: the kernel's arithmetic (seghead_common.cuh) compiled
// as plain C++ by segdeploy/plugins/seghead/host.py and called through ctypes. It is the reference
// the SegHead graph is checked with in ONNX Runtime, and the tests compare it with ONNX Runtime's
// Resize + ArgMax. It follows the kernel's two steps: the safe label of every source pixel, then
// every output pixel from its four sources, interpolating all classes where they do not agree.
#include <cstdint>
#include <vector>

#include "seghead_common.cuh"

namespace {

using segdeploy::seghead::agreed_label;
using segdeploy::seghead::axis_tap;
using segdeploy::seghead::interpolated_label;
using segdeploy::seghead::kMaxClasses;
using segdeploy::seghead::ScalarLoader;
using segdeploy::seghead::source_label;
using segdeploy::seghead::Tap;

}  // namespace

extern "C" {

// Version of this C interface; host.py checks it.
int segdeploy_seghead_abi_version() { return 1; }

// labels (n x out_h x out_w, uint8) = ArgMax(Resize(x)) for x: n x c x h x w float32.
// scale_h, scale_w: ONNX Runtime's scales of the two axes; align_corners: 1 or 0 (half_pixel).
// *slow receives the number of output pixels that needed all classes interpolated.
// Returns 0, or -1 for arguments the kernel does not take (host.py checks them first).
int segdeploy_seghead_f32(const float* x, uint8_t* labels, int n, int c, int h, int w, int out_h,
                          int out_w, float scale_h, float scale_w, int align_corners,
                          long long* slow) {
    if (n < 0 || c < 1 || c > kMaxClasses || h < 1 || w < 1 || out_h < 1 || out_w < 1 ||
        !(scale_h > 0.0f) || !(scale_w > 0.0f)) {
        return -1;
    }
    std::vector<Tap> ty(out_h), tx(out_w);
    for (int y = 0; y < out_h; ++y) {
        ty[y] = axis_tap(y, h, out_h, scale_h, align_corners);
    }
    for (int xo = 0; xo < out_w; ++xo) {
        tx[xo] = axis_tap(xo, w, out_w, scale_w, align_corners);
    }
    const long long plane = static_cast<long long>(h) * w;
    std::vector<int> safe(static_cast<size_t>(plane));
    long long count = 0;
    for (int b = 0; b < n; ++b) {
        const float* image = x + static_cast<long long>(b) * c * plane;
        for (long long i = 0; i < plane; ++i) {
            safe[static_cast<size_t>(i)] =
                source_label<float, ScalarLoader<float> >(image + i, plane, c);
        }
        uint8_t* out = labels + static_cast<long long>(b) * out_h * out_w;
        for (int y = 0; y < out_h; ++y) {
            const Tap& a = ty[y];
            const int* s1 = safe.data() + static_cast<long long>(a.i1) * w;
            const int* s2 = safe.data() + static_cast<long long>(a.i2) * w;
            for (int xo = 0; xo < out_w; ++xo) {
                const Tap& t = tx[xo];
                int label = agreed_label(s1[t.i1], s1[t.i2], s2[t.i1], s2[t.i2]);
                if (label < 0) {
                    label = interpolated_label<float, ScalarLoader<float> >(image, w, plane, c, a,
                                                                             t);
                    ++count;
                }
                out[static_cast<long long>(y) * out_w + xo] = static_cast<uint8_t>(label);
            }
        }
    }
    if (slow != 0) {
        *slow = count;
    }
    return 0;
}

}  // extern "C"
