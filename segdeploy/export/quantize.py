"""INT8 post-training quantization: one explicit Q/DQ graph for ONNX Runtime, OpenVINO, TensorRT.

    fp32 graph ─► calibrate (real frames, Runtime pre-processing) ─► Q/DQ graph (<name>.int8.onnx)
               ─► accuracy budget on held-out frames ─► [over budget] keep the most sensitive
                  nodes in FP32 until it holds ─► verdict into the model card

What the graph looks like (what TensorRT's explicit quantization wants, and what ONNX Runtime's
and OpenVINO's INT8 CPU kernels pick up): QuantizeLinear/DequantizeLinear pairs in front of every
quantized op's activation input, *symmetric* INT8 activations (zero point 0: TensorRT accepts no
other), weights stored as INT8 initializers with *per-output-channel* symmetric scales feeding a
DequantizeLinear (axis 0); on an x86 host without VNNI the weights use 7 bits, because the
CPU kernels saturate with 8 (``int8_cpu``). The last Resize of the logits and the ArgMax stay
FP32 (as in the FP16 graph: logits whose small differences decide labels are not rounded again).

Quantizer choice, measured (``scripts/compare_quantizers.py``, docs/benchmarks.md "Which
quantizer"): the same FP32 RegSeg, the same calibration array, three quantizers.

- ONNX Runtime's ``quantize_static`` (QDQ format, MinMax): chosen. Its graph passes TensorRT's
  parser rules for 8.2, 8.6 and 10.x (``engines.parser_rules``: opset kept, INT8 zero points of
  0), runs in OpenVINO as fast as the others within the run's noise, and ONNX Runtime is already
  the export side's dependency. It calibrates once; the budget search edits that one graph.
- NNCF 3.4 (ONNX backend, PERFORMANCE preset): quantizes post-ReLU activations as UINT8. TensorRT
  8.2 cannot import UINT8 and 8.6+ read it as INT8 (values above 127 saturate), so its graph is
  not one graph for all three runtimes. In OpenVINO it was faster with the unquantized layers in
  f32 (2.11x against 1.80x FP32) and level with them in bf16 (2.85x against 2.98x); its labels
  agreed better than ONNX Runtime's on two of three trained nets and worse on the third.
- NVIDIA ModelOpt 0.47 ONNX PTQ (int8, max): TensorRT's own layout (INT8, zero point 0, FP32
  weights behind QuantizeLinear), but it rewrites the graph to opset 19, which the 8.2 (<= 13) and
  8.6 (<= 17) parsers refuse: the Jetson TX2 and GTX 1080 Ti targets. It also installs
  onnxruntime-gpu, cupy and its own onnx pin, which replace segdeploy's onnxruntime. Same speed
  and agreement as ONNX Runtime's graph within noise.

Calibration: min/max over the frames. On three trained RegSegs (512x1024, 8 unseen scenes) the
percentile calibrator moved agreement by -0.03 to +0.10 % and the worst class by -0.9 to +0.5 IoU
points (better on two, worse on one), and entropy gave min/max's labels; the budget search, not
the calibrator, is what brings a graph within budget.
"""

import os
import tempfile
import time

import numpy as np

from .._deps import require
from ..errors import SegDeployError
from .budget import (  # noqa: F401  (segexport and the scripts import them from here)
    DEFAULT_BUDGET,
    IMAGE_EXTENSIONS,
    MIN_CLASS_SHARE,
    Budget,
    _session,
    budget_figures,
    describe_budget,
    describe_figures,
    labels_of,
    list_images,
    load_frames,
    parse_budget,
)

# The search keeps nodes FP32 until the held-out figures are within this fraction of the budget
# (75 %: a 2-point IoU budget is searched to 1.5 points), because a handful of held-out frames is a
# small sample: on RegSeg at 1024x2048 a graph 1.93 points down on 6 held-out frames lost 2.6 on
# 8 other frames (docs/benchmarks.md). The verdict itself is against the budget.
SEARCH_MARGIN = 0.75
# the verdict names this many kept nodes; the card lists them all
VERDICT_NODES = 8
# The search stops after this many attempts in a row that neither raised the agreement nor
# lowered the worst class's IoU drop.
PATIENCE = 2
# ops that stay FP32 whatever the budget: the label head
_HEAD_OPS = ("ArgMax",)


def head_nodes(model_proto):
    """Names of nodes that stay FP32 always: the final logits Resize and the ArgMax head."""
    from .fp16 import _final_resizes

    names = set(_final_resizes(model_proto.graph))
    names |= set(n.name for n in model_proto.graph.node if n.op_type in _HEAD_OPS)
    return sorted(names)


class _Reader(object):
    """ONNX Runtime's CalibrationDataReader protocol over a list of inputs."""

    def __init__(self, name, inputs):
        self._feeds = [{name: x} for x in inputs]
        self._i = 0

    def get_next(self):
        if self._i >= len(self._feeds):
            return None
        self._i += 1
        return self._feeds[self._i - 1]

    def __len__(self):
        return len(self._feeds)

    def rewind(self):
        self._i = 0


class Quantizer(object):
    """An FP32 graph prepared for quantization (``prepared``) and its full Q/DQ graph (``write``);
    the budget search then keeps nodes FP32 by editing that graph (``keep_fp32``)."""

    def __init__(self, fp32_path, calib_inputs, workdir, log=None, reduce_range=None):
        """``reduce_range``: 7-bit weights (``int8_cpu``); None decides by the host CPU."""
        from .int8_cpu import reduce_range_choice

        require("onnxruntime", "INT8 quantization")
        onnx = require("onnx", "INT8 quantization")
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.log = log or (lambda text: None)
        self.input_name = onnx.load(fp32_path).graph.input[0].name
        self.prepared = os.path.join(workdir, "prepared.onnx")
        # Shape inference and the optimizer's fusions first, as ONNX Runtime's docs advise;
        # symbolic shape inference is for transformer graphs and needs sympy.
        quant_pre_process(fp32_path, self.prepared, skip_symbolic_shape=True)
        self.calib_inputs = calib_inputs
        self.head = head_nodes(onnx.load(self.prepared))
        if reduce_range is None:
            self.reduce_range = reduce_range_choice()
        else:
            self.reduce_range = {"enabled": bool(reduce_range), "reason": "asked for", "vnni": None}

    def write(self, out_path):
        """Calibrate and write the Q/DQ graph, every node but the head quantized."""
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        started = time.perf_counter()
        quantize_static(
            self.prepared,
            out_path,
            _Reader(self.input_name, self.calib_inputs),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=self.reduce_range["enabled"],  # weights only; activations keep 8 bits
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=list(self.head),
            extra_options={
                "ActivationSymmetric": True,  # zero point 0: TensorRT's requirement
                "WeightSymmetric": True,
                "DedicatedQDQPair": False,
            },
        )
        float_logits(out_path, self.head)
        self.log(
            "calibrated on {} frames in {:.1f} s".format(
                len(self.calib_inputs), time.perf_counter() - started
            )
        )
        return out_path


def float_logits(path, head):
    """Drop the Q/DQ pair between the classifier and the labels head (``head``: its node names)
    of the Q/DQ graph at ``path``, in place: the logits the head upsamples stay float.

    Quantized logits take 256 levels: their bilinear upsample is full of exact ties, which
    engines break by their own rounding (OpenVINO's Interpolate and ONNX Runtime's Resize then
    disagree on 0.02 % of the pixels, where float logits differ on 1e-6), and the fused head,
    which upsamples the logits on the host, must see the values the graph head sees. The
    classifier still reads INT8 activations and weights; only its output stays float."""
    import onnx

    proto = onnx.load(path)
    nodes = list(proto.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    readers = {}
    for n in nodes:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    outputs = set(o.name for o in proto.graph.output)
    changed = False
    for node in nodes:
        if node.name not in head or node.op_type != "Resize":
            continue
        dq = producer.get(node.input[0])
        q = (
            producer.get(dq.input[0])
            if dq is not None and dq.op_type == "DequantizeLinear"
            else None
        )
        if q is None or q.op_type != "QuantizeLinear":
            continue
        if len(readers.get(dq.output[0], ())) != 1 or dq.output[0] in outputs:
            continue  # the dequantized logits feed something else too: leave the graph as it is
        node.input[0] = q.input[0]
        dropped = [dq] + ([q] if len(readers.get(q.output[0], ())) == 1 else [])
        for n in dropped:
            proto.graph.node.remove(n)
        changed = True
    if changed:
        names = set(i for n in proto.graph.node for i in n.input)
        kept = [t for t in proto.graph.initializer if t.name in names]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
        onnx.save(proto, path)
    return changed


def _expose(model_proto, names):
    import copy

    from onnx import TensorProto, helper

    proto = copy.deepcopy(model_proto)
    have = set(o.name for o in proto.graph.output)
    for name in names:
        if name not in have:
            proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return proto


def logits_tensor(model_proto):
    """The FP32 tensor the labels are decided from: the input of the final Resize or ArgMax."""
    producer = {o: n for n in model_proto.graph.node for o in n.output}
    head = set(head_nodes(model_proto))
    name = model_proto.graph.output[0].name
    node = producer.get(name)
    while node is not None and node.name in head:
        name = node.input[0]
        node = producer.get(name)
    return name


def _with_only(fp32_proto, int8_proto, layer, suffix="__only"):
    """``fp32_proto`` with the Q/DQ pairs that feed ``layer`` in ``int8_proto`` copied in front
    of it: the FP32 graph with just that one layer quantized (same scales and INT8 weights)."""
    import copy

    proto = copy.deepcopy(fp32_proto)
    producer = {o: n for n in int8_proto.graph.node for o in n.output}
    inits = {t.name: t for t in int8_proto.graph.initializer}
    target = next(n for n in proto.graph.node if n.name == layer)
    source = next(n for n in int8_proto.graph.node if n.name == layer)
    added, renamed = [], {}

    def fresh(name):
        renamed.setdefault(name, name + suffix)
        return renamed[name]

    for k, name in enumerate(source.input):
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        chain = [q, dq] if q is not None and q.op_type == "QuantizeLinear" else [dq]
        for node in chain:
            clone = copy.deepcopy(node)
            clone.name = node.name + suffix
            for j, i in enumerate(node.input):
                if i in inits:
                    if i not in renamed:
                        tensor = copy.deepcopy(inits[i])
                        tensor.name = fresh(i)
                        proto.graph.initializer.append(tensor)
                    clone.input[j] = renamed[i]
                elif i in renamed:
                    clone.input[j] = renamed[i]
            for j, o in enumerate(node.output):
                clone.output[j] = fresh(o)
            added.append(clone)
        target.input[k] = renamed[dq.output[0]]
    nodes = list(proto.graph.node)
    at = nodes.index(target)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes[:at] + added + nodes[at:])
    return proto


def _prune(proto):
    """Drop nodes whose outputs nothing reads, then initializers nothing reads (in place)."""
    graph = proto.graph
    outputs = set(o.name for o in graph.output)
    while True:
        used = set(i for n in graph.node for i in n.input) | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = set(i for n in graph.node for i in n.input)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return proto


def keep_fp32(int8_proto, fp32_proto, names, suffix="__fp32"):
    """The INT8 graph with the nodes ``names`` computing in FP32: each reads the FP32 tensors and
    FP32 weights/bias it reads in ``fp32_proto`` instead of their Q/DQ copies; the other readers
    of a shared Q/DQ pair keep it. Q/DQ pairs and INT8 weights nothing reads any more are removed.
    A graph edit, not a re-quantization: every other layer keeps its calibrated scales."""
    import copy

    proto = copy.deepcopy(int8_proto)
    names = set(names)
    source = dict((n.name, n) for n in fp32_proto.graph.node if n.name in names)
    weights = dict((t.name, t) for t in fp32_proto.graph.initializer)
    have = set(t.name for t in proto.graph.initializer)
    for node in proto.graph.node:
        if node.name not in source:
            continue
        for k, name in enumerate(source[node.name].input):
            if name in weights:  # FP32 weight or bias, under a name no Q/DQ output can take
                renamed = name + suffix
                if renamed not in have:
                    tensor = copy.deepcopy(weights[name])
                    tensor.name = renamed
                    proto.graph.initializer.append(tensor)
                    have.add(renamed)
                name = renamed
            node.input[k] = name
    return _prune(proto)


def quantized_nodes(int8_proto):
    """Names of the nodes that read a DequantizeLinear output (the quantized computations)."""
    producer = {o: n for n in int8_proto.graph.node for o in n.output}
    return [
        n.name
        for n in int8_proto.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(
            producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
            for i in n.input
        )
    ]


def layer_sensitivity(fp32_proto, int8_proto, inputs, threads=None, log=None):
    """Per-node sensitivity: how far quantizing *only* this node moves the logits.

    For every node the INT8 graph quantizes (convolutions, and the Add, Concat, Mul, Resize, ...
    that read Q/DQ tensors), the FP32 graph is run with just that node's Q/DQ pairs (its
    activation inputs and INT8 weights, same scales); the relative RMS error of the logits (the
    tensor the labels are taken from) against the FP32 graph is its score. A local measure (the
    error a node adds to its own output) ranks early, wide layers first, but labels are decided
    by how an error survives to the logits: on a trained RegSeg, keeping the locally worst
    layers FP32 did not bring the IoU part of the budget back, and this ranking did
    (docs/benchmarks.md). One FP32 run per node and input: about 0.2 s per node at 512x1024 on
    2 cores. Returns [(node name, score)], most sensitive first.
    """
    log = log or (lambda text: None)
    layers = quantized_nodes(int8_proto)
    logits = logits_tensor(fp32_proto)

    exposed = _expose(fp32_proto, [logits])  # once: each one-node graph copies this one

    def run(proto):
        session = _session(proto, threads)
        names = [o.name for o in session.get_outputs()]
        feed = session.get_inputs()[0].name
        return [
            session.run(None, {feed: x})[names.index(logits)].astype(np.float64) for x in inputs
        ]

    reference = run(exposed)
    power = sum(float((r * r).mean()) for r in reference)
    started = time.perf_counter()
    scores = []
    step = max(1, len(layers) // 10)
    for i, layer in enumerate(layers):
        out = run(_with_only(exposed, int8_proto, layer))
        err = sum(float(((r - o) ** 2).mean()) for r, o in zip(reference, out))
        scores.append((layer, float(np.sqrt(err / max(power, 1e-30)))))
        if (i + 1) % step == 0 or i + 1 == len(layers):
            log(
                "sensitivity: {}/{} nodes ({:.0f} s)".format(
                    i + 1, len(layers), time.perf_counter() - started
                )
            )
    return sorted(scores, key=lambda s: -s[1])


def time_graph(paths, inputs, threads=2, rounds=3):
    """Median ms per run of each graph in ``paths`` (ONNX Runtime CPU), interleaved."""
    sessions = [_session(p, threads) for p in paths]
    x = inputs[0]
    name = sessions[0].get_inputs()[0].name
    samples = [[] for _ in sessions]
    for s in sessions:
        s.run(None, {name: x})
    for _ in range(rounds):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            s.run(None, {name: x})
            samples[i].append((time.perf_counter() - start) * 1e3)
    return [float(np.median(s)) for s in samples]


def quantize_with_budget(
    fp32_path,
    out_path,
    calib_inputs,
    heldout_inputs,
    num_classes,
    budget=DEFAULT_BUDGET,
    threads=None,
    log=None,
    max_fp32_layers=None,
):
    """Write ``out_path`` (the Q/DQ graph, atomically) and return the budget report.

    The full INT8 graph is checked on ``heldout_inputs`` against the FP32 graph. Over budget, the
    quantized nodes are ranked by ``layer_sensitivity`` and the top 1, 2, 4, 8, ... are kept FP32
    (``keep_fp32``: the same calibrated graph, those nodes reading FP32) until the figures are
    within SEARCH_MARGIN of the budget or ``max_fp32_layers`` (default: half the quantized nodes)
    is reached; a full INT8 graph within budget but not within the margin is searched too. The
    report lists every attempt, the nodes that stayed FP32, the ranking, and the speed of the full
    and final graphs (ONNX Runtime, interleaved).
    """
    onnx = require("onnx", "INT8 quantization")
    from .._io import atomic_path

    log = log or (lambda text: None)
    if not heldout_inputs:
        raise SegDeployError("the accuracy budget needs held-out frames; pass more --calib images")
    reference = _session(fp32_path, threads)
    ref_labels = labels_of(reference, heldout_inputs)
    classes = sorted(set(int(v) for r in ref_labels for v in np.unique(r)))
    report = {
        "quantizer": "onnxruntime.quantization.quantize_static (QDQ, MinMax)",
        "scheme": "INT8 symmetric activations, per-channel symmetric INT8 weights",
        "calibration_frames": len(calib_inputs),
        "heldout_frames": len(heldout_inputs),
        "fp32_classes_on_heldout": len(classes),
        "budget": {"min_agreement": budget.min_agreement, "max_iou_drop": budget.max_iou_drop},
        "attempts": [],
    }
    if len(classes) < 2:
        log(
            "WARNING: the FP32 graph gives {} class(es) on the held-out frames: any INT8 "
            "graph agrees 100 %, so the budget checks nothing (random weights?)".format(
                len(classes)
            )
        )
    with tempfile.TemporaryDirectory(prefix="segdeploy-int8-") as workdir:
        quantizer = Quantizer(fp32_path, calib_inputs, workdir, log)
        report["always_fp32"] = quantizer.head
        report["reduce_range"] = quantizer.reduce_range
        if quantizer.reduce_range["enabled"]:
            report["scheme"] = "INT8 symmetric activations, per-channel symmetric 7-bit weights"
        log(
            "weights in {} bits (reduce_range {}): {}".format(
                7 if quantizer.reduce_range["enabled"] else 8,
                "on" if quantizer.reduce_range["enabled"] else "off",
                quantizer.reduce_range["reason"],
            )
        )

        def attempt(keep):
            path = os.path.join(workdir, "int8_{}.onnx".format(len(keep)))
            if keep:
                onnx.save(keep_fp32(full_proto, prepared, keep), path)
            else:
                quantizer.write(path)
            figures = budget_figures(
                ref_labels, labels_of(_session(path, threads), heldout_inputs), num_classes, budget
            )
            report["attempts"].append(
                {
                    "fp32_layers": len(keep),
                    "label_agreement": figures["label_agreement"],
                    "max_iou_drop": figures["max_iou_drop"],
                    "within_budget": figures["within_budget"],
                }
            )
            log("{} nodes kept FP32: {}".format(len(keep), describe_figures(figures)))
            return path, figures

        full_path, figures = attempt([])
        full_proto, prepared = onnx.load(full_path), onnx.load(quantizer.prepared)
        report["full_int8"] = figures
        tried = [([], full_path, figures)]
        if not _with_margin(figures, budget):
            log(
                "{} ({}); ranking quantized nodes by their effect on the logits".format(
                    "over budget"
                    if not figures["within_budget"]
                    else "within budget by less than the search margin",
                    figures["over_budget_because"] or describe_figures(figures),
                )
            )
            ranking = layer_sensitivity(prepared, full_proto, heldout_inputs[:1], threads, log)
            report["sensitivity"] = [
                {"layer": name, "logits_relative_error": round(score, 6)} for name, score in ranking
            ]
            log(
                "most sensitive: {}".format(
                    ", ".join("{} ({:.4f})".format(n, s) for n, s in ranking[:5])
                )
            )
            limit = max_fp32_layers or max(1, len(ranking) // 2)
            k, stale = 1, 0
            best = (figures["label_agreement"], -figures["max_iou_drop"])
            while not _with_margin(figures, budget) and k <= limit and stale < PATIENCE:
                keep = [name for name, _ in ranking[:k]]
                path, figures = attempt(keep)
                tried.append((keep, path, figures))
                # progress: more labels agree, or the worst class loses fewer IoU points
                now = (figures["label_agreement"], -figures["max_iou_drop"])
                stale = 0 if (now[0] > best[0] or now[1] > best[1]) else stale + 1
                best = (max(best[0], now[0]), max(best[1], now[1]))
                if k == limit:
                    break
                k = min(limit, k * 2)
        keep, final_path, figures = _choose(tried, budget)
        report["search_margin"] = SEARCH_MARGIN
        report["fp32_layers"] = keep
        report["final"] = figures
        report["within_budget"] = figures["within_budget"]
        if keep:
            full_ms, final_ms = time_graph([full_path, final_path], heldout_inputs, threads)
            report["speed_ms_onnxruntime"] = {
                "full_int8": round(full_ms, 2),
                "with_fp32_layers": round(final_ms, 2),
                "cost": round(final_ms / full_ms - 1.0, 4),
            }
        with atomic_path(out_path) as tmp:
            with open(final_path, "rb") as src, open(tmp, "wb") as dst:
                dst.write(src.read())
    report["verdict"] = verdict_text(report, budget)
    return report


def _with_margin(figures, budget):
    """Within the budget tightened to SEARCH_MARGIN of it (the search's target)."""
    disagreement = 1.0 - figures["label_agreement"]
    return (
        figures["within_budget"]
        and disagreement <= (1.0 - budget.min_agreement) * SEARCH_MARGIN
        and figures["max_iou_drop"] <= budget.max_iou_drop * SEARCH_MARGIN
    )


def _choose(tried, budget):
    """(kept nodes, path, figures) to ship: the first attempt within the margin; else the
    attempt within budget with the smallest worst-class drop; else the last attempt."""
    for entry in tried:
        if _with_margin(entry[2], budget):
            return entry
    within = [entry for entry in tried if entry[2]["within_budget"]]
    if within:
        return min(within, key=lambda e: (e[2]["max_iou_drop"], -e[2]["label_agreement"]))
    return tried[-1]


def verdict_text(report, budget):
    final = report["final"]
    keep = report["fp32_layers"]
    head = "within budget" if report["within_budget"] else "OVER BUDGET"
    text = "{} ({}): {}".format(head, describe_budget(budget), describe_figures(final))
    if keep:
        shown = ", ".join(keep[:VERDICT_NODES])
        if len(keep) > VERDICT_NODES:
            shown += ", ... ({} more in quantization.fp32_layers)".format(len(keep) - VERDICT_NODES)
        text += "; {} node(s) kept FP32: {}".format(len(keep), shown)
        speed = report.get("speed_ms_onnxruntime")
        if speed:
            text += " (ONNX Runtime latency {:+.1%} against full INT8)".format(speed["cost"])
    else:
        text += "; every quantized node INT8"
    return text
