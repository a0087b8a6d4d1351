// Exercises seghead_plugin.cpp against real TensorRT headers without TensorRT's libraries or a
// GPU: the creator's fields, creation and refusal, (de)serialization round trips, formats, output
// types, and what enqueue passes to the kernel (seghead_forward is replaced by a recorder).
// The registration macro is redefined to hand the creator to this harness instead of TensorRT's
// registry. Prints one line per failed check; exit status 0 when all pass.
#include <NvInfer.h>
#include <NvInferRuntime.h>

#include <cstdio>
#include <cstring>
#include <type_traits>
#include <vector>

#undef REGISTER_TENSORRT_PLUGIN
#define REGISTER_TENSORRT_PLUGIN(name) \
    name* harness_creator() { return new name(); }

#include "seghead_plugin.cpp"

namespace segdeploy {
namespace seghead {

struct ForwardCall {
    int calls = 0;
    int batch, classes, height, width, out_h, out_w, align_corners;
    float scale_h, scale_w;
    bool half, int32_labels;
} recorded;

cudaError_t seghead_forward(const void*, void*, int batch, int classes, int height, int width,
                            int out_h, int out_w, float scale_h, float scale_w, int align_corners,
                            bool half, bool int32_labels, cudaStream_t) {
    recorded.calls += 1;
    recorded.batch = batch;
    recorded.classes = classes;
    recorded.height = height;
    recorded.width = width;
    recorded.out_h = out_h;
    recorded.out_w = out_w;
    recorded.align_corners = align_corners;
    recorded.scale_h = scale_h;
    recorded.scale_w = scale_w;
    recorded.half = half;
    recorded.int32_labels = int32_labels;
    return cudaSuccess;
}

}  // namespace seghead
}  // namespace segdeploy

namespace {

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;
using segdeploy::seghead::recorded;

int failures = 0;

void expect(bool ok, const char* what) {
    if (!ok) {
        std::printf("FAILED: %s\n", what);
        ++failures;
    }
}

struct Fields {
    int32_t out_h = 64, out_w = 96, align_corners = 1, uint8_labels = 0;
    float scale_h = 2.5f, scale_w = 0.0f;
    std::vector<PluginField> list;
    PluginFieldCollection fc;

    PluginFieldCollection const* make(bool with_w = true, bool float_h = false) {
        list.clear();
        list.emplace_back("plugin_version", "1", PluginFieldType::kCHAR, 1);
        if (float_h) {
            list.emplace_back("out_h", &scale_h, PluginFieldType::kFLOAT32, 1);
        } else {
            list.emplace_back("out_h", &out_h, PluginFieldType::kINT32, 1);
        }
        if (with_w) {
            list.emplace_back("out_w", &out_w, PluginFieldType::kINT32, 1);
        }
        list.emplace_back("align_corners", &align_corners, PluginFieldType::kINT32, 1);
        list.emplace_back("scale_h", &scale_h, PluginFieldType::kFLOAT32, 1);
        list.emplace_back("scale_w", &scale_w, PluginFieldType::kFLOAT32, 1);
        list.emplace_back("uint8_labels", &uint8_labels, PluginFieldType::kINT32, 1);
        fc.nbFields = static_cast<int32_t>(list.size());
        fc.fields = list.data();
        return &fc;
    }
};

// The dimension type of this release (int32 before 10, int64 from 10 on).
typedef std::remove_reference<decltype(nvinfer1::Dims().d[0])>::type Dim;

PluginTensorDesc tensor(DataType type, int nb, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    PluginTensorDesc desc;
    std::memset(&desc, 0, sizeof(desc));
    desc.type = type;
    desc.format = TensorFormat::kLINEAR;
    desc.dims.nbDims = nb;
    desc.dims.d[0] = static_cast<Dim>(d0);
    desc.dims.d[1] = static_cast<Dim>(d1);
    desc.dims.d[2] = static_cast<Dim>(d2);
    desc.dims.d[3] = static_cast<Dim>(d3);
    return desc;
}

template <typename Enqueue>
void check_enqueue(Enqueue enqueue) {
    PluginTensorDesc in[1] = {tensor(DataType::kHALF, 4, 2, 19, 16, 24)};
    PluginTensorDesc out[1] = {tensor(DataType::kINT32, 3, 2, 64, 96, 0)};
    void const* inputs[1] = {nullptr};
    void* outputs[1] = {nullptr};
    recorded.calls = 0;
    expect(enqueue(in, out, inputs, outputs) == 0, "enqueue succeeds");
    expect(recorded.calls == 1, "enqueue launches once");
    expect(recorded.batch == 2 && recorded.classes == 19 && recorded.height == 16 &&
               recorded.width == 24, "enqueue passes the input's shape");
    expect(recorded.out_h == 64 && recorded.out_w == 96 && recorded.align_corners == 1,
           "enqueue passes the fields");
    expect(recorded.scale_h == 2.5f, "a given scale is used as given");
    expect(recorded.scale_w == 4.0f, "a missing scale is out / in");
    expect(recorded.half && recorded.int32_labels, "enqueue passes half logits, int32 labels");
    PluginTensorDesc too_many[1] = {tensor(DataType::kFLOAT, 4, 1, 256, 16, 24)};
    recorded.calls = 0;
    expect(enqueue(too_many, out, inputs, outputs) != 0 && recorded.calls == 0,
           "256 classes are refused at enqueue");
}

}  // namespace

int main() {
    using segdeploy::seghead::SegHeadCreator;
    SegHeadCreator* creator = harness_creator();
    PluginFieldCollection const* names = creator->getFieldNames();
    expect(names->nbFields == 6, "six fields declared");
    expect(!std::strcmp(creator->getPluginName(), "SegHead") &&
               !std::strcmp(creator->getPluginVersion(), "1"), "name and version");
    Fields f;
#if NV_TENSORRT_MAJOR < 10
    std::printf("interface IPluginV2DynamicExt\n");
    nvinfer1::IPluginV2* plain = creator->createPlugin("head", f.make());
    expect(plain != nullptr, "createPlugin with all fields");
    expect(creator->createPlugin("head", f.make(false)) == nullptr, "out_w is required");
    expect(creator->createPlugin("head", f.make(true, true)) == nullptr, "a float out_h refused");
    auto* plugin = static_cast<nvinfer1::IPluginV2DynamicExt*>(plain);
    DataType in_types[1] = {DataType::kFLOAT};
    expect(plugin->getOutputDataType(0, in_types, 1) == DataType::kINT32, "int32 labels");
    PluginTensorDesc io[2] = {tensor(DataType::kFLOAT, 4, 1, 19, 8, 8),
                              tensor(DataType::kINT32, 3, 1, 64, 96, 0)};
    expect(plugin->supportsFormatCombination(0, io, 1, 1), "float logits");
    io[0].type = DataType::kHALF;
    expect(plugin->supportsFormatCombination(0, io, 1, 1), "half logits");
    io[0].type = DataType::kINT8;
    expect(!plugin->supportsFormatCombination(0, io, 1, 1), "int8 logits refused");
    expect(plugin->supportsFormatCombination(1, io, 1, 1), "int32 labels accepted");
    io[1].type = DataType::kFLOAT;
    expect(!plugin->supportsFormatCombination(1, io, 1, 1), "float labels refused");
    io[0].type = DataType::kFLOAT;
    io[0].format = TensorFormat::kCHW32;
    expect(!plugin->supportsFormatCombination(0, io, 1, 1), "non-linear formats refused");
    std::vector<char> blob(plugin->getSerializationSize());
    plugin->serialize(blob.data());
    nvinfer1::IPluginV2* back = creator->deserializePlugin("head", blob.data(), blob.size());
    expect(back != nullptr, "deserialize");
    if (back != nullptr) {
        std::vector<char> again(back->getSerializationSize());
        back->serialize(again.data());
        expect(again == blob, "serialization round-trips every field");
        back->destroy();
    }
    expect(creator->deserializePlugin("head", blob.data(), blob.size() - 4) == nullptr,
           "a short blob is refused");
    blob[0] ^= 1;
    expect(creator->deserializePlugin("head", blob.data(), blob.size()) == nullptr,
           "a foreign blob is refused");
    plugin->setPluginNamespace("ns");
    nvinfer1::IPluginV2DynamicExt* copy = plugin->clone();
    expect(!std::strcmp(copy->getPluginNamespace(), "ns"), "clone keeps the namespace");
    check_enqueue([&](PluginTensorDesc const* in, PluginTensorDesc const* out,
                      void const* const* inputs, void* const* outputs) {
        return plugin->enqueue(in, out, inputs, outputs, nullptr, nullptr);
    });
    f.uint8_labels = 1;
    nvinfer1::IPluginV2* u8 = creator->createPlugin("head", f.make());
#if NV_TENSORRT_MAJOR * 100 + NV_TENSORRT_MINOR >= 805
    expect(u8 != nullptr && static_cast<nvinfer1::IPluginV2DynamicExt*>(u8)->getOutputDataType(
                                0, in_types, 1) == DataType::kUINT8, "uint8 labels where known");
#else
    expect(u8 == nullptr, "uint8 labels refused before TensorRT 8.5");
#endif
    copy->destroy();
    plugin->destroy();
#else
    std::printf("interface IPluginV3\n");
    using nvinfer1::IPluginV3OneBuild;
    using nvinfer1::IPluginV3OneCore;
    using nvinfer1::IPluginV3OneRuntime;
    using nvinfer1::PluginCapabilityType;
    using nvinfer1::TensorRTPhase;
    nvinfer1::IPluginV3* plugin = creator->createPlugin("head", f.make(), TensorRTPhase::kBUILD);
    expect(plugin != nullptr, "createPlugin with all fields");
    expect(creator->createPlugin("head", f.make(false), TensorRTPhase::kBUILD) == nullptr,
           "out_w is required");
    expect(creator->createPlugin("head", f.make(true, true), TensorRTPhase::kBUILD) == nullptr,
           "a float out_h refused");
    auto* core = static_cast<IPluginV3OneCore*>(
        plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(
        plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(
        plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    expect(!std::strcmp(core->getPluginName(), "SegHead"), "core capability");
    expect(build->getNbOutputs() == 1, "one output");
    DataType in_types[1] = {DataType::kHALF};
    DataType out_types[1] = {DataType::kFLOAT};
    expect(build->getOutputDataTypes(out_types, 1, in_types, 1) == 0 &&
               out_types[0] == DataType::kINT32, "int32 labels");
    nvinfer1::DynamicPluginTensorDesc io[2];
    std::memset(io, 0, sizeof(io));
    io[0].desc = tensor(DataType::kHALF, 4, 1, 19, 8, 8);
    io[1].desc = tensor(DataType::kINT32, 3, 1, 64, 96, 0);
    expect(build->supportsFormatCombination(0, io, 1, 1), "half logits");
    expect(build->supportsFormatCombination(1, io, 1, 1), "int32 labels accepted");
    io[1].desc.type = DataType::kUINT8;
    expect(!build->supportsFormatCombination(1, io, 1, 1), "uint8 labels refused by default");
    // Serialization: the fields TensorRT stores, read back by the creator at runtime.
    PluginFieldCollection const* stored = runtime->getFieldsToSerialize();
    expect(stored->nbFields == 6, "six fields serialized");
    nvinfer1::IPluginV3* back = creator->createPlugin("head", stored, TensorRTPhase::kRUNTIME);
    expect(back != nullptr, "recreated from its serialized fields");
    if (back != nullptr) {
        auto* rt = static_cast<IPluginV3OneRuntime*>(
            back->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        PluginFieldCollection const* again = rt->getFieldsToSerialize();
        bool same = again->nbFields == stored->nbFields;
        for (int32_t i = 0; same && i < again->nbFields; ++i) {
            same = !std::strcmp(again->fields[i].name, stored->fields[i].name) &&
                   !std::memcmp(again->fields[i].data, stored->fields[i].data, 4);
        }
        expect(same, "serialized fields round-trip");
        check_enqueue([&](PluginTensorDesc const* in, PluginTensorDesc const* out,
                          void const* const* inputs, void* const* outputs) {
            return rt->enqueue(in, out, inputs, outputs, nullptr, nullptr);
        });
        delete back;
    }
    nvinfer1::IPluginV3* copy = runtime->attachToContext(nullptr);
    expect(copy != nullptr && copy != plugin, "attachToContext gives a copy");
    delete copy;
    f.uint8_labels = 1;
    nvinfer1::IPluginV3* u8 = creator->createPlugin("head", f.make(), TensorRTPhase::kBUILD);
    expect(u8 != nullptr, "uint8 labels accepted");
    if (u8 != nullptr) {
        auto* b8 = static_cast<IPluginV3OneBuild*>(
            u8->getCapabilityInterface(PluginCapabilityType::kBUILD));
        expect(b8->getOutputDataTypes(out_types, 1, in_types, 1) == 0 &&
                   out_types[0] == DataType::kUINT8, "uint8 labels where asked");
        delete u8;
    }
    delete plugin;
#endif
    delete creator;
    std::printf("%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
