"""Bring-your-own graph: ``segexport --onnx my_model.onnx`` skips to verification and build."""

import os

from ..errors import SegDeployError


def load_onnx_and_card(args):
    """(model proto, card, PyTorch reference or None, spec or None) for ``args.onnx``.

    The card comes from the file's metadata when segexport wrote it; otherwise it is made from
    the zoo spec named by ``--model`` or from ImageNet defaults and the graph's own shapes.
    """
    import onnx

    from ..card import read_onnx_card as read_card
    from .onnx_export import clean_graph

    path = args.onnx
    if not os.path.isfile(path):
        from .._io import missing_file

        raise SegDeployError(missing_file(path, "--onnx"))
    try:
        proto = onnx.load(path)
        onnx.checker.check_model(proto)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegDeployError(
            "--onnx {} is not a valid ONNX model ({}); pass a file written by torch.onnx.export "
            "or segexport".format(path, first[:200])
        ) from None
    card = read_card(proto, path)
    reference, spec = None, None
    if args.model:
        from .model_source import build_model

        reference, spec, _ = build_model(args)
    if card is None:
        card = _card_from_graph(proto, spec, args)
        proto = clean_graph(proto)
    if len(proto.graph.input) != 1:
        raise SegDeployError(
            "--onnx {} has {} inputs; segdeploy runs graphs with one image input".format(
                path, len(proto.graph.input)
            )
        )
    check_card_against_graph(proto, card, "--onnx {}".format(path))
    return proto, card, reference, spec


def _dims(value_info):
    return [d.dim_value if d.dim_value > 0 else -1 for d in value_info.type.tensor_type.shape.dim]


def graph_input_hw(proto):
    """(height, width) of a graph whose input size is fixed, else None."""
    graph_input = proto.graph.input[0]
    dims = _dims(graph_input)
    if len(dims) != 4:
        return None
    # a uint8 input is the frame itself, N x H x W x 3 (segexport --input uint8)
    uint8 = graph_input.type.tensor_type.elem_type == 2  # onnx.TensorProto.UINT8
    height, width = (dims[1], dims[2]) if uint8 else (dims[2], dims[3])
    return (height, width) if height > 0 and width > 0 else None


def check_card_against_graph(proto, card, where):
    """One line unless the card agrees with the graph: input size, output rank and classes."""
    from .. import card as card_mod

    card_mod.check_graph(card, where, _dims(proto.graph.input[0]), _dims(proto.graph.output[0]))
    classes = _argmax_channels(proto)
    if classes is not None and classes != card["model"]["num_classes"]:
        raise SegDeployError(
            "{}: the card says {} classes but the graph's argmax runs over {} channels; "
            "pass --num-classes {}".format(where, card["model"]["num_classes"], classes, classes)
        )


def _argmax_channels(proto):
    """Channels of the logits that the labels output is the argmax of (None when unknown)."""
    import onnx

    out = proto.graph.output[0].name
    node = next((n for n in proto.graph.node if out in n.output), None)
    if node is None or node.op_type != "ArgMax":
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # a graph shape inference cannot follow: nothing to compare
        return None
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        if info.name == node.input[0]:
            dims = _dims(info)
            if len(dims) > axis and dims[axis] > 0:
                return dims[axis]
    return None


def preflight_size(args):
    """Before any step: --res / --dynamic against an --onnx graph whose input size is fixed
    (read with the light protobuf reader, not the whole graph into onnx)."""
    if not (args.res or args.dynamic) or not os.path.isfile(args.onnx):
        return
    from ..engines import onnx_reader
    from ..engines.profiles import derive_profile

    try:
        inputs = onnx_reader.read_model(args.onnx).graph.inputs
    except SegDeployError:
        return  # not readable as ONNX: the read step says so in its own words
    dims = inputs[0].dims if inputs else None
    if not dims or len(dims) != 4 or not all(isinstance(d, int) for d in dims):
        return
    uint8 = inputs[0].dtype == "uint8"
    fixed = (dims[1], dims[2]) if uint8 else (dims[2], dims[3])
    if min(fixed) <= 0:
        return
    res = args.res or "{}x{}".format(*fixed)
    profile = derive_profile(res, args.dynamic)
    if profile.min != fixed or profile.max != fixed:
        flag = "--dynamic {}".format(args.dynamic) if args.dynamic else "--res " + args.res
        raise SegDeployError(
            "{} asks for sizes the graph cannot take: its input is fixed at {}x{}; drop {} or "
            "re-export the graph (segexport --model NAME {})".format(
                flag, fixed[0], fixed[1], flag.split()[0], flag
            )
        )


def check_res_against_graph(proto, profile, flag="--res"):
    """One line when the graph's input is fixed at another size than the one asked for."""
    fixed = graph_input_hw(proto)
    if fixed is not None and (profile.min != fixed or profile.max != fixed):
        raise SegDeployError(
            "{} asks for {}x{} but the graph's input is fixed at {}x{}; drop {} or "
            "re-export the graph at that size".format(
                flag, profile.opt[0], profile.opt[1], fixed[0], fixed[1], flag
            )
        )


def _card_from_graph(proto, spec, args):
    from ..models.modelcard import make_card
    from .model_source import user_model_spec

    graph_in = proto.graph.input[0]
    dims = [d.dim_value or None for d in graph_in.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise SegDeployError("the graph's input {!r} is not N x 3 x H x W".format(graph_in.name))
    out = proto.graph.output[0]
    out_dims = [d.dim_value or None for d in out.type.tensor_type.shape.dim]
    kind = "logits" if len(out_dims) == 4 else "labels"
    num_classes = args.num_classes or (out_dims[1] if kind == "logits" else None)
    if not num_classes:
        raise SegDeployError(
            "cannot tell the number of classes of {}; pass --num-classes".format(args.onnx)
        )
    if args.res:
        from ..engines.profiles import parse_hw

        height, width = parse_hw(args.res)
        if dims[2] and dims[3] and (height, width) != (dims[2], dims[3]):
            raise SegDeployError(
                "--res {} disagrees with the graph's input, fixed at {}x{}; drop --res or "
                "re-export the graph at that size".format(args.res, dims[2], dims[3])
            )
    elif dims[2] and dims[3]:
        height, width = dims[2], dims[3]
    else:
        raise SegDeployError("the graph has a dynamic input size; pass --res HEIGHTxWIDTH")
    spec = spec or user_model_spec(
        os.path.splitext(os.path.basename(args.onnx))[0], num_classes, args.stride or 32
    )
    card = make_card(spec, num_classes, height, width, kind, None, _opset(proto), None)
    card["input"]["name"] = graph_in.name
    card["output"]["name"] = out.name
    return card


def _opset(proto):
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
