"""Run the fused head kernel on this machine's GPU against the host build, label for label; time it.

    python -m segdeploy.plugins.seghead.gpu_check [--res 1024x2048] [--classes 19] [--stride 8]
                                                  [--json out.json]

Compiles ``seghead_kernel.cu`` with NVRTC for the GPU present and launches it through the CUDA
driver API (ctypes, the D-block check's ``Driver``: no CUDA Python package needed). Checks all
four kernels (FP32 / FP16 logits, uint8 / int32 labels) against ``host.seg_head`` on planted ties
and near-ties at scale factors 4, 8 and 2.37, both conventions (labels must be equal everywhere),
then times one launch at --res with CUDA events against the memory floor of the device table
(``roofline.head_bytes`` / bandwidth). Needs a CUDA GPU and driver. Python 3.6 compatible.
"""

import argparse
import ctypes
import functools
import sys

import numpy as np

from ..._cli import run_main
from ..._io import write_json
from ..._version import __version__
from ...engines import devices
from ...errors import SegDeployError
from .. import kernel_target
from ..dblock.gpu_check import Driver
from . import compile_check, host, roofline

# Launch geometry of seghead_kernel.cu: kPix = 4 labels per thread, 32 x kTileH threads.
PIX = 4
TILE_H = 8
TILE_W = 32 * PIX
KERNELS = {
    ("fp32", "uint8"): "seghead_f32_u8",
    ("fp32", "int32"): "seghead_f32_i32",
    ("fp16", "uint8"): "seghead_f16_u8",
    ("fp16", "int32"): "seghead_f16_i32",
}


class Params(ctypes.Structure):
    """seghead_kernel.cu's Params, passed by value."""

    _fields_ = [
        ("classes", ctypes.c_int),
        ("height", ctypes.c_int),
        ("width", ctypes.c_int),
        ("out_h", ctypes.c_int),
        ("out_w", ctypes.c_int),
        ("align_corners", ctypes.c_int),
        ("scale_h", ctypes.c_float),
        ("scale_w", ctypes.c_float),
    ]


def launch_grid(batch, out_h, out_w):
    return (-(-out_w // TILE_W), -(-out_h // TILE_H), batch), (32, TILE_H, 1)


class Kernels(object):
    """The four kernels compiled for GPU 0."""

    def __init__(self):
        self.driver = Driver()
        cc = self.driver.compute_capability()
        self.cc = cc
        source, headers = compile_check.read_sources()
        # PTX where the driver reads NVRTC's PTX ISA, else a same-major cubin (kernel_target).
        image, self.target = kernel_target.build_image(
            self.driver.driver_version(),
            cc,
            source,
            compile_check.KERNEL,
            headers,
            compile_check.NVRTC_OPTIONS,
        )
        self.module = self.driver.load(image)
        self.functions = dict(
            (key, self.driver.function(self.module, name)) for key, name in KERNELS.items()
        )

    def prepare(self, logits, out_size, align_corners, precision, labels):
        """Device buffers and a zero-argument launcher; returns (launch, fetch, free)."""
        d = self.driver
        x = logits.astype(np.float16 if precision == "fp16" else np.float32)
        n, c, h, w = x.shape
        out_h, out_w = out_size
        params = Params(c, h, w, out_h, out_w, 1 if align_corners else 0,
                        host.default_scale(h, out_h), host.default_scale(w, out_w))  # fmt: skip
        like = np.empty((n, out_h, out_w), np.uint8 if labels == "uint8" else np.int32)
        src = d.upload(x)
        dst = d.alloc(like.nbytes)
        grid, block = launch_grid(n, out_h, out_w)
        fn = self.functions[(precision, labels)]
        launch = functools.partial(d.launch, fn, grid, block, [src, dst, params])

        def fetch():
            d.synchronize()
            return d.download(dst, like)

        def free():
            d.free(src)
            d.free(dst)

        return launch, fetch, free


def planted_logits(rng, n, c, h, w):
    """Class regions, noise, and exact ties and one-ulp near-ties of the two best classes at
    15 % of the pixels (as tests/plugins/test_seghead_host.py plants them)."""
    x = 3.0 * np.repeat(np.repeat(rng.standard_normal((n, c, -(-h // 4), -(-w // 4))), 4, 2), 4, 3)
    x = (x[:, :, :h, :w] + rng.standard_normal((n, c, h, w))).astype(np.float32)
    if c > 1:
        order = np.argsort(-x, axis=1)
        b, yy, xx = np.nonzero(rng.random((n, h, w)) < 0.15)
        lead = x[b, order[:, 0][b, yy, xx], yy, xx]
        tie = rng.random(b.size) < 0.5
        x[b, order[:, 1][b, yy, xx], yy, xx] = np.where(tie, lead, np.nextafter(lead, -np.inf))
    return x


def exactness(kernels, seed=0):
    """Every kernel against the host build on planted ties; returns the cases and mismatches."""
    rng = np.random.default_rng(seed)
    cases = []
    for classes in (1, 2, 19, 150):
        for factor in (4, 8, 2.37):
            for align_corners in (False, True):
                h, w = (9, 13) if factor == 8 else (14, 19)
                x = planted_logits(rng, 2, classes, h, w)
                out = (int(h * factor), int(w * factor))
                for precision, labels in KERNELS:
                    ref = host.seg_head(x, out, align_corners, fp16=precision == "fp16")
                    launch, fetch, free = kernels.prepare(x, out, align_corners, precision, labels)
                    launch()
                    got = fetch()
                    free()
                    cases.append(
                        {
                            "classes": classes,
                            "factor": factor,
                            "align_corners": align_corners,
                            "precision": precision,
                            "labels": labels,
                            "mismatches": int((got.astype(np.int64) != ref).sum()),
                        }
                    )
    return cases


def timing(kernels, classes=19, height=1024, width=2048, stride=8, repeats=50, seed=0):
    """Median launch time per kernel at one size, against the device's memory floor."""
    x = host.sample_logits(classes, -(-height // stride), -(-width // stride), seed)
    key = devices.identify(gpu_name=kernels.driver.name(), compute_capability=kernels.cc)
    bandwidth = devices.get(key).bandwidth_gbs if key else None
    rows = []
    for precision, labels in KERNELS:
        launch, fetch, free = kernels.prepare(x, (height, width), False, precision, labels)
        launch()
        ok = bool((fetch() == host.seg_head(x, (height, width), fp16=precision == "fp16")).all())
        times = kernels.driver.time_ms(launch, repeats)
        free()
        _, nbytes = roofline.head_bytes(classes, height, width, stride, precision, labels)
        median = float(np.median(times))
        rows.append(
            {
                "precision": precision,
                "labels": labels,
                "matches_host": ok,
                "median_ms": median,
                "bytes": nbytes,
                "achieved_gbs": nbytes / (median * 1e-3) / 1e9,
                "floor_ms": nbytes / (bandwidth * 1e9) * 1e3 if bandwidth else None,
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m segdeploy.plugins.seghead.gpu_check",
        description="Run the fused head kernel on the GPU against the host build and time it.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    parser.add_argument("--res", default="1024x2048", help="labels' HxW for the timing")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    def body():
        try:
            height, width = (int(v) for v in args.res.lower().split("x"))
        except ValueError:
            raise SegDeployError("--res takes HxW like 1024x2048, got " + args.res) from None
        kernels = Kernels()
        cases = exactness(kernels)
        bad = [c for c in cases if c["mismatches"]]
        print(
            "{} ({}.{}): {} exactness cases, {} with mismatches".format(
                kernels.driver.name(), kernels.cc[0], kernels.cc[1], len(cases), len(bad)
            )
        )
        rows = timing(kernels, args.classes, height, width, args.stride, args.repeats)
        for r in rows:
            print(
                "{precision} -> {labels:<5}  {median_ms:8.4f} ms  {achieved_gbs:7.1f} GB/s  "
                "matches host: {matches_host}".format(**r)
                + ("  floor {:.4f} ms".format(r["floor_ms"]) if r["floor_ms"] else "")
            )
        if args.json:
            write_json(args.json, {"device": kernels.driver.name(), "exactness": cases,
                                   "timing": rows})  # fmt: skip
        return 1 if bad or not all(r["matches_host"] for r in rows) else 0

    return run_main(parser.prog, body, "nothing checked")


if __name__ == "__main__":
    sys.exit(main())
