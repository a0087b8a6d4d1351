"""Bounded memory: 200 distinct frame sizes through a ``--output logits`` engine.

The post-processor interpolates K x H x W float logits to every frame's size. It used to keep
one such buffer per frame size (200 sizes: 113 MB -> 1.59 GB); now it keeps the last two.
"""

import numpy as np
import pytest

from segdeploy.runtime import Runtime

psutil = pytest.importorskip("psutil", reason="psutil measures the process's resident memory")

SIZES = [(200 + i, 360 + 2 * i) for i in range(200)]  # 200 distinct sizes, 0.07-0.3 MP


@pytest.fixture(scope="module")
def logits_engine(tmp_path_factory):
    from runtime_support import tiny_card, tiny_model

    from segdeploy.export import export_onnx

    path = tmp_path_factory.mktemp("logits") / "tiny_logits.onnx"
    card = tiny_card(32, 64)
    card["output"] = {"name": "logits", "kind": "logits", "dtype": "float32", "resolution": "input"}
    export_onnx(tiny_model(), str(path), height=32, width=64, output="logits", card=card)
    return str(path)


def test_200_frame_sizes_through_a_logits_engine_keep_rss_bounded(logits_engine):
    classes = 19
    unbounded = sum(classes * h * w * 4 for h, w in SIZES)
    assert unbounded > 1.5e9  # what one buffer per size would have held
    rng = np.random.RandomState(0)
    process = psutil.Process()
    with Runtime(logits_engine, threads=1) as runtime:
        assert runtime.card["output"]["kind"] == "logits"
        for h, w in SIZES[:3]:  # warm-up: first allocations, ORT arenas
            runtime.infer(rng.randint(0, 256, (h, w, 3), np.uint8))
        before = process.memory_info().rss
        seen = set()
        for h, w in SIZES:
            labels = runtime.infer(rng.randint(0, 256, (h, w, 3), np.uint8))
            assert labels.shape == (h, w) and labels.dtype == np.uint8
            seen.update(np.unique(labels[::16, ::16]).tolist())
        growth = process.memory_info().rss - before
        scratch = runtime._post._scratch
    assert len(seen) >= 5  # the labels vary: the engine really ran
    assert growth < 100 * 2**20, "RSS grew by {:.0f} MB".format(growth / 2**20)
    assert all(len(entries) <= 2 for entries in scratch.values())
