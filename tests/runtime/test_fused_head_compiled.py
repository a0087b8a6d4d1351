"""The compiled fused head (the SegHead kernel's host library, its CPU layout) behind
``FusedHead``: the same labels as the numpy head and ONNX Runtime's arithmetic on any thread
count, scratch kept between frames, and a numpy fallback, said once, where no compiler is found."""

import os
import subprocess
import sys

import numpy as np
import pytest
from runtime_support import needs_compiled_head

from segdeploy.errors import FrameError
from segdeploy.plugins.seghead import host
from segdeploy.runtime.head import FusedHead, reference_labels


@pytest.fixture(autouse=True)
def compiled():
    needs_compiled_head()


@pytest.mark.parametrize(
    "classes, in_hw, out_hw", [(19, (24, 40), (192, 320)), (7, (33, 17), (77, 40))]
)
def test_every_thread_count_gives_the_reference_labels(classes, in_hw, out_hw):
    logits = host.sample_logits(classes, in_hw[0], in_hw[1], seed=classes)[0]
    expected = reference_labels(logits, out_hw)
    numpy_labels = FusedHead(impl="numpy")(logits, out_hw)
    assert len(np.unique(expected)) >= 5
    for threads in (1, 2, 3, 7):
        head = FusedHead(impl="compiled", threads=threads)
        head._compiled.work_per_thread = 1  # every thread asked for, small as the case is
        labels = head(logits, out_hw)
        assert head.impl == "compiled"
        # ties aside (planted ones), the reference's labels; the numpy head's everywhere
        assert (labels == expected).mean() >= 0.999
        assert np.array_equal(labels, numpy_labels)
        assert 0 < head.last_mixed < 0.9  # uniform cells decided without interpolation


def test_scratch_is_kept_and_strided_logits_are_read_right():
    head = FusedHead(impl="compiled", threads=2)
    batch = np.stack([host.sample_logits(19, 24, 40, seed=k)[0] for k in range(2)], axis=1)
    out = np.empty((96, 160), np.uint8)
    for k in range(2):
        view = batch[:, k]  # (19, 24, 40), not contiguous
        assert not view.flags.c_contiguous
        assert head(view, (96, 160), out=out) is out
        assert np.array_equal(out, reference_labels(np.ascontiguousarray(view), (96, 160)))
    workspace = head._compiled._workspace
    head(batch[:, 0], (96, 160), out=out)
    assert head._compiled._workspace is workspace  # same size: nothing new per frame


def test_the_host_library_checks_its_own_arguments():
    cpu = host.CpuHead(1)
    with pytest.raises(ValueError, match="rejected"):
        cpu(np.zeros((0, 4, 4), np.float32), (8, 8), np.empty((8, 8), np.uint8))


def test_an_unknown_implementation_is_one_clear_error(monkeypatch):
    with pytest.raises(FrameError, match="numpy"):
        FusedHead(impl="cuda")
    monkeypatch.setenv("SEGDEPLOY_HEAD_IMPL", "fast")
    with pytest.raises(FrameError, match="SEGDEPLOY_HEAD_IMPL"):
        FusedHead()
    monkeypatch.setenv("SEGDEPLOY_HEAD_IMPL", "numpy")
    assert FusedHead().impl == "numpy"


def test_without_a_compiler_auto_falls_back_to_numpy_and_compiled_refuses(tmp_path):
    """A fresh cache and no compiler on PATH: a machine without g++."""
    code = (
        "import numpy as np\n"
        "from segdeploy.errors import FrameError\n"
        "from segdeploy.runtime.head import FusedHead, reference_labels\n"
        "x = np.random.RandomState(0).standard_normal((5, 6, 7)).astype(np.float32)\n"
        "head = FusedHead()\n"
        "assert head.impl == 'numpy', head.impl\n"
        "assert (head(x, (24, 28)) == reference_labels(x, (24, 28))).all()\n"
        "assert FusedHead().impl == 'numpy'\n"
        "try:\n"
        "    FusedHead(impl='compiled')\n"
        "except FrameError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = dict(os.environ, PATH=str(tmp_path), SEGDEPLOY_CACHE=str(tmp_path / "cache"))
    env.pop("CXX", None)
    env.pop("SEGDEPLOY_HEAD_IMPL", None)
    proc = subprocess.run(  # noqa: UP022 (capture_output is 3.7+; the device lane runs 3.6)
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "refused: the compiled fused head is unavailable" in out and "C++ compiler" in out
    # the fallback is said once, in one line, whatever the number of heads
    assert err.count("fused head: numpy (slower) instead of the compiled head") == 1
    assert "Traceback" not in err
