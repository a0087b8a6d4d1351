"""segexport --input uint8: the frame goes into the graph as uint8 NHWC; labels equal the float
graph's; the Runtime detects it from the card and sends frames as they are."""

import sys

import numpy as np
import onnx
import pytest
import torch

import segdeploy
from segdeploy.export.cli import main as segexport
from segdeploy.export.uint8_input import frames_for, is_uint8_card

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "runtime"))
from runtime_support import smooth_frame, tiny_model  # noqa: E402

H, W = 64, 128


def _export(out, ckpt, *extra):
    code = segexport(
        [
            "--model",
            "regseg_tiny",
            "--checkpoint",
            str(ckpt),
            "--res",
            "{}x{}".format(H, W),
            "--out",
            str(out),
            "--verify-inputs",
            "1",
            *extra,
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The same fan-in-scaled tiny RegSeg exported with a float and with a uint8 input."""
    root = tmp_path_factory.mktemp("uint8")
    ckpt = root / "tiny.pth"
    torch.save(tiny_model(seed=2).state_dict(), ckpt)
    return (
        _export(root / "float", ckpt),
        _export(root / "uint8", ckpt, "--input", "uint8"),
    )


def test_the_graph_takes_uint8_nhwc_and_the_card_says_so(exports):
    _, u8 = exports
    proto = onnx.load(str(u8 / "regseg_tiny.onnx"))
    (image,) = proto.graph.input
    dims = [d.dim_value for d in image.type.tensor_type.shape.dim]
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims == [1, H, W, 3]
    ops = [n.op_type for n in proto.graph.node[:6]]
    assert ops == ["Transpose", "Gather", "Cast", "Mul", "Sub", "Div"]  # BGR frames, RGB model
    card = segdeploy.card.read_sidecar(str(u8 / "regseg_tiny.ort"))
    assert is_uint8_card(card)
    assert card["input"]["layout"] == "NHWC" and card["input"]["channel_order"] == "BGR"
    assert card["input"]["model_channel_order"] == "RGB"
    figures = card["parity"]["uint8_vs_float"]
    assert figures["identical_frames"] == figures["frames"] == 3
    assert figures["bytes_per_frame_uint8"] * 4 == figures["bytes_per_frame_float"]


def test_uint8_graph_labels_equal_the_float_graph(exports):
    f32, u8 = exports
    import onnxruntime as ort

    fs = ort.InferenceSession(str(f32 / "regseg_tiny.onnx"), providers=["CPUExecutionProvider"])
    us = ort.InferenceSession(str(u8 / "regseg_tiny.onnx"), providers=["CPUExecutionProvider"])
    card = segdeploy.card.read_sidecar(str(f32 / "regseg_tiny.onnx"))
    from segdeploy.export.verify import normalize

    classes = set()
    for frame in frames_for(card, 5, seed=7):
        expected = fs.run(None, {"image": normalize(frame[:, :, ::-1].copy(), card)})[0]
        labels = us.run(None, {"image": frame[None]})[0]
        np.testing.assert_array_equal(labels, expected)
        classes.update(np.unique(expected).tolist())
    assert len(classes) >= 5  # labels vary: agreement is not the trivial one of a constant map


@pytest.mark.parametrize("engine", ["regseg_tiny.onnx", "regseg_tiny.ort"])
def test_runtime_detects_the_uint8_graph_and_matches_the_float_path(exports, engine):
    f32, u8 = exports
    with segdeploy.Runtime(str(f32 / engine)) as rf, segdeploy.Runtime(str(u8 / engine)) as ru:
        assert ru.input_dtype == "uint8" and rf.input_dtype == "float32"
        frames = [
            smooth_frame(H, W, seed=1),  # network size: passed to the engine without a copy
            smooth_frame(90, 170, seed=2),  # resized on the host
        ]
        frames.append(np.dstack([frames[0], np.full((H, W), 255, np.uint8)]))  # BGRA
        frames.append(frames[1][:, :, 1].copy())  # grayscale
        for frame in frames:
            expected = rf.infer(frame)
            labels = ru.infer(frame)
            assert labels.shape == frame.shape[:2]
            # The host LUT (float64 tables rounded to float32) and the graph's float32
            # arithmetic may differ in the last bit; a label flips only on an exact tie.
            assert (labels == expected).mean() > 0.999
        assert len(np.unique(expected)) >= 2
        batch = ru.infer_batch(frames[:2])
        for frame, labels in zip(frames[:2], batch):
            assert (labels == rf.infer(frame)).mean() > 0.999


def test_rgb_frames_into_a_bgr_graph(exports):
    _, u8 = exports
    frame = smooth_frame(H, W, seed=4)
    with segdeploy.Runtime(str(u8 / "regseg_tiny.ort")) as bgr:
        expected = bgr.infer(frame)
    with segdeploy.Runtime(str(u8 / "regseg_tiny.ort"), rgb=True) as rgb:
        labels = rgb.infer(frame[:, :, ::-1].copy())
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(expected)) >= 5


def test_uint8_input_refused_for_tensorrt_before_8_6(tmp_path, capsys):
    code = segexport(
        [
            "--model",
            "regseg_tiny",
            "--res",
            "64x128",
            "--input",
            "uint8",
            "--backend",
            "tensorrt",
            "--print-trtexec",
            "--trt-version",
            "8.2",
            "--out",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("segexport: error: --input uint8 needs TensorRT 8.6")


def test_trtexec_line_has_nhwc_batch_shapes(tmp_path, capsys):
    code = segexport(
        [
            "--model",
            "regseg_tiny",
            "--res",
            "64x128",
            "--input",
            "uint8",
            "--max-batch",
            "4",
            "--backend",
            "tensorrt",
            "--print-trtexec",
            "--trt-version",
            "10.3",
            "--verify-inputs",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    line = next(li for li in out.splitlines() if li.startswith("trtexec "))
    assert "--minShapes=image:1x64x128x3" in line
    assert "--optShapes=image:4x64x128x3" in line
    assert "--maxShapes=image:4x64x128x3" in line
    proto = onnx.load(str(tmp_path / "regseg_tiny.onnx"))
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"


@pytest.mark.parametrize("protocol", ["regseg", "runtime"])
def test_segbench_times_a_uint8_engine(exports, capsys, protocol):
    from segdeploy.bench.cli import main as segbench

    _, u8 = exports
    code = segbench(
        [
            "--engine",
            str(u8 / "regseg_tiny.ort"),
            "--protocol",
            protocol,
            "--iters",
            "2",
            "--warmup",
            "1",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "latency:" in out
