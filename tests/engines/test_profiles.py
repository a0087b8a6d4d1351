import pytest

from segdeploy.engines.profiles import (
    ShapeProfile,
    derive_profile,
    parse_hw,
    profile_from_card,
    validate_profile,
)
from segdeploy.errors import ResolutionError


def test_res_alone_is_static():
    p = derive_profile(res="1024x2048", stride=32)
    assert p.is_static
    assert p.min == p.opt == p.max == (1024, 2048)
    assert p.as_card() is None
    assert p.nchw("opt") == (1, 3, 1024, 2048)


def test_dynamic_alone_optimises_for_the_max():
    p = derive_profile(dynamic="512x1024:1024x2048", stride=32)
    assert (p.min, p.opt, p.max) == ((512, 1024), (1024, 2048), (1024, 2048))
    assert not p.is_static
    assert p.as_card() == {"min": [512, 1024], "opt": [1024, 2048], "max": [1024, 2048]}


def test_dynamic_with_res_optimises_for_res():
    p = derive_profile(res="768x1536", dynamic="512x1024:1024x2048", stride=32)
    assert p.opt == (768, 1536)
    assert p.contains((600, 1200)) and not p.contains((1056, 2048))


def test_three_part_dynamic():
    p = derive_profile(dynamic="512x1024:768x1536:1024x2048", stride=32)
    assert p.opt == (768, 1536)
    with pytest.raises(ResolutionError, match="disagrees"):
        derive_profile(res="512x1024", dynamic="512x1024:768x1536:1024x2048", stride=32)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"res": "1000x2048", "stride": 32}, r"not divisible by the model stride 32; use 992x2048"),
        (
            {"dynamic": "512x1024:1024x2050", "stride": 32},
            r"size 1024x2050 is not divisible.*use 1024x2048",
        ),
        ({"res": "2048x2048", "dynamic": "512x1024:1024x2048", "stride": 32}, "min <= opt <= max"),
        ({"dynamic": "1024x2048:512x1024", "stride": 32}, "min <= opt <= max"),
        ({"res": "1024*2048"}, "HEIGHTxWIDTH"),
        ({"dynamic": "512x1024"}, "--dynamic must be"),
        ({}, "give --res"),
    ],
)
def test_bad_sizes_are_refused_with_a_fix(kwargs, message):
    with pytest.raises(ResolutionError, match=message):
        derive_profile(**kwargs)


def test_stride_one_accepts_any_size():
    assert derive_profile(res="1001x999").opt == (1001, 999)


def test_parse_hw_and_validate():
    assert parse_hw(" 64 X 128 ") == (64, 128)
    with pytest.raises(ResolutionError):
        parse_hw("0x128")
    with pytest.raises(ResolutionError):
        validate_profile(ShapeProfile((64, 128), (64, 128), (64, 130)), stride=16)


def test_profile_from_card():
    static = {"input": {"height": 64, "width": 128, "dynamic": None}}
    assert profile_from_card(static) == ((64, 128),) * 3
    dyn = {
        "input": {
            "height": 64,
            "width": 128,
            "dynamic": {"min": [32, 64], "opt": [64, 128], "max": [128, 256]},
        }
    }
    assert profile_from_card(dyn) == ((32, 64), (64, 128), (128, 256))
