"""Per-release stand-ins for the ``tensorrt`` module, generated from the real API data.

``tests/engines/trt_api/<version>.json`` (made by ``scripts/trt_api_data.py``: trimmed from the
snapshots of the real bindings in ``../shared/trt-api/``, and for 8.2 read from NVIDIA/TensorRT's
release/8.2 sources) lists, per release, which names exist, enum values, and argument names.
``module(release)`` turns one file into a module object that has exactly those names:

- enums are ``IntEnum`` classes with the release's members and values;
- classes have the release's methods and properties and nothing else: reading or *assigning* a
  name the release lacks raises AttributeError (as pybind11 objects do), and a call whose
  arguments do not fit any of the release's signatures raises TypeError;
- behaviour comes from the test (``new(trt, "ICudaEngine", num_io_tensors=2, ...)``): a test
  describes how *any* release's object behaves, and ``new`` keeps only the members this release
  has, so code that reaches for a name the release lacks fails the test. A member the test gave
  no behaviour raises NotImplementedError when used (a property reads as ``UNSET``).

Nothing here runs TensorRT; it checks which calls our code makes, per release.
"""

import enum
import inspect
import json
import os
import re
import types

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trt_api")

# release label used in tests -> data file
RELEASES = {
    "8.2": "8.2.3",
    "8.6": "8.6.1",
    "10.0": "10.0.1",
    "10.8": "10.8.0.43",
    "10.13": "10.13.3.9",
    "10.16": "10.16.1.11",
    "11.0": "11.0.0.114",
    "11.4": "11.4.0.106",
}


def load(release):
    with open(os.path.join(DATA_DIR, RELEASES[release] + ".json"), encoding="utf-8") as f:
        return json.load(f)


class _Unset(object):
    """The value of a property the test gave no behaviour: any use of it is an error."""

    def __init__(self, where):
        self.where = where

    def _fail(self, *args, **kwargs):
        raise NotImplementedError("stand-in: {} has no value in this test".format(self.where))

    __bool__ = __int__ = __index__ = __iter__ = __call__ = __len__ = _fail

    def __repr__(self):
        return "UNSET({})".format(self.where)


def is_unset(value):
    return isinstance(value, _Unset)


def _split_top(text):
    parts, depth, current = [], 0, []
    for c in text:
        if c in "[(<{":
            depth += 1
        elif c in "])>}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def parse_signature(line):
    """inspect.Signature (without self) of a pybind11 signature line, or None for the
    ``f(*args, **kwargs)`` overview line pybind11 puts before overloads."""
    inner = line[line.index("(") + 1 :]
    depth = 1
    for i, c in enumerate(inner):
        depth += c == "("
        depth -= c == ")"
        if depth == 0:
            inner = inner[:i]
            break
    if inner.strip() == "*args, **kwargs":
        return None
    params = []
    for part in _split_top(inner):
        match = re.match(r"\s*(\w+)", part)
        name = match.group(1)
        if name == "self":
            continue
        has_default = re.search(r"=\s*\S", part.split(":", 1)[-1]) is not None
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=None if has_default else inspect.Parameter.empty,
            )
        )
    # pybind11 allows a default before a required argument (execute_async(batch_size=1,
    # bindings, ...)), which inspect refuses to build unless told not to validate
    return inspect.Signature(params, __validate_parameters__=False)


def _method(release, cls_name, name, signatures):
    parsed = [s for s in (parse_signature(line) for line in signatures) if s is not None]

    def method(self, *args, **kwargs):
        if parsed and not any(_binds(sig, args, kwargs) for sig in parsed):
            raise TypeError(
                "TensorRT {}: {}.{}() takes {}; called with {} {}".format(
                    release, cls_name, name, " or ".join(str(s) for s in parsed), args, kwargs
                )
            )
        impl = self._behaviour.get(name)
        if impl is None:
            raise NotImplementedError(
                "stand-in: the test gave {}.{} no behaviour".format(cls_name, name)
            )
        return impl(*args, **kwargs)

    method.__name__ = name
    return method


def _binds(signature, args, kwargs):
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _property(cls_name, name):
    def get(self):
        value = self._behaviour.get(name, _Unset("{}.{}".format(cls_name, name)))
        return value() if callable(value) and name in self._computed else value

    def put(self, value):
        self._behaviour[name] = value
        self._computed.discard(name)

    return property(get, put)


class StandIn(object):
    """Base of every generated class: refuses to grow attributes the release does not have."""

    _release = None
    _members = frozenset()

    def __init__(self):
        object.__setattr__(self, "_behaviour", {})
        object.__setattr__(self, "_computed", set())

    def __setattr__(self, name, value):
        if name not in self._members:
            raise AttributeError(
                "TensorRT {} {} has no attribute {!r}".format(
                    self._release, type(self).__name__, name
                )
            )
        object.__setattr__(self, name, value)


def _enum(name, values):
    return enum.IntEnum(name, sorted(values.items(), key=lambda kv: kv[1]))


def module(release):
    """A module object with exactly the names of TensorRT ``release`` (a key of RELEASES)."""
    data = load(release)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = data["tensorrt_version"]
    trt.stand_in_source = data["source"]
    classes = data["classes"]
    for name in data["module"]:
        if name not in classes and name not in data["functions"]:
            setattr(trt, name, type(name, (StandIn,), {"_release": release}))
    enums = {n: _enum(n, c["enum"]) for n, c in classes.items() if "enum" in c}
    for name, cls in classes.items():
        if name in enums:
            setattr(trt, name, enums[name])
            continue
        namespace = {"_release": release, "_members": frozenset(cls["members"])}
        for member, info in cls["members"].items():
            kind = info["kind"]
            if kind in ("instancemethod", "staticmethod"):
                namespace[member] = _method(release, name, member, info.get("signatures", []))
            elif kind == "property":
                namespace[member] = _property(name, member)
            elif kind == "pybind11_type":
                values = classes.get(member, {}).get("enum") or _nested_enum(cls, member)
                namespace[member] = enums.get(member) or _enum(member, values)
        for member, info in cls["members"].items():  # Logger.VERBOSE: exported enum members
            nested = namespace.get(info["kind"])
            if isinstance(nested, type) and issubclass(nested, enum.IntEnum):
                namespace[member] = nested[member]
        setattr(trt, name, type(name, (StandIn,), namespace))
    for name, signatures in data["functions"].items():
        setattr(trt, name, _function(release, name, signatures))
    return trt


def _nested_enum(cls, enum_name):
    """Members of an enum nested in a class whose values the data does not give: in order."""
    names = sorted(m for m, info in cls["members"].items() if info["kind"] == enum_name)
    return {m: i for i, m in enumerate(names)}


def _function(release, name, signatures):
    method = _method(release, "tensorrt", name, signatures)
    behaviour = {}

    def function(*args, **kwargs):
        return method(types.SimpleNamespace(_behaviour=behaviour), *args, **kwargs)

    function.behaviour = behaviour
    function.__name__ = name
    return function


def new(trt, cls_name, **behaviour):
    """An instance of ``trt.<cls_name>`` with the behaviour given for the members it has.

    Callables given for methods implement them; for properties, a plain value is the value and
    ``computed(f)`` a value computed on each read. Members the release lacks are dropped.
    """
    cls = getattr(trt, cls_name)
    obj = cls()
    for name, value in behaviour.items():
        if name not in cls._members:
            continue
        if isinstance(value, computed):
            obj._behaviour[name] = value.fn
            obj._computed.add(name)
        else:
            obj._behaviour[name] = value
    return obj


class computed(object):  # noqa: N801 (used like a decorator-ish marker)
    def __init__(self, fn):
        self.fn = fn
