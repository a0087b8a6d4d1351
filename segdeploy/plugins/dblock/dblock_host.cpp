// Host build of the D-block stage: the kernel's per-output arithmetic (dblock_common.cuh),
// compiled as plain C++ by segdeploy/plugins/dblock/host.py and called through ctypes.
// It backs the ONNX Runtime custom op for DBlockConv and the tests that compare the kernel's
// arithmetic with PyTorch.
#include <vector>

#include "dblock_common.cuh"

namespace {

using segdeploy::dblock::contract_index;
using segdeploy::dblock::dblock_accumulate;
using segdeploy::dblock::dblock_finish;
using segdeploy::dblock::group_dilation;
using segdeploy::dblock::kGroupWeights;
using segdeploy::dblock::kGroupWidth;
using segdeploy::dblock::kTaps;
using segdeploy::dblock::packed_index;
using segdeploy::dblock::ScalarRowLoader;

// Pixels per call on the host (the kernel uses the same function with its own run length).
const int kHostPix = 4;

}  // namespace

extern "C" {

// Version of this C interface; host.py checks it.
int segdeploy_dblock_abi_version() { return 1; }

// Y = DBlockConv(X, W, B) in FP32. Shapes as in the DBlockConv contract:
// x, y: n x c x h x w; weight: c x 16 x 3 x 3; bias: c. Returns 0, or a negative code for
// arguments the kernel does not take (host.py checks them first and says why).
int segdeploy_dblock_conv_f32(const float* x, const float* weight, const float* bias, float* y,
                              int n, int c, int h, int w, int d1, int d2, int relu) {
    if (n < 0 || c <= 0 || h <= 0 || w <= 0 || c % (2 * kGroupWidth) != 0 || d1 < 1 || d2 < 1) {
        return -1;
    }
    const int groups = c / kGroupWidth;
    // Repack the weights once into the kernel's per-group layout [g][ci][tap][co].
    std::vector<float> packed(static_cast<size_t>(groups) * kGroupWeights);
    for (int g = 0; g < groups; ++g) {
        for (int co = 0; co < kGroupWidth; ++co) {
            for (int ci = 0; ci < kGroupWidth; ++ci) {
                for (int tap = 0; tap < kTaps; ++tap) {
                    packed[static_cast<size_t>(g) * kGroupWeights + packed_index(ci, tap, co)] =
                        weight[contract_index(g * kGroupWidth + co, ci, tap)];
                }
            }
        }
    }
    const long long plane = static_cast<long long>(h) * w;
    for (int b = 0; b < n; ++b) {
        for (int g = 0; g < groups; ++g) {
            const int dilation = group_dilation(g, groups, d1, d2);
            const float* in = x + (static_cast<long long>(b) * c + g * kGroupWidth) * plane;
            float* out = y + (static_cast<long long>(b) * c + g * kGroupWidth) * plane;
            const float* wg = packed.data() + static_cast<size_t>(g) * kGroupWeights;
            const float* bg = bias + g * kGroupWidth;
            for (int yy = 0; yy < h; ++yy) {
                for (int x0 = 0; x0 < w; x0 += kHostPix) {
                    float acc[kHostPix][kGroupWidth] = {};
                    dblock_accumulate<kHostPix, float, ScalarRowLoader<kHostPix, float> >(
                        in, h, w, yy, x0, dilation, wg, acc);
                    for (int co = 0; co < kGroupWidth; ++co) {
                        float* row = out + co * plane + static_cast<long long>(yy) * w;
                        for (int p = 0; p < kHostPix && x0 + p < w; ++p) {
                            row[x0 + p] = dblock_finish(acc[p][co], bg[co], relu);
                        }
                    }
                }
            }
        }
    }
    return 0;
}

}  // extern "C"
