"""The D-block plugin in both forms: IPluginV3 for TensorRT >= 10, IPluginV2DynamicExt for 8.x,
and the builder picking the form the installed TensorRT has (issue 22).

The choice is tested here from NvInferVersion.h files written as each release writes them (8.x:
plain numbers; 10.x+: NV_TENSORRT_MAJOR an alias of TRT_MAJOR_ENTERPRISE). The compilations need
TensorRT's real headers, which segdeploy does not ship and CI cannot fetch: point
SEGDEPLOY_TRT_INCLUDES at include directories of real releases (os.pathsep-separated, e.g. the
release branches of github.com/NVIDIA/TensorRT) and they run; without it they skip, saying so.
"""

import os
import shutil
import subprocess

import pytest

from segdeploy.errors import SegDeployError
from segdeploy.plugins.dblock import build, compile_check, plugin_api

HERE = os.path.dirname(os.path.abspath(plugin_api.__file__))
TRT_INCLUDES = [d for d in os.environ.get("SEGDEPLOY_TRT_INCLUDES", "").split(os.pathsep) if d]
needs_headers = pytest.mark.skipif(
    not TRT_INCLUDES, reason="SEGDEPLOY_TRT_INCLUDES names no TensorRT headers"
)


def _version_header(directory, major, minor=0, patch=0, aliased=False):
    os.makedirs(str(directory), exist_ok=True)
    if aliased:  # the layout from 10.x on
        text = (
            "#define TRT_MAJOR_ENTERPRISE {}\n#define TRT_MINOR_ENTERPRISE {}\n"
            "#define TRT_PATCH_ENTERPRISE {}\n"
            "#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE //!< TensorRT major version.\n"
            "#define NV_TENSORRT_MINOR TRT_MINOR_ENTERPRISE\n"
            "#define NV_TENSORRT_PATCH TRT_PATCH_ENTERPRISE\n".format(major, minor, patch)
        )
    else:
        text = (
            "#define NV_TENSORRT_MAJOR {} //!< TensorRT major version.\n"
            "#define NV_TENSORRT_MINOR {}\n#define NV_TENSORRT_PATCH {}\n".format(
                major, minor, patch
            )
        )
    (directory / "NvInferVersion.h").write_text(text)


@pytest.mark.parametrize(
    "version, api",
    [
        ("8.0.1", "V2"),  # JetPack 4.6 GA
        ("8.2.1", "V2"),  # JetPack 4.6.1, the TX2's last
        ("8.5.2", "V2"),  # JetPack 5.1, Orin / Xavier
        ("8.6.1", "V2"),  # GTX 1080 Ti's last
        ("10.0.1", "V3"),
        ("10.3.0", "V3"),  # JetPack 6
        ("10.16.0", "V3"),
        ("11.1.0", "V3"),
    ],
)
def test_form_per_release(version, api):
    assert plugin_api.api_for_version(version) == api


def test_unreadable_version_is_one_line():
    with pytest.raises(SegDeployError, match="NV_TENSORRT_MAJOR"):
        plugin_api.api_for_version("?.?.?")


@pytest.mark.parametrize(
    "layout, major, aliased, api",
    [
        ("include", 8, False, "V2"),
        ("include/aarch64-linux-gnu", 8, False, "V2"),  # JetPack's layout under a prefix
        ("include", 10, True, "V3"),
        ("include/x86_64-linux-gnu", 11, True, "V3"),
    ],
)
def test_builder_reads_the_headers_it_will_compile_against(tmp_path, layout, major, aliased, api):
    _version_header(tmp_path / layout, major, 2, 1, aliased)
    chosen, why = plugin_api.choose(str(tmp_path))
    assert chosen == api
    assert "TensorRT {}.2.1".format(major) in why and plugin_api.SOURCES[api] in why
    lines = []

    class Stream(object):
        write = staticmethod(lines.append)

    assert build.plugin_form(str(tmp_path), Stream) == ["-DDBLOCK_PLUGIN_API=" + api]
    assert plugin_api.INTERFACES[api] in lines[0]


def test_no_headers_leaves_the_choice_to_cmake(tmp_path):
    api, why = plugin_api.choose(str(tmp_path))
    assert api is None and "CMake picks" in why

    class Stream(object):
        write = staticmethod(lambda text: None)

    assert build.plugin_form(str(tmp_path), Stream) == []


def test_both_sources_ship_with_the_package():
    for source in plugin_api.SOURCES.values():
        assert os.path.isfile(os.path.join(HERE, source))
    assert os.path.isfile(os.path.join(HERE, "dblock_plugin_fields.h"))
    with open(os.path.join(HERE, "CMakeLists.txt")) as f:
        cmake = f.read()
    # CMake's own reading of the headers (a plain cmake run) knows both spellings of the major
    assert "TRT_MAJOR_ENTERPRISE" in cmake and "NV_TENSORRT_MAJOR" in cmake
    for source in plugin_api.SOURCES.values():
        assert source in cmake
    with open(os.path.join(HERE, plugin_api.SOURCES["V3"])) as f:
        v3 = f.read()
    for interface in (
        "IPluginV3OneCore",
        "IPluginV3OneBuild",
        "IPluginV3OneRuntime",
        "IPluginCreatorV3One",
    ):
        assert "public nvinfer1::" + interface in v3, interface


@needs_headers
@pytest.mark.parametrize("include", TRT_INCLUDES or ["none"])
def test_each_form_compiles_where_its_release_has_it(include):
    version = compile_check.tensorrt_version(include)
    chosen = plugin_api.api_for_version(version)
    row = compile_check.compile_plugin(include, api=chosen)
    assert row["ok"], row["message"]
    assert row["warnings"] == 0 and row["object_bytes"] > 0 and row["api"] == chosen
    other = compile_check.compile_plugin(include, api="V2" if chosen == "V3" else "V3")
    if chosen == "V3":
        # 10.x / 11.x still build the deprecated V2 form (the library is built from one of them)
        assert other["ok"], other["message"]
    else:
        # 8.x has no IPluginV3: the builder must never pick it there
        assert not other["ok"] and "IPlugin" in other["message"]


def _toolchain_missing():
    try:
        build.find_cmake()
        build.find_nvcc()
    except build.MissingDependencyError as exc:
        return str(exc)
    return None


@needs_headers
@pytest.mark.skipif(_toolchain_missing() is not None, reason=str(_toolchain_missing()))
def test_plain_cmake_picks_the_form_itself(tmp_path):
    """Without segdeploy's builder (cmake by hand, as the README shows) the form still follows
    the headers."""
    include = TRT_INCLUDES[-1]
    want = plugin_api.api_for_version(compile_check.tensorrt_version(include))
    proc = subprocess.run(
        [
            shutil.which("cmake"),
            "-S",
            HERE,
            "-B",
            str(tmp_path),
            "-DTensorRT_ROOT=" + os.path.dirname(include),
            "-DDBLOCK_LINK_NVINFER=OFF",
            "-DCMAKE_CUDA_COMPILER=" + build.find_nvcc(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    text = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, text[-2000:]
    assert "DBlockConv plugin form: {} ({})".format(want, plugin_api.SOURCES[want]) in text


def test_a_named_headers_folder_wins_over_the_root(tmp_path):
    _version_header(tmp_path / "root" / "include", 8)
    _version_header(tmp_path / "headers", 10, aliased=True)
    assert plugin_api.choose(str(tmp_path / "root"))[0] == "V2"
    assert plugin_api.choose(str(tmp_path / "root"), str(tmp_path / "headers"))[0] == "V3"
