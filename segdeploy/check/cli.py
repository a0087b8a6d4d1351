"""``segdeploy-check`` (also ``python -m segdeploy.check``): a device's first contact, one command.

    segdeploy-check [--quick] [--out DIR] [--onnx NAME.onnx] [--uint8-onnx NAME.uint8.onnx]
                    [--tensorrt-root DIR] [--triton grpc://HOST:8001]

Runs, in order and never stopping at a failure: the environment report; segbuild FP32 / FP16 /
INT8 where the device table allows; the plans' labels against ONNX Runtime's on the same frames;
segbench under each paper protocol; the D-block kernel (compile, gpu_check against its host
build), its plugin build and Table 1; the SegHead kernel against its host build and segbench
--head; the uint8 head; Triton with the plan where a server is
named; and, with or without TensorRT, Table 1 and the zoo on PyTorch with CUDA (RegSeg protocol)
and the pinned-memory paths. Each step is ok, failed or skipped, with its reason and duration;
a step that cannot run here says in one line what it would run and why not.

Writes ``OUT/check.json`` and ``OUT/check.md`` (tables that go into docs/benchmarks.md as they
are). Exit code: 0 when every step that could run passed (skipped steps are not failures), 1 when
any failed, 2 for a usage mistake. ``--quick`` (< 3 min on a T4-class GPU) builds only the
device's recommended precision and runs fewer iterations; the full run takes < 10 min.
Python 3.6 compatible.
"""

import os
import sys
import time

from .. import _io
from .._cli import QUIET, add_common_args, make_parser, run_main, verbosity
from ..errors import SegDeployError
from . import engine_steps, gpu_steps, head_steps, probe, report
from .runner import FAILED, OK, Context, Step, run_steps

PROG = "segdeploy-check"


def _environment_step(ctx):
    info, detected = probe.environment(ctx.probes)
    ctx.artifacts["device"] = detected
    ctx.artifacts["environment"] = info
    ok, gpu = ctx.probes.get("gpu", (False, "not probed"))
    # the fused labels head CPU engines' Runtime runs here: compiled (built now, once), or numpy
    from ..runtime.head import FusedHead

    head = FusedHead()
    info["fused_head"] = head.impl if head.fallback is None else "numpy ({})".format(head.fallback)
    return {
        "summary": "{}; Python {}, numpy {}, TensorRT {}; fused head {}".format(
            gpu if ok else "no GPU",
            info["python"],
            info["numpy"],
            info.get("version_tensorrt", "?"),
            info["fused_head"],
        ),
    }


def steps():
    """The first contact, in order."""
    e, g, h = engine_steps, gpu_steps, head_steps
    return [
        Step(
            "environment",
            "environment report",
            "report GPU, driver, CUDA, TensorRT, Python, numpy, power mode",
            _environment_step,
        ),
        Step(
            "model",
            "the ONNX model",
            "read --onnx's card, or export a zoo model where torch is",
            e.step_model,
        ),
        Step(
            "segbuild-fp32",
            "segbuild FP32",
            "build an FP32 TensorRT plan with segbuild's build()",
            e.make_build_step("fp32"),
        ),
        Step(
            "segbuild-fp16",
            "segbuild FP16",
            "build an FP16 TensorRT plan where the device table allows",
            e.make_build_step("fp16"),
        ),
        Step(
            "segbuild-int8",
            "segbuild INT8",
            "build an INT8 plan from NAME.int8.onnx where the device table allows",
            e.make_build_step("int8"),
        ),
        Step(
            "parity",
            "Runtime labels vs ONNX Runtime",
            "compare each plan's Runtime labels with ONNX Runtime's on the same frames",
            e.step_parity,
        ),
        Step(
            "segbench",
            "segbench, every paper protocol",
            "time the plan under the regseg, swiftnet, mmseg and runtime protocols",
            e.step_segbench,
        ),
        Step(
            "dblock-compile",
            "D-block kernel compile (NVRTC, ptxas)",
            "compile the kernel for this GPU's sm and count registers and spills",
            g.step_kernel_compile,
        ),
        Step(
            "dblock-gpu-check",
            "D-block kernel vs its host build",
            "run the kernel on the GPU (FP32, FP16) against the host build and time it",
            g.step_gpu_check,
        ),
        Step(
            "dblock-plugin",
            "D-block TensorRT plugin build",
            "build libdblock_plugin.so with CMake and nvcc against TensorRT",
            g.step_plugin_build,
        ),
        Step(
            "table1-tensorrt",
            "RegSeg Table 1 on TensorRT",
            "time the Y and D blocks (and the fused plugin) as TensorRT engines",
            g.step_table1_tensorrt,
        ),
        Step(
            "table1-torch",
            "RegSeg Table 1 on PyTorch (GPU)",
            "time the Y and D blocks on PyTorch with CUDA and autocast",
            g.step_table1_torch,
        ),
        Step(
            "seghead-gpu-check",
            "SegHead kernel vs its host build",
            "run the fused labels head kernels on the GPU against the host build, label for "
            "label, and time them at 1024x2048",
            h.step_seghead_gpu_check,
        ),
        Step(
            "head-bench",
            "segbench --head",
            "time Resize + ArgMax against the fused head on PyTorch with CUDA and the runtime's "
            "CPU head",
            h.step_head_bench,
        ),
        Step(
            "uint8-head",
            "the uint8 input head",
            "build the uint8-input graph and compare its labels with the float plan's",
            e.step_uint8_head,
        ),
        Step(
            "triton",
            "Triton with the plan",
            "write a model repository for the plan and compare a server's labels",
            e.step_triton,
        ),
        Step(
            "zoo-regseg",
            "the zoo under the RegSeg protocol",
            "time zoo models on PyTorch AMP on the GPU, as RegSeg Sec. 4.7",
            g.step_zoo,
        ),
        Step(
            "pinned-memory",
            "pinned-memory paths",
            "time pinned and pageable copies, a second-thread round trip, CPU reads of pinned "
            "memory",
            g.step_pinned_memory,
        ),
    ]


PROBES = (
    ("gpu", probe.gpu),
    ("tensorrt", probe.tensorrt),
    ("torch_cuda", probe.torch_cuda),
    ("nvrtc", probe.nvrtc),
)


def run_check(out_dir, quick=False, stream=None, command=None, step_list=None, **options):
    """Run every step; write OUT/check.json and OUT/check.md; return the report."""
    stream = stream or sys.stdout
    _io.check_writable_dir(out_dir)
    ctx = Context(os.path.abspath(out_dir), quick=quick, stream=stream, **options)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    start = time.time()
    for name, fn in PROBES:
        try:
            ctx.probes[name] = fn()
        except Exception as exc:  # a probe never stops the check
            ctx.probes[name] = (False, "{}: {}".format(type(exc).__name__, str(exc)[:200]))

    def progress(index, total, step, result):
        if result is None:
            stream.write("[{}/{}] {} ...\n".format(index, total, step.title))
        elif result["status"] == OK:
            stream.write(
                "      ok in {:.1f} s: {}\n".format(result["duration_s"], report._summary(result))
            )
        elif result["status"] == FAILED:
            stream.write(
                "      FAILED in {:.1f} s: {}\n".format(result["duration_s"], result["reason"])
            )
        else:
            stream.write("      skipped: would {}; {}\n".format(step.what, result["reason"]))
        stream.flush()

    results = run_steps(step_list if step_list is not None else steps(), ctx, progress)
    doc = report.build_report(
        ctx.artifacts.get("environment", {}),
        results,
        "quick" if quick else "full",
        command or PROG,
        started,
        time.time() - start,
    )
    _io.write_json(os.path.join(out_dir, "check.json"), doc)
    _io.write_bytes(os.path.join(out_dir, "check.md"), report.to_markdown(doc).encode("utf-8"))
    return doc


def build_parser():
    parser = make_parser(
        PROG,
        "Run the device's first contact (environment, engines, parity, benchmarks, the D-block "
        "kernel and plugin, Triton) and write one JSON + Markdown report.",
        examples=(
            "segdeploy-check --quick                 # the short form",
            "segdeploy-check --onnx out/regseg.onnx --triton grpc://localhost:8001",
        ),
        notes="Exit code 0 when every step that could run passed (skipped steps are not\n"
        "failures), 1 when any step failed, 2 for a usage mistake.",
    )
    add_common_args(parser, plugin=False)  # it builds the plugin libraries it loads itself
    parser.add_argument("--out", default="check-report", help="report directory (%(default)s)")
    parser.add_argument("--quick", action="store_true", help="the short form (< 3 min on a T4)")
    parser.add_argument(
        "--onnx",
        metavar="NAME.onnx",
        help="the model to build (default: export regseg where torch is)",
    )
    parser.add_argument(
        "--uint8-onnx", metavar="PATH", help="its uint8-input graph (segexport --input uint8)"
    )
    parser.add_argument(
        "--model",
        default=engine_steps.DEFAULT_MODEL,
        help="zoo model to export when no --onnx (%(default)s)",
    )
    parser.add_argument(
        "--tensorrt-root", metavar="DIR", help="TensorRT prefix for the plugin build"
    )
    parser.add_argument(
        "--triton",
        metavar="URL",
        help="a Triton server serving OUT/triton, e.g. grpc://localhost:8001",
    )
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def body():
        for name in ("onnx", "uint8_onnx"):
            path = getattr(args, name)
            if path and not os.path.isfile(path):
                raise SegDeployError("--{} {} does not exist".format(name.replace("_", "-"), path))
        command = " ".join([PROG] + list(sys.argv[1:] if argv is None else argv))
        quiet = verbosity(args) == QUIET  # -q: the summary line alone
        sink = open(os.devnull, "w") if quiet else None
        try:
            doc = _run(args, command, sink)
        finally:
            if sink is not None:
                sink.close()
        counts = doc["summary"]
        sys.stdout.write(
            "{}: {} ok, {} failed, {} skipped in {:.0f} s; report: {}\n".format(
                PROG,
                counts[OK],
                counts[FAILED],
                counts["skipped"],
                doc["duration_s"],
                os.path.join(args.out, "check.md"),
            )
        )
        return doc["exit_code"]

    return run_main(PROG, body, "the report of the steps so far was not written")


def _run(args, command, stream):
    return run_check(
        args.out,
        stream=stream,
        quick=args.quick,
        command=command,
        onnx=args.onnx,
        uint8_onnx=args.uint8_onnx,
        model=args.model,
        tensorrt_root=args.tensorrt_root,
        triton=args.triton,
    )


if __name__ == "__main__":
    sys.exit(main())
