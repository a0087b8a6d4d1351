"""``segdeploy-check``: the device acceptance command (``python -m segdeploy.check``).

A list of steps (``runner.Step``), each ``run(ctx) -> data`` ending ok, failed or skipped with a
one-line reason, run in order without stopping at a failure and rendered once to JSON and
Markdown (``report``). The steps call the commands' functions: ``engine_steps`` (TensorRT:
segbuild, parity with ONNX Runtime, segbench, the uint8 head, Triton) and ``gpu_steps`` (the
D-block kernel and plugin, Table 1, the zoo on PyTorch, pinned memory). Device side: imports no
torch or onnx at import time; Python 3.6 compatible.
"""
