"""segdeploy-check: the report this machine gives, its schema and Markdown, that a failing step
never stops the others, and the exit code policy (0: everything that could run passed; 1: a step
failed; 2: a usage mistake).

The check runs here for real: on a machine without a GPU every GPU step is skipped with its
reason, and the failure is injected through a real broken input (an .onnx file that is not one),
never through a stand-in for TensorRT or CUDA.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from segdeploy.check import cli, probe, report, runner
from segdeploy.errors import MissingDependencyError, SegDeployError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Steps that need a GPU (and TensorRT for some): on a CPU-only host each is skipped with a reason.
GPU_STEPS = (
    "segbuild-fp32",
    "segbuild-fp16",
    "segbuild-int8",
    "parity",
    "segbench",
    "dblock-gpu-check",
    "dblock-plugin",
    "table1-tensorrt",
    "table1-torch",
    "seghead-gpu-check",
    "head-bench",
    "uint8-head",
    "triton",
    "zoo-regseg",
    "pinned-memory",
)

_GPU = probe.gpu()
cpu_only = pytest.mark.skipif(
    _GPU[0], reason="a GPU is here: the whole check runs in scripts/device_acceptance.sh instead"
)


def _markdown_tables(text):
    """[[row cells, ...], ...] of every pipe table in ``text``."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            current.append([c.strip() for c in cells])
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("check")
    doc = cli.run_check(str(out), quick=True, stream=open(os.devnull, "w"))
    return out, doc


@cpu_only
def test_report_from_this_machine_marks_every_gpu_step_with_its_reason(cpu_report):
    out, doc = cpu_report
    steps = dict((s["name"], s) for s in doc["steps"])
    assert list(steps) == [s.name for s in cli.steps()]
    for name in GPU_STEPS:
        assert steps[name]["status"] == "skipped", (name, steps[name])
        reason = steps[name]["reason"]
        assert reason and "\n" not in reason
        # the reason names what is missing here
        assert re.search(r"TensorRT|GPU|CUDA|driver|libcuda", reason), (name, reason)
        assert steps[name]["would_run"]
    assert steps["environment"]["status"] == "ok"
    assert doc["environment"]["gpu"].startswith("no: ")
    # which fused labels head a CPU engine's Runtime runs here (this machine has a C++ compiler)
    assert doc["environment"]["fused_head"] in ("compiled", "numpy") or doc["environment"][
        "fused_head"
    ].startswith("numpy (")
    assert (
        "fused head " + doc["environment"]["fused_head"] in steps["environment"]["data"]["summary"]
    )
    assert doc["exit_code"] == 0 and doc["summary"]["failed"] == 0
    assert doc["summary"]["skipped"] >= len(GPU_STEPS)


def test_json_report_schema(cpu_report):
    out, doc = cpu_report
    with open(os.path.join(str(out), "check.json")) as f:
        data = json.load(f)
    assert data["schema"] == report.SCHEMA
    for key in ("command", "mode", "started_utc", "duration_s", "summary", "exit_code"):
        assert key in data
    assert data["mode"] == "quick"
    env = data["environment"]
    for key in ("python", "numpy", "gpu", "tensorrt", "driver_cuda", "device_table"):
        assert key in env, key
    assert sum(data["summary"].values()) == len(data["steps"]) == len(cli.steps())
    for step in data["steps"]:
        assert tuple(step) == report.STEP_FIELDS
        assert step["status"] in ("ok", "failed", "skipped")
        assert isinstance(step["duration_s"], float) and step["duration_s"] >= 0
        assert isinstance(step["data"], dict)
        assert (step["reason"] == "") is (step["status"] == "ok")


def test_markdown_tables_paste_as_they_are(cpu_report):
    out, doc = cpu_report
    with open(os.path.join(str(out), "check.md")) as f:
        text = f.read()
    assert text.startswith("### segdeploy-check (quick) on ")
    tables = _markdown_tables(text)
    assert len(tables) >= 2
    for table in tables:
        widths = set(len(row) for row in table)
        assert len(widths) == 1, table  # every row has the header's number of cells
        assert set(table[1]) == {"---"}
    steps_table = next(t for t in tables if t[0][:2] == ["step", "status"])
    assert [row[0] for row in steps_table[2:]] == [s.name for s in cli.steps()]
    for row in steps_table[2:]:
        if row[1] == "skipped":
            assert "(would run: " in row[3]


def test_markdown_cells_escape_pipes_and_newlines():
    text = report.markdown_table(("a", "b"), [("x|y", "line\nbreak"), (0.5, None)])
    rows = _markdown_tables(text)[0]
    assert rows[2] == ["x\\|y", "line break"] and rows[3] == ["0.5", "–"]


def test_never_stops_at_the_first_failure(tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX file\x00\x01")
    code = cli.main(["--quick", "--out", str(tmp_path / "out"), "--onnx", str(broken)])
    printed = capsys.readouterr().out
    assert code == 1
    with open(str(tmp_path / "out" / "check.json")) as f:
        doc = json.load(f)
    steps = dict((s["name"], s) for s in doc["steps"])
    assert steps["model"]["status"] == "failed" and "broken.onnx" in steps["model"]["reason"]
    # every later step still ran and has its own result
    assert list(steps) == [s.name for s in cli.steps()]
    names = list(steps)
    after = names[names.index("model") + 1 :]
    assert after and all(steps[n]["status"] in ("ok", "skipped", "failed") for n in after)
    # a step that does not need the model ran on its own merits (NVRTC is in the [test] extra)
    ok, _ = probe.nvrtc()
    assert steps["dblock-compile"]["status"] == ("ok" if ok else "skipped")
    assert doc["exit_code"] == 1 and doc["summary"]["failed"] >= 1
    assert "FAILED" in printed and "1 failed" in printed.splitlines()[-1]
    assert printed.count("[") >= len(cli.steps())  # a progress line per step


def test_exit_code_policy():
    ok = {"status": "ok"}
    skipped = {"status": "skipped"}
    failed = {"status": "failed"}
    assert report.exit_code([ok, skipped, skipped]) == 0
    assert report.exit_code([skipped]) == 0
    assert report.exit_code([ok, failed, skipped]) == 1
    assert report.exit_code([]) == 0


def test_usage_mistakes_exit_2_in_one_line(tmp_path, capsys):
    code = cli.main(["--out", str(tmp_path), "--onnx", str(tmp_path / "missing.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing.onnx does not exist" in err[0]
    with pytest.raises(SystemExit) as exc:
        cli.main(["--no-such-option"])
    assert exc.value.code == 2


# --- the runner -----------------------------------------------------------------------------------


def _run(fn, ctx=None):
    ctx = ctx or runner.Context("/tmp")
    return runner.run_step(runner.Step("s", "a step", "do the thing", fn), ctx)


def test_runner_outcomes():
    def skip(ctx):
        raise runner.Skip("no widget here")

    def missing(ctx):
        raise MissingDependencyError("install widget")

    def failed(ctx):
        raise runner.Failed("widget broke", {"table": {"columns": ["a"], "rows": [[1]]}})

    def user_error(ctx):
        raise SegDeployError("bad widget\nsecond line")

    def bug(ctx):
        return {}["missing"]

    def not_installed(ctx):
        import segdeploy_no_such_module  # noqa: F401

    result = _run(not_installed)
    assert result["status"] == "skipped" and "'segdeploy_no_such_module'" in result["reason"]

    assert _run(lambda ctx: {"x": 1})["status"] == "ok"
    assert (_run(skip)["status"], _run(skip)["reason"]) == ("skipped", "no widget here")
    assert _run(missing)["status"] == "skipped"
    result = _run(failed)
    assert result["status"] == "failed" and result["data"]["table"]["rows"] == [[1]]
    assert _run(user_error)["reason"] == "bad widget"
    result = _run(bug)
    assert result["status"] == "failed" and result["reason"].startswith("KeyError")
    assert any("KeyError" in line for line in result["data"]["traceback"])


def test_a_step_that_needs_a_failed_step_says_so():
    ctx = runner.Context("/tmp")
    _run(lambda c: {}["x"], ctx)
    result = runner.run_step(
        runner.Step("later", "later", "use s", lambda c: c.need_step("s")), ctx
    )
    assert result["status"] == "skipped" and "'s' failed" in result["reason"]


# --- the environment ------------------------------------------------------------------------------

NVPMODEL_Q = "NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN\n0\n"
NVPMODEL_CONF = """
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=MAXQ >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=3 NAME=MAXP_CORE_ALL >
< PM_CONFIG DEFAULT=3 >
"""


def test_power_mode_parsing():
    assert probe.parse_nvpmodel_query(NVPMODEL_Q) == {"name": "MAXN", "id": 0}
    assert probe.parse_nvpmodel_query("nothing") == {}
    modes, default = probe.parse_nvpmodel_conf(NVPMODEL_CONF)
    assert modes == {0: "MAXN", 1: "MAXQ", 3: "MAXP_CORE_ALL"} and default == 3


@pytest.mark.skipif(bool(probe.run_text(["nvpmodel", "-q"])), reason="nvpmodel answers here")
def test_power_mode_from_the_files(tmp_path):
    conf = tmp_path / "nvpmodel.conf"
    conf.write_text(NVPMODEL_CONF)
    status = tmp_path / "status"
    assert probe.power_mode(str(conf), str(status)) == {
        "name": "MAXP_CORE_ALL",
        "id": 3,
        "source": str(conf) + " (default mode)",
    }
    status.write_text("pmode:0001 fmode:quiet\n")
    assert probe.power_mode(str(conf), str(status))["name"] == "MAXQ"
    assert probe.power_mode(str(tmp_path / "none"), str(status)) is None


def test_the_check_imports_no_torch_or_onnx():
    code = (
        "import sys, segdeploy.check.cli, segdeploy.check.engine_steps, segdeploy.check.gpu_steps\n"
        "bad = [m for m in ('torch', 'onnx', 'tensorrt', 'cv2') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_console_script_and_module_entry_points():
    with open(os.path.join(REPO, "setup.cfg")) as f:
        assert "segdeploy-check = segdeploy.check.cli:main" in f.read()
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "segdeploy.check", "--help"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "Exit code 0 when every step" in proc.stdout


def test_toolkit_version_from_nvcc(tmp_path, monkeypatch):
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 10.2, V10.2.300'\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    assert probe.toolkit_version() == "10.2"
