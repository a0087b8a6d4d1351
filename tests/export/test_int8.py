"""INT8: segexport --int8 --calib, the accuracy budget, and the graph in ONNX Runtime and OpenVINO.

The model is the runtime tests' tiny RegSeg with fan-in-scaled (He) weights and non-trivial
BatchNorm statistics, so its FP32 labels vary (asserted: >= 5 classes on the held-out frames);
calibration frames are synthetic street scenes (gradients, shapes, texture), written to a folder.
"""

import json
import os
import sys

import numpy as np
import onnx
import pytest
import torch

from segdeploy import Runtime
from segdeploy.bench.frames import street_scene, write_scenes
from segdeploy.card import read_onnx_card as read_card
from segdeploy.export.cli import main
from segdeploy.export.quantize import parse_budget

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "runtime"))
from runtime_support import tiny_model  # noqa: E402

H, W = 128, 256


def _qdq_counts(path):
    ops = [n.op_type for n in onnx.load(path).graph.node]
    return ops.count("QuantizeLinear"), ops.count("DequantizeLinear"), ops


def _max_int8_weight(model):
    """The largest |value| among the INT8 weight initializers (127 for 8-bit, 64 for 7-bit)."""
    return max(
        int(np.abs(onnx.numpy_helper.to_array(t).astype(np.int32)).max())
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    ckpt = root / "tiny.pth"
    torch.save({"model": tiny_model(0).state_dict()}, ckpt)
    calib = root / "calib"
    write_scenes(str(calib), 14, H, W)
    return root, ckpt, calib


@pytest.fixture(scope="module")
def exported(setup):
    root, ckpt, calib = setup
    out = root / "o"
    argv = ["--model", "regseg_tiny", "--checkpoint", ckpt, "--res", "{}x{}".format(H, W)]
    argv += ["--int8", "--calib", calib, "--out", out]
    # Agreement at the default 99 %; the IoU part relaxed to 40 points: this random-weight model's
    # small classes are fragments made of boundary pixels, and a class of ~1 % of the pixels loses
    # ~30 IoU points at 99.2 % agreement (a trained model's classes are regions, not fragments).
    argv += ["--budget", "99:40"]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SEGDEPLOY_CPU_ENGINES", raising=False)  # the measured CPU-engine choice
        assert main([str(a) for a in argv]) == 0
    return out


def test_int8_graph_is_explicit_symmetric_qdq(exported):
    path = str(exported / "regseg_tiny.int8.onnx")
    q, dq, ops = _qdq_counts(path)
    assert q > 10 and dq > q  # activations Q->DQ, weights int8 initializers -> DQ
    model = onnx.load(path)
    init = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            zp = onnx.numpy_helper.to_array(init[node.input[2]])
            assert zp.dtype == np.int8 and not zp.any()  # symmetric INT8 (TensorRT)
    # per-channel weights: some DequantizeLinear has a vector of scales
    scales = [
        onnx.numpy_helper.to_array(init[n.input[1]])
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[1] in init
    ]
    assert any(s.ndim == 1 and s.size > 1 for s in scales)
    assert ops[-1] == "ArgMax"
    # 7-bit weights where this host's INT8 kernels saturate at int16 (x86 without VNNI), else 8
    reduce_range = read_card(model)["quantization"]["reduce_range"]["enabled"]
    assert _max_int8_weight(model) == (64 if reduce_range else 127)
    from segdeploy.engines.parser_rules import check_graph

    for release in ("8.2", "8.6", "10.3"):  # raises if that release's parser cannot take it
        check_graph(path, release, "int8")


def test_the_labels_head_reads_float_logits_and_the_fused_head_agrees(exported, tmp_path):
    """No Q/DQ pair between the classifier and the head's Resize: quantized logits (256 levels)
    make ties that engines break by their own rounding, and the fused head must see what the
    graph head sees. Cut before its head, the INT8 graph gives the same labels."""
    from segdeploy.export.head import cut_head
    from segdeploy.export.onnx_export import save_model, set_card

    path = str(exported / "regseg_tiny.int8.onnx")
    model = onnx.load(path)
    producer = {o: n for n in model.graph.node for o in n.output}
    resize = [n for n in model.graph.node if n.op_type == "Resize"][-1]
    assert producer[resize.input[0]].op_type == "Conv"  # the classifier's float output
    readers = [n.op_type for n in model.graph.node if resize.input[0] in n.input]
    assert readers == ["Resize"]
    cut, card = cut_head(model, read_card(model))
    set_card(cut, card)
    fused_path = str(tmp_path / "regseg_tiny.int8.fused.onnx")
    save_model(cut, fused_path)
    backends = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        backends.append("openvino")
    except ImportError:
        pass
    frames = [street_scene(H, W, 900 + i) for i in range(3)]
    for backend in backends:
        with Runtime(path, backend=backend) as graph, Runtime(fused_path, backend=backend) as fused:
            expected = [graph.infer(f) for f in frames]
            labels = [fused.infer(f) for f in frames]
        assert len(np.unique(np.stack(expected))) >= 5
        agree = np.mean([(a == b).mean() for a, b in zip(labels, expected)])
        assert agree >= 0.9999, (backend, agree)


def test_card_carries_the_budget_verdict(exported):
    card = read_card(onnx.load(str(exported / "regseg_tiny.int8.onnx")))
    quant = card["quantization"]
    assert card["precision"] == "int8"
    assert quant["within_budget"] is True, quant["verdict"]
    assert quant["verdict"].startswith("within budget")
    assert quant["fp32_classes_on_heldout"] >= 5
    assert card["parity"]["int8"]["label_agreement"] >= 0.99
    # the weight range this host's CPU needs, and why, are on the card
    from segdeploy.export.int8_cpu import reduce_range_choice

    assert quant["reduce_range"] == reduce_range_choice()
    assert ("7-bit" in quant["scheme"]) is quant["reduce_range"]["enabled"]
    assert "VNNI" in quant["reduce_range"]["reason"] or "x86" in quant["reduce_range"]["reason"]
    report = json.loads((exported / "report.json").read_text())
    assert report["artifacts"]["onnx_int8"].endswith("regseg_tiny.int8.onnx")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_runs_int8_within_budget(exported, backend):
    pytest.importorskip(backend)
    fp32 = Runtime(str(exported / "regseg_tiny.onnx"), threads=2)
    int8 = Runtime(str(exported / "regseg_tiny.int8.onnx"), backend=backend, threads=2)
    assert int8.backend == backend
    agree, classes = [], set()
    for seed in range(500, 504):  # frames neither calibrated nor held out by segexport
        frame = street_scene(H, W, seed)
        ref = fp32.infer(frame)
        classes |= set(np.unique(ref).tolist())
        agree.append((int8.infer(frame) == ref).mean())
    fp32.close()
    int8.close()
    assert len(classes) >= 5, classes  # labels vary: agreement means something
    assert np.mean(agree) >= 0.99, agree


def test_tight_budget_keeps_layers_fp32(setup):
    root, ckpt, calib = setup
    out = root / "tight"
    argv = ["--model", "regseg_tiny", "--checkpoint", ckpt, "--res", "{}x{}".format(H, W)]
    argv += ["--int8", "--calib", calib, "--out", out, "--backend", "onnxruntime"]
    argv += ["--budget", "99.99:0.1"]
    assert main([str(a) for a in argv]) == 0
    card = read_card(onnx.load(str(out / "regseg_tiny.int8.onnx")))
    quant = card["quantization"]
    assert quant["fp32_layers"], quant["verdict"]  # the budget forced layers back to FP32
    assert len(quant["attempts"]) >= 2
    assert (
        quant["sensitivity"][0]["logits_relative_error"]
        >= quant["sensitivity"][-1]["logits_relative_error"]
    )
    assert "kept FP32" in quant["verdict"]
    # the kept layers are really unquantized: their inputs come from no DequantizeLinear
    model = onnx.load(str(out / "regseg_tiny.int8.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    kept = [n for n in model.graph.node if n.name in set(quant["fp32_layers"])]
    assert kept
    for node in kept:
        if node.op_type == "Conv":
            w = producer.get(node.input[1])
            assert w is None or w.op_type != "DequantizeLinear"


def _error(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("segexport: error: "), err
    return err[0]


def test_int8_needs_calibration_frames(setup, capsys, tmp_path):
    base = ["--model", "regseg_tiny", "--res", "64x128", "--out", tmp_path / "o"]
    assert "--int8 needs --calib" in _error(capsys, base + ["--int8"])
    (tmp_path / "two").mkdir()
    write_scenes(str(tmp_path / "two"), 2, 64, 128)
    assert "at least 3" in _error(capsys, base + ["--int8", "--calib", tmp_path / "two"])
    assert "not a directory" in _error(capsys, base + ["--int8", "--calib", tmp_path / "nope"])
    assert "--budget" in _error(capsys, base + ["--int8", "--calib", tmp_path, "--budget", "x"])
    assert not os.path.exists(str(tmp_path / "o" / "regseg_tiny.int8.onnx"))


def test_parse_budget():
    assert parse_budget(None) == (0.99, 0.02)
    assert parse_budget("99.5:1") == (0.995, 0.01)
    assert parse_budget("98") == (0.98, 0.02)


def test_segexport_built_the_fastest_measured_cpu_engine(exported):
    pytest.importorskip("openvino")
    report = json.loads((exported / "report.json").read_text())
    selection = report["engine"]["selection"]
    rows = selection["candidates"]
    kinds = {(r["backend"], r["precision"]) for r in rows}
    assert {("onnxruntime", "fp32"), ("openvino", "f32"), ("openvino", "int8")} <= kinds
    import openvino

    from segdeploy.engines.openvino_builder import cpu_has_bf16

    if cpu_has_bf16(openvino.Core()):  # INT8 with its FP32 layers in bf16, checked on real frames
        row = next(r for r in rows if r["precision"] == "int8+bf16")
        assert row["budget_check"]["checked_on"] == "the held-out --calib frames"
    # the default (ONNX Runtime FP32) stays unless another is clearly faster (cpu_choice.decide)
    from segdeploy.export.cpu_choice import decide

    samples = {(r["backend"], r["precision"]): r["rounds_ms"] for r in rows}
    eligible = {(r["backend"], r["precision"]) for r in rows if r["eligible"]}
    chosen, why = decide(samples, eligible)
    assert (selection["chosen"]["backend"], selection["chosen"]["precision"]) == chosen
    assert selection["why"] == why and why.startswith(("kept ", "built "))
    engine = report["artifacts"]["engine"]
    assert os.path.isfile(engine) and engine.endswith((".ort", ".xml"))
    assert os.path.isfile(str(exported / "regseg_tiny.ort"))  # written whatever was chosen


def test_openvino_ir_round_trip(exported, tmp_path):
    pytest.importorskip("openvino")
    from segdeploy import card as card_mod
    from segdeploy.engines.openvino_builder import build_openvino_engine

    src = str(exported / "regseg_tiny.int8.onnx")
    xml = str(tmp_path / "m.int8.xml")
    build_openvino_engine(src, xml, card_mod.read_sidecar(src), threads=2, log=lambda *a: None)
    assert os.path.isfile(str(tmp_path / "m.int8.bin"))
    frame = street_scene(H, W, 777)
    with Runtime(xml) as ir, Runtime(src, backend="openvino", threads=2) as direct:
        assert ir.backend == "openvino" and ir.card["precision"] == "int8"
        assert ir.card["engine"]["inference_precision"] == "f32"
        assert (ir.infer(frame) == direct.infer(frame)).mean() > 0.999


def test_segbench_compares_precisions(exported, tmp_path, capsys):
    pytest.importorskip("openvino")
    from segdeploy.bench.cli import main as segbench

    out = tmp_path / "p.json"
    argv = ["--engine", str(exported / "regseg_tiny.onnx"), "--precisions", "fp32,int8"]
    argv += ["--iters", "2", "--warmup", "1", "--threads", "2", "--no-progress"]
    assert segbench(argv + ["--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "agreement" in text and "vs fp32" in text
    records = json.loads(out.read_text())
    records = records["runs"] if isinstance(records, dict) and "runs" in records else records
    got = {(r["backend"], r["precision"]): r for r in records}
    assert set(got) == {
        ("onnxruntime", "fp32"),
        ("openvino", "fp32"),
        ("onnxruntime", "int8"),
        ("openvino", "int8"),
    }
    assert got[("onnxruntime", "fp32")]["agreement_vs_fp32"] == 1.0
    assert got[("openvino", "int8")]["agreement_vs_fp32"] >= 0.99
    assert got[("openvino", "int8")]["fp32_classes_on_frames"] >= 5


def test_segbench_precisions_needs_the_int8_graph(tmp_path, capsys):
    from segdeploy.bench.cli import main as segbench

    (tmp_path / "m.onnx").write_bytes(b"")
    code = segbench(["--engine", str(tmp_path / "m.onnx"), "--precisions", "int8"])
    err = capsys.readouterr().err
    assert code == 2 and "segexport" in err and "--int8" in err


def test_sensitivity_quantizes_one_layer_at_a_time(exported, tmp_path):
    """The global ranking runs the FP32 graph with exactly one layer's Q/DQ pairs copied in."""
    from segdeploy.export.budget import _preprocessor
    from segdeploy.export.quantize import (
        Quantizer,
        _expose,
        _session,
        _with_only,
        keep_fp32,
        logits_tensor,
        quantized_nodes,
    )

    src = str(exported / "regseg_tiny.onnx")
    card = read_card(onnx.load(src))
    pre = _preprocessor(card)
    inputs = [pre([street_scene(H, W, s)]).copy() for s in (900, 901, 902)]
    quantizer = Quantizer(src, inputs, str(tmp_path), log=None)
    int8 = onnx.load(quantizer.write(str(tmp_path / "full.onnx")))
    fp32 = onnx.load(quantizer.prepared)
    conv = [n for n in int8.graph.node if n.op_type == "Conv"][3].name
    one = _with_only(fp32, int8, conv)
    producer = {o: n for n in one.graph.node for o in n.output}
    fed = [
        n.name
        for n in one.graph.node
        if any(
            producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
            for i in n.input
        )
    ]
    assert fed == [conv]  # one quantized layer: its activation and its INT8 weights
    assert [n.op_type for n in one.graph.node].count("QuantizeLinear") == 1
    onnx.checker.check_model(one)
    logits = logits_tensor(fp32)
    assert logits != fp32.graph.output[0].name  # the tensor before the final Resize/ArgMax
    outs = []
    for proto in (fp32, one):
        session = _session(_expose(proto, [logits]), 2)
        names = [o.name for o in session.get_outputs()]
        outs.append(
            session.run(None, {session.get_inputs()[0].name: inputs[0]})[names.index(logits)]
        )
    diff = np.abs(outs[0] - outs[1])
    assert 0 < diff.max() < 0.2 * np.abs(outs[0]).max()  # quantized, and only a little

    # either weight range on any host: 7-bit (-64..64) or 8-bit, symmetric, zero point 0
    for reduce_range, top in ((True, 64), (False, 127)):
        q = Quantizer(src, inputs, str(tmp_path), log=None, reduce_range=reduce_range)
        model = onnx.load(q.write(str(tmp_path / "rr{}.onnx".format(int(reduce_range)))))
        assert q.reduce_range["enabled"] is reduce_range
        assert _max_int8_weight(model) == top
        init = {t.name: t for t in model.graph.initializer}
        zps = [init[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert zps and all(z.data_type == onnx.TensorProto.INT8 for z in zps)
        assert not any(onnx.numpy_helper.to_array(z).any() for z in zps)

    # the budget's fallback: that layer computes in FP32 in the INT8 graph, the rest stays INT8
    kept = keep_fp32(int8, fp32, [conv])
    onnx.checker.check_model(kept)
    producer = {o: n for n in kept.graph.node for o in n.output}
    node = next(n for n in kept.graph.node if n.name == conv)
    assert all(
        producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in node.input
    )
    assert len(quantized_nodes(kept)) == len(quantized_nodes(int8)) - 1
    ops = [n.op_type for n in kept.graph.node]
    assert ops.count("DequantizeLinear") < [n.op_type for n in int8.graph.node].count(
        "DequantizeLinear"
    )  # its INT8 weight (and bias) pairs are gone, not left dangling
    session = _session(kept, 2)
    assert session.run(None, {session.get_inputs()[0].name: inputs[0]})[0].shape[-2:] == (H, W)


def test_int8_bf16_is_an_openvino_precision(exported):
    from segdeploy.bench.precisions import parse_precisions, variants

    onnx_path = str(exported / "regseg_tiny.onnx")
    todo, notes = variants(onnx_path, parse_precisions("int8+bf16"), ["onnxruntime", "openvino"])
    assert todo == [("openvino", "int8+bf16", onnx_path[:-5] + ".int8.onnx", {"precision": "bf16"})]
    assert any("no bf16 kernels" in n for n in notes)


def test_search_ships_the_first_graph_within_the_margin():
    """The budget search aims below the budget (SEARCH_MARGIN) and ships what it found."""
    from segdeploy.export.quantize import DEFAULT_BUDGET, SEARCH_MARGIN, _choose, _with_margin

    def fig(agreement, drop):
        ok = agreement >= DEFAULT_BUDGET.min_agreement and drop <= DEFAULT_BUDGET.max_iou_drop
        return {"label_agreement": agreement, "max_iou_drop": drop, "within_budget": ok}

    assert SEARCH_MARGIN < 1
    assert not _with_margin(fig(0.998, 0.019), DEFAULT_BUDGET)  # within budget, not the margin
    assert _with_margin(fig(0.998, 0.012), DEFAULT_BUDGET)
    tried = [
        ([], "a", fig(0.997, 0.019)),
        (["n1"], "b", fig(0.998, 0.017)),
        (["n1", "n2"], "c", fig(0.995, 0.03)),
    ]
    assert _choose(tried, DEFAULT_BUDGET)[1] == "b"  # within budget, the smallest drop
    tried.append((["n1", "n2", "n3"], "d", fig(0.999, 0.010)))
    assert _choose(tried, DEFAULT_BUDGET)[1] == "d"  # the first within the margin
    over = [([], "a", fig(0.98, 0.05)), (["n1"], "b", fig(0.985, 0.04))]
    assert _choose(over, DEFAULT_BUDGET)[1] == "b"  # none within: the last, reported over budget


def test_progress_lines_name_final_paths(setup, tmp_path, capsys):
    """INT8 and engine-choice lines name files where the user finds them, not the staging folder."""
    from segdeploy.manifest import STAGING_PREFIX

    root, ckpt, calib = setup
    out = tmp_path / "o"
    argv = ["--model", "regseg_tiny", "--checkpoint", ckpt, "--res", "{}x{}".format(H, W)]
    argv += ["--int8", "--calib", calib, "--out", out, "--budget", "99:40"]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SEGDEPLOY_CPU_ENGINES", raising=False)  # the engine choice prints paths too
        assert main([str(a) for a in argv]) == 0
    printed = capsys.readouterr().out
    assert STAGING_PREFIX not in printed
    assert str(out / "regseg_tiny.int8.onnx") in printed
