"""Real-looking synthetic frames: street-like scenes for calibration tests and benchmarks.

Calibration and accuracy checks need frames whose statistics resemble camera images: smooth
gradients (sky, road), large uniform-ish regions with edges between them (buildings, cars),
small objects, and fine texture with sensor-like noise. Flat colour makes every layer's range
trivial; pure noise drives activations into ranges real frames never reach. Each scene is a
deterministic function of its seed. Python 3.6 compatible; numpy and OpenCV only.
"""

import os

import numpy as np

from .._deps import require

# Cityscapes train ids of what the scenes draw (the labels ``street_scene`` returns on request)
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, CAR = 0, 1, 2, 5, 8, 10, 13


def street_scene(height, width, seed=0, with_labels=False):
    """An H x W x 3 uint8 BGR frame: sky gradient, buildings, road, cars, poles, texture.

    ``with_labels=True`` also returns the (H, W) uint8 map of what was drawn where, in Cityscapes
    train ids (road, sidewalk, building, pole, vegetation, sky, car).
    """
    cv2 = require("cv2", "synthetic frames")
    rng = np.random.RandomState(seed)
    h, w = int(height), int(width)
    img = np.zeros((h, w, 3), np.float32)
    lab = np.full((h, w), SKY, np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.55))
    # sky: vertical gradient between two blue-grey tones
    top = np.array([rng.uniform(150, 230), rng.uniform(110, 180), rng.uniform(60, 120)])
    bottom = np.array([rng.uniform(200, 250), rng.uniform(190, 240), rng.uniform(170, 220)])
    t = np.linspace(0.0, 1.0, max(horizon, 1))[:, None, None]
    img[:horizon] = top * (1 - t) + bottom * t
    # road: grey with a gradient towards the camera
    t = np.linspace(0.0, 1.0, h - horizon)[:, None, None]
    road = rng.uniform(70, 120)
    img[horizon:] = road * (1 - 0.3 * t) + np.array([0.0, 2.0, 4.0])
    lab[horizon:] = ROAD
    # buildings: rectangles of various colours standing on the horizon, with windows
    x = 0
    while x < w:
        bw = int(rng.uniform(0.06, 0.2) * w)
        bh = int(rng.uniform(0.3, 0.9) * horizon)
        colour = rng.uniform(40, 200, 3)
        cv2.rectangle(img, (x, horizon - bh), (x + bw, horizon), colour.tolist(), -1)
        cv2.rectangle(lab, (x, horizon - bh), (x + bw, horizon), BUILDING, -1)
        step = max(4, bw // 6)
        for wy in range(horizon - bh + step // 2, horizon - step, step):
            for wx in range(x + step // 3, x + bw - step // 2, step):
                shade = (colour * rng.uniform(0.3, 0.7)).tolist()
                cv2.rectangle(img, (wx, wy), (wx + step // 3, wy + step // 3), shade, -1)
        x += bw + int(rng.uniform(0.0, 0.05) * w)
    # sidewalk strips and lane markings
    cv2.rectangle(img, (0, horizon), (w, horizon + max(2, h // 40)), (150, 150, 160), -1)
    cv2.rectangle(lab, (0, horizon), (w, horizon + max(2, h // 40)), SIDEWALK, -1)
    for i in range(6):
        y = horizon + int((i + 1) * (h - horizon) / 7.0)
        cv2.line(img, (w // 2 - i * 3, y), (w // 2 + i * 3, y + h // 30), (230, 230, 230), 2)
    # trees (green blobs), poles, cars (rounded boxes with dark wheels)
    for _ in range(rng.randint(2, 6)):
        cx, cy = int(rng.uniform(0, w)), int(horizon - rng.uniform(0.05, 0.4) * horizon)
        r = int(rng.uniform(0.03, 0.08) * w)
        green = [rng.uniform(20, 60), rng.uniform(90, 160), rng.uniform(30, 80)]
        cv2.circle(img, (cx, cy), r, green, -1)
        cv2.circle(lab, (cx, cy), r, VEGETATION, -1)
        cv2.rectangle(img, (cx - 2, cy + r // 2), (cx + 2, horizon), (40, 60, 80), -1)
        cv2.rectangle(lab, (cx - 2, cy + r // 2), (cx + 2, horizon), VEGETATION, -1)
    for _ in range(rng.randint(2, 5)):
        px = int(rng.uniform(0, w))
        cv2.line(img, (px, int(horizon * 0.3)), (px, horizon + h // 20), (90, 90, 90), 3)
        cv2.line(lab, (px, int(horizon * 0.3)), (px, horizon + h // 20), POLE, 3)
    for _ in range(rng.randint(1, 5)):
        cw = int(rng.uniform(0.08, 0.2) * w)
        ch = int(cw * rng.uniform(0.4, 0.6))
        cx = int(rng.uniform(0, w - cw))
        cy = int(horizon + rng.uniform(0.05, 0.6) * (h - horizon))
        colour = rng.uniform(0, 255, 3).tolist()
        cv2.rectangle(img, (cx, cy - ch), (cx + cw, cy), colour, -1)
        cv2.rectangle(
            img, (cx + cw // 5, cy - ch - ch // 2), (cx + 4 * cw // 5, cy - ch), colour, -1
        )
        cv2.rectangle(lab, (cx, cy - ch), (cx + cw, cy), CAR, -1)
        cv2.rectangle(lab, (cx + cw // 5, cy - ch - ch // 2), (cx + 4 * cw // 5, cy - ch), CAR, -1)
        for wx in (cx + cw // 5, cx + 4 * cw // 5):
            cv2.circle(img, (wx, cy), max(2, ch // 4), (20, 20, 20), -1)
            cv2.circle(lab, (wx, cy), max(2, ch // 4), CAR, -1)
    # texture: low-frequency illumination, fine grain, slight blur as a lens would
    light = cv2.resize(rng.uniform(0.8, 1.15, (4, 8)).astype(np.float32), (w, h))
    img *= light[:, :, None]
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    frame = np.clip(img, 0, 255).astype(np.uint8)
    return (frame, lab) if with_labels else frame


def write_scenes(directory, count, height, width, seed=0):
    """Write ``count`` scenes as PNG files into ``directory``; returns their paths."""
    cv2 = require("cv2", "synthetic frames")
    if not os.path.isdir(directory):
        os.makedirs(directory)
    paths = []
    for i in range(count):
        path = os.path.join(directory, "scene_{:04d}.png".format(seed + i))
        cv2.imwrite(path, street_scene(height, width, seed + i))
        paths.append(path)
    return paths
