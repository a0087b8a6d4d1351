"""Host builds of the plugins' kernels: their ``__host__ __device__`` arithmetic compiled as plain
C++ with the system compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``), cached per user
under ``$SEGDEPLOY_CACHE`` or ``$XDG_CACHE_HOME/segdeploy`` (default ``~/.cache/segdeploy``),
keyed by the hash of the sources, the compiler, the flags and the CPU, written atomically, and
loaded with ctypes by each plugin's ``host.py``.

Python 3.6 compatible.
"""

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

from ..errors import MissingDependencyError, SegDeployError

FLAGS = ("-std=c++11", "-O3", "-ffp-contract=off", "-fPIC", "-shared", "-pthread")


class HostBuildError(SegDeployError):
    """The C++ compiler could not build a kernel's host library."""


def compiler(what="the kernels' host builds"):
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name:
            path = shutil.which(name)
            if path:
                return path
    raise MissingDependencyError(
        "{} needs a C++ compiler and none was found; install one (e.g. apt-get install g++) "
        "or set CXX to its path".format(what)
    )


def cache_root():
    """Per-user directory under which compiled host libraries are kept."""
    root = os.environ.get("SEGDEPLOY_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "segdeploy")
    return root


def cpu_tag():
    """What -march=native depends on, so that a cache shared by two CPUs never mixes builds."""
    tag = platform.machine()
    try:
        with open("/proc/cpuinfo", "r") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    tag += "|" + line.strip()
                    if line.startswith(("flags", "Features")):
                        break
    except OSError:
        pass
    return tag


def native_flags(cxx):
    """-march=native where the compiler takes it (hardware fmaf instead of a libm call)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("int main() { return 0; }\n")
        try:
            proc = subprocess.run(
                [cxx, "-march=native", src, "-o", os.path.join(tmp, "probe")],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError:
            return ()
    return ("-march=native",) if proc.returncode == 0 else ()


def compiler_version(cxx):
    try:
        proc = subprocess.run([cxx, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise MissingDependencyError(
            "the C++ compiler {} cannot be run ({}); install g++ or set CXX".format(cxx, exc)
        ) from None
    return proc.stdout


def build_cached(here, sources, main, stem, directory, kernel, verbose=False):
    """Compile ``here/main`` (hashing every file of ``sources``) into
    ``directory/lib<stem>-<key>.so`` unless the cache has it; return its path. ``kernel`` names
    it in errors ("D-block": "the D-block host library")."""
    cxx = compiler("the {} host build".format(kernel))
    flags = FLAGS + native_flags(cxx)
    digest = hashlib.sha256()
    for name in sources:
        with open(os.path.join(here, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read() + b"\0")
    digest.update(compiler_version(cxx))
    digest.update(" ".join(flags).encode())
    digest.update(cpu_tag().encode())
    path = os.path.join(directory, "lib{}-{}.so".format(stem, digest.hexdigest()[:24]))
    if os.path.exists(path):
        return path
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise HostBuildError(
            "cannot create the cache directory {} ({}); set SEGDEPLOY_CACHE to a writable "
            "directory".format(directory, exc.strerror or exc)
        ) from None
    fd, tmp = tempfile.mkstemp(prefix=".lib{}-".format(stem), suffix=".so.tmp", dir=directory)
    os.close(fd)
    cmd = [cxx] + list(flags) + [os.path.join(here, main), "-o", tmp]
    try:
        if verbose:
            print(" ".join(cmd))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
            raise HostBuildError(
                "{} failed to compile the {} host library: {}".format(
                    os.path.basename(cxx), kernel, lines[0] if lines else "no output"
                )
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)  # atomic: a concurrent build of the same key just wins or loses
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
