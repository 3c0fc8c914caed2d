"""The records every dataset is made of: `Datum` (one image), `DatasetSplits` (a dataset)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

COOP_INSTRUCTIONS = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"


class DatasetError(RuntimeError):
    """Data is missing, malformed or inconsistent; the message names the path and the fix."""


class MissingDataError(DatasetError, FileNotFoundError):
    """A folder, split file or image that a dataset needs is not on disk."""


class CorruptImageError(DatasetError):
    """An image file exists but cannot be decoded."""


@dataclass(frozen=True, slots=True)
class Datum:
    """One labelled image: absolute (or cwd-relative) path, 0-based label, class name."""

    impath: str
    label: int
    classname: str


def format_prompt(template: str, classname: str) -> str:
    """Fill a prompt template with a class name, `_` read as a space (CoOp's rule).

    Class names are kept exactly as the split file spells them (`american_bulldog`);
    the underscore becomes a space only here, when the text is made.
    """
    return template.format(classname.replace("_", " "))


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset: its three splits, class names (index = label) and default prompt template.

    `folder` is the dataset's own folder on disk (few-shot draws are cached in
    `<folder>/split_fewshot/` when it is writable; None sends them to the glad cache).
    `val_is_test` marks datasets whose validation set is their test set (ImageNet in
    CoOp); few-shot sampling then draws the train split only, as CoOp does.
    """

    name: str
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    classnames: list[str]
    template: str = "a photo of a {}."
    folder: str | None = None
    val_is_test: bool = False
    info: dict = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def prompts(self, template: str | None = None) -> list[str]:
        """One prompt a class, in label order, from `template` or the dataset's own."""
        t = self.template if template is None else template
        return [format_prompt(t, c) for c in self.classnames]

    def replace(self, **changes) -> DatasetSplits:
        """A copy with some fields changed (the dataclass is frozen)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:  # the default would print every item
        return (f"DatasetSplits(name={self.name!r}, classes={self.num_classes}, train={len(self.train)}, "
                f"val={len(self.val)}, test={len(self.test)}, template={self.template!r})")
