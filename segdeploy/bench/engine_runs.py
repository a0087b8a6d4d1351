"""``segbench --engine A [--engine B ...]``: time engine files, each at the sizes it can take.

Every engine is opened in turn (and closed before the next), timed at every ``--res`` size it
accepts, and each record names its engine file, backend and precision. The sizes an engine
accepts come from its model card: the static height x width, or, for an engine exported with
``--dynamic``, any multiple of the stride inside the card's ``input.dynamic`` min..max (what
``Runtime(path, input_size=...)`` takes). The memory figures are the engine's own: a probe
starts before the engine is opened (see ``memory.py``). Python 3.6 compatible.
"""

import os

from .. import card as card_mod
from ..engines.profiles import profile_from_card
from ..errors import EngineError, SegDeployError
from .harness import run as run_protocol
from .memory import EngineMemory, trim_heap


def engine_paths(args):
    """The --engine values, each checked to exist (one line naming the missing one)."""
    paths = list(args.engine) if isinstance(args.engine, (list, tuple)) else [args.engine]
    for path in paths:
        if not os.path.isfile(path) and os.path.splitext(path)[1]:
            from ..runtime.backend import missing_engine

            raise SegDeployError(missing_engine(path))
    return paths


def sizes_for(path, card, res_text, protocol, parse_resolutions):
    """[(network (h, w), frame (h, w))] to time ``path`` at, or one line saying why not.

    Without ``--res``: the card's size. A static engine runs at its own size only (the runtime
    protocol resizes other frame sizes to it); a dynamic one at any stride multiple inside its
    profile, and the runtime protocol resizes frames outside the profile to the card's size.
    """
    size = (int(card["input"]["height"]), int(card["input"]["width"]))
    if not res_text:
        return [(size, size)]
    profile = profile_from_card(card)
    pairs = []
    for hw in parse_resolutions(res_text, card["input"].get("stride")):
        hw = tuple(hw)
        if hw == size or (not profile.is_static and profile.contains(hw)):
            pairs.append((hw, hw))
        elif protocol.name == "runtime":
            pairs.append((size, hw))  # frames of that size, resized to the engine's own
        elif profile.is_static:
            raise SegDeployError(
                "{} takes {}x{} inputs; --res {}x{} needs an engine built "
                "for it (or --protocol runtime, which resizes frames)".format(
                    path, size[0], size[1], hw[0], hw[1]
                )
            )
        else:
            raise SegDeployError(
                "--res {}x{} is outside {}'s dynamic profile {}x{} to {}x{}; pick a size "
                "inside it, or re-export with a --dynamic range that holds it".format(
                    hw[0],
                    hw[1],
                    path,
                    profile.min[0],
                    profile.min[1],
                    profile.max[0],
                    profile.max[1],
                )
            )
    return pairs


def read_card(path, open_runtime):
    """The engine's card without keeping it open: the sidecar, else the engine's own metadata."""
    try:
        return card_mod.read_sidecar(path)
    except (EngineError, SegDeployError, OSError):
        pass
    runtime = open_runtime(path)
    try:
        return runtime.card
    finally:
        runtime.close()


def engine_info(runtime, path):
    """What a record says about the engine that produced it."""
    card = runtime.card or {}
    built = card.get("engine") or {}
    precision = built.get("precision") or card.get("precision")
    if not precision:
        precision = "fp16" if getattr(runtime.engine, "fp16", False) else "fp32"
    return {
        "path": path,
        "backend": runtime.backend,
        "precision": precision,
        "dynamic": (card.get("input") or {}).get("dynamic"),
        "build": built or None,
    }


def bench_engines(args, protocol, progress, complexity, parse_resolutions):
    """Time every ``--engine`` at every size it takes; returns the records in order."""
    from ..runtime.runtime import Runtime

    options = {}
    if args.threads is not None:
        options["threads"] = args.threads
    if getattr(args, "plugin", None):
        options["plugins"] = list(args.plugin)  # loaded because the user named them
    if getattr(args, "unsafe_pickle", False):
        options["unsafe"] = True  # a .pt2 engine: the user accepted that it may run code

    def open_runtime(path):
        return Runtime(path, device=args.device, **options)

    records = []
    peak_cache = {}  # the CPU's measured peak, once for all engines
    for path in engine_paths(args):
        card = read_card(path, open_runtime)
        pairs = sizes_for(path, card, args.res, protocol, parse_resolutions)
        # Counting multiply-adds may import torch and build the model: done before the probe
        # starts, so none of that lands in this engine's memory.
        counted = {}
        for net_hw, _ in pairs:
            if net_hw not in counted:
                counted[net_hw] = complexity(card, net_hw[0], net_hw[1])
        cuda = (args.device or "").startswith("cuda") or path.endswith((".plan", ".engine"))
        probe = EngineMemory(cuda=cuda).start()
        runtime = open_runtime(path)
        probe.opened()
        try:
            info = engine_info(runtime, path)
            for i, (net_hw, frame_hw) in enumerate(pairs):
                if i:  # the engine is already open: this run's memory is its running alone
                    probe = EngineMemory(
                        cuda=cuda, scope="running the engine at this size (opened before)"
                    ).start()
                params, macs = counted[net_hw]
                progress.start("{} {}x{}".format(os.path.basename(path), *frame_hw))
                record = run_protocol(
                    runtime.engine,
                    protocol,
                    net_hw[0],
                    net_hw[1],
                    frame_hw=frame_hw,
                    params=params,
                    macs=macs,
                    peak_cache=peak_cache,
                    progress=progress,
                    memory=probe,
                )
                record["engine"] = info
                records.append(record)
        finally:
            runtime.close()
            trim_heap()
    return records
