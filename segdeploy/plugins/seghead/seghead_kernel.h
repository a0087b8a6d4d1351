// Host-side entry of the fused head kernel (seghead_kernel.cu), used by the TensorRT plugin.
#ifndef SEGDEPLOY_SEGHEAD_KERNEL_H
#define SEGDEPLOY_SEGHEAD_KERNEL_H

#include <cuda_runtime_api.h>

namespace segdeploy {
namespace seghead {

// labels (batch x out_h x out_w, uint8, or int32 where int32_labels) = ArgMax(Resize_bilinear(logits)) on `stream`, one launch.
// logits: batch x classes x height x width, float (half = false) or __half (half = true), NCHW,
// dense; classes 1 .. 255. scale_h, scale_w: ONNX Runtime's scales of the two axes (out / in for
// a Resize with sizes); align_corners: 1 for align_corners, 0 for half_pixel. Needs no workspace.
cudaError_t seghead_forward(const void* logits, void* labels, int batch, int classes, int height,
                            int width, int out_h, int out_w, float scale_h, float scale_w,
                            int align_corners, bool half, bool int32_labels, cudaStream_t stream);

}  // namespace seghead
}  // namespace segdeploy

#endif  // SEGDEPLOY_SEGHEAD_KERNEL_H
