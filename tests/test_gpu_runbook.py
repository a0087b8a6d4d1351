"""docs/gpu-runbook.md as a user runs it: every ``sh`` block, in the environment it names.

The runbook's own comment (top of the file) gives the convention: the block's first line
``# env: NAME`` picks the environment (``host``: this interpreter's venv with torch and onnx;
``jetpack46``: ``.venv-pip9``, Python 3.6 + pip 9.0.1 + setuptools 39.0.1 + numpy 1.13.3;
``device``: ``.venv-device``, Python 3.11 without torch, onnx or OpenCV; ``gpu``: not run). In a
block, ``# GPU only`` lines are not run, ``# here: CMD`` lines run CMD, ``# setup`` lines are
what the prepared environment stands in for, and a comment with ``not here: WHY`` is not run.
Every block, run or not, must be valid shell.

The blocks run in order, in one copy of the checkout (the host's export writes ``out/`` for the
device blocks). pip 9 cannot reach the registry from this machine, so its installs read a folder
of wheels (PIP_FIND_LINKS + PIP_NO_INDEX) that this machine's pip downloads for Python 3.6 first.
Environments missing here are skipped with the reason (``make test`` builds them all).
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNBOOK = os.path.join(REPO, "docs", "gpu-runbook.md")
ENVS = {
    "host": os.path.dirname(sys.executable),
    "jetpack46": os.path.join(REPO, ".venv-pip9", "bin"),
    "device": os.path.join(REPO, ".venv-device", "bin"),
}
COPY = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "requirements-device.txt")
COPY_DIRS = ("segdeploy", "tests")


def blocks(text=None):
    """[(env, [lines])] of the runbook's ```sh blocks, in order."""
    if text is None:
        with open(RUNBOOK, encoding="utf-8") as f:
            text = f.read()
    found = []
    for body in re.findall(r"^```sh\n(.*?)^```", text, flags=re.M | re.S):
        lines = body.splitlines()
        match = re.match(r"#\s*env:\s*(\w+)\s*$", lines[0]) if lines else None
        assert match, "a sh block must start with '# env: NAME':\n" + body
        found.append((match.group(1), lines[1:]))
    return found


def script_for(lines):
    """The block as it runs here: GPU-only and setup lines out, '# here:' lines replaced."""
    out = []
    for line in lines:
        here = re.search(r"#\s*here:\s*(.+)$", line)
        if here:
            out.append(here.group(1).strip())
        elif re.search(r"#\s*(GPU only|setup)\b", line) or re.search(r"#.*\bnot here:", line):
            out.append(": skipped here")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_runbook_blocks_name_known_environments_and_parse_as_shell():
    found = blocks()
    assert len(found) >= 10
    assert {env for env, _ in found} <= set(ENVS) | {"gpu"}
    for env, lines in found:
        for text in ("\n".join(lines), script_for(lines)):
            proc = subprocess.run(["bash", "-n"], input=text.encode(), stderr=subprocess.PIPE)
            assert proc.returncode == 0, (env, text, proc.stderr.decode())


def test_no_command_hides_outside_a_fenced_block():
    """An indented code block would be a command the test never sees: every one is fenced."""
    with open(RUNBOOK, encoding="utf-8") as f:
        lines = f.read().splitlines()
    fenced, previous, loose = False, "", []
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and not previous.strip():
            loose.append("{}: {}".format(number, line.strip()))
        previous = line
    assert not fenced, "a ``` block is not closed"
    assert loose == [], "indented code outside ```sh/```text blocks:\n" + "\n".join(loose)


def test_the_convention_parser():
    text = (
        "```sh\n# env: device\nsegbuild a.onnx  # GPU only\npip install x  # setup\n"
        "segbuild b.onnx   # here: segbuild b.onnx --print-trtexec\nls\n"
        "pip install y  # for z; not here: why\n```\n"
    )
    ((env, lines),) = blocks(text)
    assert env == "device"
    assert script_for(lines).splitlines() == [
        ": skipped here",
        ": skipped here",
        "segbuild b.onnx --print-trtexec",
        "ls",
        ": skipped here",
    ]


def _wheelhouse(tmp_path):
    """Wheels of requirements-device.txt's Python 3.6 pins, fetched by this machine's pip (which
    evaluates markers for itself, so the pins are passed without theirs)."""
    with open(os.path.join(REPO, "requirements-device.txt")) as f:
        pins = [
            line.split(";")[0].strip()
            for line in f
            if "==" in line and 'python_version < "3.7"' in line
        ]
    assert len(pins) >= 5
    house = tmp_path / "wheels36"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
         "--python-version", "3.6.9", "--implementation", "cp", "--no-deps", "-d", str(house)]
        + pins,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip("cannot fetch the Python 3.6 wheels: " + proc.stdout.decode()[-300:])
    return str(house)


def test_runbook_runs_as_written(tmp_path):
    missing = [
        "{} ({})".format(name, path)
        for name, path in ENVS.items()
        if not os.path.isfile(os.path.join(path, "python"))
    ]
    if missing:
        pytest.skip("environments missing here: " + ", ".join(missing) + " (make test builds them)")
    work = tmp_path / "checkout"
    work.mkdir()
    for name in COPY:
        shutil.copy(os.path.join(REPO, name), str(work / name))
    for name in COPY_DIRS:
        shutil.copytree(
            os.path.join(REPO, name), str(work / name), ignore=shutil.ignore_patterns("__pycache__")
        )
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    base.update(PYTHONNOUSERSITE="1")
    wheels = _wheelhouse(tmp_path)
    for index, (env_name, lines) in enumerate(blocks()):
        if env_name == "gpu":
            continue
        env = dict(base, PATH=ENVS[env_name] + os.pathsep + base["PATH"])
        if env_name == "host":
            env["PYTHONPATH"] = str(work)
        if env_name == "jetpack46":
            env.update(PIP_FIND_LINKS=wheels, PIP_NO_INDEX="1")
        script = "set -e -o pipefail\n" + script_for(lines)
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=str(work),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
        out = proc.stdout.decode("utf-8", "replace")
        assert proc.returncode == 0, "block {} ({}):\n{}\n---\n{}".format(
            index, env_name, script, out[-3000:]
        )
        assert "Traceback" not in out, out[-3000:]
