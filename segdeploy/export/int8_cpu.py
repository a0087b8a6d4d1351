"""Whether the INT8 graph's weights use 7 bits (``reduce_range``): decided by the host CPU.

On x86 without VNNI (AVX512_VNNI, AVX-VNNI or AMX-INT8), ONNX Runtime's and OpenVINO's INT8 CPU
kernels multiply unsigned 8-bit activations by signed 8-bit weights with ``vpmaddubsw``, which
adds each pair of products into a *saturating int16*: 255 * 127 * 2 = 64770 > 32767. With 7-bit
weights (-64..64) a pair stays below 255 * 64 * 2 = 32640, so nothing saturates; ONNX Runtime's
quantization docs recommend ``reduce_range=True`` on such CPUs for this reason. VNNI
(``vpdpbusd``) and ARM's dot products accumulate in int32 and need no such care, so there the
weights keep their 8 bits (the graph is the one exported on VNNI machines before).

Measured on the tiny RegSeg of tests/export/test_int8.py (AMD EPYC, AVX2, no VNNI; 128x256;
4 held-out frames), the full INT8 graph's labels against FP32's, per-channel weights:

- exact Q/DQ arithmetic (ONNX Runtime, graph optimizations off: DequantizeLinear + FP32 Conv):
  99.08 % agreement; the same graph on ONNX Runtime's INT8 kernels: 98.64 % (OpenVINO 98.59 %);
  logits of the INT8 kernels against the exact arithmetic: 12.3 % relative RMS error;
- 7-bit weights on the INT8 kernels: 99.05 % (OpenVINO 99.05 %); 5.6 % relative RMS error
  against their exact arithmetic.

Either way the graph is what TensorRT's parser takes (``engines.parser_rules``): INT8
initializers, zero point 0; activations keep their 8 bits. A graph exported with 7-bit weights
costs a GPU some weight precision, which the model card says (``quantization.reduce_range``).
SEGDEPLOY_INT8_REDUCE_RANGE=on|off overrides the detection (e.g. ``off`` when exporting on an old
CPU for a TensorRT target only).
"""

import os
import platform

REDUCE_RANGE_VARIABLE = "SEGDEPLOY_INT8_REDUCE_RANGE"
# /proc/cpuinfo flags of the x86 int8 dot-product instructions that accumulate in int32
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_flags():
    """The CPU's feature flags: Linux /proc/cpuinfo, else NumPy's dispatch table (which knows
    AVX512VNNI but not AVX-VNNI or AMX); None when neither says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            from numpy.core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return None
    flags = set(name.lower() for name, on in features.items() if on)
    if "avx512vnni" in flags:
        flags.add("avx512_vnni")
    return flags


def reduce_range_choice(flags=None, machine=None, override=None):
    """{"enabled": bool, "reason": one sentence, "vnni": [flags found] or None}.

    ``flags``/``machine``/``override`` default to this host's /proc/cpuinfo flags,
    ``platform.machine()`` and the SEGDEPLOY_INT8_REDUCE_RANGE variable.
    """
    if override is None:
        override = os.environ.get(REDUCE_RANGE_VARIABLE, "")
    override = override.strip().lower()
    if override in ("on", "1", "true", "yes"):
        return {"enabled": True, "reason": REDUCE_RANGE_VARIABLE + "=" + override, "vnni": None}
    if override in ("off", "0", "false", "no"):
        return {"enabled": False, "reason": REDUCE_RANGE_VARIABLE + "=" + override, "vnni": None}
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine not in _X86:
        return {
            "enabled": False,
            "reason": "host CPU is {} (not x86): its INT8 dot products accumulate in int32".format(
                machine or "unknown"
            ),
            "vnni": None,
        }
    flags = cpu_flags() if flags is None else set(flags)
    found = sorted(f for f in VNNI_FLAGS if f in (flags or ()))
    if found:
        return {
            "enabled": False,
            "reason": "host CPU has VNNI ({}): INT8 dot products accumulate in int32".format(
                ", ".join(found)
            ),
            "vnni": found,
        }
    return {
        "enabled": True,
        "reason": "host CPU has no VNNI{}: its INT8 kernels (vpmaddubsw) saturate at int16 "
        "with 8-bit weights, so the weights use 7 bits (-64..64)".format(
            "" if flags is not None else " (its flags could not be read)"
        ),
        "vnni": [],
    }
