"""What a picture of the world shows: a scene of object groups on a textured background.

A `Scene` holds only the discrete facts that words describe (shape, colour, count,
size, texture, style); the renderer draws every nuisance (positions, exact hue,
stripe period, noise) from the same seeded random stream, so one (seed, stream,
index) triple always gives the same scene and the same pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from glad.world.vocab import COLOURS, SHAPES, SIZES, STYLES, TEXTURES


@dataclass(frozen=True)
class Group:
    """`count` identical objects: same shape, colour and size."""

    shape: str
    colour: str
    count: int = 1
    size: str = "small"

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape {self.shape!r} is not one of {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"colour {self.colour!r} is not one of {tuple(COLOURS)}")
        if not 1 <= self.count <= 4:
            raise ValueError(f"count {self.count} is outside 1..4; use 1, 2, 3 or 4")
        if self.size not in SIZES:
            raise ValueError(f"size {self.size!r} is not one of {SIZES}")


@dataclass(frozen=True)
class Scene:
    """Object groups (possibly none: a bare texture) on a background, in one style."""

    groups: tuple[Group, ...]
    texture: str = "plain"
    style: str = "photo"

    def __post_init__(self):
        if self.texture not in TEXTURES:
            raise ValueError(f"texture {self.texture!r} is not one of {TEXTURES}")
        if self.style not in STYLES:
            raise ValueError(f"style {self.style!r} is not one of {STYLES}")
        if sum(g.count for g in self.groups) > 5:
            raise ValueError(f"a scene holds at most 5 objects, got {self.groups}")


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    """The random stream of picture `index` of `stream` (a dataset split, or pretraining).

    Streams are keyed by name through a hash, so two streams never share a picture
    and adding a dataset never changes another one's pixels.
    """
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, key, index])))


def random_group(rng: np.random.Generator, *, count: int | None = None, shape: str | None = None,
                 colour: str | None = None, size: str | None = None) -> Group:
    """A group with the given attributes and the rest drawn uniformly."""
    return Group(
        shape=shape if shape is not None else str(rng.choice(SHAPES)),
        colour=colour if colour is not None else str(rng.choice(list(COLOURS))),
        count=count if count is not None else int(rng.integers(1, 5)),
        size=size if size is not None else str(rng.choice(SIZES)),
    )


def pretraining_scene(rng: np.random.Generator) -> Scene:
    """A picture of the pretraining distribution: mostly one object group, some counts,
    some two-group scenes, some bare textures and a small share of shifted styles."""
    texture = str(rng.choice(TEXTURES))
    u = rng.random()
    if u < 0.08:
        return Scene((), texture, "photo")
    r = rng.random()
    style = "photo" if r < 0.88 else ("sketch" if r < 0.92 else ("noisy" if r < 0.96 else "palette"))
    if u < 0.8:
        count = 1 if rng.random() < 0.55 else int(rng.integers(2, 5))
        return Scene((random_group(rng, count=count),), texture, style)
    a = random_group(rng, count=int(rng.integers(1, 3)))
    b = random_group(rng, count=int(rng.integers(1, 3)))
    while (b.shape, b.colour) == (a.shape, a.colour):
        b = random_group(rng, count=b.count)
    return Scene((a, b), texture, style)
