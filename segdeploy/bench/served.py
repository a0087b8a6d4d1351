"""``segbench --engine grpc://host:8001/NAME --concurrency 1,4,8``: a served model under load.

Python 3.6 compatible; the Triton client library comes with the remote Runtime.
"""

import sys

from .._io import write_json
from ..errors import SegDeployError
from ..samples import sample_frame
from . import concurrency
from .harness import environment


def bench_served(args):
    """Run the concurrency sweep of ``args`` (parsed segbench flags); prints the table."""
    from ..runtime.runtime import Runtime

    levels = concurrency.parse_levels(args.concurrency)
    if args.device is not None or args.threads is not None:
        raise SegDeployError(
            "--device and --threads do not apply to a model on a server; its config.pbtxt "
            "places and sizes it"
        )
    options = {"timeout": args.timeout}
    if args.shared_memory:
        options["shared_memory"] = True
    with Runtime(args.engine, **options) as runtime:  # fails early, in one line, if unreachable
        height, width = runtime.input_size
        card = runtime.card
    if args.res:
        from ..engines.profiles import parse_resolutions

        height, width = parse_resolutions(args.res, card["input"].get("stride"))[0]
    frames = [sample_frame(height, width, seed) for seed in range(4)]
    requests = args.iters or 50
    warmup = 2 if args.warmup is None else args.warmup

    def say(text):
        if not args.no_progress:
            print("segbench: {} x {} requests ...".format(text, requests), file=sys.stderr)

    records = concurrency.run(
        args.engine, levels, frames, requests, warmup, options=options, progress=say
    )
    print(
        "{}{} ({} {}, frames {}x{}, {} requests per client after {} warm-up)".format(
            args.engine,
            " via shared memory" if args.shared_memory else "",
            card["model"]["name"],
            card["input"].get("dtype", "float32"),
            height,
            width,
            requests,
            warmup,
        )
    )
    print(concurrency.format_table(records))
    failed = [r for r in records if r["errors"]]
    for r in failed:
        print(
            "concurrency {}: {} failed requests: {}".format(
                r["concurrency"], r["errors"], "; ".join(r["error_messages"])
            )
        )
    env = environment()
    for r in records:
        r["versions"] = env
    if args.json:
        write_json(args.json, records)
        print("wrote {}".format(args.json))
    if args.csv:
        concurrency.write_csv(args.csv, records)
        print("wrote {}".format(args.csv))
    return 1 if failed else 0
