"""segeval --head: an engine exported with its head fused scores as the graph head does, and
--head frame (logits upsampled straight to the image, as official evaluations do) changes only
the boundary pixels the nearest resize of network-size labels decides."""

import json

import pytest
from eval_support import LABEL_HW, NET_HW, make_folder

import segdeploy
from segdeploy.eval.cli import main as segeval

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def fused_engine(tmp_path_factory, engines):
    from segdeploy.card import read_onnx_card as read_card
    from segdeploy.export.head import cut_head
    from segdeploy.export.onnx_export import save_model, set_card

    proto = onnx.load(engines[0])
    card = read_card(proto)
    if card["output"].get("head", {}).get("kind") == "fused":  # segexport's default already
        return engines[0]
    cut, fused_card = cut_head(proto, card)
    set_card(cut, fused_card)
    path = str(tmp_path_factory.mktemp("fused") / "fused.onnx")
    save_model(cut, path)
    return path


def test_segeval_head_network_matches_the_graph_and_frame_changes_boundaries(
    tmp_path, capsys, engines, fused_engine
):
    graph_proto = onnx.load(engines[0])
    with segdeploy.Runtime(engines[0]) as runtime:
        names = list(runtime.class_names)
        make_folder(str(tmp_path / "data"), runtime, names, count=3)
    assert NET_HW != LABEL_HW  # the images are larger than the network: the heads differ
    scores = {}
    for head in ("network", "frame"):
        report = tmp_path / "{}.json".format(head)
        argv = ["--engine", fused_engine, "--dataset", "folder", "--root", str(tmp_path / "data")]
        argv += ["--head", head, "--json", str(report), "--no-progress"]
        assert segeval(argv) == 0, capsys.readouterr().err
        (engine,) = json.loads(report.read_text())["engines"]
        assert engine["engine"]["head"] == "fused-" + head
        scores[head] = engine["miou"]
    graph_report = tmp_path / "graph.json"
    argv = ["--engine", engines[0], "--dataset", "folder", "--root", str(tmp_path / "data")]
    assert segeval(argv + ["--json", str(graph_report), "--no-progress"]) == 0
    (graph,) = json.loads(graph_report.read_text())["engines"]
    if any(n.op_type == "ArgMax" for n in graph_proto.graph.node):
        assert graph["engine"]["head"] == "graph"
    # the network-size head gives the graph's labels: the same score
    assert scores["network"] == pytest.approx(graph["miou"], abs=1e-4)
    # the masks were made from network-size labels: the frame head moves some boundaries
    assert scores["frame"] != scores["network"]
    assert abs(scores["frame"] - scores["network"]) < 0.05
    capsys.readouterr()


def test_segeval_head_frame_on_a_graph_head_engine_is_one_line(tmp_path, capsys, engines):
    graph_proto = onnx.load(engines[0])
    if not any(n.op_type == "ArgMax" for n in graph_proto.graph.node):
        pytest.skip("segexport wrote a fused-head engine: no graph head to refuse")
    with segdeploy.Runtime(engines[0]) as runtime:
        make_folder(str(tmp_path / "data"), runtime, list(runtime.class_names), count=1)
    argv = ["--engine", engines[0], "--dataset", "folder", "--root", str(tmp_path / "data")]
    assert segeval(argv + ["--head", "frame", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--head fused" in err and len(err.strip().splitlines()) == 1
