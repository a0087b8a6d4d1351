"""TensorRT releases by what JetPack ships: 8.0 (4.6 GA) refused in one line that names 4.6.1,
8.2 (4.6.1), 8.5 (5.1, Orin) and 10.3 (6.x, Orin) checked with their own parser's op lists."""

import pytest
import tiny_onnx

from segdeploy.engines import build_cli, parser_rules
from segdeploy.errors import SegDeployError


@pytest.mark.parametrize("version", ["8.0", "8.0.1.6", (8, 0), "7.1", (7, 1), "7.1.3"])
def test_releases_before_82_are_refused_in_one_line(version):
    with pytest.raises(SegDeployError) as info:
        parser_rules.parse_version(version)
    message = str(info.value)
    assert "\n" not in message and "JetPack 4.6.1" in message
    shown = version if isinstance(version, str) else ".".join(map(str, version))
    assert message.startswith("TensorRT {}.{} is older".format(*shown.split(".")[:2]))
    assert "(" not in message.split("is older")[0]  # "7.1", never "(7, 1)"


@pytest.mark.parametrize(
    "version,has,lacks",
    [
        ("8.2", ["Resize", "ArgMax"], ["GridSample", "HardSwish"]),
        ("8.5", ["GridSample", "HardSwish", "Trilu"], ["LayerNormalization"]),  # JetPack 5.1
        ("10.3", ["LayerNormalization", "Gelu"], []),  # JetPack 6.x
    ],
)
def test_jetpack_releases_get_their_parser_rules(version, has, lacks):
    ops = parser_rules._ops_for(parser_rules.parse_version(version))
    assert set(has) <= ops and not set(lacks) & ops


def test_segbuild_print_trtexec_for_80_is_a_one_line_refusal(capsys):
    path = tiny_onnx.path("static")
    assert build_cli.main([path, "--print-trtexec", "--trt-version", "8.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segbuild: error: TensorRT 8.0 is older"), err
    for version in ("8.2", "8.5", "10.3"):
        assert build_cli.main([path, "--print-trtexec", "--trt-version", version]) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith("trtexec --onnx=" + path)


def test_an_installed_80_is_refused_in_one_line(monkeypatch, capsys):
    """JetPack 4.6 GA's TensorRT 8.0.1 as the installed release (its version number only)."""
    from segdeploy.engines import plan_build

    for module in (build_cli, plan_build):  # the name segbuild asks, wherever it is bound
        monkeypatch.setattr(module, "installed_tensorrt_version", lambda: (8, 0))
    assert build_cli.main([tiny_onnx.path("static"), "--print-trtexec"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT 8.0 is older" in err[0] and "JetPack 4.6.1" in err[0]
