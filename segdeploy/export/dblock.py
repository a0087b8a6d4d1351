"""segexport's D-block steps: fuse the exported graph (``engines.dblock_graph``), check the fused
graph's labels against the standard graph in ONNX Runtime (DBlockConv runs as a custom op on the
kernel's host build), write ``NAME.dblock.onnx``, and build its engine.

Python 3.6 compatible and free of torch; onnx and onnxruntime are imported inside the functions.
"""

import copy
import os

import numpy as np

from .. import card as card_mod
from .._deps import require
from ..card import store_onnx_card as store_card
from ..engines.dblock_graph import (  # noqa: F401  (the rewrite's names, as segexport knew them)
    DOMAIN,
    GROUP_WIDTH,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    SUFFIX,
    card_section,
    dblock_path,
    find_blocks,
    fuse_dblocks,
    fuse_file,
    save,
)
from ..errors import SegDeployError


def _ort_session(model_proto, custom_ops):
    import copy as _copy

    ort = require("onnxruntime", "checking the D-block graph")
    from onnx import TensorProto, helper

    from ..runtime import dblock_op

    proto = _copy.deepcopy(model_proto)
    # Expose the logits where the graph ends in ArgMax: labels alone hide small differences.
    names = [o.name for o in proto.graph.output]
    if "logits" not in names and any("logits" in n.output for n in proto.graph.node):
        proto.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if custom_ops:
        dblock_op.session_options(["dblock"], options)
        dblock_op.adapt(proto)
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def compare_graphs(standard, fused, inputs, num_classes):
    """Run the standard graph (ONNX Runtime) and the fused one (ONNX Runtime, DBlockConv as a
    custom op on the host build) on ``inputs``; return the merged parity figures of fused
    against standard, plus the number of classes the standard graph predicts."""
    from . import verify

    ref_session = _ort_session(standard, custom_ops=False)
    cand_session = _ort_session(fused, custom_ops=True)
    batches, classes, gaps = [], set(), []
    for x in inputs:
        ref_labels, ref_logits = verify.labels_and_logits(ref_session, x)
        cand_labels, cand_logits = verify.labels_and_logits(cand_session, x)
        classes.update(np.unique(ref_labels).tolist())
        batches.append(
            verify.compare(ref_logits, ref_labels, cand_labels, cand_logits, num_classes)
        )
        if ref_logits is not None:
            gaps.append(_top2_gaps(ref_logits, ref_labels != cand_labels))
    figures = verify.merge(batches)
    figures["reference_classes"] = len(classes)
    if gaps and "max_abs_logit_error" in figures:
        # A label can flip by rounding alone where the two best classes are closer than the
        # two graphs' logits differ, provided the logits agree to rounding level at all (the
        # FP32 threshold); a flip anywhere else means the graphs compute different things.
        gaps = np.concatenate(gaps)
        bound = 2.0 * figures["max_abs_logit_error"]
        if figures["max_rel_logit_error"] > verify.MAX_RELATIVE_LOGIT_ERROR:
            bound = -1.0  # the logits differ beyond rounding: no flip is explained by it
        figures["disagreement_top2_gap_max"] = float(gaps.max()) if gaps.size else None
        figures["disagreements_beyond_rounding"] = int((gaps > bound).sum())
    return figures


def _top2_gaps(logits, mask):
    """Gap between the best and second-best logit of ``logits`` (N, K, H, W) where ``mask``."""
    at = np.moveaxis(logits, 1, -1)[mask]  # (P, K)
    if at.shape[0] == 0:
        return np.zeros((0,), np.float64)
    top2 = np.sort(at.astype(np.float64), axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def export_step(steps, proto, card, inputs, out_dir, name, proto16=None):
    """segexport --dblock-plugin: fuse, check against the standard graph, write
    ``<name>.dblock.onnx`` and its sidecar (and ``<name>.dblock.fp16.onnx`` from the FP16-typed
    graph ``proto16`` when given). Returns the report section."""
    from ..errors import VerificationError
    from . import verify

    def fuse_both():
        fused16 = fuse_dblocks(proto16) if proto16 is not None else None
        return fuse_dblocks(proto), fused16

    (fused, summary), fused16 = steps.run(
        "fuse D blocks into {} plugin nodes".format(PLUGIN_NAME), fuse_both
    )
    if not summary["fused"]:
        raise SegDeployError(
            "--dblock-plugin: the graph has no split-dilation D block to fuse (no Split -> "
            "Conv -> Conv -> Concat with 3x3 convs in groups of {}); export without "
            "--dblock-plugin".format(GROUP_WIDTH)
        )
    steps.say(
        "{} blocks fused ({} with their ReLU), {} Splits left{}".format(
            len(summary["fused"]),
            sum(1 for b in summary["fused"] if b["relu"]),
            len(summary["skipped"]),
            "".join("; {}: {}".format(s["split"], s["reason"]) for s in summary["skipped"]),
        )
    )
    figures = steps.run(
        "check the {} graph against the standard one on {} inputs (ONNX Runtime; {} as a "
        "custom op on the kernel's host build)".format(PLUGIN_NAME, len(inputs), PLUGIN_NAME),
        compare_graphs,
        proto,
        fused,
        verify.graph_inputs(inputs, card),  # uint8 frames for a --input uint8 graph
        card["model"]["num_classes"],
    )
    text = "labels agree on {:.4%} of {} px".format(figures["label_agreement"], figures["pixels"])
    if "max_abs_logit_error" in figures:
        text += "; logit difference max abs {:.2e}, rel {:.2e}".format(
            figures["max_abs_logit_error"], figures["max_rel_logit_error"]
        )
    if figures.get("disagreeing_pixels"):
        text += (
            "; at the {} differing pixels the top-2 logit gap is at most {:.2e}; {} of them "
            "beyond what rounding can flip".format(
                figures["disagreeing_pixels"],
                figures.get("disagreement_top2_gap_max") or 0.0,
                figures.get("disagreements_beyond_rounding"),
            )
        )
    steps.say(text)
    path = os.path.join(out_dir, name + SUFFIX)
    failure = verify.verdict(figures)
    if figures.get("disagreements_beyond_rounding"):
        failure = "; ".join(
            f
            for f in (
                failure,
                "{} pixels differ where rounding cannot explain it".format(
                    figures["disagreements_beyond_rounding"]
                ),
            )
            if f
        )
    if failure:
        save(fused, path + ".failed")
        raise VerificationError(
            "the {} graph disagrees with the standard graph ({}); kept it as {}.failed for "
            "inspection".format(PLUGIN_NAME, failure, path)
        )
    fused_card = dict(card, dblock=card_section(summary))
    fused_card["parity"] = dict(card.get("parity", {}), dblock_vs_standard=_parity(figures))
    store_card(fused, fused_card)
    save(fused, path)
    card_mod.write_sidecar(path, fused_card)
    steps.say(path)
    section = dict(summary, path=path, parity=figures, card=fused_card, path_fp16=None)
    if fused16 is not None:
        # The FP16-typed graph (what TensorRT 11 builds FP16 from) must fuse the same blocks;
        # its arithmetic is the host build's FP16 mode, tested in tests/plugins.
        proto16_fused, summary16 = fused16
        same = [(b["dilations"], b["channels"]) for b in summary16["fused"]] == [
            (b["dilations"], b["channels"]) for b in summary["fused"]
        ]
        if not same:
            raise VerificationError(
                "the FP16-typed graph fused other blocks than the FP32 graph ({} against {}); "
                "export without --fp16 or without --dblock-plugin".format(
                    len(summary16["fused"]), len(summary["fused"])
                )
            )
        path16 = os.path.join(out_dir, name + ".dblock.fp16.onnx")
        card16 = dict(fused_card, precision="fp16")
        store_card(proto16_fused, card16)
        save(proto16_fused, path16)
        card_mod.write_sidecar(path16, card16)
        steps.say(path16 + " (the same blocks fused in the FP16-typed graph)")
        section["path_fp16"] = path16
    return section


def check_engine_args(args, backend):
    """Before any work: a TensorRT build of the D-block graph needs the plugin library."""
    if getattr(args, "dblock_plugin", False) and backend == "tensorrt" and not args.plugin:
        raise SegDeployError(
            "--dblock-plugin with a TensorRT build needs the DBlockConv plugin library: pass "
            "--plugin build/dblock/libdblock_plugin.so (build it on this device with "
            "python -m segdeploy.plugins.dblock.build --out build/dblock)"
        )


def engine_step(build_engine, args, steps, backend, reason, out_dir, name, section, profile,
                trt_version):  # fmt: skip
    """segexport --dblock-plugin with TensorRT: build (or print the trtexec command of)
    ``<name>.dblock.plan`` from the D-block graph with the plugin library. ``build_engine`` is
    the pipeline's engine step. Returns the plan path or None."""
    if backend != "tensorrt" and not args.print_trtexec:
        return None
    if not args.plugin:  # only printing here: name where the library will be
        args = copy.copy(args)
        args.plugin = ["build/dblock/libdblock_plugin.so"]
        steps.say("the trtexec line below assumes the plugin at {}".format(args.plugin[0]))
    paths = (section["path"], section.get("path_fp16"))
    plan, _ = build_engine(
        args, steps, backend if backend == "tensorrt" else None, reason, out_dir,
        name + ".dblock", paths, section["card"], profile, trt_version,
    )  # fmt: skip
    return plan


def _parity(figures):
    keys = ("inputs", "label_agreement", "disagreeing_pixels", "disagreements_beyond_rounding")
    keys += ("max_abs_logit_error", "max_rel_logit_error")
    return {k: figures.get(k) for k in keys}
