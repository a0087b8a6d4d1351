"""The API bridge against stand-ins generated from each release's real Python API.

Every test runs on every release in ``trt_stand_ins.RELEASES`` (8.2 from its sources, 8.6.1 to
11.4 from the real bindings): a stand-in object has exactly the members its release has, so a
test fails when ``trt_compat`` (or the builder/runtime code, see the last tests) uses a name, an
enum value or an argument form that the release lacks. These test which calls *our* code makes,
not TensorRT; the tensorrt-marked tests run the real thing.
"""

import ast
import os

import numpy as np
import pytest
import trt_stand_ins as stand_ins
from trt_stand_ins import computed, new

from segdeploy.engines import trt_compat
from segdeploy.errors import EngineError

RELEASES = sorted(stand_ins.RELEASES, key=lambda r: tuple(int(p) for p in r.split(".")))
MODULES = {release: stand_ins.module(release) for release in RELEASES}


def _major(release):
    return int(release.split(".")[0])


@pytest.fixture(params=RELEASES)
def release(request):
    return request.param


@pytest.fixture
def trt(release):
    return MODULES[release]


# name, shape, is_input: a dynamic-size segmentation graph
IO = [("image", (1, 3, -1, -1), True), ("labels", (1, -1, -1), False)]
PROFILE = [(1, 3, 32, 64), (1, 3, 64, 128), (1, 3, 128, 256)]


def _labels_type(trt):
    # TensorRT 8.x has no INT64 tensors: its ONNX parser casts an int64 ArgMax to INT32.
    return trt.DataType.INT64 if "INT64" in trt.DataType.__members__ else trt.DataType.INT32


def engine(trt):
    """An engine for IO, described for every API generation; ``new`` keeps what ``trt`` has."""
    names = [n for n, _, _ in IO]

    def dtype(name):
        return trt.DataType.FLOAT if name == "image" else _labels_type(trt)

    def row(key):
        return IO[key if isinstance(key, int) else names.index(key)]

    def tensor_mode(name):
        return trt.TensorIOMode.INPUT if row(name)[2] else trt.TensorIOMode.OUTPUT

    def profile_shape(*args):
        assert args in ((0, 0), ("image", 0))
        return PROFILE

    return new(
        trt,
        "ICudaEngine",
        num_bindings=len(IO),
        get_binding_name=lambda i: IO[i][0],
        binding_is_input=lambda key: row(key)[2],
        get_binding_shape=lambda key: row(key)[1],
        get_binding_dtype=lambda key: dtype(row(key)[0]),
        get_binding_index=names.index,
        get_profile_shape=profile_shape,
        num_io_tensors=len(IO),
        get_tensor_name=lambda i: IO[i][0],
        get_tensor_mode=tensor_mode,
        get_tensor_shape=lambda name, *profile: row(name)[1],
        get_tensor_dtype=dtype,
        get_tensor_profile_shape=profile_shape,
    )


EXPECTED_GENERATION = {8: "bindings", 10: "named-only", 11: "strongly-typed"}


def test_data_says_where_it_came_from(release, trt):
    assert trt.__version__.startswith(release + ".")
    if release == "8.2":
        assert "release/8.2" in trt.stand_in_source
    else:
        assert "real bindings" in trt.stand_in_source


def test_api_generation(release, trt):
    expected = "named" if release == "8.6" else EXPECTED_GENERATION[_major(release)]
    assert trt_compat.api_generation(trt) == expected


def test_numpy_dtypes_by_name(trt):
    assert trt_compat.numpy_dtype(trt.DataType.FLOAT) == np.float32
    assert trt_compat.numpy_dtype(trt.DataType.HALF) == np.float16
    assert trt_compat.numpy_dtype(trt.DataType.INT32) == np.int32
    assert trt_compat.numpy_dtype(_labels_type(trt)) in (np.int32, np.int64)
    exotic = [m for m in ("FP8", "BF16", "INT4", "FP4") if m in trt.DataType.__members__]
    for member in exotic:
        with pytest.raises(EngineError, match="{} has no numpy equivalent".format(member)):
            trt_compat.numpy_dtype(trt.DataType[member])


def builder(trt):
    return new(trt, "Builder", max_batch_size=1, platform_has_fast_fp16=True)


def test_network_flags(release, trt):
    flags = trt.NetworkDefinitionCreationFlag
    b = builder(trt)
    plain = trt_compat.network_flags(trt, b)
    typed = trt_compat.network_flags(trt, b, strongly_typed=True)
    if _major(release) == 8:  # implicit batch still exists: ONNX needs EXPLICIT_BATCH
        assert plain == typed == 1 << int(flags.EXPLICIT_BATCH)
    else:  # 10.x: explicit batch is implied (the flag is deprecated and ignored)
        assert plain == 0
        # STRONGLY_TYPED is 1 in 10.x and 0 in 11.x: the value comes from the enum
        assert typed == 1 << int(flags.STRONGLY_TYPED)
        assert int(flags.STRONGLY_TYPED) == (1 if _major(release) == 10 else 0)


def test_fp16_flag_and_platform_query(release, trt):
    assert trt_compat.has_fp16_flag(trt) == (_major(release) < 11)
    fast = trt_compat.platform_fast_fp16(builder(trt))
    assert fast is (True if _major(release) < 11 else None)


def config(trt, calls):
    def record(name, result=None):
        def call(*args):
            calls.append((name,) + args)
            return result

        return call

    return new(
        trt,
        "IBuilderConfig",
        max_workspace_size=0,
        set_memory_pool_limit=record("set_memory_pool_limit"),
        set_flag=record("set_flag"),
        clear_flag=record("clear_flag"),
        builder_optimization_level=3,
        hardware_compatibility_level=None,
        create_timing_cache=lambda blob: ("cache", bytes(blob)),
        set_timing_cache=record("set_timing_cache", True),
        get_timing_cache=lambda: None,
    )


def test_workspace(release, trt):
    calls = []
    c = config(trt, calls)
    where = trt_compat.set_workspace(trt, c, 256 << 20)
    if release == "8.2":  # memory pools arrived with 8.4
        assert where == "max_workspace_size" and c.max_workspace_size == 256 << 20
        assert calls == []
    else:
        assert where == "memory_pool_limit"
        assert calls == [("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 256 << 20)]


def test_optimization_level(release, trt):
    c = config(trt, [])
    assert trt_compat.set_optimization_level(c, 5) is (release != "8.2")
    if release != "8.2":
        assert c.builder_optimization_level == 5


def test_optional_flags(release, trt):
    calls = []
    c = config(trt, calls)
    assert trt_compat.set_flag_if_present(trt, c, "VERSION_COMPATIBLE") == (release != "8.2")
    assert not trt_compat.set_flag_if_present(trt, c, "NO_SUCH_FLAG")
    assert trt_compat.clear_flag_if_present(trt, c, "TF32")  # every release has TF32
    expected = [("clear_flag", trt.BuilderFlag.TF32)]
    if release != "8.2":
        expected.insert(0, ("set_flag", trt.BuilderFlag.VERSION_COMPATIBLE))
    assert calls == expected
    assert trt_compat.set_hardware_compatibility(trt, c) == (release != "8.2")
    if release != "8.2":
        assert c.hardware_compatibility_level == trt.HardwareCompatibilityLevel.AMPERE_PLUS


def test_timing_cache(release, trt):
    calls = []
    c = config(trt, calls)
    cache, warning = trt_compat.attach_timing_cache(c, b"old")
    assert cache == ("cache", b"old") and warning is None
    assert calls == [("set_timing_cache", ("cache", b"old"), False)]
    assert trt_compat.attach_timing_cache(object(), b"") == (None, None)


def test_io_tensors_and_profiles(release, trt):
    image, labels = trt_compat.io_tensors(trt, engine(trt))
    assert (image.name, image.is_input, image.shape) == ("image", True, (1, 3, -1, -1))
    assert image.dtype == np.float32 and not labels.is_input
    assert labels.dtype == (np.int32 if _major(release) == 8 else np.int64)
    # binding indices exist up to 8.6; 10.x dropped them
    assert image.index == (0 if _major(release) == 8 else None)
    assert trt_compat.profile_shapes(engine(trt), image) == tuple(PROFILE)


def context(trt, calls):
    def record(name, result=True):
        def call(*args):
            calls.append((name,) + args)
            return result(*args) if callable(result) else result

        return call

    return new(
        trt,
        "IExecutionContext",
        set_binding_shape=record("set_binding_shape", lambda i, shape: shape[2] <= 128),
        set_input_shape=record("set_input_shape", lambda name, shape: shape[2] <= 128),
        get_binding_shape=lambda index: (1, 64, 128),
        get_tensor_shape=lambda name: (1, 64, 128),
        set_tensor_address=record("set_tensor_address", None),
        execute_async_v2=record("execute_async_v2"),
        execute_async_v3=record("execute_async_v3"),
    )


def test_execution(release, trt):
    tensors = trt_compat.io_tensors(trt, engine(trt))
    calls = []
    ctx = context(trt, calls)
    trt_compat.set_input_shape(ctx, tensors[0], (1, 3, 64, 128))
    assert trt_compat.output_shape(ctx, tensors[1]) == (1, 64, 128)
    trt_compat.execute_async(ctx, tensors, {"labels": 200, "image": 100}, 7)
    if release == "8.2":
        assert calls == [
            ("set_binding_shape", 0, (1, 3, 64, 128)),
            ("execute_async_v2", [100, 200], 7),
        ]
    else:
        assert calls == [
            ("set_input_shape", "image", (1, 3, 64, 128)),
            ("set_tensor_address", "image", 100),
            ("set_tensor_address", "labels", 200),
            ("execute_async_v3", 7),
        ]
    with pytest.raises(EngineError, match="outside the engine's optimization profile"):
        trt_compat.set_input_shape(ctx, tensors[0], (1, 3, 512, 128))


def parser(trt, errors):
    return new(trt, "OnnxParser", num_errors=len(errors), get_error=errors.__getitem__)


def parser_error(trt, node, desc):
    return new(
        trt,
        "ParserError",
        node=lambda: node,
        desc=lambda: desc,
        node_name=lambda: "/head/ArgMax",
        node_operator=lambda: "ArgMax",
    )


def test_parser_errors(release, trt):
    errors = [parser_error(trt, 12, "Assertion failed: axis"), parser_error(trt, -1, "bad graph")]
    lines = trt_compat.parser_errors(parser(trt, errors))
    if _major(release) == 8:  # node_name / node_operator arrived with 10.0's parser
        assert lines == ["node 12: Assertion failed: axis", "graph: bad graph"]
    else:
        assert lines == [
            "node 12 (/head/ArgMax ArgMax): Assertion failed: axis",
            "graph (/head/ArgMax ArgMax): bad graph",
        ]


def network(trt, dtypes):
    def tensor(name, dtype):
        return new(trt, "ITensor", name=name, shape=(1, 3, -1, -1), dtype=dtype)

    layers = [
        new(trt, "ILayer", num_outputs=1, get_output=lambda j, d=d: tensor("t", d)) for d in dtypes
    ]
    return new(
        trt,
        "INetworkDefinition",
        num_layers=len(layers),
        get_layer=layers.__getitem__,
        num_inputs=1,
        get_input=lambda i: tensor("image", trt.DataType.FLOAT),
    )


def test_network_inspection(trt):
    half, float_ = trt.DataType.HALF, trt.DataType.FLOAT
    assert trt_compat.network_has_half(trt, network(trt, [float_, half]))
    assert not trt_compat.network_has_half(trt, network(trt, [float_, trt.DataType.INT32]))
    assert trt_compat.network_inputs(network(trt, [])) == [("image", (1, 3, -1, -1))]


def test_failed_build_is_an_engine_error(trt):
    b = new(trt, "Builder", build_serialized_network=lambda network, config: None)
    with pytest.raises(EngineError, match="could not build an engine"):
        trt_compat.build_plan(b, None, None)
    plan = new(trt, "Builder", build_serialized_network=lambda network, config: b"plan")
    assert trt_compat.build_plan(plan, None, None) == b"plan"


# --- the stand-ins themselves: they must refuse what the release lacks ---------------------------


def test_stand_ins_refuse_absent_names_and_wrong_arguments():
    trt82, trt11 = MODULES["8.2"], MODULES["11.4"]
    assert not hasattr(trt82, "TensorIOMode") and not hasattr(trt82, "MemoryPoolType")
    assert "INT64" not in trt82.DataType.__members__
    assert "VERSION_COMPATIBLE" not in trt82.BuilderFlag.__members__
    assert not hasattr(trt11.BuilderFlag, "FP16") and not hasattr(trt11.BuilderFlag, "INT8")
    assert "STRONGLY_TYPED" not in MODULES["8.6"].NetworkDefinitionCreationFlag.__members__
    assert hasattr(MODULES["8.6"], "HardwareCompatibilityLevel")
    config10 = new(MODULES["10.0"], "IBuilderConfig")
    with pytest.raises(AttributeError, match="has no attribute 'max_workspace_size'"):
        config10.max_workspace_size = 1  # removed in 10.0: assigning it must fail
    ctx = new(MODULES["10.0"], "IExecutionContext", set_input_shape=lambda name, shape: True)
    with pytest.raises(TypeError, match="set_input_shape"):
        ctx.set_input_shape("image")  # missing the shape argument
    assert ctx.set_input_shape(name="image", shape=(1, 3, 8, 8)) is True
    with pytest.raises(NotImplementedError, match="no behaviour"):
        new(MODULES["10.0"], "IExecutionContext").execute_async_v3(0)
    assert stand_ins.is_unset(new(trt82, "Builder").platform_has_fast_fp16)
    assert new(trt82, "ITensor", dtype=computed(lambda: "x")).dtype == "x"


# --- every TensorRT name the code uses exists in the releases it is used on ----------------------

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "segdeploy")
TRT_CODE = [
    "engines/trt_compat.py",
    "engines/tensorrt_builder.py",
    "engines/build_cli.py",
    "runtime/tensorrt_backend.py",
]

# trt.<A>.<B> used only behind a trt_compat check that is False exactly where the name is absent
GUARDED = {
    ("BuilderFlag", "FP16"): trt_compat.has_fp16_flag,
    ("MemoryPoolType", "WORKSPACE"): lambda trt: hasattr(trt, "MemoryPoolType"),
    ("TensorIOMode", "INPUT"): lambda trt: hasattr(trt.ICudaEngine, "num_io_tensors"),
    ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"): lambda trt: (
        "EXPLICIT_BATCH" in trt.NetworkDefinitionCreationFlag.__members__
    ),
    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"): lambda trt: (
        "STRONGLY_TYPED" in trt.NetworkDefinitionCreationFlag.__members__
    ),
}


def _trt_names(path):
    """(A, B-or-None) for every ``trt.A`` / ``trt.A.B`` attribute chain and every string flag
    name passed to ``set_flag_if_present`` / ``clear_flag_if_present`` in ``path``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "trt" and not node.attr.startswith("__"):
                found.add((node.attr, None))
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "trt"
        ):
            found.add((node.value.attr, node.attr))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
            "set_flag_if_present",
            "clear_flag_if_present",
        ):
            flag = node.args[-1]
            if isinstance(flag, ast.Constant) and isinstance(flag.value, str):
                found.add(("BuilderFlag?", flag.value))
    # trt.A.B also walks trt.A: keep the longer chain only
    return {(a, b) for a, b in found if b is not None or not any(x == a and y for x, y in found)}


@pytest.mark.parametrize("relpath", TRT_CODE)
def test_trt_names_exist_where_used(relpath):
    path = os.path.join(ROOT, relpath)
    if not os.path.exists(path):
        pytest.skip("{} is not in this checkout".format(relpath))
    names = _trt_names(path)
    assert names or relpath == "engines/build_cli.py"
    for outer, inner in sorted(names, key=str):
        if outer == "BuilderFlag?":  # optional by design: must exist in at least one release
            assert any(inner in m.BuilderFlag.__members__ for m in MODULES.values()), inner
            continue
        for release, trt in MODULES.items():
            present = hasattr(trt, outer) and (inner is None or hasattr(getattr(trt, outer), inner))
            if (outer, inner) in GUARDED:
                assert GUARDED[(outer, inner)](trt) == present, (relpath, outer, inner, release)
            else:
                assert present, "{} uses trt.{}{} which TensorRT {} lacks".format(
                    relpath, outer, "." + inner if inner else "", release
                )


def _members_by_release():
    return {
        release: {
            member
            for cls in stand_ins.load(release)["classes"].values()
            if "enum" not in cls
            for member in cls["members"]
        }
        for release in RELEASES
    }


@pytest.mark.parametrize("relpath", [p for p in TRT_CODE if p != "engines/trt_compat.py"])
def test_version_dependent_members_go_through_trt_compat(relpath):
    """Outside trt_compat (whose every function runs on every release above), a TensorRT
    method or property that some release lacks may only be reached through trt_compat."""
    path = os.path.join(ROOT, relpath)
    if not os.path.exists(path):
        pytest.skip("{} is not in this checkout".format(relpath))
    members = _members_by_release()
    everywhere = set.intersection(*members.values())
    somewhere = set.union(*members.values())
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or node.attr not in somewhere - everywhere:
            continue
        if isinstance(node.value, ast.Name) and node.value.id == "trt_compat":
            continue  # the bridge's own function of that name
        if hasattr(dict, node.attr):
            continue  # options.update(...) and the like: not a TensorRT object
        lacking = [r for r in RELEASES if node.attr not in members[r]]
        raise AssertionError(
            "{}:{} uses .{} directly, which TensorRT {} lacks; go through trt_compat".format(
                relpath, node.lineno, node.attr, ", ".join(lacking)
            )
        )
