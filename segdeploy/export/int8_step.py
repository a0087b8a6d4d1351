"""The INT8 step of segexport: calibrate, quantize, check the accuracy budget, write the card.

Writes ``<name>.int8.onnx`` (explicit Q/DQ, see ``quantize``) with the model card in its metadata
and its sidecar; the card's ``precision`` is ``int8`` and its ``quantization`` section holds the
budget verdict and figures, the nodes kept FP32 and the sensitivity ranking.
"""

import os

from .. import card as card_mod
from ..errors import SegDeployError


def check_args(args):
    """Refuse flag combinations before any work is done."""
    if not getattr(args, "int8", False):
        if getattr(args, "calib", None) and not getattr(args, "fp16", False):
            raise SegDeployError(
                "--calib is for INT8 (--int8) and the bf16 check of --fp16 on a CPU; add one "
                "(or drop --calib)"
            )
        if args.calib not in (None, "random") and not os.path.isdir(args.calib):
            raise SegDeployError("--calib {} is not a directory of frames".format(args.calib))
        return
    if not args.calib:
        raise SegDeployError(
            "--int8 needs --calib DIR: a folder of frames like the ones you deploy on (at least "
            "3 images; a quarter is held out to check the accuracy budget)"
        )
    if args.calib_count is not None and args.calib_count < 1:
        raise SegDeployError("--calib-count must be at least 1")


def graph_frames(source, card, count=None, stream=None):
    """``quantize.load_frames`` in the form the graph of ``card`` takes: normalized float32, or
    uint8 frames for a ``segexport --input uint8`` graph."""
    from .quantize import load_frames
    from .verify import float_view, graph_inputs

    calib, heldout, description = load_frames(source, float_view(card), count, stream=stream)
    return graph_inputs(calib, card), graph_inputs(heldout, card), description


def int8_step(args, steps, onnx_path, out_dir, name, card, report, stream):
    from .onnx_export import save_model, set_card
    from .quantize import describe_budget, parse_budget, quantize_with_budget

    budget = parse_budget(args.budget)
    calib, heldout, description = graph_frames(args.calib, card, args.calib_count, stream=stream)
    int8_path = os.path.join(out_dir, name + ".int8.onnx")

    def run():
        return quantize_with_budget(
            onnx_path,
            int8_path,
            calib,
            heldout,
            card["model"]["num_classes"],
            budget,
            threads=args.threads,
            log=steps.say,
        )

    quant = steps.run(
        "INT8 Q/DQ graph: calibrate on {}, check the budget ({})".format(
            description, describe_budget(budget)
        ),
        run,
    )
    steps.say("verdict: " + quant["verdict"])
    if not quant["within_budget"]:
        steps.say(
            "WARNING: the INT8 graph is over the accuracy budget even with nodes kept FP32; "
            "it is written for inspection, but no engine is built from it. Calibrate on more "
            "frames like the deployment's, or relax --budget."
        )
    if args.calib == "random":
        quant["calibration"] = "RANDOM NOISE (--calib random): accuracy on real frames unknown"
    else:
        quant["calibration"] = description
    import onnx

    proto = onnx.load(int8_path)
    card8 = dict(card, precision="int8")
    card8["parity"] = dict(card.get("parity", {}))
    card8["parity"]["int8"] = _summary(quant["final"])
    card8["quantization"] = {
        k: quant[k]
        for k in (
            "verdict",
            "within_budget",
            "budget",
            "quantizer",
            "scheme",
            "reduce_range",
            "calibration",
            "calibration_frames",
            "heldout_frames",
            "fp32_classes_on_heldout",
            "always_fp32",
            "fp32_layers",
            "attempts",
            "speed_ms_onnxruntime",
            "sensitivity",
        )
        if k in quant
    }
    set_card(proto, card8)
    save_model(proto, int8_path)
    card_mod.write_sidecar(int8_path, card8)
    steps.say(int8_path)
    report["int8"] = quant
    report["card_int8"] = card8
    return int8_path


def _summary(f):
    keys = (
        "label_agreement",
        "max_iou_drop",
        "worst_class",
        "disagreements_near_boundary",
        "iou_drop",
        "classes_present",
        "within_budget",
    )
    return {k: f.get(k) for k in keys}


def tensorrt_int8(precision, source, int8_path, backend, steps):
    """(precision, ONNX) of the TensorRT engine when an INT8 graph exists: INT8 where the device
    table allows it (recommended on the GTX 1080 Ti, refused on the Jetson TX2 with the reason)."""
    from ..engines import devices

    quant = card_mod.read_sidecar(int8_path).get("quantization", {})
    if not quant.get("within_budget"):
        steps.say("TensorRT: the INT8 graph is over budget, so the engine stays " + precision)
        return precision, source
    if backend != "tensorrt":  # --print-trtexec only: the device is not here
        steps.say(
            "TensorRT INT8 from {} (explicit Q/DQ); not for the Jetson TX2, which has no "
            "INT8".format(os.path.basename(int8_path))
        )
        return "int8", int8_path
    record = devices.detect().record
    choice, why = devices.recommend_precision(record, have_int8_graph=True)
    if record is not None and not record.int8:
        steps.say("TensorRT INT8 refused: {}; building {}".format(why, precision))
        return precision, source
    steps.say("TensorRT INT8: " + why)
    return "int8", int8_path
