"""Synthetic demo data set: cartoon faces whose age, gender and race a small CNN can learn.

The app uses it as its embedded default so that everything works without the real UTKFace
download. Files are named exactly like UTKFace's aligned crops
(``{age}_{gender}_{race}_{yyyymmddHHMMSSFFF}.jpg.chip.jpg``) and a hidden marker file
``.utkface-demo.json`` says that the folder is synthetic.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from utkface_core import paths
from utkface_core.files import TEMP_MARK, make_temp_dir, sweep_stale_temp
from utkface_core.labels import MAX_AGE

MARKER_NAME = ".utkface-demo.json"
# Bump whenever the drawing changes, so that old sets are regenerated rather than reused.
GENERATOR_VERSION = 1
MIN_SIZE = 32
MAX_SIZE = 1024
MAX_N = 200_000
JPEG_QUALITY = 90

# Age histogram shaped like UTKFace's: (first age, last age, share of images).
_AGE_BINS: tuple[tuple[int, int, float], ...] = (
    (1, 4, 0.090),
    (5, 9, 0.037),
    (10, 14, 0.025),
    (15, 19, 0.041),
    (20, 24, 0.098),
    (25, 29, 0.210),
    (30, 34, 0.097),
    (35, 39, 0.096),
    (40, 49, 0.097),
    (50, 59, 0.097),
    (60, 69, 0.054),
    (70, 79, 0.030),
    (80, 89, 0.020),
    (90, 116, 0.008),
)
FEMALE_SHARE = 0.48
RACE_SHARES: tuple[float, ...] = (0.42, 0.19, 0.145, 0.17, 0.075)


class DemoDataError(ValueError):
    """Bad arguments for, or an unusable folder for, the synthetic demo data set."""


# --------------------------------------------------------------------------- labels


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DemoDataError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    if not low <= int(value) <= high:
        raise DemoDataError(f"{name} must be between {low} and {high}, got {value}.")
    return int(value)


def _check_args(n: object, seed: object, size: object | None = None) -> tuple[int, int, int | None]:
    n = _check_int("n (number of images)", n, 1, MAX_N)
    seed = _check_int("seed", seed, 0, 2**32 - 1)
    if size is not None:
        size = _check_int("size (image side in pixels)", size, MIN_SIZE, MAX_SIZE)
    return n, seed, size


def _sample_ages(rng: np.random.Generator, n: int) -> np.ndarray:
    shares = np.array([s for _, _, s in _AGE_BINS])
    bins = rng.choice(len(_AGE_BINS), size=n, p=shares / shares.sum())
    low = np.array([lo for lo, _, _ in _AGE_BINS])[bins]
    high = np.array([hi for _, hi, _ in _AGE_BINS])[bins]
    u = rng.random(n)
    # Inside a bin the youngest ages are the most common (babies, the long old-age tail).
    skew = np.where((low == 1) | (low >= 60), u**1.6, u)
    ages = low + np.floor(skew * (high - low + 1)).astype(int)
    return np.clip(ages, 1, MAX_AGE)


def sample_labels(n: int, seed: int = 0) -> np.ndarray:
    """Return ``(n, 3)`` int labels (age, gender, race) with UTKFace-like frequencies."""
    n, seed, _ = _check_args(n, seed)
    rng = np.random.default_rng([seed, 0x1AB])
    ages = _sample_ages(rng, n)
    genders = (rng.random(n) < FEMALE_SHARE).astype(int)
    races = rng.choice(len(RACE_SHARES), size=n, p=np.array(RACE_SHARES) / sum(RACE_SHARES))
    return np.stack([ages, genders, races], axis=1).astype(np.int64)


def _timestamps(n: int, seed: int) -> list[str]:
    """Return n unique, increasing, valid ``yyyymmddHHMMSSFFF`` stamps derived from the seed."""
    rng = np.random.default_rng([seed, 0x715])
    start = datetime(2017, 1, 1) + timedelta(minutes=int(rng.integers(0, 60 * 24 * 30)))
    offsets = np.cumsum(rng.integers(1, 20_000, size=n))  # milliseconds, strictly increasing
    stamps = []
    for ms in offsets.tolist():
        moment = start + timedelta(milliseconds=ms)
        stamps.append(moment.strftime("%Y%m%d%H%M%S") + f"{moment.microsecond // 1000:03d}")
    return stamps


def demo_file_names(n: int, seed: int = 0) -> list[str]:
    """Return the n UTKFace-style file names that ``generate_demo_dataset(n=n, seed=seed)`` writes."""
    labels = sample_labels(n, seed)
    return [
        f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg"
        for (age, gender, race), stamp in zip(labels.tolist(), _timestamps(n, seed), strict=False)
    ]


# --------------------------------------------------------------------------- drawing

_SKIN = {  # base skin tone per race code
    0: (236, 200, 174),
    1: (108, 72, 52),
    2: (228, 190, 148),
    3: (174, 122, 86),
    4: (200, 152, 114),
}
_HAIR = {  # (colour, weight) choices per race code
    0: (
        ((214, 180, 110), 0.25),
        ((150, 104, 62), 0.3),
        ((86, 58, 38), 0.3),
        ((160, 72, 36), 0.08),
        ((38, 30, 26), 0.07),
    ),
    1: (((28, 22, 20), 0.9), ((58, 40, 30), 0.1)),
    2: (((22, 20, 22), 0.85), ((70, 48, 34), 0.15)),
    3: (((26, 22, 20), 0.8), ((64, 44, 32), 0.2)),
    4: (((44, 32, 26), 0.5), ((96, 66, 42), 0.35), ((24, 20, 20), 0.15)),
}
_IRIS = {  # iris colour choices per race code
    0: ((70, 110, 160), (90, 120, 80), (90, 60, 36)),
    1: ((50, 32, 22),),
    2: ((45, 30, 22),),
    3: ((55, 36, 24),),
    4: ((70, 46, 30), (90, 80, 50)),
}

_N_ARC = 40
_T = np.linspace(0.0, 2.0 * math.pi, _N_ARC, endpoint=False)
_COS, _SIN = np.cos(_T), np.sin(_T)


def _mix(a: tuple, b: tuple, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=False))


def _scale(c: tuple, f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(x * f)))) for x in c)


def _pick(r: random.Random, options: tuple) -> tuple:
    colours, weights = zip(*options, strict=False)
    return r.choices(colours, weights=weights)[0]


class _Painter:
    """Draws shapes given in face units (x right, y down, origin at the head centre) after a pose transform."""

    def __init__(self, img: Image.Image, cx: float, cy: float, unit: float, angle: float) -> None:
        self.draw = ImageDraw.Draw(img)
        self.cx, self.cy, self.unit = cx, cy, unit
        c, s = math.cos(angle), math.sin(angle)
        self.m = np.array([[c, -s], [s, c]]) * unit

    def pts(self, xy: np.ndarray) -> list[tuple[float, float]]:
        out = xy @ self.m.T
        out[:, 0] += self.cx
        out[:, 1] += self.cy
        return [tuple(p) for p in out.tolist()]

    def poly(self, xy: np.ndarray, fill: tuple) -> None:
        self.draw.polygon(self.pts(xy), fill=fill)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: tuple) -> None:
        self.poly(np.stack([x + rx * _COS, y + ry * _SIN], axis=1), fill)

    def line(self, xy: np.ndarray, fill: tuple, width: float) -> None:
        self.draw.line(self.pts(xy), fill=fill, width=max(1, int(round(width * self.unit))), joint="curve")


def _xy(*coords: float) -> np.ndarray:
    """Points from a flat list x0, y0, x1, y1, ..."""
    return np.array(coords, dtype=float).reshape(-1, 2)


def _arc(x: float, y: float, rx: float, ry: float, t0: float, t1: float, k: int = 12) -> np.ndarray:
    t = np.linspace(t0, t1, k)
    return np.stack([x + rx * np.cos(t), y + ry * np.sin(t)], axis=1)


def _background(r: random.Random, side: int) -> Image.Image:
    """A smooth random colour field: a few random colours on a coarse grid, bilinearly enlarged."""
    k = r.choice((2, 2, 3))
    grey = r.randint(50, 225)
    base = [grey + r.randint(-45, 45) for _ in range(3)]  # muted colours, like indoor/outdoor photos
    spread = r.randint(10, 50)
    cells = bytes(max(0, min(255, base[c] + r.randint(-spread, spread))) for _ in range(k * k) for c in range(3))
    return Image.frombytes("RGB", (k, k), cells).resize((side, side), Image.BILINEAR)


def _render_face(age: int, gender: int, race: int, side: int, r: random.Random) -> Image.Image:
    """Draw one face (RGB, side x side) whose look depends on the labels, with random nuisance."""
    img = _background(r, side)
    female = gender == 1
    child = min(1.0, max(0.0, (18 - age) / 17))  # 1 for babies, 0 from 18 years
    old = min(1.0, max(0.0, (age - 30) / 50))
    # Pose: faces are centred as in UTKFace's aligned crops, with some jitter.
    unit = side / 2 * r.uniform(1.0, 1.12)
    p = _Painter(
        img,
        side / 2 + r.uniform(-0.04, 0.04) * side,
        side / 2 + r.uniform(0.0, 0.06) * side,
        unit,
        math.radians(r.gauss(0, 5)),
    )
    # Head shape: children have rounder, wider heads; men wider, squarer jaws.
    b = 0.74 + r.uniform(-0.03, 0.03)
    a = b * (0.76 + 0.1 * child + (0.0 if female else 0.035) + r.uniform(-0.03, 0.03))
    jaw_narrow = (0.30 if female else 0.16) * (1 - 0.6 * child) + r.uniform(-0.06, 0.06)
    jowl = 0.08 * old * r.uniform(0.5, 1.2)

    skin0 = _SKIN[race]
    bright = r.gauss(0, 0.06)
    skin = tuple(int(min(255, max(0, c * (1 + bright) + r.gauss(0, 7)))) for c in skin0)
    skin = _mix(skin, (int(sum(skin) / 3),) * 3, 0.15 * old)  # paler, greyer skin with age
    shade = _scale(skin, 0.8)
    line_col = _scale(skin, 0.62)

    hair = _pick(r, _HAIR[race])
    grey = min(1.0, max(0.0, (age - 42) / 33 + r.gauss(0, 0.12)))
    hair = _mix(hair, (206, 204, 200), grey)
    curly = race == 1 or (race == 4 and r.random() < 0.25)
    long_hair = (r.random() < 0.82) if female else (r.random() < 0.08)
    if age <= 2:
        long_hair = False
    bald = (not female) and age > 40 and r.random() < min(0.6, (age - 40) / 60)
    sparse = age <= 2

    # Long hair hangs behind the head down to the shoulders.
    if long_hair:
        length = b * r.uniform(1.15, 1.5) * (1 - 0.3 * child)
        outer = _arc(0, -0.04, a * 1.18, b * 1.1, math.pi, 2 * math.pi, 16)
        side_pts = _xy(a * 1.25, length * 0.7, a * 1.05, length, -a * 1.05, length, -a * 1.25, length * 0.7)
        p.poly(np.vstack([outer, side_pts]), _scale(hair, 0.85))

    # Neck and shoulders, with clothes of a random colour.
    shirt = (r.randint(20, 230), r.randint(20, 230), r.randint(20, 230))
    p.poly(_xy(-0.3 * a, 0.5 * b, 0.3 * a, 0.5 * b, 0.36 * a, 1.5 * b, -0.36 * a, 1.5 * b), shade)
    p.ellipse(0, b * 1.55 + 0.1, a * 2.0, b * 0.55, shirt)
    p.poly(_xy(-0.3 * a, b * 1.02, 0.3 * a, b * 1.02, 0.0, b * 1.25), shade)

    # Ears (behind the face outline).
    for sx in (-1, 1):
        p.ellipse(sx * a * 0.97, 0.04 * b, a * 0.13, b * 0.2, shade)

    # Face outline: ellipse on top, a jaw that narrows (women) or stays square (men) below.
    low = _SIN > 0
    xs = a * _COS * np.where(low, 1 - jaw_narrow * _SIN**2 + jowl * np.sin(math.pi * _SIN), 1.0)
    ys = b * _SIN
    p.poly(np.stack([xs, ys], axis=1), skin)

    # Feature layout: children's eyes sit lower, are bigger, and the lower face is short.
    eye_y = b * (-0.04 + 0.2 * child) + r.uniform(-0.02, 0.02)
    eye_dx = a * (0.4 + r.uniform(-0.03, 0.03))
    eye_r = a * (0.11 + 0.05 * child + r.uniform(-0.01, 0.01))
    eye_open = (0.5 if race == 2 else 0.72) * (1 - 0.25 * old) + r.uniform(-0.06, 0.06)
    nose_y = eye_y + b * (0.36 - 0.12 * child)
    mouth_y = nose_y + b * (0.22 - 0.04 * child)
    brow_y = eye_y - eye_r * (1.5 + r.uniform(-0.15, 0.25))

    # Hair on top of the head (a cap above the hairline); curly hair has a bumpy outline.
    hairline = b * (-0.55 + 0.12 * child + r.uniform(-0.05, 0.05))
    temple = b * r.uniform(0.08, 0.2)  # the hairline is lower at the temples
    if race == 2 and r.random() < 0.6:
        hairline, temple = brow_y - eye_r * 0.9, b * 0.03  # straight fringe
    if bald:
        hairline = b * r.uniform(-0.95, -0.8)
    cap_rx, cap_ry = a * (1.06 + (0.1 if curly else 0.0)), b * (1.04 + (0.08 if curly else 0.0))
    if not sparse:
        top = _arc(0, -0.02, cap_rx, cap_ry, math.pi * 0.97, math.pi * 2.03, 24)
        hx = np.linspace(a * 0.9, -a * 0.9, 11)
        hy = hairline + temple * np.abs(hx / (a * 0.9)) ** 3
        cap = np.vstack([top, _xy(a * 0.98, b * 0.05), np.stack([hx, hy], axis=1), _xy(-a * 0.98, b * 0.05)])
        if bald:
            for sx in (-1, 1):
                tuft = _xy(1.02 * a, -0.45 * b, 1.04 * a, 0.05 * b, 0.9 * a, 0.05 * b, 0.88 * a, -0.4 * b)
                p.poly(tuft * (sx, 1), hair)
        else:
            p.poly(cap, hair)
            if curly:
                bump = a * 0.11
                for t in np.linspace(math.pi * 1.02, math.pi * 1.98, 11):
                    p.ellipse(cap_rx * math.cos(t), -0.02 + cap_ry * math.sin(t), bump, bump, hair)
        if long_hair:  # strands framing the face
            for sx in (-1, 1):
                strand = _xy(a * 1.05, hairline, a * 0.78, hairline + 0.05, a * 0.92, b * 0.6, a * 1.2, b * 0.9)
                p.poly(strand * (sx, 1), hair)
    else:
        thin = _arc(0, -0.02, a * 1.02, b * 1.01, math.pi * 1.05, math.pi * 1.95, 16)
        edge = _xy(a * 0.5, -b * 0.62, 0, -b * 0.58, -a * 0.5, -b * 0.62)
        p.poly(np.vstack([thin, edge]), _mix(hair, skin, 0.55))

    # Eyebrows: thicker for men, the hair colour.
    brow_w = (0.035 if female else 0.06) * (1 - 0.4 * child) + r.uniform(-0.008, 0.008)
    brow_col = _mix(hair, (40, 30, 25), 0.3)
    for sx in (-1, 1):
        brow = _arc(sx * eye_dx, brow_y + eye_r * 0.9, eye_r * 1.7, eye_r * 0.9, math.pi * 1.15, math.pi * 1.85, 7)
        p.line(brow, brow_col, brow_w)

    # Eyes.
    iris = r.choice(_IRIS[race])
    for sx in (-1, 1):
        ex = sx * eye_dx
        ry = eye_r * eye_open
        p.ellipse(ex, eye_y, eye_r * 1.5, ry, (240, 238, 232))
        p.ellipse(ex + r.uniform(-0.1, 0.1) * eye_r, eye_y, eye_r * 0.72, min(ry, eye_r * 0.72), iris)
        p.ellipse(ex, eye_y, eye_r * 0.32, min(ry, eye_r * 0.32), (15, 12, 12))
        lid = _arc(ex, eye_y, eye_r * 1.5, ry, math.pi * 1.02, math.pi * 1.98, 8)
        p.line(lid, (20, 15, 15) if female else line_col, 0.03 if female else 0.015)
        if old > 0.4:  # bags under the eyes
            bag = _arc(ex, eye_y + ry * 0.6, eye_r * 1.2, ry * 0.9, math.pi * 0.2, math.pi * 0.8, 6)
            p.line(bag, line_col, 0.012)

    # Nose: wider for Black faces, small for children.
    nose_w = a * ((0.24 if race == 1 else 0.17) * (1 - 0.35 * child) + r.uniform(-0.02, 0.02))
    p.line(_xy(nose_w * 0.35, eye_y + eye_r * 1.6, nose_w * 0.55, nose_y - nose_w * 0.4), shade, 0.015)
    for sx in (-1, 1):
        p.ellipse(sx * nose_w * 0.5, nose_y, nose_w * 0.32, nose_w * 0.18, line_col)

    # Mouth: fuller and often coloured lips for women, fuller lips for Black faces.
    mouth_w = a * (0.3 + r.uniform(-0.04, 0.05)) * (1 - 0.2 * child)
    lip_h = b * (0.045 + (0.018 if female else 0.0) + (0.02 if race == 1 else 0.0) + r.uniform(-0.008, 0.008))
    lip = _mix(skin, (190, 80, 90), 0.35)
    if female and age > 14 and r.random() < 0.75:
        lip = (r.randint(150, 215), r.randint(30, 80), r.randint(50, 90))
    smile = r.uniform(-0.02, 0.06)
    corner = mouth_y - smile
    upper = _xy(-mouth_w, corner, -mouth_w * 0.3, mouth_y - lip_h, 0, mouth_y - lip_h * 0.7,
                mouth_w * 0.3, mouth_y - lip_h, mouth_w, corner, 0, mouth_y + 0.005)  # fmt: skip
    lower = _xy(-mouth_w, corner, 0, mouth_y, mouth_w, corner,
                mouth_w * 0.4, mouth_y + lip_h * 1.2, -mouth_w * 0.4, mouth_y + lip_h * 1.2)  # fmt: skip
    p.poly(upper, lip)
    p.poly(lower, _scale(lip, 1.06))

    # Facial hair for some adult men.
    if not female and age >= 18 and r.random() < 0.35:
        beard_col = _mix(skin, hair, r.uniform(0.35, 1.0))
        chin = np.stack([xs, ys], axis=1)[low & (ys > mouth_y - 0.1)]
        chin = chin[np.argsort(np.arctan2(chin[:, 1], chin[:, 0]))]
        if r.random() < 0.5:
            below = mouth_y + lip_h * 1.4
            p.poly(np.vstack([chin, _xy(-mouth_w * 1.3, below, mouth_w * 1.3, below)]), beard_col)
        tip, mid = mouth_y - lip_h * 1.5, mouth_y - lip_h * 2.0
        p.line(_xy(-mouth_w * 1.05, tip, 0, mid, mouth_w * 1.05, tip), beard_col, 0.04)  # moustache

    # Wrinkles grow in number and depth with age.
    n_fore = int(max(0.0, (age - 28) / 10 + r.gauss(0, 0.7)))
    for k in range(min(n_fore, 5)):
        y = brow_y - eye_r * (1.0 + 0.55 * k)
        if y < hairline + 0.02:
            break
        p.line(_arc(0, y + a * 0.9, a * 0.55, a * 0.9, math.pi * 1.35, math.pi * 1.65, 6), line_col, 0.012)
    if age > 38 + r.gauss(0, 5):  # nasolabial folds
        for sx in (-1, 1):
            fold = _xy(nose_w * 0.9, nose_y - 0.02, mouth_w * 1.25, mouth_y, mouth_w * 1.2, mouth_y + 0.06)
            p.line(fold * (sx, 1), line_col, 0.012)
    if age > 48 + r.gauss(0, 5):  # crow's feet
        for sx in (-1, 1):
            for dy in (-0.5, 0.0, 0.5):
                x0 = sx * (eye_dx + eye_r * 1.65)
                p.line(_xy(x0, eye_y + dy * eye_r * 0.4, x0 + sx * eye_r * 0.6, eye_y + dy * eye_r), line_col, 0.01)
    if age > 60 + r.gauss(0, 6):  # cheek and chin lines
        for sx in (-1, 1):
            cheek = _arc(a * 0.55, mouth_y + 0.02, a * 0.12, b * 0.18, math.pi * -0.3, math.pi * 0.5, 6)
            p.line(cheek * (sx, 1), line_col, 0.01)

    # Glasses on some adults, more often with age.
    if age >= 12 and r.random() < 0.05 + 0.2 * old:
        frame = (r.randint(10, 90),) * 3
        for sx in (-1, 1):
            ring = _arc(sx * eye_dx, eye_y, eye_r * 2.0, eye_r * 1.5, 0, 2 * math.pi, 20)
            p.line(ring, frame, 0.025)
        p.line(_xy(-eye_dx + eye_r * 2.0, eye_y, eye_dx - eye_r * 2.0, eye_y), frame, 0.025)
    return img


@lru_cache(maxsize=4)
def _noise_bank(seed: int, side: int) -> np.ndarray:
    """Unit Gaussian noise, twice the image side; images take random crops (much faster than fresh noise)."""
    rng = np.random.default_rng([seed, side, 0xB4])
    bank = rng.standard_normal((2 * side, 2 * side, 3), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def _finish(img: Image.Image, side: int, seed: int, r: random.Random) -> bytes:
    """Downsample the supersampled drawing, add lighting and pixel noise, encode as JPEG."""
    if img.width != side:
        img = img.reduce(img.width // side)
    arr = np.asarray(img).astype(np.float32)
    ramp = np.linspace(-1.0, 1.0, side, dtype=np.float32) * r.uniform(-0.12, 0.12)
    arr *= (r.uniform(0.85, 1.12) * (1.0 + ramp))[None, :, None]
    y, x = r.randrange(side), r.randrange(side)
    arr += _noise_bank(seed, side)[y : y + side, x : x + side] * r.uniform(2.0, 7.0)
    np.clip(arr, 0, 255, out=arr)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def render_demo_image(age: int, gender: int, race: int, size: int = 200, seed: int = 0, index: int = 0) -> bytes:
    """Return the JPEG bytes of one synthetic face; deterministic in all arguments."""
    age = _check_int("age", age, 0, MAX_AGE)
    gender = _check_int("gender (0 male, 1 female)", gender, 0, 1)
    race = _check_int("race (0-4)", race, 0, 4)
    size = _check_int("size (image side in pixels)", size, MIN_SIZE, MAX_SIZE)
    seed = _check_int("seed", seed, 0, 2**32 - 1)
    index = _check_int("index", index, 0, 2**32 - 1)
    r = random.Random(seed * 2**32 + index)
    # Supersample small images so that thin lines stay visible; large ones are smooth enough.
    factor = 2 if size < 160 else 1
    img = _render_face(age, gender, race, size * factor, r)
    return _finish(img, size, seed, r)


# --------------------------------------------------------------------------- data set folders


def _marker(n: int, seed: int, size: int) -> dict:
    return {"synthetic": True, "n": n, "seed": seed, "size": size, "generator_version": GENERATOR_VERSION}


def _read_marker(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_demo_dataset(path: Path) -> bool:
    """Return True when ``path`` is a folder holding the synthetic demo marker."""
    marker = _read_marker(Path(path))
    return bool(marker and marker.get("synthetic") is True)


def _is_complete(folder: Path, n: int, seed: int, size: int) -> bool:
    if _read_marker(folder) != _marker(n, seed, size):
        return False
    try:
        present = {p.name for p in folder.iterdir() if p.name.endswith(".jpg.chip.jpg")}
    except OSError:
        return False
    return present == set(demo_file_names(n, seed))


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_STALE_TMP_SECONDS = 3600


def _folder_lock(folder: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(folder), threading.Lock())


def _remove_stale_temps(out_dir: Path) -> None:
    """Drop temporary folders that a killed run left behind (old enough that no run still owns them)."""
    sweep_stale_temp(out_dir.parent, f".{out_dir.name}{TEMP_MARK}*", _STALE_TMP_SECONDS)


def generate_demo_dataset(
    out_dir: Path,
    n: int = 3000,
    seed: int = 0,
    size: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write n synthetic UTKFace-style JPEGs into ``out_dir`` atomically and return ``out_dir``.

    Returns at once when ``out_dir`` already holds the same complete set. An outdated demo set
    there is replaced; a non-empty folder that is not a demo set is never touched (DemoDataError).
    ``progress(done, total)`` is called as images are written; if it raises, nothing is left behind.
    """
    n, seed, size = _check_args(n, seed, size)
    out_dir = Path(out_dir).expanduser().absolute()
    if _is_complete(out_dir, n, seed, size):
        return out_dir
    with _folder_lock(out_dir):  # threads of one process share the work; processes race via rename
        if _is_complete(out_dir, n, seed, size):
            return out_dir
        if out_dir.exists() and not out_dir.is_dir():
            raise DemoDataError(f"{out_dir} exists and is not a folder; choose another folder for the demo set.")
        if out_dir.is_dir() and any(out_dir.iterdir()) and not is_demo_dataset(out_dir):
            raise DemoDataError(
                f"{out_dir} is not empty and is not a synthetic demo data set; "
                "choose an empty or new folder so that no files are overwritten."
            )
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(out_dir)
        tmp = make_temp_dir(out_dir)
        try:
            labels = sample_labels(n, seed)
            names = demo_file_names(n, seed)
            step = max(1, n // 100)
            for i, ((age, gender, race), name) in enumerate(zip(labels.tolist(), names, strict=False)):
                (tmp / name).write_bytes(render_demo_image(age, gender, race, size, seed, i))
                if progress is not None and ((i + 1) % step == 0 or i + 1 == n):
                    progress(i + 1, n)
            (tmp / MARKER_NAME).write_text(json.dumps(_marker(n, seed, size), indent=2), encoding="utf-8")
            _publish(tmp, out_dir, n, seed, size)
        finally:
            _remove(tmp)  # a no-op once the folder has been renamed into place
    return out_dir


def _publish(tmp: Path, out_dir: Path, n: int, seed: int, size: int) -> None:
    """Rename the finished temporary folder to ``out_dir``, tolerating a concurrent writer that won."""
    old: Path | None = None
    if out_dir.is_dir():
        if _is_complete(out_dir, n, seed, size):  # another process finished first
            return
        if any(out_dir.iterdir()):
            # An outdated demo set (the caller checked the marker): set it aside, drop it after the swap.
            old = tmp.with_name(tmp.name + "-old")
            try:
                out_dir.rename(old)
            except FileNotFoundError:
                old = None
        else:
            try:
                out_dir.rmdir()  # renaming onto an existing folder fails on Windows
            except OSError:
                pass
    try:
        tmp.rename(out_dir)
    except OSError:
        if _is_complete(out_dir, n, seed, size):
            return
        if old is not None and not out_dir.exists():
            old.rename(out_dir)
            old = None
        raise
    finally:
        if old is not None:
            _remove(old)


def default_demo_dir(n: int = 3000, seed: int = 0) -> Path:
    """Return the app-data folder where the default demo set of n images and this seed lives."""
    n, seed, _ = _check_args(n, seed)
    return paths.data_subdir("demo") / f"synthetic_n{n}_seed{seed}"


def ensure_demo_dataset(n: int = 3000, seed: int = 0, progress: Callable[[int, int], None] | None = None) -> Path:
    """Return the default demo folder, generating it first if it is missing or incomplete."""
    return generate_demo_dataset(default_demo_dir(n, seed), n=n, seed=seed, progress=progress)


# --------------------------------------------------------------------------- drawing in the background


@lru_cache(maxsize=4)
def _positions(n: int, seed: int) -> dict[str, int]:
    return {name: i for i, name in enumerate(demo_file_names(n, seed))}


def demo_position(name: str, n: int = 3000, seed: int = 0) -> int:
    """The index under which ``generate_demo_dataset(n=n, seed=seed)`` draws the file ``name`` (KeyError if none)."""
    return _positions(*_check_args(n, seed)[:2])[Path(name).name]


def render_demo_file(name: str, n: int = 3000, seed: int = 0, size: int = 200) -> bytes:
    """The JPEG bytes that the demo set of (n, seed, size) holds under ``name``, drawn now (the same bytes)."""
    i = demo_position(name, n, seed)
    age, gender, race = sample_labels(n, seed)[i].tolist()
    return render_demo_image(age, gender, race, size, seed, i)


class DemoBuild:
    """Draws the default demo set in a background process; its names and labels are known before any image is.

    A separate, lower-priority process keeps the drawing off the caller's interpreter (a Streamlit
    server stays responsive). ``done``/``total`` count the images drawn; ``ready`` turns True once
    the complete set is in ``path``; ``error`` holds the message when drawing failed (``start``
    again to retry).
    """

    def __init__(self, n: int = 3000, seed: int = 0) -> None:
        self.n, self.seed, _ = _check_args(n, seed)
        self.path = default_demo_dir(self.n, self.seed)
        self.done = 0
        self.total = self.n
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.ready = _is_complete(self.path, self.n, self.seed, 200)
        if self.ready:
            self.done = self.n

    def start(self) -> DemoBuild:
        """Start drawing unless the set is complete or being drawn; return self."""
        with self._lock:
            if self.ready or (self._thread is not None and self._thread.is_alive()):
                return self
            self.error = None
            self._thread = threading.Thread(target=self._run, name="demo-faces", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        import subprocess
        import sys

        package_parent = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        code = "from utkface_core.data.demo import _draw_in_child; _draw_in_child()"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(self.n), str(self.seed)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for line in proc.stdout:  # "done total" lines
                parts = line.split()
                if len(parts) == 2 and all(p.isdigit() for p in parts):
                    self.done, self.total = int(parts[0]), int(parts[1])
            err = proc.stderr.read()
            if proc.wait() != 0:
                last = [ln for ln in err.strip().splitlines() if ln.strip()]
                raise DemoDataError(last[-1] if last else f"the drawing process exited with code {proc.returncode}")
            if not _is_complete(self.path, self.n, self.seed, 200):
                raise DemoDataError("the drawing process ended without a complete set")
            self.ready = True
            self.done = self.n
        except (OSError, ValueError) as exc:
            self.error = f"the demo faces could not be drawn into {self.path}: {exc}"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the drawing ended (or ``timeout`` seconds passed); return ``ready``."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.ready


def _draw_in_child() -> None:
    """Entry point of DemoBuild's process: draw the set of ``argv[1:3]`` (n, seed), printing "done total" lines."""
    import sys

    if hasattr(os, "nice"):
        os.nice(10)  # interactive work first: the drawing uses what is left of the CPU
    n, seed = int(sys.argv[1]), int(sys.argv[2])
    try:
        ensure_demo_dataset(n, seed, progress=lambda done, total: print(done, total, flush=True))
    except (OSError, ValueError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)


def demo_index(n: int = 3000, seed: int = 0):
    """A ``DatasetIndex`` of the default demo set built from its names alone (no image needs to exist yet).

    Rows, labels and paths equal those ``dataset.index_folder`` gives for the finished folder; only the
    content hashes are empty, so its fingerprint differs: use it to show labels, not to train.
    """
    import pandas as pd

    from utkface_core.data.dataset import COLUMNS, DatasetIndex
    from utkface_core.labels import GENDERS, RACES

    folder = default_demo_dir(n, seed).resolve()
    labels = sample_labels(n, seed)
    names = demo_file_names(n, seed)
    order = sorted(range(len(names)), key=names.__getitem__)
    frame = pd.DataFrame(
        {
            "path": [str(folder / names[i]) for i in order],
            "file": [names[i] for i in order],
            "age": labels[order, 0],
            "gender": labels[order, 1],
            "race": labels[order, 2],
        }
    )
    frame["gender_name"] = [GENDERS[g] for g in frame["gender"]]
    frame["race_name"] = [RACES[r] for r in frame["race"]]
    frame["hash"] = ""
    frame["warning"] = ""
    frame = frame[COLUMNS].astype({"age": "int16", "gender": "int8", "race": "int8"})
    return DatasetIndex(root=folder, all_frame=frame, frame=frame)
