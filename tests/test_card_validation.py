"""The one strict card validator: every malformed card is one SegDeployError, never a crash.

Hand-picked cases from the audit (deep nesting, non-UTF-8, height "abc", a mean of length 2, a
palette of strings, std 0, NaN scale, classes out of range, a card that disagrees with the
graph), then hypothesis: arbitrary JSON, mutated valid cards and arbitrary bytes only ever give
SegDeployError, and a card that passes is one the runtime's consumers can use.
"""

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segdeploy import card as card_mod
from segdeploy.engines.profiles import profile_from_card
from segdeploy.errors import SegDeployError


def valid_card(kind="labels", classes=19):
    return {
        "schema": card_mod.SCHEMA,
        "model": {
            "name": "regseg",
            "family": "regseg",
            "num_classes": classes,
            "dataset": None,
            "class_names": ["c{}".format(i) for i in range(classes)],
            "palette": [[i % 256, 255 - i % 256, (7 * i) % 256] for i in range(classes)],
        },
        "input": {
            "name": "image",
            "layout": "NCHW",
            "channel_order": "RGB",
            "dtype": "float32",
            "scale": 1 / 255.0,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "height": 128,
            "width": 256,
            "dynamic": None,
            "stride": 16,
        },
        "output": {"name": kind, "kind": kind, "dtype": "int64", "resolution": "input"},
        "provenance": {},
        "parity": {},
    }


def test_a_valid_card_passes_and_round_trips():
    card = valid_card()
    assert card_mod.from_json(card_mod.to_json(card)) == card
    assert card_mod.from_json(card_mod.to_json(card).encode("utf-8")) == card


def _set(path, value):
    def mutate(card):
        section, key = path.split(".")
        card[section][key] = value

    return mutate


BAD = [
    ("height abc", _set("input.height", "abc"), "input.height"),
    ("height 0", _set("input.height", 0), "input.height"),
    ("height float", _set("input.height", 128.0), "input.height"),
    ("width huge", _set("input.width", 10**9), "input.width"),
    ("mean of 2", _set("input.mean", [0.5, 0.5]), "input.mean"),
    ("mean of strings", _set("input.mean", ["a", "b", "c"]), "input.mean"),
    ("std 0", _set("input.std", [0.2, 0.0, 0.2]), "input.std"),
    ("std negative", _set("input.std", [0.2, -1.0, 0.2]), "input.std"),
    ("scale 0", _set("input.scale", 0), "input.scale"),
    ("scale string", _set("input.scale", "1/255"), "input.scale"),
    ("stride 0", _set("input.stride", 0), "input.stride"),
    ("channel order", _set("input.channel_order", "RGBA"), "channel_order"),
    ("layout", _set("input.layout", "NHWC"), "input.layout"),
    ("classes 0", _set("model.num_classes", 0), "model.num_classes"),
    ("classes -3", _set("model.num_classes", -3), "model.num_classes"),
    ("classes 300", _set("model.num_classes", 300), "model.num_classes"),
    ("classes bool", _set("model.num_classes", True), "model.num_classes"),
    ("classes string", _set("model.num_classes", "19"), "model.num_classes"),
    ("palette strings", _set("model.palette", ["red", "green"]), "model.palette"),
    ("palette 256+", _set("model.palette", [[300, 0, 0]]), "model.palette"),
    ("palette pairs", _set("model.palette", [[1, 2]] * 19), "model.palette"),
    ("class names short", _set("model.class_names", ["a"]), "class_names"),
    ("name empty", _set("model.name", ""), "model.name"),
    ("kind", _set("output.kind", "probabilities"), "output.kind"),
    ("output name", _set("output.name", 5), "output.name"),
    (
        "dynamic order",
        _set("input.dynamic", {"min": [64, 64], "opt": [32, 32], "max": [128, 128]}),
        "min <= opt <= max",
    ),
    (
        "dynamic shape",
        _set("input.dynamic", {"min": [64], "opt": [64, 64], "max": [64, 64]}),
        "input.dynamic",
    ),
    ("section not object", lambda card: card.update(input=5), "input must be an object"),
]


@pytest.mark.parametrize("mutate,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_fields_are_one_line(mutate, needle):
    card = valid_card()
    mutate(card)
    with pytest.raises(SegDeployError) as info:
        card_mod.from_json(json.dumps(card), "x.onnx.json")
    text = str(info.value)
    assert needle in text and len(text.splitlines()) == 1, text


def test_nan_scale_and_infinite_std_are_refused():
    text = card_mod.to_json(valid_card()).replace('"scale": 0.00392156862745098', '"scale": NaN')
    assert "NaN" in text
    with pytest.raises(SegDeployError, match="not valid JSON: NaN"):
        card_mod.from_json(text)
    card = valid_card()
    card["input"]["std"] = [0.2, math.inf, 0.2]
    with pytest.raises(SegDeployError, match="input.std"):
        card_mod.validate(card)


def test_logits_cards_may_have_more_than_255_classes_labels_not():
    card_mod.validate(valid_card("logits", 300))
    with pytest.raises(SegDeployError, match=r"1\.\.255"):
        card_mod.validate(valid_card("labels", 300))


def test_deep_nesting_is_one_line_not_recursion_error():
    deep = '{"schema": "segdeploy.card/1", "model": ' + "[" * 100000 + "]" * 100000 + "}"
    with pytest.raises(SegDeployError, match="nests deeper"):
        card_mod.from_json(deep)
    shallow_but_deep = valid_card()
    shallow_but_deep["provenance"] = {"a": [[[[[[[[[1]]]]]]]]]}
    with pytest.raises(SegDeployError, match="nests deeper"):
        card_mod.validate(shallow_but_deep)


def test_non_utf8_and_oversize_sidecars(tmp_path):
    engine = tmp_path / "m.ort"
    engine.write_bytes(b"x")
    (tmp_path / "m.ort.json").write_bytes(b'{"schema": "\xff\xfe"}')
    with pytest.raises(SegDeployError, match="not UTF-8"):
        card_mod.read_sidecar(str(engine))
    (tmp_path / "m.ort.json").write_bytes(b" " * (card_mod.MAX_CARD_BYTES + 10))
    with pytest.raises(SegDeployError, match="larger than"):
        card_mod.read_sidecar(str(engine))


def test_card_must_agree_with_the_graph():
    card = valid_card("logits")
    card_mod.validate(card, input_shape=(1, 3, 128, 256), output_shape=(1, 19, 128, 256))
    card_mod.validate(card, input_shape=(-1, 3, "h", "w"), output_shape=(-1, 19, -1, -1))
    with pytest.raises(SegDeployError, match="fixed at 64x128"):
        card_mod.validate(card, input_shape=(1, 3, 64, 128))
    with pytest.raises(SegDeployError, match="19 classes but the graph's logits have 21"):
        card_mod.validate(card, output_shape=(1, 21, 128, 256))
    with pytest.raises(SegDeployError, match="not N x 3 x H x W"):
        card_mod.validate(card, input_shape=(1, 4, 128, 256))
    with pytest.raises(SegDeployError, match=r"output is labels \(3-D\)"):
        card_mod.validate(valid_card("labels"), output_shape=(1, 19, 128, 256))


# --- property-based ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

PATHS = [
    (section, key)
    for section, body in valid_card().items()
    if isinstance(body, dict)
    for key in list(body) + ["extra"]
] + [(None, "schema"), (None, "model"), (None, "input"), (None, "output")]


def _consume(card):
    """What the runtime does with a card: none of it may fail with anything but SegDeployError."""
    from segdeploy.runtime.postprocess import Postprocessor, Visualizer, palette_from_card
    from segdeploy.runtime.preprocess import Preprocessor

    cin = card["input"]
    Preprocessor(
        cin["height"],
        cin["width"],
        cin["scale"],
        cin["mean"],
        cin["std"],
        cin["channel_order"],
        "BGR",
        "linear",
    )
    post = Postprocessor(card["output"]["kind"], min(card["model"]["num_classes"], 255))
    assert post.num_classes >= 1
    Visualizer(palette_from_card(card))
    profile = profile_from_card(card)
    assert all(v >= 1 for hw in profile for v in hw)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_fuzz_arbitrary_json_is_a_card_or_a_segdeploy_error(value):
    try:
        text = json.dumps(value)
    except ValueError:
        return
    try:
        card = card_mod.from_json(text)
    except SegDeployError:
        return
    _consume(card)


@FUZZ
@given(path=st.sampled_from(PATHS), value=json_values, kind=st.sampled_from(["labels", "logits"]))
def test_fuzz_mutated_cards_are_usable_or_a_segdeploy_error(path, value, kind):
    card = valid_card(kind)
    section, key = path
    target = card if section is None else card[section]
    target[key] = copy.deepcopy(value)
    try:
        checked = card_mod.from_json(json.dumps(card, allow_nan=True))
    except SegDeployError as exc:
        assert len(str(exc).splitlines()) == 1
        return
    _consume(checked)


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_are_a_segdeploy_error(data):
    with pytest.raises(SegDeployError):
        card_mod.from_json(data)
