"""The world's generator: seeded determinism, every attribute drawable, captions that tell the truth."""

import numpy as np
import pytest

from glad.world.captions import Caption, GroupClaim, caption, match_matrix
from glad.world.datasets import BUILTIN_PROTOCOLS, DATASETS
from glad.world.render import render
from glad.world.scenes import Group, Scene, pretraining_scene, rng_for
from glad.world.vocab import COLOURS, PLURALS, SHAPES, STYLES, TEXTURES

_SINGULAR = {p: s for s, p in PLURALS.items()}


def _draw(seed, stream, index, size=32):
    rng = rng_for(seed, stream, index)
    return render(pretraining_scene(rng), rng, size)


def test_same_seed_same_pixels():
    for i in range(20):
        a, b = _draw(0, "pretrain", i), _draw(0, "pretrain", i)
        assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
        np.testing.assert_array_equal(a, b)


def test_different_seed_stream_or_index_differ():
    base = [_draw(0, "pretrain", i) for i in range(8)]
    for other in ([_draw(1, "pretrain", i) for i in range(8)],
                  [_draw(0, "world_shapes/test", i) for i in range(8)],
                  [_draw(0, "pretrain", i + 8) for i in range(8)]):
        assert all(not np.array_equal(a, b) for a, b in zip(base, other, strict=True))


def test_dataset_pictures_are_deterministic_and_labelled():
    ds = DATASETS["world_shapes"]
    for i in (0, 5, 41, 42, 500):
        la, pa = ds.picture("test", i)
        lb, pb = ds.picture("test", i)
        assert la == lb == i % len(ds.classnames)
        np.testing.assert_array_equal(pa, pb)
    # train and test never share a picture
    assert not np.array_equal(ds.picture("train", 0)[1], ds.picture("test", 0)[1])


@pytest.mark.parametrize("style", STYLES)
def test_every_shape_colour_texture_renders(style):
    rng = np.random.default_rng(0)
    for k, shape in enumerate(SHAPES):
        colour = list(COLOURS)[k % len(COLOURS)]
        texture = TEXTURES[k % len(TEXTURES)]
        for count in (1, 4):
            scene = Scene((Group(shape, colour, count, "large"),), texture, style)
            img = render(scene, rng, 32)
            assert img.shape == (32, 32, 3) and img.dtype == np.uint8
            assert img.std() > 5  # something is drawn, not a flat image
    assert render(Scene((), "striped"), rng, 48).shape == (48, 48, 3)


def test_object_colour_shows_in_the_pixels():
    # the object's colour must dominate the picture's most saturated pixels
    rng = rng_for(0, "colour-check", 0)
    img = render(Scene((Group("square", "blue", 1, "large"),), "plain"), rng, 32).astype(float)
    r, g, b = img[16, 16]
    assert b > r + 60 and b > g + 30


def test_bad_attributes_name_the_value():
    with pytest.raises(ValueError, match="'hexagon'"):
        Group("hexagon", "red")
    with pytest.raises(ValueError, match="'magenta'"):
        Group("circle", "magenta")
    with pytest.raises(ValueError, match="count 7"):
        Group("circle", "red", 7)
    with pytest.raises(ValueError, match="'furry'"):
        Scene((), "furry")


def test_captions_are_deterministic_and_true_of_their_scene():
    scenes = [pretraining_scene(rng_for(0, "pretrain", i)) for i in range(300)]
    caps = [caption(s, rng_for(0, "cap", i)) for i, s in enumerate(scenes)]
    again = [caption(s, rng_for(0, "cap", i)) for i, s in enumerate(scenes)]
    assert [c.text for c in caps] == [c.text for c in again]
    m = match_matrix(scenes, caps)
    assert m.shape == (300, 300) and bool(m.diagonal().all())
    # every caption names words of its own scene
    for s, c in zip(scenes, caps, strict=True):
        for claim in c.groups:
            assert claim.shape is None or claim.shape.rstrip("s") in c.text or claim.shape in c.text
            assert claim.colour is None or claim.colour in c.text
            assert any(claim.colour in (None, g.colour) and claim.shape in (None, g.shape) for g in s.groups)


def test_match_matrix_semantics():
    red_circle = Scene((Group("circle", "red", 1),), "striped")
    blue_circle = Scene((Group("circle", "blue", 1),), "dotted")
    two_red = Scene((Group("circle", "red", 2),), "plain")
    bare = Scene((), "striped")
    mixed = Scene((Group("circle", "red", 1), Group("star", "blue", 2)), "plain")
    scenes = [red_circle, blue_circle, two_red, bare, mixed]
    caps = [
        Caption("a red object.", (GroupClaim(1, colour="red"),)),
        Caption("a circle.", (GroupClaim(1, shape="circle"),)),
        Caption("two red circles.", (GroupClaim(2, "circle", "red"),)),
        Caption("a striped pattern.", (), texture="striped"),
        Caption("a red circle and two blue stars.", (GroupClaim(1, "circle", "red"), GroupClaim(2, "star", "blue"))),
        Caption("a sketch of a circle.", (GroupClaim(1, shape="circle"),), style="sketch"),
        Caption("a circle on a striped background.", (GroupClaim(1, shape="circle"),), texture="striped"),
    ]
    m = match_matrix(scenes, caps).int().tolist()
    assert m == [
        [1, 1, 0, 0, 0, 0, 1],  # red circle on stripes
        [0, 1, 0, 0, 0, 0, 0],  # blue circle
        [0, 0, 1, 0, 0, 0, 0],  # two red circles
        [0, 0, 0, 1, 0, 0, 0],  # bare striped texture: only the pattern caption
        [1, 1, 0, 0, 1, 0, 0],  # a red circle and two blue stars
    ]


def test_base_and_novel_halves_share_every_word():
    for name in BUILTIN_PROTOCOLS["base-to-novel"]["datasets"]:
        names = DATASETS[name].classnames
        assert len(set(names)) == len(names)
        half = (len(names) + 1) // 2
        base_words = {_SINGULAR.get(w, w) for n in names[:half] for w in n.split()}
        novel_words = {_SINGULAR.get(w, w) for n in names[half:] for w in n.split()}
        assert novel_words <= base_words, f"{name}: novel words {novel_words - base_words} never in base"
        assert not set(names[:half]) & set(names[half:])


def test_protocol_datasets_exist():
    spec = BUILTIN_PROTOCOLS
    assert len(spec["base-to-novel"]["datasets"]) >= 2
    for protocol in ("cross-dataset", "domain-generalization"):
        assert spec[protocol]["source"] in DATASETS and len(spec[protocol]["targets"]) >= 3
        assert all(t in DATASETS for t in spec[protocol]["targets"])
    src = DATASETS[spec["domain-generalization"]["source"]]
    for t in spec["domain-generalization"]["targets"]:
        assert DATASETS[t].classnames == src.classnames  # same classes, shifted rendition
