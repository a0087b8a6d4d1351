"""segpredict: segment images, folders, videos, cameras and streams with any engine.

    segpredict --engine out/regseg.ort --source clip.mp4 --out pred/
    segpredict --engine out/regseg.plan --source 0 --show
    segpredict --engine out/regseg.ort --source 'frames/*.png' --save overlay,labels,color

A pipeline, not a loop: one thread decodes, the main thread runs ``Runtime.infer`` (pre-process,
engine, label map), one thread colours/blends and encodes; bounded queues between them keep memory
flat. Files never lose a frame (the queues block); a live source can drop the oldest waiting frame
instead when inference is slower than the camera (``--drop-oldest``). Per-stage timings and the
end-to-end rate print live and go to ``predict.json`` at the end. Ctrl-C stops cleanly: every file
written so far is complete. Python 3.6 compatible (device side: no torch, no onnx).
"""

import os
import queue
import sys
import threading
import time

import numpy as np

from .._cli import VERBOSE, add_common_args, make_parser, plural, run_main, verbosity
from .._deps import require
from .._io import check_writable_dir, write_json
from .._native import native_stderr_kept
from ..errors import SegDeployError
from .sources import open_source

SAVE_KINDS = ("overlay", "labels", "color")
STAGES = ("decode", "infer", "post", "encode")
_END = object()


def letterbox(frame, net_hw):
    """Pad ``frame`` (bottom/right, black) to the network's aspect ratio.

    Returns the padded frame and the (h, w) of the original inside it: inference on the padded
    frame then keeps the image's proportions, and the label map is cropped back.
    """
    height, width = frame.shape[:2]
    net_h, net_w = net_hw
    if height * net_w > width * net_h:  # taller than the network: widen
        padded_hw = (height, int(round(height * net_w / float(net_h))))
    else:
        padded_hw = (int(round(width * net_h / float(net_w))), width)
    if padded_hw == (height, width):
        return frame, (height, width)
    padded = np.zeros(padded_hw + frame.shape[2:], frame.dtype)
    padded[:height, :width] = frame
    return padded, (height, width)


def draw_legend(image, labels, class_names, palette_bgr, max_rows=12):
    """Draw the classes present in ``labels`` (largest first) with their colours, top-left."""
    cv2 = require("cv2", "segpredict")
    counts = np.bincount(labels.ravel(), minlength=len(palette_bgr))
    present = [int(c) for c in np.argsort(-counts) if counts[c] > 0][:max_rows]
    if not present:
        return image
    scale = max(0.35, min(1.0, image.shape[0] / 1000.0))
    row = int(round(22 * scale / 0.5)) // 2 + 6
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in present]
    text_w = max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for n in names)
    box_w, box_h = text_w + row + 16, row * len(present) + 8
    box_w, box_h = min(box_w, image.shape[1]), min(box_h, image.shape[0])
    region = image[:box_h, :box_w]
    region[:] = (region.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken behind the text
    for i, (c, name) in enumerate(zip(present, names)):
        y = 4 + i * row
        colour = tuple(int(v) for v in palette_bgr[c])
        cv2.rectangle(image, (4, y + 2), (4 + row - 6, y + row - 4), colour, -1)
        cv2.putText(
            image,
            name,
            (row + 4, y + row - 7),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return image


class Sink(object):
    """Writes what ``--save`` asks for: PNGs per image, videos per video/camera, a window."""

    def __init__(self, runtime, source, out_dir, save, alpha, legend, show, fps):
        self._cv2 = require("cv2", "segpredict")
        self.runtime = runtime
        self.source = source
        self.out_dir = out_dir
        self.save = save
        self.alpha = alpha
        self.legend = legend
        self.show = show
        self.fps = fps
        self.written = []
        self._videos = {}
        self._palette_bgr = runtime.palette[:, ::-1].copy()
        self.stopped_by_user = False

    def _video(self, kind, size_hw):
        writer = self._videos.get(kind)
        if writer is None:
            path = os.path.join(self.out_dir, "{}_{}.mp4".format(self.source_name, kind))
            fourcc = self._cv2.VideoWriter_fourcc(*"mp4v")
            writer = self._cv2.VideoWriter(path, fourcc, self.fps, (size_hw[1], size_hw[0]))
            if not writer.isOpened():
                raise SegDeployError(
                    "cannot write the video {} (OpenCV has no mp4v encoder here, or the "
                    "folder is not writable)".format(path)
                )
            self._videos[kind] = writer
            self.written.append(path)
        return writer

    @property
    def source_name(self):
        return getattr(self.source, "name", "frames")

    def visuals(self, frame, labels):
        """{kind: image} for the visual outputs asked for (overlay / color)."""
        images = {}
        if "overlay" in self.save or self.show:
            overlay = self.runtime.overlay(frame.image, labels, self.alpha)
            if self.legend:
                draw_legend(overlay, labels, self.runtime.class_names, self._palette_bgr)
            images["overlay"] = overlay
        if "color" in self.save:
            images["color"] = self.runtime.colorize(labels)
        return images

    def write(self, frame, labels, images):
        cv2 = self._cv2
        per_image = self.source.kind == "images"
        for kind in ("overlay", "color"):
            if kind not in self.save:
                continue
            if per_image:
                path = os.path.join(self.out_dir, "{}_{}.png".format(frame.name, kind))
                _imwrite(cv2, path, images[kind])
                self.written.append(path)
            elif not self.show or kind != "overlay" or "overlay" in self.save:
                self._video(kind, images[kind].shape[:2]).write(images[kind])
        if "labels" in self.save:
            if per_image:
                path = os.path.join(self.out_dir, "{}_labels.png".format(frame.name))
            else:
                folder = os.path.join(self.out_dir, "{}_labels".format(self.source_name))
                if not os.path.isdir(folder):
                    os.makedirs(folder)
                    self.written.append(folder)
                path = os.path.join(folder, "{:06d}.png".format(frame.index))
            _imwrite(cv2, path, labels)
            if per_image:
                self.written.append(path)
        if self.show:
            cv2.imshow("segpredict", images["overlay"])
            if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                self.stopped_by_user = True

    def close(self):
        for writer in self._videos.values():
            writer.release()
        self._videos = {}
        if self.show:
            self._cv2.destroyAllWindows()


def _imwrite(cv2, path, image):
    if not cv2.imwrite(path, image):
        raise SegDeployError("cannot write {} (disk full or folder not writable?)".format(path))


class StageTimes(object):
    """Per-stage durations in ms; each stage is appended to by one thread only."""

    def __init__(self):
        self.ms = {stage: [] for stage in STAGES}

    def summary(self):
        result = {}
        for stage, values in self.ms.items():
            if values:
                v = np.asarray(values)
                result[stage] = {
                    "mean_ms": round(float(v.mean()), 3),
                    "median_ms": round(float(np.median(v)), 3),
                    "p90_ms": round(float(np.percentile(v, 90)), 3),
                    "frames": int(v.size),
                }
        return result

    def line(self):
        return "  ".join(
            "{} {:.1f} ms".format(stage, float(np.mean(self.ms[stage][-20:])))
            for stage in STAGES
            if self.ms[stage]
        )


def _put(q, item, stop, drop_oldest):
    """Put ``item``; a full queue blocks (files) or loses its oldest frame (live, opted in)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return 0
        except queue.Full:
            if drop_oldest:
                try:
                    q.get_nowait()
                except queue.Empty:
                    continue
                q.put(item)
                return 1
    return 0


def run_pipeline(
    runtime,
    source,
    sink,
    max_frames=None,
    fps_limit=None,
    drop_oldest=False,
    use_letterbox=False,
    queue_size=4,
    progress=None,
):
    """Decode -> infer -> post/encode, overlapped; returns (frames, seconds, times, dropped)."""
    times = StageTimes()
    stop = threading.Event()
    inbox, outbox = queue.Queue(queue_size), queue.Queue(queue_size)
    errors = []
    dropped = [0]

    def reader():
        try:
            iterator = iter(source)
            count, period, last = 0, (1.0 / fps_limit if fps_limit else 0.0), 0.0
            while not stop.is_set() and (max_frames is None or count < max_frames):
                start = time.perf_counter()
                frame = next(iterator, None)
                if frame is None:
                    break
                times.ms["decode"].append((time.perf_counter() - start) * 1e3)
                if period:
                    wait = last + period - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    last = time.perf_counter()
                dropped[0] += _put(inbox, frame, stop, drop_oldest and source.live)
                count += 1
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
        finally:
            _put(inbox, _END, stop, False)

    def writer():
        try:
            while True:
                item = outbox.get()
                if item is _END:
                    return
                frame, labels = item
                start = time.perf_counter()
                images = sink.visuals(frame, labels)
                mid = time.perf_counter()
                sink.write(frame, labels, images)
                times.ms["post"].append((mid - start) * 1e3)
                times.ms["encode"].append((time.perf_counter() - mid) * 1e3)
                if sink.stopped_by_user:
                    stop.set()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    frames, started, last_print = 0, time.perf_counter(), 0.0
    try:
        while not stop.is_set():
            try:
                frame = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if frame is _END:
                break
            start = time.perf_counter()
            image, inner = frame.image, None
            if use_letterbox:
                image, inner = letterbox(image, runtime.input_size)
            labels = runtime.infer(image)
            if inner is not None:
                labels = np.ascontiguousarray(labels[: inner[0], : inner[1]])
            times.ms["infer"].append((time.perf_counter() - start) * 1e3)
            _put(outbox, (frame, labels), stop, False)
            frames += 1
            now = time.perf_counter()
            if progress is not None and now - last_print >= 1.0:
                last_print = now
                total = "/{}".format(source.count) if source.count else ""
                progress(
                    "frame {}{}  {:.1f} fps end to end | {}".format(
                        frames, total, frames / (now - started), times.line()
                    )
                )
    finally:
        stop.set()  # the reader ends at its next frame (or wherever it waits on the queue)
        while threads[1].is_alive():  # the writer finishes what was inferred, then ends
            try:
                outbox.put(_END, timeout=0.1)
                break
            except queue.Full:
                continue
        threads[1].join()
        threads[0].join(timeout=5)
        sink.close()
    if errors:
        raise errors[0]
    return frames, time.perf_counter() - started, times, dropped[0]


def parser():
    p = make_parser(
        "segpredict",
        "Segment images, folders, videos, cameras or streams with an engine (.onnx, .ort, "
        ".xml, .plan, ...) and write overlays, label maps and colour maps.",
        examples=(
            "segpredict --engine out/regseg.ort --source clip.mp4 --out pred/",
            "segpredict --engine out/regseg.ort --source frames/ --save overlay,labels",
            "segpredict --engine out/regseg.plan --source 0 --show",
            "segpredict --engine out/regseg.plan --source 'nvarguscamerasrc ! \\",
            "    video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! \\",
            "    video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! \\",
            "    appsink'   # Jetson CSI camera",
        ),
    )
    add_common_args(p)
    p.add_argument("--engine", required=True, help="engine file written by segexport/segbuild")
    p.add_argument(
        "--source",
        required=True,
        help="image, folder, 'glob*.png', video file, camera index (0), RTSP/HTTP URL, "
        "or a GStreamer pipeline ending in appsink",
    )
    p.add_argument("--out", default=os.path.join("out", "predict"), help="output folder")
    p.add_argument(
        "--save",
        default="overlay",
        help="what to write, comma-separated: overlay, labels (uint8 PNG of class ids), color "
        "(default: overlay)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay weight of the colours")
    p.add_argument("--show", action="store_true", help="show the overlay live (q or Esc quits)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--fps-limit", type=float, help="read at most this many frames per second")
    p.add_argument(
        "--drop-oldest",
        action="store_true",
        help="live sources: drop the oldest waiting frame when inference is slower than the camera",
    )
    p.add_argument(
        "--letterbox",
        action="store_true",
        help="pad frames to the network's aspect ratio instead of stretching them "
        "(the papers stretch; use this when the model was trained on letterboxed frames)",
    )
    legend = p.add_mutually_exclusive_group()
    legend.add_argument("--legend", dest="legend", action="store_true", default=None)
    legend.add_argument(
        "--no-legend",
        dest="legend",
        action="store_false",
        help="class names and colours on overlays (default: on for images, off for video)",
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime threads of the engine")
    p.add_argument(
        "--head",
        choices=("network", "frame"),
        default="network",
        help="engines exported with --head fused: labels at the network's size then resized "
        "(network, default), or the logits upsampled straight to the frame's size (frame)",
    )
    p.add_argument("--json", help="timings report (default OUT/predict.json)")
    return p


def _check_args(args):
    save = [s.strip() for s in args.save.split(",") if s.strip()]
    unknown = [s for s in save if s not in SAVE_KINDS]
    if unknown or not save:
        raise SegDeployError("--save {}: choose from {}".format(args.save, ", ".join(SAVE_KINDS)))
    if not 0.0 <= args.alpha <= 1.0:
        raise SegDeployError("--alpha must be between 0 and 1, got {}".format(args.alpha))
    if args.max_frames is not None and args.max_frames < 1:
        raise SegDeployError("--max-frames must be at least 1")
    if args.fps_limit is not None and not args.fps_limit > 0:
        raise SegDeployError("--fps-limit must be positive")
    if args.threads is not None and args.threads < 1:
        raise SegDeployError("--threads must be at least 1")
    if not os.path.exists(args.engine):
        raise SegDeployError("--engine {}: no such file".format(args.engine))
    return set(save)


def predict(args, stream=None):
    """Run segpredict for parsed ``args``; returns the report dict."""
    from .runtime import Runtime

    stream = stream or sys.stderr
    save = _check_args(args)
    check_writable_dir(args.out)
    report_path = args.json or os.path.join(args.out, "predict.json")
    source = open_source(args.source)
    options = {"threads": args.threads} if args.threads else {}
    if getattr(args, "head", "network") != "network":
        options["head"] = args.head
    if getattr(args, "plugin", None):
        options["plugins"] = list(args.plugin)  # loaded because the user named them
    try:
        runtime = Runtime(args.engine, **options)
    except BaseException:
        source.close()
        raise
    with runtime:
        fps = source.fps or 30.0
        legend = args.legend if args.legend is not None else source.kind == "images"
        sink = Sink(runtime, source, args.out, save, args.alpha, legend, args.show, fps)
        tty = hasattr(stream, "isatty") and stream.isatty()

        def progress(text):
            if not args.quiet:
                print(("\r" + text + "   ") if tty else text, end="" if tty else "\n", file=stream)
                stream.flush()

        try:
            frames, seconds, times, dropped = run_pipeline(
                runtime,
                source,
                sink,
                max_frames=args.max_frames,
                fps_limit=args.fps_limit,
                drop_oldest=args.drop_oldest,
                use_letterbox=args.letterbox,
                progress=progress,
            )
        finally:
            source.close()
        if tty and not args.quiet:
            print(file=stream)
    stages = times.summary()
    infer_ms = stages.get("infer", {}).get("mean_ms")
    report = {
        "engine": os.path.abspath(args.engine),
        "backend": runtime.backend,
        "source": args.source,
        "source_kind": source.kind,
        "frames": frames,
        "dropped": dropped,
        "seconds": round(seconds, 3),
        "fps_end_to_end": round(frames / seconds, 3) if seconds > 0 else None,
        "source_fps": source.fps,
        "network_input": list(runtime.input_size),
        "head": runtime.head,
        "letterbox": bool(args.letterbox),
        "stages": stages,
        # end-to-end rate over the rate inference alone would allow: 1.0 = decoding, colouring
        # and encoding are entirely hidden behind inference
        "pipeline_efficiency": (
            round(frames / seconds * infer_ms / 1e3, 3) if seconds > 0 and infer_ms else None
        ),
        "outputs": sink.written,
        "command": "segpredict " + " ".join(sys.argv[1:]) if sys.argv else "",
    }
    write_json(report_path, report)
    report["report"] = report_path
    return report


def main(argv=None):
    args = parser().parse_args(argv)
    reports = []

    def body():
        # OpenCV's, FFmpeg's and libpng's own lines (-v shows them): segpredict's say it all
        with native_stderr_kept(show=verbosity(args) >= VERBOSE):
            reports.append(predict(args))

    code = run_main("segpredict", body, "every file written so far is complete")
    if code:
        return code
    report = reports[0]
    print(
        "segpredict: {} in {:.1f} s ({:.2f} fps end to end; {}); {} output{} in {}; "
        "timings in {}".format(
            plural(report["frames"], "frame"),
            report["seconds"],
            report["fps_end_to_end"] or 0.0,
            ", ".join("{} {:.1f} ms".format(k, v["mean_ms"]) for k, v in report["stages"].items()),
            len(report["outputs"]),
            "" if len(report["outputs"]) == 1 else "s",
            args.out,
            report["report"],
        )
    )
    if report["dropped"]:
        print("segpredict: dropped {} (--drop-oldest)".format(plural(report["dropped"], "frame")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
