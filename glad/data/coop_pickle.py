"""CoOp's own ImageNet caches, read without running code: `imagenet/preprocessed.pkl` (the
train/test item lists CoOp froze on first use) and `imagenet/split_fewshot/shot_K-seed_S.pkl`
(each few-shot draw). With them, glad trains on exactly the images CoOp drew on that machine.

A pickle can run any code on load, so these are read by an unpickler that knows only Dassl's
`Datum` record (module `dassl.data.datasets.base_dataset`) and plain containers, and refuses
everything else with an error naming what the file holds.
"""

from __future__ import annotations

import copyreg
import os
import pickle

from .types import DatasetError, Datum

DASSL_DATUM = ("dassl.data.datasets.base_dataset", "Datum")


class _PickledDatum:
    """Stands in for Dassl's Datum while unpickling: takes its state and nothing else."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a Datum record with state {type(state).__name__}")
        self.__dict__.update(state)


class _DatumUnpickler(pickle.Unpickler):
    # Protocols 0 and 1 build objects through copyreg (spelt as in Python 2 there).
    _allowed = {DASSL_DATUM: _PickledDatum, ("copyreg", "_reconstructor"): copyreg._reconstructor,
                ("copy_reg", "_reconstructor"): copyreg._reconstructor, ("builtins", "object"): object,
                ("__builtin__", "object"): object}

    def find_class(self, module, name):
        found = self._allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"persistent id {pid!r}")


def _relocate(path: str, image_dir: str) -> str:
    """CoOp stored absolute paths of the machine that made the file: keep the part below
    `images/` and put it under this machine's `image_dir`."""
    marker = os.sep + "images" + os.sep
    cut = path.rfind(marker)
    return os.path.join(image_dir, path[cut + len(marker):]) if cut >= 0 else path


def read_coop_pickle(path: str, image_dir: str) -> dict[str, list[Datum]]:
    """The item lists of one of CoOp's pickles ({"train": [...], "test": [...]} or {"train": [...]})."""
    try:
        with open(path, "rb") as f:
            data = _DatumUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise DatasetError(f"{path} holds {e}, not only Dassl Datum records; glad does not unpickle it "
                           f"(a pickle can run code). Delete the file and glad lists the image folders "
                           f"instead, as CoOp does.") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DatasetError(f"{path} cannot be read as CoOp's cache ({type(e).__name__}: {e}); delete it "
                           f"and glad lists the image folders instead.") from None
    if not isinstance(data, dict) or "train" not in data:
        raise DatasetError(f"{path} is not one of CoOp's ImageNet caches (expected a dict with a 'train' "
                           f"list, found {type(data).__name__}); delete it.")
    out = {}
    for split, items in data.items():
        if not isinstance(items, list):
            raise DatasetError(f"{path}: '{split}' is a {type(items).__name__}, not a list of Datum records.")
        converted = []
        for i, d in enumerate(items):
            state = getattr(d, "__dict__", {})
            impath, label, classname = state.get("_impath"), state.get("_label"), state.get("_classname")
            if not (isinstance(d, _PickledDatum) and isinstance(impath, str) and isinstance(label, int)
                    and isinstance(classname, str)):
                raise DatasetError(f"{path}: {split}[{i}] is not a Datum record with a path, an integer "
                                   f"label and a class name; delete the file.")
            converted.append(Datum(_relocate(impath, image_dir), label, classname))
        out[str(split)] = converted
    return out
