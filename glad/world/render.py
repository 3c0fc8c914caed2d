"""Draw a `Scene` into a small RGB image with numpy and PIL only.

Objects are drawn at 4x the output size and box-filtered down, so edges are
anti-aliased the same way on every platform.
"""

from __future__ import annotations

import colorsys
import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from glad.world.scenes import Scene
from glad.world.vocab import COLOURS

SUPERSAMPLE = 4

# Radius of one object, as a fraction of the image side, per size word and crowding.
# Objects are large on purpose: a shape must span several 4-pixel patches to be seen.
_RADIUS = {("small", 1): (0.18, 0.23), ("large", 1): (0.28, 0.36),
           ("small", 2): (0.13, 0.16), ("large", 2): (0.19, 0.23),
           ("small", 3): (0.11, 0.14), ("large", 3): (0.15, 0.19)}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h % 360.0) / 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def object_rgb(colour: str, style: str, rng: np.random.Generator) -> np.ndarray:
    """The RGB (0..1) of an object of `colour`, jittered, as `style` renders it."""
    h, s, v = COLOURS[colour]
    h += rng.uniform(-7.0, 7.0)
    s *= rng.uniform(0.85, 1.05)
    v *= rng.uniform(0.85, 1.0)
    if style == "palette":
        # the shifted palette: deep, dark shades of the same hues
        s, v = min(1.0, s * 1.1 + 0.1), v * rng.uniform(0.45, 0.6)
    return _hsv(h, s, v)


def _background_rgb(style: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two tones of a low-saturation background, so saturated objects stand out."""
    h = rng.uniform(0, 360)
    s = rng.uniform(0.0, 0.25)
    if style == "sketch":
        v = rng.uniform(0.9, 1.0)
        return _hsv(h, s * 0.3, v), _hsv(h, s * 0.3, v - rng.uniform(0.04, 0.08))
    if style == "palette":
        v = rng.uniform(0.78, 0.92)
        return _hsv(h, s, v), _hsv(h, s, v - rng.uniform(0.12, 0.2))
    v = rng.uniform(0.15, 0.55)
    dv = rng.uniform(0.12, 0.22) * (1 if v < 0.35 else -1)
    return _hsv(h, s, v), _hsv(h, s * rng.uniform(0.5, 1.5), v + dv)


@lru_cache(maxsize=8)
def _grid(n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) * np.float32(scale)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def texture_mask(texture: str, n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A float32 mask in [0, 1] of shape (n, n): where the second background tone shows.

    `scale` is output pixels per canvas pixel, so periods are in output pixels.
    """
    yy, xx = _grid(n, scale)
    if texture == "plain":
        # a faint gradient, so "plain" is not a single flat value
        a = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(a) + yy * math.sin(a)) / (n * scale)
        return np.clip(t * rng.uniform(0.0, 0.35), 0.0, 1.0)
    if texture == "striped":
        a = rng.choice([0.0, 45.0, 90.0, 135.0]) + rng.uniform(-10, 10)
        a = math.radians(a)
        period = rng.uniform(5.0, 8.0)
        t = (xx * math.cos(a) + yy * math.sin(a)) / period + rng.uniform(0, 1)
        return (np.mod(t, 1.0) < 0.5).astype(np.float32)
    if texture == "checkered":
        period = rng.uniform(5.0, 8.0)
        ox, oy = rng.uniform(0, period, size=2)
        return ((np.floor((xx + ox) / period) + np.floor((yy + oy) / period)) % 2).astype(np.float32)
    if texture == "dotted":
        period = rng.uniform(5.0, 7.0)
        ox, oy = rng.uniform(0, period, size=2)
        dx = np.mod(xx + ox, period) - period / 2
        dy = np.mod(yy + oy, period) - period / 2
        return (dx * dx + dy * dy < (period * 0.25) ** 2).astype(np.float32)
    if texture == "wavy":
        period = rng.uniform(5.0, 8.0)
        amp = rng.uniform(1.5, 2.5)
        wl = rng.uniform(8.0, 12.0)
        ph = rng.uniform(0, 2 * math.pi)
        if rng.random() < 0.5:
            xx, yy = yy, xx
        t = (yy + amp * np.sin(2 * math.pi * xx / wl + ph)) / period
        return (np.mod(t, 1.0) < 0.5).astype(np.float32)
    raise ValueError(f"texture {texture!r} has no renderer")


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    elif shape == "diamond":
        pts = [(0.0, -1.0), (0.68, 0.0), (0.0, 1.0), (-0.68, 0.0)]
    elif shape == "triangle":
        pts = [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)]
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = 1.0 if k % 2 == 0 else 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape == "cross":
        w = 0.34
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1),
               (-w, w), (-1, w), (-1, -w), (-w, -w)]
    else:
        raise ValueError(f"shape {shape!r} has no polygon")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _place(radii: list[float], rng: np.random.Generator) -> list[tuple[float, float]]:
    """Non-overlapping centres (fractions of the side) for objects of the given radii."""
    for _ in range(50):
        centres: list[tuple[float, float]] = []
        for r in radii:
            for _ in range(60):
                x, y = rng.uniform(r + 0.02, 1 - r - 0.02, size=2)
                if all((x - u) ** 2 + (y - v) ** 2 > (r + q + 0.03) ** 2
                       for (u, v), q in zip(centres, radii, strict=False)):
                    centres.append((float(x), float(y)))
                    break
            else:
                break
        if len(centres) == len(radii):
            return centres
        radii = [r * 0.95 for r in radii]  # crowded: shrink a little and retry
    raise RuntimeError(f"could not place objects of radii {radii}")  # unreachable for <= 5 objects


def render(scene: Scene, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Draw `scene` as a (size, size, 3) uint8 array, taking every nuisance from `rng`."""
    n = size * SUPERSAMPLE
    c1, c2 = _background_rgb(scene.style, rng)
    texture = scene.texture
    if scene.style == "sketch" and scene.groups:
        texture = "plain"  # sketches are drawn on paper
    # the background needs less anti-aliasing than object edges: 2x, then upscaled
    nb = size * 2
    m = texture_mask(texture, nb, 0.5, rng)[..., None]
    lo = (c1 * 255.0).astype(np.float32)
    canvas = lo + m * (c2 * 255.0 - lo).astype(np.float32) + np.float32(0.5)
    img = Image.fromarray(canvas.astype(np.uint8), "RGB").resize((n, n), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)

    n_objects = sum(g.count for g in scene.groups)
    crowd = min(n_objects, 3)
    radii, specs = [], []
    for g in scene.groups:
        lo, hi = _RADIUS[(g.size, crowd)]
        rgb = object_rgb(g.colour, scene.style, rng)  # one hue per group: its objects look alike
        for _ in range(g.count):
            radii.append(float(rng.uniform(lo, hi)))
            specs.append((g.shape, rgb))
    order = rng.permutation(len(radii)) if radii else []
    radii = [radii[i] for i in order]
    specs = [specs[i] for i in order]
    centres = _place(radii, rng) if radii else []
    for (shape, rgb), r, (x, y) in zip(specs, radii, centres, strict=True):
        angle = math.radians(rng.uniform(-12, 12))
        fill = tuple(int(round(255 * v)) for v in rgb)
        cx, cy, rr = x * n, y * n, r * n
        if scene.style == "sketch":
            width = int(round(SUPERSAMPLE * rng.uniform(1.0, 1.6)))
            if shape == "circle":
                draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], outline=fill, width=width)
            else:
                draw.polygon(_polygon(shape, cx, cy, rr, angle), outline=fill, width=width)
        elif shape == "circle":
            draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=fill)
        else:
            draw.polygon(_polygon(shape, cx, cy, rr, angle), fill=fill)

    if scene.style == "noisy":
        # clutter: thin grey strokes over everything
        for _ in range(int(rng.integers(3, 7))):
            x0, y0, x1, y1 = rng.uniform(0, n, size=4)
            g = int(rng.integers(60, 200))
            draw.line([x0, y0, x1, y1], fill=(g, g, g), width=int(SUPERSAMPLE * rng.uniform(0.6, 1.2)))

    out = np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    sigma = rng.uniform(18.0, 35.0) if scene.style == "noisy" else rng.uniform(0.0, 6.0)
    out = out + rng.standard_normal(size=out.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
