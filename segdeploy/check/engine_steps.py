"""The TensorRT half of the first contact: a model, segbuild per precision, Runtime labels against
ONNX Runtime's, segbench under each paper protocol, the uint8 head, Triton.

Every step calls the commands' functions (``engines.build_cli.build``, ``runtime.Runtime``,
``bench.harness.run``, ``engines.triton.write_model_repository``), never their command lines.
Python 3.6 compatible; TensorRT, ONNX Runtime (and torch, for a model exported on the spot) are
imported by the steps that use them.
"""

import os
import time

import numpy as np

from ..errors import EngineError, MissingDependencyError
from .probe import installed
from .runner import Failed, Skip

# Label agreement (share of pixels) a plan must reach against ONNX Runtime's labels on the same
# frames: FP32 differs by summation order only; FP16 and INT8 move pixels near class borders.
AGREEMENT = {"fp32": 0.99, "fp16": 0.97, "int8": 0.90}

# (warm-up, timed iterations) per protocol in --quick; the full run uses the protocol's own.
QUICK_ITERS = {"regseg": (5, 30), "swiftnet": (1, 200), "mmseg": (2, 40), "runtime": (3, 30)}

DEFAULT_MODEL = "regseg"


def frames_for(height, width, count, seed=0):
    """Smooth uint8 BGR frames (16-pixel blocks of random colour, no OpenCV needed), so that
    label maps vary by region."""
    rng = np.random.RandomState(seed)
    frames = []
    for _ in range(count):
        small = rng.randint(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
        frames.append(np.ascontiguousarray(small.repeat(16, 0).repeat(16, 1)[:height, :width]))
    return frames


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _hw(card):
    return int(card["input"]["height"]), int(card["input"]["width"])


# --- the model --------------------------------------------------------------------------------


def export_on_the_spot(out_dir, name, height, width):
    """(onnx path, card, uint8 onnx path) of zoo model ``name`` with varied random weights: the
    host side's exporter, imported here only (torch and onnx are installed: checked before)."""
    import torch

    from ..export import export_onnx, fold_batchnorm, make_card
    from ..export.onnx_export import save_model, set_card
    from ..export.uint8_input import prepend_uint8_input, uint8_card
    from ..models import build, get_spec
    from ..models.golden import vary_weights_

    torch.manual_seed(0)
    spec = get_spec(name)
    model = vary_weights_(build(name).eval())
    card = make_card(spec, spec.num_classes, height, width, "labels")
    path = os.path.join(out_dir, "{}.onnx".format(name))
    result = export_onnx(
        fold_batchnorm(model), path, height=height, width=width, output="labels", card=card
    )
    u8 = prepend_uint8_input(result["model"], card)
    set_card(u8, uint8_card(card))
    u8_path = os.path.join(out_dir, "{}.uint8.onnx".format(name))
    save_model(u8, u8_path)
    return path, card, u8_path


def step_model(ctx):
    from ..engines import build_cli

    onnx = ctx.option("onnx")
    u8 = ctx.option("uint8_onnx")
    if onnx:
        how = "given (--onnx)"
        card = build_cli.read_card(onnx)
    else:
        ctx.need_probe("tensorrt", "no --onnx, and nothing here would use an exported one")
        missing = [m for m in ("torch", "onnx") if not installed(m)]
        if missing:
            raise Skip(
                "no model: pass --onnx NAME.onnx (segexport writes it on the host); {} {} not "
                "installed here to export one".format(
                    " and ".join(missing), "is" if len(missing) == 1 else "are"
                )
            )
        name = ctx.option("model", DEFAULT_MODEL)
        height, width = (512, 1024) if ctx.quick else (1024, 2048)
        onnx, card, u8 = export_on_the_spot(ctx.out_dir, name, height, width)
        how = "exported here from the zoo ({}, varied random weights)".format(name)
    if u8:
        ctx.artifacts["uint8_onnx"] = u8
        ctx.artifacts["uint8_card"] = build_cli.read_card(u8)
    ctx.artifacts["onnx"], ctx.artifacts["card"] = onnx, card
    siblings = {
        "fp16": os.path.isfile(build_cli.fp16_sibling(onnx)),
        "int8": os.path.isfile(build_cli.int8_sibling(onnx)),
    }
    height, width = _hw(card)
    rows = [
        [
            os.path.basename(onnx),
            card["model"].get("name"),
            "{}x{}".format(height, width),
            card["model"].get("num_classes"),
            card["output"].get("kind", card["output"].get("name")),
            ", ".join(k for k, v in siblings.items() if v) or "none",
        ]
    ]
    return {
        "summary": "{} {}x{} ({})".format(card["model"].get("name"), height, width, how),
        "onnx": onnx,
        "uint8_onnx": u8,
        "siblings": siblings,
        "table": {
            "columns": ["file", "model", "input", "classes", "output", "variants beside it"],
            "rows": rows,
        },
    }


# --- segbuild -----------------------------------------------------------------------------------


def quick_precision(ctx):
    from ..engines import build_cli, devices

    record = ctx.artifacts["device"].record
    onnx = ctx.artifacts.get("onnx")
    have_int8 = bool(onnx) and os.path.isfile(build_cli.int8_sibling(onnx))
    return devices.recommend_precision(record, have_int8)[0]


def make_build_step(precision):
    def step(ctx):
        from ..engines import build_cli, devices

        ctx.need_probe("tensorrt")
        onnx = ctx.need_artifact("onnx", "no model: step 'model' gave none")
        card = ctx.artifacts["card"]
        record = ctx.artifacts["device"].record
        try:
            warnings = devices.check_precision(record, precision)
        except EngineError as exc:
            raise Skip("the device table rules it out: {}".format(exc)) from None
        if ctx.quick and precision != quick_precision(ctx):
            raise Skip(
                "--quick builds only the device's recommended precision ({}); the full run "
                "builds every one".format(quick_precision(ctx))
            )
        source = onnx
        if precision == "int8":
            source = build_cli.int8_sibling(onnx)
            if not os.path.isfile(source):
                raise Skip(
                    "no INT8 Q/DQ graph {} (segexport --onnx {} --int8 --calib DIR writes it on "
                    "the host)".format(os.path.basename(source), os.path.basename(onnx))
                )
            card = build_cli.read_card(source)
        trt_version = build_cli.installed_tensorrt_version()
        if precision == "fp16" and trt_version and trt_version >= (11,):
            if not os.path.isfile(build_cli.fp16_sibling(onnx)):
                raise Skip("TensorRT 11 builds FP16 only from NAME.fp16.onnx (segexport --fp16)")
        stem = os.path.splitext(os.path.basename(onnx))[0]
        plan = os.path.join(ctx.out_dir, "{}.{}.plan".format(stem, precision))
        notes = []
        start = time.time()
        build_cli.build(
            source,
            plan,
            card,
            precision,
            options={"timing_cache": os.path.join(ctx.out_dir, "timing.cache")},
            log=notes.append,
        )
        seconds = time.time() - start
        ctx.artifacts["plan_" + precision] = plan
        size = os.path.getsize(plan) / 2.0**20
        return {
            "summary": "{} in {:.0f} s, {:.1f} MiB".format(os.path.basename(plan), seconds, size),
            "plan": plan,
            "build_s": seconds,
            "plan_mib": size,
            "warnings": warnings,
            "notes": [str(n) for n in notes][-10:],
            "table": {
                "columns": ["precision", "plan", "build s", "MiB", "device table"],
                "rows": [
                    [precision, os.path.basename(plan), seconds, size, "; ".join(warnings) or "ok"]
                ],
            },
        }

    return step


def built_plans(ctx):
    return [
        (p, ctx.artifacts["plan_" + p])
        for p in ("fp32", "fp16", "int8")
        if "plan_" + p in ctx.artifacts
    ]


def best_plan(ctx):
    plans = dict(built_plans(ctx))
    if not plans:
        raise Skip("no TensorRT plan was built (see the segbuild steps)")
    for precision in (quick_precision(ctx), "fp16", "int8", "fp32"):
        if precision in plans:
            return precision, plans[precision]


# --- Runtime labels against ONNX Runtime's ------------------------------------------------------


def _agreement(a, b):
    return float(np.mean(np.asarray(a).astype(np.int64) == np.asarray(b).astype(np.int64)))


def step_parity(ctx):
    from ..runtime import Runtime

    ctx.need_probe("tensorrt")
    onnx = ctx.need_artifact("onnx", "no model: step 'model' gave none")
    plans = built_plans(ctx)
    if not plans:
        raise Skip("no TensorRT plan was built (see the segbuild steps)")
    if not installed("onnxruntime"):
        raise Skip(
            "ONNX Runtime is not installed (pip install onnxruntime): nothing to compare with"
        )
    height, width = _hw(ctx.artifacts["card"])
    frames = frames_for(height, width, 2 if ctx.quick else 8)
    with Runtime(onnx, backend="onnxruntime") as ref_rt:
        reference = [ref_rt.infer(f) for f in frames]
    rows, failed = [], []
    classes = len(np.unique(np.concatenate([r.ravel() for r in reference])))
    for precision, plan in plans:
        with Runtime(plan) as rt:
            got = [rt.infer(f) for f in frames]
        share = float(np.mean([_agreement(g, r) for g, r in zip(got, reference)]))
        ok = share >= AGREEMENT[precision]
        rows.append(
            [precision, len(frames), classes, share, AGREEMENT[precision], "ok" if ok else "BELOW"]
        )
        if not ok:
            failed.append("{} {:.2%} < {:.0%}".format(precision, share, AGREEMENT[precision]))
    data = {
        "summary": "; ".join("{} {:.2%}".format(r[0], r[3]) for r in rows) + " of pixels agree",
        "table": {
            "columns": [
                "precision",
                "frames",
                "classes seen",
                "label agreement",
                "needed",
                "result",
            ],
            "rows": rows,
        },
    }
    if classes < 5:
        raise Failed(
            "the reference labels have only {} classes: frames too uniform".format(classes), data
        )
    if failed:
        raise Failed("label agreement with ONNX Runtime too low: " + ", ".join(failed), data)
    return data


# --- segbench -----------------------------------------------------------------------------------


def step_segbench(ctx):
    from ..bench import harness, protocols
    from ..runtime.backend import open_engine

    ctx.need_probe("tensorrt")
    precision, plan = best_plan(ctx)
    height, width = _hw(ctx.artifacts["card"])
    rows, failures, records = [], [], []
    for name in protocols.PROTOCOLS:
        warmup, iters = QUICK_ITERS[name] if ctx.quick else (None, None)
        protocol = protocols.get(name, warmup, iters)
        try:
            engine = open_engine(plan)
            try:
                record = harness.run(engine, protocol, height, width)
            finally:
                engine.close()
        except MissingDependencyError as exc:  # e.g. OpenCV for the runtime protocol's frames
            rows.append([name, precision, None, None, None, "skipped: " + _first_line(exc)])
            continue
        except Exception as exc:  # one protocol's failure is its row; the others still run
            failures.append("{}: {}".format(name, str(exc).strip().splitlines()[0][:160]))
            rows.append([name, precision, None, None, None, "failed: " + failures[-1]])
            continue
        record.pop("samples_ms", None)
        records.append(record)
        lat = record["latency_ms"]
        rows.append(
            [name, precision, lat["median"], record["fps"], protocol.iters, record["scope_text"]]
        )
    data = {
        "summary": "; ".join("{} {:.2f} ms".format(r[0], r[2]) for r in rows if r[2] is not None)
        or "no protocol ran",
        "plan": plan,
        "records": records,
        "table": {
            "columns": ["protocol", "precision", "median ms", "fps", "iters", "timed scope"],
            "rows": rows,
        },
        "note": "Resolution {}x{}; {}.".format(
            height, width, "--quick iteration counts" if ctx.quick else "each protocol's own counts"
        ),
    }
    if failures:
        raise Failed("; ".join(failures), data)
    return data


# --- the uint8 head -----------------------------------------------------------------------------


def step_uint8_head(ctx):
    from ..engines import build_cli
    from ..runtime import Runtime

    ctx.need_probe("tensorrt")
    if ctx.quick:
        raise Skip("--quick leaves out the second plan build; the full run builds and checks it")
    u8 = ctx.need_artifact(
        "uint8_onnx", "no uint8-input graph: pass --uint8-onnx (segexport --input uint8)"
    )
    card = ctx.artifacts["uint8_card"]
    precision = "fp16" if "plan_fp16" in ctx.artifacts else "fp32"
    trt_version = build_cli.installed_tensorrt_version()
    if precision == "fp16" and trt_version and trt_version >= (11,):
        precision = "fp32"  # 11.x: FP16 only from an FP16-typed graph, which this one is not
    plan = os.path.join(
        ctx.out_dir, "{}.{}.plan".format(os.path.splitext(os.path.basename(u8))[0], precision)
    )
    build_cli.build(u8, plan, card, precision, log=lambda *a: None)
    height, width = _hw(card)
    frames = frames_for(height, width, 2 if ctx.quick else 8, seed=5)
    with Runtime(plan) as rt:
        got = [rt.infer(f) for f in frames]
        start = time.time()
        for f in frames:
            rt.infer(f)
        u8_ms = (time.time() - start) * 1e3 / len(frames)
    rows = []
    reference_plan = ctx.artifacts.get("plan_" + precision)
    if reference_plan:
        with Runtime(reference_plan) as rt:
            ref = [rt.infer(f) for f in frames]
            start = time.time()
            for f in frames:
                rt.infer(f)
            float_ms = (time.time() - start) * 1e3 / len(frames)
        share = float(np.mean([_agreement(g, r) for g, r in zip(got, ref)]))
        rows.append([precision, "float-input plan", share, float_ms, u8_ms])
    if installed("onnxruntime"):
        with Runtime(u8, backend="onnxruntime") as rt:
            ort = [rt.infer(f) for f in frames]
        share = float(np.mean([_agreement(g, r) for g, r in zip(got, ort)]))
        rows.append([precision, "ONNX Runtime, same uint8 graph", share, None, u8_ms])
    data = {
        "summary": "; ".join("{:.2%} vs {}".format(r[2], r[1]) for r in rows) or "built and ran",
        "plan": plan,
        "table": {
            "columns": [
                "precision",
                "labels compared with",
                "agreement",
                "float plan ms/frame",
                "uint8 plan ms/frame",
            ],
            "rows": rows,
        },
        "note": "Runtime.infer per frame, end to end (host clock, {} frames).".format(len(frames)),
    }
    low = [r for r in rows if r[2] < AGREEMENT[precision]]
    if low:
        raise Failed(
            "uint8 head labels differ: "
            + ", ".join("{:.2%} vs {}".format(r[2], r[1]) for r in low),
            data,
        )
    return data


# --- Triton -------------------------------------------------------------------------------------


def step_triton(ctx):
    from ..engines import triton
    from ..runtime import Runtime

    ctx.need_probe("tensorrt")
    precision, plan = best_plan(ctx)
    repo = os.path.join(ctx.out_dir, "triton")
    name = ctx.option("triton_model", "segdeploy_check")
    written = triton.write_model_repository(repo, plan, name=name)
    url = ctx.option("triton")
    if not url:
        raise Skip(
            "no Triton server named (--triton grpc://HOST:8001): wrote {} for one; start "
            "tritonserver --model-repository {} and rerun with --triton".format(
                written["model_dir"], repo
            )
        )
    if not installed("tritonclient"):
        raise Skip("tritonclient is not installed (pip install 'segdeploy[serve]')")
    height, width = _hw(ctx.artifacts["card"])
    frames = frames_for(height, width, 2 if ctx.quick else 8, seed=9)
    with Runtime(plan) as rt:
        local = [rt.infer(f) for f in frames]
    with Runtime(url.rstrip("/") + "/" + name) as rt:
        served = [rt.infer(f) for f in frames]
    share = float(np.mean([_agreement(a, b) for a, b in zip(served, local)]))
    data = {
        "summary": "{} served by {}: {:.2%} of pixels as the local plan".format(name, url, share),
        "table": {
            "columns": ["model", "server", "precision", "agreement with the local plan"],
            "rows": [[name, url, precision, share]],
        },
    }
    if share < 0.999:
        raise Failed("the served plan's labels differ from the local plan's", data)
    return data
