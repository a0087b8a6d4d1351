"""Native libraries' own stderr lines (libpng, libjpeg, FFmpeg) are kept from the user around
every decode and open in segpredict and segeval; -v shows them (issue 23, item 11)."""

import os
import subprocess
import sys

import pytest
from runtime_support import export_tiny, smooth_frame

cv2 = pytest.importorskip("cv2")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATIVE = ("libpng", "JPEG", "moov atom", "[ WARN", "[ERROR")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    engine = root / "tiny.onnx"
    export_tiny(engine, height=64, width=128)
    good = smooth_frame(48, 96)
    frames = root / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), good)
    ok, jpeg = cv2.imencode(".jpg", good)
    data = jpeg.tobytes()
    (frames / "b.jpg").write_bytes(data[: len(data) // 2])  # decodes, libjpeg complains
    broken = root / "broken"
    broken.mkdir()
    png = bytearray(cv2.imencode(".png", good)[1].tobytes())
    png[30] ^= 0xFF  # the IHDR chunk's CRC no longer matches: libpng error
    (broken / "c.png").write_bytes(bytes(png))
    video = root / "bad.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)  # FFmpeg: moov atom
    return str(engine), str(frames), str(broken), str(video), root


def _segpredict(argv, out):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import sys; from segdeploy.runtime.predict import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code] + argv + ["--out", str(out), "--threads", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_a_truncated_jpeg_decodes_without_libjpeg_lines(files, tmp_path):
    engine, frames, _, _, _ = files
    proc = _segpredict(["--engine", engine, "--source", frames, "-q"], tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert not any(n in proc.stderr for n in NATIVE), proc.stderr
    assert proc.stdout.startswith("segpredict: 2 frames in ")
    shown = _segpredict(["--engine", engine, "--source", frames, "-v"], tmp_path / "v")
    assert shown.returncode == 0 and "JPEG" in shown.stderr  # -v: the decoder's own words


def test_a_corrupt_png_and_a_corrupt_video_are_one_line_each(files, tmp_path):
    engine, _, broken, video, _ = files
    for source, words in ((broken, "cannot read"), (video, "cannot open it as a video")):
        proc = _segpredict(["--engine", engine, "--source", source], tmp_path / "o")
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr
    shown = _segpredict(["--engine", engine, "--source", video, "-v"], tmp_path / "v")
    assert "moov atom" in shown.stderr


def test_python_stderr_still_reaches_the_terminal_inside(tmp_path):
    # Inside the guard our own lines still go out; a native write to descriptor 2 does not.
    code = (
        "import os, sys\n"
        "from segdeploy._native import native_stderr_kept\n"
        "with native_stderr_kept() as kept:\n"
        "    os.write(2, b'native noise\\n')\n"
        "    print('ours', file=sys.stderr)\n"
        "print('kept:', kept.text().strip(), file=sys.stderr)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.stderr.splitlines() == ["ours", "kept: native noise"], proc.stderr
