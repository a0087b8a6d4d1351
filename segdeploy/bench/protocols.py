"""Timing protocols as data (DESIGN.md, "Timing protocols"): one frozen record per paper.

The harness (``bench.harness``) runs any protocol on any engine. ``scope`` lists the steps the
protocol puts inside the timer, from ``STEPS``; the harness adds what an engine cannot leave out
(an argmax compiled into an ONNX graph) and reports the scope it actually timed.
Python 3.6 compatible.
"""

from collections import OrderedDict, namedtuple

from ..errors import SegDeployError

STEPS = OrderedDict(
    [
        ("preprocess", "resize + normalize the uint8 frame into the network input"),
        ("h2d", "host->device copy of the input"),
        ("forward", "network forward pass"),
        ("upsample", "upsampling of the logits to the input resolution"),
        ("argmax", "argmax over the classes"),
        ("d2h", "device->host copy of the result"),
        ("resize", "resize of the label map to the frame's size"),
    ]
)

Protocol = namedtuple(
    "Protocol",
    [
        "name",
        "warmup",
        "iters",
        "batch",
        "scope",
        "sync",
        "loop_timer",
        "cudnn_benchmark",
        "mixed_precision",
        "fold_bn",
        "source",
    ],
)
Protocol.__doc__ = """A timing protocol.

name; warmup / iters: untimed and timed iterations; batch; scope: tuple of STEPS inside the
timer; sync: 'iteration' (synchronize the device after every iteration, each one timed) or 'loop'
(synchronize around the whole loop; the FPS is the loop's); loop_timer: True when the paper's FPS
is n / (t1 - t0) over the loop; cudnn_benchmark; mixed_precision (on CUDA); fold_bn; source.
"""

REGSEG = Protocol(
    name="regseg",
    warmup=10,
    iters=100,
    batch=1,
    scope=("forward", "upsample"),
    sync="iteration",
    loop_timer=False,
    cudnn_benchmark=True,
    mixed_precision=True,
    fold_bn=False,
    source="RegSeg Sec. 4.7: T4, mixed precision, 1x3x1024x2048, 10 warm-up iterations, mean "
    "over the next 100, cudnn.benchmark=True, torch.cuda.synchronize(); the input is "
    "already on the device",
)
SWIFTNET = Protocol(
    name="swiftnet",
    warmup=1,
    iters=1000,
    batch=1,
    scope=("h2d", "forward", "upsample", "argmax", "d2h"),
    sync="loop",
    loop_timer=True,
    cudnn_benchmark=False,
    mixed_precision=False,
    fold_bn=True,
    source="SwiftNet Sec. 4.2 / Fig. 5: batch 1; each iteration copies the input to the GPU, "
    "runs forward, logits.max(1), copies the byte label map back; synchronize before t0 "
    "and after the loop; fps = 1000 n / (t1 - t0) over 1000 passes; BatchNorm folded",
)
MMSEG = Protocol(
    name="mmseg",
    warmup=5,
    iters=200,
    batch=1,
    scope=("h2d", "forward", "upsample", "argmax", "d2h", "resize"),
    sync="iteration",
    loop_timer=False,
    cudnn_benchmark=False,
    mixed_precision=False,
    fold_bn=False,
    source="MMSegmentation benchmark notes: mean over 200 images, cudnn.benchmark=False, a few "
    "warm-up images, network forward plus post-processing (back to the image's size), "
    "data loading excluded",
)
RUNTIME = Protocol(
    name="runtime",
    warmup=10,
    iters=100,
    batch=1,
    scope=("preprocess", "h2d", "forward", "upsample", "argmax", "d2h", "resize"),
    sync="iteration",
    loop_timer=False,
    cudnn_benchmark=True,
    mixed_precision=False,
    fold_bn=True,
    source="segdeploy: Runtime.infer end to end, uint8 BGR frame in, uint8 label map out",
)

PROTOCOLS = OrderedDict((p.name, p) for p in (REGSEG, SWIFTNET, MMSEG, RUNTIME))


def get(name, warmup=None, iters=None):
    """The protocol called ``name``, with ``warmup`` / ``iters`` overridden when given."""
    try:
        protocol = PROTOCOLS[str(name).lower()]
    except KeyError:
        raise SegDeployError(
            "unknown protocol {!r}; known: {}".format(name, ", ".join(PROTOCOLS))
        ) from None
    if warmup is not None:
        if int(warmup) < 0:
            raise SegDeployError("--warmup must be >= 0, got {}".format(warmup))
        protocol = protocol._replace(warmup=int(warmup))
    if iters is not None:
        if int(iters) < 1:
            raise SegDeployError("--iters must be >= 1, got {}".format(iters))
        protocol = protocol._replace(iters=int(iters))
    return protocol


def describe_scope(scope, device_kind="cpu"):
    """One line naming what was inside the timer, with host<->device copies marked on a CPU."""
    parts = []
    for step in scope:
        text = step
        if step in ("h2d", "d2h") and device_kind == "cpu":
            text += " (none on a CPU)"
        parts.append(text)
    return ", ".join(parts)
