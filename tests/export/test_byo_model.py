"""Bring-your-own PyTorch models: dict outputs, factory arguments, pre-processing and class
flags, the output resolution found by a forward pass; and segexport's -q / -v."""

import json
import textwrap
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from segdeploy.errors import SegDeployError
from segdeploy.export import user_model
from segdeploy.export.cli import main

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Net(nn.Module):
        '''torchvision-like: {'out', 'aux'} when return_dict, logits at 1/downsample.'''

        def __init__(self, num_classes, downsample, return_dict):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=downsample, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            )
            self.head = nn.Conv2d(16, num_classes, 1)
            self.aux = nn.Conv2d(16, num_classes, 1)
            self.return_dict = return_dict

        def forward(self, x):
            f = self.body(x)
            if self.return_dict:
                return {"out": self.head(f), "aux": self.aux(f)}
            return self.head(f)


    def build(num_classes=3, downsample=1, return_dict=False):
        torch.manual_seed(0)
        model = Net(num_classes, downsample, return_dict)
        for m in model.modules():  # fan-in scaled weights, varied BN: labels vary per pixel
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        return model
    """
)

NAMES = ["road", "car", "person", "tree", "sky", "sign"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("byo")
    (d / "net.py").write_text(MODEL_FILE)
    (d / "names.txt").write_text("# my classes\n" + "\n".join(NAMES) + "\n\n")
    return d


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _card(out_dir, name="net"):
    return json.loads((out_dir / (name + ".onnx.json")).read_text())


def test_dict_output_at_quarter_resolution_with_factory_args_and_flags(
    model_file, tmp_path, capsys
):
    out = tmp_path / "o"
    code, text, err = _run(
        capsys,
        "--model", model_file / "net.py:build",
        "--factory-args", '{"num_classes": 6, "return_dict": true}',
        "--factory-args", "downsample=4",
        "--res", "64x128",
        "--classes", model_file / "names.txt",
        "--mean", "123.675,116.28,103.53",
        "--std", "58.395,57.12,57.375",
        "--bgr",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "a dict with keys out, aux: exporting 'out'" in text
    assert "16x32, 1/4 of the 64x128 input" in text and "bilinear upsampling" in text
    card = _card(out)
    assert card["model"]["class_names"] == NAMES and card["model"]["num_classes"] == 6
    assert card["input"]["channel_order"] == "BGR"
    assert card["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert card["input"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert card["output"]["upsampled_from"] == "1/4"
    assert "assumed" not in text  # everything was given

    # The graph returns labels at the input size, as PyTorch's 'out' upsampled then argmax.
    import torch
    import torch.nn.functional as F

    spec = __import__("importlib.util").util.spec_from_file_location("n", model_file / "net.py")
    mod = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.build(num_classes=6, downsample=4, return_dict=True).eval()
    x = np.random.RandomState(1).standard_normal((1, 3, 64, 128)).astype(np.float32)
    with torch.no_grad():
        logits = F.interpolate(
            net(torch.from_numpy(x))["out"], size=(64, 128), mode="bilinear", align_corners=False
        )
    expected = logits.argmax(1).numpy()
    assert len(np.unique(expected)) >= 5  # the check means something: labels vary
    session = ort.InferenceSession(str(out / "net.onnx"), providers=["CPUExecutionProvider"])
    (labels,) = session.run(None, {session.get_inputs()[0].name: x})
    assert labels.shape == (1, 64, 128)
    assert (labels == expected).mean() > 0.999
    report = json.loads((out / "report.json").read_text())
    assert report["parity_fp32"]["label_agreement"] > 0.999


def test_plain_tensor_output_says_what_it_assumed(model_file, tmp_path, capsys):
    out = tmp_path / "o"
    code, text, err = _run(
        capsys,
        "--model", model_file / "net.py:build",
        "--factory-args", "num_classes=6",
        "--res", "64x128",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "6 classes at the input resolution 64x128" in text
    assert "assumed for this model: ImageNet mean/std" in text
    assert "RGB channel order (--rgb/--bgr)" in text and "class_0..class_5" in text
    card = _card(out)
    assert card["input"]["channel_order"] == "RGB" and "upsampled_from" not in card["output"]
    assert card["model"]["class_names"][5] == "class_5"


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--factory-args", "six"], ["key=value pairs"]),
        (["--factory-args", "{bad json"], ["not valid JSON"]),
        (["--factory-args", '{"nope": 1}'], ["build(nope=1) raised TypeError", "--factory-args"]),
        (["--factory-args", "num_classes=6", "--classes", "5"], ["outputs 6 classes", "5"]),
        (["--classes", "missing.txt"], ["no such file"]),
        (["--mean", "1,2"], ["three numbers"]),
        (["--input-range", "0-255"], ["give them too"]),
    ],
    ids=["pairs", "json", "kwarg", "classes-count", "classes-file", "mean", "range"],
)
def test_byo_mistakes_are_one_line(model_file, tmp_path, capsys, extra, needles):
    code, _, err = _run(
        capsys, "--model", model_file / "net.py:build", "--res", "64x128",
        "--out", tmp_path / "o", *extra,
    )  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segexport: error: "), err
    for needle in needles:
        assert needle in lines[0]


def test_factory_args_for_a_zoo_model_is_refused(tmp_path, capsys):
    code, _, err = _run(
        capsys, "--model", "regseg_tiny", "--res", "64x128", "--factory-args", "a=1",
        "--out", tmp_path,
    )  # fmt: skip
    assert code == 2 and "file.py:factory" in err


def test_factory_args_are_parsed_never_evaluated():
    parse = user_model.parse_factory_args
    assert parse(['{"num_classes": 5, "pretrained": false}']) == {
        "num_classes": 5,
        "pretrained": False,
    }
    assert parse(["widths=[1, 2],name=abc,flag=true", "scale=0.5"]) == {
        "widths": [1, 2],
        "name": "abc",
        "flag": True,
        "scale": 0.5,
    }
    # text that would run code is only ever a string
    assert parse(["x=__import__('os').system('false')"]) == {
        "x": "__import__('os').system('false')"
    }
    with pytest.raises(SegDeployError, match="keyword argument name"):
        parse(['{"not a name": 1}'])
    with pytest.raises(SegDeployError, match="JSON object"):
        parse(["[1, 2]"])


def _card_stub():
    return {
        "model": {"family": "user", "num_classes": 3, "dataset": None, "class_names": []},
        "input": {"scale": 1 / 255.0, "mean": [0.5] * 3, "std": [0.5] * 3, "channel_order": "RGB"},
    }


def _flags(**kw):
    base = dict(mean=None, std=None, input_range=None, channel_order=None, classes=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_mean_std_in_either_unit_give_the_same_card():
    a = user_model.apply_flags(
        _card_stub(), _flags(mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    )
    b = user_model.apply_flags(
        _card_stub(), _flags(mean="123.675,116.28,103.53", std="58.395,57.12,57.375")
    )
    assert a["input"]["mean"] == pytest.approx(b["input"]["mean"])
    assert a["input"]["std"] == pytest.approx(b["input"]["std"])
    # raw 0..255 pixels, no normalization: only expressible with --input-range
    c = user_model.apply_flags(_card_stub(), _flags(mean="0", std="1", input_range="0-255"))
    assert c["input"]["std"] == pytest.approx([1 / 255.0] * 3) and c["input"]["mean"] == [0, 0, 0]
    with pytest.raises(SegDeployError, match="positive"):
        user_model.apply_flags(_card_stub(), _flags(std="0,1,1"))


def test_quiet_prints_only_the_result_line_and_verbose_the_card(tmp_path, capsys):
    code, out, err = _run(
        capsys, "-q", "--model", "regseg_tiny", "--res", "64x128", "--out", tmp_path / "q"
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path / "q" / "regseg_tiny.ort"))
    assert "label agreement with PyTorch" in lines[0]
    code, out, _ = _run(
        capsys, "-v", "--model", "regseg_tiny", "--res", "64x128", "--out", tmp_path / "v"
    )
    assert code == 0
    assert '"channel_order": "RGB"' in out and "parity_fp32: {" in out and "[1/" in out


def test_onnx_graph_takes_the_same_flags(model_file, tmp_path, capsys):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("net", str(model_file / "net.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    raw = tmp_path / "raw.onnx"
    with torch.no_grad():
        torch.onnx.export(
            mod.build(num_classes=6).eval(), (torch.zeros(1, 3, 64, 128),), str(raw), dynamo=False
        )
    code, text, err = _run(
        capsys, "--onnx", raw, "--classes", model_file / "names.txt", "--bgr",
        "--mean", "0.5", "--std", "0.25", "--out", tmp_path / "o",
    )  # fmt: skip
    assert code == 0, err
    card = _card(tmp_path / "o", "raw")
    assert card["model"]["class_names"] == NAMES and card["input"]["channel_order"] == "BGR"
    assert card["input"]["mean"] == pytest.approx([0.5] * 3)
    assert card["input"]["std"] == pytest.approx([0.25] * 3)


def test_prepare_finds_the_logits_in_tuples_and_dicts():
    import torch

    class Heads(torch.nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.kind = kind

        def forward(self, x):
            y = self.conv(x)
            if self.kind == "tuple":
                return y, y * 2
            if self.kind == "one-key":
                return {"seg": y}
            return {"a": y, "b": y}

    said = []
    model, classes, facts = user_model.prepare(Heads("tuple").eval(), 32, 64, said.append)
    assert classes == 4 and facts["resolution"] == "1/2" and "first element" in said[0]
    with torch.no_grad():
        assert tuple(model(torch.zeros(1, 3, 32, 64)).shape) == (1, 4, 32, 64)
    _, _, facts = user_model.prepare(Heads("one-key").eval(), 32, 64)
    assert "'seg'" in facts["output"]
    with pytest.raises(SegDeployError, match="no 'out'"):
        user_model.prepare(Heads("two-keys").eval(), 32, 64)
