"""The device lane collects, and its CPU part passes, where a device runs it: Python 3.6
(``.venv36``, JetPack 4.6) and a Python 3.11 without torch, onnx or OpenCV (``.venv-device``,
``pip install --no-deps .`` + requirements-device.txt, as a T4 or Orin owner installs it).

``make test`` builds both environments; each is skipped, with the reason, where it is missing.
"""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The runbook's device test step runs exactly these (docs/gpu-runbook.md).
LANE = ["tests/device", "tests/engines", "tests/runtime", "tests/plugins"]
ENVS = {
    "py36": os.environ.get("SEGDEPLOY_VENV36") or os.path.join(REPO, ".venv36"),
    "torch-free": os.environ.get("SEGDEPLOY_VENV_DEVICE") or os.path.join(REPO, ".venv-device"),
}
INSIDE = "SEGDEPLOY_DEVICE_LANE"  # set for the inner run, which must not start itself again


def _pytest(env_name, args):
    venv = ENVS[env_name]
    if os.environ.get(INSIDE):
        pytest.skip("this is the lane's own run")
    if not os.path.isfile(os.path.join(venv, ".installed")):
        pytest.skip("{} is missing (make test builds it: make py36 / make device-env)".format(venv))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", **{INSIDE: "1"})
    proc = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-m", "pytest", "-p", "no:cacheprovider"] + args,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout


@pytest.mark.parametrize("env_name", sorted(ENVS))
def test_lane_collects(env_name):
    code, out = _pytest(env_name, ["--collect-only", "-q"] + LANE)
    assert code == 0 and "error" not in out.lower().splitlines()[-1], out[-4000:]
    # the tensorrt tests are collected (and skip at run time without a GPU), not lost
    for test in (
        "tests/runtime/test_tensorrt_backend.py::test_fp32_engine_matches_onnxruntime",
        "tests/engines/test_segbuild_gpu.py::test_segbuild_builds_a_plan_runtime_accepts",
        "tests/device/test_trt_versions.py::test_segbuild_print_trtexec_for_80_is_a_one_line_refusal",
    ):
        assert test in out, test


def test_torch_free_env_is_what_it_claims():
    venv = ENVS["torch-free"]
    if os.environ.get(INSIDE):
        pytest.skip("this is the lane's own run")
    if not os.path.isfile(os.path.join(venv, ".installed")):
        pytest.skip("{} is missing (make device-env builds it)".format(venv))
    probe = subprocess.run(
        [
            os.path.join(venv, "bin", "python"),
            "-c",
            "import importlib.util as u; "
            "print([m for m in ('torch', 'onnx', 'cv2') if u.find_spec(m)])",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "[]", probe.stdout


def test_lane_cpu_tests_pass_without_torch():
    # (Python 3.6 runs them too: docs/gpu-runbook.md's jetpack46 block, tests/test_gpu_runbook.py)
    code, out = _pytest("torch-free", ["-q", "tests/device"])
    summary = out.strip().splitlines()[-1]
    assert code == 0 and " passed" in summary and "failed" not in summary, out[-4000:]
