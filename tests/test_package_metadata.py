"""What pip reads from the built package metadata: the numpy requirement per platform.

A Jetson TX2 (aarch64, Python 3.6) must never be handed numpy 1.19.5 (its aarch64 wheel dies with
"Illegal instruction" on Jetson boards), and apt's numpy 1.13.3 (JetPack 4.6) must satisfy the
requirement (pip 9's console-script wrappers check it; tests/py36/test_pip9_jetpack.py runs them).
"""

import os
import shutil
import subprocess
import sys

import pytest

packaging = pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = (
    "import sys\n"
    "from setuptools import build_meta\n"
    "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))\n"
)


@pytest.fixture(scope="module")
def requires(tmp_path_factory):
    """Requires-Dist of the METADATA that setuptools builds from this checkout (in a copy)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), str(src / name))
    shutil.copytree(
        os.path.join(REPO, "segdeploy"),
        str(src / "segdeploy"),
        ignore=shutil.ignore_patterns("__pycache__", "*.cu", "*.cpp", "*.h", "*.cuh"),
    )
    out = tmp_path_factory.mktemp("meta")
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, str(out)],
        cwd=str(src),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    info = out / proc.stdout.decode().strip().splitlines()[-1] / "METADATA"
    lines = info.read_text(encoding="utf-8").splitlines()
    return [
        Requirement(ln.split(":", 1)[1].strip()) for ln in lines if ln.startswith("Requires-Dist:")
    ]


def _numpy_spec(requires, machine, python):
    env = {"platform_machine": machine, "python_version": python, "extra": ""}
    specs = [
        r.specifier
        for r in requires
        if r.name == "numpy" and (r.marker is None or r.marker.evaluate(env))
    ]
    assert specs, "numpy is not required on {} / Python {}".format(machine, python)
    combined = specs[0]
    for spec in specs[1:]:
        combined &= spec
    return combined


@pytest.mark.parametrize(
    "machine,python,allowed,refused",
    [
        ("aarch64", "3.6", ["1.13.3", "1.19.4"], ["1.19.5"]),  # TX2, JetPack 4.6
        ("aarch64", "3.8", ["1.19.5", "1.24.4"], []),  # Orin, JetPack 5.1
        ("x86_64", "3.6", ["1.19.5"], []),  # the .venv36 lane
        ("x86_64", "3.11", ["1.26.4", "2.2.0"], ["1.12.0"]),
    ],
)
def test_numpy_requirement_per_platform(requires, machine, python, allowed, refused):
    spec = _numpy_spec(requires, machine, python)
    for version in allowed:
        assert spec.contains(version), (machine, python, version, str(spec))
    for version in refused:
        assert not spec.contains(version), (machine, python, version, str(spec))
