"""Serving on this machine: ``segserve`` starts a real Triton Inference Server for an exported
model (``cli``), from the server it finds (``install``), on a repository that server can load
(``repository``), as one process group it always stops whole (``process``).

Nothing here imports at package import time beyond the standard library. Python 3.6 compatible.
"""
