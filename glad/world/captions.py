"""Captions of scenes, in varied natural phrasing, and what each one claims.

Like web alt-text, a caption names only some of what the picture shows. Each
`Caption` records exactly what it claims (`GroupClaim`s plus texture/style), so
pretraining can tell which pictures of a batch a caption is true of: those are
its positives in the contrastive loss (`match_matrix`), not just its own picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from glad.world.scenes import Group, Scene
from glad.world.vocab import (
    COLOURS,
    COUNT_WORDS,
    SHAPES,
    SIZE_SYNONYMS,
    SIZES,
    STYLE_PHRASES,
    STYLES,
    TEXTURES,
    plural,
)


@dataclass(frozen=True)
class GroupClaim:
    """What a caption says about one object group; None = not said."""

    count: int
    shape: str | None = None
    colour: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class Caption:
    text: str
    groups: tuple[GroupClaim, ...]  # empty: the caption speaks of a bare pattern
    texture: str | None = None
    style: str | None = None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(claim: GroupClaim, rng: np.random.Generator, *, numeral: bool) -> str:
    """E.g. "a small red circle", "three blue stars", "one red object"."""
    noun = plural(claim.shape, claim.count) if claim.shape else ("object" if claim.count == 1 else "objects")
    if claim.shape is None and rng.random() < 0.5:
        noun = "shape" if claim.count == 1 else "shapes"
    words = []
    if claim.size:
        words.append(str(rng.choice(SIZE_SYNONYMS[claim.size])))
    if claim.colour:
        words.append(claim.colour)
    words.append(noun)
    if claim.count == 1 and not numeral:
        return f"{_article(words[0])} {' '.join(words)}"
    return f"{COUNT_WORDS[claim.count]} {' '.join(words)}"


def _claim(group: Group, rng: np.random.Generator, p_shape=0.85, p_colour=0.8, p_size=0.3) -> GroupClaim:
    shape = group.shape if rng.random() < p_shape else None
    colour = group.colour if rng.random() < p_colour else None
    if shape is None and colour is None:
        shape = group.shape  # say at least one thing about the objects
    size = group.size if rng.random() < p_size else None
    return GroupClaim(group.count, shape, colour, size)


def _texture_phrase(texture: str, rng: np.random.Generator) -> str:
    return str(rng.choice([f"on a {texture} background", f"in front of a {texture} background",
                           f"on {texture} ground"]))


MAX_WORDS = 12  # keeps every caption within glad-tiny's 20-token text context


def caption(scene: Scene, rng: np.random.Generator) -> Caption:
    """One random caption of `scene` (see module docstring), at most `MAX_WORDS` words."""
    cap = _caption(scene, rng)
    # too long for the text context: drop the style phrase, then the background phrase
    # (and what they claimed), rather than let the tokenizer cut the end off
    if len(cap.text.split()) > MAX_WORDS and cap.groups:
        cap = _caption(scene, rng, prefix=False)
    if len(cap.text.split()) > MAX_WORDS and cap.groups:
        cap = _caption(scene, rng, prefix=False, background=False)
    return cap


def _caption(scene: Scene, rng: np.random.Generator, prefix: bool = True, background: bool = True) -> Caption:
    style = None
    use_prefix, prefix = prefix, ""
    if scene.style != "photo" and rng.random() < 0.85:
        if use_prefix:
            style = scene.style
            prefix = str(rng.choice(STYLE_PHRASES[scene.style])) + " "
    elif rng.random() < 0.5 and use_prefix:
        prefix = str(rng.choice(STYLE_PHRASES["photo"])) + " "  # "a photo of" claims nothing

    if not scene.groups:  # a bare texture
        t = scene.texture
        text = str(rng.choice([f"{prefix}a {t} pattern.", f"{prefix}a {t} texture.", f"{t} texture.",
                               f"a {t} pattern.", f"a {t} background with nothing on it."]))
        return Caption(text, (), texture=t, style=style)

    texture = scene.texture if (rng.random() < 0.35 and scene.style != "sketch" and background) else None
    bg = (" " + _texture_phrase(texture, rng)) if texture else ""

    if len(scene.groups) == 1:
        g = scene.groups[0]
        claim = _claim(g, rng)
        form = rng.random()
        if g.count > 1 and claim.shape and claim.colour and form < 0.25:
            shapes = plural(claim.shape, g.count)
            size = f"{rng.choice(SIZE_SYNONYMS[claim.size])} " if claim.size else ""
            count = COUNT_WORDS[g.count]
            text = str(rng.choice([f"{size}{claim.colour} {shapes}, {count} of them{bg}.",
                                   f"{count} {size}{shapes}, all {claim.colour}{bg}.",
                                   f"there are {count} {size}{claim.colour} {shapes}{bg}."]))
            if rng.random() < 0.5 and prefix:
                text = prefix + text
        elif g.count == 1 and claim.shape and claim.colour and form < 0.2:
            size = f"{rng.choice(SIZE_SYNONYMS[claim.size])} " if claim.size else ""
            text = str(rng.choice([f"{prefix}{_article(size or claim.shape)} {size}{claim.shape} in {claim.colour}{bg}.",
                                   f"{prefix}{_article(size or claim.shape)} {size}{claim.colour} coloured {claim.shape}{bg}."]))
        else:
            np_ = _noun_phrase(claim, rng, numeral=rng.random() < 0.25)
            text = f"{prefix}{np_}{bg}."
        return Caption(text, (claim,), texture=texture, style=style)

    claims = tuple(_claim(g, rng, p_shape=0.95, p_colour=0.95, p_size=0.15) for g in scene.groups)
    phrases = [_noun_phrase(c, rng, numeral=False) for c in claims]
    text = f"{prefix}{' and '.join(phrases)}{bg}."
    return Caption(text, claims, texture=texture, style=style)


# ---- which captions are true of which scenes, as one tensor op per batch ----

_MAX_GROUPS = 2
_ABSENT, _ANY = -2, -1
_IDS = {"shape": {s: i for i, s in enumerate(SHAPES)}, "colour": {c: i for i, c in enumerate(COLOURS)},
        "size": {s: i for i, s in enumerate(SIZES)}}
_TEX = {t: i for i, t in enumerate(TEXTURES)}
_STY = {s: i for i, s in enumerate(STYLES)}


@lru_cache(maxsize=65536)
def _encode_scene(scene: Scene) -> tuple[tuple, tuple]:
    groups = [[g.count, _IDS["shape"][g.shape], _IDS["colour"][g.colour], _IDS["size"][g.size]]
              for g in scene.groups]
    groups += [[_ABSENT] * 4] * (_MAX_GROUPS - len(groups))
    return tuple(map(tuple, groups)), (_TEX[scene.texture], _STY[scene.style], int(not scene.groups))


@lru_cache(maxsize=65536)
def _encode_caption(cap: Caption) -> tuple[tuple, tuple]:
    def idx(kind, v):
        return _ANY if v is None else _IDS[kind][v]
    groups = [[c.count, idx("shape", c.shape), idx("colour", c.colour), idx("size", c.size)] for c in cap.groups]
    groups += [[_ABSENT] * 4] * (_MAX_GROUPS - len(groups))
    return tuple(map(tuple, groups)), (_ANY if cap.texture is None else _TEX[cap.texture],
                                       _ANY if cap.style is None else _STY[cap.style], int(not cap.groups))


def match_matrix(scenes: list[Scene], captions: list[Caption]) -> torch.Tensor:
    """M[i, j] = True when caption j is true of scene i (so M[i, i] is always True)."""
    sg, ss = zip(*(_encode_scene(s) for s in scenes), strict=True)
    cg, cs = zip(*(_encode_caption(c) for c in captions), strict=True)
    sg, ss, cg, cs = (np.array(x, dtype=np.int8) for x in (sg, ss, cg, cs))  # [S,G,4] [S,3] [C,G,4] [C,3]
    # claim g of caption j is met by group h of scene i
    met = ((cg[None, :, :, None, :] == _ANY) | (cg[None, :, :, None, :] == sg[:, None, None, :, :])).all(-1)
    met = met & (sg[:, None, None, :, 0] != _ABSENT)
    claim_ok = met.any(-1) | (cg[None, :, :, 0] == _ABSENT)  # [S, C, G]
    # scene-level: texture, style (wildcards allowed), bare-pattern flag (exact)
    lvl = ((cs[None, :, :2] == _ANY) | (cs[None, :, :2] == ss[:, None, :2])).all(-1)
    lvl = lvl & (cs[None, :, 2] == ss[:, None, 2])
    return torch.from_numpy(claim_ok.all(-1) & lvl)
