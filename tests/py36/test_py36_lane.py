"""The Python 3.6 lane: the device side as Jetson TX2 (JetPack 4.6) runs it, numpy +
onnxruntime 1.10 + OpenCV only, installed with ``pip install .`` into ``.venv36`` by ``make py36``
(part of ``make test``). The host exports the graph (torch, onnx); Python 3.6 runs everything
else in a subprocess, as a device would, and each answer is checked against the host's.

Skipped, with the reason, where ``.venv36`` does not exist (no Python 3.6 on this machine).
"""

import json
import os
import sys

import numpy as np
import pytest
from py36_support import REPO, VENV36, needs_lane, run36

pytestmark = needs_lane

# Every option trtexec 8.2 accepts (TensorRT 8.2.1 samples/common/sampleOptions.cpp, the
# getAndDelOption calls), for checking that a printed line would run on a Jetson TX2.
TRTEXEC_82_FLAGS = frozenset(
    "--allowGPUFallback --avgRuns --avgTiming --batch --best --buildOnly --calib --consistency "
    "--deploy --device --directIO --dumpLayerInfo --dumpOutput --dumpProfile --dumpRefit "
    "--duration --explicitBatch --explicitPrecision --exportLayerInfo --exportOutput "
    "--exportProfile --exportTimes --exposeDMA --fp16 --help --idleTime --int8 --iterations "
    "--loadEngine --loadInputs --maxBatch --minTiming --model --noBuilderCache "
    "--noDataTransfers --nvtxMode --onnx --output --percentile --plugins --precisionConstraints "
    "--profilingVerbosity --refit --restricted --safe --saveEngine --separateProfileRun "
    "--serialized --sleepTime --sparsity --streams --tacticSources --threads --timeDeserialize "
    "--timeRefit --timingCacheFile --uff --uffInput --uffNHWC --useCudaGraph --useDLACore "
    "--useManagedMemory --useSpinWait --verbose --warmUp --workspace --minShapes --optShapes "
    "--maxShapes --minShapesCalib --optShapesCalib --maxShapesCalib --inputIOFormats "
    "--outputIOFormats --shapes --noTF32".split()
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny RegSeg with varied labels, exported by the host (card in the metadata only: no
    sidecar, so the 3.6 side must read the protobuf itself), a frame and the host's labels."""
    sys.path.insert(0, os.path.join(REPO, "tests", "runtime"))
    try:
        from runtime_support import export_tiny, smooth_frame
    finally:
        sys.path.pop(0)
    import segdeploy

    root = tmp_path_factory.mktemp("py36")
    onnx_path = root / "tiny.onnx"
    export_tiny(onnx_path, height=64, width=128)
    frame = smooth_frame(64, 128, seed=3)
    np.save(str(root / "frame.npy"), frame)
    with segdeploy.Runtime(str(onnx_path)) as rt:
        labels = np.array(rt.infer(frame))
    assert len(np.unique(labels)) >= 5, (
        "the model must give varied labels for the check to mean much"
    )
    return root, onnx_path, labels


def test_pip_install_dot_put_segdeploy_in_the_36_venv(tmp_path):
    proc = run36(
        [
            "-c",
            "import sys, segdeploy, numpy; print(sys.version_info[:2], segdeploy.__file__, "
            "numpy.__version__)",
        ],
        tmp_path,
    )
    assert proc.stdout.startswith("(3, 6) ")
    location = proc.stdout.split()[2]
    assert os.path.realpath(location).startswith(os.path.realpath(VENV36)), location
    assert "site-packages" in location  # a real install, not the source tree or an egg-link
    # numpy-only import: the package must not pull torch/onnx/onnxruntime on import
    proc = run36(
        [
            "-c",
            "import sys, segdeploy.engines.build_cli, segdeploy.runtime; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'cv2') if m in sys.modules))",
        ],
        tmp_path,
    )
    assert proc.stdout.strip() == "[]"


def test_segbuild_help_and_version(tmp_path):
    proc = run36(["--help"], tmp_path, tool="segbuild")
    for flag in ("--fp16", "--print-trtexec", "--trt-version", "--adopt", "--timing-cache"):
        assert flag in proc.stdout
    import segdeploy

    assert run36(["--version"], tmp_path, tool="segbuild").stdout.strip() == (
        "segbuild " + segdeploy.__version__
    )


def test_print_trtexec_for_82_is_a_line_trtexec_82_accepts(exported, tmp_path):
    root, onnx_path, _ = exported
    proc = run36(
        [
            str(onnx_path),
            "--fp16",
            "--workspace",
            "512",
            "--timing-cache",
            "trt.cache",
            "--print-trtexec",
            "--trt-version",
            "8.2",
        ],
        tmp_path,
        tool="segbuild",
    )
    line = proc.stdout.strip().splitlines()[-1]
    words = line.split()
    assert words[0] == "trtexec"
    flags = {w.split("=")[0] for w in words[1:]}
    assert flags <= TRTEXEC_82_FLAGS, flags - TRTEXEC_82_FLAGS
    assert "--fp16" in words and "--workspace=512" in words
    assert "--onnx={}".format(onnx_path) in words
    assert "--saveEngine={}".format(root / "tiny.plan") in words


def test_segexport_onnx_print_trtexec_needs_no_torch_or_onnx(exported, tmp_path):
    """The review's first finding: this ended in ModuleNotFoundError (torch) under 3.6."""
    _, onnx_path, _ = exported
    proc = run36(
        [
            "--onnx",
            str(onnx_path),
            "--backend",
            "tensorrt",
            "--print-trtexec",
            "--trt-version",
            "8.2",
            "--out",
            str(tmp_path / "out"),
        ],
        tmp_path,
        tool="segexport",
    )
    line = [w for w in proc.stdout.splitlines() if w.startswith("trtexec ")]
    assert len(line) == 1 and "--memPoolSize" not in line[0], proc.stdout
    assert "--saveEngine={}".format(tmp_path / "out" / "tiny.plan") in line[0].split()


def test_segbuild_argument_errors_are_one_line(exported, tmp_path):
    _, onnx_path, _ = exported
    cases = [
        ([str(tmp_path / "missing.onnx"), "--print-trtexec"], "does not exist"),
        ([str(onnx_path)], "TensorRT is not installed"),  # no TensorRT in this lane
        (["--adopt", str(tmp_path / "x.plan")], "needs the ONNX file"),
        ([str(onnx_path), "--dynamic", "64x64:128x256", "--print-trtexec"], "fixed input size"),
    ]
    for args, expected in cases:
        proc = run36(args, tmp_path, tool="segbuild", check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("segbuild: error: "), proc.stderr
        assert expected in lines[0]
    proc = run36(
        [str(onnx_path), "--trt-version", "latest"], tmp_path, tool="segbuild", check=False
    )
    assert proc.returncode == 2 and "8.2 or 10.3" in proc.stderr


def test_runtime_under_36_gives_the_hosts_labels(exported, tmp_path):
    root, onnx_path, host_labels = exported
    script = (
        "import sys, numpy as np, segdeploy, onnxruntime\n"
        "frame = np.load(sys.argv[2])\n"
        "with segdeploy.Runtime(sys.argv[1]) as rt:\n"
        "    np.save(sys.argv[3], np.array(rt.infer(frame)))\n"
        "print(onnxruntime.__version__)\n"
    )
    out = tmp_path / "labels36.npy"
    proc = run36(["-c", script, str(onnx_path), str(root / "frame.npy"), str(out)], tmp_path)
    assert proc.stdout.strip() == "1.10.0"
    labels36 = np.load(str(out))
    assert labels36.dtype == np.uint8 and labels36.shape == host_labels.shape
    assert len(np.unique(labels36)) >= 5
    np.testing.assert_array_equal(labels36, host_labels)


@pytest.mark.parametrize("protocol", ["regseg", "swiftnet", "mmseg", "runtime"])
def test_segbench_under_36_with_each_protocol(exported, tmp_path, protocol):
    _, onnx_path, _ = exported
    out = tmp_path / "bench.json"
    run36(
        [
            "--engine",
            str(onnx_path),
            "--protocol",
            protocol,
            "--warmup",
            "1",
            "--iters",
            "3",
            "--no-progress",
            "--json",
            str(out),
        ],
        tmp_path,
        tool="segbench",
    )
    with open(str(out)) as f:
        runs = json.load(f)["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert run["protocol"] == protocol and run["backend"] == "onnxruntime"
    assert run["versions"]["python"].startswith("3.6") and len(run["samples_ms"]) == 3
    assert all(s > 0 for s in run["samples_ms"])


# The repository's own device-side unit tests that need nothing but numpy: run by Python 3.6's
# pytest against the installed package (pytest's script does not put the checkout on sys.path).
DEVICE_TESTS = ["test_trtexec.py", "test_profiles.py", "test_fingerprint.py", "test_devices.py"]


def test_device_side_unit_tests_pass_under_36(tmp_path):
    paths = [os.path.join(REPO, "tests", "engines", name) for name in DEVICE_TESTS]
    probe = tmp_path / "conftest_probe.py"
    probe.write_text(
        "import segdeploy\n\ndef test_installed_copy():\n"
        "    assert 'site-packages' in segdeploy.__file__, segdeploy.__file__\n"
    )
    proc = run36(
        ["-q", "-p", "no:cacheprovider", str(probe)] + paths, tmp_path, tool="pytest", check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary
