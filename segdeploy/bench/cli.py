"""``segbench``: time an engine file, or sweep a zoo model over backends and resolutions.

    segbench --engine out/regseg.onnx --res 512x1024 --protocol swiftnet
    segbench --model regseg --backends torch,onnxruntime --res 512x1024,1024x2048 \\
             --json out.json --csv out.csv --plot out.png

Python 3.6 compatible; backends are imported when their engine is opened.
"""

import argparse
import os
import shutil
import sys
import tempfile

from ..errors import SegDeployError
from . import protocols, report
from .harness import complexity_of
from .harness import run as run_protocol


def parse_resolutions(text, stride=None):
    """'512x1024,1024x2048' -> [(512, 1024), (1024, 2048)], checked against ``stride``."""
    sizes = []
    for item in str(text).split(","):
        item = item.strip().lower()
        parts = item.split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise SegDeployError(
                "--res takes HxW sizes like 512x1024 (comma-separated for "
                "several), got {!r}".format(item)
            )
        h, w = int(parts[0]), int(parts[1])
        if stride and (h % stride or w % stride):
            down = (max(stride, h // stride * stride), max(stride, w // stride * stride))
            up = (-(-h // stride) * stride, -(-w // stride) * stride)
            raise SegDeployError(
                "--res {}x{} is not a multiple of the model's stride {}; sizes "
                "that work nearby: {}x{} or {}x{}".format(
                    h, w, stride, down[0], down[1], up[0], up[1]
                )
            )
        sizes.append((h, w))
    return sizes


def build_parser():
    parser = argparse.ArgumentParser(
        prog="segbench", description="Time segmentation engines under the papers' protocols."
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--engine", help="engine file (.onnx, .ort, .plan, .engine, .pt2)")
    what.add_argument("--model", help="zoo model name, swept over --backends and --res")
    what.add_argument(
        "--zoo",
        action="store_true",
        help="print the zoo table (params, multiply-adds, paper figures) at --res",
    )
    parser.add_argument("--checkpoint", help="checkpoint for --model (default: random weights)")
    parser.add_argument(
        "--backends",
        default="torch,onnxruntime",
        help="for --model: comma-separated torch, onnxruntime, tensorrt",
    )
    parser.add_argument(
        "--res", help="HxW, comma-separated for a sweep (default for --engine: the engine's size)"
    )
    parser.add_argument(
        "--protocol",
        default="regseg",
        choices=list(protocols.PROTOCOLS),
        help="timing protocol (default: regseg)",
    )
    parser.add_argument("--warmup", type=int, help="override the protocol's warm-up count")
    parser.add_argument("--iters", type=int, help="override the protocol's timed iterations")
    parser.add_argument("--device", help="cpu, cuda[:N] (default: the backend's choice)")
    parser.add_argument("--threads", type=int, help="intra-op threads of the backend")
    parser.add_argument(
        "--precisions",
        help="with --engine NAME.onnx: compare fp32,bf16,int8 (NAME.int8.onnx) across "
        "ONNX Runtime and OpenVINO, with label agreement against FP32",
    )
    parser.add_argument("--json", help="write the records as JSON")
    parser.add_argument("--csv", help="write one CSV row per run")
    parser.add_argument("--plot", help="write a PNG of latency against resolution")
    parser.add_argument("--plot-metric", choices=("latency", "fps"), default="latency")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


class _Progress(object):
    """tqdm when installed (on stderr), else nothing: the table is the output that matters."""

    def __init__(self, total, enabled):
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm

                # disable=None: no bar when stderr is not a terminal (CI logs, make output)
                self._bar = tqdm(total=total, unit="it", file=sys.stderr, leave=False, disable=None)
            except ImportError:
                self._bar = None
        self._base = 0
        self._last = 0

    def start(self, label):
        self._base += self._last
        self._last = 0
        if self._bar is not None:
            self._bar.set_description(label)

    def __call__(self, done):
        if self._bar is not None:
            self._bar.update(done - self._last)
        self._last = done

    def close(self):
        if self._bar is not None:
            self._bar.close()


def _engine_complexity(card, height, width):
    # An engine file has no module to count; rebuild the zoo model when torch is here.
    name = (card or {}).get("model", {}).get("name")
    try:
        from .. import models

        model = models.build(name, num_classes=card["model"]["num_classes"])
    except Exception:  # no torch, or a model outside the zoo: complexity unknown
        return None, None
    return complexity_of(model, height, width)


def _bench_engine(args, protocol, progress):
    from ..runtime.runtime import Runtime

    if not os.path.exists(args.engine) and os.path.splitext(args.engine)[1]:
        raise SegDeployError("engine file {} does not exist".format(args.engine))
    options = {}
    if args.threads is not None:
        options["threads"] = args.threads
    runtime = Runtime(args.engine, device=args.device, **options)
    try:
        card = runtime.card
        size = runtime.input_size
        frames = parse_resolutions(args.res, card["input"].get("stride")) if args.res else [size]
        records = []
        params, macs = _engine_complexity(card, size[0], size[1])
        for frame_hw in frames:
            if protocol.name != "runtime" and tuple(frame_hw) != tuple(size):
                raise SegDeployError(
                    "{} takes {}x{} inputs; --res {}x{} needs an engine built "
                    "for it (or --protocol runtime, which resizes frames)".format(
                        args.engine, size[0], size[1], *frame_hw
                    )
                )
            progress.start("{} {}x{}".format(runtime.backend, *frame_hw))
            records.append(
                run_protocol(
                    runtime.engine,
                    protocol,
                    size[0],
                    size[1],
                    frame_hw=frame_hw,
                    params=params,
                    macs=macs,
                    peak_cache={},
                    progress=progress,
                )
            )
        return records
    finally:
        runtime.close()


def _bench_model(args, protocol, progress):
    from .. import models
    from .backends import open_backend, parse_backends

    backends = parse_backends(args.backends)
    spec = models.get_spec(args.model)
    sizes = parse_resolutions(args.res or "512x1024", spec.stride)
    model = models.build(args.model)
    if args.checkpoint:
        models.load_checkpoint(model, args.checkpoint)
    workdir = tempfile.mkdtemp(prefix="segbench-")
    peak_cache = {}
    records = []
    try:
        for height, width in sizes:
            params, macs = complexity_of(model, height, width)
            for backend in backends:
                engine = open_backend(
                    backend,
                    model,
                    spec,
                    height,
                    width,
                    workdir,
                    device=args.device,
                    threads=args.threads,
                    fp16=protocol.mixed_precision and args.device == "cuda",
                    fold_bn=protocol.fold_bn,
                )
                try:
                    progress.start("{} {}x{}".format(backend, height, width))
                    records.append(
                        run_protocol(
                            engine,
                            protocol,
                            height,
                            width,
                            model_name=args.model,
                            params=params,
                            macs=macs,
                            peak_cache=peak_cache,
                            progress=progress,
                        )
                    )
                finally:
                    engine.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return records


def _zoo(args):
    from .complexity_cli import write_rows, zoo_table

    rows, text = zoo_table(args.res or "1024x2048")
    print(text)
    for path in (args.json, args.csv):
        if path:
            write_rows(path, rows)
            print("wrote {}".format(path))
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.zoo:
            return _zoo(args)
        protocol = protocols.get(args.protocol, args.warmup, args.iters)
        runs = (
            1
            if args.engine
            else max(1, len(str(args.res or "x").split(",")))
            * max(1, len(str(args.backends).split(",")))
        )
        progress = _Progress(runs * (protocol.iters), not args.no_progress)
        try:
            if args.precisions:
                from .precisions import format_precision_table, run_precisions

                if not args.engine:
                    raise SegDeployError("--precisions needs --engine NAME.onnx")
                args.backends_given = "--backends" in " ".join(argv or sys.argv[1:])
                records = run_precisions(args, protocol, progress, run_protocol)
                print(format_precision_table(records))
            elif args.engine:
                records = _bench_engine(args, protocol, progress)
            else:
                records = _bench_model(args, protocol, progress)
        finally:
            progress.close()
        for rec in records:
            print(report.format_run(rec))
            print()
        if len(records) > 1:
            print(report.format_table(records))
        for path, writer in ((args.json, report.write_json), (args.csv, report.write_csv)):
            if path:
                writer(path, records)
                print("wrote {}".format(path))
        if args.plot:
            report.write_plot(args.plot, records, args.plot_metric)
            print("wrote {}".format(args.plot))
    except SegDeployError as exc:
        print(
            "segbench: error: {}".format(
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ),
            file=sys.stderr,
        )
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
