"""Runtime.infer with the uint8-input graph against the float-input graph, in one run.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_uint8.py [--model regseg] [--res 512x1024]
        [--frames 512x1024,1024x2048] [--rounds 30] [--threads 2] [--json out/bench_uint8.json]

The same folded model is exported once; the float graph (normalized float32 NCHW in) and the
uint8 graph made from it by ``segexport --input uint8``'s head (uint8 NHWC BGR in) are built into
ONNX Runtime engines (.ort) with the same options, and both are opened by ``segdeploy.Runtime``.
For each frame size, every round calls each variant once in a shuffled order (the protocol of
scripts/bench_runtime.py, whose ``interleave`` this imports): ``Runtime.infer`` whole, and the
host pre-processing alone (``Preprocessor`` / ``FramePacker``: what moves off the host), and, for
a frame of the network size, the head's nodes alone in ONNX Runtime (what moves in). Reported:
medians and p10-p90 in ms, the uint8/float ratio, the bytes handed to the engine per frame, and
the label agreement of the two graphs on the measured frames (weights are random unless
``--checkpoint``: timings stay valid, labels are then not meaningful).
"""

import argparse
import json
import os
import platform
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_runtime import interleave  # noqa: E402


def build_engines(model_name, res, checkpoint, threads, workdir):
    from segdeploy import card as card_mod
    from segdeploy import models
    from segdeploy.engines.onnxruntime_builder import build_onnxruntime_engine
    from segdeploy.engines.profiles import derive_profile
    from segdeploy.export import export_onnx, fold_batchnorm
    from segdeploy.export.onnx_export import save_model, set_card
    from segdeploy.export.uint8_input import prepend_uint8_input, uint8_card
    from segdeploy.models.modelcard import make_card

    spec = models.get_spec(model_name)
    model = models.build(model_name).eval()
    if checkpoint:
        models.load_checkpoint(model, checkpoint)
    height, width = derive_profile(res, None, spec.stride).opt
    card = make_card(spec, spec.num_classes, height, width, "labels", None, 13, None)
    proto = export_onnx(fold_batchnorm(model), None, height=height, width=width, card=card)["model"]
    engines = {}
    for kind, graph, graph_card in (
        ("float", proto, card),
        ("uint8", prepend_uint8_input(proto, card), uint8_card(card)),
    ):
        onnx_path = os.path.join(workdir, "{}_{}.onnx".format(model_name, kind))
        set_card(graph, graph_card)
        save_model(graph, onnx_path)
        card_mod.write_sidecar(onnx_path, graph_card)
        engine = os.path.join(workdir, "{}_{}.ort".format(model_name, kind))
        build_onnxruntime_engine(onnx_path, engine, graph_card, threads=threads)
        engines[kind] = engine
    return engines, (height, width)


def head_only_session(card, threads):
    """An ONNX Runtime session of the uint8 head alone (on an Identity graph): its cost."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from segdeploy.export.uint8_input import prepend_uint8_input

    h, w = card["input"]["height"], card["input"]["width"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["out"])],
        "identity",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, h, w])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    head = prepend_uint8_input(proto, card)
    return ort.InferenceSession(
        head.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="regseg")
    parser.add_argument("--res", default="512x1024", help="network size HxW")
    parser.add_argument("--frames", default="512x1024,1024x2048", help="frame sizes HxW,...")
    parser.add_argument("--checkpoint")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the figures as JSON")
    args = parser.parse_args(argv)

    import onnxruntime

    import segdeploy
    from segdeploy.bench.harness import environment, sample_frame
    from segdeploy.engines.profiles import parse_hw

    results = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "model": args.model,
        "res": args.res,
        "threads": args.threads,
        "rounds": args.rounds,
        "environment": environment(),
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.node(),
        "frames": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-uint8-") as workdir:
        engines, (height, width) = build_engines(
            args.model, args.res, args.checkpoint, args.threads, workdir
        )
        runtimes = {k: segdeploy.Runtime(v, threads=args.threads) for k, v in engines.items()}
        head = head_only_session(runtimes["float"].card, args.threads)
        try:
            for text in args.frames.split(","):
                fh, fw = parse_hw(text, "--frames")
                frame = sample_frame(fh, fw, seed=1)
                outs = {k: np.empty((fh, fw), np.uint8) for k in runtimes}
                variants = {}
                for kind, rt in runtimes.items():
                    variants["infer_" + kind] = lambda rt=rt, out=outs[kind], frame=frame: rt.infer(
                        frame, out=out
                    )
                    variants["pre_" + kind] = lambda rt=rt, frame=frame: rt._pre.one(frame)
                if (fh, fw) == (height, width):  # the head's nodes alone, vs the host LUT
                    batch = frame[None]
                    variants["head_alone_in_onnxruntime"] = lambda b=batch: head.run(
                        None, {"image": b}
                    )
                timings = interleave(variants, args.rounds)
                labels = {k: rt.infer(frame) for k, rt in runtimes.items()}
                entry = {
                    "timings_ms": timings,
                    "ratio_infer_uint8_over_float": timings["infer_uint8"]["median"]
                    / timings["infer_float"]["median"],
                    "bytes_to_engine": {
                        "float": int(runtimes["float"]._pre.one(frame).nbytes),
                        "uint8": int(runtimes["uint8"]._pre.one(frame).nbytes),
                    },
                    "label_agreement": float((labels["float"] == labels["uint8"]).mean()),
                    "classes": int(len(np.unique(labels["float"]))),
                }
                results["frames"]["{}x{}".format(fh, fw)] = entry
                print(
                    "frame {}x{} -> {}x{}: infer float {:.2f} ms, uint8 {:.2f} ms (ratio {:.3f});"
                    " host pre-processing float {:.3f} ms, uint8 {:.3f} ms; bytes to the engine "
                    "{} vs {}; label agreement {:.4%}".format(
                        fh,
                        fw,
                        height,
                        width,
                        timings["infer_float"]["median"],
                        timings["infer_uint8"]["median"],
                        entry["ratio_infer_uint8_over_float"],
                        timings["pre_float"]["median"],
                        timings["pre_uint8"]["median"],
                        entry["bytes_to_engine"]["float"],
                        entry["bytes_to_engine"]["uint8"],
                        entry["label_agreement"],
                    ),
                    flush=True,
                )
        finally:
            for rt in runtimes.values():
                rt.close()
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print("wrote {}".format(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
