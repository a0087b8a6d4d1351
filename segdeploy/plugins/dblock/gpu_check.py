"""Run the D-block kernel on this machine's GPU and compare it with the host build; time it.

    python -m segdeploy.plugins.dblock.gpu_check [--res 64x128] [--batch 1] [--channels 256]
                                                 [--dilations 1,14] [--json out.json]

Compiles ``dblock_kernel.cu`` with NVRTC for the GPU present (PTX JIT-compiled by the driver, or a
cubin where the driver is older than the NVRTC: ``kernel_target`` decides and says why), launches
it through the CUDA driver API (ctypes: no CUDA Python package needed, so it runs on a Jetson
with JetPack's libraries), checks FP32 and FP16 results against ``host.dblock_conv``
(FP32: 1e-5 relative; FP16: one half ulp plus summation noise, as the host tests) and reports the
median time of one launch with CUDA events, next to the roofline bound of the device table.
Needs a CUDA GPU and driver; NVRTC from the nvidia-cuda-nvrtc-cu12 wheel, $SEGDEPLOY_NVRTC or
/usr/local/cuda/lib64. Python 3.6 compatible.
"""

import argparse
import ctypes
import functools
import json
import sys

import numpy as np

from ..._cli import run_main
from ..._version import __version__
from ...errors import MissingDependencyError, SegDeployError
from .. import kernel_target
from . import compile_check, host

# Launch geometry of dblock_kernel.cu (kPix = 2 pixels per thread, 32 x kBlockRows threads).
PIX = 2
BLOCK_ROWS = 4
TILE_W = 32 * PIX

_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


def launch_grid(batch, channels, height, width):
    """(grid, block) of one launch, as dblock_kernel.cu's launch_grid computes them."""
    grid = (-(-width // TILE_W), -(-height // BLOCK_ROWS), batch * (channels // host.GROUP_WIDTH))
    return grid, (32, BLOCK_ROWS, 1)


def launch_cost(batch, channels, height, width, bytes_per_value):
    """FLOPs and the minimum DRAM bytes of one launch (X read once, Y written once, W and B)."""
    pixels = batch * height * width
    flops = 2 * pixels * channels * host.GROUP_WIDTH * 9
    values = 2 * pixels * channels + channels * host.GROUP_WIDTH * 9 + channels
    return flops, values * bytes_per_value


class Driver(object):
    """The CUDA driver calls this check needs, through ctypes."""

    def __init__(self):
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError:
            raise MissingDependencyError(
                "no CUDA driver (libcuda.so.1) on this machine; run the GPU check on a machine "
                "with an NVIDIA GPU and its driver"
            ) from None
        self.check(self.lib.cuInit(0), "cuInit")
        count = ctypes.c_int()
        self.check(self.lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        if count.value < 1:
            raise SegDeployError("the CUDA driver sees no GPU; check nvidia-smi")
        self.device = ctypes.c_int()
        self.check(self.lib.cuDeviceGet(ctypes.byref(self.device), 0), "cuDeviceGet")
        self.context = ctypes.c_void_p()
        self.check(
            self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.context), self.device),
            "cuDevicePrimaryCtxRetain",
        )
        self.check(self.lib.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")

    def check(self, code, what):
        if code != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(code, ctypes.byref(name))
            raise SegDeployError(
                "CUDA driver call {} failed: {} ({})".format(
                    what, name.value.decode() if name.value else "error", code
                )
            )

    def name(self):
        buf = ctypes.create_string_buffer(256)
        self.check(self.lib.cuDeviceGetName(buf, 256, self.device), "cuDeviceGetName")
        return buf.value.decode()

    def compute_capability(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        for attr, out in (
            (_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, major),
            (_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, minor),
        ):
            self.check(
                self.lib.cuDeviceGetAttribute(ctypes.byref(out), attr, self.device),
                "cuDeviceGetAttribute",
            )
        return major.value, minor.value

    def driver_version(self):
        """CUDA version the driver supports, as cuDriverGetVersion gives it (12020 = 12.2)."""
        version = ctypes.c_int()
        self.check(self.lib.cuDriverGetVersion(ctypes.byref(version)), "cuDriverGetVersion")
        return version.value

    def load(self, image):
        """A module from a cubin or NUL-terminated PTX (bytes), or PTX text (str)."""
        if not isinstance(image, bytes):
            image = image.encode() + b"\0"
        module = ctypes.c_void_p()
        self.check(
            self.lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(image)),
            "cuModuleLoadData",
        )
        return module

    def function(self, module, name):
        fn = ctypes.c_void_p()
        self.check(
            self.lib.cuModuleGetFunction(ctypes.byref(fn), module, name.encode()),
            "cuModuleGetFunction",
        )
        return fn

    def upload(self, array):
        array = np.ascontiguousarray(array)
        ptr = ctypes.c_uint64()
        self.check(
            self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(array.nbytes)), "cuMemAlloc"
        )
        self.check(
            self.lib.cuMemcpyHtoD_v2(
                ptr, array.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(array.nbytes)
            ),
            "cuMemcpyHtoD",
        )
        return ptr

    def alloc(self, nbytes):
        ptr = ctypes.c_uint64()
        self.check(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), "cuMemAlloc")
        return ptr

    def download(self, ptr, like):
        out = np.empty_like(like)
        self.check(
            self.lib.cuMemcpyDtoH_v2(
                out.ctypes.data_as(ctypes.c_void_p), ptr, ctypes.c_size_t(out.nbytes)
            ),
            "cuMemcpyDtoH",
        )
        return out

    def free(self, ptr):
        self.lib.cuMemFree_v2(ptr)

    def launch(self, fn, grid, block, args):
        params = (ctypes.c_void_p * len(args))(
            *[ctypes.cast(ctypes.byref(a), ctypes.c_void_p) for a in args]
        )
        self.check(
            self.lib.cuLaunchKernel(
                fn, grid[0], grid[1], grid[2], block[0], block[1], block[2], 0, None, params, None
            ),
            "cuLaunchKernel",
        )

    def synchronize(self):
        self.check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")

    def time_ms(self, run, repeats):
        start, stop = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(self.lib.cuEventCreate(ctypes.byref(start), 0), "cuEventCreate")
        self.check(self.lib.cuEventCreate(ctypes.byref(stop), 0), "cuEventCreate")
        times = []
        for _ in range(repeats):
            self.check(self.lib.cuEventRecord(start, None), "cuEventRecord")
            run()
            self.check(self.lib.cuEventRecord(stop, None), "cuEventRecord")
            self.check(self.lib.cuEventSynchronize(stop), "cuEventSynchronize")
            ms = ctypes.c_float()
            self.check(
                self.lib.cuEventElapsedTime(ctypes.byref(ms), start, stop), "cuEventElapsedTime"
            )
            times.append(ms.value)
        self.lib.cuEventDestroy_v2(start)
        self.lib.cuEventDestroy_v2(stop)
        return times


def _max_rel(a, ref):
    return float(np.abs(a.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def make_inputs(batch, channels, height, width, seed=0):
    """X, W, B of one check. RandomState, not default_rng: JetPack 4.6's numpy is 1.13."""
    rng = np.random.RandomState(seed)
    x = rng.standard_normal((batch, channels, height, width)).astype(np.float32)
    w = (rng.standard_normal((channels, 16, 3, 3)) / 12.0).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32)
    return x, w, b


def run(
    batch=1, channels=256, height=64, width=128, dilations=(1, 14), relu=True, repeats=50, seed=0
):
    """Check and time the kernel on GPU 0; return a JSON-ready report. Raises on a mismatch."""
    host.check_shapes(
        (batch, channels, height, width), (channels, 16, 3, 3), (channels,), dilations
    )
    driver = Driver()
    cc = driver.compute_capability()
    source, headers = compile_check.read_sources()
    image, target = kernel_target.build_image(
        driver.driver_version(),
        cc,
        source,
        compile_check.KERNEL,
        headers,
        compile_check.NVRTC_OPTIONS,
    )
    module = driver.load(image)
    x, w, b = make_inputs(batch, channels, height, width, seed)
    grid, block = launch_grid(batch, channels, height, width)
    report = {
        "device": driver.name(),
        "compute_capability": "{}.{}".format(*cc),
        "kernel_target": target,
        "shape": [batch, channels, height, width],
        "dilations": list(dilations),
        "relu": bool(relu),
        "grid": list(grid),
        "block": list(block),
        "results": [],
    }
    for precision, dtype, kernel in (
        ("fp32", np.float32, "dblock_conv_f32"),
        ("fp16", np.float16, "dblock_conv_f16"),
    ):
        fn = driver.function(module, kernel)
        bufs = [driver.upload(a.astype(dtype)) for a in (x, w, b)]
        out = driver.alloc(x.size * np.dtype(dtype).itemsize)
        args = (
            bufs
            + [out]
            + [
                ctypes.c_int(v)
                for v in (channels, height, width, dilations[0], dilations[1], int(relu))
            ]
        )
        driver.launch(fn, grid, block, args)
        driver.synchronize()
        got = driver.download(out, x.astype(dtype))
        ref = host.dblock_conv(x, w, b, dilations, relu=relu, fp16=precision == "fp16")
        if precision == "fp32":
            err = _max_rel(got, ref)
            ok = err <= 1e-5
        else:
            # The host build is the kernel's FP16 arithmetic: at most one half ulp apart.
            g32, r32 = got.astype(np.float32), ref.astype(np.float32)
            mag = np.maximum(np.abs(g32), np.abs(r32)).astype(np.float16)
            tol = np.spacing(mag).astype(np.float32) + 1e-6 * np.abs(r32).max()
            err = _max_rel(got, r32)
            ok = bool(np.all(np.abs(g32 - r32) <= tol))
        times = driver.time_ms(functools.partial(driver.launch, fn, grid, block, args), repeats)
        for ptr in bufs + [out]:
            driver.free(ptr)
        flops, nbytes = launch_cost(batch, channels, height, width, np.dtype(dtype).itemsize)
        median = float(np.median(times))
        report["results"].append(
            {
                "precision": precision,
                "max_rel_error_vs_host": err,
                "matches_host": ok,
                "median_ms": median,
                "min_ms": float(np.min(times)),
                "flops": flops,
                "bytes": nbytes,
                "achieved_tflops": flops / (median * 1e-3) / 1e12,
                "achieved_gbs": nbytes / (median * 1e-3) / 1e9,
            }
        )
    return report


def main(argv=None):
    from ...engines.profiles import parse_hw

    parser = argparse.ArgumentParser(
        prog="python -m segdeploy.plugins.dblock.gpu_check",
        description="Run the fused D-block kernel on this GPU, compare it with the host build and "
        "time one launch.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    parser.add_argument(
        "--res",
        default="64x128",
        help="HEIGHTxWIDTH of the block's input (default: RegSeg's 1/16 shape at 1024x2048)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--dilations", default="1,14", help="d1,d2 (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    args = parser.parse_args(argv)

    def body():
        height, width = parse_hw(args.res)
        try:
            dilations = tuple(int(d) for d in args.dilations.split(","))
        except ValueError:
            raise SegDeployError("--dilations must be two ints like 1,14") from None
        try:
            report = run(args.batch, args.channels, height, width, dilations, repeats=args.repeats)
        except ValueError as exc:
            raise SegDeployError(str(exc)) from None
        sys.stderr.write("kernel: {}\n".format(report["kernel_target"]["reason"]))
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        if args.json:
            from ..._io import write_json

            write_json(args.json, report)
        if not all(r["matches_host"] for r in report["results"]):
            sys.stderr.write(
                "{}: error: the GPU result differs from the host build\n".format(parser.prog)
            )
            return 1

    return run_main(parser.prog, body, "nothing written")


if __name__ == "__main__":
    sys.exit(main())
