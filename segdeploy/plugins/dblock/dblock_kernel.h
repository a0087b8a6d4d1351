// Host-side entry of the fused D-block kernel (dblock_kernel.cu), used by the TensorRT plugin.
#ifndef SEGDEPLOY_DBLOCK_KERNEL_H
#define SEGDEPLOY_DBLOCK_KERNEL_H

#include <cuda_runtime_api.h>

namespace segdeploy {
namespace dblock {

// Y = relu?(DBlockConv(X, W, B)) on `stream`, one launch for both halves.
// x, y: batch x channels x height x width; w: channels x 16 x 3 x 3 (contract layout); b: channels;
// all float (half = false) or all __half (half = true), NCHW, dense. channels must be a multiple
// of 32; output channels [0, channels/2) use dilation d1, the rest d2. Needs no workspace.
cudaError_t dblock_forward(const void* x, const void* w, const void* b, void* y, int batch,
                           int channels, int height, int width, int d1, int d2, int relu,
                           bool half, cudaStream_t stream);

}  // namespace dblock
}  // namespace segdeploy

#endif  // SEGDEPLOY_DBLOCK_KERNEL_H
