"""segserve: serve an exported model with a real Triton Inference Server on this machine.

    segserve out/regseg.onnx                  # or out/ (a segexport folder), or repo/
    segserve repo/ --http-port 9000 --grpc-port 9001

It finds a tritonserver (``segdeploy.serve.install``: ``--server``, ``$SEGDEPLOY_TRITONSERVER``,
``.venv-triton``, ...), makes the repository that server can load (``segdeploy.serve.repository``:
the Python backend with ONNX Runtime on a CPU-only machine), starts the server on 127.0.0.1, waits
until it and every model answer ready, prints the URLs and the ``Runtime("grpc://...")`` line to
paste, and serves until Ctrl-C or SIGTERM, which stop the server's whole process group and
remove the temporary folder (one line). Every user mistake is one line and exit status 2.
"""

import os
import shutil
import signal
import sys
import tempfile
import time

from .._cli import Printer, add_common_args, make_parser, run_main, verbosity
from ..errors import SegDeployError

PROG = "segserve"
EXAMPLES = (
    "segserve out/regseg.onnx          # the graph segexport wrote (card beside it)",
    "segserve repo/                    # a repository from segexport --triton repo/",
    "segserve out/ --grpc-port 9001    # another port (--http-port for HTTP)",
    "segserve repo/ --print-docker     # the container command for a GPU server",
)
NOTES = 'Then, in Python: segdeploy.Runtime("grpc://127.0.0.1:8001/regseg").infer(frame)'


class _Signalled(Exception):
    def __init__(self, signum):
        Exception.__init__(self, signum)
        self.signum = signum


def _raise_on_signal(signum, frame):
    raise _Signalled(signum)


def build_parser():
    p = make_parser(
        PROG,
        "Serve an exported model with Triton Inference Server on this machine (127.0.0.1 by "
        "default) until Ctrl-C or SIGTERM.",
        EXAMPLES,
        NOTES,
    )
    # Triton loads the engine through its own backends: no --plugin here
    add_common_args(p, plugin=False)
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="an ONNX file segexport wrote (.ort/.xml: the .onnx beside it), a segexport "
        "output folder, or a Triton repository (segexport --triton DIR)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=8000, metavar="N", help="default 8000")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="N", help="default 8001")
    p.add_argument("--name", help="the model's name on the server (default: the card's)")
    p.add_argument(
        "--server",
        metavar="PATH",
        help="the tritonserver to run: an environment with nvidia-pytriton (folder or its "
        "python), a Triton release folder or binary (default: $SEGDEPLOY_TRITONSERVER, then "
        "./.venv-triton, the checkout's .venv-triton, this environment, PATH, "
        "/opt/tritonserver)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="seconds to wait for the server and models to be ready (default 120)",
    )
    p.add_argument(
        "--print-docker",
        action="store_true",
        help="print the Triton container command for a GPU server (ONNX Runtime and TensorRT "
        "backends) for SOURCE, a repository, and exit",
    )
    return p


def _check_args(args):
    for option, port in (("--http-port", args.http_port), ("--grpc-port", args.grpc_port)):
        if not 1 <= port <= 65535:
            raise SegDeployError("{} must be 1..65535, got {}".format(option, port))
    if args.timeout <= 0:
        raise SegDeployError("--timeout must be positive, got {}".format(args.timeout))


def _is_repository(path):
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, n, "config.pbtxt")) for n in os.listdir(path)
    )


def _print_docker(args, out):
    from .repository import container_command

    source = args.source
    if not _is_repository(source):
        raise SegDeployError(
            "--print-docker takes a Triton repository; write one for the GPU server with "
            "segexport --triton repo/ --triton-device gpu (or segbuild --triton on that GPU)"
        )
    out.result(container_command(source, args.http_port, args.grpc_port))


def serve(args, out):
    from ..engines.triton import machine_has_gpu
    from .install import find_server
    from .process import TritonProcess, check_ports
    from .repository import container_command, prepare

    _check_args(args)
    if args.print_docker:
        return _print_docker(args, out)
    if not os.path.exists(args.source):
        raise SegDeployError("{} does not exist".format(args.source))
    check_ports(args.host, args.http_port, args.grpc_port)
    install = find_server(args.server)
    has_gpu = machine_has_gpu()
    workdir = tempfile.mkdtemp(prefix="segserve-")
    server = None
    # SIGINT too: a shell starts `segserve ... &` with SIGINT ignored, and `kill -INT` must
    # still stop it the way Ctrl-C does.
    old = {s: signal.signal(s, _raise_on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        repository, models, notes = prepare(args.source, workdir, install, has_gpu, args.name)
        server = TritonProcess(
            install,
            repository,
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            log=sys.stderr if out.level >= 1 else None,
            workdir=workdir,
        )
        for note in notes:
            out.info("{}: {}".format(PROG, note))
        out.info(
            "{}: starting tritonserver ({}) on {} ...".format(PROG, install.describe(), args.host)
        )
        started = time.monotonic()
        server.start(timeout=args.timeout)
        waiting = [m.name for m in models if not server.model_ready(m.name)]
        if waiting:
            raise SegDeployError(
                "model(s) {} not ready: {}".format(
                    ", ".join(waiting), server.error_line() or "see the log with -v"
                )
            )
        version = server.metadata.get("version", "?")
        out.info(
            "{}: tritonserver {} ready in {:.1f} s: {}/v2/health/ready".format(
                PROG, version, time.monotonic() - started, server.http_url
            )
        )
        for model in models:
            out.info("  model " + model.describe())
            out.result('  Runtime("{}/{}")'.format(server.grpc_url, model.name))
            out.info('  Runtime("{}/{}")'.format(server.http_url, model.name))
        if has_gpu and "tensorrt" not in install.backends:
            is_repo = _is_repository(args.source)
            where = args.source if is_repo else "repo/"
            out.info(
                "{}: this machine has a GPU, which this tritonserver does not use; for ONNX "
                "Runtime / TensorRT on it{}: {}".format(
                    PROG,
                    "" if is_repo else " (segexport --triton repo/ --triton-device gpu, then)",
                    container_command(where, args.http_port, args.grpc_port),
                )
            )
        out.info("{}: serving until Ctrl-C or SIGTERM".format(PROG))
        while server.running():
            time.sleep(0.5)
        why = server.error_line() or "no error line in its log"
        code = server.process.returncode
        server.stop()
        print(
            "{}: error: tritonserver exited with status {}: {}".format(PROG, code, why),
            file=sys.stderr,
        )
        return 1
    except (KeyboardInterrupt, _Signalled) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        for other in old:  # a second Ctrl-C must not cut the stop short
            signal.signal(other, signal.SIG_IGN)
        how = server.stop() if server is not None else "not running"
        shutil.rmtree(workdir, ignore_errors=True)
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        out.result(
            "{}: {}: tritonserver {}, {} removed".format(
                PROG, name, "stopped" if how == "terminated" else how, workdir
            )
        )
        return 0
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Printer(verbosity(args))
    return run_main(PROG, lambda: serve(args, out), "tritonserver stopped")
