import importlib.util

import pytest

from segdeploy._deps import require
from segdeploy.errors import MissingDependencyError, SegDeployError


def test_present_module_is_returned():
    assert require("json").dumps([1]) == "[1]"


def test_missing_module_names_the_install_command():
    with pytest.raises(MissingDependencyError) as info:
        require("segdeploy_no_such_module", "a test")
    message = str(info.value)
    assert "segdeploy_no_such_module is not installed" in message and "for a test" in message
    assert "pip install segdeploy_no_such_module" in message
    assert isinstance(info.value, SegDeployError)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT installed")
def test_missing_tensorrt_points_to_the_extra_and_jetpack():
    with pytest.raises(MissingDependencyError) as info:
        require("tensorrt", "building engines")
    assert "segdeploy[tensorrt]" in str(info.value) and "python3-libnvinfer" in str(info.value)
