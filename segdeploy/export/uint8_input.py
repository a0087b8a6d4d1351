"""uint8 frames into the graph: the cast, the normalization and the NHWC->NCHW transpose as nodes.

A client (or a camera loop on the device) then sends the frame as it has it, 3 bytes per pixel,
instead of a normalized float32 tensor of 12 bytes per pixel, and runs no normalization itself.
Only the resize to the network size stays on the host.

    image  uint8 (N, H, W, 3), channels in frame order (BGR: what OpenCV returns)
      │  Transpose perm (0, 3, 1, 2)          uint8 (N, 3, H, W): a quarter of the float bytes
      │  Gather axis 1 [2, 1, 0]              only when the frame order is not the model's
      │  Cast float32
      │  Mul scale, Sub mean, Div std         per channel, (1, 3, 1, 1) constants
      ▼
    image_normalized  float32 (N, 3, H, W)  ──►  the verified float graph, unchanged

The arithmetic is the float path's own, in the same order and precision (``verify.normalize``:
``(p * scale - mean) / std`` in float32), so the uint8 graph sees bit-identical network inputs and
its labels equal the float graph's; ``verify_against_float`` checks that on every export.
"""

import copy

import numpy as np

from .. import card as card_mod
from ..errors import ExportError

NORMALIZED_NAME = "image_normalized"
FRAME_ORDER = "BGR"


def uint8_card(card, frame_order=FRAME_ORDER):
    """The card of the uint8 graph made from the float graph of ``card``."""
    out = copy.deepcopy(card)
    cin = out["input"]
    cin["model_channel_order"] = cin["channel_order"]
    cin["channel_order"] = frame_order.upper()
    cin["layout"] = "NHWC"
    cin["dtype"] = "uint8"
    # scale / mean / std stay, in the model's channel order: they document what the graph does.
    cin["normalized_in_graph"] = True
    return out


is_uint8_card = card_mod.takes_uint8_frames  # the card decides, for every reader alike


def prepend_uint8_input(model_proto, card, frame_order=FRAME_ORDER):
    """A copy of the float ``model_proto`` (input NCHW float32) taking uint8 NHWC frames.

    ``card`` is the float graph's card (its input name, scale, mean, std, channel order).
    """
    from onnx import TensorProto, helper, numpy_helper

    cin = card["input"]
    proto = copy.deepcopy(model_proto)
    graph = proto.graph
    name = cin["name"]
    old = next((i for i in graph.input if i.name == name), None)
    if old is None:
        raise ExportError("the graph has no input named {!r} to put the uint8 head on".format(name))
    dims = list(old.type.tensor_type.shape.dim)
    if old.type.tensor_type.elem_type != TensorProto.FLOAT or len(dims) != 4:
        raise ExportError(
            "--input uint8 needs a float32 N x 3 x H x W input; {!r} is not one".format(name)
        )

    def dim(d):
        return d.dim_param if d.dim_param else (d.dim_value if d.dim_value > 0 else None)

    n, _, h, w = (dim(d) for d in dims)
    for node in graph.node:
        for i, value in enumerate(node.input):
            if value == name:
                node.input[i] = NORMALIZED_NAME
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info(name, TensorProto.UINT8, [n, h, w, 3]))

    def constant(key, values, dtype=np.float32, shape=None):
        array = np.asarray(values, dtype=dtype)
        if shape is not None:
            array = array.reshape(shape)
        graph.initializer.append(numpy_helper.from_array(array, "uint8_head_" + key))
        return "uint8_head_" + key

    nodes = [
        helper.make_node("Transpose", [name], ["uint8_head_nchw"], perm=[0, 3, 1, 2]),
    ]
    planar = "uint8_head_nchw"
    if frame_order.upper() != str(cin["channel_order"]).upper():
        nodes.append(
            helper.make_node(
                "Gather",
                [planar, constant("order", [2, 1, 0], np.int64)],
                ["uint8_head_model_order"],
                axis=1,
            )
        )
        planar = "uint8_head_model_order"
    nodes += [
        helper.make_node("Cast", [planar], ["uint8_head_float"], to=TensorProto.FLOAT),
        helper.make_node(
            "Mul", ["uint8_head_float", constant("scale", cin["scale"])], ["uint8_head_scaled"]
        ),
        helper.make_node(
            "Sub",
            ["uint8_head_scaled", constant("mean", cin["mean"], shape=(1, 3, 1, 1))],
            ["uint8_head_centred"],
        ),
        helper.make_node(
            "Div",
            ["uint8_head_centred", constant("std", cin["std"], shape=(1, 3, 1, 1))],
            [NORMALIZED_NAME],
        ),
    ]
    for i, node in enumerate(nodes):
        node.name = "uint8_head_{}_{}".format(i, node.op_type.lower())
    for node in reversed(nodes):
        graph.node.insert(0, node)
    import onnx

    onnx.checker.check_model(proto)
    return proto


def frames_for(card, count, seed=0):
    """``count`` uint8 frames of the card's size in frame (BGR) order: smooth ones, whose labels
    vary in regions, and one of uniform noise."""
    from ..samples import sample_frame

    h, w = int(card["input"]["height"]), int(card["input"]["width"])
    frames = [sample_frame(h, w, seed + i) for i in range(max(1, count - 1))]
    if count > 1:
        rng = np.random.RandomState(seed)
        frames.append(rng.randint(0, 256, size=(h, w, 3), dtype=np.uint8))
    return frames


def verify_against_float(float_proto, uint8_proto, float_card, frames):
    """Run both graphs (ONNX Runtime CPU) on the same uint8 ``frames`` (H x W x 3, BGR): the float
    graph on the host-normalized input, the uint8 graph on the frame as is. Returns figures with
    ``identical_frames`` (frames whose label maps are equal pixel for pixel)."""
    from .verify import _session, normalize

    f_session = _session(float_proto, expose_logits=False)
    u_session = _session(uint8_proto, expose_logits=False)
    f_in = f_session.get_inputs()[0].name
    u_in = u_session.get_inputs()[0].name
    model_rgb = str(float_card["input"]["channel_order"]).upper() == "RGB"
    identical, pixels, equal_pixels, classes = 0, 0, 0, set()
    for frame in frames:
        model_order = frame[:, :, ::-1] if model_rgb else frame
        f_labels = f_session.run(None, {f_in: normalize(model_order, float_card)})[0]
        u_labels = u_session.run(None, {u_in: np.ascontiguousarray(frame[None])})[0]
        if f_labels.ndim == 4:  # logits graphs: compare their argmax
            f_labels, u_labels = f_labels.argmax(1), u_labels.argmax(1)
        same = f_labels == u_labels
        identical += int(same.all())
        pixels += same.size
        equal_pixels += int(same.sum())
        classes.update(np.unique(f_labels).tolist())
    return {
        "frames": len(frames),
        "identical_frames": identical,
        "label_agreement": equal_pixels / float(pixels),
        "classes_seen": len(classes),
        "bytes_per_frame_float": int(4 * 3 * frames[0].shape[0] * frames[0].shape[1]),
        "bytes_per_frame_uint8": int(3 * frames[0].shape[0] * frames[0].shape[1]),
    }
