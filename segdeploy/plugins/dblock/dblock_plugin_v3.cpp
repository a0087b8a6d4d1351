// TensorRT plugin DBlockConv, version "1", as IPluginV3 (TensorRT 10 and newer): the same contract
// as dblock_plugin.cpp (see README.md), in the interface TensorRT 10 introduced when it
// deprecated IPluginV2DynamicExt.
//
//   DBlockConvV3 : IPluginV3 + IPluginV3OneCore (name, version, namespace)
//                            + IPluginV3OneBuild (types, shapes, formats; no workspace, no tactics)
//                            + IPluginV3OneRuntime (enqueue, attachToContext, fields to serialize)
//   DBlockConvCreatorV3 : IPluginCreatorV3One (fields: dilations, group_width, relu)
//
// Serialization is the V3 way: the plan stores the fields getFieldsToSerialize returns, and the
// creator rebuilds the plugin from them at run time (TensorRTPhase::kRUNTIME) through the same
// read_fields as at build time, so both phases validate alike. The library is built from this
// file or from dblock_plugin.cpp, never both (CMakeLists.txt: DBLOCK_PLUGIN_API).
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "dblock_plugin_fields.h"

namespace segdeploy {
namespace dblock {
namespace {

using nvinfer1::DataType;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IExprBuilder;
using nvinfer1::IPluginCapability;
using nvinfer1::IPluginResourceContext;
using nvinfer1::IPluginV3;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorRTPhase;

class DBlockConvV3 : public IPluginV3,
                     public nvinfer1::IPluginV3OneCore,
                     public nvinfer1::IPluginV3OneBuild,
                     public nvinfer1::IPluginV3OneRuntime {
public:
    DBlockConvV3(Attributes const& attrs, std::string const& ns) : attrs_(attrs), namespace_(ns) {
        // The fields the plan stores: they point into attrs_, so the plugin must not move.
        dilations_[0] = attrs_.d1;
        dilations_[1] = attrs_.d2;
        fields_.emplace_back("dilations", dilations_, PluginFieldType::kINT32, 2);
        fields_.emplace_back("group_width", &attrs_.group_width, PluginFieldType::kINT32, 1);
        fields_.emplace_back("relu", &attrs_.relu, PluginFieldType::kINT32, 1);
        collection_.nbFields = static_cast<int32_t>(fields_.size());
        collection_.fields = fields_.data();
    }

    DBlockConvV3(DBlockConvV3 const&) = delete;
    DBlockConvV3& operator=(DBlockConvV3 const&) = delete;

    // --- IPluginV3 ---
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
            case PluginCapabilityType::kCORE:
                return static_cast<nvinfer1::IPluginV3OneCore*>(this);
            case PluginCapabilityType::kBUILD:
                return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME:
                return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    IPluginV3* clone() noexcept override {
        return new (std::nothrow) DBlockConvV3(attrs_, namespace_);
    }

    // --- IPluginV3OneCore ---
    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return namespace_.c_str(); }

    // --- IPluginV3OneBuild ---
    int32_t getNbOutputs() const noexcept override { return 1; }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override {
        (void)in;
        (void)out;
        return nbInputs == 3 && nbOutputs == 1 ? 0 : 1;
    }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                               DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (nbOutputs != 1 || nbInputs != 3) {
            return 1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override {
        (void)shapeInputs;
        (void)nbShapeInputs;
        (void)exprBuilder;
        if (nbInputs != 3 || nbOutputs != 1) {
            return 1;
        }
        outputs[0] = inputs[0];  // same size: stride 1, padding = dilation
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                   int32_t nbInputs, int32_t nbOutputs) noexcept override {
        if (nbInputs != 3 || nbOutputs != 1 || pos < 0 || pos >= 4) {
            return false;
        }
        return format_ok(pos, inOut[pos].desc, inOut[0].desc.type);
    }

    // --- IPluginV3OneRuntime ---
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override {
        (void)out;
        if (nbInputs != 3 || nbOutputs != 1) {
            return 1;
        }
        return shapes_ok(in[0].dims, in[1].dims, in[2].dims) ? 0 : 1;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override {
        (void)outputDesc;
        (void)workspace;
        return launch(attrs_, inputDesc, inputs, outputs, stream);
    }

    IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override {
        (void)context;  // no per-context resources: a copy serves each execution context
        return clone();
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &collection_; }

private:
    Attributes attrs_;
    std::string namespace_;
    int32_t dilations_[2];
    std::vector<PluginField> fields_;
    PluginFieldCollection collection_;
};

class DBlockConvCreatorV3 : public nvinfer1::IPluginCreatorV3One {
public:
    DBlockConvCreatorV3() {
        fields_.emplace_back("dilations", nullptr, PluginFieldType::kINT32, 2);
        fields_.emplace_back("group_width", nullptr, PluginFieldType::kINT32, 1);
        fields_.emplace_back("relu", nullptr, PluginFieldType::kINT32, 1);
        collection_.nbFields = static_cast<int32_t>(fields_.size());
        collection_.fields = fields_.data();
    }

    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return namespace_.c_str(); }
    PluginFieldCollection const* getFieldNames() noexcept override { return &collection_; }

    // Build time: the ONNX node's attributes; run time: the fields the plan stored. Both go
    // through read_fields, so a damaged plan is refused like a bad node.
    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc,
                            TensorRTPhase phase) noexcept override {
        (void)name;
        (void)phase;
        Attributes attrs;
        if (!read_fields(fc, &attrs)) {
            return nullptr;
        }
        return new (std::nothrow) DBlockConvV3(attrs, namespace_);
    }

    // The registry sets the namespace by registering the creator under it (registerCreator).
    void setPluginNamespace(char const* ns) noexcept { namespace_ = ns ? ns : ""; }

private:
    std::vector<PluginField> fields_;
    PluginFieldCollection collection_;
    std::string namespace_;
};

}  // namespace
}  // namespace dblock
}  // namespace segdeploy

// Registers the creator with TensorRT's plugin registry when the library is loaded.
using SegdeployDBlockConvCreatorV3 = segdeploy::dblock::DBlockConvCreatorV3;
REGISTER_TENSORRT_PLUGIN(SegdeployDBlockConvCreatorV3);
