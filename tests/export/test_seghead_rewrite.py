"""The SegHead rewrite: Resize + ArgMax -> one plugin node whose labels (host build) equal the
standard graph's in ONNX Runtime."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime_extensions")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from segdeploy.export import seghead  # noqa: E402


def head_graph(classes=19, h=16, w=24, out=(64, 96), mode="pytorch_half_pixel", scales=None,
               seed=0):  # fmt: skip
    """image (1x3xhxw) -> 1x1 Conv to ``classes`` logits -> Resize -> ArgMax -> labels."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((classes, 3, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    if scales is None:
        inits.append(numpy_helper.from_array(np.array([1, classes] + list(out), np.int64), "sz"))
        resize_in = ["logits", "", "", "sz"]
    else:
        inits.append(numpy_helper.from_array(np.array([1, 1] + list(scales), np.float32), "sc"))
        resize_in = ["logits", "", "sc"]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["logits"], name="cls"),
        helper.make_node(
            "Resize",
            resize_in,
            ["up"],
            name="up",
            mode="linear",
            coordinate_transformation_mode=mode,
        ),  # fmt: skip
        helper.make_node("ArgMax", ["up"], ["labels"], name="labels_argmax", axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def images(h, w, count=2, seed=1):
    rng = np.random.default_rng(seed)
    # smooth images: class regions, as a network's logits have
    out = []
    for _ in range(count):
        coarse = rng.standard_normal((1, 3, -(-h // 4), -(-w // 4)))
        img = np.repeat(np.repeat(coarse, 4, 2), 4, 3)[:, :, :h, :w]
        out.append({"image": (img + 0.2 * rng.standard_normal(img.shape)).astype(np.float32)})
    return out


@pytest.mark.parametrize("mode", ["pytorch_half_pixel", "half_pixel", "align_corners"])
@pytest.mark.parametrize("scales", [None, (2.37, 2.37)])
def test_rewrite_matches_standard_graph(mode, scales):
    proto = head_graph(out=(64, 96), mode=mode, scales=scales)
    fused, summary = seghead.fuse_head(proto)
    assert [n.op_type for n in fused.graph.node] == ["Conv", "SegHead"]
    node = fused.graph.node[1]
    assert node.domain == "trt.plugins" and list(node.input) == ["logits"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_version"] == b"1" and attrs["align_corners"] == int(
        mode == "align_corners"
    )
    expect = (37, 56) if scales else (64, 96)  # floor(16 * 2.37), floor(24 * 2.37)
    assert (attrs["out_h"], attrs["out_w"]) == expect
    assert attrs["scale_h"] == pytest.approx(2.37 if scales else 0.0)
    assert summary["fused"][0]["replaced"] == ["up", "labels_argmax"] and not summary["skipped"]
    # The Resize's sizes / scales are gone with it; the labels are int32 now.
    assert [t.name for t in fused.graph.initializer] == ["w"]
    assert fused.graph.output[0].type.tensor_type.elem_type == TensorProto.INT32
    figures = seghead.check(proto, fused, images(16, 24))
    assert figures["pixels"] == 2 * expect[0] * expect[1]
    assert figures["disagreements"] == 0
    assert figures["classes"] >= 5


def test_input_model_is_not_modified():
    proto = head_graph()
    before = proto.SerializeToString()
    seghead.fuse_head(proto)
    assert proto.SerializeToString() == before


def set_attr(node, name, value):
    for a in node.attribute:
        if a.name == name:
            a.CopyFrom(helper.make_attribute(name, value))
            return
    node.attribute.extend([helper.make_attribute(name, value)])


def _set(index, name, value):
    return lambda p: set_attr(p.graph.node[index], name, value)


@pytest.mark.parametrize(
    "change, reason",
    [
        (_set(1, "mode", "cubic"), "cubic"),
        (_set(1, "coordinate_transformation_mode", "asymmetric"), "asymmetric"),
        (_set(2, "keepdims", 1), "keepdims=0"),
        (_set(2, "axis", 2), "channel axis"),
        (_set(2, "select_last_index", 1), "last index"),
        (
            lambda p: p.graph.output.extend(
                [helper.make_tensor_value_info("up", 1, ["N", "C", "H", "W"])]
            ),
            "read elsewhere",
        ),  # fmt: skip
    ],
)
def test_heads_outside_the_contract_are_left_with_a_reason(change, reason):
    proto = head_graph()
    change(proto)
    fused, summary = seghead.fuse_head(proto)
    assert not summary["fused"] and reason in summary["skipped"][0]["reason"]
    assert [n.op_type for n in fused.graph.node] == [n.op_type for n in proto.graph.node]


def test_too_many_classes_are_refused():
    fused, summary = seghead.fuse_head(head_graph(classes=256, out=(32, 48)))
    assert not summary["fused"] and "uint8" in summary["skipped"][0]["reason"]


def test_torch_exported_head():
    # The TorchScript exporter's own Resize (opset 13), cleaned and headed as segexport does.
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxslim")
    from segdeploy.export.onnx_export import append_argmax, clean_graph

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cls = torch.nn.Conv2d(3, 11, 3, stride=4, padding=1)

        def forward(self, x):
            y = self.cls(x)
            return torch.nn.functional.interpolate(
                y, size=x.shape[-2:], mode="bilinear", align_corners=False
            )

    torch.manual_seed(0)
    model = Tiny().eval()
    import io

    buf = io.BytesIO()
    torch.onnx.export(
        model, torch.zeros(1, 3, 40, 56), buf, opset_version=13, input_names=["image"],
        output_names=["logits"], dynamo=False,
    )  # fmt: skip
    proto = append_argmax(clean_graph(onnx.load_from_string(buf.getvalue())))
    fused, summary = seghead.fuse_head(proto)
    assert len(summary["fused"]) == 1, summary["skipped"]
    assert summary["fused"][0]["out_size"] == [40, 56]
    figures = seghead.check(proto, fused, images(40, 56, count=2, seed=3))
    assert figures["disagreements"] == 0 and figures["classes"] >= 5


def test_command_line(tmp_path, capsys):
    src = tmp_path / "net.onnx"
    onnx.save(head_graph(out=(64, 96)), str(src))
    assert seghead.main([str(src), "--check", "2"]) == 0
    text = capsys.readouterr().out
    assert "SegHead_0: logits -> 64 x 96 labels (half_pixel)" in text
    assert "labels: 0 of 12288 differ" in text
    fused = onnx.load(str(tmp_path / "net.seghead.onnx"))
    assert [n.op_type for n in fused.graph.node] == ["Conv", "SegHead"]
    # A graph without the head: one line, exit 2, nothing written.
    plain = head_graph()
    del plain.graph.node[2]
    plain.graph.output[0].CopyFrom(helper.make_tensor_value_info("up", 1, ["N", "C", "H", "W"]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    assert seghead.main([str(tmp_path / "plain.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Resize + ArgMax head to fuse (no ArgMax)" in err[0]
    assert not (tmp_path / "plain.seghead.onnx").exists()
