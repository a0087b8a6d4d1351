"""The fused head's host build against ONNX Runtime's Resize + ArgMax graph, label for label."""

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402

from segdeploy.plugins.seghead import host  # noqa: E402

MODES = ("pytorch_half_pixel", "half_pixel", "align_corners")


def ort_head(x, out_size, mode, scales=None):
    """Labels of ONNX Runtime's Resize (linear, ``mode``; sizes, or ``scales`` when given) +
    ArgMax(axis=1) on ``x``, through a real graph."""
    n, c, h, w = x.shape
    if scales is None:
        init = helper.make_tensor("sizes", TensorProto.INT64, [4], [n, c] + list(out_size))
        inputs = ["x", "", "", "sizes"]
    else:
        init = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0] + list(scales))
        inputs = ["x", "", "scales"]
    nodes = [
        helper.make_node(
            "Resize", inputs, ["up"], mode="linear", coordinate_transformation_mode=mode
        ),
        helper.make_node("ArgMax", ["up"], ["y"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
        [init],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})[0]


def planted_logits(rng, n, c, h, w):
    """Smooth class regions (a low-frequency field, as a network's logits), noise, and planted
    exact ties and one-ulp near-ties between the two best classes at 15 % of the pixels."""
    coarse = rng.standard_normal((n, c, -(-h // 4), -(-w // 4)))
    x = 3.0 * np.repeat(np.repeat(coarse, 4, 2), 4, 3)[:, :, :h, :w]
    x = (x + rng.standard_normal((n, c, h, w))).astype(np.float32)
    if c > 1:
        order = np.argsort(-x, axis=1)
        top, second = order[:, 0], order[:, 1]
        b, yy, xx = np.nonzero(rng.random((n, h, w)) < 0.15)
        lead = x[b, top[b, yy, xx], yy, xx]
        tie = rng.random(b.size) < 0.5
        # exact ties: the runner-up takes the leader's value; near-ties: one ulp below it
        x[b, second[b, yy, xx], yy, xx] = np.where(tie, lead, np.nextafter(lead, -np.inf))
    return x


def out_size_of(h, w, factor):
    return int(np.floor(h * factor)), int(np.floor(w * factor))


@pytest.mark.parametrize("classes", [1, 2, 19, 150])
@pytest.mark.parametrize("factor", [4, 8, 2.37])
@pytest.mark.parametrize("mode", MODES)
def test_labels_equal_onnxruntime_resize_argmax(classes, factor, mode):
    rng = np.random.default_rng(classes * 1000 + int(factor * 100) + MODES.index(mode))
    h, w = (9, 13) if factor == 8 else (14, 19)
    x = planted_logits(rng, 2, classes, h, w)
    out = out_size_of(h, w, factor)
    ref = ort_head(x, out, mode)
    got, slow = host.seg_head(x, out, align_corners=mode == "align_corners", return_slow=True)
    assert got.dtype == np.uint8 and got.shape == ref.shape == (2,) + out
    np.testing.assert_array_equal(got, ref)
    if classes >= 19:
        assert np.unique(ref).size >= 5  # labels that vary, not one class everywhere
    if classes == 1:
        assert slow == 0 and not got.any()
    else:
        # Both paths ran: the agreed-label fast path and the full interpolation.
        assert 0 < slow < got.size


@pytest.mark.parametrize("mode", MODES)
def test_scales_input_matches_onnxruntime(mode):
    # A Resize given scales (not sizes): ONNX Runtime uses the float scale itself, not out / in.
    rng = np.random.default_rng(5)
    x = planted_logits(rng, 1, 19, 13, 17)
    factor = 2.37
    ref = ort_head(x, None, mode, scales=(factor, factor))
    scale = float(np.float32(factor))
    got = host.seg_head(
        x, ref.shape[1:], align_corners=mode == "align_corners", scales=(scale, scale)
    )
    np.testing.assert_array_equal(got, ref)
    if mode != "align_corners":
        # out / in differs from 2.37 in float: the default scales give other coordinates.
        derived = host.seg_head(x, ref.shape[1:], align_corners=False)
        assert (derived != ref).any()


def test_fp16_reads_half_logits_exactly():
    rng = np.random.default_rng(8)
    x = planted_logits(rng, 1, 19, 12, 20)
    rounded = x.astype(np.float16)
    ref = ort_head(rounded.astype(np.float32), (96, 160), "pytorch_half_pixel")
    np.testing.assert_array_equal(host.seg_head(x, (96, 160), fp16=True), ref)
    np.testing.assert_array_equal(host.seg_head(rounded, (96, 160)), ref)


def test_realistic_logits_take_the_fast_path_mostly():
    # Class regions of 16 x 16 source pixels (as a network's logits): only output pixels near a
    # region's edge (about 1/8 of them at x8) need all classes interpolated.
    rng = np.random.default_rng(3)
    coarse = rng.standard_normal((1, 7, 4, 8))
    x = 4.0 * np.repeat(np.repeat(coarse, 16, 2), 16, 3) + 0.1 * rng.standard_normal(
        (1, 7, 64, 128)
    )
    x = x.astype(np.float32)
    got, slow = host.seg_head(x, (512, 1024), return_slow=True)
    np.testing.assert_array_equal(got, ort_head(x, (512, 1024), "pytorch_half_pixel"))
    assert 0 < slow < 0.15 * got.size


def test_downscale_and_odd_sizes():
    rng = np.random.default_rng(4)
    x = planted_logits(rng, 1, 19, 40, 33)
    for out in [(17, 29), (1, 5), (40, 33), (3, 1)]:
        for mode in ("pytorch_half_pixel", "align_corners"):
            np.testing.assert_array_equal(
                host.seg_head(x, out, align_corners=mode == "align_corners"),
                ort_head(x, out, mode),
            )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="1 to 255 classes"):
        host.seg_head(np.zeros((1, 256, 2, 2), np.float32), (4, 4))
    with pytest.raises(ValueError, match="N x C x H x W"):
        host.seg_head(np.zeros((3, 2, 2), np.float32), (4, 4))
    with pytest.raises(ValueError, match="out_size"):
        host.seg_head(np.zeros((1, 3, 2, 2), np.float32), (0, 4))
    with pytest.raises(ValueError, match="scales"):
        host.seg_head(np.zeros((1, 3, 2, 2), np.float32), (4, 4), scales=(2.0, -1.0))


def test_255_classes_the_most_uint8_labels_take():
    rng = np.random.default_rng(9)
    x = planted_logits(rng, 1, 255, 6, 7)
    x[:, 254] += 4.0  # the last class wins somewhere: label 254 must survive the uint8 store
    ref = ort_head(x, (24, 28), "pytorch_half_pixel")
    got = host.seg_head(x, (24, 28))
    np.testing.assert_array_equal(got, ref)
    assert (ref == 254).any()
