"""Every case of issue 11's audit: one line on stderr, exit 2 (130 for Ctrl-C), no traceback.

Each CLI runs in-process through ``main(argv)``: an exception that escaped would fail the test
with its traceback, so "no traceback" is checked by the test passing and by the output.
The closing note's table lists the same cases.
"""

import os
import resource
import stat

import numpy as np
import pytest
import torch

from segdeploy import _io
from segdeploy.bench import cli as bench_cli
from segdeploy.bench import complexity_cli
from segdeploy.errors import ManifestError, OutputError, SegDeployError
from segdeploy.export import cli as export_cli
from segdeploy.runtime import Runtime

TINY = ("--model", "regseg_tiny", "--res", "32x64", "--verify-inputs", "1")


def one_line(capsys, code, prog, *needles, exit_code=2):
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == exit_code, (code, out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(prog + ": "), err
    assert "Traceback" not in out + err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- segexport: arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,needle",
    [
        (("--num-classes", "0"), "--num-classes must be between 1 and 255"),
        (("--num-classes", "-3"), "--num-classes must be between 1 and 255"),
        (("--num-classes", "300"), "--num-classes must be between 1 and 255"),
        (("--threads", "-2"), "--threads must be a positive integer"),
        (("--workspace", "-5"), "--workspace must be a positive integer"),
        (("--stride", "0"), "--stride must be a positive integer"),
        (("--res", "0x0"), "--res must be positive"),
        (("--res=-4x8",), "--res must be HEIGHTxWIDTH"),
        (("--res", "abc"), "--res must be HEIGHTxWIDTH"),
        (("--res", "99999x99999"), "larger than 16384"),
        (("--name", "../../x"), "--name must be a plain file name"),
        (("--name", "sub/x"), "--name must be a plain file name"),
    ],
)
def test_segexport_bad_arguments(tmp_path, capsys, argv, needle):
    out = tmp_path / "deep" / "out"
    given = any(a.startswith("--res") for a in argv)
    args = ("--model", "regseg_tiny") if given else ("--model", "regseg_tiny", "--res", "32x64")
    code = export_cli.main([*args, *argv, "--out", str(out)])
    one_line(capsys, code, "segexport", needle)
    assert not (tmp_path / "x").exists() and not (tmp_path / "deep" / "x").exists()
    assert not out.exists() or not list(out.iterdir())


def test_segexport_num_classes_300_with_logits_is_refused_too(tmp_path, capsys):
    code = export_cli.main(
        [*TINY, "--num-classes", "300", "--output", "logits", "--out", str(tmp_path)]
    )
    one_line(capsys, code, "segexport", "label maps are uint8")


# --- segexport: bring-your-own models and graphs -----------------------------------------------

FACTORIES = {
    "returns_int": ("def make():\n    return 3\n", "returned int, not a torch.nn.Module"),
    "raises": (
        "def make():\n    raise ValueError('no weights here')\n",
        "make() raised ValueError: no weights here",
    ),
    "three_d": (
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x[:, 0]\n"
        "def make():\n    return M()\n",
        "segdeploy needs float logits of shape N x classes x H x W",
    ),
    # a tuple or dict output is fine (its first element / 'out' is exported); text is not
    "text": (
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return 'logits'\n"
        "def make():\n    return M()\n",
        "not one logits tensor",
    ),
    "syntax": ("def make(:\n", "importing"),
    "exits": ("import sys\nsys.exit(3)\n", "importing"),
}


@pytest.mark.parametrize("case", sorted(FACTORIES))
def test_segexport_bring_your_own_factory_failures(tmp_path, capsys, case):
    source, needle = FACTORIES[case]
    user = tmp_path / "user_{}.py".format(case)
    user.write_text(source)
    code = export_cli.main(
        ["--model", "{}:make".format(user), "--res", "32x32", "--out", str(tmp_path / "o")]
    )
    one_line(capsys, code, "segexport", needle)


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory):
    """An ONNX graph without a card, fixed at 128x256, 4 logits channels."""
    path = tmp_path_factory.mktemp("plain") / "plain.onnx"
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1).eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 128, 256),),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
    )
    return path


def test_segexport_onnx_with_a_res_the_graph_does_not_have(tmp_path, capsys, plain_onnx):
    code = export_cli.main(["--onnx", str(plain_onnx), "--res", "256x512", "--out", str(tmp_path)])
    one_line(capsys, code, "segexport", "fixed at 128x256")
    assert not list(tmp_path.iterdir())


def test_segexport_onnx_with_classes_the_graph_does_not_have(tmp_path, capsys, plain_onnx):
    code = export_cli.main(
        ["--onnx", str(plain_onnx), "--num-classes", "19", "--out", str(tmp_path)]
    )
    one_line(capsys, code, "segexport", "19 classes but the graph's logits have 4")


# --- checkpoints ----------------------------------------------------------------------------------


class _Evil(object):
    def __reduce__(self):
        return (os.system, ("true",))


def _checkpoints(folder):
    good = folder / "good.pth"
    torch.save({"a": torch.zeros(3)}, str(good))
    data = good.read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    (folder / "text.pth").write_text("hello")
    torch.save({"a": _Evil()}, str(folder / "evil.pth"))
    (folder / "adir.pth").mkdir()


@pytest.mark.parametrize(
    "name,needle",
    [
        ("truncated.pth", "truncated or damaged"),
        ("text.pth", "not a PyTorch checkpoint"),
        ("evil.pth", "--unsafe-pickle"),
        ("adir.pth", "is a directory, not a file"),
    ],
)
def test_segexport_checkpoint_errors(tmp_path, capsys, name, needle):
    _checkpoints(tmp_path)
    code = export_cli.main(
        [*TINY, "--checkpoint", str(tmp_path / name), "--out", str(tmp_path / "o")]
    )
    line = one_line(capsys, code, "segexport", needle)
    assert "miniz" not in line and not line.rstrip().endswith("101")
    assert len(line) < 400


# --- write failures ------------------------------------------------------------------------------


def test_segexport_out_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = export_cli.main([*TINY, "--out", str(blocker)])
    one_line(capsys, code, "segexport", "is a file")


def _unwritable_dir(tmp_path):
    """A directory this process cannot create files in (root ignores permissions: use /sys)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return str(locked)
    try:
        os.mkdir("/sys/segdeploy-test-probe")
    except OSError:
        return "/sys"
    os.rmdir("/sys/segdeploy-test-probe")
    pytest.skip("no directory here refuses writes to this user")


def test_segexport_out_not_writable(tmp_path, capsys):
    target = os.path.join(_unwritable_dir(tmp_path), "out")
    code = export_cli.main([*TINY, "--out", target])
    one_line(capsys, code, "segexport", "output directory")


@pytest.fixture
def small_file_limit():
    """Writes past 1 MB fail with EFBIG, as on a full disk (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_write_failure_is_an_output_error_and_leaves_nothing(tmp_path, small_file_limit):
    with pytest.raises(OutputError, match="File too large"):
        _io.write_bytes(str(tmp_path / "big.bin"), b"\0" * (2 << 20))
    assert not list(tmp_path.iterdir())


def test_segexport_disk_full_is_one_line(tmp_path, capsys, small_file_limit):
    out = tmp_path / "o"
    code = export_cli.main([*TINY, "--out", str(out)])
    one_line(capsys, code, "segexport", "File too large")
    assert not out.exists() or not list(out.iterdir())


def test_onnxruntime_engine_write_failure_is_one_line(tmp_path, tiny_engine):
    from segdeploy import card as card_mod
    from segdeploy.engines.onnxruntime_builder import build_onnxruntime_engine
    from segdeploy.errors import EngineError

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # the .ort is ~6 MB
    try:
        with pytest.raises(EngineError) as info:
            build_onnxruntime_engine(
                str(tiny_engine / "regseg_tiny.onnx"),
                str(tmp_path / "x.ort"),
                card_mod.read_sidecar(str(tiny_engine / "regseg_tiny.onnx")),
                log=lambda *a: None,
            )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert "could not optimize" in str(info.value) and len(str(info.value).splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_files_follow_the_umask(tmp_path):
    for mask, mode in ((0o022, 0o644), (0o027, 0o640), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            path = tmp_path / "f{:o}".format(mask)
            _io.write_json(str(path), {"a": 1})
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == mode


# --- segbench ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    """A segexport'ed regseg_tiny (.onnx, .ort, report.json with the manifest)."""
    out = tmp_path_factory.mktemp("engine")
    assert export_cli.main([*TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("flag", ["--json", "--csv", "--plot"])
def test_segbench_output_paths_are_checked_before_the_run(
    tmp_path, capsys, monkeypatch, tiny_engine, flag
):
    def never(*a, **k):
        raise AssertionError("the benchmark ran before the output path was checked")

    monkeypatch.setattr(bench_cli, "run_protocol", never)
    for target, needle in (
        (tmp_path, "is a directory"),
        (tmp_path / "missing" / "x.out", "does not exist"),
        (os.path.join(_unwritable_dir(tmp_path), "x.out"), "cannot write"),
    ):
        code = bench_cli.main(["--engine", str(tiny_engine / "regseg_tiny.ort"), flag, str(target)])
        one_line(capsys, code, "segbench", flag, needle)


def test_segbench_write_failure_after_the_run_is_one_line(
    tmp_path, capsys, tiny_engine, monkeypatch
):
    from segdeploy.bench import report

    def full(path, *records_and_command):
        raise _io.output_error(path, OSError(28, "No space left on device"))

    monkeypatch.setattr(report, "write_json", full)
    code = bench_cli.main(
        [
            "--engine",
            str(tiny_engine / "regseg_tiny.ort"),
            "--iters",
            "2",
            "--warmup",
            "0",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    one_line(capsys, code, "segbench", "No space left on device")


def test_segbench_ctrl_c_is_one_line_exit_130(capsys, tiny_engine, monkeypatch):
    from segdeploy.bench import engine_runs

    def interrupted(*args, **kwargs):
        # What Python's SIGINT handler raises in the main thread. (Sending a real SIGINT to the
        # test process crashed it once native libraries of other tests had installed handlers.)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_runs, "run_protocol", interrupted)
    code = bench_cli.main(["--engine", str(tiny_engine / "regseg_tiny.ort"), "--iters", "2"])
    one_line(capsys, code, "segbench", "interrupted", exit_code=130)


@pytest.mark.parametrize(
    "argv",
    [
        ("--zoo", "--res", "0x0"),
        ("--zoo", "--res", "1024"),
        ("--model", "regseg_tiny", "--res", "0x0"),
    ],
)
def test_segbench_sizes_share_one_parser(capsys, argv):
    code = bench_cli.main(list(argv))
    one_line(capsys, code, "segbench", "--res")


@pytest.mark.parametrize(
    "res,needle", [("0x0", "must be positive"), ("axb", "HEIGHTxWIDTH"), ("=-1x-1", "HEIGHTxWIDTH")]
)
def test_segcomplexity_res(capsys, res, needle):
    code = complexity_cli.main(["--res" + res] if res.startswith("=") else ["--res", res])
    one_line(capsys, code, "segcomplexity", needle)


def test_segbench_engine_directory_is_not_called_missing(tmp_path, capsys):
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    code = bench_cli.main(["--engine", str(folder)])
    one_line(capsys, code, "segbench", "is a directory, not a file")


def test_segbench_plugin_only_with_a_plan(capsys, tiny_engine):
    code = bench_cli.main(["--engine", str(tiny_engine / "regseg_tiny.ort"), "--plugin", "x.so"])
    one_line(capsys, code, "segbench", "--plugin goes with --engine FILE.plan")


def test_segbench_negative_threads(capsys, tiny_engine):
    code = bench_cli.main(["--engine", str(tiny_engine / "regseg_tiny.ort"), "--threads", "-1"])
    one_line(capsys, code, "segbench", "--threads must be at least 1")


# --- the manifest beside an artifact --------------------------------------------------


def test_an_artifact_that_disagrees_with_its_manifest_is_refused(tmp_path, capsys, tiny_engine):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(str(tiny_engine), str(folder))
    with Runtime(str(folder / "regseg_tiny.ort")) as rt:  # consistent: opens
        labels = rt.infer(np.zeros((32, 64, 3), np.uint8))
        assert labels.shape == (32, 64)
    # a file of another export (or a half-copied one) in its place
    other = tmp_path / "other"
    assert (
        export_cli.main(
            [
                "--model",
                "regseg_tiny",
                "--res",
                "64x64",
                "--verify-inputs",
                "1",
                "--out",
                str(other),
            ]
        )
        == 0
    )
    capsys.readouterr()
    shutil.copy(str(other / "regseg_tiny.ort"), str(folder / "regseg_tiny.ort"))
    with pytest.raises(ManifestError, match="regseg_tiny.ort does not belong to the export"):
        Runtime(str(folder / "regseg_tiny.ort"))
    code = bench_cli.main(["--engine", str(folder / "regseg_tiny.ort")])
    one_line(capsys, code, "segbench", "SHA-256 differs")
    # a sidecar edited by hand is caught too
    sidecar = folder / "regseg_tiny.onnx.json"
    sidecar.write_text(sidecar.read_text().replace('"num_classes": 19', '"num_classes": 18'))
    with pytest.raises(ManifestError, match="regseg_tiny.onnx.json"):
        Runtime(str(folder / "regseg_tiny.onnx"))
    # no manifest: silent, as for files that segexport did not write
    (folder / "report.json").unlink()
    with Runtime(str(folder / "regseg_tiny.ort")):
        pass


def test_segdeploy_errors_are_the_only_ones(tmp_path):
    # the library raises the same one-line errors the CLIs print
    with pytest.raises(SegDeployError, match="is a directory"):
        Runtime(str(tmp_path))
