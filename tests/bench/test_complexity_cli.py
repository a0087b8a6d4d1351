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


def test_segbench_zoo_table_lists_every_full_model(tmp_path, capsys):
    import csv

    from segdeploy.bench.cli import main as segbench
    from segdeploy.models import list_models

    out = tmp_path / "zoo.csv"
    assert segbench(["--zoo", "--res", "1024x2048", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {r["model"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == set(list_models(include_tiny=False))
    swiftnet = rows["swiftnet_rn18"]
    assert int(swiftnet["params"]) == 11_797_071
    assert round(int(swiftnet["macs"]) / 1e9, 2) == 103.57
    assert float(swiftnet["paper_fps"]) == 39.9 and swiftnet["paper_fps_device"] == "gtx1080ti"
    line = next(x for x in text.splitlines() if x.startswith("swiftnet_rn18 "))
    assert "103.57" in line and "104.00" in line and "39.9 (gtx1080ti)" in line


def test_zoo_notes_resolutions_implementation_licence_and_upsampling(capsys):
    assert main(["--model", "stdc2_seg", "--model", "bisenetv2", "--res", "768x1536"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("stdc2_seg"))
    # deployment form beside RegSeg Table 9's STDC2-Seg75 (training model: 16.1 M, 54.9 G)
    assert row.split()[1:4] == ["12.306", "52.78", "53.03"] and "16.10" in row and "54.90" in row
    assert "published at: Seg50 512x1024, Seg75 768x1536" in out
    assert "implementation: CoinCheung/BiSeNet (the authors released no code)" in out
    assert out.count("licence: MIT") == 2
    assert "align_corners=True" in out and "align_corners=False" in out
