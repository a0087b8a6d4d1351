"""Bounded memory: 200 distinct frame sizes through a ``--output logits`` engine.

The post-processor interpolates K x H x W float logits to every frame's size. It used to keep
one such buffer per frame size (200 sizes: 113 MB -> 1.59 GB in the audit); now it keeps one
buffer per kind, grown by half again when a frame needs more. RSS is measured in a fresh process
(``scripts/soak_logits.py``, the script docs/benchmarks.md quotes) so that the allocator history
of the test session does not count.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from segdeploy.runtime import Runtime

pytest.importorskip("psutil", reason="psutil measures the process's resident memory")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = [(200 + i, 360 + 2 * i) for i in range(200)]  # the script's sizes, 0.07-0.3 MP
CLASSES = 19


def test_200_frame_sizes_through_a_logits_engine_keep_rss_growth_under_100_mb(tmp_path):
    unbounded = sum(CLASSES * h * w * 4 for h, w in SIZES)
    assert unbounded > 1.5e9  # what one buffer per size would have held
    result = tmp_path / "soak.json"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "soak_logits.py"), "--json", str(result)],
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    figures = json.loads(result.read_text())
    assert figures["sizes"] == 200
    assert figures["growth_mb"] < 100, figures


@pytest.fixture(scope="module")
def logits_engine(tmp_path_factory):
    from runtime_support import tiny_card, tiny_model

    from segdeploy.export import export_onnx

    path = tmp_path_factory.mktemp("logits") / "tiny_logits.onnx"
    card = tiny_card(32, 64)
    card["output"] = {"name": "logits", "kind": "logits", "dtype": "float32", "resolution": "input"}
    export_onnx(tiny_model(), str(path), height=32, width=64, output="logits", card=card)
    return str(path)


def test_scratch_stays_within_one_and_a_half_largest_frames(logits_engine):
    rng = np.random.RandomState(0)
    seen = set()
    sizes = SIZES[::10] + SIZES[:3]  # growing, then small again
    with Runtime(logits_engine, threads=1) as runtime:
        assert runtime.card["output"]["kind"] == "logits"
        for h, w in sizes:
            labels = runtime.infer(rng.randint(0, 256, (h, w, 3), np.uint8))
            assert labels.shape == (h, w) and labels.dtype == np.uint8
            seen.update(np.unique(labels[::8, ::8]).tolist())
            scratch = runtime._post._scratch
            assert scratch["up"].nbytes <= 1.5 * max(CLASSES * 4 * a * b for a, b in sizes)
        largest = max(CLASSES * 4 * a * b for a, b in sizes)
        total = sum(buf.nbytes for buf in runtime._post._scratch.values())
    assert len(seen) >= 5  # the labels vary: the engine really ran
    # up (K float32 planes) + best (float32), argmax and mask (uint8) per pixel
    assert total <= 1.5 * largest / (CLASSES * 4) * (CLASSES * 4 + 4 + 1 + 1)
