"""``segbench``: time an engine file, or sweep a zoo model over backends and resolutions.

    segbench --engine out/regseg.onnx --res 512x1024 --protocol swiftnet
    segbench --model regseg --backends torch,onnxruntime --res 512x1024,1024x2048 \\
             --json out.json --csv out.csv --plot out.png

Python 3.6 compatible; backends are imported when their engine is opened.
"""

import shutil
import sys
import tempfile

from .._cli import (
    QUIET,
    Printer,
    add_common_args,
    add_plugin,
    make_parser,
    run_main,
    verbosity,
)
from ..engines.profiles import parse_resolutions
from ..errors import SegDeployError
from . import protocols, report
from .harness import complexity_of
from .harness import run as run_protocol
from .memory import EngineMemory


def build_parser():
    parser = make_parser(
        "segbench",
        "Time segmentation engines under the papers' protocols: an engine file, a model on a "
        "Triton server, or a zoo model swept over backends and resolutions.",
        examples=(
            "segbench --engine out/regseg.ort --res 1024x2048 --protocol swiftnet",
            "segbench --engine out/regseg.ort --iters 20     # a quick figure",
            "segbench --engine out/regseg.onnx --precisions fp32,bf16,int8",
            "segbench --engine a.ort --engine b.xml --json bench.json",
            "segbench --engine grpc://127.0.0.1:8001/regseg --concurrency 1,4,8",
            "segbench --model regseg --backends torch,onnxruntime --res 512x1024,1024x2048",
        ),
    )
    add_common_args(parser, plugin=False)
    # the one-of group is longer than a line: argparse would not wrap it
    parser.usage = (
        "%(prog)s --engine FILE|URL [--engine FILE ...] [options]\n"
        "       %(prog)s --model NAME [--backends LIST] [--res LIST] [options]\n"
        "       %(prog)s --zoo | --blocks | --head [C:STRIDE] [options]"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--engine",
        action="append",
        help="engine file (.onnx, .ort, .xml, .plan, .engine, .pt2) or a model on a Triton "
        "server (grpc://HOST:8001/NAME, http://HOST:8000/NAME); repeat to compare files",
    )
    what.add_argument("--model", help="zoo model name, swept over --backends and --res")
    what.add_argument(
        "--zoo",
        action="store_true",
        help="print the zoo table (params, multiply-adds, paper figures) at --res",
    )
    what.add_argument(
        "--blocks",
        action="store_true",
        help="RegSeg paper Table 1: time a Y block and D blocks (1,1), (1,4), (1,10), (1,14) at "
        "1/16 of --res (default 1024x2048: 1x256x64x128) on --backends, plus the fused "
        "DBlockConv plugin where an engine loads it",
    )
    what.add_argument(
        "--head",
        nargs="?",
        const="19:8",
        metavar="C:STRIDE",
        help="the segmentation head alone (default 19 classes, logits at 1/8 of --res, default "
        "1024x2048): Resize + ArgMax against the fused SegHead (TensorRT plugin with --plugin, "
        "PyTorch, the host build) on --backends",
    )
    what.add_argument(
        "--compare",
        metavar="MODELS",
        help="comma-separated zoo models (e.g. regseg,ddrnet23_slim,stdc1_seg): each exported, "
        "built on this machine's engine and timed interleaved under one protocol at one --res "
        "(default 512x1024), beside params, GMACs, the papers' FPS and the device's floor",
    )
    parser.add_argument(
        "--precision",
        help="for --compare: fp32 (default), fp16 (TensorRT on a GPU) or bf16 (OpenVINO)",
    )
    parser.add_argument("--checkpoint", help="checkpoint for --model (default: random weights)")
    parser.add_argument(
        "--checkpoints",
        metavar="DIR",
        help="for --compare: a folder with NAME.pth for each model (default: random weights)",
    )
    parser.add_argument(
        "--dataset",
        help="for --compare with --checkpoints: score each model's mIoU on cityscapes, camvid or "
        "folder (as segeval does), beside its speed",
    )
    parser.add_argument("--root", help="the --dataset's folder")
    parser.add_argument("--split", help="the --dataset's split (default: the dataset's own)")
    parser.add_argument(
        "--backends",
        default="torch,onnxruntime",
        help="for --model: comma-separated torch, onnxruntime, tensorrt",
    )
    parser.add_argument(
        "--res",
        help="HxW, comma-separated for a sweep (default for --engine: the engine's size; a "
        "dynamic engine takes any size inside its profile)",
    )
    parser.add_argument(
        "--protocol",
        default="regseg",
        choices=list(protocols.PROTOCOLS),
        help="timing protocol (default: regseg)",
    )
    parser.add_argument("--warmup", type=int, help="override the protocol's warm-up count")
    parser.add_argument(
        "--iters",
        type=int,
        help="override the protocol's timed iterations (swiftnet: 1000; 20 gives a quick "
        "figure with a wider spread)",
    )
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
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (on a terminal) or progress lines (elsewhere)",
    )
    trust = parser.add_argument_group("code from files (off unless asked for)")
    trust.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="allow a .pt2 --engine and --checkpoint files that pickle Python objects; loading "
        "them can run code stored in them: only for files you trust",
    )
    add_plugin(
        trust,
        "TensorRT plugin library to load (repeatable): for --engine plans built with it "
        "(e.g. NAME.dblock.plan), loaded after the engine's fingerprint check, and for --blocks "
        "on tensorrt (the DBlockConv plugin); the only libraries ever loaded",
    )
    served = parser.add_argument_group("a model on a server (--engine grpc://host:8001/NAME)")
    served.add_argument(
        "--concurrency",
        default="1",
        help="comma-separated concurrent clients, e.g. 1,4,8 (default 1); --iters requests "
        "per client (default 50)",
    )
    served.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default 30)"
    )
    served.add_argument(
        "--shared-memory",
        action="store_true",
        help="send frames and label maps through shared memory (server on this host)",
    )
    return parser


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
    from .engine_runs import bench_engines

    return bench_engines(args, protocol, progress, _engine_complexity, parse_resolutions)


def _bench_model(args, protocol, progress):
    from .. import models
    from .backends import open_backend, parse_backends

    backends = parse_backends(args.backends)
    spec = models.get_spec(args.model)
    sizes = parse_resolutions(args.res or "512x1024", spec.stride)
    model = models.build(args.model)
    if args.checkpoint:
        models.load_checkpoint(model, args.checkpoint, allow_unsafe_pickle=args.unsafe_pickle)
    workdir = tempfile.mkdtemp(prefix="segbench-")
    peak_cache = {}
    records = []
    try:
        for height, width in sizes:
            params, macs = complexity_of(model, height, width)
            for backend in backends:
                fp16 = protocol.mixed_precision and args.device == "cuda"
                probe = EngineMemory(cuda=(args.device or "").startswith("cuda"))
                engine = open_backend(
                    backend,
                    model,
                    spec,
                    height,
                    width,
                    workdir,
                    device=args.device,
                    threads=args.threads,
                    fp16=fp16,
                    fold_bn=protocol.fold_bn,
                    probe=probe,
                )
                probe.opened()  # the "once opened" figure: growth from opening alone
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
                            memory=probe,
                        )
                    )
                    records[-1]["engine"] = {
                        "path": None,  # built for this sweep in a temporary directory
                        "backend": backend,
                        "precision": "fp16" if fp16 else "fp32",
                    }
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


def check_arguments(args):
    """One-line errors for bad numbers and unwritable outputs, before anything is benchmarked."""
    from .._io import check_writable_file

    for flag, value, low in (
        ("--threads", args.threads, 1),
        ("--warmup", args.warmup, 0),
        ("--iters", args.iters, 1),
    ):
        if value is not None and value < low:
            raise SegDeployError("{} must be at least {}, got {}".format(flag, low, value))
    for flag, path in (("--json", args.json), ("--csv", args.csv), ("--plot", args.plot)):
        if path:
            check_writable_file(path, flag)
    if args.plot:
        from .._deps import require

        require("matplotlib", "--plot")
    not_plans = [e for e in args.engine or () if not e.lower().endswith((".plan", ".engine"))]
    if args.plugin and (not_plans or not (args.engine or args.blocks or args.head)):
        raise SegDeployError(
            "--plugin goes with --engine FILE.plan (a TensorRT engine), --blocks or --head: {} "
            "is not a TensorRT plan; drop --plugin".format(
                not_plans[0] if not_plans else "--model " + str(args.model)
            )
        )
    servers = [e for e in args.engine or () if "://" in e]
    if servers and len(args.engine) > 1:
        raise SegDeployError(
            "--engine {} is a server: time one server at a time, without other --engine "
            "files".format(servers[0])
        )


def command_line(argv=None):
    """The command as a shell would take it back: ``segbench --engine a.onnx ...``."""
    import shlex

    words = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["segbench"] + [shlex.quote(str(w)) for w in words])


def _print_records(out, records):
    """-q: a result line per run; default: a block per run and the table; -v: plus detail."""
    for rec in records:
        out.info(report.format_run(rec))
        mem = rec["memory"]
        out.detail(
            "  detail:   memory by {}: {} MiB resident before opening, {} after; samples (ms) "
            "first {}, last {}".format(
                mem.get("method"),
                report._fmt(mem.get("rss_before_mb"), "{:.0f}"),
                report._fmt(mem.get("rss_mb"), "{:.0f}"),
                rec["samples_ms"][:5],
                rec["samples_ms"][-5:],
            )
        )
        build = (rec.get("engine") or {}).get("build")
        if build:
            out.detail("  build:    {}".format(build))
        out.info("")
        if rec.get("spread_warning") and out.level > QUIET:
            print(
                "segbench: warning: {}: {}".format(
                    report._column_name(rec, records), rec["spread_warning"]
                ),
                file=sys.stderr,
            )
    if len(records) > 1:
        out.info(report.format_table(records))
    if out.level == QUIET:
        for rec in records:
            out.result(report.result_line(rec, records))


def main(argv=None):
    from ..manifest import terminate_as_interrupt
    from .progress import Progress

    parser = build_parser()
    args = parser.parse_args(argv)
    progress = Progress(bar=False, notes=False)

    def body():
        with terminate_as_interrupt():  # SIGTERM: the same one line as Ctrl-C, exit 143
            return _main(args, progress, argv)

    return run_main("segbench", body, progress.summary, first_line=True, signal_exit=True)


def _main(args, progress, argv=None):
    check_arguments(args)
    if args.zoo:
        return _zoo(args)
    if args.compare:
        from .compare import main_compare

        args.backends_given = "--backends" in " ".join(argv or sys.argv[1:])
        return main_compare(args, command_line(argv))
    if args.precision:
        raise SegDeployError("--precision goes with --compare (for --engine: --precisions)")
    if args.blocks:
        from .blocks import main_blocks

        return main_blocks(args)
    if args.head:
        from .head import main_head

        return main_head(args)
    if args.engine and "://" in args.engine[0]:
        from .served import bench_served

        args.engine = args.engine[0]  # one server URL (checked above)
        return bench_served(args)
    protocol = protocols.get(args.protocol, args.warmup, args.iters)
    sizes = max(1, len(str(args.res or "x").split(",")))
    runs = sizes * (len(args.engine) if args.engine else max(1, len(str(args.backends).split(","))))
    level = verbosity(args)
    progress.runs = runs
    progress.enable(bar=not args.no_progress and level > QUIET, notes=level > QUIET)
    try:
        if args.precisions:
            from .precisions import format_precision_table, run_precisions

            if not args.engine or len(args.engine) != 1:
                raise SegDeployError("--precisions needs one --engine NAME.onnx")
            args.engine = args.engine[0]
            args.backends_given = "--backends" in " ".join(argv or sys.argv[1:])
            records = run_precisions(args, protocol, progress, run_protocol, _engine_complexity)
            print(format_precision_table(records))
        elif args.engine:
            records = _bench_engine(args, protocol, progress)
        else:
            records = _bench_model(args, protocol, progress)
    finally:
        progress.close()
    out = Printer(level)
    command = command_line(argv)
    for rec in records:
        rec["command"] = command
    _print_records(out, records)
    if args.json:
        report.write_json(args.json, records, command)
        out.info("wrote {}".format(args.json))
    if args.csv:
        report.write_csv(args.csv, records)
        out.info("wrote {}".format(args.csv))
    if args.plot:
        report.write_plot(args.plot, records, args.plot_metric)
        out.info("wrote {}".format(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
