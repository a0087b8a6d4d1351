"""What the Python 3.6 lane's tests share: where the lane's interpreter is, the skip mark for
machines without it, and running it outside the repository. Defines no tests itself."""

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV36 = os.environ.get("SEGDEPLOY_VENV36") or os.path.join(REPO, ".venv36")
PY36 = os.path.join(VENV36, "bin", "python")

needs_lane = pytest.mark.skipif(
    not os.path.isfile(os.path.join(VENV36, ".installed")),
    reason="no Python 3.6 lane: {} is missing (make py36 creates it where pyenv or PATH has "
    "python3.6)".format(VENV36),
)


def run36(args, cwd, tool=None, check=True):
    """Run the 3.6 interpreter (or one of its console scripts) outside the repository, so that
    ``segdeploy`` is the installed copy, never the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    exe = os.path.join(VENV36, "bin", tool) if tool else PY36
    proc = subprocess.run(
        [exe] + list(args),
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            "{} exited {}:\n{}\n{}".format(args, proc.returncode, proc.stdout, proc.stderr)
        )
    return proc
