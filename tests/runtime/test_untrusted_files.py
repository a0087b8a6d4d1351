"""Nothing in a data file runs as code: a hostile .pt2 and a sidecar that names a library.

Each case has a positive control that shows the file really runs code when loaded the unsafe way
(the marker file appears), so the marker's absence under segdeploy means something.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from segdeploy import card as card_mod
from segdeploy.bench import cli as bench_cli
from segdeploy.engines import fingerprint
from segdeploy.errors import EngineError, EngineMismatchError, SegDeployError
from segdeploy.runtime import Runtime


def fake_plan(tmp_path, **engine):
    """Bytes with a plan's name and a valid sidecar; TensorRT never sees them in these tests."""
    from runtime_support import tiny_card

    path = tmp_path / "model.plan"
    path.write_bytes(b"\x00" * 64)
    info = {
        "backend": "tensorrt",
        "tensorrt": "10.3.0",
        "plan_bytes": 64,
        "device": fingerprint.device_section("NVIDIA H100", (9, 0)),
    }
    info.update(engine)
    card_mod.write_sidecar(str(path), card_mod.with_engine(tiny_card(), info))
    return str(path)


def _one_line(capsys, code, *needles, prog="segbench"):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith(prog + ": error: "), err
    assert "Traceback" not in out + err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- .pt2 ---------------------------------------------------------------------------------------


class _WritesMarker(object):
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (exec, ("open({!r}, 'w').write('ran')".format(self.path),))


def make_evil_pt2(folder, marker):
    """A real exported program whose weight is a pickle that writes ``marker`` when loaded."""
    import torch

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.w

    good = os.path.join(str(folder), "good.pt2")
    torch.export.save(torch.export.export(Scale(), (torch.ones(3),)), good)
    payload = io.BytesIO()
    torch.save(_WritesMarker(str(marker)), payload)
    evil = os.path.join(str(folder), "evil.pt2")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data/weights/weight_0"):
                data = payload.getvalue()
            elif info.filename.endswith("data/weights/model_weights_config.json"):
                config = json.loads(data.decode("utf-8"))
                for entry in config["config"].values():
                    entry["use_pickle"] = True  # torch.export.load then unpickles it fully
                data = json.dumps(config).encode("utf-8")
            dst.writestr(info, data)
    return evil


@pytest.fixture(scope="module")
def evil_pt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pt2")
    marker = folder / "marker"
    evil = make_evil_pt2(folder, marker)
    # positive control: plain torch.export.load runs the payload (ours: it writes the marker)
    import torch

    with pytest.raises(Exception, match="not an instance of torch.nn.Parameter"):  # too late
        torch.export.load(evil)
    assert marker.exists(), "the test file does not run code when loaded unsafely"
    marker.unlink()
    return evil, marker


def test_segbench_engine_evil_pt2_executes_nothing(evil_pt2, capsys):
    evil, marker = evil_pt2
    code = bench_cli.main(["--engine", evil, "--iters", "1", "--warmup", "0"])
    line = _one_line(capsys, code, "exported PyTorch program", "--unsafe-pickle")
    assert evil in line
    assert not marker.exists()


def test_runtime_refuses_pt2_without_unsafe(evil_pt2):
    evil, marker = evil_pt2
    with pytest.raises(EngineError, match="unsafe=True"):
        Runtime(evil)
    assert not marker.exists()


# --- TensorRT plugin named by a sidecar ---------------------------------------------------------

PLUGIN_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void on_load(void) {
    const char *path = getenv("SEGDEPLOY_TEST_MARKER");
    if (path) { FILE *f = fopen(path, "w"); if (f) { fputs("loaded", f); fclose(f); } }
}
"""


@pytest.fixture(scope="module")
def evil_library(tmp_path_factory):
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler (gcc/cc) to build the test's shared library")
    folder = tmp_path_factory.mktemp("plugin")
    source = folder / "evil.c"
    source.write_text(PLUGIN_SOURCE)
    library = folder / "libevil.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=120
    )
    marker = folder / "marker"
    # positive control: loading the library the way plugins are loaded runs its constructor
    env = dict(os.environ, SEGDEPLOY_TEST_MARKER=str(marker))
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from segdeploy.engines.tensorrt_builder import load_plugins; "
            "load_plugins([{!r}])".format(str(library)),
        ],
        env=env,
        check=True,
        timeout=120,
    )
    assert marker.read_text() == "loaded"
    marker.unlink()
    return library, marker


def _plan_naming(tmp_path, library):
    record = fingerprint.plugin_records([str(library)])[0]  # file, path and sha256
    return fake_plan(tmp_path, plugins=[record])


def test_plan_whose_sidecar_names_a_library_loads_nothing(tmp_path, evil_library, monkeypatch):
    library, marker = evil_library
    monkeypatch.setenv("SEGDEPLOY_TEST_MARKER", str(marker))
    plan = _plan_naming(tmp_path, library)
    with pytest.raises(EngineMismatchError) as info:
        Runtime(str(plan))
    text = str(info.value)
    assert "libevil.so" in text and "never from the sidecar" in text
    assert len(text.splitlines()) == 1
    assert not marker.exists()


def test_segbench_plan_whose_sidecar_names_a_library(tmp_path, evil_library, monkeypatch, capsys):
    library, marker = evil_library
    monkeypatch.setenv("SEGDEPLOY_TEST_MARKER", str(marker))
    plan = _plan_naming(tmp_path, library)
    code = bench_cli.main(["--engine", str(plan)])
    _one_line(capsys, code, "libevil.so", "--plugin")
    assert not marker.exists()


def test_a_passed_plugin_that_differs_is_refused_before_loading(
    tmp_path, evil_library, monkeypatch
):
    library, marker = evil_library
    monkeypatch.setenv("SEGDEPLOY_TEST_MARKER", str(marker))
    plan = _plan_naming(tmp_path, library)
    other = tmp_path / "elsewhere"
    other.mkdir()
    changed = other / "libevil.so"
    changed.write_bytes(library.read_bytes() + b"\0")  # same name, other bytes
    with pytest.raises(EngineMismatchError, match="differs from the one"):
        Runtime(str(plan), plugins=[str(changed)])
    assert not marker.exists()


def test_sidecar_plugin_records_are_validated(tmp_path):
    plan = fake_plan(tmp_path, plugins=[{"file": 3}])
    with pytest.raises(SegDeployError, match="engine.plugins"):
        card_mod.read_sidecar(str(plan))
