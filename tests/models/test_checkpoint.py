import pickle

import pytest
import torch

from segdeploy.errors import CheckpointError
from segdeploy.models import build, load_checkpoint
from segdeploy.models.checkpoint import describe_mismatch, sha256_file


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    model = build("regseg_tiny")
    for p in model.parameters():
        p.data.normal_()
    return model


def _same(a, b):
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd, "epoch": 3},
        lambda sd: {"state_dict": sd},
        lambda sd: {"model_state": sd, "optimizer_state": {}, "best_score": 0.7},
        lambda sd: {"module." + k: v for k, v in sd.items()},
        lambda sd: {"model": {"module." + k: v for k, v in sd.items()}},
    ],
    ids=["plain", "model", "state_dict", "model_state", "module-prefix", "model+module"],
)
def test_official_wrappings_load_strictly(tmp_path, source, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(source.state_dict()), path)
    target = build("regseg_tiny")
    assert not _same(source, target)
    load_checkpoint(target, str(path))
    assert _same(source, target)
    assert target.segdeploy_checkpoint_sha256 == sha256_file(str(path))


class NotATensor:
    pass


def test_weights_only_refuses_pickled_objects_unless_allowed(tmp_path, source):
    path = tmp_path / "unsafe.pth"
    torch.save({"model": source.state_dict(), "args": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(build("regseg_tiny"), str(path))
    target = load_checkpoint(build("regseg_tiny"), str(path), allow_unsafe_pickle=True)
    assert _same(source, target)


def test_class_count_mismatch_hints_num_classes(tmp_path):
    path = tmp_path / "camvid.pth"
    torch.save({"model": build("regseg_tiny", num_classes=11).state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(build("regseg_tiny"), str(path))
    message = str(info.value)
    assert "decoder.classifier.weight checkpoint [11, 64, 1, 1] vs model [19, 64, 1, 1]" in message
    assert "pass num_classes=11" in message


def test_missing_and_unexpected_keys_are_listed():
    model_sd = {"a.weight": torch.zeros(2), "b.weight": torch.zeros(2)}
    ckpt_sd = {"a.weight": torch.zeros(2), "c.weight": torch.zeros(2)}
    text = describe_mismatch(model_sd, ckpt_sd)
    assert "1 missing key(s): b.weight" in text
    assert "1 unexpected key(s): c.weight" in text
    assert describe_mismatch(model_sd, dict(model_sd)) == ""


def test_other_architecture_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(build("regseg_tiny"), str(path))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(build("regseg_tiny"), str(tmp_path / "nope.pth"))


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(build("regseg_tiny"), str(path))


def test_no_state_dict_inside(tmp_path):
    path = tmp_path / "empty.pth"
    with open(path, "wb") as f:
        pickle.dump({"epoch": 3}, f)
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        load_checkpoint(build("regseg_tiny"), str(path))
