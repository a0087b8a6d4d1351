"""The trtexec command line that builds the same engine as ``segexport --backend tensorrt``.

Users who build on the device with JetPack's ``/usr/src/tensorrt/bin/trtexec`` get the same plan
(same precision, shape profile, workspace, timing cache, plugins). Works without TensorRT.

Flag spellings follow the target's TensorRT (trtexec docs, 8.x -> 10.x and 10.x -> 11.x
migration pages): ``--workspace=N`` until 8.3 then ``--memPoolSize=workspace:N`` (MiB; the old flag
is gone in 10.x); ``--plugins`` until 9.x then ``--staticPlugins`` (10.x deprecates ``--plugins``);
``--fp16`` until 10.x, while 11.x has no precision flags and builds FP16 from an FP16-typed ONNX;
``--builderOptimizationLevel`` from 8.6; INT8 from the Q/DQ graph (``<name>.int8.onnx``) with
``--int8`` until 10.x, while 11.x builds it from the graph's types with no flag (its networks are
strongly typed; ``--int8`` is gone). Pure logic; Python 3.6 compatible.
"""

import shlex

from ..errors import SegDeployError
from .profiles import ShapeProfile, input_shapes

DEFAULT_TENSORRT = (10,)


def _version(value):
    if value is None:
        return DEFAULT_TENSORRT
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    parts = []
    for piece in str(value).split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    if not parts:
        raise SegDeployError("TensorRT version must look like 8.2 or 10.3, got {!r}".format(value))
    return tuple(parts)


def _shape_arg(input_name, nchw):
    return "{}:{}".format(input_name, "x".join(str(d) for d in nchw))


def trtexec_command(
    onnx_path,
    engine_path,
    precision="fp32",
    profile=None,
    input_name="image",
    timing_cache=None,
    workspace_mib=None,
    plugins=(),
    opt_level=None,
    tensorrt_version=None,
    layout="NCHW",
    max_batch=None,
):
    """One shell line: ``trtexec --onnx=... --saveEngine=... [--fp16] [shapes] [...]``.

    ``profile``: a ShapeProfile (or None / static: no shape flags, the ONNX fixes the size).
    ``layout`` / ``max_batch``: an NHWC (uint8) input; a batch axis from 1 to ``max_batch``.
    ``tensorrt_version``: the trtexec that will run it ("8.2", (8, 6), ...); None means 10.x.
    For TensorRT 11 with precision 'fp16', ``onnx_path`` must be the FP16-typed ONNX; for
    'int8' on every release, the Q/DQ graph of ``segexport --int8``.
    """
    version = _version(tensorrt_version)
    if precision not in ("fp32", "fp16", "int8"):
        raise SegDeployError(
            "trtexec_command supports precision fp32, fp16 or int8, got {!r}".format(precision)
        )
    args = [
        "trtexec",
        "--onnx=" + shlex.quote(str(onnx_path)),
        "--saveEngine=" + shlex.quote(str(engine_path)),
    ]
    if precision == "fp16" and version < (11,):
        args.append("--fp16")
    if precision == "int8" and version < (11,):
        args.append("--int8")
    if profile is not None:
        if not isinstance(profile, ShapeProfile):
            profile = ShapeProfile(*[tuple(p) for p in profile])
        if not profile.is_static or max_batch:
            shapes = input_shapes(profile, layout, max_batch)
            for flag, shape in zip(("--minShapes", "--optShapes", "--maxShapes"), shapes):
                args.append("{}={}".format(flag, _shape_arg(input_name, shape)))
    if workspace_mib is not None:
        if version < (8, 4):
            args.append("--workspace={}".format(int(workspace_mib)))
        else:
            args.append("--memPoolSize=workspace:{}".format(int(workspace_mib)))
    if timing_cache is not None:
        args.append("--timingCacheFile=" + shlex.quote(str(timing_cache)))
    if opt_level is not None:
        if version < (8, 6):
            raise SegDeployError(
                "builder optimization levels need TensorRT 8.6 or newer; drop "
                "--opt-level for TensorRT {}".format(".".join(str(v) for v in version))
            )
        args.append("--builderOptimizationLevel={}".format(int(opt_level)))
    plugin_flag = "--plugins" if version < (10,) else "--staticPlugins"
    for plugin in plugins:
        args.append("{}={}".format(plugin_flag, shlex.quote(str(plugin))))
    return " ".join(args)
