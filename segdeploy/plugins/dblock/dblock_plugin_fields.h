// What both forms of the DBlockConv plugin share (dblock_plugin.cpp: IPluginV2DynamicExt for
// TensorRT 8.x; dblock_plugin_v3.cpp: IPluginV3 for TensorRT >= 10): the name, the attributes and
// how they are read from plugin fields, the shape contract enqueue checks, and the launch.
#ifndef SEGDEPLOY_DBLOCK_PLUGIN_FIELDS_H
#define SEGDEPLOY_DBLOCK_PLUGIN_FIELDS_H

#include <cstdint>
#include <cstring>

#include <NvInfer.h>
#include <NvInferRuntime.h>

#include "dblock_kernel.h"

namespace segdeploy {
namespace dblock {

char const* const kPluginName = "DBlockConv";
char const* const kPluginVersion = "1";
int32_t const kGroupWidthField = 16;

struct Attributes {
    int32_t d1 = 1;
    int32_t d2 = 1;
    int32_t group_width = kGroupWidthField;
    int32_t relu = 1;

    bool valid() const {
        return d1 >= 1 && d2 >= 1 && group_width == kGroupWidthField && (relu == 0 || relu == 1);
    }
};

// Reads dilations (int32 x 2, required), group_width and relu (int32 x 1) from `fc`; other
// fields (the parser's plugin_version / plugin_namespace) are ignored. False when a field of
// ours has another type or length, dilations are missing, or the values are out of contract.
inline bool read_fields(nvinfer1::PluginFieldCollection const* fc, Attributes* attrs) {
    bool have_dilations = false;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        nvinfer1::PluginField const& f = fc->fields[i];
        if (f.name == nullptr || f.data == nullptr) {
            continue;
        }
        bool const ours = !std::strcmp(f.name, "dilations") ||
                          !std::strcmp(f.name, "group_width") || !std::strcmp(f.name, "relu");
        if (f.type != nvinfer1::PluginFieldType::kINT32) {
            if (ours) {
                return false;  // TensorRT's parser converts ints to the declared kINT32
            }
            continue;
        }
        int32_t const* v = static_cast<int32_t const*>(f.data);
        if (!std::strcmp(f.name, "dilations")) {
            if (f.length != 2) {
                return false;
            }
            attrs->d1 = v[0];
            attrs->d2 = v[1];
            have_dilations = true;
        } else if (!std::strcmp(f.name, "group_width") && f.length == 1) {
            attrs->group_width = v[0];
        } else if (!std::strcmp(f.name, "relu") && f.length == 1) {
            attrs->relu = v[0];
        }
    }
    return have_dilations && attrs->valid();
}

// The contract enqueue relies on: X N x C x H x W, W C x 16 x 3 x 3, B C, C a multiple of 32.
inline bool shapes_ok(nvinfer1::Dims const& x, nvinfer1::Dims const& w, nvinfer1::Dims const& b) {
    return x.nbDims == 4 && w.nbDims == 4 && w.d[0] == x.d[1] && w.d[1] == kGroupWidthField &&
           w.d[2] == 3 && w.d[3] == 3 && b.nbDims == 1 && b.d[0] == x.d[1] &&
           x.d[1] % (2 * kGroupWidthField) == 0;
}

// One launch for the whole stage; 0 on success, 1 on a bad shape or a CUDA error.
inline int32_t launch(Attributes const& attrs, nvinfer1::PluginTensorDesc const* inputDesc,
                      void const* const* inputs, void* const* outputs, cudaStream_t stream) {
    nvinfer1::Dims const& x = inputDesc[0].dims;
    if (!shapes_ok(x, inputDesc[1].dims, inputDesc[2].dims)) {
        return 1;
    }
    bool const half = inputDesc[0].type == nvinfer1::DataType::kHALF;
    cudaError_t const status =
        dblock_forward(inputs[0], inputs[1], inputs[2], outputs[0], static_cast<int>(x.d[0]),
                       static_cast<int>(x.d[1]), static_cast<int>(x.d[2]),
                       static_cast<int>(x.d[3]), attrs.d1, attrs.d2, attrs.relu, half, stream);
    return status == cudaSuccess ? 0 : 1;
}

// Position `pos` (0..3: X, W, B, Y) described by `desc`: X in FP32 or FP16, linear; the weights,
// bias and output in X's type (`x_type`).
inline bool format_ok(int32_t pos, nvinfer1::PluginTensorDesc const& desc,
                      nvinfer1::DataType x_type) {
    if (pos < 0 || pos >= 4 || desc.format != nvinfer1::TensorFormat::kLINEAR) {
        return false;
    }
    if (pos == 0) {
        return desc.type == nvinfer1::DataType::kFLOAT || desc.type == nvinfer1::DataType::kHALF;
    }
    return desc.type == x_type;
}

}  // namespace dblock
}  // namespace segdeploy

#endif  // SEGDEPLOY_DBLOCK_PLUGIN_FIELDS_H
