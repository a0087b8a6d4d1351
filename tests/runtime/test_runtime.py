"""Runtime on an ONNX Runtime engine: label maps, bad frames, palettes, lifetime, threads."""

import threading

import numpy as np
import pytest
from runtime_support import export_tiny, reference_labels, smooth_frame

import segdeploy
from segdeploy import datasets
from segdeploy.errors import EngineError, FrameError, SegDeployError
from segdeploy.runtime.postprocess import Postprocessor

H, W = 64, 128


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("rt") / "tiny.onnx"
    model = export_tiny(path, H, W)
    return path, model


@pytest.fixture()
def rt(tiny_onnx):
    with segdeploy.Runtime(tiny_onnx[0], threads=1) as runtime:
        yield runtime


@pytest.mark.parametrize("frame_hw", [(H, W), (100, 200), (37, 61)])
def test_infer_returns_labels_at_frame_size_matching_torch(rt, tiny_onnx, frame_hw):
    frame = smooth_frame(*frame_hw)
    labels = rt.infer(frame)
    assert labels.shape == frame_hw and labels.dtype == np.uint8
    expected = reference_labels(tiny_onnx[1], frame, H, W)
    assert len(np.unique(expected)) > 1  # the check below could fail
    assert (labels == expected).mean() > 0.99


def test_card_configures_the_runtime(rt):
    assert rt.backend == "onnxruntime"
    assert rt.input_size == (H, W)
    assert rt.num_classes == 19
    assert rt.palette.shape == (19, 3)
    assert tuple(rt.palette[0]) == datasets.CITYSCAPES.palette[0]


def test_out_buffer_is_filled_and_returned(rt):
    frame = smooth_frame(90, 120)
    out = np.full((90, 120), 255, np.uint8)
    result = rt.infer(frame, out=out)
    assert result is out
    np.testing.assert_array_equal(out, rt.infer(frame))
    with pytest.raises(FrameError, match="out must be"):
        rt.infer(frame, out=np.empty((10, 10), np.uint8))


def test_consecutive_frames_do_not_leak_into_each_other(rt):
    a, b = smooth_frame(H, W, seed=1), smooth_frame(H, W, seed=2)
    first_a = rt.infer(a)
    first_b = rt.infer(b)
    assert (first_a != first_b).any()
    np.testing.assert_array_equal(rt.infer(a), first_a)


# --- bad frames: documented conversions ------------------------------------------------------


def test_grayscale_frames_feed_all_three_channels(rt):
    gray = smooth_frame(H, W)[:, :, 1].copy()
    expected = rt.infer(np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(rt.infer(gray), expected)
    np.testing.assert_array_equal(rt.infer(gray[:, :, None]), expected)


def test_alpha_plane_is_ignored(rt):
    frame = smooth_frame(70, 90)
    alpha = np.random.RandomState(0).randint(0, 256, (70, 90, 1)).astype(np.uint8)
    np.testing.assert_array_equal(rt.infer(np.concatenate([frame, alpha], 2)), rt.infer(frame))


def test_non_contiguous_frames_are_copied(rt):
    big = smooth_frame(2 * H, 2 * W)
    view = big[::2, ::2]  # strided view
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(rt.infer(view), rt.infer(np.ascontiguousarray(view)))


def test_batch_of_one_is_squeezed(rt):
    frame = smooth_frame(H, W)
    np.testing.assert_array_equal(rt.infer(frame[None]), rt.infer(frame))


def test_rgb_flag_swaps_channels(tiny_onnx):
    frame = smooth_frame(H, W)
    with segdeploy.Runtime(tiny_onnx[0]) as bgr, segdeploy.Runtime(tiny_onnx[0], rgb=True) as rgb:
        np.testing.assert_array_equal(rgb.infer(frame[:, :, ::-1]), bgr.infer(frame))
        assert (bgr.infer(frame[:, :, ::-1].copy()) != bgr.infer(frame)).any()


# --- bad frames: refused with what was expected and what came ----------------------------------


@pytest.mark.parametrize(
    "frame, words",
    [
        (np.zeros((H, W, 3), np.float32), ["float32", "uint8", "ambiguous"]),
        (np.zeros((H, W, 3), np.uint16), ["uint16", "uint8"]),
        (np.zeros((H, W, 3), np.bool_), ["bool", "uint8"]),
        (np.zeros((0, W, 3), np.uint8), ["empty", "(0, 128, 3)"]),
        (np.zeros((H, W, 5), np.uint8), ["(64, 128, 5)", "H x W x 3"]),
        (np.zeros((H,), np.uint8), ["(64,)"]),
        (np.zeros((2, H, W, 3), np.uint8), ["batch of 2", "infer_batch"]),
        ([[1, 2, 3]], ["list", "H x W x 3 uint8"]),
        (None, ["NoneType"]),
    ],
)
def test_bad_frames_raise_frame_error(rt, frame, words):
    with pytest.raises(FrameError) as info:
        rt.infer(frame)
    assert isinstance(info.value, SegDeployError)
    message = str(info.value)
    assert "expected" in message
    for word in words:
        assert word in message


# --- batches ----------------------------------------------------------------------------------


def test_infer_batch_matches_single_frames(rt):
    frames = [smooth_frame(H, W, 1), smooth_frame(50, 70, 2), smooth_frame(H, W, 3)]
    results = rt.infer_batch(frames)
    assert [r.shape for r in results] == [(H, W), (50, 70), (H, W)]
    for frame, labels in zip(frames, results):
        np.testing.assert_array_equal(labels, rt.infer(frame))
    stacked = rt.infer_batch(np.stack([frames[0], frames[2]]))
    np.testing.assert_array_equal(stacked[1], results[2])


@pytest.mark.parametrize(
    "frames, words",
    [
        ([], ["no frames"]),
        (np.zeros((H, W, 3), np.uint8), ["N x H x W x C", "(64, 128, 3)"]),
        (
            [np.zeros((H, W, 3), np.uint8), np.zeros((H, W, 3), np.float64)],
            ["frame 1 of 2", "float64"],
        ),
        ([np.zeros((1, H, W, 3), np.uint8)], ["frame 0 of 1", "(1, 64, 128, 3)"]),
    ],
)
def test_infer_batch_rejects_bad_batches(rt, frames, words):
    with pytest.raises(FrameError) as info:
        rt.infer_batch(frames)
    for word in words:
        assert word in str(info.value)


# --- palettes ---------------------------------------------------------------------------------


def test_colorize_uses_the_dataset_palette_in_bgr(rt):
    labels = np.array([[0, 13], [18, 200]], np.uint8)
    colours = rt.colorize(labels)
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    assert tuple(colours[0, 1]) == datasets.CITYSCAPES.palette[13][::-1]  # car, BGR
    assert tuple(colours[1, 0]) == datasets.CITYSCAPES.palette[18][::-1]
    assert tuple(colours[1, 1]) == (0, 0, 0)  # beyond the palette


def test_overlay_blends_with_alpha(rt):
    frame = smooth_frame(H, W)
    labels = rt.infer(frame)
    np.testing.assert_array_equal(rt.overlay(frame, labels, 0.0), frame)
    np.testing.assert_array_equal(rt.overlay(frame, labels, 1.0), rt.colorize(labels))
    half = rt.overlay(frame, labels, 0.5).astype(int)
    expected = (frame.astype(int) + rt.colorize(labels).astype(int)) / 2.0
    assert np.abs(half - expected).max() <= 1
    with pytest.raises(FrameError, match="do not match"):
        rt.overlay(frame, labels[:10], 0.5)
    with pytest.raises(FrameError, match="alpha"):
        rt.overlay(frame, labels, 1.5)


def test_camvid_and_custom_palettes(tmp_path):
    export_tiny(tmp_path / "camvid.onnx", H, W, num_classes=11)
    with segdeploy.Runtime(tmp_path / "camvid.onnx") as camvid:
        assert tuple(camvid.palette[3]) == datasets.CAMVID.palette[3]
    custom = [(i * 50, 255 - i * 50, 7) for i in range(5)]
    export_tiny(tmp_path / "custom.onnx", H, W, num_classes=5, palette=custom)
    with segdeploy.Runtime(tmp_path / "custom.onnx", rgb=True) as rt:
        assert tuple(rt.colorize(np.array([[4]], np.uint8))[0, 0]) == custom[4]  # RGB order


# --- lifetime, errors, threads -----------------------------------------------------------------


def test_close_is_idempotent_and_final(tiny_onnx):
    runtime = segdeploy.Runtime(tiny_onnx[0])
    runtime.close()
    runtime.close()
    with pytest.raises(EngineError, match="closed"):
        runtime.infer(smooth_frame(H, W))
    with segdeploy.Runtime(tiny_onnx[0]) as inside:
        inside.infer(smooth_frame(H, W))
    assert inside.engine._closed


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        segdeploy.Runtime(tmp_path / "missing.onnx")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(EngineError, match="known suffixes"):
        segdeploy.Runtime(tmp_path / "model.bin")
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    with pytest.raises(EngineError, match="cannot open"):
        segdeploy.Runtime(tmp_path / "broken.onnx")


def test_onnx_without_card_is_refused_with_a_hint(tmp_path, tiny_onnx):
    import onnx

    proto = onnx.load(str(tiny_onnx[0]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(EngineError, match="no segdeploy model card"):
        segdeploy.Runtime(tmp_path / "bare.onnx")


def test_one_runtime_shared_by_threads_gives_sequential_results(rt):
    frames = [smooth_frame(H + 8 * i, W, seed=i) for i in range(6)]
    expected = [rt.infer(f) for f in frames]
    results, errors = {}, []

    def worker(index):
        try:
            for round_ in range(5):
                k = (index + round_) % len(frames)
                results[(index, round_)] = (k, rt.infer(frames[k]))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 20
    for k, labels in results.values():
        np.testing.assert_array_equal(labels, expected[k])


def test_running_maximum_argmax_matches_numpy():
    logits = np.random.RandomState(0).standard_normal((19, 33, 47)).astype(np.float32)
    logits[:, 0, 0] = 1.0  # a tie: the first class wins, as np.argmax
    post = Postprocessor("logits", 19)
    np.testing.assert_array_equal(post(logits, (33, 47)), logits.argmax(0))
    up = post(logits, (66, 94))
    assert up.shape == (66, 94) and up.max() < 19


def test_torch_backend_from_a_zoo_name():
    frame = smooth_frame(50, 90)
    with segdeploy.Runtime("regseg_tiny", device="cpu", input_size=(H, W)) as rt:
        assert rt.backend == "torch"
        labels = rt.infer(frame)
    assert labels.shape == (50, 90) and labels.dtype == np.uint8
    with pytest.raises(SegDeployError, match="stride 16"):
        segdeploy.Runtime("regseg_tiny", device="cpu", input_size=(60, 128))
    with pytest.raises(SegDeployError, match="unknown model"):
        segdeploy.Runtime("regsegg", device="cpu", input_size=(H, W))


def test_torch_and_onnxruntime_agree(tiny_onnx):
    from segdeploy.runtime.torch_backend import TorchEngine

    frame = smooth_frame(H, W)
    engine = TorchEngine(tiny_onnx[1], device="cpu", height=H, width=W)
    with segdeploy.Runtime(engine) as torch_rt, segdeploy.Runtime(tiny_onnx[0]) as ort_rt:
        assert (torch_rt.infer(frame) == ort_rt.infer(frame)).mean() > 0.99
