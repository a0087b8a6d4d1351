"""segexport end to end, on this machine (ONNX Runtime CPU), at small resolutions."""

import json
import os
import stat

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from segdeploy import card as card_mod
from segdeploy.engines import tensorrt_status
from segdeploy.export.cli import main
from segdeploy.models import build, get_spec, list_models

# the smallest export: every flag test starts from it
TINY = ("--model", "regseg_tiny", "--res", "64x128")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segexport: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def regseg_export(tmp_path_factory):
    """regseg with a checkpoint saved from segdeploy.models.build, exported at 128x256."""
    out = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build("regseg")
    for m in model.modules():  # non-trivial BN statistics so folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    ckpt = out / "regseg.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    code = main(
        [
            "--model",
            "regseg",
            "--checkpoint",
            str(ckpt),
            "--res",
            "128x256",
            "--out",
            str(out / "o"),
            "--fp16",
            "--backend",  # the ONNX Runtime engine is what these tests inspect
            "onnxruntime",
        ]
    )
    assert code == 0
    return out / "o", model


def test_onnx_is_verified_clean_and_carries_the_card(regseg_export):
    out, _ = regseg_export
    proto = onnx.load(str(out / "regseg.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops
    assert not ops & {"SplitToSequence", "ConcatFromSequence", "SequenceAt", "Shape"}
    assert ops >= {"Conv", "Split", "ArgMax"}
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["labels"]
    meta = {p.key: p.value for p in proto.metadata_props}
    card = card_mod.from_json(meta[card_mod.METADATA_KEY])
    assert card["model"]["name"] == "regseg" and card["model"]["num_classes"] == 19
    assert card["input"]["height"] == 128 and card["input"]["stride"] == 16
    assert card["output"]["kind"] == "labels"
    assert card["provenance"]["checkpoint_sha256"] and not card["provenance"]["random_weights"]
    assert card["parity"]["fp32"]["label_agreement"] >= 0.999
    assert card_mod.read_sidecar(str(out / "regseg.onnx")) == card


def test_checkpoint_labels_agree_with_pytorch_argmax(regseg_export):
    out, model = regseg_export
    rng = np.random.RandomState(1)
    x = rng.randn(1, 3, 128, 256).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).argmax(1).numpy()
    labels = ort.InferenceSession(str(out / "regseg.onnx")).run(None, {"image": x})[0]
    assert labels.shape == (1, 128, 256)
    assert (labels == ref).mean() >= 0.999


def test_report_and_ort_engine(regseg_export):
    out, _ = regseg_export
    report = json.loads((out / "report.json").read_text())
    fp32 = report["parity_fp32"]
    assert fp32["label_agreement"] >= 0.999 and fp32["max_rel_logit_error"] < 1e-3
    assert len(fp32["per_class_iou"]) == 19
    assert "parity_fp16" in report and report["parity_fp16"]["label_agreement"] > 0.9
    assert report["engine"]["backend"] == "onnxruntime"
    engine = out / "regseg.ort"
    sidecar = card_mod.read_sidecar(str(engine))
    assert sidecar["engine"]["session"]["graph_optimization_level"] == "all"
    # With tensor_split's sequence ops the optimized graph had 59 ReorderInput nodes; the
    # constant Split keeps more of the graph in ONNX Runtime's blocked layout.
    reorders = sidecar["engine"]["layout_reorders"]
    assert 0 < reorders["ReorderInput"] < 59
    assert "SplitToSequence" not in sidecar["engine"]["optimized_ops"]
    # the CPU engine stops at the stride-4 logits; its card tells the runtime's fused head how
    # the graph's Resize + ArgMax (still in regseg.onnx) upsampled them
    session = ort.InferenceSession(str(engine))
    x = np.zeros((1, 3, 128, 256), np.float32)
    assert session.run(None, {"image": x})[0].shape == (1, 19, 32, 64)
    assert sidecar["output"]["head"]["kind"] == "fused"
    assert sidecar["output"]["head"]["size"] == [128, 256]


def test_fp16_graph_is_typed_half_with_fp32_io(regseg_export):
    out, _ = regseg_export
    proto = onnx.load(str(out / "regseg.fp16.onnx"))
    half = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    assert half > 100
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    producer = {o: n for n in proto.graph.node for o in n.output}
    argmax = producer["labels"]
    final_resize = producer[argmax.input[0]]
    assert final_resize.op_type == "Resize"
    # the final upsample runs on fp32 logits: its data input is a Cast to fp32
    cast = producer[final_resize.input[0]]
    assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("name", list_models())
def test_every_model_exports_and_verifies(tmp_path, capsys, name):
    stride = get_spec(name).stride
    res = "{}x{}".format(2 * stride if stride >= 32 else 64, 4 * stride if stride >= 32 else 128)
    code, out, err = _run(
        capsys, "--model", name, "--res", res, "--out", tmp_path, "--verify-inputs", 1
    )
    assert code == 0, err
    assert "label agreement" in out and "WARNING: no --checkpoint" in out
    assert (tmp_path / (name + ".onnx")).is_file()
    # the CPU engine is the fastest measured here: ONNX Runtime (.ort) or OpenVINO IR (.xml)
    assert any((tmp_path / (name + s)).is_file() for s in (".ort", ".xml"))
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_dynamic_export_runs_at_two_sizes(tmp_path, capsys):
    code, _, err = _run(
        capsys,
        "--model",
        "regseg_tiny",
        "--dynamic",
        "64x128:128x256",
        "--out",
        tmp_path,
        "--verify-inputs",
        1,
    )
    assert code == 0, err
    session = ort.InferenceSession(str(tmp_path / "regseg_tiny.onnx"))
    for h, w in ((64, 128), (128, 256)):
        x = np.zeros((1, 3, h, w), np.float32)
        assert session.run(None, {"image": x})[0].shape == (1, h, w)
    card = card_mod.read_sidecar(str(tmp_path / "regseg_tiny.onnx"))
    assert card["input"]["dynamic"] == {"min": [64, 128], "opt": [128, 256], "max": [128, 256]}


def test_logits_output(tmp_path, capsys):
    code, _, err = _run(
        capsys,
        *TINY,
        "--output",
        "logits",
        "--out",
        tmp_path,
        "--verify-inputs",
        1,
    )
    assert code == 0, err
    proto = onnx.load(str(tmp_path / "regseg_tiny.onnx"))
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert "ArgMax" not in {n.op_type for n in proto.graph.node}


def test_print_trtexec_works_without_tensorrt(tmp_path, capsys):
    code, out, err = _run(
        capsys,
        *TINY,
        "--out",
        tmp_path,
        "--backend",
        "tensorrt",
        "--fp16",
        "--print-trtexec",
        "--verify-inputs",
        1,
    )
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("trtexec "))
    assert "--onnx={}".format(tmp_path / "regseg_tiny.onnx") in line
    assert "--saveEngine={}".format(tmp_path / "regseg_tiny.plan") in line
    assert "--fp16" in line and "--timingCacheFile=" in line


@pytest.mark.skipif(tensorrt_status()[0], reason="TensorRT is usable here")
def test_backend_tensorrt_without_tensorrt_is_one_line(tmp_path, capsys):
    code, out, err = _run(
        capsys,
        *TINY,
        "--out",
        tmp_path,
        "--backend",
        "tensorrt",
    )
    _one_line_error(code, err, "--backend tensorrt cannot build here")
    assert not list(tmp_path.iterdir())


def test_verification_failure_keeps_only_a_failed_artifact(tmp_path, capsys):
    user = tmp_path / "liar.py"
    user.write_text(
        "import torch\n"
        "class Liar(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 1)\n"
        "    def forward(self, x):\n"
        "        for _ in range(int(x.shape[0])):  # torch.fx cannot trace this: no folding\n"
        "            y = self.conv(x)\n"
        "        # the traced graph computes something else than eager PyTorch\n"
        "        return y.neg() if torch.onnx.is_in_onnx_export() else y\n"
        "def make():\n"
        "    return Liar()\n"
    )
    out = tmp_path / "out"
    code, _, err = _run(
        capsys,
        "--model",
        "{}:make".format(user),
        "--res",
        "32x32",
        "--stride",
        "1",
        "--out",
        out,
        "--verify-inputs",
        1,
    )
    _one_line_error(code, err, "disagrees with PyTorch", "label agreement")
    assert (out / "liar.onnx.failed").is_file()
    assert not (out / "liar.onnx").exists() and not (out / "liar.ort").exists()


def test_bring_your_own_onnx(tmp_path, capsys):
    code, _, err = _run(
        capsys,
        *TINY,
        "--out",
        tmp_path / "a",
        "--verify-inputs",
        1,
    )
    assert code == 0, err
    code, out, err = _run(
        capsys,
        "--onnx",
        tmp_path / "a" / "regseg_tiny.onnx",
        "--out",
        tmp_path / "b",
        "--name",
        "mine",
        "--backend",
        "onnxruntime",
    )
    assert code == 0, err
    assert "parity not verified" in out
    assert (tmp_path / "b" / "mine.ort").is_file()


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--model", "regsge"], ["unknown model 'regsge'", "did you mean 'regseg'"]),
        (["--model", "regseg_tiny", "--checkpoint", "/nonexistent.pth"], ["does not exist"]),
        (["--model", "regseg_tiny", "--res", "100x200"], ["not divisible", "96x192"]),
        (["--model", "regseg_tiny", "--res", "64x128", "--opset", "99"], ["--opset 99"]),
        (
            [
                *TINY,
                "--opset",
                "17",
                "--backend",
                "tensorrt",
                "--print-trtexec",
                "--trt-version",
                "8.2",
            ],
            ["TensorRT 8.2 parses", "--opset 13"],
        ),
        (["--onnx", __file__], ["is not a valid ONNX model"]),
        ([], ["give --model"]),
    ],
    ids=["unknown", "missing-ckpt", "stride", "opset", "opset-trt82", "not-onnx", "nothing"],
)
def test_user_mistakes_are_one_line(tmp_path, capsys, argv, needles):
    code, _, err = _run(capsys, *(argv + ["--out", tmp_path / "o"]))
    _one_line_error(code, err, *needles)
    out = tmp_path / "o"
    assert not out.exists() or not list(out.iterdir())


def test_corrupt_and_mismatched_checkpoints(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00" * 100)
    code, _, err = _run(
        capsys,
        "--model",
        "regseg_tiny",
        "--checkpoint",
        corrupt,
        "--res",
        "64x128",
        "--out",
        tmp_path / "o",
    )
    _one_line_error(code, err, "cannot read checkpoint")
    camvid = tmp_path / "camvid.pth"
    torch.save(build("regseg_tiny", num_classes=11).state_dict(), camvid)
    code, _, err = _run(
        capsys,
        "--model",
        "regseg_tiny",
        "--checkpoint",
        camvid,
        "--res",
        "64x128",
        "--out",
        tmp_path / "o",
    )
    _one_line_error(code, err, "pass num_classes=11")
    code, _, err = _run(
        capsys,
        "--model",
        "regseg_tiny",
        "--checkpoint",
        camvid,
        "--num-classes",
        "11",
        "--res",
        "64x128",
        "--out",
        tmp_path / "o",
        "--verify-inputs",
        1,
    )
    assert code == 0, err
    assert (
        card_mod.read_sidecar(str(tmp_path / "o" / "regseg_tiny.onnx"))["model"]["dataset"]
        == "camvid"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    code, _, err = _run(capsys, *TINY, "--out", locked)
    _one_line_error(code, err, "not writable")


def test_uncreatable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(capsys, *TINY, "--out", blocker / "sub")
    _one_line_error(code, err, "cannot create output directory")


@pytest.mark.parametrize("name", [n for n in list_models() if not get_spec(n).dynamic_shapes])
def test_dynamic_export_refused_where_the_graph_cannot_follow_the_size(tmp_path, capsys, name):
    s = max(get_spec(name).stride, 32)
    code, _, err = _run(
        capsys,
        "--model",
        name,
        "--dynamic",
        "{}x{}:{}x{}".format(s, 2 * s, 2 * s, 4 * s),
        "--out",
        tmp_path,
    )
    _one_line_error(code, err, "cannot be exported with --dynamic")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name", [n for n in list_models() if get_spec(n).tiny and get_spec(n).dynamic_shapes]
)
def test_dynamic_graph_matches_pytorch_at_another_size(tmp_path, capsys, name):
    s = max(get_spec(name).stride, 32)
    torch.manual_seed(0)
    model = build(name)
    ckpt = tmp_path / "ckpt.pth"
    torch.save(model.state_dict(), ckpt)
    code, _, err = _run(
        capsys,
        "--model",
        name,
        "--checkpoint",
        ckpt,
        "--dynamic",
        "{}x{}:{}x{}".format(2 * s, 2 * s, 4 * s, 4 * s),
        "--res",
        "{}x{}".format(2 * s, 2 * s),
        "--out",
        tmp_path,
        "--verify-inputs",
        1,
    )
    assert code == 0, err
    session = ort.InferenceSession(str(tmp_path / (name + ".onnx")))
    x = np.random.RandomState(0).randn(1, 3, 4 * s, 3 * s).astype(np.float32)  # not the export size
    labels = session.run(None, {"image": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).argmax(1).numpy()
    assert labels.shape == ref.shape == (1, 4 * s, 3 * s)
    assert (labels == ref).mean() > 0.999


def test_verification_on_user_images(tmp_path, capsys):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.RandomState(0)
    for i, (h, w) in enumerate([(100, 180), (64, 128)]):  # any size: resized to the export's
        cv2.imwrite(str(images / "frame{}.png".format(i)), rng.randint(0, 256, (h, w, 3), np.uint8))
    (images / "notes.txt").write_text("not an image")
    code, out, err = _run(
        capsys,
        *TINY,
        "--out",
        tmp_path / "o",
        "--images",
        images,
        "--verify-inputs",
        1,
    )
    assert code == 0, err
    assert "on 3 inputs" in out  # 1 random + 2 images
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["parity_fp32"]["inputs"] == 3


def test_images_directory_without_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(
        capsys,
        *TINY,
        "--out",
        tmp_path / "o",
        "--images",
        tmp_path / "empty",
    )
    _one_line_error(code, err, "holds no .png/.jpg/.bmp images")
    assert not (tmp_path / "o" / "regseg_tiny.onnx").exists()
