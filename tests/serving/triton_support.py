"""Start and stop a real ``tritonserver`` on loopback for the serving tests.

Everything the server needs (the nvidia-pytriton install, its backend folder with the Python
backend's stub, libpython on ``LD_LIBRARY_PATH``, the process group and its clean stop) is
segserve's product code, ``segdeploy.serve``; this module only picks free ports and keeps a
model that fails to load from stopping the server (the tests check how clients see it).

Where the server is looked for: ``$SEGDEPLOY_TRITON_PYTHON`` (a python with nvidia-pytriton,
e.g. a ``.venv-triton`` made elsewhere), else where segserve looks (``.venv-triton`` of this
checkout, ...). ``missing_reason()`` says why none works (the tests skip with it). Imported by
the serving tests; defines no tests.
"""

import os

from segdeploy.errors import SegDeployError
from segdeploy.serve.install import ENV_VAR, find_server
from segdeploy.serve.process import TritonProcess, free_port

START_TIMEOUT_S = 90


def server_place():
    """The --server PATH the tests use (None: segserve's own search)."""
    return os.environ.get("SEGDEPLOY_TRITON_PYTHON") or os.environ.get(ENV_VAR) or None


def find():
    """(ServerInstall, None), or (None, why there is none)."""
    try:
        return find_server(server_place()), None
    except SegDeployError as exc:
        return None, "no tritonserver to test against: {}".format(exc)


def missing_reason():
    return find()[1]


class TritonServer(TritonProcess):
    """A tritonserver serving ``repository`` on 127.0.0.1, free ports, non-strict (use as a
    context manager)."""

    def __init__(self, repository, install=None):
        http_port = free_port()
        grpc_port = free_port()
        while grpc_port == http_port:
            grpc_port = free_port()
        TritonProcess.__init__(
            self,
            install or find()[0],
            repository,
            http_port=http_port,
            grpc_port=grpc_port,
            strict=False,
            extra_env={"OMP_NUM_THREADS": "1"},
            shm_prefix="segdeploy_test_{}_{}".format(os.getpid(), http_port),
        )

    def start(self, timeout=START_TIMEOUT_S):
        return TritonProcess.start(self, timeout)
