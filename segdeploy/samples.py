"""Synthetic but real-looking frames for demos, examples and the commands segexport suggests.

No dataset ships with segdeploy and nothing is downloaded, so the printed examples draw a street
scene instead: sky gradient, buildings of varied height and shade, a road with lane marks, a car
that moves with ``t`` (frames of a short clip), and a little sensor noise. Numpy only, Python 3.6.
"""

import numpy as np


def street_scene(height, width, t=0, seed=0):
    """(height, width, 3) uint8 BGR street scene; ``t`` moves the car (clip frame index)."""
    rng = np.random.RandomState(seed)
    frame = np.zeros((height, width, 3), np.uint8)
    horizon = max(1, height * 2 // 5)
    sky = np.linspace(235, 150, horizon)
    frame[:horizon] = np.stack([sky, sky * 0.8, sky * 0.6], axis=1)[:, None, :].astype(np.uint8)
    columns = 8
    for i in range(columns):
        x0, x1 = i * width // columns, (i + 1) * width // columns
        top = horizon // 3 + (i * 37 + rng.randint(0, 9)) % max(1, horizon // 2)
        shade = 60 + 12 * (i % 4)
        frame[top : horizon + height // 10, x0 + 2 : max(x0 + 3, x1 - 2)] = (
            shade,
            shade,
            shade + 8,
        )
        for wy in range(top + 6, horizon, 14):  # windows
            frame[wy : wy + 5, x0 + 8 : max(x0 + 9, x1 - 8) : 10] = (150, 170, 190)
    road_top = horizon + height // 10
    frame[road_top:] = (90, 80, 85)
    frame[road_top : road_top + max(1, height // 40)] = (160, 160, 160)  # kerb
    for x0 in range(0, width, max(1, width // 6)):
        y = height * 4 // 5
        frame[y : y + max(1, height // 90), x0 : x0 + width // 12] = 230
    car_w = width // 6
    x = int((width // 3 + t * width // 60) % max(1, width - car_w))
    car = (slice(height * 3 // 5, height * 4 // 5), slice(x, x + car_w))
    frame[car] = (40, 30, 160)
    frame[height * 3 // 5 : height * 3 // 5 + height // 30, x + car_w // 5 : x + car_w * 4 // 5] = (
        120,
        100,
        80,
    )
    noise = rng.randint(-6, 7, frame.shape)
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_clip(path, frames, height, width, fps=30.0):
    """A short MP4 (mp4v) of ``street_scene`` frames with the car moving; returns ``path``."""
    from ._deps import require

    cv2 = require("cv2", "writing a sample video")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write {} (no mp4v encoder?)".format(path))
    for t in range(frames):
        writer.write(street_scene(height, width, t=t))
    writer.release()
    return path


def sample_frame(height, width, seed=0):
    """A smooth uint8 BGR frame (noise blurred), so that label maps are not one class."""
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, (max(1, height // 16), max(1, width // 16), 3)).astype(np.uint8)
    from ._deps import require

    cv2 = require("cv2", "segbench")

    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
