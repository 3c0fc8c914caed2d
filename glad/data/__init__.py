"""glad.data: the CoOp datasets, CoOp-identical few-shot draws, base/novel split, loaders.

    ds = build_dataset("oxford_pets", root)        # the CoOp layout under root (or $GLAD_DATA)
    ds = fewshot(ds, shots=16, seed=1)             # CoOp/Dassl's draw, cached as JSON
    base = subsample_classes(ds, "base")           # first ceil(n/2) classes, relabelled
    loader = make_loader(base.train, train_transform(224), 32, shuffle=True, workers=4, seed=1)
    prompts = base.prompts()                       # template filled, "_" read as " "

Names: the CoOp names of DATASETS.md (`COOP_DATASETS`), `imagefolder:<path>`, a split
file `<path>.json`, a `<path>.csv`, and names registered with `register_dataset` or by a
module named with `register_provider` (glad.engine names glad.world, the built-in world).

Protocols: `PROTOCOLS` holds the paper's base-to-novel, cross-dataset and
domain-generalization definitions; other datasets sets are registered as variants with
`register_protocol_defaults(protocol, source, targets, variant="builtin")` and read
with `get_protocol(name, variant)`.

Class names are kept as the split files spell them; `format_prompt(template, name)`
turns `_` into a space when the prompt is made.
"""

from glad.protocols import PROTOCOLS, Protocol, get_protocol, register_protocol_defaults

from .coop import SPECS as COOP_SPECS
from .loader import ImageDataset, load_image, make_loader
from .registry import (
    COOP_DATASETS,
    available_datasets,
    build_dataset,
    register_dataset,
    register_provider,
)
from .shots import default_cache_root, draw_fewshot, fewshot, sample_per_class
from .subsample import base_novel_labels, subsample_classes
from .templates import DEFAULT_TEMPLATE, TEMPLATES, template_for
from .transforms import CLIP_MEAN, CLIP_STD, Preprocess, test_transform, train_transform
from .types import (
    COOP_INSTRUCTIONS,
    CorruptImageError,
    DatasetError,
    DatasetSplits,
    Datum,
    MissingDataError,
    format_prompt,
)

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "Preprocess", "COOP_DATASETS", "COOP_INSTRUCTIONS", "COOP_SPECS", "DEFAULT_TEMPLATE",
    "PROTOCOLS", "TEMPLATES", "CorruptImageError", "DatasetError", "DatasetSplits", "Datum",
    "ImageDataset", "MissingDataError", "Protocol", "available_datasets", "base_novel_labels",
    "build_dataset", "default_cache_root", "draw_fewshot", "fewshot", "format_prompt", "get_protocol",
    "load_image", "make_loader", "register_dataset", "register_provider", "register_protocol_defaults", "sample_per_class",
    "subsample_classes", "template_for", "test_transform", "train_transform",
]
