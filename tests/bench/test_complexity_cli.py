from segdeploy.bench.complexity_cli import main


def test_table_shows_regseg_figures(capsys):
    assert main(["--model", "regseg", "--res", "1024x2048"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("regseg"))
    assert row.split()[1:5] == ["3.335", "38.35", "39.08", "3.34"]


def test_unknown_model_is_one_line_exit_2(capsys):
    assert main(["--model", "regsg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'regseg'" in err


def test_bad_resolution(capsys):
    assert main(["--model", "regseg", "--res", "big"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
