"""The world's words: every attribute an object or a scene can have, and how it is said.

Class names and pretraining captions are built from these words only, so a novel
class of a built-in dataset is a new combination of words the model has read.
"""

from __future__ import annotations

# Hue (degrees), saturation, value of each colour word in the plain "photo" style.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.0, 0.9, 0.95),
    "orange": (28.0, 0.95, 1.0),
    "yellow": (56.0, 0.95, 1.0),
    "green": (125.0, 0.85, 0.8),
    "blue": (222.0, 0.85, 1.0),
    "purple": (280.0, 0.7, 0.85),
    "pink": (325.0, 0.45, 1.0),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
    "diamond": "diamonds",
}

TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "wavy")
SIZES: tuple[str, ...] = ("small", "large")
COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}

# Renditions: "photo" is the source domain; the others are the shifted styles of
# the domain-generalisation targets (and a small share of pretraining, as the web
# holds sketches and odd renditions too).
STYLES: tuple[str, ...] = ("photo", "sketch", "noisy", "palette")
STYLE_PHRASES: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of", "a picture of", "an image of"),
    "sketch": ("a sketch of", "a line drawing of", "an outline drawing of"),
    "noisy": ("a noisy photo of", "a grainy photo of", "a blurry photo of"),
    "palette": ("a dark rendition of", "a dark painting of", "a muted drawing of"),
}
SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}


def plural(shape: str, count: int) -> str:
    """The shape word in singular or plural form for `count` objects."""
    return shape if count == 1 else PLURALS[shape]
