"""CLIP image transforms of CoOp's recipe (SPEC section 4)."""

from __future__ import annotations

from torchvision import transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_BICUBIC = T.InterpolationMode.BICUBIC


def train_transform(image_size: int = 224) -> T.Compose:
    """Random resized crop (scale 0.08-1, bicubic), horizontal flip, CLIP normalisation."""
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=_BICUBIC),
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
