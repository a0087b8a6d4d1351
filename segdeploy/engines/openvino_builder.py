"""An OpenVINO engine for this CPU: the ONNX graph (FP32 or INT8 Q/DQ) saved as OpenVINO IR.

    build_openvino_engine("regseg.int8.onnx", "regseg.int8.xml", card, precision="f32")

The IR (``.xml`` topology + ``.bin`` weights, weights kept in their own type: no FP16
compression) carries the model card in its rt_info and in the sidecar ``<file>.xml.json``; the
card's ``engine`` section records the inference precision (``f32`` / ``bf16``; the Q/DQ layers of
an INT8 graph run INT8 either way), threads and performance hint that ``OpenVinoEngine`` then
uses by default. Both files appear together or not at all. Python 3.6 compatible.
"""

import os
import shutil
import tempfile
import time

from .. import card as card_mod
from .._deps import require
from ..errors import EngineError
from .onnxruntime_builder import cpu_isa, cpu_name

PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16"}
CARD_RT_KEY = "segdeploy_card"


def inference_precision(variant):
    """OpenVINO's inference precision for a segdeploy precision name: ``bf16`` and ``int8+bf16``
    (the INT8 graph) compute what is not INT8 in bf16, every other name in f32."""
    return "bf16" if variant in ("bf16", "int8+bf16") else "f32"


def cpu_has_bf16(core=None):
    """True when OpenVINO reports native bf16 on the CPU (AVX512_BF16 / AMX)."""
    try:
        return "BF16" in (core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") or [])
    except Exception:
        return False


def build_openvino_engine(
    onnx_path, xml_path, card, precision="f32", threads=None, hint="latency", log=print
):
    """Convert ``onnx_path`` to IR at ``xml_path`` (+ ``.bin``, + sidecar); returns the sidecar."""
    ov = require("openvino", "building OpenVINO engines (pip install 'segdeploy[openvino]')")

    if precision not in PRECISIONS:
        raise EngineError("OpenVINO precision must be f32 or bf16, got {!r}".format(precision))
    precision = PRECISIONS[precision]
    core = ov.Core()
    if precision == "bf16" and not cpu_has_bf16(core):
        raise EngineError(
            "this CPU has no native bf16 (AVX512_BF16 or AMX); build the f32 engine instead"
        )
    if not xml_path.endswith(".xml"):
        raise EngineError("an OpenVINO IR file name ends in .xml, got {}".format(xml_path))
    start = time.perf_counter()
    model = core.read_model(onnx_path)
    engine = {
        "backend": "openvino",
        "format": "ir",
        "precision": card.get("precision", "fp32"),
        "inference_precision": precision,
        "threads": threads,
        "hint": hint,
        "device": {"kind": "cpu", "name": cpu_name(), "isa": cpu_isa(), "cores": os.cpu_count()},
        "versions": {"openvino": ov.__version__},
        "source_onnx": os.path.basename(onnx_path),
    }
    sidecar = card_mod.with_engine(card, engine)
    model.set_rt_info(card_mod.to_json(sidecar), [CARD_RT_KEY])
    bin_path = xml_path[: -len(".xml")] + ".bin"
    directory = os.path.dirname(os.path.abspath(xml_path))
    tmpdir = tempfile.mkdtemp(prefix=".segdeploy-ov-", dir=directory)
    try:
        tmp_xml = os.path.join(tmpdir, "model.xml")
        ov.save_model(model, tmp_xml, compress_to_fp16=False)
        engine["build_seconds"] = round(time.perf_counter() - start, 3)
        # weights first: an .xml at its final name always has its .bin
        os.replace(os.path.join(tmpdir, "model.bin"), bin_path)
        os.replace(tmp_xml, xml_path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    card_mod.write_sidecar(xml_path, sidecar)
    log(
        "      {} + {} (OpenVINO {} IR, {} inference)".format(
            xml_path, os.path.basename(bin_path), ov.__version__, precision
        )
    )
    return sidecar
