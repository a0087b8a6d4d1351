"""``segexport --head``: where the labels head runs, and the graph cut that moves it to the runtime.

    --head graph:  ... ─► low (N,C,h,w) ─► Resize(linear) ─► logits (N,C,H,W) ─► ArgMax ─► labels
    --head fused:  ... ─► logits (N,C,h,w)   graph output; the card's output.head =
                          {"kind": "fused", "size": [H, W], "align_corners", "mode", ...}

With ``fused`` the engine stops at the low-resolution logits and the Runtime's fused head
(``segdeploy.runtime.head``) gives the labels the removed Resize + ArgMax would have (exactly,
ties aside), without the C x H x W float tensor. The cut is a subgraph of the verified graph:
nothing the remaining nodes compute changes. Default: ``fused`` for CPU engines (ONNX Runtime,
OpenVINO) whenever the graph ends in a bilinear Resize to the input size, ``graph`` for
TensorRT (its GPU runs the head; ``segbuild --seghead-plugin`` replaces it there by the SegHead
plugin) and for graphs without such a Resize.
"""

import copy
import os

from .. import card as card_mod
from ..errors import ExportError

HEAD_CHOICES = ("fused", "graph")
_PASSTHROUGH = ("Identity", "Cast")


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _constant(graph, name):
    """The numpy value of an initializer or Constant output ``name``, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def find_head(model_proto):
    """(resize node, nodes after it, why-not) for the graph's final bilinear Resize.

    The nodes after it are the ArgMax / Identity / Cast between the Resize and the output. The
    first two are None, with a reason, when the graph does not end that way."""
    graph = model_proto.graph
    if len(graph.output) != 1:
        return None, None, "the graph has {} outputs, not one".format(len(graph.output))
    producer = {out: node for node in graph.node for out in node.output}
    tail, name = [], graph.output[0].name
    node = producer.get(name)
    while node is not None and node.op_type in _PASSTHROUGH + ("ArgMax",):
        if node.op_type == "ArgMax" and (
            _attr(node, "axis", 0) != 1 or _attr(node, "select_last_index", 0) != 0
        ):
            return None, None, "its ArgMax is not over the class axis with the first index"
        tail.append(node)
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Resize":
        return None, None, "it does not end in a Resize of the logits"
    mode = _attr(node, "mode", "nearest")
    transform = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode != "linear":
        return None, None, "its final Resize is {}, not bilinear".format(mode)
    if transform not in card_mod.HEAD_MODES:
        return None, None, "its final Resize uses the {} coordinates".format(transform)
    if _attr(node, "antialias", 0):
        return None, None, "its final Resize antialiases"
    scales = _constant(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scales is not None and scales.size and not (scales == scales.round()).all():
        # the fused head takes scale = out / in, as ONNX Runtime does from sizes: equal to the
        # given scales only when they are whole numbers
        return None, None, "its final Resize takes fractional scales, not sizes"
    if _attr(node, "axes") is not None:
        return None, None, "its final Resize names axes"
    consumers = [n for n in graph.node if set(n.input) & set(node.output) and n not in tail]
    if consumers:
        return None, None, "the upsampled logits feed other nodes too"
    return node, tail, None


def head_size(model_proto, resize, card):
    """[H, W] the Resize upsamples to: its constant sizes, else (a dynamic graph) the input's."""
    sizes = _constant(model_proto.graph, resize.input[3]) if len(resize.input) > 3 else None
    cin = card["input"]
    if sizes is not None and sizes.size == 4:
        size = [int(sizes[2]), int(sizes[3])]
        if not cin.get("dynamic") and size != [int(cin["height"]), int(cin["width"])]:
            raise ExportError(
                "the graph's final Resize upsamples to {}x{}, not to the input's {}x{}: use "
                "--head graph".format(size[0], size[1], cin["height"], cin["width"])
            )
        return size
    return [int(cin["height"]), int(cin["width"])]


def _shape_of(model_proto, name):
    import onnx

    for info in list(model_proto.graph.value_info) + list(model_proto.graph.output):
        if info.name == name:
            return info
    inferred = onnx.shape_inference.infer_shapes(model_proto)
    for info in inferred.graph.value_info:
        if info.name == name:
            return info
    return None


def cut_head(model_proto, card, output_name="logits"):
    """A copy of ``model_proto`` that stops at the low-resolution logits, and its card.

    The card (a copy) gets ``output`` = the logits tensor and ``output.head`` = the fused head's
    parameters. ExportError when the graph does not end in a bilinear Resize (+ ArgMax).
    """
    from onnx import TensorProto, helper

    resize, tail, why = find_head(model_proto)
    if resize is None:
        raise ExportError("--head fused: {}; use --head graph".format(why))
    size = head_size(model_proto, resize, card)
    proto = copy.deepcopy(model_proto)
    graph = proto.graph
    low = resize.input[0]
    info = _shape_of(model_proto, low)
    dims = list(info.type.tensor_type.shape.dim) if info is not None else []
    removed_outputs = set(resize.output) | {o for n in tail for o in n.output}
    keep = [n for n in graph.node if not set(n.output) & removed_outputs]
    del graph.node[:]
    graph.node.extend(keep)
    # the low-resolution tensor becomes the output "logits" (its old name is internal)
    if low != output_name:
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == low:
                    node.input[i] = output_name
            for i, name in enumerate(node.output):
                if name == low:
                    node.output[i] = output_name
    for i in reversed(range(len(graph.value_info))):
        if graph.value_info[i].name in removed_outputs | {low, output_name}:
            del graph.value_info[i]
    shape = [(d.dim_param or d.dim_value or None) for d in dims] or None
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output_name, TensorProto.FLOAT, shape))
    _drop_dead(graph)
    head = {
        "kind": "fused",
        "size": size,
        "logits_size": (
            [int(shape[2]), int(shape[3])]
            if shape and len(shape) == 4 and all(isinstance(v, int) for v in shape[2:])
            else None
        ),
        "align_corners": _attr(resize, "coordinate_transformation_mode") == "align_corners",
        "mode": _attr(resize, "coordinate_transformation_mode", "half_pixel"),
    }
    new_card = copy.deepcopy(card)
    new_card["output"].update(
        name=output_name, kind="logits", dtype="float32", resolution="logits", head=head
    )
    card_mod.validate(new_card, "the fused-head card")
    return proto, new_card


def _drop_dead(graph):
    """Remove nodes and initializers nothing reachable from the outputs uses."""
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(list(graph.node)):
        if set(node.output) & needed:
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name not in needed:
            del graph.initializer[i]


def choose_head(requested, backend, model_proto):
    """(choice, note): ``requested`` (None = default) for this backend and graph."""
    resize, _, why = find_head(model_proto)
    if requested == "graph":
        return "graph", None
    if requested == "fused":
        if resize is None:
            raise ExportError("--head fused: {}; use --head graph".format(why))
        if backend == "tensorrt":
            return "fused", (
                "--head fused on TensorRT: the plan returns the low-resolution logits and the "
                "runtime runs the head on the host (segbuild --seghead-plugin runs it on the GPU)"
            )
        return "fused", None
    if backend == "tensorrt":
        return "graph", None
    if resize is None:
        return "graph", "labels head kept in the graph ({})".format(why)
    return "fused", None


def head_step(steps, args, backend, paths, card, stage_dir):
    """segexport's labels-head step: ``(card, paths)`` the engine is built from.

    With the head fused, each written graph of ``paths`` (None skipped) is cut before its head
    into a copy of the same name under ``stage_dir/fused-head`` (with its card and sidecar), and
    the engine (and a Triton repository) is built from the copies; NAME.onnx, NAME.fp16.onnx and
    NAME.int8.onnx keep their head, so they stay the portable, verified graphs any target (a
    TensorRT device too) builds from. Runs after verification, FP16 and INT8, which all judge
    the labels of the whole graph."""
    import onnx

    from .onnx_export import save_model, set_card

    requested = getattr(args, "head", None)
    default_graph = None
    if requested is None and getattr(args, "output", "labels") == "logits":
        default_graph = "--output logits"  # asks for the upsampled logits themselves
    elif requested is None and getattr(args, "triton", None):
        if getattr(args, "triton_device", "gpu") != "cpu":
            default_graph = "the Triton repository runs on a GPU"
    to_tensorrt = getattr(args, "print_trtexec", False) or getattr(args, "trt_version", None)
    if backend == "tensorrt" or to_tensorrt:
        backend = "tensorrt"  # the graph is for a TensorRT device (the trtexec line too)
    elif backend is None and requested is None:
        default_graph = "no engine is built here"
    if default_graph:
        requested = "graph"
    main = onnx.load(paths[0])
    choice, note = choose_head(requested, backend, main)
    if choice == "graph":
        if getattr(args, "head", None) == "graph":
            why = "--head graph"
        elif default_graph:
            why = default_graph
        elif backend == "tensorrt":
            why = "TensorRT runs them on the GPU"
        else:
            why = note
        steps.run("labels head: Resize + ArgMax stay in the engine ({})".format(why), lambda: None)
        return card, list(paths)
    if note:
        steps.say(note)
    folder = os.path.join(stage_dir, "fused-head")

    def cut_all():
        os.makedirs(folder, exist_ok=True)
        out = []
        for path in paths:
            if not path:
                out.append(None)
                continue
            proto = main if path == paths[0] else onnx.load(path)
            if os.path.isfile(card_mod.sidecar_path(path)):
                own = card_mod.read_sidecar(path)
            else:
                own = card_mod.read_onnx_card(proto, path) or card
            cut, cut_card = cut_head(proto, own)
            set_card(cut, cut_card)
            target = os.path.join(folder, os.path.basename(path))
            save_model(cut, target)
            card_mod.write_sidecar(target, cut_card)
            out.append(target)
        return out

    cut_paths = steps.run(
        "fused labels head: the engine stops before the final Resize + ArgMax (the runtime "
        "upsamples and decides on the host)",
        cut_all,
    )
    fused = card_mod.read_sidecar(cut_paths[0])
    head = fused["output"]["head"]
    steps.say(
        "engine output: logits {} -> labels {}x{} by the runtime's fused head ({}); the .onnx "
        "files keep their head".format(
            "x".join(str(v) for v in head["logits_size"] or ("h", "w")),
            head["size"][0],
            head["size"][1],
            head["mode"],
        )
    )
    return fused, cut_paths
