"""The evaluation protocols as data (SPEC section 4).

`PROTOCOLS[name]` is the paper's (CoOp's) definition of a protocol:

* "base-to-novel": each of the 11 datasets on its own; train on the base classes of the
  few-shot draw, test base and novel separately (each relabelled from 0).
* "cross-dataset": train on ImageNet (all classes); test on the 10 other datasets.
* "domain-generalization": the same ImageNet model; test on ImageNet-V2, -Sketch, -A, -R.
* "few-shot": each of the 11 datasets on its own, all classes, K shots (CoOp's and
  CLIP-LoRA's main table: K in 1, 2, 4, 8, 16), tested on the full test split.
* "finetune": your own data (the default for `imagefolder:`, CSV and split-JSON datasets):
  every class with every training image (`--shots K` subsamples), tested on the test split;
  the adapter knows every class, so `glad predict` serves them all.

Other dataset sets (glad's built-in offline world) are variants of the same protocols:
`register_protocol_defaults(protocol, source, targets, variant="builtin")` adds one,
and `get_protocol(name, variant)` returns it ("coop" is `PROTOCOLS` itself). Asking for
an unknown variant imports the dataset providers once (`glad.providers`), so
that theirs are registered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

TRANSFER_TARGETS = ("caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
BASE_TO_NOVEL_DATASETS = ("imagenet",) + TRANSFER_TARGETS
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
ALL_SHOTS = 0  # `shots` meaning every training image (no few-shot draw)


@dataclass(frozen=True)
class Protocol:
    """One protocol: what is trained on, what is tested, with which class subsets.

    `source` is the training dataset (None: each target trains on itself, base-to-novel).
    `train_classes` is the subset trained on; `test_classes` the subsets each target is
    scored on separately. Fields can also be read as `protocol["source"]`.
    """

    name: str
    description: str
    source: str | None
    targets: tuple[str, ...]
    train_classes: str = "all"
    test_classes: tuple[str, ...] = ("all",)
    shots: int = 16
    seeds: tuple[int, ...] = (1, 2, 3)

    def __getitem__(self, key: str):
        return getattr(self, key)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("base-to-novel", "train on the base half of each dataset's classes, test base and novel",
             None, BASE_TO_NOVEL_DATASETS, train_classes="base", test_classes=("base", "novel")),
    Protocol("cross-dataset", "train on ImageNet (all classes), test on 10 other datasets",
             "imagenet", TRANSFER_TARGETS),
    Protocol("domain-generalization", "the cross-dataset ImageNet model tested on 4 shifted ImageNets",
             "imagenet", DG_TARGETS),
    Protocol("few-shot", "train on all classes of each dataset with K shots, test on its full test split",
             None, BASE_TO_NOVEL_DATASETS),
    Protocol("finetune", "train on every class of each dataset with all its training images, test on its "
             "test split", None, (), shots=ALL_SHOTS),
)}
FEW_SHOT_SHOTS = (1, 2, 4, 8, 16)

_VARIANTS: dict[str, dict[str, Protocol]] = {"coop": PROTOCOLS}


def normalize_protocol(name: str) -> str:
    """Accept `base_to_novel`, `b2n`, `xd`, `dg` and the like for the canonical names."""
    key = name.strip().lower().replace("_", "-")
    aliases = {"b2n": "base-to-novel", "base2novel": "base-to-novel", "base-to-new": "base-to-novel",
               "xd": "cross-dataset", "dg": "domain-generalization", "domain-generalisation":
               "domain-generalization", "fewshot": "few-shot", "few_shot": "few-shot", "fine-tune": "finetune",
               "full": "finetune"}
    key = aliases.get(key, key)
    if key not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return key


def register_protocol_defaults(protocol: str, source: str | None, targets, variant: str = "builtin",
                               **fields) -> Protocol:
    """Register the datasets of `protocol` for a `variant` other than "coop".

    Class subsets, shots and seeds are those of the CoOp protocol unless given in `fields`.
    """
    if variant == "coop":
        raise ValueError("the 'coop' variant is the paper's protocol and cannot be changed")
    base = PROTOCOLS[normalize_protocol(protocol)]
    entry = dataclasses.replace(base, source=source, targets=tuple(targets), **fields)
    _VARIANTS.setdefault(variant, {})[entry.name] = entry
    return entry


def get_protocol(name: str, variant: str = "coop") -> Protocol:
    """The protocol `name` for a variant ("coop": the paper's datasets; "builtin": glad.world's)."""
    key = normalize_protocol(name)
    if key not in _VARIANTS.get(variant, {}):
        from glad.providers import load_providers

        load_providers()
    if key not in _VARIANTS.get(variant, {}):
        known = sorted(v for v, d in _VARIANTS.items() if key in d)
        raise ValueError(f"protocol {key!r} has no variant {variant!r}; known: {', '.join(known)}")
    return _VARIANTS[variant][key]


def protocol_variants() -> list[str]:
    return list(_VARIANTS)

