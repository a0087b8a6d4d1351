"""The memory an engine itself takes: measured around opening and running it, not the process's.

    probe = EngineMemory().start()     # before the engine is opened
    engine = open_engine(...)
    probe.opened()                     # after opening: weights, sessions, buffers
    ... run the protocol ...
    figures = probe.stop(device_kind)  # peak while open + running, minus the resident set before

The process peak (``ru_maxrss``) counts everything the process ever held: the PyTorch model a
sweep builds, an earlier engine, the import of torch itself. Instead, on Linux the kernel's
high-water mark (``VmHWM``) is reset to the current resident set just before the engine is opened
(``/proc/self/clear_refs``, value 5, Linux 4.0+), so the peak read afterwards is this engine's;
where that is not possible a background thread samples the resident set every few milliseconds.
Memory that an earlier engine freed is first handed back to the OS (glibc ``malloc_trim``) so
that the next engine's growth is not hidden in freed-but-kept pages.

On a CUDA device the free device memory is read before opening and at the end: the drop is the
device memory the engine holds (weights, activations, I/O buffers). Python 3.6 compatible.
"""

import ctypes
import os
import threading

MIB = 2.0**20


def current_rss_mb():
    """This process's resident set now, in MiB (None where /proc is missing)."""
    try:
        with open("/proc/self/statm", "r") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, AttributeError, IndexError):
        return None


def process_peak_mb():
    """The resident high-water mark (VmHWM) in MiB, None where unknown."""
    try:
        with open("/proc/self/status", "r") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak():
    """Reset VmHWM to the current resident set; True when the kernel allowed it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_heap():
    """Give freed heap pages back to the OS (glibc only; a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cuda_free_bytes():
    """Free memory of the current CUDA device in bytes, or None without a CUDA binding/device."""
    try:
        from ..engines import cuda_memory

        api = cuda_memory.api()
        if hasattr(api, "rt"):  # cuda-python
            free_total = api._check(api.rt.cudaMemGetInfo(), "memory info")
        else:  # pycuda, on the primary context the engines use
            free_total = api.cuda.mem_get_info()
        return int(free_total[0])
    except Exception:  # no binding, no driver, no device: device memory unknown
        return None


class _Sampler(threading.Thread):
    """Fallback where VmHWM cannot be reset: the largest resident set seen every ``interval`` s."""

    def __init__(self, interval=0.005):
        super(_Sampler, self).__init__(name="segbench-rss-sampler")
        self.daemon = True
        self.interval = interval
        self.peak = current_rss_mb() or 0.0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(self.interval):
            now = current_rss_mb()
            if now is not None and now > self.peak:
                self.peak = now

    def finish(self):
        self._halt.set()
        self.join()
        now = current_rss_mb()
        return max(self.peak, now or 0.0)


class EngineMemory(object):
    """Resident (and CUDA device) memory attributable to one engine: see the module docstring."""

    def __init__(self, cuda=False, scope="opening and running the engine"):
        self.cuda = cuda
        self.scope = scope
        self.before_mb = None
        self.opened_mb = None
        self.method = None
        self._sampler = None
        self._device_free_before = None

    def start(self):
        trim_heap()
        self.before_mb = current_rss_mb()
        if reset_peak() and process_peak_mb() is not None:
            self.method = "kernel high-water mark reset before opening"
        else:
            self._sampler = _Sampler()
            self._sampler.start()
            self.method = "resident set sampled every 5 ms"
        if self.cuda:
            self._device_free_before = cuda_free_bytes()
        return self

    def opened(self):
        self.opened_mb = current_rss_mb()
        return self

    def stop(self, device_kind="cpu"):
        """The figures as a dict (MiB): engine peak, growth from opening, resident set after."""
        if self._sampler is not None:
            peak = self._sampler.finish()
            self._sampler = None
        else:
            peak = process_peak_mb()
        after = current_rss_mb()
        before = self.before_mb
        figures = {
            "kind": "resident set added by {}: peak minus before".format(self.scope),
            "method": self.method,
            "peak_mb": None if peak is None or before is None else max(0.0, peak - before),
            "open_mb": None
            if self.opened_mb is None or before is None
            else max(0.0, self.opened_mb - before),
            "rss_before_mb": before,
            "rss_mb": after,
            "device_mb": None,
        }
        if device_kind == "cuda" and self._device_free_before is not None:
            free_now = cuda_free_bytes()
            if free_now is not None:
                figures["device_mb"] = max(0, self._device_free_before - free_now) / MIB
        return figures
