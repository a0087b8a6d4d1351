"""Input-size profiles: ``--res`` / ``--dynamic`` -> (min, opt, max) height x width.

    derive_profile(res="1024x2048", stride=32)                 # static: min = opt = max
    derive_profile(dynamic="512x1024:1024x2048", stride=32)    # opt = max
    derive_profile(res="768x1536", dynamic="512x1024:1024x2048", stride=32)   # opt = res

TensorRT tunes kernels for ``opt`` and accepts anything between ``min`` and ``max``; every size
must divide by the model's stride (from the model card) or the decoder's upsampling would not
return to the input size. Pure logic, Python 3.6 compatible.
"""

import re
from collections import namedtuple

from ..errors import ResolutionError

_Profile = namedtuple("_Profile", ["min", "opt", "max"])


class ShapeProfile(_Profile):
    """(height, width) tuples ``min``, ``opt``, ``max`` for the NCHW input at batch 1."""

    __slots__ = ()

    @property
    def is_static(self):
        return self.min == self.opt == self.max

    def nchw(self, which, channels=3, batch=1):
        """The full input shape for 'min' / 'opt' / 'max'."""
        height, width = getattr(self, which)
        return (batch, channels, height, width)

    def as_card(self):
        """The card's ``input.dynamic`` form: None when static, else lists."""
        if self.is_static:
            return None
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def contains(self, hw):
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, hw, self.max))


def input_shapes(profile, layout="NCHW", max_batch=None, channels=3):
    """(min, opt, max) full input shapes of ``profile`` for an NCHW or NHWC input; a batch axis
    from 1 to ``max_batch`` (tuned for ``max_batch``: a server's batcher fills batches under
    load) when ``max_batch`` is given, else batch 1."""
    shapes = []
    for which in ("min", "opt", "max"):
        batch = 1 if not max_batch or which == "min" else int(max_batch)
        height, width = getattr(profile, which)
        if str(layout).upper() == "NHWC":
            shapes.append((batch, height, width, channels))
        else:
            shapes.append((batch, channels, height, width))
    return tuple(shapes)


# Larger than any camera frame a segmentation network is run on; a typo ("10240x20480") or
# garbage stops here instead of allocating gigabytes.
MAX_SIDE = 16384


def parse_hw(text, what="--res"):
    """'1024x2048' -> (1024, 2048); ResolutionError (one line) for anything else.

    The one size parser of every CLI: zero, negative, non-ASCII digits, missing parts and sides
    above MAX_SIDE are refused with the flag's name.
    """
    match = re.match(r"^\s*([0-9]+)\s*[xX]\s*([0-9]+)\s*$", str(text))
    if not match:
        raise ResolutionError(
            "{} must be HEIGHTxWIDTH such as 1024x2048, got {!r}".format(what, text)
        )
    height, width = int(match.group(1)), int(match.group(2))
    if height <= 0 or width <= 0:
        raise ResolutionError(
            "{} must be positive HEIGHTxWIDTH such as 1024x2048, got {!r}".format(what, text)
        )
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ResolutionError(
            "{} {!r} is larger than {} pixels on a side; give the network input size, such "
            "as 1024x2048".format(what, text, MAX_SIDE)
        )
    return height, width


def parse_resolutions(text, stride=None):
    """'512x1024,1024x2048' -> [(512, 1024), (1024, 2048)], checked against ``stride``."""
    sizes = []
    for item in str(text).split(","):
        h, w = parse_hw(item.strip(), "--res (HxW, comma-separated for several)")
        if stride and (h % stride or w % stride):
            down = (max(stride, h // stride * stride), max(stride, w // stride * stride))
            up = (-(-h // stride) * stride, -(-w // stride) * stride)
            raise ResolutionError(
                "--res {}x{} is not a multiple of the model's stride {}; sizes "
                "that work nearby: {}x{} or {}x{}".format(
                    h, w, stride, down[0], down[1], up[0], up[1]
                )
            )
        sizes.append((h, w))
    return sizes


def derive_profile(res=None, dynamic=None, stride=1):
    """A ShapeProfile from ``res`` ('HxW') and/or ``dynamic`` ('MINHxMINW:MAXHxMAXW', or three
    sizes 'min:opt:max'). With ``dynamic`` alone, opt is the max size."""
    if res is None and dynamic is None:
        raise ResolutionError("give --res HEIGHTxWIDTH, --dynamic MINxMIN:MAXxMAX, or both")
    res_hw = parse_hw(res) if res is not None else None
    if dynamic is None:
        profile = ShapeProfile(res_hw, res_hw, res_hw)
    else:
        parts = str(dynamic).split(":")
        if len(parts) == 2:
            lo, hi = (parse_hw(p, "--dynamic") for p in parts)
            opt = res_hw if res_hw is not None else hi
        elif len(parts) == 3:
            lo, opt, hi = (parse_hw(p, "--dynamic") for p in parts)
            if res_hw is not None and res_hw != opt:
                raise ResolutionError(
                    "--res {} disagrees with the opt size {}x{} in --dynamic {}; give one of "
                    "them".format(res, opt[0], opt[1], dynamic)
                )
        else:
            raise ResolutionError(
                "--dynamic must be MINHxMINW:MAXHxMAXW (or min:opt:max), got {!r}".format(dynamic)
            )
        profile = ShapeProfile(lo, opt, hi)
    validate_profile(profile, stride)
    return profile


def validate_profile(profile, stride=1):
    """ResolutionError unless min <= opt <= max per axis and every size divides by ``stride``."""
    for axis, name in ((0, "height"), (1, "width")):
        lo, opt, hi = profile.min[axis], profile.opt[axis], profile.max[axis]
        if not lo <= opt <= hi:
            raise ResolutionError(
                "profile {} must satisfy min <= opt <= max, got {} / {} / {}".format(
                    name, lo, opt, hi
                )
            )
    if stride and stride > 1:
        for which in ("min", "opt", "max"):
            height, width = getattr(profile, which)
            if height % stride or width % stride:
                raise ResolutionError(
                    "{} size {}x{} is not divisible by the model stride {}; use {}x{}".format(
                        which,
                        height,
                        width,
                        stride,
                        _round_to(height, stride),
                        _round_to(width, stride),
                    )
                )
    return profile


def _round_to(value, stride):
    return max(stride, int(round(float(value) / stride)) * stride)


def profile_from_card(card):
    """The profile the card describes: ``input.dynamic`` if set, else its static height x width."""
    inp = card["input"]
    dynamic = inp.get("dynamic")
    if dynamic:
        return ShapeProfile(tuple(dynamic["min"]), tuple(dynamic["opt"]), tuple(dynamic["max"]))
    hw = (int(inp["height"]), int(inp["width"]))
    return ShapeProfile(hw, hw, hw)
