"""RegSeg's fused split-dilation D-block: CUDA kernel, TensorRT plugin DBlockConv v1, host build.

See README.md in this directory for the node contract (inputs, attributes, formats, precisions).
"""

PLUGIN_NAME = "DBlockConv"
PLUGIN_VERSION = "1"
