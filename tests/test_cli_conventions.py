"""One set of command-line conventions (docs/design.md, "Command-line conventions"), checked over
every console script setup.cfg installs, so that a new one is held to them too."""

import configparser
import importlib
import os
import re

import pytest

import segdeploy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Commands without --plugin: segcomplexity opens no engine, segserve serves through Triton's own
# backends, segdeploy-check builds and loads the plugin libraries it checks itself.
NO_ENGINE = {"segcomplexity", "segserve", "segdeploy-check"}


def console_scripts():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    entries = {}
    for line in config["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = line.partition("=")
        entries[name.strip()] = target.strip()
    return sorted(entries.items())


SCRIPTS = console_scripts()


def _main(target):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _run(capsys, target, argv):
    with pytest.raises(SystemExit) as info:
        _main(target)(argv)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_setup_cfg_lists_the_commands():
    assert {"segexport", "segbench", "segpredict", "segbuild", "segcomplexity", "segeval"} <= {
        name for name, _ in SCRIPTS
    }


@pytest.mark.parametrize("name,target", SCRIPTS)
def test_version_line_is_name_and_version(capsys, name, target):
    code, out, err = _run(capsys, target, ["--version"])
    assert code == 0 and err == ""
    assert out == "{} {}\n".format(name, segdeploy.__version__)


@pytest.mark.parametrize("name,target", SCRIPTS)
def test_help_follows_the_conventions(capsys, name, target, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal must not widen the help
    code, out, _ = _run(capsys, target, ["--help"])
    assert code == 0
    assert out.startswith("usage: {} ".format(name))
    too_wide = [line for line in out.splitlines() if len(line) > 80]
    assert not too_wide, too_wide
    assert "  -v, --verbose" in out and "  -q, --quiet" in out
    assert "\nexamples:\n  {} ".format(name) in out  # examples in the epilog, as commands
    assert "``" not in out and ":func:" not in out and ".. " not in out  # no RST markup
    assert not re.search(r"\b[a-z]+_[a-z_]+\(", out)  # no internal function names
    if name in NO_ENGINE:
        assert "--plugin" not in out
    else:
        assert "--plugin LIB.so" in out
        assert "--plugins" not in out  # one spelling; an old one may stay as a hidden alias
    # an option in the help once (no positional and --option pair naming the same input)
    options = re.findall(r"^  (?:-\w, )?(--[\w-]+)", out, re.M)
    assert len(options) == len(set(options)), options


@pytest.mark.parametrize("name,target", SCRIPTS)
def test_verbose_and_quiet_exclude_each_other(capsys, name, target):
    code, _, err = _run(capsys, target, ["-v", "-q"])
    assert code == 2 and "not allowed with argument" in err


def test_conventions_are_written_down():
    with open(os.path.join(REPO, "docs", "design.md"), encoding="utf-8") as f:
        design = f.read()
    section = design.split("## Command-line conventions", 1)[1].split("\n## ", 1)[0]
    for term in ("--version", "-v", "-q", "--plugin", "80 columns", "epilog", "_cli"):
        assert term in section, term


def test_segbuild_old_spellings_still_work_out_of_the_help():
    from segdeploy._cli import verbosity
    from segdeploy.engines.build_cli import build_parser

    parse = build_parser().parse_args
    args = parse(["m.onnx", "--plugins", "a.so", "--plugin", "b.so"])
    assert args.plugin == ["a.so", "b.so"]  # --plugins: segbuild's old spelling, same list
    args = parse(["--adopt", "m.plan", "--onnx", "m.onnx"])
    assert args.onnx_for_adopt == "m.onnx" and args.onnx is None
    args = parse(["--adopt", "m.plan", "m.onnx"])  # the positional, as the help says
    assert args.onnx == "m.onnx"
    assert parse(["m.onnx", "--trt-verbose"]).trt_verbose
    assert verbosity(parse(["m.onnx", "-vv"])) == 2  # -vv also turns on TensorRT's log
