"""The fused labels head against Resize + ArgMax: ONNX Runtime running the two-node graph, and
the dense numpy reference (segdeploy.runtime.head.reference_labels).

Logits are smooth class fields (regions, boundaries, as a network's) with planted exact ties
(two classes equal at a low-resolution pixel, or two identical class planes) and near-ties
(one float32 ulp apart). Labels must equal the reference's wherever the reference's top two
upsampled scores are apart (no tie), and on >= 99.99 % of all pixels.
"""

import numpy as np
import pytest
from runtime_support import needs_compiled_head

from segdeploy.errors import FrameError
from segdeploy.runtime.head import FusedHead, fused_head, geometry, reference_labels

ort = pytest.importorskip("onnxruntime")
onnx_helper = pytest.importorskip("onnx.helper")


def resize_argmax_session(c, in_hw, out_hw, mode):
    """ONNX Runtime session of Resize(linear, sizes, mode) -> ArgMax(axis=1), as exported."""
    from onnx import TensorProto

    h = onnx_helper
    x = h.make_tensor_value_info("logits", TensorProto.FLOAT, [1, c, in_hw[0], in_hw[1]])
    y = h.make_tensor_value_info("labels", TensorProto.INT64, [1, out_hw[0], out_hw[1]])
    sizes = h.make_tensor("sizes", TensorProto.INT64, [4], [1, c, out_hw[0], out_hw[1]])
    nodes = [
        h.make_node(
            "Resize",
            ["logits", "", "", "sizes"],
            ["up"],
            mode="linear",
            coordinate_transformation_mode=mode,
        ),
        h.make_node("ArgMax", ["up"], ["labels"], axis=1, keepdims=0),
    ]
    graph = h.make_graph(nodes, "head", [x], [y], initializer=[sizes])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def smooth_logits(rng, c, h, w, ties=True):
    """(C, h, w) float32 class fields: bilinear-smooth noise, with planted ties and near-ties."""
    coarse = rng.standard_normal((c, h // 4 + 2, w // 4 + 2)).astype(np.float32) * 4
    ys = np.linspace(0, coarse.shape[1] - 1.001, h)
    xs = np.linspace(0, coarse.shape[2] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = coarse[:, y0][:, :, x0] * (1 - fx) + coarse[:, y0][:, :, x0 + 1] * fx
    bottom = coarse[:, y0 + 1][:, :, x0] * (1 - fx) + coarse[:, y0 + 1][:, :, x0 + 1] * fx
    logits = (top * (1 - fy) + bottom * fy).astype(np.float32)
    if ties and c >= 2:
        best = logits.argmax(0)
        pick = rng.random((h, w)) < 0.05  # exact ties: runner-up raised to the winner
        other = (best + 1 + rng.integers(0, c - 1, (h, w))) % c
        yy, xx = np.nonzero(pick)
        logits[other[yy, xx], yy, xx] = logits[best[yy, xx], yy, xx]
        pick = rng.random((h, w)) < 0.05  # near-ties: one ulp below the winner
        yy, xx = np.nonzero(pick)
        top_value = logits[best[yy, xx], yy, xx]
        logits[other[yy, xx], yy, xx] = np.nextafter(top_value, np.float32(-np.inf))
        if c >= 3:
            logits[c - 1] = logits[1]  # two identical class planes: first index everywhere
    return logits


def tie_free(logits, out_hw, mode, rel=1e-5):
    """(H, W) bool: pixels whose two best upsampled scores differ by more than ``rel``."""
    c = logits.shape[0]
    if c == 1:
        return np.ones(out_hw, bool)
    geo = geometry(logits.shape[1:], out_hw, mode)
    w = logits.shape[2]
    y1, y2, x1, x2 = geo.y1w // w, geo.y2w // w, geo.x1, geo.x2
    wy1, wy2 = geo.dy2[:, None], geo.dy1[:, None]
    wx1, wx2 = geo.dx2[None, :], geo.dx1[None, :]
    lo = logits.astype(np.float64)
    up = (wx1 * wy1) * lo[:, y1][:, :, x1] + (wx2 * wy1) * lo[:, y1][:, :, x2]
    up += (wx1 * wy2) * lo[:, y2][:, :, x1] + (wx2 * wy2) * lo[:, y2][:, :, x2]
    top2 = np.sort(up, axis=0)[-2:]
    return (top2[1] - top2[0]) > rel * (1.0 + np.abs(top2[1]))


# (low-resolution size, scale): 4 and 8 as RegSeg / DDRNet strides, 2.37 for a frame-size head
SCALES = [((24, 40), 4), ((12, 20), 8), ((27, 41), 2.37)]


@pytest.mark.parametrize("classes", [1, 2, 19, 150])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_hw, scale", SCALES)
@pytest.mark.parametrize("impl", ["numpy", "compiled"])
def test_fused_head_matches_resize_argmax(impl, in_hw, scale, align_corners, classes):
    if impl == "compiled":
        needs_compiled_head()
    rng = np.random.default_rng(classes * 100 + int(scale * 10) + align_corners)
    h, w = in_hw
    if classes == 150:  # keep the ONNX Runtime reference small
        h, w = max(h // 2, 6), max(w // 2, 6)
    out_hw = (int(round(h * scale)), int(round(w * scale)))
    mode = "align_corners" if align_corners else "half_pixel"
    logits = smooth_logits(rng, classes, h, w)
    session = resize_argmax_session(classes, (h, w), out_hw, mode)
    expected = session.run(None, {"logits": logits[None]})[0][0]
    dense = reference_labels(logits, out_hw, align_corners=align_corners)
    labels = fused_head(logits, out_hw, align_corners, impl=impl)

    assert labels.shape == out_hw and labels.dtype == np.uint8
    clear = tie_free(logits, out_hw, mode)
    assert clear.mean() > 0.5  # the comparison is not vacuous
    for reference in (expected, dense):
        assert np.array_equal(labels[clear], reference[clear])
        assert (labels == reference).mean() >= 0.9999
    if classes >= 19:
        assert len(np.unique(labels)) >= 5
        head = FusedHead(align_corners=align_corners, impl=impl)
        head(logits, out_hw)
        assert head.impl == impl
        # the uniform cells were decided without interpolation (the compiled head's safety
        # margin sends a few more to the interpolation)
        assert 0 < head.last_mixed < (0.9 if impl == "numpy" else 0.95)


@pytest.mark.parametrize("impl", ["numpy", "compiled"])
def test_uniform_logits_are_decided_without_interpolation_ties_to_the_first_class(impl):
    if impl == "compiled":
        needs_compiled_head()
    logits = np.zeros((7, 9, 11), np.float32)
    logits[3] = 2.0
    head = FusedHead(impl=impl)
    labels = head(logits, (37, 45))
    assert (labels == 3).all() and head.last_mixed == 0.0
    logits[5] = 2.0  # an exact tie everywhere: ArgMax takes the first index
    assert (head(logits, (37, 45)) == 3).all()


def test_buffers_are_reused_and_out_is_written_in_place():
    rng = np.random.default_rng(5)
    head = FusedHead(impl="numpy")
    out = np.full((96, 160), 200, np.uint8)
    first = smooth_logits(rng, 19, 24, 40, ties=False)
    assert head(first, (96, 160), out=out) is out
    table = head._buffers["table"]
    second = smooth_logits(rng, 19, 24, 40, ties=False)
    head(second, (96, 160), out=out)
    assert head._buffers["table"] is table  # same frame size: no new frame-sized buffer
    assert np.array_equal(out, reference_labels(second, (96, 160)))


@pytest.mark.parametrize("impl", ["numpy", "compiled"])
def test_batched_4d_and_float16_logits_are_accepted(impl):
    if impl == "compiled":
        needs_compiled_head()
    rng = np.random.default_rng(6)
    logits = smooth_logits(rng, 5, 16, 16, ties=False)
    expected = reference_labels(logits.astype(np.float16), (64, 64))
    labels = fused_head(logits[None].astype(np.float16), (64, 64), impl=impl)
    assert np.array_equal(labels, expected)


@pytest.mark.parametrize("impl", ["numpy", "compiled"])
def test_pytorch_half_pixel_differs_from_half_pixel_only_at_an_output_side_of_one(impl):
    if impl == "compiled":
        needs_compiled_head()
    rng = np.random.default_rng(7)
    logits = smooth_logits(rng, 6, 8, 10, ties=False)
    for mode in ("half_pixel", "pytorch_half_pixel"):
        session = resize_argmax_session(6, (8, 10), (1, 33), mode)
        expected = session.run(None, {"logits": logits[None]})[0][0]
        assert np.array_equal(FusedHead(mode=mode, impl=impl)(logits, (1, 33)), expected)


@pytest.mark.parametrize(
    "logits, size, match",
    [
        (np.zeros((256, 4, 4), np.float32), (8, 8), "1..255 classes"),
        (np.zeros((2, 3, 4, 4), np.float32), (8, 8), r"\(C, h, w\)"),
        (np.zeros((4, 4), np.float32), (8, 8), r"\(C, h, w\)"),
    ],
)
def test_wrong_inputs_are_one_clear_error(logits, size, match):
    with pytest.raises(FrameError, match=match):
        fused_head(logits, size)


def test_wrong_out_buffer_and_transform_are_refused():
    with pytest.raises(FrameError, match="C-contiguous"):
        fused_head(np.zeros((2, 4, 4), np.float32), (8, 8), out=np.zeros((8, 9), np.uint8))
    with pytest.raises(FrameError, match="transforms"):
        FusedHead(mode="asymmetric")


@pytest.mark.parametrize("classes", [3, 19, 150])
def test_candidate_classes_give_the_labels_of_every_class(classes):
    rng = np.random.default_rng(classes)
    logits = smooth_logits(rng, classes, 20, 24)
    pruned, full = FusedHead(impl="numpy"), FusedHead(impl="numpy")
    pruned.prune, full.prune = True, False
    pruned.chunk = full.chunk = 512  # several steps
    assert np.array_equal(pruned(logits, (80, 96)), full(logits, (80, 96)))
    assert np.array_equal(pruned(logits, (80, 96)), reference_labels(logits, (80, 96)))
