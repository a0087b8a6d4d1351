"""The fused segmentation head: bilinear Resize + ArgMax to uint8 labels in one CUDA kernel.

TensorRT plugin ``SegHead`` v1 (IPluginV2DynamicExt for TensorRT 8.x, IPluginV3 for 10 and
later), the kernel's host build, and the compilation proofs. See README.md in this directory.
"""

# the plugin's identity is defined once, where segbuild's graph rewrite (engines) needs it
from ...engines.seghead_graph import PLUGIN_NAME, PLUGIN_VERSION  # noqa: F401
