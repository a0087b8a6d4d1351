"""segpredict: images, folders and videos through the decode / infer / encode pipeline."""

import json
import queue
import threading

import numpy as np
import pytest

# segpredict decodes and encodes with OpenCV; the device lane (no cv2 needed) skips this module.
cv2 = pytest.importorskip("cv2")
from runtime_support import export_tiny, smooth_frame  # noqa: E402

import segdeploy  # noqa: E402
from segdeploy.errors import FrameError  # noqa: E402
from segdeploy.runtime.predict import _put, letterbox, main  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "tiny.onnx"
    export_tiny(path, height=64, width=128, seed=4)
    return str(path)


def _video(path, frames=60, size=(96, 160), fps=12.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size[::-1])
    assert writer.isOpened()
    for i in range(frames):
        writer.write(smooth_frame(size[0], size[1], seed=i % 7))
    writer.release()


def _read_video(path):
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


def test_video_gives_an_overlay_video_of_the_same_frames_size_and_rate(tmp_path, engine, capsys):
    clip = tmp_path / "clip.mp4"
    _video(clip)
    out = tmp_path / "o"
    code = main(["--engine", engine, "--source", str(clip), "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    frames, fps = _read_video(out / "clip_overlay.mp4")
    assert len(frames) == 60
    assert frames[0].shape == (96, 160, 3)
    assert fps == pytest.approx(12.0, abs=0.01)
    report = json.loads((out / "predict.json").read_text())
    assert report["frames"] == 60 and report["source_kind"] == "video"
    assert set(report["stages"]) == {"decode", "infer", "post", "encode"}
    assert all(report["stages"][s]["frames"] == 60 for s in report["stages"])
    assert report["fps_end_to_end"] > 0 and report["pipeline_efficiency"] > 0
    assert "60 frames" in capsys.readouterr().out


def test_labels_of_a_video_are_the_runtimes_labels(tmp_path, engine):
    clip = tmp_path / "clip.mp4"
    _video(clip, frames=8)
    out = tmp_path / "o"
    argv = ["--engine", engine, "--source", str(clip), "--out", str(out), "--save", "labels"]
    assert main(argv + ["--max-frames", "5", "-q"]) == 0
    saved = sorted((out / "clip_labels").glob("*.png"))
    assert [p.name for p in saved] == ["{:06d}.png".format(i) for i in range(5)]
    decoded, _ = _read_video(clip)
    with segdeploy.Runtime(engine) as runtime:
        for path, frame in zip(saved, decoded):
            expected = runtime.infer(frame)
            assert len(np.unique(expected)) >= 3  # the labels vary: equality is not trivial
            assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), expected)


def test_folder_of_images_gives_overlays_with_a_legend(tmp_path, engine):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / "f{}.png".format(i)), smooth_frame(120, 200, seed=i))
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "o"
    argv = ["--engine", engine, "--source", str(images), "--out", str(out), "-q"]
    assert main(argv + ["--save", "overlay,labels,color"]) == 0
    for i in range(3):
        for kind in ("overlay", "labels", "color"):
            assert (out / "f{}_{}.png".format(i, kind)).is_file()
    with_legend = cv2.imread(str(out / "f0_overlay.png"))
    assert main(argv + ["--no-legend", "--out", str(tmp_path / "plain")]) == 0
    plain = cv2.imread(str(tmp_path / "plain" / "f0_overlay.png"))
    corner = np.abs(with_legend[:40, :60].astype(int) - plain[:40, :60]).mean()
    assert corner > 10  # the legend box is drawn top-left, nothing else changes
    assert np.array_equal(with_legend[60:, 120:], plain[60:, 120:])
    labels = cv2.imread(str(out / "f1_labels.png"), cv2.IMREAD_UNCHANGED)
    with segdeploy.Runtime(engine) as runtime:
        assert np.array_equal(labels, runtime.infer(str(images / "f1.png")))


@pytest.mark.parametrize(
    "source,message",
    [
        ("7", "no camera at index 7"),
        ("missing.mp4", "no such file or folder"),
        ("empty_dir", "holds no images"),
    ],
)
def test_bad_sources_are_one_line_and_exit_2(tmp_path, engine, capsys, source, message):
    (tmp_path / "empty_dir").mkdir()
    argv = ["--engine", engine, "--source", str(tmp_path / source) if source != "7" else "7"]
    code = main(argv + ["--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--save", "overlay,mask"], "--save overlay,mask: choose from"),
        (["--alpha", "2"], "--alpha must be between 0 and 1"),
        (["--max-frames", "0"], "--max-frames must be at least 1"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path, engine, capsys, extra, message):
    code = main(["--engine", engine, "--source", "0", "--out", str(tmp_path)] + extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == "segpredict " + segdeploy.__version__


def test_runtime_infer_takes_a_path(tmp_path, engine):
    frame = smooth_frame(70, 90, seed=3)
    cv2.imwrite(str(tmp_path / "f.png"), frame)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with segdeploy.Runtime(engine) as runtime:
        assert np.array_equal(runtime.infer(str(tmp_path / "f.png")), runtime.infer(frame))
        assert np.array_equal(runtime.infer(tmp_path / "f.png"), runtime.infer(frame))
        with pytest.raises(FrameError, match="no such file"):
            runtime.infer(str(tmp_path / "nope.png"))
        with pytest.raises(FrameError, match="not an image OpenCV can decode"):
            runtime.infer(str(tmp_path / "bad.png"))


def test_letterbox_keeps_the_aspect_ratio_and_crops_back(tmp_path, engine):
    frame = smooth_frame(100, 100, seed=1)  # square frame, 1:2 network
    padded, inner = letterbox(frame, (64, 128))
    assert padded.shape == (100, 200, 3) and inner == (100, 100)
    assert np.array_equal(padded[:, :100], frame) and not padded[:, 100:].any()
    cv2.imwrite(str(tmp_path / "sq.png"), frame)
    argv = ["--engine", engine, "--source", str(tmp_path / "sq.png"), "--out", str(tmp_path)]
    assert main(argv + ["--save", "labels", "--letterbox", "-q"]) == 0
    labels = cv2.imread(str(tmp_path / "sq_labels.png"), cv2.IMREAD_UNCHANGED)
    with segdeploy.Runtime(engine) as runtime:
        assert np.array_equal(labels, runtime.infer(padded)[:100, :100])


def test_live_queue_drops_the_oldest_frame_when_full():
    q, stop = queue.Queue(2), threading.Event()
    assert _put(q, 1, stop, True) == 0 and _put(q, 2, stop, True) == 0
    assert _put(q, 3, stop, True) == 1  # 1 was dropped
    assert [q.get_nowait(), q.get_nowait()] == [2, 3]
    stop.set()
    q.put(4)
    q.put(5)
    assert _put(q, 6, stop, False) == 0  # a stopped pipeline never blocks on a full queue


def test_runtime_takes_onnxruntime_providers_and_names_unknown_options(engine):
    with segdeploy.Runtime(engine, providers=["CPUExecutionProvider"]) as runtime:
        assert runtime.engine.options["providers"] == ["CPUExecutionProvider"]
    with pytest.raises(segdeploy.errors.EngineError, match="NoSuchExecutionProvider"):
        segdeploy.Runtime(engine, providers=["NoSuchExecutionProvider"])
    with pytest.raises(segdeploy.errors.EngineError) as info:
        segdeploy.Runtime(engine, thread=2)  # a typo of threads
    message = str(info.value)
    assert "takes no option thread;" in message and "threads" in message
