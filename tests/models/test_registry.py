import pytest
from torch import nn

from segdeploy.errors import SegDeployError, UnknownModelError
from segdeploy.models import build, get_spec, list_models, register_model


def test_list_models_has_regseg_and_is_sorted():
    names = list_models()
    assert "regseg" in names
    assert names == sorted(names)
    assert "regseg_tiny" not in list_models(include_tiny=False)


def test_unknown_model_names_known_ones_and_closest():
    with pytest.raises(UnknownModelError) as info:
        build("regsge")
    message = str(info.value)
    assert "did you mean 'regseg'" in message
    assert "known models:" in message and "regseg_tiny" in message
    assert isinstance(info.value, SegDeployError)


def test_unknown_model_without_close_match_has_no_guess():
    with pytest.raises(UnknownModelError) as info:
        get_spec("zzzzzzzz")
    assert "did you mean" not in str(info.value)


def test_registering_twice_raises():
    with pytest.raises(SegDeployError, match="registered twice"):

        @register_model("regseg", family="regseg", stride=16)
        def again(*, num_classes=19):
            return nn.Identity()


def test_build_passes_kwargs_and_attaches_spec():
    model = build("regseg_tiny", num_classes=11)
    assert model.decoder.classifier.out_channels == 11
    assert model.segdeploy_spec.name == "regseg_tiny"
    assert not model.training


def test_build_rejects_unknown_kwarg_clearly():
    with pytest.raises(SegDeployError, match="cannot build 'regseg'"):
        build("regseg", widht=3)
