"""JetPack 4.6 as it comes: Python 3.6, pip 9.0.1, setuptools 39.0.1 and apt's numpy 1.13.3.

pip 9's console-script wrappers call ``pkg_resources.load_entry_point``, which checks the
package's install_requires against what is installed before ``main`` runs: a minimum numpy above
1.13.3 made every command die with DistributionNotFound. ``make py36`` builds ``.venv-pip9``; each
test installs this checkout into it with ``pip install --no-deps .`` (pip 9 ignores
pyproject.toml and runs setup.py with setuptools 39) and runs the commands outside the checkout.

Skipped, with the reason, where ``.venv-pip9`` does not exist (no Python 3.6 on this machine).
"""

import os
import shutil
import subprocess
import sys

import pytest
from py36_support import REPO

sys.path.insert(0, os.path.join(REPO, "tests", "device"))
import tiny_onnx  # noqa: E402

sys.path.pop(0)

VENV = os.environ.get("SEGDEPLOY_VENV_PIP9") or os.path.join(REPO, ".venv-pip9")
BIN = os.path.join(VENV, "bin")

pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(VENV, ".installed")),
    reason="no JetPack-like pip 9 env: {} is missing (make py36 creates it where pyenv or PATH "
    "has python3.6)".format(VENV),
)

# What `pip install .` needs of the checkout (copied: pip 9 and setup.py write into the tree).
SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "segdeploy")


def _run(args, cwd, check=True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    proc = subprocess.run(args, cwd=str(cwd), env=env, capture_output=True, timeout=300)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    if check and proc.returncode != 0:
        raise AssertionError("{} exited {}:\n{}\n{}".format(args, proc.returncode, out, err))
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The checkout installed into the pip 9 env the way the runbook says: --no-deps."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        origin = os.path.join(REPO, name)
        if os.path.isdir(origin):
            shutil.copytree(origin, str(src / name), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, str(src / name))
    _, out, _ = _run([os.path.join(BIN, "pip"), "--version"], src)
    assert out.startswith("pip 9.0.1 ")
    _run([os.path.join(BIN, "pip"), "install", "--no-deps", "--upgrade", "."], src)
    _, out, _ = _run(
        [
            os.path.join(BIN, "python"),
            "-c",
            "import numpy, setuptools, sys; "
            "print(numpy.__version__, setuptools.__version__, sys.version_info[:2])",
        ],
        src,
    )
    assert out.split()[:2] == ["1.13.3", "39.0.1"], out
    return tmp_path_factory.mktemp("cwd")


@pytest.mark.parametrize("tool", ["segbuild", "segbench", "segpredict"])
def test_console_scripts_start_with_apt_numpy(installed, tool):
    code, out, err = _run([os.path.join(BIN, tool), "--help"], installed, check=False)
    assert code == 0, err[-2000:]
    assert "usage:" in out and "DistributionNotFound" not in err


def test_print_trtexec_for_82_and_the_80_refusal(installed):
    onnx_path = tiny_onnx.path("static")
    _, out, _ = _run(
        [os.path.join(BIN, "segbuild"), onnx_path, "--print-trtexec", "--trt-version", "8.2"],
        installed,
    )
    assert out.strip().splitlines()[-1].split()[:2] == ["trtexec", "--onnx=" + onnx_path]
    code, out, err = _run(
        [os.path.join(BIN, "segbuild"), onnx_path, "--print-trtexec", "--trt-version", "8.0"],
        installed,
        check=False,
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "TensorRT 8.0 is older" in lines[0] and "JetPack 4.6.1" in lines[0]


# On a TX2 the numpy!=1.19.5 requirement's marker (aarch64, Python < 3.7) is true: the wrapper
# must still accept apt's 1.13.3. platform.machine() is what pkg_resources' markers read.
AS_AARCH64 = (
    "import platform, runpy, sys\n"
    "platform.machine = lambda: 'aarch64'\n"
    "import pkg_resources\n"
    "req = [str(r) for r in pkg_resources.get_distribution('segdeploy').requires()]\n"
    "print(req, file=sys.stderr)\n"
    "sys.argv = [sys.argv[1], '--help']\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def test_console_script_on_aarch64_with_the_1195_exclusion(installed):
    code, out, err = _run(
        [os.path.join(BIN, "python"), "-c", AS_AARCH64, os.path.join(BIN, "segbuild")],
        installed,
        check=False,
    )
    assert code == 0, err[-2000:]
    assert "usage:" in out
    assert "numpy!=1.19.5" in err.splitlines()[0], err  # the marker held on 'aarch64'
