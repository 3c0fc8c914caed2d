"""The base/novel class split of the base-to-novel protocol (CoOp's `subsample_classes`)."""

from __future__ import annotations

import math

from .types import DatasetSplits, Datum

SUBSETS = ("all", "base", "novel")


def base_novel_labels(dataset: DatasetSplits) -> tuple[list[int], list[int]]:
    """(base labels, novel labels): the sorted labels of the train split, first ceil(n/2) base.

    Labels come from the train split as in CoOp (the whole class list for a test-only
    dataset); with every class in train, this is simply range(n) cut at ceil(n/2).
    """
    labels = sorted({d.label for d in dataset.train}) or list(range(dataset.num_classes))
    m = math.ceil(len(labels) / 2)
    return labels[:m], labels[m:]


def subsample_classes(dataset: DatasetSplits, subset: str = "all") -> DatasetSplits:
    """Restrict train, val and test to the base or novel classes, relabelled from 0.

    "all" returns the dataset unchanged. Apply after `fewshot` (CoOp draws the few-shot
    set over all classes first). "new" is accepted as CoOp's name for "novel".
    """
    key = {"new": "novel"}.get(subset, subset)
    if key not in SUBSETS:
        raise ValueError(f"subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    if key == "all":
        return dataset
    base, novel = base_novel_labels(dataset)
    selected = base if key == "base" else novel
    relabel = {old: new for new, old in enumerate(selected)}

    def keep(items: list[Datum]) -> list[Datum]:
        return [Datum(d.impath, relabel[d.label], d.classname) for d in items if d.label in relabel]

    test = keep(dataset.test)
    val = test if dataset.val_is_test else keep(dataset.val)
    return dataset.replace(train=keep(dataset.train), val=val, test=test,
                           classnames=[dataset.classnames[y] for y in selected],
                           info={**dataset.info, "classes": key})
