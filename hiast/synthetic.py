"""The embedded synthetic UDA benchmark: a procedural street-scene renderer and the writer of four dataset roots.

`render_scene(rng, style, height, width)` draws one street scene seen from a pinhole camera (horizon row
`yh`, vanishing column `xv`, focal length `f` pixels, camera height `hc` metres): a ground plane (road with
lane markings, sidewalks with slabs and kerbs, terrain strips), rows of buildings / walls / fences / hedges
along both sides drawn as 3-D boxes, an optional row of buildings closing the street, and objects (vehicles
as 3-D boxes, people, riders on two-wheelers, poles carrying lamps / traffic lights / signs, trees) whose
pixel size follows from their distance. Every class has its own texture model (windows, bricks, slabs,
leaves, grass, ...) and several classes share mean colours, so that shape, texture and context are needed.

A `DomainStyle` holds the knobs in which the four domains differ (colour / illumination, texture, blur and
sensor noise, camera geometry, object scale and frequencies). `make_style(name, gap)` interpolates between a
neutral style (gap = 0: all domains alike) and the domain's own settings (gap = 1, `DOMAIN_STYLES`); gap > 1
exaggerates the differences.

`generate_benchmark(root, ...)` writes GTA5/, SYNTHIA_RAND_CITYSCAPES/, cityscapes/ and oxford_robotcar/
under `root` in the real datasets' on-disk formats, then `root/.complete`. Every image has its own random
stream, derived from (seed, dataset, index), so the output does not depend on `workers`.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from hiast.classes import (CITYSCAPES_LABELID_TO_TRAINID, CITYSCAPES_TRAINID_TO_OXFORD, IGNORE,
                           OXFORD_RAWID_TO_TRAINID, SYNTHIA_ID_TO_TRAINID)
from hiast.imageio import atomic_path, write_gray, write_palettised, write_png16, write_rgb, write_rgba

# Train ids.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, \
    TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(19)
NUM_CLASSES = 19

OBJECT_KINDS: tuple[str, ...] = (
    "car", "truck", "bus", "train", "person", "cyclist", "motorcyclist", "bicycle", "motorcycle", "pole",
    "traffic_light", "traffic_sign", "tree",
)
DOMAINS: tuple[str, ...] = ("gta5", "synthia", "cityscapes", "oxford")

# A shared palette of vehicle paints; each domain draws from it with its own weights.
VEHICLE_PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.75, 0.08, 0.08), (0.10, 0.18, 0.60), (0.90, 0.90, 0.90), (0.66, 0.67, 0.69), (0.07, 0.07, 0.08),
    (0.30, 0.31, 0.33), (0.90, 0.74, 0.12), (0.12, 0.40, 0.20), (0.50, 0.32, 0.18), (0.95, 0.50, 0.08),
    (0.45, 0.55, 0.70), (0.55, 0.10, 0.30),
)


# ------------------------------------------------------------------------------------------------ styles

@dataclass(frozen=True)
class DomainStyle:
    """Everything in which one domain's images differ from another's. Colours are in [0, 1]."""

    name: str
    gap: float = 1.0
    # colour and illumination
    palette_shift: tuple[tuple[float, float, float], ...] = ((0.0, 0.0, 0.0),) * NUM_CLASSES  # per class
    temperature: float = 0.0          # > 0 warm (red up, blue down), < 0 cool
    saturation: float = 1.0
    brightness: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    sky_overcast: float = 0.3         # 0 clear blue sky .. 1 uniform grey overcast
    sun_contrast: float = 0.3         # strength of cast shadows and shading differences between faces
    vignette: float = 0.0
    # texture statistics
    texture_amplitude: float = 1.0    # multiplies every class's noise amplitude
    texture_frequency: float = 1.0    # multiplies the spatial frequency of the noise fields
    pattern_scale: float = 1.0        # multiplies the size of windows, bricks, slabs, lane dashes
    # sensor
    blur_sigma: float = 0.0           # gaussian sigma in pixels at 512 px width (scaled with the width)
    sensor_noise: float = 0.0         # std of per-pixel noise, in 0..255 units
    chroma_noise: float = 0.0         # std of per-channel noise, in 0..255 units
    # camera and street geometry (metres)
    horizon_range: tuple[float, float] = (0.38, 0.48)   # horizon row as a fraction of the height
    camera_height: tuple[float, float] = (1.5, 1.7)
    focal: tuple[float, float] = (0.8, 0.95)            # focal length as a fraction of the width
    road_half_width: tuple[float, float] = (2.5, 7.5)   # from the camera to each road edge
    sidewalk_width: tuple[float, float] = (2.0, 4.5)
    terrain_prob: float = 0.4         # probability of a terrain strip between sidewalk and facades (per side)
    backdrop_prob: float = 0.5        # probability of buildings closing the street
    back_weights: tuple[float, float, float] = (0.6, 0.3, 0.1)         # building, tree row, gap
    front_weights: tuple[float, float, float, float] = (0.5, 0.2, 0.15, 0.15)  # none, wall, fence, hedge
    # objects
    object_scale: float = 1.0
    object_rates: tuple[tuple[str, float, int, int], ...] = ()  # (kind, probability, min count, max count)
    vehicle_weights: tuple[float, ...] = (1.0,) * len(VEHICLE_PALETTE)
    absent_classes: tuple[int, ...] = ()  # classes the renderer never emits (SYNTHIA: terrain, truck, train)

    def rate(self, kind: str) -> tuple[float, int, int]:
        for name, prob, low, high in self.object_rates:
            if name == kind:
                return prob, low, high
        return 0.0, 0, 0


def _shift(**per_class: tuple[float, float, float]) -> dict[int, tuple[float, float, float]]:
    names = {"road": ROAD, "sidewalk": SIDEWALK, "building": BUILDING, "wall": WALL, "fence": FENCE,
             "pole": POLE, "light": LIGHT, "sign": SIGN, "vegetation": VEGETATION, "terrain": TERRAIN,
             "sky": SKY, "person": PERSON, "rider": RIDER, "car": CAR, "truck": TRUCK, "bus": BUS,
             "train": TRAIN, "motorcycle": MOTORCYCLE, "bicycle": BICYCLE}
    return {names[k]: v for k, v in per_class.items()}


# Each domain's settings at gap = 1. Fields not named take the dataclass default.
_DOMAIN_SPECS: dict[str, dict] = {
    # Synthetic, game-like: saturated, warm, contrasty, hard sun shadows, sharp, noise-free.
    "gta5": dict(
        palette_shift=_shift(road=(0.03, 0.01, -0.03), building=(0.05, 0.02, -0.03), vegetation=(-0.02, 0.05, -0.01),
                             terrain=(0.05, 0.07, -0.03), sky=(-0.08, -0.02, 0.08), sidewalk=(0.03, 0.0, -0.02),
                             car=(0.03, 0.0, 0.0), person=(0.04, 0.0, -0.02)),
        temperature=0.05, saturation=1.18, brightness=1.06, contrast=1.12, gamma=0.92, sky_overcast=0.2,
        sun_contrast=0.55, vignette=0.0, texture_amplitude=1.1, texture_frequency=0.9, pattern_scale=1.0,
        blur_sigma=0.0, sensor_noise=0.0, chroma_noise=0.0, horizon_range=(0.36, 0.50),
        camera_height=(1.5, 1.9), focal=(0.8, 0.95), road_half_width=(3.0, 8.0), sidewalk_width=(2.0, 4.5),
        terrain_prob=0.45, backdrop_prob=0.45, back_weights=(0.55, 0.33, 0.12),
        front_weights=(0.35, 0.25, 0.22, 0.18), object_scale=1.0,
        object_rates=(("car", 0.92, 1, 7), ("truck", 0.3, 1, 1), ("bus", 0.22, 1, 1), ("train", 0.2, 1, 1),
                      ("person", 0.7, 1, 6), ("cyclist", 0.25, 1, 2), ("motorcyclist", 0.3, 1, 2),
                      ("bicycle", 0.2, 1, 2), ("motorcycle", 0.25, 1, 2), ("pole", 0.95, 2, 5),
                      ("traffic_light", 0.55, 1, 3), ("traffic_sign", 0.7, 1, 3), ("tree", 0.5, 1, 5)),
        vehicle_weights=(1.6, 1.4, 1.0, 0.8, 0.8, 0.6, 1.2, 1.0, 0.6, 1.0, 0.8, 0.9),
    ),
    # Synthetic, higher and more top-down camera, cool-neutral palette; no terrain, truck or train.
    "synthia": dict(
        palette_shift=_shift(road=(-0.02, 0.0, 0.04), sidewalk=(0.06, 0.03, 0.0), building=(-0.04, 0.0, 0.05),
                             vegetation=(-0.02, 0.04, 0.04), sky=(0.02, 0.05, 0.06), wall=(0.05, 0.02, -0.02),
                             car=(0.0, 0.02, 0.04)),
        temperature=-0.01, saturation=1.12, brightness=1.12, contrast=1.02, gamma=0.88, sky_overcast=0.3,
        sun_contrast=0.3, vignette=0.0, texture_amplitude=0.9, texture_frequency=0.75, pattern_scale=1.25,
        blur_sigma=0.35, sensor_noise=0.0, chroma_noise=0.0, horizon_range=(0.12, 0.34),
        camera_height=(2.6, 5.0), focal=(0.65, 0.8), road_half_width=(3.5, 9.0), sidewalk_width=(3.0, 6.0),
        terrain_prob=0.4, backdrop_prob=0.55, back_weights=(0.6, 0.3, 0.1),
        front_weights=(0.4, 0.3, 0.15, 0.15), object_scale=1.1,
        object_rates=(("car", 0.9, 1, 7), ("truck", 0.0, 0, 0), ("bus", 0.3, 1, 1), ("train", 0.0, 0, 0),
                      ("person", 0.9, 2, 10), ("cyclist", 0.5, 1, 3), ("motorcyclist", 0.4, 1, 2),
                      ("bicycle", 0.3, 1, 2), ("motorcycle", 0.3, 1, 2), ("pole", 0.9, 2, 5),
                      ("traffic_light", 0.6, 1, 3), ("traffic_sign", 0.6, 1, 3), ("tree", 0.45, 1, 5)),
        vehicle_weights=(1.0, 1.2, 1.3, 1.0, 0.8, 0.8, 1.0, 0.8, 0.6, 0.6, 1.2, 0.8),
        absent_classes=(TERRAIN, TRUCK, TRAIN),
    ),
    # Real (Cityscapes-like): desaturated, cool, overcast-ish, soft, blurred and noisy; German street mix.
    "cityscapes": dict(
        palette_shift=_shift(road=(-0.03, -0.02, 0.0), sidewalk=(0.03, 0.01, 0.0), building=(0.04, 0.01, -0.04),
                             vegetation=(0.0, 0.03, 0.0), terrain=(0.07, 0.0, 0.0), sky=(0.12, 0.1, 0.02),
                             wall=(0.0, 0.0, 0.03), car=(-0.02, -0.02, 0.0), person=(-0.03, -0.03, -0.03)),
        temperature=-0.05, saturation=0.78, brightness=0.92, contrast=0.88, gamma=1.1, sky_overcast=0.6,
        sun_contrast=0.15, vignette=0.25, texture_amplitude=0.85, texture_frequency=1.3, pattern_scale=0.85,
        blur_sigma=1.1, sensor_noise=5.0, chroma_noise=1.5, horizon_range=(0.40, 0.47),
        camera_height=(1.2, 1.35), focal=(0.95, 1.05), road_half_width=(2.5, 6.5), sidewalk_width=(2.5, 5.0),
        terrain_prob=0.3, backdrop_prob=0.6, back_weights=(0.6, 0.32, 0.08),
        front_weights=(0.35, 0.22, 0.28, 0.15), object_scale=0.9,
        object_rates=(("car", 0.95, 2, 9), ("truck", 0.15, 1, 1), ("bus", 0.1, 1, 1), ("train", 0.08, 1, 1),
                      ("person", 0.85, 1, 9), ("cyclist", 0.35, 1, 2), ("motorcyclist", 0.08, 1, 1),
                      ("bicycle", 0.4, 1, 4), ("motorcycle", 0.1, 1, 1), ("pole", 1.0, 3, 6),
                      ("traffic_light", 0.5, 1, 3), ("traffic_sign", 0.8, 1, 4), ("tree", 0.7, 2, 7)),
        vehicle_weights=(0.5, 0.7, 1.5, 1.6, 1.6, 1.5, 0.3, 0.4, 0.5, 0.2, 0.6, 0.4),
    ),
    # Real (Oxford RobotCar-like): dark, overcast, flat light, grey-white sky, strong noise.
    "oxford": dict(
        palette_shift=_shift(road=(-0.06, -0.06, -0.04), sidewalk=(-0.02, -0.03, -0.03), building=(0.07, 0.02, -0.05),
                             vegetation=(0.0, 0.01, -0.01), sky=(0.16, 0.14, 0.08), wall=(0.05, 0.02, -0.03),
                             car=(0.0, 0.0, 0.0)),
        temperature=-0.03, saturation=0.65, brightness=0.78, contrast=0.82, gamma=1.2, sky_overcast=0.95,
        sun_contrast=0.0, vignette=0.35, texture_amplitude=0.8, texture_frequency=1.5, pattern_scale=0.9,
        blur_sigma=1.4, sensor_noise=9.0, chroma_noise=3.0, horizon_range=(0.42, 0.52),
        camera_height=(1.3, 1.5), focal=(0.85, 0.95), road_half_width=(2.5, 6.0), sidewalk_width=(1.5, 3.5),
        terrain_prob=0.15, backdrop_prob=0.6, back_weights=(0.7, 0.22, 0.08),
        front_weights=(0.4, 0.28, 0.17, 0.15), object_scale=0.95,
        object_rates=(("car", 0.9, 1, 8), ("truck", 0.2, 1, 1), ("bus", 0.35, 1, 1), ("train", 0.05, 1, 1),
                      ("person", 0.7, 1, 6), ("cyclist", 0.4, 1, 2), ("motorcyclist", 0.1, 1, 1),
                      ("bicycle", 0.4, 1, 3), ("motorcycle", 0.1, 1, 1), ("pole", 0.9, 2, 5),
                      ("traffic_light", 0.5, 1, 3), ("traffic_sign", 0.8, 1, 4), ("tree", 0.6, 1, 5)),
        vehicle_weights=(0.8, 0.8, 1.4, 1.4, 1.4, 1.4, 0.4, 0.5, 0.4, 0.3, 0.5, 0.4),
    ),
}

# Fields combined multiplicatively (geometric mean / power of the ratio); all other numbers linearly.
_MULTIPLICATIVE = {"saturation", "brightness", "contrast", "gamma", "texture_amplitude", "texture_frequency",
                   "pattern_scale", "object_scale", "camera_height", "focal", "vehicle_weights"}
_NON_NEGATIVE = {"sky_overcast", "sun_contrast", "vignette", "blur_sigma", "sensor_noise", "chroma_noise",
                 "terrain_prob", "backdrop_prob", "back_weights", "front_weights"}


def _spec_values(spec: dict) -> dict:
    """A domain spec with every field filled in (defaults, palette shift as a 19 x 3 tuple)."""
    base = DomainStyle(name="base")
    out = {f.name: getattr(base, f.name) for f in fields(DomainStyle) if f.name not in ("name", "gap")}
    for key, value in spec.items():
        if key == "palette_shift":
            value = tuple(tuple(value.get(c, (0.0, 0.0, 0.0))) for c in range(NUM_CLASSES))
        out[key] = value
    rates = dict((k, (p, lo, hi)) for k, p, lo, hi in out["object_rates"])
    out["object_rates"] = tuple((k, *rates.get(k, (0.0, 0, 0))) for k in OBJECT_KINDS)
    return out


def _blend(key: str, neutral, own, gap: float):
    if isinstance(own, tuple):
        return tuple(_blend(key, n, o, gap) for n, o in zip(neutral, own))
    if key in _MULTIPLICATIVE:
        return float(neutral * (own / neutral) ** gap)
    value = float(neutral + gap * (own - neutral))
    return max(value, 0.0) if key in _NON_NEGATIVE else value


def _neutral(key: str, values: list):
    if isinstance(values[0], tuple):
        return tuple(_neutral(key, [v[i] for v in values]) for i in range(len(values[0])))
    if key in _MULTIPLICATIVE:
        return float(np.exp(np.mean(np.log(values))))
    return float(np.mean(values))


def make_style(name: str, gap: float = 1.0) -> DomainStyle:
    """The style of domain `name` with its distance from the neutral (all-domain mean) style scaled by `gap`.

    gap = 0 gives the same images statistics to every domain (SYNTHIA still lacks terrain, truck and train),
    gap = 1 the calibrated domains of `DOMAIN_STYLES`, gap > 1 larger domain gaps.
    """
    if name not in _DOMAIN_SPECS:
        raise ValueError(f"unknown domain {name!r}; expected one of {sorted(_DOMAIN_SPECS)}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    specs = {k: _spec_values(v) for k, v in _DOMAIN_SPECS.items()}
    own = specs[name]
    values: dict = {}
    for key, value in own.items():
        if key == "absent_classes":
            values[key] = value
        elif key == "object_rates":
            rates = []
            for i, (kind, prob, low, high) in enumerate(value):
                others = [s["object_rates"][i] for s in specs.values()]
                n_prob = _neutral("p", [o[1] for o in others])
                n_low = _neutral("l", [o[2] for o in others])
                n_high = _neutral("h", [o[3] for o in others])
                p = min(1.0, max(0.0, n_prob + gap * (prob - n_prob)))
                lo = max(0, int(round(n_low + gap * (low - n_low))))
                hi = max(lo, int(round(n_high + gap * (high - n_high))))
                if p > 0 and hi == 0:
                    lo, hi = 1, 1
                rates.append((kind, p, lo, hi))
            values[key] = tuple(rates)
        else:
            neutral = _neutral(key, [s[key] for s in specs.values()])
            values[key] = _blend(key, neutral, value, gap)
    # Ranges must stay ordered and within sane bounds.
    lo, hi = values["horizon_range"]
    values["horizon_range"] = (min(max(lo, 0.05), 0.8), min(max(hi, lo + 0.01, 0.06), 0.85))
    for key in ("camera_height", "focal", "road_half_width", "sidewalk_width"):
        a, b = values[key]
        values[key] = (min(a, b), max(a, b))
    values["gamma"] = max(values["gamma"], 0.3)
    values["saturation"] = max(values["saturation"], 0.0)
    return DomainStyle(name=name, gap=float(gap), **values)


DOMAIN_STYLES: dict[str, DomainStyle] = {name: make_style(name) for name in DOMAINS}


# ------------------------------------------------------------------------------------------ noise helpers

def _value_noise(rng: np.random.Generator, h: int, w: int, cell_y: float, cell_x: float) -> np.ndarray:
    """Smooth noise of unit variance: a random grid every (cell_y, cell_x) pixels, smoothstep-interpolated."""
    cell_y, cell_x = max(cell_y, 1.0), max(cell_x, 1.0)
    gh, gw = int(math.ceil(h / cell_y)) + 2, int(math.ceil(w / cell_x)) + 2
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    ys = (np.arange(h, dtype=np.float32) + 0.5) / cell_y
    xs = (np.arange(w, dtype=np.float32) + 0.5) / cell_x
    iy, ix = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = ys - iy, xs - ix
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    rows0, rows1 = grid[iy], grid[iy + 1]
    top = rows0[:, ix] * (1 - fx) + rows0[:, ix + 1] * fx
    bottom = rows1[:, ix] * (1 - fx) + rows1[:, ix + 1] * fx
    out = top * (1 - fy)[:, None] + bottom * fy[:, None]
    # Interpolation shrinks the variance; renormalise with the expected factor (data-independent).
    wy = np.mean(fy ** 2 + (1 - fy) ** 2)
    wx = np.mean(fx ** 2 + (1 - fx) ** 2)
    return out / np.float32(math.sqrt(wy * wx))


def _noise_1d(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n + 2).astype(np.float32)


def _sample_1d(table: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation of a 1-D random table at positions t (wrapped)."""
    n = len(table) - 1
    t = np.mod(t, n)
    i = t.astype(np.int64)
    frac = t - i
    return table[i] * (1 - frac) + table[i + 1] * frac


def _hash(*keys: np.ndarray) -> np.ndarray:
    """A cheap deterministic hash of integer cell coordinates -> [0, 1)."""
    acc = np.zeros(np.broadcast_shapes(*[np.shape(k) for k in keys]), dtype=np.float64)
    for i, k in enumerate(keys):
        acc = acc + np.asarray(k, dtype=np.float64) * (12.9898 + 65.233 * i)
    return np.mod(np.sin(acc) * 43758.5453, 1.0).astype(np.float32)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian blur of [H, W, C] (reflect padding), vectorised over taps."""
    if sigma < 0.2:
        return image
    radius = max(1, int(math.ceil(2.5 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    h, w = image.shape[:2]
    pad = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    out = taps[0] * pad[0:h]
    for i in range(1, 2 * radius + 1):
        out += taps[i] * pad[i:i + h]
    pad = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    out = taps[0] * pad[:, 0:w]
    for i in range(1, 2 * radius + 1):
        out += taps[i] * pad[:, i:i + w]
    return out


# ------------------------------------------------------------------------------------------------ canvas

class _Face:
    """Pixels of one planar patch: the slices of its bounding box, a mask and two metric coordinates."""

    __slots__ = ("sl", "mask", "a", "b", "shape")

    def __init__(self, sl, mask, a, b):
        self.sl, self.mask = sl, mask
        self.shape = mask.shape
        self.a = np.broadcast_to(a, self.shape)
        self.b = np.broadcast_to(b, self.shape)


class _Scene:
    """One scene being drawn: camera, canvases and per-scene noise fields."""

    def __init__(self, rng: np.random.Generator, style: DomainStyle, height: int, width: int):
        self.rng, self.style, self.H, self.W = rng, style, height, width
        self.absent = set(style.absent_classes)
        self.amp = style.texture_amplitude
        self.ps = style.pattern_scale
        self.res = width / 512.0
        self.minw = max(1.0, 5.0 * self.res)            # smallest drawn width of thin parts (pixels)
        self.yh = float(height * rng.uniform(*style.horizon_range))
        self.xv = float(width * rng.uniform(0.38, 0.62))
        self.f = float(width * rng.uniform(*style.focal))
        self.hc = float(rng.uniform(*style.camera_height))
        self.rgb = np.zeros((height, width, 3), dtype=np.float32)
        self.lab = np.full((height, width), IGNORE, dtype=np.uint8)
        self.inst = np.zeros((height, width), dtype=np.uint16)
        self.n_inst = 0
        self.ys = np.arange(height, dtype=np.float32) + 0.5
        self.xs = np.arange(width, dtype=np.float32) + 0.5
        k = self.res / style.texture_frequency
        self.noise = {
            "fine": rng.standard_normal((height, width), dtype=np.float32) if k < 1.3
            else _value_noise(rng, height, width, k, k),
            "n3": _value_noise(rng, height, width, 3 * k, 3 * k),
            "n8": _value_noise(rng, height, width, 8 * k, 8 * k),
            "n24": _value_noise(rng, height, width, 24 * k, 24 * k),
            "streak": _value_noise(rng, height, width, 1.5 * k, 14 * k),
        }
        self.light = float(rng.uniform(-1, 1))   # sun side: > 0 lights left-facing surfaces

    # --- colours
    def colour(self, cls: int, base, jitter: float = 0.03) -> np.ndarray:
        c = np.asarray(base, dtype=np.float32) + np.asarray(self.style.palette_shift[cls], dtype=np.float32)
        c = c * np.float32(self.rng.uniform(1 - 2 * jitter, 1 + 2 * jitter))
        c = c + self.rng.normal(0, jitter, 3).astype(np.float32)
        return np.clip(c, 0.0, 1.0)

    def pick(self, options) -> tuple:
        return options[int(self.rng.integers(len(options)))]

    def vehicle_paint(self, cls: int) -> np.ndarray:
        w = np.asarray(self.style.vehicle_weights, dtype=np.float64)
        i = int(self.rng.choice(len(VEHICLE_PALETTE), p=w / w.sum()))
        return self.colour(cls, VEHICLE_PALETTE[i], 0.04)

    def tex(self, sl, fine=0.0, n3=0.0, n8=0.0, n24=0.0, streak=0.0) -> np.ndarray:
        out = np.zeros(self.noise["fine"][sl].shape, dtype=np.float32)
        for key, a in (("fine", fine), ("n3", n3), ("n8", n8), ("n24", n24), ("streak", streak)):
            if a:
                out += np.float32(a * self.amp) * self.noise[key][sl]
        return out

    # --- painting
    def paint(self, sl, mask, cls: int, rgb, inst: int = 0) -> None:
        if cls in self.absent:
            raise AssertionError(f"style {self.style.name} must not draw class {cls}")
        if not mask.any():
            return
        target = self.rgb[sl]
        if np.ndim(rgb) == 1:
            target[mask] = rgb
        else:
            target[mask] = rgb[mask]
        self.lab[sl][mask] = cls
        self.inst[sl][mask] = inst

    def new_instance(self) -> int:
        self.n_inst += 1
        return min(self.n_inst, 65535)

    # --- projection
    def window(self, xa: float, xb: float, ya: float, yb: float):
        """Pixel index slices whose centres lie in [xa, xb] x [ya, yb], or None."""
        ix0 = max(0, int(math.ceil(xa - 0.5)))
        ix1 = min(self.W, int(math.floor(xb - 0.5)) + 1)
        iy0 = max(0, int(math.ceil(ya - 0.5)))
        iy1 = min(self.H, int(math.floor(yb - 0.5)) + 1)
        if ix1 <= ix0 or iy1 <= iy0:
            return None
        return (slice(iy0, iy1), slice(ix0, ix1))

    def frontal(self, X0, X1, Y0, Y1, Z, min_w: float = 0.0) -> _Face | None:
        """A rectangle facing the camera at depth Z; coordinates (X, height). min_w widens thin ones."""
        if Z <= 0.3:
            return None
        s = self.f / Z
        xa, xb = self.xv + X0 * s, self.xv + X1 * s
        if xb - xa < min_w:
            mid = 0.5 * (xa + xb)
            xa, xb = mid - 0.5 * min_w, mid + 0.5 * min_w
        ya, yb = self.yh + (self.hc - Y1) * s, self.yh + (self.hc - Y0) * s
        sl = self.window(xa, xb, ya, yb)
        if sl is None:
            return None
        X = X0 + (self.xs[sl[1]] - xa) / (xb - xa) * (X1 - X0)
        Y = self.hc - (self.ys[sl[0]] - self.yh) / s
        return _Face(sl, np.ones((len(Y), len(X)), dtype=bool), X[None, :], Y[:, None])

    def side(self, Xs, Z0, Z1, Y0, Y1) -> _Face | None:
        """A plane X = Xs parallel to the road between depths Z0..Z1; coordinates (Z, height)."""
        if abs(Xs) < 0.05 or Z1 <= 0.3:
            return None
        Z0 = max(Z0, 0.3)
        xn, xf = self.xv + self.f * Xs / Z0, self.xv + self.f * Xs / Z1
        xa, xb = min(xn, xf), max(xn, xf)
        ys = [self.yh + (self.hc - Y) * self.f / Z for Y in (Y0, Y1) for Z in (Z0, Z1)]
        sl = self.window(xa, xb, min(ys), max(ys))
        if sl is None:
            return None
        Z = self.f * Xs / (self.xs[sl[1]] - self.xv)
        Y = self.hc - (self.ys[sl[0]][:, None] - self.yh) * Z[None, :] / self.f
        mask = (Y >= Y0) & (Y <= Y1) & (Z[None, :] >= Z0) & (Z[None, :] <= Z1)
        return _Face(sl, mask, Z[None, :], Y)

    def top(self, X0, X1, Z0, Z1, Yt) -> _Face | None:
        """A horizontal rectangle at height Yt (< camera height) ; coordinates (X, Z)."""
        if Yt >= self.hc - 0.02 or Z1 <= 0.3:
            return None
        Z0 = max(Z0, 0.3)
        e = self.hc - Yt
        ya, yb = self.yh + e * self.f / Z1, self.yh + e * self.f / Z0
        xs = [self.xv + self.f * X / Z for X in (X0, X1) for Z in (Z0, Z1)]
        sl = self.window(min(xs), max(xs), ya, yb)
        if sl is None:
            return None
        Z = e * self.f / (self.ys[sl[0]] - self.yh)
        X = (self.xs[sl[1]][None, :] - self.xv) * Z[:, None] / self.f
        mask = (X >= X0) & (X <= X1) & (Z[:, None] >= Z0) & (Z[:, None] <= Z1)
        return _Face(sl, mask, X, Z[:, None])

    def box(self, X0, X1, Z0, Z1, Y0, Y1, shader, cls: int, inst: int = 0, front: bool = True) -> None:
        """A box aligned with the road: its near face, the side facing the camera axis and its top."""
        faces = []
        if X0 > 0:
            faces.append(("side", self.side(X0, Z0, Z1, Y0, Y1)))
        elif X1 < 0:
            faces.append(("side", self.side(X1, Z0, Z1, Y0, Y1)))
        if Y1 < self.hc:
            faces.append(("top", self.top(X0, X1, Z0, Z1, Y1)))
        if front and Z0 > 0.3:
            faces.append(("front", self.frontal(X0, X1, Y0, Y1, Z0)))
        for kind, face in faces:
            if face is None or not face.mask.any():
                continue
            rgb, extra = shader(kind, face)
            mask = face.mask if extra is None else face.mask & extra
            self.paint(face.sl, mask, cls, rgb, inst)

    def billboard(self, X, Z, width, height, Y0=0.0, min_w: float = 0.0):
        """A camera-facing rectangle centred at lateral X: (slices, u in [0,1] (1,w), v in [0,1] (h,1), w_px,
        h_px) with v = 0 at the top; None when off screen."""
        if Z <= 0.5:
            return None
        s = self.f / Z
        w_px = max(width * s, min_w)
        h_px = height * s
        cx = self.xv + X * s
        yb = self.yh + (self.hc - Y0) * s
        xa, xb, ya = cx - 0.5 * w_px, cx + 0.5 * w_px, yb - h_px
        sl = self.window(xa, xb, ya, yb)
        if sl is None:
            return None
        u = ((self.xs[sl[1]] - xa) / w_px)[None, :]
        v = ((self.ys[sl[0]] - ya) / h_px)[:, None]
        return sl, u, v, w_px, h_px


def _shade(base: np.ndarray, t: np.ndarray) -> np.ndarray:
    """base (3,) times (1 + t) for a texture field t [h, w] -> [h, w, 3]."""
    return base[None, None, :] * (1.0 + t)[..., None]


def _mix(mask: np.ndarray, a: np.ndarray, b) -> np.ndarray:
    """Where mask: b else a (a [h, w, 3]; b (3,) or [h, w, 3])."""
    b = np.asarray(b, dtype=np.float32)
    if b.ndim == 1:
        b = np.broadcast_to(b, a.shape)
    return np.where(mask[..., None], b, a)


# ------------------------------------------------------------------------------------- class colours

ROAD_COLOURS = ((0.36, 0.36, 0.37), (0.30, 0.30, 0.32), (0.42, 0.41, 0.40), (0.33, 0.32, 0.31))
SIDEWALK_COLOURS = ((0.50, 0.49, 0.47), (0.42, 0.42, 0.43), (0.55, 0.46, 0.44), (0.38, 0.37, 0.36),
                    (0.58, 0.56, 0.52))
BUILDING_COLOURS = ((0.55, 0.53, 0.50), (0.42, 0.42, 0.44), (0.63, 0.56, 0.45), (0.50, 0.32, 0.26),
                    (0.70, 0.68, 0.64), (0.36, 0.35, 0.35), (0.60, 0.50, 0.40), (0.45, 0.48, 0.52))
WALL_COLOURS = ((0.52, 0.50, 0.47), (0.45, 0.44, 0.44), (0.58, 0.52, 0.42), (0.40, 0.38, 0.36),
                (0.55, 0.40, 0.33))
FENCE_COLOURS = ((0.45, 0.43, 0.40), (0.33, 0.35, 0.33), (0.52, 0.42, 0.30), (0.60, 0.60, 0.58))
POLE_COLOURS = ((0.45, 0.45, 0.46), (0.30, 0.31, 0.32), (0.22, 0.27, 0.22), (0.55, 0.55, 0.52))
VEGETATION_COLOURS = ((0.17, 0.32, 0.09), (0.22, 0.37, 0.12), (0.14, 0.27, 0.10), (0.25, 0.35, 0.11))
TERRAIN_COLOURS = ((0.33, 0.38, 0.20), (0.38, 0.36, 0.24), (0.28, 0.34, 0.17), (0.42, 0.38, 0.28))
GLASS_COLOURS = ((0.12, 0.15, 0.20), (0.20, 0.24, 0.28), (0.10, 0.10, 0.12), (0.28, 0.33, 0.38))
CLOTHES = ((0.08, 0.08, 0.10), (0.15, 0.18, 0.30), (0.35, 0.35, 0.37), (0.60, 0.12, 0.12), (0.62, 0.55, 0.42),
           (0.85, 0.85, 0.83), (0.22, 0.30, 0.50), (0.20, 0.35, 0.22), (0.45, 0.28, 0.15), (0.75, 0.60, 0.15))
SKIN = ((0.82, 0.64, 0.52), (0.58, 0.40, 0.30), (0.90, 0.76, 0.66), (0.38, 0.26, 0.20))
TRAIN_COLOURS = ((0.90, 0.90, 0.88), (0.85, 0.72, 0.12), (0.70, 0.12, 0.12), (0.20, 0.45, 0.70),
                 (0.25, 0.55, 0.35))
BUS_COLOURS = ((0.85, 0.75, 0.15), (0.75, 0.12, 0.10), (0.90, 0.90, 0.90), (0.15, 0.30, 0.65),
               (0.25, 0.55, 0.35))


# ------------------------------------------------------------------------------------------ scene layout

class _Street:
    """Lateral layout of the street (metres, x to the right of the camera)."""

    def __init__(self, sc: _Scene):
        rng, st = sc.rng, sc.style
        self.rl = float(rng.uniform(*st.road_half_width))
        self.rr = float(rng.uniform(*st.road_half_width))
        self.lane = float(rng.uniform(2.8, 3.6))
        self.swl = float(rng.uniform(*st.sidewalk_width))
        self.swr = float(rng.uniform(*st.sidewalk_width))
        # Ground beyond the sidewalk: terrain strip (substituted where terrain is absent).
        self.gl = float(rng.uniform(1.0, 6.0)) if rng.random() < st.terrain_prob else 0.0
        self.gr = float(rng.uniform(1.0, 6.0)) if rng.random() < st.terrain_prob else 0.0
        if TERRAIN in sc.absent:
            self.ground_cls = VEGETATION if rng.random() < 0.5 else SIDEWALK
        else:
            self.ground_cls = TERRAIN
        self.xf_l = -(self.rl + self.swl + self.gl)       # front plane of the left side (walls, fences)
        self.xf_r = self.rr + self.swr + self.gr
        self.setback_l = float(rng.uniform(0.0, 6.0)) if self.gl > 0 else 0.0
        self.setback_r = float(rng.uniform(0.0, 6.0)) if self.gr > 0 else 0.0
        self.z_end = float(rng.uniform(70.0, 220.0)) if rng.random() < st.backdrop_prob else 600.0
        self.rails = None   # lateral centre of tram rails when a train is present

    def lanes(self) -> list[float]:
        n = max(1, int((self.rl + self.rr) / self.lane))
        width = (self.rl + self.rr) / n
        return [-self.rl + width * (i + 0.5) for i in range(n)]


def _paint_sky(sc: _Scene) -> None:
    st, rng = sc.style, sc.rng
    over = min(1.0, max(0.0, st.sky_overcast + rng.normal(0, 0.2)))
    shift = np.asarray(st.palette_shift[SKY], dtype=np.float32)
    clear_top = np.array([0.28, 0.48, 0.82], np.float32) + rng.normal(0, 0.03, 3).astype(np.float32)
    clear_hor = np.array([0.68, 0.78, 0.92], np.float32) + rng.normal(0, 0.03, 3).astype(np.float32)
    grey_top = np.float32(rng.uniform(0.62, 0.8)) * np.array([1.0, 1.01, 1.04], np.float32)
    grey_hor = np.float32(rng.uniform(0.8, 0.92)) * np.array([1.0, 1.0, 1.02], np.float32)
    top = (1 - over) * clear_top + over * grey_top + shift
    hor = (1 - over) * clear_hor + over * grey_hor + shift
    t = np.clip(sc.ys / max(sc.yh, 1.0), 0, 1)[:, None, None] ** 0.8
    sky = top * (1 - t) + hor * t
    sky = np.broadcast_to(sky, (sc.H, sc.W, 3)).copy()
    # Clouds: low-frequency blobs towards white/grey; overcast skies get broad darker patches instead.
    cloud = np.clip(sc.noise["n24"] * 0.6 + sc.noise["n8"] * 0.25 - 0.25, 0, 1) * (1 - 0.5 * over)
    cloud_col = np.float32(0.92 - 0.25 * over)
    sky = sky * (1 - cloud[..., None]) + cloud_col * cloud[..., None]
    sky *= (1 + 0.04 * over * sc.noise["n24"])[..., None]
    sc.rgb[:] = sky
    sc.lab[:] = SKY


def _paint_ground(sc: _Scene, street: _Street) -> None:
    rng, ps = sc.rng, sc.ps
    y0 = max(0, int(math.floor(sc.yh + 0.5)))
    if y0 >= sc.H:
        return
    rows = slice(y0, sc.H)
    d = np.maximum(sc.ys[rows] - sc.yh, 0.05)
    Z = (sc.f * sc.hc / d)[:, None]                               # depth of each row (metres)
    X = (sc.xs[None, :] - sc.xv) * sc.hc / d[:, None]             # lateral position (metres)
    sl = (rows, slice(0, sc.W))
    road = (X >= -street.rl) & (X <= street.rr)
    side_l = (X < -street.rl) & (X >= -street.rl - street.swl)
    side_r = (X > street.rr) & (X <= street.rr + street.swr)
    walk = side_l | side_r
    ground = ~(road | walk)
    fade = np.clip(d / (12.0 * sc.res), 0.0, 1.0)[:, None]     # patterns fade out towards the horizon

    # Road: asphalt grain, patches, tyre tracks, lane markings, crossings, rails.
    c_road = sc.colour(ROAD, sc.pick(ROAD_COLOURS))
    t = sc.tex(sl, fine=0.07, n3=0.03, n8=0.04, n24=0.06)
    lanes = street.lanes()
    half = (street.rl + street.rr) / len(lanes) / 2
    for cx in lanes:
        for off in (-0.8, 0.8):
            t -= 0.07 * np.exp(-(((X - cx - off) / 0.35) ** 2)).astype(np.float32) * fade
    rgb = _shade(c_road, t)
    paint_white = np.float32(rng.uniform(0.75, 0.9))
    marks = np.zeros(X.shape, dtype=bool)
    line_w = 0.13 * ps
    dash = rng.uniform(5.0, 9.0) * ps
    for i in range(1, len(lanes)):
        bx = lanes[i] - half
        marks |= (np.abs(X - bx) < line_w) & (_frac(Z / dash) < 0.5)
    if rng.random() < 0.7:
        for bx in (-street.rl + 0.3, street.rr - 0.3):
            marks |= np.abs(X - bx) < line_w * 0.9
    if rng.random() < 0.25:   # zebra crossing
        z0 = rng.uniform(8.0, 30.0)
        marks |= (Z > z0) & (Z < z0 + 4.0 * ps) & (_frac(X / (1.0 * ps)) < 0.5) & road
    marks &= road & (d[:, None] > 1.5 * sc.res)
    worn = 1.0 - 0.25 * np.clip(sc.noise["n8"][sl], 0, 1)
    rgb = _mix(marks, rgb, paint_white * worn[..., None] * np.ones(3, np.float32))
    if street.rails is not None:
        rail = np.zeros(X.shape, dtype=bool)
        groove = np.zeros(X.shape, dtype=bool)
        for r in (street.rails - 0.72, street.rails + 0.72):
            rail |= np.abs(X - r) < 0.09
            groove |= np.abs(X - r) < 0.035
        rgb = _mix(rail & road, rgb, np.array([0.62, 0.62, 0.64], np.float32))
        rgb = _mix(groove & road, rgb, np.array([0.12, 0.12, 0.12], np.float32))
    out = np.where(road[..., None], rgb, 0)

    # Sidewalk: paving slabs (per-slab tint, joints), a light kerb along the road edge.
    c_walk = sc.colour(SIDEWALK, sc.pick(SIDEWALK_COLOURS))
    slab = rng.uniform(0.5, 1.0) * ps
    t = sc.tex(sl, fine=0.04, n8=0.03, n24=0.04)
    iz, ix = np.floor(Z / slab), np.floor(X / slab)
    t = t + 0.06 * sc.amp * (_hash(iz, ix) - 0.5)
    joints = ((_frac(Z / slab) < 0.09) | (_frac(X / slab) < 0.09)) & (fade > 0.3)
    t = np.where(joints, t - 0.18 * sc.amp, t)
    rgb = _shade(c_walk, t)
    kerb_w = 0.25 * ps
    kerb = ((X < -street.rl) & (X > -street.rl - kerb_w)) | ((X > street.rr) & (X < street.rr + kerb_w))
    rgb = _mix(kerb, rgb, np.clip(c_walk * 1.25 + 0.05, 0, 1))
    out = np.where(walk[..., None], rgb, out)

    # Beyond the sidewalks: grass / dirt (terrain), or its substitute.
    gcls = street.ground_cls
    if gcls == TERRAIN:
        c = sc.colour(TERRAIN, sc.pick(TERRAIN_COLOURS))
        t = sc.tex(sl, fine=0.05, n24=0.1, streak=0.12)
        rgb = _shade(c, t)
        dirt = sc.noise["n24"][sl] * 0.7 + sc.noise["n8"][sl] * 0.3 > 0.9
        rgb = _mix(dirt, rgb, c * np.array([1.25, 0.95, 0.85], np.float32))
    elif gcls == VEGETATION:
        c = sc.colour(VEGETATION, sc.pick(VEGETATION_COLOURS))
        rgb = _shade(c, sc.tex(sl, fine=0.15, n3=0.3, n8=0.12))
    else:
        c = sc.colour(SIDEWALK, sc.pick(SIDEWALK_COLOURS))
        iz, ix = np.floor(Z / (0.7 * ps)), np.floor(X / (0.7 * ps))
        rgb = _shade(c, sc.tex(sl, fine=0.04, n24=0.05) + 0.08 * (_hash(iz, ix + 7) - 0.5))
    out = np.where(ground[..., None], rgb, out)

    labels = np.where(road, ROAD, np.where(walk, SIDEWALK, gcls)).astype(np.uint8)
    sc.rgb[rows] = out
    sc.lab[rows] = labels
    sc.ground_X, sc.ground_Z, sc.ground_rows = X, Z, rows


# ------------------------------------------------------------------------------------ facade shaders

def _building_shader(sc: _Scene, top_h: float, side_sign: float):
    rng, ps = sc.rng, sc.ps
    base = sc.colour(BUILDING, sc.pick(BUILDING_COLOURS), 0.04)
    glass = sc.colour(BUILDING, sc.pick(GLASS_COLOURS), 0.02)
    floor_h = rng.uniform(2.9, 3.6) * ps
    spacing = rng.uniform(2.2, 3.8) * ps
    win_w = rng.uniform(0.35, 0.6)
    win_h = rng.uniform(0.4, 0.6)
    shop = rng.random() < 0.4
    frame = rng.random() < 0.5
    roof = sc.colour(BUILDING, (0.25, 0.24, 0.24), 0.03)
    lit = 1.0 + sc.style.sun_contrast * 0.35 * sc.light * side_sign

    def shader(kind, face):
        if kind == "top":
            return _shade(roof, sc.tex(face.sl, fine=0.05, n8=0.05)), None
        u, h = face.a, face.b
        t = sc.tex(face.sl, fine=0.04, n3=0.03, n24=0.05)
        rgb = _shade(base * (lit if kind == "side" else 1.0 / max(lit, 0.5)), t)
        fu, fh = _frac(u / spacing), _frac(h / floor_h)
        cell = _hash(np.floor(u / spacing), np.floor(h / floor_h))
        win = (np.abs(fu - 0.5) < win_w / 2) & (np.abs(fh - 0.55) < win_h / 2) & (h > floor_h) \
            & (h < top_h - 0.6)
        if shop:
            win |= (h > 0.3) & (h < floor_h - 0.6) & (np.abs(_frac(u / (2 * spacing)) - 0.5) < 0.42)
        if frame:
            fr = (np.abs(fu - 0.5) < win_w / 2 + 0.06) & (np.abs(fh - 0.55) < win_h / 2 + 0.05) \
                & (h > floor_h) & (h < top_h - 0.6)
            rgb = _mix(fr, rgb, np.clip(base * 1.2 + 0.05, 0, 1))
        wcol = glass[None, None, :] * (0.7 + 0.7 * cell)[..., None] * (1 + sc.tex(face.sl, n3=0.05))[..., None]
        rgb = _mix(win, rgb, wcol)
        cornice = (h > top_h - 0.45)
        rgb = _mix(cornice, rgb, base * 0.75)
        return rgb, None
    return shader


def _wall_shader(sc: _Scene, top_h: float):
    rng, ps = sc.rng, sc.ps
    base = sc.colour(WALL, sc.pick(WALL_COLOURS), 0.04)
    bricks = rng.random() < 0.6
    row = rng.uniform(0.22, 0.32) * ps
    brick_len = row * rng.uniform(1.8, 2.4)
    panel = rng.uniform(1.5, 3.0) * ps

    def shader(kind, face):
        u, h = face.a, face.b
        t = sc.tex(face.sl, fine=0.05, n8=0.04, n24=0.06)
        if kind == "top":
            return _shade(np.clip(base * 1.15, 0, 1), t), None
        if bricks:
            r = np.floor(h / row)
            off = 0.5 * np.mod(r, 2)
            mortar = (_frac(h / row) < 0.16) | (_frac(u / brick_len + off) < 0.08)
            t = t + 0.08 * sc.amp * (_hash(r, np.floor(u / brick_len + off)) - 0.5)
            t = np.where(mortar, t + 0.22 * sc.amp, t)
        else:
            t = np.where(_frac(u / panel) < 0.04, t - 0.22 * sc.amp, t)
            t = t - 0.08 * sc.amp * np.clip(sc.noise["n8"][face.sl], 0, None) * (h < top_h * 0.5)
        rgb = _shade(base, t)
        rgb = _mix(h > top_h - 0.12, rgb, np.clip(base * 1.2 + 0.04, 0, 1))
        return rgb, None
    return shader


def _fence_shader(sc: _Scene, top_h: float):
    rng, ps = sc.rng, sc.ps
    base = sc.colour(FENCE, sc.pick(FENCE_COLOURS), 0.04)
    mesh = rng.random() < 0.4
    bar = rng.uniform(0.12, 0.22) * ps
    post = rng.uniform(2.0, 3.0) * ps

    def shader(kind, face):
        u, h = face.a, face.b
        behind = sc.rgb[face.sl]
        if kind == "top":
            return _shade(base, sc.tex(face.sl, fine=0.04)), None
        if mesh:
            solid = (_frac((u + h) / (0.3 * ps)) < 0.3) | (_frac((u - h) / (0.3 * ps)) < 0.3)
        else:
            solid = _frac(u / bar) < 0.45
        solid |= (_frac(u / post) < 0.05) | (h > top_h - 0.1) | (np.abs(h - 0.25) < 0.06)
        t = sc.tex(face.sl, fine=0.06, n3=0.03)
        rgb = np.where(solid[..., None], _shade(base, t), 0.55 * behind + 0.45 * base * 0.5)
        return rgb, None
    return shader


def _vegetation_shader(sc: _Scene, top_h: float, bumps: float):
    rng = sc.rng
    base = sc.colour(VEGETATION, sc.pick(VEGETATION_COLOURS), 0.04)
    table = _noise_1d(rng, 64)
    period = rng.uniform(1.5, 4.0)

    def shader(kind, face):
        u, h = face.a, face.b
        t = sc.tex(face.sl, fine=0.15, n3=0.3, n8=0.12)
        t = t - 0.25 * np.clip(sc.noise["n8"][face.sl], 0, None) * sc.amp
        rgb = np.clip(_shade(base, t), 0, 1)
        if kind == "top":
            return rgb, None
        edge = top_h + bumps * (_sample_1d(table, u / period) * 0.6 + 0.4 * np.abs(np.sin(u * 1.3 / period)))
        return rgb, h <= edge
    return shader


def _paint_sides(sc: _Scene, street: _Street) -> None:
    """Both sides of the street: a back row (buildings / tree rows / gaps) behind a front row (walls, fences,
    hedges or nothing), all as boxes painted far to near."""
    rng, st = sc.rng, sc.style
    boxes = []   # (Z0, draw function)
    for sign, xf, setback in ((-1.0, street.xf_l, street.setback_l), (1.0, street.xf_r, street.setback_r)):
        # Nearest depth where this side is still inside the image (left/right edge or bottom row).
        x_edge = 0.0 if sign < 0 else float(sc.W)
        z_near = max(0.5, min(sc.f * abs(xf) / max(abs(x_edge - sc.xv), 1.0),
                              sc.f * sc.hc / max(sc.H - sc.yh, 1.0)) * 0.5)
        xb = xf + sign * setback
        z = z_near - rng.uniform(0, 10)
        bw = np.asarray(st.back_weights, dtype=np.float64)
        while z < street.z_end:
            length = float(rng.uniform(8.0, 30.0))
            z1 = min(z + length, street.z_end)
            kind = ("building", "trees", "gap")[int(rng.choice(3, p=bw / bw.sum()))]
            inner, outer = (xb, xb + sign * rng.uniform(8, 20))
            x0, x1 = min(inner, outer), max(inner, outer)
            if kind == "building":
                top_h = float(rng.uniform(6.0, 26.0))
                boxes.append((z, _BoxJob(x0, x1, z, z1, 0.0, top_h, BUILDING,
                                         _building_shader(sc, top_h, -sign))))
            elif kind == "trees":
                top_h = float(rng.uniform(4.0, 10.0))
                boxes.append((z, _BoxJob(x0, x1, z, z1, 0.0, top_h + 2.5, VEGETATION,
                                         _vegetation_shader(sc, top_h, 2.5))))
            z = z1 + (rng.uniform(1.0, 8.0) if rng.random() < 0.3 else 0.0)
        # Front row.
        fw = np.asarray(st.front_weights, dtype=np.float64)
        z = z_near - rng.uniform(0, 5)
        while z < min(street.z_end, 120.0):
            length = float(rng.uniform(5.0, 25.0))
            z1 = min(z + length, street.z_end)
            kind = ("none", "wall", "fence", "hedge")[int(rng.choice(4, p=fw / fw.sum()))]
            if setback == 0.0 and kind != "none" and rng.random() < 0.35:
                kind = "none"   # buildings right on the sidewalk: little in front of them
            thick = 0.3
            x0, x1 = (xf - thick, xf) if sign < 0 else (xf, xf + thick)
            if kind == "wall":
                top_h = float(rng.uniform(0.8, 2.4))
                boxes.append((z - 1e-3, _BoxJob(x0, x1, z, z1, 0.0, top_h, WALL, _wall_shader(sc, top_h))))
            elif kind == "fence":
                top_h = float(rng.uniform(0.9, 2.0))
                boxes.append((z - 1e-3, _BoxJob(x0, x1, z, z1, 0.0, top_h, FENCE, _fence_shader(sc, top_h))))
            elif kind == "hedge":
                top_h = float(rng.uniform(0.6, 1.5))
                x0, x1 = (xf - 0.8, xf) if sign < 0 else (xf, xf + 0.8)
                boxes.append((z - 1e-3, _BoxJob(x0, x1, z, z1, 0.0, top_h + 0.3, VEGETATION,
                                                _vegetation_shader(sc, top_h, 0.3))))
            z = z1
    for _, job in sorted(boxes, key=lambda item: -item[0]):
        job.draw(sc)


class _BoxJob:
    def __init__(self, x0, x1, z0, z1, y0, y1, cls, shader):
        self.args = (x0, x1, z0, z1, y0, y1)
        self.cls, self.shader = cls, shader

    def draw(self, sc: _Scene) -> None:
        sc.box(*self.args, self.shader, self.cls)


def _paint_backdrop(sc: _Scene, street: _Street) -> None:
    """Buildings and trees closing the street at depth z_end (frontal faces only)."""
    if street.z_end >= 500:
        return
    rng = sc.rng
    z = street.z_end
    half = (sc.W / sc.f) * z   # lateral extent covering the image
    x = -half - rng.uniform(0, 10)
    while x < half:
        w = float(rng.uniform(8, 30))
        if rng.random() < 0.7:
            top_h = float(rng.uniform(6, 30))
            sh = _building_shader(sc, top_h, 0.0)
            face = sc.frontal(x, x + w, 0.0, top_h, z)
            cls = BUILDING
        else:
            top_h = float(rng.uniform(5, 12))
            sh = _vegetation_shader(sc, top_h, 3.0)
            face = sc.frontal(x, x + w, 0.0, top_h + 3.0, z)
            cls = VEGETATION
        if face is not None:
            rgb, extra = sh("front", face)
            sc.paint(face.sl, face.mask if extra is None else face.mask & extra, cls, rgb)
        x += w


# ---------------------------------------------------------------------------------------------- objects

def _seg_dist(px, py, ax, ay, bx, by):
    """Distance from points (px, py) to the segment a-b (all in pixels)."""
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy + 1e-9
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0, 1)
    return np.hypot(px - ax - t * dx, py - ay - t * dy)


def _draw_car(sc: _Scene, obj: dict) -> None:
    rng = sc.rng
    inst = sc.new_instance()
    X, Z = obj["X"], obj["Z"]
    s = sc.style.object_scale
    width = rng.uniform(1.7, 1.95) * s
    length = rng.uniform(3.9, 4.8) * s
    low_h = rng.uniform(0.75, 0.95) * s
    cab_h = low_h + rng.uniform(0.5, 0.75) * s
    suv = rng.random() < 0.25
    if suv:
        cab_h += 0.25 * s
    body = sc.vehicle_paint(CAR)
    glass = sc.colour(CAR, sc.pick(GLASS_COLOURS), 0.02)
    tyre = np.array([0.05, 0.05, 0.05], np.float32)
    oncoming = obj.get("oncoming", False)
    x0, x1 = X - width / 2, X + width / 2
    z0, z1 = Z, Z + length
    cab_z0 = z0 + rng.uniform(0.6, 1.2) * s
    cab_z1 = z1 - rng.uniform(0.8, 1.3) * s
    lamp = np.array([0.95, 0.92, 0.8], np.float32) if oncoming else np.array([0.8, 0.05, 0.05], np.float32)
    _ground_shadow(sc, x0 - 0.15, x1 + 0.15, z0 - 0.2, z1 + 0.2, 0.45)

    def lower(kind, face):
        t = sc.tex(face.sl, fine=0.02, n24=0.03)
        if kind == "top":
            return _shade(body * 1.08, t), None
        u, h = face.a, face.b
        sheen = np.clip((h - 0.2) / max(low_h, 0.1), 0, 1) * 0.15
        rgb = _shade(body, t + sheen)
        if kind == "side":
            r = 0.33 * s
            wheel = False
            for wz in (z0 + 0.85 * s, z1 - 0.85 * s):
                wheel = wheel | ((u - wz) ** 2 + (h - r) ** 2 < r * r)
            rgb = _mix(wheel, rgb, tyre)
            hub = False
            for wz in (z0 + 0.85 * s, z1 - 0.85 * s):
                hub = hub | ((u - wz) ** 2 + (h - r) ** 2 < (0.45 * r) ** 2)
            rgb = _mix(hub, rgb, np.array([0.55, 0.55, 0.57], np.float32))
            rgb = _mix((h < 0.22) & ~wheel, rgb, body * 0.3)
            return rgb, None
        # front / rear face
        rgb = _mix(h < 0.28, rgb, tyre)   # bumper shadow and tyres
        rel = np.abs(u - X) / (width / 2)
        rgb = _mix((rel > 0.72) & (np.abs(h - low_h * 0.78) < 0.08 * s), rgb, lamp)
        rgb = _mix((rel < 0.2) & (np.abs(h - low_h * 0.5) < 0.07 * s), rgb, np.array([0.9, 0.9, 0.85], np.float32))
        return rgb, None

    def cabin(kind, face):
        t = sc.tex(face.sl, fine=0.02, n24=0.03)
        if kind == "top":
            return _shade(body * 1.1, t), None
        u, h = face.a, face.b
        rgb = _shade(body, t)
        frac_h = (h - low_h) / max(cab_h - low_h, 0.05)
        if kind == "side":
            span = (u - cab_z0) / max(cab_z1 - cab_z0, 0.1)
            win = (frac_h > 0.12) & (frac_h < 0.88) & (span > 0.05) & (span < 0.95) \
                & (np.abs(span - 0.5) > 0.03)
            # slanted pillars: the window narrows towards the roof
            win &= (span > 0.05 + 0.2 * frac_h) & (span < 0.95 - 0.15 * frac_h)
            extra = (span > 0.12 * frac_h) & (span < 1 - 0.12 * frac_h)
        else:
            rel = np.abs(u - X) / (width / 2)
            win = (frac_h > 0.1) & (frac_h < 0.85) & (rel < 0.86 - 0.12 * frac_h)
            extra = rel < 1.0 - 0.15 * frac_h
        sheen = (0.25 * (1 - frac_h))[..., None]
        rgb = _mix(win, rgb, glass[None, None, :] * (1.0 + sheen))
        return rgb, extra

    xi = 0.08 * s
    sc.box(x0, x1, z0, z1, 0.0, low_h, lower, CAR, inst)
    sc.box(x0 + xi, x1 - xi, cab_z0, cab_z1, low_h, cab_h, cabin, CAR, inst)


def _ground_shadow(sc: _Scene, x0, x1, z0, z1, strength) -> None:
    face = sc.top(x0, x1, z0, z1, 0.0)
    if face is None:
        return
    target = sc.rgb[face.sl]
    target[face.mask] *= np.float32(1 - strength)


def _draw_truck(sc: _Scene, obj: dict) -> None:
    rng = sc.rng
    inst = sc.new_instance()
    X, Z = obj["X"], obj["Z"]
    s = sc.style.object_scale
    width = rng.uniform(2.3, 2.55) * s
    cargo_len = rng.uniform(4.5, 8.0) * s
    cab_len = rng.uniform(1.8, 2.3) * s
    height = rng.uniform(3.0, 3.9) * s
    cab_h = rng.uniform(2.6, 3.0) * s
    cab_col = sc.vehicle_paint(TRUCK)
    box_col = sc.colour(TRUCK, sc.pick(((0.85, 0.85, 0.83), (0.6, 0.6, 0.6), tuple(cab_col), (0.3, 0.35, 0.5))),
                        0.03)
    glass = sc.colour(TRUCK, sc.pick(GLASS_COLOURS), 0.02)
    rib = rng.uniform(0.4, 0.7)
    oncoming = obj.get("oncoming", False)
    x0, x1 = X - width / 2, X + width / 2
    if oncoming:   # cab first (near), cargo behind
        cab_z, cargo_z = (Z, Z + cab_len), (Z + cab_len + 0.3, Z + cab_len + 0.3 + cargo_len)
    else:
        cargo_z, cab_z = (Z, Z + cargo_len), (Z + cargo_len + 0.3, Z + cargo_len + 0.3 + cab_len)
    _ground_shadow(sc, x0 - 0.2, x1 + 0.2, Z - 0.2, Z + cargo_len + cab_len + 0.5, 0.45)
    tyre = np.array([0.05, 0.05, 0.05], np.float32)

    def cargo(kind, face):
        t = sc.tex(face.sl, fine=0.03, n24=0.05)
        if kind == "top":
            return _shade(box_col * 0.95, t), None
        u, h = face.a, face.b
        ribs = _frac(u / rib) < 0.12
        t = np.where(ribs, t - 0.12, t)
        rgb = _shade(box_col, t)
        rgb = _mix(h < 1.0 * s, rgb, np.array([0.1, 0.1, 0.1], np.float32))   # chassis
        if kind == "side":
            r = 0.5 * s
            wheel = False
            for wz in (cargo_z[0] + 1.0 * s, cargo_z[0] + 2.1 * s):
                wheel = wheel | ((u - wz) ** 2 + (h - r) ** 2 < r * r)
            rgb = _mix(wheel, rgb, tyre)
            return rgb, (h > 1.0 * s) | wheel | (np.abs(h - 0.7 * s) < 0.15 * s)
        rel = np.abs(u - X) / (width / 2)
        rgb = _mix((rel > 0.8) & (h < 0.9 * s), rgb, tyre)
        rgb = _mix((rel > 0.75) & (np.abs(h - 0.95 * s) < 0.08 * s), rgb, np.array([0.85, 0.1, 0.05], np.float32))
        return rgb, None

    def cab(kind, face):
        t = sc.tex(face.sl, fine=0.02, n24=0.03)
        rgb = _shade(cab_col, t)
        if kind == "top":
            return rgb, None
        u, h = face.a, face.b
        frac_h = h / cab_h
        if kind == "side":
            span = (u - cab_z[0]) / cab_len
            win = (frac_h > 0.6) & (frac_h < 0.9) & (span > 0.15) & (span < 0.85)
        else:
            rel = np.abs(u - X) / (width / 2)
            win = (frac_h > 0.55) & (frac_h < 0.9) & (rel < 0.88)
        rgb = _mix(win, rgb, glass)
        rgb = _mix(h < 0.5 * s, rgb, tyre)
        return rgb, None

    sc.box(x0, x1, *cargo_z, 0.0, height, cargo, TRUCK, inst)
    sc.box(x0, x1, *cab_z, 0.0, cab_h, cab, TRUCK, inst, front=oncoming)


def _draw_bus(sc: _Scene, obj: dict) -> None:
    rng = sc.rng
    inst = sc.new_instance()
    X, Z = obj["X"], obj["Z"]
    s = sc.style.object_scale
    width = rng.uniform(2.45, 2.6) * s
    length = rng.uniform(10.0, 13.0) * s
    height = rng.uniform(2.9, 3.3) * s
    if rng.random() < 0.15:
        height *= 1.4   # double-decker
    col = sc.colour(BUS, sc.pick(BUS_COLOURS) if rng.random() < 0.6 else tuple(sc.vehicle_paint(BUS)), 0.03)
    stripe = sc.colour(BUS, sc.pick(BUS_COLOURS), 0.03)
    glass = sc.colour(BUS, sc.pick(GLASS_COLOURS), 0.02)
    oncoming = obj.get("oncoming", False)
    pillar = rng.uniform(1.2, 1.6)
    x0, x1 = X - width / 2, X + width / 2
    _ground_shadow(sc, x0 - 0.2, x1 + 0.2, Z - 0.2, Z + length + 0.3, 0.45)
    tyre = np.array([0.05, 0.05, 0.05], np.float32)
    decks = 2 if height > 3.6 * s else 1

    def shader(kind, face):
        t = sc.tex(face.sl, fine=0.02, n24=0.04)
        rgb = _shade(col, t)
        if kind == "top":
            return _shade(col * 0.9, t), None
        u, h = face.a, face.b
        frac_h = h / height
        rgb = _mix(np.abs(frac_h - 0.3) < 0.03, rgb, stripe)
        if kind == "side":
            win = False
            for k in range(decks):
                lo, hi = (0.38 + 0.3 * k, 0.62 + 0.3 * k) if decks == 2 else (0.38, 0.85)
                win = win | ((frac_h > lo) & (frac_h < min(hi, 0.92)))
            win &= _frac((u - Z) / pillar) > 0.1
            door = (np.abs(u - Z - 1.2 * s) < 0.55 * s) & (frac_h > 0.08) & (frac_h < 0.85)
            rgb = _mix(win | door, rgb, glass)
            r = 0.5 * s
            wheel = False
            for wz in (Z + 2.2 * s, Z + length - 2.6 * s):
                wheel = wheel | ((u - wz) ** 2 + (h - r) ** 2 < r * r)
            rgb = _mix(wheel, rgb, tyre)
            return rgb, (h > 0.35 * s) | wheel
        rel = np.abs(u - X) / (width / 2)
        if oncoming:
            win = (frac_h > 0.4) & (frac_h < 0.88) & (rel < 0.9)
            sign_band = (frac_h > 0.9) & (frac_h < 0.97) & (rel < 0.7)
            rgb = _mix(sign_band, rgb, np.array([0.9, 0.55, 0.1], np.float32))
        else:
            win = (frac_h > 0.65) & (frac_h < 0.9) & (rel < 0.8)
        rgb = _mix(win, rgb, glass)
        rgb = _mix((rel > 0.75) & (np.abs(frac_h - 0.2) < 0.04), rgb,
                   np.array([0.95, 0.9, 0.8], np.float32) if oncoming else np.array([0.8, 0.05, 0.05], np.float32))
        rgb = _mix(h < 0.3 * s, rgb, tyre)
        return rgb, None

    sc.box(x0, x1, Z, Z + length, 0.0, height, shader, BUS, inst)


def _draw_train(sc: _Scene, obj: dict) -> None:
    """A tram on rails in the street: long car(s) with a window row, doors, joints and a pantograph."""
    rng = sc.rng
    inst = sc.new_instance()
    X, Z = obj["X"], obj["Z"]
    s = sc.style.object_scale
    width = 2.5 * s
    length = rng.uniform(18.0, 32.0) * s
    height = rng.uniform(3.3, 3.7) * s
    col = sc.colour(TRAIN, sc.pick(TRAIN_COLOURS), 0.03)
    stripe = sc.colour(TRAIN, sc.pick(TRAIN_COLOURS), 0.03)
    glass = sc.colour(TRAIN, sc.pick(GLASS_COLOURS), 0.02)
    section = rng.uniform(7.0, 10.0) * s
    x0, x1 = X - width / 2, X + width / 2

    def shader(kind, face):
        t = sc.tex(face.sl, fine=0.02, n24=0.03)
        rgb = _shade(col, t)
        if kind == "top":
            return _shade(np.array([0.35, 0.35, 0.36], np.float32), t), None
        u, h = face.a, face.b
        frac_h = h / height
        rgb = _mix((frac_h > 0.2) & (frac_h < 0.33), rgb, stripe)
        if kind == "side":
            pos = _frac((u - Z) / section)
            win = (frac_h > 0.42) & (frac_h < 0.82) & (_frac((u - Z) / (1.1 * s)) > 0.15)
            door = (np.abs(pos - 0.5) < 0.07) & (frac_h > 0.1) & (frac_h < 0.85)
            joint = pos < 0.03
            rgb = _mix(win | door, rgb, glass)
            rgb = _mix(joint, rgb, np.array([0.12, 0.12, 0.12], np.float32))
            rgb = _mix(frac_h < 0.1, rgb, np.array([0.15, 0.15, 0.15], np.float32))
            return rgb, None
        rel = np.abs(u - X) / (width / 2)
        win = (frac_h > 0.42) & (frac_h < 0.88) & (rel < 0.85)
        rgb = _mix(win, rgb, glass)
        rgb = _mix((rel > 0.6) & (rel < 0.85) & (np.abs(frac_h - 0.27) < 0.04), rgb,
                   np.array([0.98, 0.95, 0.8], np.float32))
        rgb = _mix(frac_h < 0.1, rgb, np.array([0.15, 0.15, 0.15], np.float32))
        return rgb, None

    sc.box(x0, x1, Z, Z + length, 0.1, height, shader, TRAIN, inst)
    # Pantograph: a thin diamond above the roof near the front (frontal billboard).
    pz = Z + rng.uniform(2.0, 5.0) * s
    bb = sc.billboard(X, pz, 1.6 * s, 0.9 * s, Y0=height, min_w=0)
    if bb is not None:
        sl, u, v, w_px, h_px = bb
        px, py = u * w_px, v * h_px
        lw = max(0.6, 0.05 * (sc.f / pz))
        m = (_seg_dist(px, py, 0.1 * w_px, 0.0, 0.5 * w_px, h_px) < lw) | \
            (_seg_dist(px, py, 0.9 * w_px, 0.0, 0.5 * w_px, h_px) < lw) | (py < max(lw, 0.08 * h_px))
        sc.paint(sl, m, TRAIN, np.array([0.2, 0.2, 0.2], np.float32), inst)


def _person_mask(sc, u, v, w_px, h_px, pose: float, seated: bool):
    """Parts of a standing / seated person in a bbox (u, v in [0, 1]): head, torso, arms, legs."""
    head_r = 0.075
    aspect = h_px / max(w_px, 1e-3)
    head = ((u - 0.5) * 0.9 / (head_r * aspect)) ** 2 + ((v - head_r - 0.01) / head_r) ** 2 < 1
    shoulders = 0.16
    if seated:
        torso = (v > 0.13) & (v < 0.55) & (np.abs(u - 0.5 - 0.1 * (v - 0.13)) < 0.3 - 0.05 * (v - 0.13))
        arms = (v > 0.17) & (v < 0.45) & (np.abs(u - 0.5) > 0.2) & (np.abs(u - 0.5) < 0.47)
        legs = (v > 0.52) & (np.abs(u - 0.5) < 0.32) & (np.abs(u - 0.5) > 0.05) & (v < 0.95)
    else:
        torso = (v > 0.13) & (v < 0.55) & (np.abs(u - 0.5) < 0.34 - shoulders * (v - 0.13))
        arms = (v > 0.16) & (v < 0.5) & (np.abs(u - 0.5) > 0.3) & (np.abs(u - 0.5) < 0.46 + 0.08 * (v - 0.16))
        spread = pose * (v - 0.52)
        legs = (v > 0.52) & (v < 1.0) & ((np.abs(u - 0.36 + spread) < 0.12) | (np.abs(u - 0.64 - spread) < 0.12))
    return head, torso, arms, legs


def _draw_person(sc: _Scene, obj: dict, cls: int = PERSON, seated: bool = False, y0: float = 0.0,
                 helmet=None) -> None:
    rng = sc.rng
    s = sc.style.object_scale
    height = rng.uniform(1.55, 1.9) * s
    width = rng.uniform(0.5, 0.62) * s
    bb = sc.billboard(obj["X"], obj["Z"], width, height, Y0=y0, min_w=sc.minw)
    if bb is None:
        return
    sl, u, v, w_px, h_px = bb
    inst = sc.new_instance()
    head, torso, arms, legs = _person_mask(sc, u, v, w_px, h_px, rng.uniform(0.0, 0.4), seated)
    top = sc.colour(cls, sc.pick(CLOTHES), 0.03)
    bottom = sc.colour(cls, sc.pick(CLOTHES[:4] + CLOTHES[6:7]), 0.03)
    skin = sc.colour(cls, sc.pick(SKIN), 0.02)
    hair = sc.colour(cls, (0.1, 0.07, 0.05), 0.02)
    shape = sc.lab[sl].shape
    t = sc.tex(sl, fine=0.06, n3=0.04)
    rgb = _shade(top, t)
    rgb = _mix(np.broadcast_to(legs, shape), rgb, _shade(bottom, t))
    rgb = _mix(np.broadcast_to(arms & (v > 0.42), shape), rgb, skin)
    rgb = _mix(np.broadcast_to(head, shape), rgb, skin if helmet is None else helmet)
    if helmet is None:
        rgb = _mix(np.broadcast_to(head & (v < 0.06), shape), rgb, hair)
    if cls == PERSON and rng.random() < 0.3:   # bag
        bag = (v > 0.35) & (v < 0.55) & (np.abs(u - 0.85) < 0.12)
        rgb = _mix(np.broadcast_to(bag, shape), rgb, sc.colour(cls, sc.pick(CLOTHES), 0.03))
        arms = arms | bag
    mask = np.broadcast_to(head | torso | arms | legs, shape)
    sc.paint(sl, mask, cls, rgb, inst)


def _draw_two_wheeler(sc: _Scene, obj: dict, cls: int, inst: int | None = None) -> None:
    """A bicycle (wheel discs, thin frame; the inside of the wheels shows what is behind) or a motorcycle
    (solid body between two wheels), seen from the side or three-quarters."""
    rng = sc.rng
    s = sc.style.object_scale
    motor = cls == MOTORCYCLE
    length = (rng.uniform(1.9, 2.2) if motor else rng.uniform(1.6, 1.8)) * s
    length *= obj.get("yaw", 1.0)
    height = (rng.uniform(1.1, 1.3) if motor else rng.uniform(0.95, 1.1)) * s
    bb = sc.billboard(obj["X"], obj["Z"], length, height, min_w=sc.minw)
    if bb is None:
        return
    sl, u, v, w_px, h_px = bb
    inst = sc.new_instance() if inst is None else inst
    px, py = u * w_px, v * h_px
    r_px = 0.34 / height * h_px if not motor else 0.32 / height * h_px
    cy = h_px - r_px
    cxs = (0.2 * w_px, 0.8 * w_px)
    lw = max(0.6, (0.06 if motor else 0.035) * h_px)
    tyre = np.array([0.05, 0.05, 0.05], np.float32)
    frame_col = obj.get("paint") if obj.get("paint") is not None else sc.vehicle_paint(cls)
    discs = [np.hypot((px - cx) / max(r_px * obj.get("yaw", 1.0), 0.5), (py - cy) / max(r_px, 0.5)) for cx in cxs]
    inside = (discs[0] < 1) | (discs[1] < 1)
    ring = ((discs[0] < 1) & (discs[0] > 0.72)) | ((discs[1] < 1) & (discs[1] > 0.72))
    behind = sc.rgb[sl]
    shape = inside.shape
    if motor:
        body = ((px - 0.5 * w_px) / (0.3 * w_px)) ** 2 + ((py - 0.45 * h_px) / (0.22 * h_px)) ** 2 < 1
        tank = (np.abs(px - 0.5 * w_px) < 0.28 * w_px) & (py > 0.22 * h_px) & (py < 0.42 * h_px)
        bars = _seg_dist(px, py, 0.8 * w_px, cy, 0.75 * w_px, 0.05 * h_px) < 1.6 * lw
        t = sc.tex(sl, fine=0.03)
        rgb = _shade(frame_col, np.broadcast_to(t, shape))
        engine = (np.abs(px - 0.5 * w_px) < 0.14 * w_px) & (np.abs(py - 0.65 * h_px) < 0.12 * h_px)
        rgb = _mix(np.broadcast_to(engine, shape), rgb, np.array([0.45, 0.45, 0.47], np.float32))
        rgb = _mix(inside, rgb, tyre)
        hub = (discs[0] < 0.45) | (discs[1] < 0.45)
        rgb = _mix(hub, rgb, np.array([0.5, 0.5, 0.52], np.float32))
        mask = inside | np.broadcast_to(body | tank | bars, shape)
    else:
        seat = (0.38 * w_px, 0.2 * h_px)
        bar = (0.75 * w_px, 0.08 * h_px)
        pedal = (0.45 * w_px, cy)
        frame = (_seg_dist(px, py, cxs[0], cy, *seat) < lw) | (_seg_dist(px, py, *seat, *pedal) < lw) | \
            (_seg_dist(px, py, *pedal, cxs[1], cy) < lw) | (_seg_dist(px, py, *seat, *bar) < lw) | \
            (_seg_dist(px, py, *bar, cxs[1], cy) < lw) | (_seg_dist(px, py, *pedal, cxs[0], cy) < lw)
        rgb = 0.7 * behind + 0.3 * np.array([0.1, 0.1, 0.1], np.float32)
        spokes = inside & (_frac(np.arctan2(py - cy, px - np.where(px < 0.5 * w_px, cxs[0], cxs[1])) * 2.5) < 0.12)
        rgb = _mix(spokes, rgb, np.array([0.55, 0.55, 0.55], np.float32))
        rgb = _mix(ring, rgb, tyre)
        rgb = _mix(np.broadcast_to(frame, shape), rgb, frame_col)
        mask = inside | np.broadcast_to(frame, shape)
    sc.paint(sl, mask, cls, rgb, inst)


def _draw_rider(sc: _Scene, obj: dict, vehicle: int) -> None:
    rng = sc.rng
    s = sc.style.object_scale
    inst = sc.new_instance()
    helmet = sc.colour(RIDER, sc.pick(((0.1, 0.1, 0.1), (0.85, 0.85, 0.85), (0.7, 0.1, 0.1), (0.1, 0.2, 0.6))),
                       0.02) if (vehicle == MOTORCYCLE or rng.random() < 0.4) else None
    rider = dict(obj, X=obj["X"] + 0.05, Z=obj["Z"] - 0.01)
    # The rider sits on the saddle: draw the person (seated) from 0.35 m, then the vehicle over the legs.
    _draw_person(sc, rider, cls=RIDER, seated=True, y0=0.35 * s, helmet=helmet)
    _draw_two_wheeler(sc, dict(obj, Z=obj["Z"] - 0.02), vehicle, inst)


def _draw_pole(sc: _Scene, obj: dict) -> None:
    """A pole; `carry` puts a street lamp arm, a traffic light or a sign on it."""
    rng = sc.rng
    s = sc.style.object_scale
    X, Z = obj["X"], obj["Z"]
    carry = obj.get("carry", "lamp")
    height = {"lamp": rng.uniform(5.0, 8.0), "light": rng.uniform(3.2, 4.5), "sign": rng.uniform(2.2, 3.2),
              "bare": rng.uniform(2.5, 5.0)}[carry] * s
    width = rng.uniform(0.14, 0.22) * s
    col = sc.colour(POLE, sc.pick(POLE_COLOURS), 0.03)
    bb = sc.billboard(X, Z, width, height, min_w=sc.minw)
    if bb is None:
        return
    sl, u, v, w_px, h_px = bb
    shade = 0.7 + 0.45 * np.sin(np.pi * np.clip(u, 0, 1))
    rgb = col[None, None, :] * shade[..., None] * (1 + sc.tex(sl, fine=0.03))[..., None]
    sc.paint(sl, np.ones(rgb.shape[:2], bool), POLE, rgb, sc.new_instance())
    towards_road = -np.sign(X) if X != 0 else 1.0
    if carry == "lamp":
        arm_len = rng.uniform(1.0, 2.5) * s
        xa = X + towards_road * arm_len / 2
        bb = sc.billboard(xa, Z, arm_len, 0.12 * s, Y0=height - 0.25 * s, min_w=sc.minw)
        if bb is not None:
            sl2, u2, v2, _, h2 = bb
            if h2 < sc.minw * 0.6:   # keep the arm at least a few pixels thick
                bb = sc.billboard(xa, Z, arm_len, 0.12 * s * sc.minw * 0.6 / max(h2, 1e-3), Y0=height - 0.25 * s,
                                  min_w=sc.minw)
                sl2 = bb[0] if bb is not None else None
            if sl2 is not None:
                sc.paint(sl2, np.ones(sc.lab[sl2].shape, bool), POLE, col * 0.9)
        head = sc.billboard(X + towards_road * arm_len, Z, 0.5 * s, 0.2 * s, Y0=height - 0.4 * s, min_w=sc.minw)
        if head is not None:
            sl3, u3, v3, _, _ = head
            lamp = np.broadcast_to(v3 > 0.6, sc.lab[sl3].shape)
            rgb3 = _mix(lamp, np.broadcast_to(col * 0.8, sc.lab[sl3].shape + (3,)).copy(),
                        np.array([0.95, 0.93, 0.85], np.float32))
            sc.paint(sl3, np.ones(sc.lab[sl3].shape, bool), POLE, rgb3)
    elif carry == "light":
        over_road = rng.random() < 0.3
        if over_road:
            arm_len = rng.uniform(2.5, 5.0) * s
            bb = sc.billboard(X + towards_road * arm_len / 2, Z, arm_len, 0.15 * s, Y0=height - 0.2 * s,
                              min_w=sc.minw)
            if bb is not None:
                sc.paint(bb[0], np.ones(sc.lab[bb[0]].shape, bool), POLE, col * 0.9)
            _draw_traffic_light(sc, X + towards_road * arm_len * 0.8, Z - 0.05, height - 1.2 * s)
        else:
            _draw_traffic_light(sc, X, Z - 0.05, height - 0.2 * s)
    elif carry == "sign":
        _draw_sign(sc, X, Z - 0.05, height - 0.1 * s)


def _draw_traffic_light(sc: _Scene, X: float, Z: float, top: float) -> None:
    rng = sc.rng
    s = sc.style.object_scale
    w, h = 0.4 * s, 1.05 * s
    bb = sc.billboard(X, Z, w, h, Y0=top - h, min_w=sc.minw)
    if bb is None:
        return
    sl, u, v, w_px, h_px = bb
    housing = sc.colour(LIGHT, sc.pick(((0.1, 0.1, 0.1), (0.18, 0.18, 0.16), (0.55, 0.48, 0.1))), 0.02)
    shape = sc.lab[sl].shape
    rgb = np.broadcast_to(_shade(housing, sc.tex(sl, fine=0.03)), shape + (3,)).copy()
    if rng.random() < 0.7:   # front: three lamps, one lit
        lit = int(rng.integers(3))
        colours = ((0.95, 0.12, 0.08), (0.98, 0.7, 0.05), (0.1, 0.9, 0.45))
        aspect = h_px / max(w_px, 1e-3)
        for i, vc in enumerate((0.2, 0.5, 0.8)):
            disc = ((u - 0.5) / 0.32) ** 2 + ((v - vc) * aspect / 0.32) ** 2 < 1
            c = np.asarray(colours[i], np.float32) * (1.0 if i == lit else 0.25)
            rgb = _mix(np.broadcast_to(disc, shape), rgb, c)
    sc.paint(sl, np.ones(shape, bool), LIGHT, rgb, sc.new_instance())


def _draw_sign(sc: _Scene, X: float, Z: float, top: float) -> None:
    rng = sc.rng
    s = sc.style.object_scale
    kind = int(rng.integers(5))
    size = rng.uniform(0.65, 0.9) * s
    w, h = (size * 1.4, size * 0.8) if kind == 4 else (size, size)
    bb = sc.billboard(X, Z, w, h, Y0=top - h, min_w=sc.minw)
    if bb is None:
        return
    sl, u, v, w_px, h_px = bb
    shape = sc.lab[sl].shape
    du, dv = np.broadcast_to(u - 0.5, shape), np.broadcast_to(v - 0.5, shape)
    r = np.hypot(du, dv)
    back = rng.random() < 0.25
    white = np.array([0.92, 0.92, 0.9], np.float32)
    red = np.array([0.8, 0.08, 0.08], np.float32)
    blue = np.array([0.1, 0.28, 0.7], np.float32)
    yellow = np.array([0.95, 0.78, 0.1], np.float32)
    if kind == 0:     # round prohibition: red ring, white inside
        mask = r < 0.5
        rgb = np.where((r > 0.36)[..., None], red, white)
        rgb = _mix((np.abs(dv) < 0.06) & (np.abs(du) < 0.22), rgb, np.array([0.1, 0.1, 0.1], np.float32))
    elif kind == 1:   # triangle warning
        mask = (v > 0.05) & (np.abs(u - 0.5) < 0.5 * (v - 0.05) / 0.9) & (v < 0.95)
        inner = (v > 0.28) & (np.abs(u - 0.5) < 0.5 * (v - 0.28) / 0.9 - 0.02) & (v < 0.85)
        rgb = np.where(np.broadcast_to(inner, shape)[..., None], white, red)
        mask = np.broadcast_to(mask, shape)
    elif kind == 2:   # round blue mandatory with a white arrow
        mask = r < 0.5
        rgb = np.broadcast_to(blue, shape + (3,)).copy()
        rgb = _mix((np.abs(du) < 0.07) & (np.abs(dv) < 0.3), rgb, white)
    elif kind == 3:   # yellow diamond
        mask = (np.abs(du) + np.abs(dv)) < 0.5
        rgb = np.broadcast_to(yellow, shape + (3,)).copy()
        rgb = _mix((np.abs(du) + np.abs(dv)) < 0.36, rgb, white * 0.95)
        rgb = _mix((np.abs(du) + np.abs(dv)) < 0.3, rgb, yellow)
    else:             # rectangular information sign
        mask = np.ones(shape, bool)
        rgb = np.broadcast_to(blue if rng.random() < 0.6 else np.array([0.1, 0.45, 0.2], np.float32),
                              shape + (3,)).copy()
        rgb = _mix((np.abs(du) > 0.44) | (np.abs(dv) > 0.4), rgb, white)
        rgb = _mix((np.abs(dv) < 0.08) & (np.abs(du) < 0.3), rgb, white)
    if back:
        rgb = np.broadcast_to(np.array([0.55, 0.56, 0.58], np.float32), shape + (3,)).copy()
    rgb = rgb + np.asarray(sc.style.palette_shift[SIGN], np.float32)
    rgb = rgb * (1 + sc.tex(sl, fine=0.03))[..., None]
    sc.paint(sl, mask, SIGN, rgb, sc.new_instance())


def _draw_tree(sc: _Scene, obj: dict) -> None:
    """A street tree: trunk and a crown of overlapping leafy blobs (all vegetation)."""
    rng = sc.rng
    X, Z = obj["X"], obj["Z"]
    height = rng.uniform(4.0, 9.0)
    crown_w = rng.uniform(2.5, 5.0)
    trunk_h = height * rng.uniform(0.3, 0.45)
    bb = sc.billboard(X, Z, crown_w, height)
    if bb is None:
        return
    sl, u, v, w_px, h_px = bb
    shape = sc.lab[sl].shape
    base = sc.colour(VEGETATION, sc.pick(VEGETATION_COLOURS), 0.04)
    bark = sc.colour(VEGETATION, (0.28, 0.22, 0.17), 0.03)
    trunk_w = max(0.35 / crown_w, sc.minw / max(w_px, 1e-3) * 0.5)
    trunk = (np.abs(u - 0.5) < trunk_w / 2) & (v > 1 - trunk_h / height)
    crown = np.zeros(shape, bool)
    for _ in range(int(rng.integers(3, 7))):
        cu, cv = rng.uniform(0.25, 0.75), rng.uniform(0.2, 0.55)
        ru, rv = rng.uniform(0.2, 0.32), rng.uniform(0.15, 0.25)
        crown |= ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 < 1 + 0.35 * sc.noise["n3"][sl]
    crown &= v < 1 - trunk_h / height * 0.6
    t = sc.tex(sl, fine=0.15, n3=0.3, n8=0.12) - 0.25 * np.clip(sc.noise["n8"][sl], 0, None) * sc.amp
    rgb = np.clip(_shade(base, t), 0, 1)
    rgb = _mix(np.broadcast_to(trunk, shape) & ~crown, rgb,
               bark[None, None, :] * (1 + sc.tex(sl, streak=0.1))[..., None])
    sc.paint(sl, crown | np.broadcast_to(trunk, shape), VEGETATION, rgb)


# ------------------------------------------------------------------------------------------ object plan

# Depth ranges (metres) and the width that must stay >= minw pixels.
# Hard classes stay small and rare, but near enough to be learnable by a CPU model at 256x512.
_KIND_DEPTH = {"car": (4.0, 90.0), "truck": (6.0, 90.0), "bus": (7.0, 90.0), "train": (8.0, 90.0),
               "person": (3.5, 35.0), "cyclist": (4.0, 32.0), "motorcyclist": (4.0, 40.0),
               "bicycle": (3.0, 28.0), "motorcycle": (3.5, 32.0), "pole": (8.0, 35.0),
               "traffic_light": (8.0, 35.0), "traffic_sign": (6.0, 32.0), "tree": (6.0, 70.0)}
_KIND_WIDTH = {"car": 1.8, "truck": 2.4, "bus": 2.5, "train": 2.5, "person": 0.55, "cyclist": 0.6,
               "motorcyclist": 0.7, "bicycle": 0.6, "motorcycle": 0.8, "pole": 0.35, "traffic_light": 0.4,
               "traffic_sign": 0.65, "tree": 2.5}


def _plan_objects(sc: _Scene, street: _Street) -> list[dict]:
    rng, st = sc.rng, sc.style
    objects: list[dict] = []
    z_min_visible = sc.f * sc.hc / max(sc.H - sc.yh, 1.0)   # ground at the bottom row
    lanes = street.lanes()

    def depth(kind: str) -> float:
        near, far = _KIND_DEPTH[kind]
        far = min(far, street.z_end - 5.0, _KIND_WIDTH[kind] * st.object_scale * sc.f / sc.minw)
        near = max(near, 0.6 * z_min_visible)
        if far <= near:
            far = near * 1.2
        return float(near * (far / near) ** rng.random())

    if rng.random() < st.rate("train")[0] and TRAIN not in sc.absent:
        street.rails = float(rng.choice(lanes))
        objects.append(dict(kind="train", X=street.rails, Z=depth("train"), oncoming=False))
    for kind in ("car", "truck", "bus"):
        prob, low, high = st.rate(kind)
        cls = {"car": CAR, "truck": TRUCK, "bus": BUS}[kind]
        if cls in sc.absent or rng.random() >= prob:
            continue
        for _ in range(int(rng.integers(low, high + 1))):
            parked = kind == "car" and rng.random() < 0.4
            if parked:
                X = (-street.rl + 1.1) if rng.random() < 0.5 else (street.rr - 1.1)
            else:
                X = float(rng.choice(lanes)) + rng.normal(0, 0.25)
            if street.rails is not None and abs(X - street.rails) < 2.0:
                continue
            objects.append(dict(kind=kind, X=X, Z=depth(kind), oncoming=(X < 0 and rng.random() < 0.7)))
    prob, low, high = st.rate("person")
    if rng.random() < prob:
        for _ in range(int(rng.integers(low, high + 1))):
            side = -1 if rng.random() < 0.5 else 1
            if rng.random() < 0.12:   # crossing the road
                X = rng.uniform(-street.rl, street.rr)
            elif side < 0:
                X = -street.rl - rng.uniform(0.3, street.swl - 0.3)
            else:
                X = street.rr + rng.uniform(0.3, street.swr - 0.3)
            objects.append(dict(kind="person", X=float(X), Z=depth("person")))
    for kind, vehicle in (("cyclist", BICYCLE), ("motorcyclist", MOTORCYCLE)):
        prob, low, high = st.rate(kind)
        if rng.random() < prob:
            for _ in range(int(rng.integers(low, high + 1))):
                if kind == "cyclist" and rng.random() < 0.5:
                    X = -street.rl + 0.8 if rng.random() < 0.5 else street.rr - 0.8
                else:
                    X = float(rng.choice(lanes)) + rng.normal(0, 0.4)
                objects.append(dict(kind=kind, X=float(X), Z=depth(kind), vehicle=vehicle,
                                    yaw=float(rng.uniform(0.55, 1.0))))
    for kind in ("bicycle", "motorcycle"):
        prob, low, high = st.rate(kind)
        if rng.random() < prob:
            for _ in range(int(rng.integers(low, high + 1))):
                if rng.random() < 0.5:
                    X = -street.rl - rng.uniform(0.4, 1.2)
                else:
                    X = street.rr + rng.uniform(0.4, 1.2)
                objects.append(dict(kind=kind, X=float(X), Z=depth(kind), yaw=float(rng.uniform(0.5, 1.0))))
    # Poles in rows along a kerb or the outer edge of a sidewalk.
    prob, low, high = st.rate("pole")
    if rng.random() < prob:
        n = int(rng.integers(low, high + 1))
        side = -1 if rng.random() < 0.5 else 1
        spacing = rng.uniform(12.0, 28.0)
        z = depth("pole")
        for i in range(n):
            if i == n // 2 + 1 and rng.random() < 0.5:
                side = -side
            edge = (-street.rl - 0.4) if side < 0 else (street.rr + 0.4)
            objects.append(dict(kind="pole", X=edge, Z=z, carry="lamp" if rng.random() < 0.7 else "bare"))
            z += spacing * rng.uniform(0.8, 1.2)
            if z > _KIND_DEPTH["pole"][1]:
                z = depth("pole")
    for kind, carry in (("traffic_light", "light"), ("traffic_sign", "sign")):
        prob, low, high = st.rate(kind)
        if rng.random() < prob:
            for _ in range(int(rng.integers(low, high + 1))):
                edge = (-street.rl - rng.uniform(0.3, 1.0)) if rng.random() < 0.5 else \
                    (street.rr + rng.uniform(0.3, 1.0))
                objects.append(dict(kind="pole", X=edge, Z=depth(kind), carry=carry))
    prob, low, high = st.rate("tree")
    if rng.random() < prob:
        for _ in range(int(rng.integers(low, high + 1))):
            if rng.random() < 0.5:
                X = -street.rl - street.swl * rng.uniform(0.6, 0.9) - street.gl * rng.uniform(0, 0.8)
            else:
                X = street.rr + street.swr * rng.uniform(0.6, 0.9) + street.gr * rng.uniform(0, 0.8)
            objects.append(dict(kind="tree", X=float(X), Z=depth("tree")))
    return objects


_DRAW = {
    "car": _draw_car, "truck": _draw_truck, "bus": _draw_bus, "train": _draw_train, "person": _draw_person,
    "cyclist": lambda sc, o: _draw_rider(sc, o, BICYCLE),
    "motorcyclist": lambda sc, o: _draw_rider(sc, o, MOTORCYCLE),
    "bicycle": lambda sc, o: _draw_two_wheeler(sc, o, BICYCLE),
    "motorcycle": lambda sc, o: _draw_two_wheeler(sc, o, MOTORCYCLE),
    "pole": _draw_pole, "tree": _draw_tree,
}


# --------------------------------------------------------------------------------------- post-processing

def _finish(sc: _Scene) -> np.ndarray:
    st, rng = sc.style, sc.rng
    rgb = sc.rgb
    # Cast shadow across the street (a half-plane on the ground) and soft large-scale illumination.
    if st.sun_contrast > 0 and rng.random() < 0.7 and hasattr(sc, "ground_X"):
        X, Z = sc.ground_X, sc.ground_Z
        x_edge = rng.uniform(-3, 3) + rng.uniform(-0.3, 0.3) * Z
        shadow = (X < x_edge) if sc.light > 0 else (X > x_edge)
        rows = rgb[sc.ground_rows]
        factor = np.float32(1 - 0.6 * min(st.sun_contrast, 1.0))
        rows *= np.where(shadow, factor, np.float32(1.0))[..., None]
    rgb *= (1 + 0.3 * st.sun_contrast * 0.3 * sc.noise["n24"])[..., None]
    # Colour temperature, saturation, contrast, brightness, gamma.
    temp = st.temperature + rng.normal(0, 0.02)
    rgb *= np.array([1 + temp, 1 + 0.2 * temp, 1 - temp], np.float32)
    lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    rgb = lum[..., None] + np.float32(st.saturation) * (rgb - lum[..., None])
    rgb = (rgb - 0.45) * np.float32(st.contrast) + 0.45
    rgb *= np.float32(st.brightness * rng.uniform(0.88, 1.12))
    rgb = np.clip(rgb, 0, 1) ** np.float32(st.gamma)
    if st.vignette > 0:
        yy = (sc.ys / sc.H - 0.5)[:, None]
        xx = (sc.xs / sc.W - 0.5)[None, :]
        rgb *= (1 - st.vignette * (xx * xx + yy * yy) * 1.6)[..., None]
    rgb = _gaussian_blur(rgb, st.blur_sigma * sc.res)
    rgb = rgb * 255.0
    if st.sensor_noise > 0:
        rgb += rng.standard_normal((sc.H, sc.W, 1), dtype=np.float32) * np.float32(st.sensor_noise)
    if st.chroma_noise > 0:
        rgb += rng.standard_normal((sc.H, sc.W, 3), dtype=np.float32) * np.float32(st.chroma_noise)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _render(rng: np.random.Generator, style: DomainStyle, height: int, width: int):
    sc = _Scene(rng, style, height, width)
    street = _Street(sc)
    objects = _plan_objects(sc, street)   # before the ground: a train puts rails on the road
    _paint_sky(sc)
    _paint_ground(sc, street)
    _paint_backdrop(sc, street)
    _paint_sides(sc, street)
    for obj in sorted(objects, key=lambda o: -o["Z"]):
        _DRAW[obj["kind"]](sc, obj)
    rgb = _finish(sc)
    labels = sc.lab
    if sc.absent:   # the renderer never draws them; this is a guard
        assert not np.isin(labels, list(sc.absent)).any()
    return rgb, labels, sc.inst


def render_scene(rng: np.random.Generator, style: DomainStyle, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (rgb uint8 [H, W, 3], labels uint8 [H, W] Cityscapes train ids 0..18).

    Uses only `rng`: the same generator state gives identical arrays.
    """
    if height < 16 or width < 16:
        raise ValueError(f"image too small: {height}x{width}")
    rgb, labels, _ = _render(rng, style, height, width)
    return rgb, labels


# ------------------------------------------------------------------------------------ benchmark writer

DEFAULT_COUNTS: dict[str, int] = {
    "gta5": 600, "synthia": 600, "cityscapes_train": 400, "cityscapes_val": 150, "oxford_train": 300,
    "oxford_val": 100,
}
DATASET_STYLE = {"gta5": "gta5", "synthia": "synthia", "cityscapes_train": "cityscapes",
                 "cityscapes_val": "cityscapes", "oxford_train": "oxford", "oxford_val": "oxford"}
CITYSCAPES_CITIES = {"train": ("aachen", "bochum", "bremen"), "val": ("frankfurt", "lindau")}
OXFORD_PREFIX = {"train": "1418381798086398", "val": "1418132504537582"}


def _inverse_lut(mapping: dict[int, int], void: int = 0, dtype=np.uint8) -> np.ndarray:
    """train id -> raw id (first raw id found for a train id), IGNORE and unknown -> void."""
    lut = np.full(256, void, dtype=dtype)
    for raw, train in sorted(mapping.items()):
        if lut[train] == void:
            lut[train] = raw
    return lut


TRAINID_TO_LABELID = _inverse_lut(CITYSCAPES_LABELID_TO_TRAINID)
TRAINID_TO_SYNTHIA = _inverse_lut(SYNTHIA_ID_TO_TRAINID, dtype=np.uint16)


def _oxford_lut() -> np.ndarray:
    """Cityscapes train id -> Oxford raw id (road -> 11; classes ignored in the 9-class space spread over the
    raw ids 8, 9, 15 and 16, which the Oxford map ignores)."""
    nine_to_raw = {}
    for raw, nine in sorted(OXFORD_RAWID_TO_TRAINID.items()):
        nine_to_raw.setdefault(nine, raw)
    nine_to_raw[8] = 11
    ignore_raw = (8, 9, 15, 16)
    lut = np.zeros(256, dtype=np.uint8)
    k = 0
    for train in range(NUM_CLASSES):
        nine = CITYSCAPES_TRAINID_TO_OXFORD[train]
        if nine == IGNORE:
            lut[train] = ignore_raw[k % len(ignore_raw)]
            k += 1
        else:
            lut[train] = nine_to_raw[nine]
    return lut


TRAINID_TO_OXFORD_RAW = _oxford_lut()


def _image_rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    key = zlib.crc32(dataset.encode("ascii"))
    return np.random.default_rng(np.random.SeedSequence([int(seed), key, int(index)]))


def _paths(root: Path, dataset: str, index: int) -> dict[str, Path]:
    if dataset == "gta5":
        name = f"{index + 1:05d}.png"
        return {"image": root / "GTA5" / "images" / name, "label": root / "GTA5" / "labels" / name}
    if dataset == "synthia":
        base = root / "SYNTHIA_RAND_CITYSCAPES" / "RAND_CITYSCAPES"
        name = f"{index:07d}.png"
        return {"image": base / "RGB" / name, "label": base / "GT" / "LABELS" / name}
    if dataset.startswith("cityscapes_"):
        split = dataset.split("_", 1)[1]
        cities = CITYSCAPES_CITIES[split]
        city = cities[index % len(cities)]
        stem = f"{city}_{index // len(cities):06d}_000019"
        cs = root / "cityscapes"
        return {"image": cs / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                "label": cs / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                "train_label": cs / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"}
    if dataset.startswith("oxford_"):
        split = dataset.split("_", 1)[1]
        name = f"{OXFORD_PREFIX[split]}_{index:05d}.png"
        ox = root / "oxford_robotcar"
        anno = "anno" if split == "val" else "anno_train"   # anno_train/: hidden labels, oracles only
        return {"image": ox / split / name, "label": ox / anno / name}
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DEFAULT_COUNTS)}")


def _generate_one(job: tuple) -> tuple[str, int]:
    root, dataset, index, seed, height, width, gap = job
    style = DOMAIN_STYLES[DATASET_STYLE[dataset]] if gap == 1.0 else make_style(DATASET_STYLE[dataset], gap)
    rng = _image_rng(seed, dataset, index)
    rgb, labels, inst = _render(rng, style, height, width)
    paths = _paths(Path(root), dataset, index)
    write_rgb(paths["image"], rgb)
    if dataset == "gta5":
        write_palettised(paths["label"], TRAINID_TO_LABELID[labels])
    elif dataset == "synthia":
        out = np.zeros(labels.shape + (3,), dtype=np.uint16)
        out[..., 0] = TRAINID_TO_SYNTHIA[labels]
        out[..., 1] = inst
        write_png16(paths["label"], out)
    elif dataset.startswith("cityscapes_"):
        write_gray(paths["label"], TRAINID_TO_LABELID[labels])
        write_gray(paths["train_label"], labels)
    else:
        out = np.zeros(labels.shape + (4,), dtype=np.uint8)
        out[..., 0] = TRAINID_TO_OXFORD_RAW[labels]
        out[..., 3] = 255
        write_rgba(paths["label"], out)
    return dataset, index


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def generate_benchmark(root: str | Path, seed: int = 0, height: int = 256, width: int = 512,
                       counts: dict | None = None, workers: int = 1, gap: float = 1.0) -> dict:
    """Write the four dataset roots under `root`, then README.txt and `.complete` (last).

    counts: images per dataset split (keys of DEFAULT_COUNTS; missing keys take the default).
    The output is identical for any `workers`: each image draws from its own stream (seed, dataset, index).
    """
    root = Path(root)
    merged = dict(DEFAULT_COUNTS)
    for key, value in (counts or {}).items():
        if key not in DEFAULT_COUNTS:
            raise ValueError(f"unknown dataset {key!r}; expected one of {sorted(DEFAULT_COUNTS)}")
        if int(value) < 0:
            raise ValueError(f"count for {key} must be >= 0, got {value}")
        merged[key] = int(value)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / ".complete"
    marker.unlink(missing_ok=True)   # an interrupted regeneration must not look finished
    jobs = [(str(root), name, i, int(seed), int(height), int(width), float(gap))
            for name, n in merged.items() for i in range(n)]
    if workers > 1 and len(jobs) > 1:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(min(workers, len(jobs))) as pool:
            for _ in pool.imap_unordered(_generate_one, jobs, chunksize=4):
                pass
    else:
        for job in jobs:
            _generate_one(job)
    summary = {
        "root": str(root), "seed": int(seed), "height": int(height), "width": int(width), "gap": float(gap),
        "counts": merged,
        "paths": {"gta5": str(root / "GTA5"), "synthia": str(root / "SYNTHIA_RAND_CITYSCAPES"),
                  "cityscapes": str(root / "cityscapes"), "oxford": str(root / "oxford_robotcar")},
    }
    _write_text(root / "README.txt",
                "Embedded synthetic UDA benchmark written by hiast.synthetic (procedural street scenes).\n"
                "It is NOT real GTA5 / SYNTHIA / Cityscapes / Oxford RobotCar data: four procedurally rendered\n"
                "domains stored in those datasets' on-disk formats, so that the pipeline runs end to end.\n"
                f"seed={seed} size={height}x{width} gap={gap} counts={json.dumps(merged)}\n"
                "oxford_robotcar/anno_train/ holds the (normally unavailable) labels of the Oxford train split,\n"
                "used only to measure oracles and pseudo-label quality.\n")
    _write_text(marker, json.dumps({k: summary[k] for k in ("seed", "height", "width", "gap", "counts")},
                                   indent=1, sort_keys=True) + "\n")
    return summary


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m hiast.synthetic",
                                     description="Write the embedded synthetic UDA benchmark.")
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gap", type=float, default=1.0, help="domain-gap multiplier (1 = calibrated)")
    parser.add_argument("--count", action="append", default=[], metavar="NAME=N",
                        help=f"images per split, NAME in {sorted(DEFAULT_COUNTS)} (repeatable)")
    args = parser.parse_args(argv)
    counts = {}
    for item in args.count:
        name, _, value = item.partition("=")
        if name not in DEFAULT_COUNTS or not value.isdigit():
            parser.error(f"--count {item!r}: expected NAME=N with NAME in {sorted(DEFAULT_COUNTS)}")
        counts[name] = int(value)
    summary = generate_benchmark(args.root, seed=args.seed, height=args.height, width=args.width,
                                 counts=counts, workers=args.workers, gap=args.gap)
    print(json.dumps(summary["counts"]))
    return summary


if __name__ == "__main__":
    main()
