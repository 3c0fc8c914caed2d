"""Image transforms: CoOp's training augmentation and open_clip's evaluation transform, both
with the model's own preprocessing (size, mean, std, interpolation, resize mode).

`Preprocess` is what open_clip records on a model (`model.visual.preprocess_cfg`: the
architecture's config merged with the pretrained tag's). Evaluation is exactly open_clip's
`preprocess_val`; training is CoOp's recipe (random resized crop of area fraction 0.08-1,
horizontal flip) at the model's size, interpolation and normalisation. For OpenAI's ViT-B/16
that is Resize(224, bicubic) + CenterCrop and CLIP's mean/std, as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torchvision import transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_INTERPOLATIONS = ("bicubic", "bilinear", "random")  # open_clip's names; "random" evaluates as bicubic
_RESIZE_MODES = ("shortest", "longest", "squash")


def _size(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"image size must be an int or (height, width), got {value!r}")


def _triple(value) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Preprocess:
    """A model's image preprocessing, as open_clip's PreprocessCfg names it."""

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def __post_init__(self):
        object.__setattr__(self, "size", _size(self.size))
        object.__setattr__(self, "mean", _triple(self.mean))
        object.__setattr__(self, "std", _triple(self.std))
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} unknown; open_clip uses {_INTERPOLATIONS}")
        if self.resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize mode {self.resize_mode!r} unknown; open_clip uses {_RESIZE_MODES}")

    @classmethod
    def of_model(cls, model) -> Preprocess:
        """What open_clip built `model` with (its config merged with the weights' tag)."""
        from open_clip import get_model_preprocess_cfg

        cfg = dict(get_model_preprocess_cfg(model))
        return cls.from_dict(cfg)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})

    def to_dict(self) -> dict:
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "resize_mode": self.resize_mode, "fill_color": self.fill_color}

    @property
    def image_size(self) -> int:
        """The side of square inputs (the size of non-square ones is `size`)."""
        return self.size[0]

    @property
    def _mode(self) -> T.InterpolationMode:
        return T.InterpolationMode.BILINEAR if self.interpolation == "bilinear" else T.InterpolationMode.BICUBIC

    def test_transform(self) -> T.Compose:
        """open_clip's evaluation transform (`preprocess_val`) for this configuration."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        size = self.size if self.size[0] != self.size[1] else self.size[0]
        cfg = PreprocessCfg(size=size, mean=self.mean, std=self.std, interpolation=self.interpolation,
                            resize_mode=self.resize_mode, fill_color=self.fill_color)
        return image_transform_v2(cfg, is_train=False)

    def geometry(self) -> T.Compose:
        """The test transform up to the tensor conversion (PIL in, PIL out at `size`)."""
        steps = self.test_transform().transforms
        cut = next(i for i, t in enumerate(steps) if type(t).__name__ in ("ToTensor", "MaybeToTensor"))
        return T.Compose(steps[:cut])

    def train_transform(self, crop_scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
        """CoOp's augmentation: random resized crop (area fraction `crop_scale`) at the model's
        size and interpolation, horizontal flip, the model's normalisation."""
        low, high = crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale {tuple(crop_scale)} must satisfy 0 < low <= high <= 1, e.g. (0.08, 1.0)")
        return T.Compose([
            T.RandomResizedCrop(self.size, scale=(low, high), interpolation=self._mode),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> what ToTensor + Normalize give, bit for bit (the same float ops)."""
        x = pixels.to(dtype=torch.float32).div(255)
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)[None, :, None, None]
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)[None, :, None, None]
        return x.sub_(mean).div_(std)


def train_transform(image_size: int = 224, crop_scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    """CoOp's training transform with OpenAI CLIP's preprocessing at `image_size`."""
    return Preprocess(size=image_size).train_transform(crop_scale)


def test_transform(image_size: int = 224) -> T.Compose:
    """open_clip's evaluation transform with OpenAI CLIP's preprocessing at `image_size`."""
    return Preprocess(size=image_size).test_transform()
