"""segexport's serving steps: the uint8 input head (``--input uint8``) and the Triton model
repository (``--triton DIR``). Called from ``pipeline.run``; kept here so the pipeline stays short.
"""

import os

from ..errors import SegDeployError, VerificationError

DEFAULT_TRITON_BATCH = 8
# Frames the uint8 graph is checked on against the float graph (smooth ones + one of noise).
UINT8_CHECK_FRAMES = 3


def serving_batch(args):
    """The batch range 1..N the graph takes (None: batch 1 only): --max-batch, else 8 with
    --triton (Triton's dynamic batcher needs a batch axis)."""
    max_batch = getattr(args, "max_batch", None)
    if max_batch is not None:
        if max_batch < 1:
            raise SegDeployError("--max-batch must be at least 1, got {}".format(max_batch))
        return max_batch
    return DEFAULT_TRITON_BATCH if getattr(args, "triton", None) else None


def check_uint8_target(args, backend, trt_version):
    """uint8 network inputs need TensorRT 8.6+ (older parsers have no UINT8 I/O)."""
    if getattr(args, "input", "float") != "uint8":
        return
    if (backend == "tensorrt" or args.print_trtexec) and trt_version and trt_version < (8, 6):
        raise SegDeployError(
            "--input uint8 needs TensorRT 8.6 or newer (uint8 network inputs); TensorRT {} "
            "takes the float graph: drop --input uint8".format(".".join(map(str, trt_version)))
        )


def add_uint8_head(steps, proto, card, proto16=None):
    """(uint8 proto, uint8 card, uint8 FP16 proto or None, figures): the head put on the verified
    float graph, and its labels checked against the float graph's on the same frames."""
    from .uint8_input import frames_for, prepend_uint8_input, uint8_card, verify_against_float

    def head():
        u8 = prepend_uint8_input(proto, card)
        figures = verify_against_float(proto, u8, card, frames_for(card, UINT8_CHECK_FRAMES))
        u8_16 = prepend_uint8_input(proto16, card) if proto16 is not None else None
        return u8, u8_16, figures

    u8, u8_16, figures = steps.run(
        "uint8 input head (cast, mean/std, NHWC->NCHW in the graph) and its check against "
        "the float graph",
        head,
    )
    steps.say(
        "labels identical to the float graph on {} of {} frames ({:.4%} of pixels, {} classes "
        "seen); {} bytes per frame cross to the engine instead of {}".format(
            figures["identical_frames"],
            figures["frames"],
            figures["label_agreement"],
            figures["classes_seen"],
            figures["bytes_per_frame_uint8"],
            figures["bytes_per_frame_float"],
        )
    )
    if figures["identical_frames"] != figures["frames"]:
        raise VerificationError(
            "the uint8 graph's labels differ from the float graph's on {} of {} frames; "
            "export without --input uint8".format(
                figures["frames"] - figures["identical_frames"], figures["frames"]
            )
        )
    return u8, uint8_card(card), u8_16, figures


def write_triton(steps, args, name, onnx_path, engine_path, card, precision):
    """Write the repository ``args.triton/<name>/`` for the plan (when one was built) or the
    ONNX file; returns the writer's result dict."""
    from .. import card as card_mod
    from ..engines.triton import write_model_repository

    backend = args.triton_backend
    plan_built = bool(engine_path) and os.path.splitext(engine_path)[1] in (".plan", ".engine")
    if backend == "auto":
        backend = "tensorrt_plan" if plan_built else "onnxruntime"
    if backend == "tensorrt_plan" and not plan_built:
        raise SegDeployError(
            "--triton-backend tensorrt_plan needs a TensorRT plan, and none was built here; "
            "build the repository on the serving GPU (segbuild --triton) or use "
            "--triton-backend onnxruntime"
        )
    source = engine_path if backend == "tensorrt_plan" else onnx_path
    source_card = card_mod.read_sidecar(source) if backend == "tensorrt_plan" else card
    if precision == "fp16":
        source_card = dict(source_card, precision="fp16")
    result = steps.run(
        "Triton model repository {} (backend {})".format(args.triton, backend),
        write_model_repository,
        args.triton,
        source,
        card=source_card,
        name=name,
        backend=backend,
        instances=args.instances,
        queue_delay_us=args.queue_delay_us,
        device=getattr(args, "triton_device", None),
    )
    steps.say(
        "{} (max_batch_size {}, {} instances; serve it on this machine with: segserve {})".format(
            result["config"], result["max_batch_size"], result["device"], args.triton
        )
    )
    return result
