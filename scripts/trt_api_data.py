"""Make the TensorRT API data that tests/engines/trt_stand_ins.py turns into per-release stand-ins.

Two sources, one output format (that of ``../shared/trt-api/*.json``: ``classes[NAME].members[ATTR]
.kind/.signatures``, ``classes[NAME].enum``, ``functions``, ``module``), trimmed to the classes
segdeploy's TensorRT code touches:

    # releases with a bindings wheel: trim the snapshot read from the real module
    python scripts/trt_api_data.py trim ../shared/trt-api/10.8.0.43.json

    # TensorRT 8.2 (JetPack 4.6) has no wheel: read NVIDIA/TensorRT's release/8.2 sources, the
    # pybind11 bindings (python/src/**.cpp) for names and argument names, the C++ headers
    # (include/NvInfer*.h) for enum values
    python scripts/trt_api_data.py sources DIR --version 8.2.3 --commit SHA

Output: tests/engines/trt_api/<version>.json. The 8.2 file says where it came from under "source".
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, os.pardir, "tests", "engines", "trt_api")

# Every class whose members segdeploy's TensorRT code (engines/trt_compat.py, tensorrt_builder.py,
# runtime/tensorrt_backend.py, engines/build_cli.py) reads, calls or compares against.
KEEP_CLASSES = (
    "Builder",
    "BuilderFlag",
    "DataType",
    "HardwareCompatibilityLevel",
    "IBuilderConfig",
    "ICudaEngine",
    "IExecutionContext",
    "IHostMemory",
    "ILayer",
    "ILogger",
    "INetworkDefinition",
    "IOptimizationProfile",
    "ITensor",
    "ITimingCache",
    "Logger",
    "MemoryPoolType",
    "NetworkDefinitionCreationFlag",
    "OnnxParser",
    "ParserError",
    "Runtime",
    "TensorIOMode",
)
KEEP_FUNCTIONS = ("init_libnvinfer_plugins", "get_nv_onnx_parser_version", "nptype")


def trim(snapshot):
    classes = snapshot["classes"]
    return {
        "tensorrt_version": snapshot["tensorrt_version"],
        "source": "trimmed from ../shared/trt-api/{}.json, read from the real bindings "
        "wheel (see the README there)".format(snapshot["tensorrt_version"]),
        "module": sorted(snapshot["module"]),
        "functions": {k: v for k, v in snapshot["functions"].items() if k in KEEP_FUNCTIONS},
        "classes": {k: classes[k] for k in KEEP_CLASSES if k in classes},
    }


# --- reading the 8.2 sources -------------------------------------------------------------------


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def header_enums(text):
    """{C++ enum name: {member without k prefix: value}} from ``enum class X : T { ... };``."""
    enums = {}
    for match in re.finditer(
        r"enum\s+class\s+(\w+)\s*:\s*\w+\s*\{(.*?)\}", _strip_comments(text), re.S
    ):
        name, body = match.group(1), match.group(2)
        values, nxt = {}, 0
        for entry in body.split(","):
            entry = entry.strip()
            if not entry:
                continue
            member = re.match(r"(\w+)", entry).group(1)
            if "=" in entry:
                expr = entry.split("=", 1)[1].strip()
                if expr in values:  # an alias: kDEFAULT = kSTANDARD
                    nxt = values[expr]
                elif re.fullmatch(r"[0-9\s<|()x]+", expr):
                    nxt = int(eval(expr, {"__builtins__": {}}))  # digits, shifts and ors only
                else:
                    raise ValueError("cannot evaluate {}::{} = {}".format(name, member, expr))
            values[member] = nxt
            nxt += 1
        enums[name] = values
    return enums


def _statement_end(text, start):
    """Index just past the ``;`` that ends the statement starting at ``start``."""
    depth, i, quote = 0, start, None
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == ";" and depth == 0:
            return i + 1
        i += 1
    return len(text)


def _calls(statement):
    """(method, name, argument text) for each ``.def*("name", ...)`` / ``.value("NAME", ...)``."""
    for match in re.finditer(r"\.(def\w*|value)\(\s*\"(\w+)\"", statement):
        depth, i = 0, match.start(0) + len(match.group(1)) + 1
        while i < len(statement):
            if statement[i] == "(":
                depth += 1
            elif statement[i] == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        yield match.group(1), match.group(2), statement[match.end(0) : i]


def _arguments(arg_text):
    """[(name, has_default)] from pybind11's ``"x"_a`` / ``py::arg("x")`` with optional ``= v``."""
    found = []
    for match in re.finditer(r"(?:py::arg\(\s*\"(\w+)\"\s*\)|\"(\w+)\"_a)(\s*=)?", arg_text):
        found.append((match.group(1) or match.group(2), bool(match.group(3))))
    return found


def _signature(cls, name, args):
    parts = ["self: tensorrt.{}".format(cls)] + [a + (" = ..." if d else "") for a, d in args]
    return "{}({})".format(name, ", ".join(parts))


def bindings(sources, enums):
    """Classes and enums declared by the pybind11 sources (text of every .cpp, concatenated)."""
    text = _strip_comments(sources)
    classes, cpp_to_py, variables = {}, {}, {}
    opener = re.compile(
        r"py::(class_|enum_)<\s*([\w:]+)\s*(?:,\s*((?:[^<>]|<[^<>]*>)*?))?>\s*(\w+\s*)?[({]\s*(\w+)\s*,"
        r"\s*\"(\w+)\""
    )
    statements = []
    for match in opener.finditer(text):
        kind, cpp, bases, var, _scope, py = match.groups()
        cpp_to_py[cpp.split("::")[-1]] = py
        entry = classes.setdefault(py, {"members": {}})
        bases = re.sub(r"<[^<>]*>", "", bases or "")  # std::unique_ptr<X, nodelete> is no base
        entry["_bases"] = [b.strip().split("::")[-1] for b in bases.split(",") if b.strip()]
        if kind == "enum_":
            entry["enum"] = {}
            entry["_cpp"] = cpp.split("::")[-1]
            # pybind11 gives every enum these two properties
            entry["members"].update({"name": {"kind": "property"}, "value": {"kind": "property"}})
        if var:
            variables[var.strip()] = py
        statements.append((py, text[match.start(0) : _statement_end(text, match.start(0))]))
    for var, py in variables.items():  # e.g. baseLoggerBinding.def("log", ...)
        for match in re.finditer(r"\b{}\s*\.".format(re.escape(var)), text):
            statements.append((py, text[match.start(0) : _statement_end(text, match.start(0))]))
    exported = {}
    for py, statement in statements:
        entry = classes[py]
        for method, name, args in _calls(statement):
            if name.startswith("__"):
                continue
            if method == "value":
                cpp_enum = enums.get(entry["_cpp"], {})
                member = re.search(r"::k?(\w+)\s*(?:,|$)", args)
                key = (
                    "k" + member.group(1) if member and "k" + member.group(1) in cpp_enum else None
                )
                if key is None and member:
                    key = member.group(1)
                if key not in cpp_enum:
                    if py in KEEP_CLASSES:
                        raise ValueError("no header value for {}.{}".format(py, name))
                    continue  # an enum the tests never use (e.g. the parser's ErrorCode)
                entry["enum"][name] = cpp_enum[key]
                entry["members"][name] = {"kind": py}
            elif method in (
                "def_property",
                "def_property_readonly",
                "def_readwrite",
                "def_readonly",
            ):
                entry["members"][name] = {"kind": "property"}
            else:
                kind = "staticmethod" if method == "def_static" else "instancemethod"
                member = entry["members"].setdefault(name, {"kind": kind, "signatures": []})
                member["signatures"].append(_signature(py, name, _arguments(args)))
        if "export_values()" in statement:
            exported[py] = statement
    # pybind11's export_values() puts an enum's members on the enclosing class as well
    for match in re.finditer(r"py::enum_<\s*(\w+)::(\w+)\s*>\s*\(\s*(\w+)", text):
        outer = variables.get(match.group(3)) or cpp_to_py.get(match.group(1))
        inner = cpp_to_py.get(match.group(2))
        if outer and inner in exported:
            classes[outer]["members"][inner] = {"kind": "pybind11_type"}
            for name in classes[inner]["enum"]:
                classes[outer]["members"][name] = {"kind": inner}
    # members of C++ base classes are visible on the subclass (dir() lists them)
    for py, entry in classes.items():
        for base in entry.pop("_bases"):
            base_py = cpp_to_py.get(base)
            if base_py and base_py != py:
                for name, member in classes[base_py]["members"].items():
                    entry["members"].setdefault(name, member)
        entry.pop("_cpp", None)
    functions = {}
    for match in re.finditer(r"\bm\.def\(\s*\"(\w+)\"", text):
        end = _statement_end(text, match.start(0))
        args = _arguments(text[match.end(0) : end])
        functions[match.group(1)] = ["{}({})".format(match.group(1), ", ".join(a for a, _ in args))]
    return classes, functions


def from_sources(directory, version, commit):
    sources, headers, python = [], [], []
    for root, _dirs, files in os.walk(directory):
        for name in sorted(files):
            path = os.path.join(root, name)
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if name.endswith(".cpp"):
                sources.append(text)
            elif name.endswith(".py"):  # python/packaging/tensorrt/__init__.py: nptype & co.
                python.append(text)
            else:
                headers.append(text)
    enums = {}
    for text in headers:
        enums.update(header_enums(text))
    classes, functions = bindings("\n".join(sources), enums)
    for text in python:
        for match in re.finditer(r"^def (\w+)\(([^)]*)\)", text, re.M):
            functions[match.group(1)] = ["{}({})".format(*match.groups())]
        for match in re.finditer(r"^(\w+)\.(\w+) = property\(", text, re.M):  # DataType.itemsize
            if match.group(1) in classes:
                classes[match.group(1)]["members"][match.group(2)] = {"kind": "property"}
    module = sorted(set(classes) | set(functions))
    return {
        "tensorrt_version": version,
        "source": (
            "read from NVIDIA/TensorRT branch release/8.2 at {}: names and argument names from "
            "the pybind11 bindings python/src/infer/{{pyCore,pyFoundationalTypes,pyGraph,"
            "pyPlugin}}.cpp, python/src/parsers/pyOnnx.cpp and python/packaging/tensorrt/"
            "__init__.py; enum values from include/NvInfer.h, NvInferRuntime.h and "
            "NvInferRuntimeCommon.h. TensorRT 8.2 has no bindings wheel on the package "
            "registry. Signatures are reduced to argument names ('= ...' marks a default). "
            "Check of the method: the same reader run on release/8.6 gives the member and enum "
            "sets of the real 8.6.1 snapshot for every class kept here, except one extra "
            "INetworkDefinition.serialize.".format(commit)
        ),
        "module": module,
        "functions": {k: v for k, v in functions.items() if k in KEEP_FUNCTIONS},
        "classes": {k: classes[k] for k in KEEP_CLASSES if k in classes},
    }


def _write(data):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, data["tensorrt_version"] + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", os.path.relpath(path))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trim", help="trim snapshots read from the real bindings")
    t.add_argument("snapshots", nargs="+")
    s = sub.add_parser("sources", help="read a release's pybind11 sources and headers")
    s.add_argument("directory")
    s.add_argument("--version", required=True)
    s.add_argument("--commit", required=True)
    args = parser.parse_args(argv)
    if args.command == "trim":
        for path in args.snapshots:
            with open(path, encoding="utf-8") as f:
                _write(trim(json.load(f)))
    else:
        _write(from_sources(args.directory, args.version, args.commit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
