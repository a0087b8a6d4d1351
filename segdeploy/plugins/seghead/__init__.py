"""The fused segmentation head: bilinear Resize + ArgMax to uint8 labels in one CUDA kernel.

TensorRT plugin ``SegHead`` v1 (IPluginV2DynamicExt for TensorRT 8.x, IPluginV3 for 10 and
later), the kernel's host build, and the compilation proofs. See README.md in this directory.
"""

PLUGIN_NAME = "SegHead"
PLUGIN_VERSION = "1"
