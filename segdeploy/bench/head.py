"""``segbench --head [C:STRIDE]``: the segmentation head alone, standard against fused.

    segbench --head 19:8 --res 1024x2048 --backends torch,onnxruntime,tensorrt \
             --plugin build/seghead/libseghead_plugin.so

The head takes logits at 1/STRIDE of --res (C classes; synthetic class regions, seeded) to labels
at --res. Per backend, interleaved in one process:
- torch (on CUDA when there is a GPU, else the CPU): ``F.interpolate`` + ``argmax`` against the
  fused algorithm in PyTorch (``segdeploy.plugins.seghead.torch_head``), FP32 and, on CUDA, FP16
  logits;
- onnxruntime (CPU): the Resize + ArgMax graph against the kernel's host build (C++ via ctypes);
- tensorrt: engines of the Resize + ArgMax graph and of its SegHead rewrite (the plugin library
  given with --plugin), FP32 and FP16 builds; the time includes the host <-> device copies of the
  engine's infer (the same low-resolution input and label output for both).
Every variant's labels are compared with the host build's (the exact reference): the fused ones
must equal it; the standard ones differ where the graph's own arithmetic rounds a near-tie the
other way. Python 3.6 compatible; torch, onnx and TensorRT are imported when used.
"""

import os
import sys
import tempfile

import numpy as np

from .._io import write_json
from ..errors import SegDeployError
from .interleave import time_interleaved

DEFAULT_SPEC = "19:8"
STANDARD = "standard (Resize + ArgMax)"
FUSED = "fused (SegHead)"


def parse_spec(text):
    """'19:8' -> (19 classes, stride 8)."""
    try:
        classes, stride = (int(v) for v in str(text or DEFAULT_SPEC).split(":"))
    except ValueError:
        raise SegDeployError(
            "--head takes CLASSES:STRIDE like 19:8, got {!r}".format(text)
        ) from None
    if not 1 <= classes <= 255 or stride < 1:
        raise SegDeployError(
            "--head needs 1 to 255 classes and a positive stride, got {!r}".format(text)
        )
    return classes, stride


class _Case(object):
    def __init__(self, classes, stride, height, width, align_corners=False):
        self.classes = classes
        self.out = (height, width)
        self.low = (-(-height // stride), -(-width // stride))
        self.align_corners = align_corners
        from ..plugins.seghead import host

        self.logits = host.sample_logits(classes, self.low[0], self.low[1])

        self.reference, self.slow = host.seg_head(
            self.logits, self.out, align_corners, return_slow=True
        )

    def reference_for(self, precision):
        if precision == "fp16":
            from ..plugins.seghead import host

            return host.seg_head(self.logits, self.out, self.align_corners, fp16=True)
        return self.reference


def _torch_variants(case, device):
    import torch

    from ..plugins.seghead import torch_head

    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise SegDeployError("--device takes cpu or cuda[:N], got {!r}".format(device)) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SegDeployError(
            "--device {}: PyTorch sees no CUDA device here; use --device cpu".format(device)
        )
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    variants = []
    for precision in ("fp32", "fp16") if dev.type == "cuda" else ("fp32",):
        x = torch.from_numpy(case.logits).to(dev)
        x = x.half() if precision == "fp16" else x
        taps = torch_head.Taps(case.logits.shape[2:], case.out, None, case.align_corners, dev)
        calls = {
            STANDARD: lambda x=x: torch_head.standard_head(x, case.out, case.align_corners),
            FUSED: lambda x=x, taps=taps: torch_head.fused_head(
                x, case.out, case.align_corners, taps=taps
            ),
        }
        outputs = dict((k, (lambda f=f: f().cpu().numpy())) for k, f in calls.items())
        variants.append(("torch", str(dev), precision, calls, outputs, sync))
    return variants


def _ort_variants(case, threads):
    import onnxruntime as ort

    from ..export.seghead import standard_head_graph
    from ..plugins.seghead import host

    proto = standard_head_graph(case.classes, case.low[0], case.low[1], case.out,
                                case.align_corners)  # fmt: skip
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    from ..runtime.head import FusedHead

    feed = {"logits": case.logits}
    standard = lambda: session.run(None, feed)[0]  # noqa: E731
    calls = {
        STANDARD: standard,
        FUSED: lambda: host.seg_head(case.logits, case.out, case.align_corners),
    }
    rows = [("onnxruntime + host build", "cpu", "fp32", calls, calls, lambda: None)]
    # what Runtime.infer runs for a --head fused CPU engine: the compiled head on the Runtime's
    # threads (numpy where no compiler is found; the row's name says which)
    head = FusedHead(align_corners=case.align_corners, threads=threads or 1)
    out = np.empty(case.out, np.uint8)
    low = np.ascontiguousarray(case.logits[0])
    runtime_calls = {STANDARD: standard, FUSED: lambda: head(low, case.out, out=out)}
    used = head._compiled.threads if head._compiled is not None else 1
    name = "onnxruntime + runtime head ({}, {} thread{})".format(
        head.impl, used, "s" if used > 1 else ""
    )
    rows.append((name, "cpu", "fp32", runtime_calls, runtime_calls, lambda: None))
    return rows


def _trt_variants(case, plugins, workdir):
    from ..card import SCHEMA
    from ..engines import build_tensorrt_engine
    from ..export.seghead import fuse_head, standard_head_graph
    from ..runtime.tensorrt_backend import TensorRTEngine

    if not plugins:
        raise SegDeployError(
            "--head on tensorrt needs the SegHead plugin library: pass --plugin "
            "libseghead_plugin.so (python -m segdeploy.plugins.seghead.build on this device)"
        )
    standard = standard_head_graph(case.classes, case.low[0], case.low[1], case.out,
                                   case.align_corners)  # fmt: skip
    fused, summary = fuse_head(standard)
    if len(summary["fused"]) != 1:
        raise SegDeployError("the SegHead rewrite did not fuse the benchmark's head")
    card = {
        "schema": SCHEMA,
        "model": {"name": "seghead", "num_classes": case.classes},
        "input": {
            "name": "logits",
            "layout": "NCHW",
            "channel_order": "RGB",
            "dtype": "float32",
            "scale": 1.0,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "height": case.low[0],
            "width": case.low[1],
            "dynamic": None,
            "stride": 1,
        },
        "output": {"name": "labels", "kind": "labels", "dtype": "int32", "resolution": "input"},
        "provenance": {},
        "parity": {},
    }
    variants = []
    feed = {"logits": case.logits}
    for precision in ("fp32", "fp16"):
        calls = {}
        for label, proto in ((STANDARD, standard), (FUSED, fused)):
            stem = os.path.join(workdir, "head_{}_{}".format(len(calls), precision))
            with open(stem + ".onnx", "wb") as f:
                f.write(proto.SerializeToString())
            libs = tuple(plugins) if label == FUSED else ()
            build_tensorrt_engine(stem + ".onnx", stem + ".plan", card, precision=precision,
                                  plugins=libs, log=lambda *a: None)  # fmt: skip
            engine = TensorRTEngine(stem + ".plan", plugins=list(libs))
            calls[label] = lambda engine=engine: engine.infer(feed)["labels"]
        variants.append(("tensorrt", "cuda", precision, calls, calls, lambda: None))
    return variants


def run(backends, classes, stride, height, width, warmup, iters, device=None, threads=None,
        plugins=(), align_corners=False):  # fmt: skip
    """Time every backend's standard and fused head; return the result rows."""
    case = _Case(classes, stride, height, width, align_corners)
    rows = []
    with tempfile.TemporaryDirectory(prefix="segbench-head-") as workdir:
        for backend in backends:
            if backend == "torch":
                variants = _torch_variants(case, device)
            elif backend == "onnxruntime":
                variants = _ort_variants(case, threads)
            else:
                variants = _trt_variants(case, plugins, workdir)
            for name, dev, precision, calls, outputs, sync in variants:
                samples = time_interleaved(calls, warmup, iters, sync)
                ref = case.reference_for(precision)
                std_ms = float(np.median(samples[STANDARD]))
                for label in (STANDARD, FUSED):
                    labels = np.asarray(outputs[label]()).reshape(ref.shape)
                    ms = np.asarray(samples[label])
                    rows.append(
                        {
                            "backend": name,
                            "device": dev,
                            "precision": precision,
                            "head": label,
                            "median_ms": float(np.median(ms)),
                            "p90_ms": float(np.percentile(ms, 90)),
                            "speedup": std_ms / float(np.median(ms)),
                            "equal_to_host_build": float(np.mean(labels == ref)),
                        }
                    )
    return {
        "classes": classes,
        "stride": stride,
        "logits": [1, classes, case.low[0], case.low[1]],
        "labels": [1, height, width],
        "slow_fraction": case.slow / float(height * width),
        "classes_present": int(np.unique(case.reference).size),
        "rows": rows,
    }


def format_table(result):
    lines = [
        "Head: 1x{}x{}x{} logits -> {}x{} labels ({} classes present; {:.1%} of the pixels need "
        "all classes interpolated)".format(
            result["classes"],
            result["logits"][2],
            result["logits"][3],
            result["labels"][1],
            result["labels"][2],
            result["classes_present"],
            result["slow_fraction"],
        ),  # fmt: skip
        "{:<26} {:<8} {:<5} {:<26} {:>9} {:>9} {:>8} {:>10}".format(
            "backend", "device", "prec", "head", "median ms", "p90 ms", "speedup", "= host"
        ),
    ]
    for r in result["rows"]:
        lines.append(
            "{:<26} {:<8} {:<5} {:<26} {:>9.3f} {:>9.3f} {:>7.2f}x {:>9.4%}".format(
                r["backend"],
                r["device"],
                r["precision"],
                r["head"],
                r["median_ms"],
                r["p90_ms"],
                r["speedup"],
                r["equal_to_host_build"],
            )  # fmt: skip
        )
    return "\n".join(lines)


def main_head(args):
    """``segbench --head``: parsed CLI ``args`` (head, res, backends, warmup, iters, device,
    threads, plugin, json). Returns the exit code."""
    from ..engines.profiles import parse_resolutions
    from .backends import parse_backends
    from .harness import environment

    classes, stride = parse_spec(args.head)
    sizes = parse_resolutions(args.res or "1024x2048")
    if len(sizes) != 1:
        raise SegDeployError("--head takes one --res (the labels' size)")
    warmup = 10 if args.warmup is None else args.warmup
    iters = 50 if args.iters is None else args.iters
    result = run(parse_backends(args.backends), classes, stride, sizes[0][0], sizes[0][1],
                 warmup, iters, device=args.device, threads=args.threads,
                 plugins=getattr(args, "plugin", None) or ())  # fmt: skip
    print(format_table(result))
    if args.json:
        env = environment()
        env["command"] = "segbench " + " ".join(sys.argv[1:])
        write_json(args.json, {"environment": env, "result": result})
        print("wrote {}".format(args.json))
    return 0
