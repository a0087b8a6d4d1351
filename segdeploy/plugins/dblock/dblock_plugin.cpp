// TensorRT plugin DBlockConv, version "1": RegSeg's split-dilation D-block stage in one kernel.
//
//   Y = relu?(DBlockConv(X, W, B))      (see README.md beside this file for the whole contract)
//   inputs  0: X  N x C x H x W       FP32 or FP16, linear (NCHW)
//           1: W  C x 16 x 3 x 3      same type; channels [0, C/2) dilation d1, [C/2, C) d2
//           2: B  C                   same type (folded BatchNorm bias)
//   output  0: Y  N x C x H x W       same type
//   fields: dilations (int32 x 2), group_width (int32, 16), relu (int32, 0 or 1)
//
// One IPluginV2DynamicExt implementation for TensorRT 8.2 (Jetson TX2), 8.6 (GTX 1080 Ti) and
// 10.x / 11.x (T4 and newer; the interface is deprecated there but still built and run). The
// weights are inputs, not fields: TensorRT's ONNX parser turns a plugin node's initializer inputs
// into constants, the builder converts them to the engine's precision with the activations, and
// the plan stores them once (as constants), while the plugin serializes only its 16 bytes of
// attributes. Needs no workspace. Registered statically (REGISTER_TENSORRT_PLUGIN) when the
// library is loaded: load it explicitly (segbuild --plugins, Runtime(..., plugins=[...]),
// trtexec --plugins / --staticPlugins).
//
// TensorRT 10 and newer also get the IPluginV3 form (dblock_plugin_v3.cpp); the CMake build picks
// one by the installed TensorRT's major version. Both share dblock_plugin_fields.h.
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "dblock_plugin_fields.h"

namespace segdeploy {
namespace dblock {
namespace {

// Serialized form: magic, format version, d1, d2, group_width, relu (int32 each).
int32_t const kMagic = 0x4b4c4244;  // "DBLK"
int32_t const kFormat = 1;
int32_t const kSerializedInts = 6;

using nvinfer1::DataType;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IExprBuilder;
using nvinfer1::IPluginV2;
using nvinfer1::IPluginV2DynamicExt;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;

class DBlockConvPlugin : public IPluginV2DynamicExt {
public:
    explicit DBlockConvPlugin(Attributes const& attrs) : attrs_(attrs) {}

    // --- IPluginV2 ---
    char const* getPluginType() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override {}
    size_t getSerializationSize() const noexcept override {
        return kSerializedInts * sizeof(int32_t);
    }
    void serialize(void* buffer) const noexcept override {
        int32_t const values[kSerializedInts] = {kMagic,          kFormat,   attrs_.d1,
                                                 attrs_.d2,       attrs_.group_width,
                                                 attrs_.relu};
        std::memcpy(buffer, values, sizeof(values));
    }
    void destroy() noexcept override { delete this; }
    void setPluginNamespace(char const* ns) noexcept override { namespace_ = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return namespace_.c_str(); }

    // --- IPluginV2Ext ---
    DataType getOutputDataType(int32_t index, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        return (index == 0 && nbInputs > 0) ? inputTypes[0] : DataType::kFLOAT;
    }

    // --- IPluginV2DynamicExt ---
    IPluginV2DynamicExt* clone() const noexcept override {
        DBlockConvPlugin* copy = new (std::nothrow) DBlockConvPlugin(attrs_);
        if (copy != nullptr) {
            copy->setPluginNamespace(namespace_.c_str());
        }
        return copy;
    }

    DimsExprs getOutputDimensions(int32_t outputIndex, DimsExprs const* inputs, int32_t nbInputs,
                                  IExprBuilder& exprBuilder) noexcept override {
        (void)exprBuilder;
        if (outputIndex != 0 || nbInputs != 3) {
            DimsExprs none;
            none.nbDims = -1;
            return none;
        }
        return inputs[0];  // same size: stride 1, padding = dilation
    }

    bool supportsFormatCombination(int32_t pos, PluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != 3 || nbOutputs != 1 || pos < 0 || pos >= 4) {
            return false;
        }
        return format_ok(pos, inOut[pos], inOut[0].type);  // W, B, Y follow X's precision
    }

    void configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                         DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override {
        // Shapes are checked where they are known (enqueue); nothing to choose here.
        (void)in;
        (void)nbInputs;
        (void)out;
        (void)nbOutputs;
    }

    size_t getWorkspaceSize(PluginTensorDesc const* inputs, int32_t nbInputs,
                            PluginTensorDesc const* outputs,
                            int32_t nbOutputs) const noexcept override {
        (void)inputs;
        (void)nbInputs;
        (void)outputs;
        (void)nbOutputs;
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override {
        (void)outputDesc;
        (void)workspace;
        return launch(attrs_, inputDesc, inputs, outputs, stream);
    }

private:
    Attributes attrs_;
    std::string namespace_;
};

class DBlockConvCreator : public nvinfer1::IPluginCreator {
public:
    DBlockConvCreator() {
        fields_.emplace_back("dilations", nullptr, PluginFieldType::kINT32, 2);
        fields_.emplace_back("group_width", nullptr, PluginFieldType::kINT32, 1);
        fields_.emplace_back("relu", nullptr, PluginFieldType::kINT32, 1);
        collection_.nbFields = static_cast<int32_t>(fields_.size());
        collection_.fields = fields_.data();
    }

    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &collection_; }

    IPluginV2* createPlugin(char const* name, PluginFieldCollection const* fc) noexcept override {
        (void)name;
        Attributes attrs;
        if (!read_fields(fc, &attrs)) {
            return nullptr;
        }
        DBlockConvPlugin* plugin = new (std::nothrow) DBlockConvPlugin(attrs);
        if (plugin != nullptr) {
            plugin->setPluginNamespace(namespace_.c_str());
        }
        return plugin;
    }

    IPluginV2* deserializePlugin(char const* name, void const* data,
                                 size_t length) noexcept override {
        (void)name;
        int32_t values[kSerializedInts];
        if (data == nullptr || length != sizeof(values)) {
            return nullptr;
        }
        std::memcpy(values, data, sizeof(values));
        if (values[0] != kMagic || values[1] != kFormat) {
            return nullptr;
        }
        Attributes attrs;
        attrs.d1 = values[2];
        attrs.d2 = values[3];
        attrs.group_width = values[4];
        attrs.relu = values[5];
        if (!attrs.valid()) {
            return nullptr;
        }
        DBlockConvPlugin* plugin = new (std::nothrow) DBlockConvPlugin(attrs);
        if (plugin != nullptr) {
            plugin->setPluginNamespace(namespace_.c_str());
        }
        return plugin;
    }

    void setPluginNamespace(char const* ns) noexcept override { namespace_ = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return namespace_.c_str(); }

private:
    std::vector<PluginField> fields_;
    PluginFieldCollection collection_;
    std::string namespace_;
};

}  // namespace
}  // namespace dblock
}  // namespace segdeploy

// Registers the creator with TensorRT's plugin registry when the library is loaded.
using SegdeployDBlockConvCreator = segdeploy::dblock::DBlockConvCreator;
REGISTER_TENSORRT_PLUGIN(SegdeployDBlockConvCreator);
