"""segbuild's CPU-testable parts and the review's device-side findings (issue 9).

TensorRT objects are the per-release stand-ins generated from the real API data
(``trt_stand_ins``); the CUDA bindings are small stand-ins of pycuda's and cuda-python's
documented calls, used to check *our* wrapper's discipline (push/pop, errors), never to pretend a
GPU ran something. Where the real cuda-python is installed on a machine without a driver, it is
asked for real.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import trt_stand_ins as stand_ins
from trt_stand_ins import new

from segdeploy import card as card_mod
from segdeploy.engines import build_cli, plan_build, trt_compat
from segdeploy.errors import EngineError, SegDeployError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASES = sorted(stand_ins.RELEASES, key=lambda r: tuple(int(p) for p in r.split(".")))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A tiny exported RegSeg (card in the metadata), as segexport writes it."""
    sys.path.insert(0, os.path.join(REPO, "tests", "runtime"))
    try:
        from runtime_support import export_tiny
    finally:
        sys.path.pop(0)
    path = tmp_path_factory.mktemp("segbuild") / "tiny.onnx"
    export_tiny(path, height=64, width=128)
    return path


# --- the card and the trtexec line -------------------------------------------------------------


def test_card_from_metadata_or_sidecar(tiny_onnx, tmp_path):
    card = build_cli.read_card(tiny_onnx)
    assert card["input"]["height"] == 64 and card["output"]["kind"] == "labels"
    # A file without metadata falls back to the sidecar segexport writes next to it.
    import onnx

    model = onnx.load(str(tiny_onnx))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(EngineError, match="no segdeploy model card"):
        build_cli.read_card(bare)
    card_mod.write_sidecar(str(bare), dict(card, precision="fp16"))
    assert build_cli.read_card(bare)["precision"] == "fp16"


def test_trt_version_is_honoured_even_where_tensorrt_is_installed(tiny_onnx, monkeypatch, capsys):
    monkeypatch.setattr(plan_build, "installed_tensorrt_version", lambda: (10, 8))
    assert build_cli.target_version(None) == (10, 8)
    assert build_cli.target_version((8, 2)) == (8, 2)
    argv = [str(tiny_onnx), "--fp16", "--workspace", "512", "--print-trtexec"]
    assert build_cli.main(argv + ["--trt-version", "8.2"]) == 0
    line82 = capsys.readouterr().out.split()
    assert "--workspace=512" in line82 and "--fp16" in line82
    assert not [w for w in line82 if w.startswith(("--memPoolSize", "--staticPlugins"))]
    assert build_cli.main(argv) == 0  # no --trt-version: the installed 10.8
    assert "--memPoolSize=workspace:512" in capsys.readouterr().out.split()
    # segexport asks the same function
    from segdeploy.export.pipeline import tensorrt_version

    assert tensorrt_version(SimpleNamespace(trt_version=(8, 2))) == (8, 2)
    assert tensorrt_version(SimpleNamespace(trt_version=None)) == (10, 8)


def test_tensorrt_11_fp16_builds_from_the_fp16_onnx(tiny_onnx, capsys):
    assert (
        build_cli.main([str(tiny_onnx), "--fp16", "--print-trtexec", "--trt-version", "11.0"]) == 0
    )
    words = capsys.readouterr().out.split()
    assert "--onnx=" + str(tiny_onnx)[: -len(".onnx")] + ".fp16.onnx" in words
    assert "--fp16" not in words
    assert build_cli.default_plan_path("out/m.fp16.onnx") == "out/m.plan"
    with pytest.raises(EngineError, match="segexport --fp16"):
        build_cli.source_for(str(tiny_onnx), "fp16", (11, 0))  # the FP16 ONNX is not there


def test_opset_beyond_the_target_parser_is_refused(tiny_onnx):
    card = build_cli.read_card(tiny_onnx)
    card["provenance"]["opset"] = 17
    with pytest.raises(EngineError, match="at most opset 13"):
        build_cli.check_graph(str(tiny_onnx), card, (8, 2), "fp32")
    build_cli.check_graph(str(tiny_onnx), card, (8, 6), "fp32")  # 8.4 to 8.6 parse opset 17
    assert build_cli.parser_max_opset((10, 0)) is None


def test_dynamic_range_on_a_fixed_size_onnx_is_refused(tiny_onnx, capsys):
    rc = build_cli.main([str(tiny_onnx), "--dynamic", "64x64:128x256", "--print-trtexec"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "fixed input size 64x128" in err[0]


def test_adopted_sidecar_has_what_the_preflight_checks():
    from segdeploy.engines import fingerprint

    tensors = [
        trt_compat.IOTensor("image", 0, True, (1, 3, -1, -1), np.dtype(np.float32)),
        trt_compat.IOTensor("labels", 1, False, (1, -1, -1), np.dtype(np.int32)),
    ]
    profiles = {"image": ((1, 3, 64, 128), (1, 3, 128, 256), (1, 3, 256, 512))}
    device = fingerprint.device_section("Tesla T4", (7, 5))
    info = build_cli.adopted_engine_info(
        b"plan-bytes", "8.6.1", "named", device, tensors, profiles, "fp16", {"trtexec": True}
    )
    assert info["plan_bytes"] == 10 and info["outputs"] == [{"name": "labels", "dtype": "int32"}]
    assert info["profiles"][0]["max"] == [1, 3, 256, 512] and info["build_flags"]["adopted"]
    here = {"tensorrt": "8.6.1", "device": device}
    assert fingerprint.compare(info, here).ok
    other = {"tensorrt": "8.6.1", "device": fingerprint.device_section("A100", (8, 0))}
    assert "rebuild on this device" in fingerprint.compare(info, other).message


def test_adopt_and_build_without_tensorrt_say_so(tiny_onnx, tmp_path, capsys):
    if build_cli.installed_tensorrt_version() is not None:
        pytest.skip("TensorRT is installed here")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    assert build_cli.main(["--adopt", str(plan), "--onnx", str(tiny_onnx)]) == 2
    assert "tensorrt is not installed" in capsys.readouterr().err
    assert build_cli.main([str(tiny_onnx), "--out", str(tmp_path / "a.plan")]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "a.plan"))


# --- timing cache and version-compatible plans, per release -------------------------------------


def _config(trt, calls, accept=True, damaged=False):
    def create(blob):
        calls.append(("create", bytes(blob)))
        if damaged and blob:
            raise TypeError("create_timing_cache(): incompatible buffer")
        return ("cache", bytes(blob))

    def set_cache(cache, ignore_mismatch):
        calls.append(("set", cache, ignore_mismatch))
        return accept or not cache[1]  # a fresh (empty) cache always fits

    return new(
        trt,
        "IBuilderConfig",
        create_timing_cache=create,
        set_timing_cache=set_cache,
        get_timing_cache=lambda: None,
    )


@pytest.mark.parametrize("release", RELEASES)
def test_foreign_timing_cache_is_replaced_with_a_warning(release):
    trt = stand_ins.module(release)
    calls = []
    cache, warning = trt_compat.attach_timing_cache(_config(trt, calls, accept=False), b"T4 cache")
    assert cache == ("cache", b"") and "another GPU or TensorRT" in warning
    assert calls == [
        ("create", b"T4 cache"),
        ("set", ("cache", b"T4 cache"), False),
        ("create", b""),
        ("set", ("cache", b""), False),
    ]
    calls = []
    cache, warning = trt_compat.attach_timing_cache(_config(trt, calls, damaged=True), b"\x00junk")
    assert cache == ("cache", b"") and "damaged" in warning
    cache, warning = trt_compat.attach_timing_cache(_config(trt, []), b"mine")
    assert cache == ("cache", b"mine") and warning is None


@pytest.mark.parametrize("release", RELEASES)
def test_timing_cache_none_after_the_build_is_not_a_crash(release):
    trt = stand_ins.module(release)
    config = _config(trt, [])
    assert trt_compat.serialized_timing_cache(config) is None
    cache = new(trt, "ITimingCache", serialize=lambda: b"\x01\x02")
    config = new(trt, "IBuilderConfig", get_timing_cache=lambda: cache)
    assert trt_compat.serialized_timing_cache(config) == b"\x01\x02"


@pytest.mark.parametrize("release", RELEASES)
def test_version_compatible_plans_may_run_their_host_code(release):
    trt = stand_ins.module(release)
    runtime = new(trt, "Runtime", engine_host_code_allowed=False)
    allowed = trt_compat.allow_engine_host_code(runtime)
    assert allowed is (release != "8.2")  # the property arrived with 8.6
    if allowed:
        assert runtime.engine_host_code_allowed is True


def test_runtime_backend_allows_host_code_for_version_compatible_plans():
    """The TensorRT backend sets the flag from the sidecar before deserializing (source check:
    running it needs a GPU)."""
    path = os.path.join(REPO, "segdeploy", "runtime", "tensorrt_backend.py")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    allow = text.index("allow_engine_host_code(self._runtime)")
    assert text.index('get("version_compatible")') < allow < text.index("deserialize_cuda_engine")


# --- CUDA bindings: never raise, say why ----------------------------------------------------------


def test_python_without_torch_or_onnx_runs_segbuild_runtime_and_segbench(tiny_onnx, tmp_path):
    """Only numpy, onnxruntime and OpenCV on the path (``python -S``: no site-packages), as on a
    device: segbuild --print-trtexec, segexport --onnx --print-trtexec, Runtime and segbench."""
    site = tmp_path / "site"
    site.mkdir()
    for module in ("numpy", "onnxruntime", "cv2"):
        spec = importlib.util.find_spec(module)
        if spec is None:
            pytest.skip("{} is not installed".format(module))
        package = os.path.dirname(spec.origin)
        os.symlink(package, str(site / os.path.basename(package)))
        parent = os.path.dirname(package)
        for entry in os.listdir(parent):  # the wheels' bundled shared libraries
            if entry.endswith(".libs") and entry.split(".")[0].split("_")[0] in (
                "numpy",
                "opencv",
                "onnxruntime",
            ):
                if not (site / entry).exists():
                    os.symlink(os.path.join(parent, entry), str(site / entry))
    code = textwrap.dedent(
        """
        import importlib.util, json, sys
        assert all(importlib.util.find_spec(m) is None for m in ("torch", "onnx", "onnxslim"))
        import numpy as np, segdeploy
        from segdeploy.engines.build_cli import main as segbuild
        from segdeploy.export.cli import main as segexport
        from segdeploy.bench.cli import main as segbench
        onnx, out = sys.argv[1], sys.argv[2]
        assert segbuild([onnx, "--fp16", "--print-trtexec", "--trt-version", "8.2"]) == 0
        assert segexport(["--onnx", onnx, "--backend", "tensorrt", "--print-trtexec",
                          "--trt-version", "10.8", "--out", out]) == 0
        with segdeploy.Runtime(onnx) as rt:
            labels = rt.infer(np.full((64, 128, 3), 90, np.uint8))
        print("labels", labels.shape, labels.dtype)
        assert segbench(["--engine", onnx, "--protocol", "swiftnet", "--warmup", "1", "--iters",
                         "2", "--no-progress", "--json", out + "/bench.json"]) == 0
        print("torch loaded:", "torch" in sys.modules, "onnx loaded:", "onnx" in sys.modules)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), REPO])
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code, str(tiny_onnx), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    trtexec = [line for line in lines if line.startswith("trtexec ")]
    assert "--fp16" in trtexec[0].split() and "--memPoolSize" not in trtexec[0]
    assert "--saveEngine={}/out/tiny.plan".format(tmp_path) in trtexec[1].split()
    assert "labels (64, 128) uint8" in lines
    assert lines[-1] == "torch loaded: False onnx loaded: False"
    with open(str(tmp_path / "out" / "bench.json")) as f:
        assert json.load(f)["runs"][0]["protocol"] == "swiftnet"


def test_errors_are_segdeploy_errors():
    with pytest.raises(SegDeployError, match="8.2 or 10.3"):
        build_cli.parse_trt_version("latest")
    assert build_cli.parse_trt_version("10.3.0.26") == (10, 3)


def test_a_plan_without_card_points_to_adopt(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    with pytest.raises(EngineError, match="segbuild --adopt .*m.plan MODEL.onnx"):
        card_mod.read_sidecar(str(plan))


BLOCK_TORCH = textwrap.dedent(
    """
    import sys, importlib.abc, importlib.machinery

    class NoTorch(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                return importlib.machinery.ModuleSpec(name, self)

        def create_module(self, spec):
            raise ModuleNotFoundError("No module named 'torch' (blocked by the test)")

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, NoTorch())
    from segdeploy.export.cli import main
    rc = main(["--onnx", sys.argv[1], "--backend", "tensorrt", "--print-trtexec",
               "--trt-version", "8.2", "--out", sys.argv[2]])
    print("rc", rc)
    """
)


def test_segexport_onnx_print_trtexec_imports_no_torch(tiny_onnx, tmp_path):
    """The review's finding: segexport --onnx ... --print-trtexec imported torch (check_opset)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, str(tiny_onnx), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "rc 0" in proc.stdout, proc.stdout + proc.stderr
    line = [w for w in proc.stdout.splitlines() if w.startswith("trtexec ")]
    assert len(line) == 1 and "--memPoolSize" not in line[0]


def test_build_checks_then_builds_from_the_graph_the_installed_release_needs(
    tiny_onnx, tmp_path, monkeypatch
):
    """What segbuild and segexport --backend tensorrt hand to the builder (the builder itself
    needs a GPU: test_segbuild_gpu.py)."""
    import shutil

    from segdeploy.engines import tensorrt_builder

    onnx_path = tmp_path / "m.onnx"
    shutil.copy(str(tiny_onnx), str(onnx_path))
    calls = []
    monkeypatch.setattr(
        tensorrt_builder,
        "build_tensorrt_engine",
        lambda source, plan, card, **kw: calls.append((source, plan, kw)) or {"engine": {}},
    )
    checked = []
    real_check = plan_build.check_graph
    monkeypatch.setattr(
        plan_build,
        "check_graph",
        lambda path, card, version, precision: (
            checked.append((path, version, precision)) or real_check(path, card, version, precision)
        ),
    )
    monkeypatch.setattr(plan_build, "installed_tensorrt_version", lambda: (8, 2))
    argv = [str(onnx_path), "--fp16", "--workspace", "512", "--timing-cache", "c.cache"]
    assert build_cli.main(argv) == 0
    source, plan, kw = calls[-1]
    assert source == str(onnx_path) and plan == str(tmp_path / "m.plan")
    assert kw["precision"] == "fp16" and kw["workspace_mib"] == 512
    assert kw["timing_cache"] == "c.cache" and kw["profile"].opt == (64, 128)
    assert checked[-1] == (str(onnx_path), (8, 2), "fp16")
    # TensorRT 11: the FP16-typed sibling, refused in one line while it is missing
    monkeypatch.setattr(plan_build, "installed_tensorrt_version", lambda: (11, 0))
    assert build_cli.main(argv) == 2
    shutil.copy(str(onnx_path), str(tmp_path / "m.fp16.onnx"))
    assert build_cli.main(argv) == 0
    assert calls[-1][0] == str(tmp_path / "m.fp16.onnx") and checked[-1][1] == (11, 0)


def test_segbuild_dblock_plugin_fuses_then_prints_the_plugin_build(tmp_path, capsys):
    """segbuild --dblock-plugin on an exported file: the D-block graph beside it, and the
    trtexec line builds that graph with the plugin library the user named."""
    pytest.importorskip("onnx")
    from segdeploy.engines.build_cli import main as segbuild
    from segdeploy.export.cli import main as segexport

    argv = ["--model", "regseg_tiny", "--res", "64x128", "--out", str(tmp_path), "-q"]
    assert segexport(argv + ["--verify-inputs", "1"]) == 0
    capsys.readouterr()
    onnx_path = str(tmp_path / "regseg_tiny.onnx")
    assert segbuild([onnx_path, "--dblock-plugin"]) == 2  # no plugin library: one line
    assert "--plugin build/dblock" in capsys.readouterr().err
    argv = [onnx_path, "--dblock-plugin", "--plugin", "libdblock_plugin.so"]
    assert segbuild(argv + ["--print-trtexec", "--trt-version", "10.8"]) == 0
    out = capsys.readouterr().out
    fused = tmp_path / "regseg_tiny.dblock.onnx"
    assert "3 D blocks fused" in out and fused.is_file()
    import onnx

    ops = [n.op_type for n in onnx.load(str(fused)).graph.node]
    assert ops.count("DBlockConv") == 3 and "Split" not in ops
    line = [x for x in out.splitlines() if x.startswith("trtexec ")][0]
    assert "--onnx={}".format(fused) in line and "libdblock_plugin.so" in line


@pytest.fixture(scope="module")
def tiny_int8(tiny_onnx, tmp_path_factory):
    """segexport --onnx tiny.onnx --int8: the Q/DQ graph segbuild builds INT8 engines from."""
    pytest.importorskip("onnxruntime.quantization")
    from segdeploy.export.cli import main as segexport

    out = tmp_path_factory.mktemp("int8")
    argv = ["--onnx", str(tiny_onnx), "--int8", "--calib", "random", "--calib-count", "4"]
    argv += ["--out", str(out), "--backend", "onnxruntime", "--budget", "1:100"]
    assert segexport(argv) == 0
    path = out / "tiny.int8.onnx"
    assert build_cli.read_card(path)["precision"] == "int8"
    return path


def test_segbuild_builds_int8_from_the_qdq_graph(tiny_onnx, tiny_int8, capsys, tmp_path):
    for source in ([str(tiny_int8)], [str(tiny_int8.parent / "tiny.onnx"), "--int8"]):
        assert build_cli.main(source + ["--print-trtexec", "--trt-version", "10.8"]) == 0
        words = capsys.readouterr().out.split()
        assert "--int8" in words and "--fp16" not in words
        assert "--onnx=" + str(tiny_int8) in words
        assert "--saveEngine=" + str(tiny_int8.parent / "tiny.plan") in words
    # 11.x networks are strongly typed: the Q/DQ graph's types decide, no --int8
    assert build_cli.main([str(tiny_int8), "--print-trtexec", "--trt-version", "11.4"]) == 0
    assert "--int8" not in capsys.readouterr().out.split()
    # --int8 without the Q/DQ graph, and --fp16 on it: one line each, exit 2
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(tiny_onnx.read_bytes())
    assert build_cli.main([str(lonely), "--int8", "--print-trtexec"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "segexport --onnx" in err[0] and "--calib DIR" in err[0]
    assert build_cli.main([str(tiny_int8), "--fp16", "--print-trtexec"]) == 2
    assert "drop --fp16" in capsys.readouterr().err
