"""CLIP image transforms of CoOp's recipe (SPEC section 4)."""

from __future__ import annotations

from torchvision import transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_BICUBIC = T.InterpolationMode.BICUBIC


def train_transform(image_size: int = 224, crop_scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    """Random resized crop (area fraction `crop_scale`, CoOp's 0.08-1; bicubic), horizontal flip,
    CLIP normalisation."""
    low, high = crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_scale {tuple(crop_scale)} must satisfy 0 < low <= high <= 1, e.g. (0.08, 1.0)")
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(low, high), interpolation=_BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def test_transform(image_size: int = 224) -> T.Compose:
    """Resize the short side (bicubic), centre crop, CLIP normalisation."""
    return T.Compose([
        T.Resize(image_size, interpolation=_BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])
