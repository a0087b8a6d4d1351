// TensorRT plugin SegHead, version "1": the final bilinear Resize + ArgMax of a segmentation
// network in one kernel, writing labels without the full-resolution logits.
//
//   labels = SegHead(logits)                 (see README.md beside this file for the contract)
//   input   0: logits  N x C x H x W          FP32 or FP16, linear (NCHW), 1 <= C <= 255
//   output  0: labels  N x out_h x out_w      INT32 (default) or UINT8 (uint8_labels = 1)
//   fields: out_h, out_w (int32), align_corners (int32: 1 align_corners, 0 half_pixel),
//           scale_h, scale_w (float32, optional: the Resize's scales where it was given scales;
//           0 or absent: out / in, as ONNX Runtime derives them from sizes),
//           uint8_labels (int32, optional, 0 or 1)
//
// TensorRT 8.x (8.2 on the Jetson TX2, 8.6 on the GTX 1080 Ti): IPluginV2DynamicExt and an
// IPluginCreator. TensorRT 10 and later: IPluginV3 (IPluginV3OneCore / Build / Runtime) and an
// IPluginCreatorV3One, the interface the V2 one is deprecated for. One of the two is compiled,
// by NV_TENSORRT_MAJOR, so one creator registers "SegHead" v1 when the library is loaded.
// Labels are INT32 by default: it is what TensorRT's own ArgMax (TopK) gives, and TensorRT refuses
// a network output of type UINT8 that no Cast or Identity layer produces (TensorRT issue 4282);
// uint8_labels = 1 writes UINT8 (a quarter of the bytes) where the labels feed another layer or
// TensorRT accepts it. TensorRT 8.2 has no UINT8 type: the field is refused there.
// Needs no workspace. Registered statically (REGISTER_TENSORRT_PLUGIN): load the library
// explicitly (segbuild --plugins, Runtime(..., plugins=[...]), trtexec --plugins/--staticPlugins).
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <NvInfer.h>
#include <NvInferRuntime.h>

#include "seghead_kernel.h"

#define SEGHEAD_TRT_VERSION (NV_TENSORRT_MAJOR * 100 + NV_TENSORRT_MINOR)
// DataType::kUINT8 exists from TensorRT 8.5 on.
#define SEGHEAD_HAVE_UINT8 (SEGHEAD_TRT_VERSION >= 805)

namespace segdeploy {
namespace seghead {
namespace {

char const* const kPluginName = "SegHead";
char const* const kPluginVersion = "1";
int32_t const kMaxClassesField = 255;

using nvinfer1::DataType;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IExprBuilder;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

struct Attributes {
    int32_t out_h = 0;
    int32_t out_w = 0;
    int32_t align_corners = 0;
    float scale_h = 0.0f;  // 0: out_h / in_h at enqueue
    float scale_w = 0.0f;
    int32_t uint8_labels = 0;

    bool valid() const {
        bool const labels_ok = uint8_labels == 0 || (uint8_labels == 1 && SEGHEAD_HAVE_UINT8);
        return out_h >= 1 && out_w >= 1 && (align_corners == 0 || align_corners == 1) &&
               scale_h >= 0.0f && scale_w >= 0.0f && labels_ok;
    }
};

DataType label_type(Attributes const& attrs) {
#if SEGHEAD_HAVE_UINT8
    return attrs.uint8_labels ? DataType::kUINT8 : DataType::kINT32;
#else
    (void)attrs;
    return DataType::kINT32;
#endif
}

// Fields from a collection (the ONNX parser's node attributes, or a V3 plugin's serialized
// fields). Unknown fields (plugin_version, plugin_namespace) are skipped; a known field of the
// wrong type or length fails. Returns false unless out_h and out_w are given and valid.
bool parse_fields(PluginFieldCollection const* fc, Attributes* attrs) {
    bool have_h = false;
    bool have_w = false;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        if (f.name == nullptr || f.data == nullptr) {
            continue;
        }
        bool const is_float = !std::strcmp(f.name, "scale_h") || !std::strcmp(f.name, "scale_w");
        bool const is_int = !std::strcmp(f.name, "out_h") || !std::strcmp(f.name, "out_w") ||
                            !std::strcmp(f.name, "align_corners") ||
                            !std::strcmp(f.name, "uint8_labels");
        if (!is_float && !is_int) {
            continue;
        }
        if (f.length != 1) {
            return false;
        }
        if (is_float) {
            if (f.type != PluginFieldType::kFLOAT32) {
                return false;
            }
            float const v = *static_cast<float const*>(f.data);
            (f.name[6] == 'h' ? attrs->scale_h : attrs->scale_w) = v;
            continue;
        }
        if (f.type != PluginFieldType::kINT32) {
            return false;  // TensorRT's parser converts ONNX ints to the declared kINT32
        }
        int32_t const v = *static_cast<int32_t const*>(f.data);
        if (!std::strcmp(f.name, "out_h")) {
            attrs->out_h = v;
            have_h = true;
        } else if (!std::strcmp(f.name, "out_w")) {
            attrs->out_w = v;
            have_w = true;
        } else if (!std::strcmp(f.name, "align_corners")) {
            attrs->align_corners = v;
        } else {
            attrs->uint8_labels = v;
        }
    }
    return have_h && have_w && attrs->valid();
}

// The field list a creator announces.
void declare_fields(std::vector<PluginField>* fields, PluginFieldCollection* collection) {
    fields->clear();
    fields->emplace_back("out_h", nullptr, PluginFieldType::kINT32, 1);
    fields->emplace_back("out_w", nullptr, PluginFieldType::kINT32, 1);
    fields->emplace_back("align_corners", nullptr, PluginFieldType::kINT32, 1);
    fields->emplace_back("scale_h", nullptr, PluginFieldType::kFLOAT32, 1);
    fields->emplace_back("scale_w", nullptr, PluginFieldType::kFLOAT32, 1);
    fields->emplace_back("uint8_labels", nullptr, PluginFieldType::kINT32, 1);
    collection->nbFields = static_cast<int32_t>(fields->size());
    collection->fields = fields->data();
}

// Output shape N x out_h x out_w from input N x C x H x W.
bool output_dims(Attributes const& attrs, DimsExprs const* inputs, int32_t nbInputs,
                 IExprBuilder& builder, DimsExprs* out) {
    if (nbInputs != 1 || inputs[0].nbDims != 4) {
        return false;
    }
    out->nbDims = 3;
    out->d[0] = inputs[0].d[0];
    out->d[1] = builder.constant(attrs.out_h);
    out->d[2] = builder.constant(attrs.out_w);
    return true;
}

// Formats: logits FP32 or FP16, labels of the attributes' type, all linear.
bool supports(Attributes const& attrs, int32_t pos, DataType type, TensorFormat format,
              int32_t nbInputs, int32_t nbOutputs) {
    if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1 || format != TensorFormat::kLINEAR) {
        return false;
    }
    if (pos == 0) {
        return type == DataType::kFLOAT || type == DataType::kHALF;
    }
    return type == label_type(attrs);
}

int32_t launch(Attributes const& attrs, PluginTensorDesc const* inputDesc,
               PluginTensorDesc const* outputDesc, void const* const* inputs,
               void* const* outputs, cudaStream_t stream) {
    nvinfer1::Dims const& x = inputDesc[0].dims;
    if (x.nbDims != 4 || x.d[1] < 1 || x.d[1] > kMaxClassesField || x.d[2] < 1 || x.d[3] < 1) {
        return 1;
    }
    int const h = static_cast<int>(x.d[2]);
    int const w = static_cast<int>(x.d[3]);
    // ONNX Runtime's scale for a Resize with sizes: float(out) / float(in).
    float const sh = attrs.scale_h > 0.0f ? attrs.scale_h
                                          : static_cast<float>(attrs.out_h) / static_cast<float>(h);
    float const sw = attrs.scale_w > 0.0f ? attrs.scale_w
                                          : static_cast<float>(attrs.out_w) / static_cast<float>(w);
    bool const half = inputDesc[0].type == DataType::kHALF;
    bool const int32_labels = outputDesc[0].type == DataType::kINT32;
    cudaError_t const status =
        seghead_forward(inputs[0], outputs[0], static_cast<int>(x.d[0]), static_cast<int>(x.d[1]),
                        h, w, attrs.out_h, attrs.out_w, sh, sw, attrs.align_corners, half,
                        int32_labels, stream);
    return status == cudaSuccess ? 0 : 1;
}

#if NV_TENSORRT_MAJOR < 10
// ----------------------------------------------------------------------------------------------
// TensorRT 8.x: IPluginV2DynamicExt.

// Serialized form: magic, format version, out_h, out_w, align_corners, scale_h and scale_w (their
// float bits), uint8_labels.
int32_t const kMagic = 0x44485353;  // "SSHD"
int32_t const kFormat = 1;
int32_t const kSerializedInts = 8;

using nvinfer1::IPluginV2;
using nvinfer1::IPluginV2DynamicExt;

class SegHeadPlugin : public IPluginV2DynamicExt {
public:
    explicit SegHeadPlugin(Attributes const& attrs) : attrs_(attrs) {}

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
        int32_t values[kSerializedInts] = {kMagic, kFormat, attrs_.out_h, attrs_.out_w,
                                           attrs_.align_corners, 0, 0, attrs_.uint8_labels};
        std::memcpy(&values[5], &attrs_.scale_h, sizeof(float));
        std::memcpy(&values[6], &attrs_.scale_w, sizeof(float));
        std::memcpy(buffer, values, sizeof(values));
    }
    void destroy() noexcept override { delete this; }
    void setPluginNamespace(char const* ns) noexcept override { namespace_ = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return namespace_.c_str(); }

    // --- IPluginV2Ext ---
    DataType getOutputDataType(int32_t index, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        (void)index;
        (void)inputTypes;
        (void)nbInputs;
        return label_type(attrs_);
    }

    // --- IPluginV2DynamicExt ---
    IPluginV2DynamicExt* clone() const noexcept override {
        SegHeadPlugin* copy = new (std::nothrow) SegHeadPlugin(attrs_);
        if (copy != nullptr) {
            copy->setPluginNamespace(namespace_.c_str());
        }
        return copy;
    }

    DimsExprs getOutputDimensions(int32_t outputIndex, DimsExprs const* inputs, int32_t nbInputs,
                                  IExprBuilder& exprBuilder) noexcept override {
        DimsExprs out;
        if (outputIndex != 0 || !output_dims(attrs_, inputs, nbInputs, exprBuilder, &out)) {
            out.nbDims = -1;
        }
        return out;
    }

    bool supportsFormatCombination(int32_t pos, PluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        return supports(attrs_, pos, inOut[pos].type, inOut[pos].format, nbInputs, nbOutputs);
    }

    void configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                         DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override {
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
        (void)workspace;
        return launch(attrs_, inputDesc, outputDesc, inputs, outputs, stream);
    }

private:
    Attributes attrs_;
    std::string namespace_;
};

class SegHeadCreator : public nvinfer1::IPluginCreator {
public:
    SegHeadCreator() { declare_fields(&fields_, &collection_); }

    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &collection_; }

    IPluginV2* createPlugin(char const* name, PluginFieldCollection const* fc) noexcept override {
        (void)name;
        Attributes attrs;
        if (!parse_fields(fc, &attrs)) {
            return nullptr;
        }
        return make(attrs);
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
        attrs.out_h = values[2];
        attrs.out_w = values[3];
        attrs.align_corners = values[4];
        std::memcpy(&attrs.scale_h, &values[5], sizeof(float));
        std::memcpy(&attrs.scale_w, &values[6], sizeof(float));
        attrs.uint8_labels = values[7];
        return attrs.valid() ? make(attrs) : nullptr;
    }

    void setPluginNamespace(char const* ns) noexcept override { namespace_ = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return namespace_.c_str(); }

private:
    IPluginV2* make(Attributes const& attrs) {
        SegHeadPlugin* plugin = new (std::nothrow) SegHeadPlugin(attrs);
        if (plugin != nullptr) {
            plugin->setPluginNamespace(namespace_.c_str());
        }
        return plugin;
    }

    std::vector<PluginField> fields_;
    PluginFieldCollection collection_;
    std::string namespace_;
};

#else
// ----------------------------------------------------------------------------------------------
// TensorRT 10 and later: IPluginV3 with the core, build and runtime capabilities in one object.

using nvinfer1::IPluginCapability;
using nvinfer1::IPluginResourceContext;
using nvinfer1::IPluginV3;
using nvinfer1::PluginCapabilityType;
using nvinfer1::TensorRTPhase;

class SegHeadPlugin : public IPluginV3,
                      public nvinfer1::IPluginV3OneCore,
                      public nvinfer1::IPluginV3OneBuild,
                      public nvinfer1::IPluginV3OneRuntime {
public:
    explicit SegHeadPlugin(Attributes const& attrs) : attrs_(attrs) { refresh_fields(); }
    SegHeadPlugin(SegHeadPlugin const& other)
        : IPluginV3(), IPluginV3OneCore(), IPluginV3OneBuild(), IPluginV3OneRuntime(),
          attrs_(other.attrs_), namespace_(other.namespace_) {
        refresh_fields();
    }
    SegHeadPlugin& operator=(SegHeadPlugin const&) = delete;
    ~SegHeadPlugin() override = default;

    void setPluginNamespace(char const* ns) { namespace_ = ns ? ns : ""; }

    // --- IPluginV3 ---
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
            case PluginCapabilityType::kCORE:
                return static_cast<IPluginV3OneCore*>(this);
            case PluginCapabilityType::kBUILD:
                return static_cast<IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME:
                return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override { return new (std::nothrow) SegHeadPlugin(*this); }

    // --- IPluginV3OneCore ---
    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return namespace_.c_str(); }

    // --- IPluginV3OneBuild ---
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override {
        (void)in;
        (void)out;
        return (nbInputs == 1 && nbOutputs == 1) ? 0 : 1;
    }
    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                               DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        (void)inputTypes;
        if (nbOutputs != 1 || nbInputs != 1) {
            return 1;
        }
        outputTypes[0] = label_type(attrs_);
        return 0;
    }
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override {
        (void)shapeInputs;
        (void)nbShapeInputs;
        if (nbOutputs != 1 || !output_dims(attrs_, inputs, nbInputs, exprBuilder, &outputs[0])) {
            return 1;
        }
        return 0;
    }
    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                   int32_t nbInputs, int32_t nbOutputs) noexcept override {
        return supports(attrs_, pos, inOut[pos].desc.type, inOut[pos].desc.format, nbInputs,
                        nbOutputs);
    }
    int32_t getNbOutputs() const noexcept override { return 1; }
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            DynamicPluginTensorDesc const* outputs,
                            int32_t nbOutputs) const noexcept override {
        (void)inputs;
        (void)nbInputs;
        (void)outputs;
        (void)nbOutputs;
        return 0;
    }

    // --- IPluginV3OneRuntime ---
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                          PluginTensorDesc const* out, int32_t nbOutputs) noexcept override {
        (void)out;
        return (nbInputs == 1 && nbOutputs == 1 && in[0].dims.nbDims == 4) ? 0 : 1;
    }
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override {
        (void)workspace;
        return launch(attrs_, inputDesc, outputDesc, inputs, outputs, stream);
    }
    IPluginV3* attachToContext(IPluginResourceContext* context) noexcept override {
        (void)context;
        return clone();
    }
    PluginFieldCollection const* getFieldsToSerialize() noexcept override {
        refresh_fields();
        return &collection_;
    }

private:
    // The fields TensorRT stores in the plan; the creator reads them back at runtime.
    void refresh_fields() {
        fields_.clear();
        fields_.emplace_back("out_h", &attrs_.out_h, PluginFieldType::kINT32, 1);
        fields_.emplace_back("out_w", &attrs_.out_w, PluginFieldType::kINT32, 1);
        fields_.emplace_back("align_corners", &attrs_.align_corners, PluginFieldType::kINT32, 1);
        fields_.emplace_back("scale_h", &attrs_.scale_h, PluginFieldType::kFLOAT32, 1);
        fields_.emplace_back("scale_w", &attrs_.scale_w, PluginFieldType::kFLOAT32, 1);
        fields_.emplace_back("uint8_labels", &attrs_.uint8_labels, PluginFieldType::kINT32, 1);
        collection_.nbFields = static_cast<int32_t>(fields_.size());
        collection_.fields = fields_.data();
    }

    Attributes attrs_;
    std::string namespace_;
    std::vector<PluginField> fields_;
    PluginFieldCollection collection_;
};

class SegHeadCreator : public nvinfer1::IPluginCreatorV3One {
public:
    SegHeadCreator() { declare_fields(&fields_, &collection_); }

    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return namespace_.c_str(); }
    PluginFieldCollection const* getFieldNames() noexcept override { return &collection_; }

    // The same fields at build time (from the ONNX node) and at runtime (from the plan).
    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc,
                            TensorRTPhase phase) noexcept override {
        (void)name;
        (void)phase;
        Attributes attrs;
        if (!parse_fields(fc, &attrs)) {
            return nullptr;
        }
        SegHeadPlugin* plugin = new (std::nothrow) SegHeadPlugin(attrs);
        if (plugin != nullptr) {
            plugin->setPluginNamespace(namespace_.c_str());
        }
        return plugin;
    }

private:
    std::vector<PluginField> fields_;
    PluginFieldCollection collection_;
    std::string namespace_;
};
#endif

}  // namespace
}  // namespace seghead
}  // namespace segdeploy

// Registers the creator with TensorRT's plugin registry when the library is loaded.
using SegdeploySegHeadCreator = segdeploy::seghead::SegHeadCreator;
REGISTER_TENSORRT_PLUGIN(SegdeploySegHeadCreator);
