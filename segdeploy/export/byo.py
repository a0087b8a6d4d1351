"""Bring-your-own graph: ``segexport --onnx my_model.onnx`` skips to verification and build."""

import os

from ..errors import SegDeployError


def load_onnx_and_card(args):
    """(model proto, card, PyTorch reference or None, spec or None) for ``args.onnx``.

    The card comes from the file's metadata when segexport wrote it; otherwise it is made from
    the zoo spec named by ``--model`` or from ImageNet defaults and the graph's own shapes.
    """
    import onnx

    from .onnx_export import clean_graph, read_card

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
        from .pipeline import build_model

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
    return proto, card, reference, spec


def _card_from_graph(proto, spec, args):
    from .modelcard import make_card
    from .pipeline import user_model_spec

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
