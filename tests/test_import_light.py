import subprocess
import sys

HEAVY = ("torch", "onnx", "onnxruntime", "tensorrt", "pycuda", "cuda", "onnxslim", "cv2")


def _imported_after(statement):
    code = "import sys; {}; print(' '.join(sorted(sys.modules)))".format(statement)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_import_segdeploy_is_light():
    loaded = _imported_after("import segdeploy")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_device_side_packages_are_light():
    # The device side must import on a Jetson with numpy alone until a backend is used.
    stmt = "import segdeploy.runtime, segdeploy.bench, segdeploy.engines, segdeploy.export"
    loaded = _imported_after(stmt)
    heavy = loaded & {"torch", "onnx", "onnxruntime", "tensorrt", "pycuda", "cuda"}
    assert not heavy, heavy


def test_models_does_import_torch():
    # The contrast that makes the tests above meaningful: the host side does need torch.
    assert "torch" in _imported_after("import segdeploy.models")
