"""Small things a user notices (issue 23, item 9): what `make demo` prints agrees with what it
writes and with the README; counts read as English; an unknown model is refused before any step
is printed; the README says what `make test` installs."""

import os
import re
import sys

import pytest

from segdeploy._cli import plural

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return f.read()


@pytest.mark.slow  # the whole demo on the tiny model: about a minute
def test_demo_prints_paths_it_writes_and_the_readme_names(tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        import demo
    finally:
        sys.path.pop(0)
    out = tmp_path / "out"
    assert demo.main(["--out", str(out), "--model", "regseg_tiny", "--res", "64x128"]) == 0
    printed = capsys.readouterr().out
    assert "- MiB" not in printed  # the memory line's every figure is measured
    # segexport's Next: lines read the frame the demo says it wrote, and the file is there
    nxt = printed.split("\nNext", 1)[1]
    frames = set(re.findall(r"[^\s'\"]*frame\.png", nxt))
    assert frames == {str(out / "export" / "frame.png")}, frames
    summary = printed.rsplit("demo done", 1)[1]
    assert str(out / "export" / "frame.png") in summary
    assert (out / "export" / "frame.png").is_file()
    # the README names the same place, relative to make demo's out/
    readme = _readme()
    assert "out/export/frame.png" in readme and '"out/frame.png"' not in readme


def test_readme_says_what_make_test_installs():
    with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as f:
        extras = re.search(r"-e '\.\[([a-z0-9,]+)\]'", f.read()).group(1)
    line = [ln for ln in _readme().splitlines() if ln.startswith("make test")][0]
    assert ".[{}]".format(extras) in line, line


def test_counts_read_as_english():
    assert plural(1, "frame") == "1 frame" and plural(2, "frame") == "2 frames"
    assert plural(0, "image") == "0 images"


def test_folder_dataset_without_a_split_names_no_split():
    from segdeploy.eval.report import dataset_line

    info = {"name": "folder", "split": None, "images": 1, "root": "r"}
    assert dataset_line(info) == "folder: 1 image (r)"
    info.update(name="cityscapes", split="val", images=8)
    assert dataset_line(info) == "cityscapes split 'val': 8 images (r)"


def test_unknown_model_is_refused_before_any_step(capsys):
    from segdeploy.export.cli import main

    assert main(["--model", "regsegg", "--res", "64x128", "--out", "nowhere"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "", captured.out  # no "[1/7] build regsegg ..." first
    assert "unknown model 'regsegg'" in captured.err and "did you mean 'regseg'" in captured.err
    assert not os.path.exists("nowhere")
