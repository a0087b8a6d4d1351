// Runs seghead_kernel.cu's kernels on the CPU, one block after another: every thread of a block
// runs the whole body twice. The first pass fills the block's shared source labels (each thread
// its share); the second pass finds them complete, as after __syncthreads, re-stages the same
// values and writes the labels. So the kernel's own indexing (tiles, source rectangle, shared
// offsets, stores) is exercised without a GPU; the arithmetic is seghead_common.cuh's.
#define __CUDACC_RTC__ 1  // the launcher (cuda_runtime_api.h) stays out
#include "seghead_kernel.cu"

Dim3 blockIdx, threadIdx;

namespace {

template <typename T, typename OutT, typename Kernel>
void run_grid(Kernel kernel, const T* logits, OutT* labels, int batch, const segdeploy::seghead::Params& p) {
    using segdeploy::seghead::kTileH;
    using segdeploy::seghead::kTileW;
    const unsigned gx = (p.out_w + kTileW - 1) / kTileW;
    const unsigned gy = (p.out_h + kTileH - 1) / kTileH;
    for (unsigned z = 0; z < static_cast<unsigned>(batch); ++z) {
        for (unsigned by = 0; by < gy; ++by) {
            for (unsigned bx = 0; bx < gx; ++bx) {
                blockIdx = Dim3{bx, by, z};
                for (int pass = 0; pass < 2; ++pass) {
                    for (unsigned ty = 0; ty < static_cast<unsigned>(kTileH); ++ty) {
                        for (unsigned tx = 0; tx < 32; ++tx) {
                            threadIdx = Dim3{tx, ty, 0};
                            kernel(logits, labels, p);
                        }
                    }
                }
            }
        }
    }
}

}  // namespace

extern "C" int seghead_emulate(const void* logits, void* labels, int half, int int32_labels,
                               int batch, int classes, int height, int width, int out_h,
                               int out_w, float scale_h, float scale_w, int align_corners) {
    using namespace segdeploy::seghead;
    Params p;
    p.classes = classes;
    p.height = height;
    p.width = width;
    p.out_h = out_h;
    p.out_w = out_w;
    p.align_corners = align_corners;
    p.scale_h = scale_h;
    p.scale_w = scale_w;
    const float* x32 = static_cast<const float*>(logits);
    const __half* x16 = static_cast<const __half*>(logits);
    if (int32_labels) {
        int* out = static_cast<int*>(labels);
        if (half) {
            run_grid(seghead_f16_i32, x16, out, batch, p);
        } else {
            run_grid(seghead_f32_i32, x32, out, batch, p);
        }
    } else {
        unsigned char* out = static_cast<unsigned char*>(labels);
        if (half) {
            run_grid(seghead_f16_u8, x16, out, batch, p);
        } else {
            run_grid(seghead_f32_u8, x32, out, batch, p);
        }
    }
    return 0;
}
