"""The paper's backbone, randomly initialised: LoRA size, exact equivalence, merging, KL = 0 at start."""

import pytest
import torch

from glad.models import (
    GladModel,
    LoraConfig,
    adapters_disabled,
    glad_loss,
    inject_lora,
    load_clip,
    merge_lora,
    unmerge_lora,
)


@pytest.fixture(scope="module")
def _vitb16_base():
    """ViT-B-16 loaded once per module, with its reference features."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clip, _, _, tokenizer = load_clip("ViT-B-16", None, device="cpu")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, 224, 224, generator=g)
    tokens = tokenizer(["a photo of a cat.", "a photo of a dog."])
    with torch.no_grad():
        reference = (clip.encode_image(images, normalize=True), clip.encode_text(tokens, normalize=True))
    yield clip, tokenizer, images, tokens, reference
    torch.set_num_threads(n)


@pytest.fixture
def vitb16(_vitb16_base):
    """A fresh copy of the module's ViT-B-16 for each test (tests inject and merge LoRA into it):
    no test depends on another having run, or on the order."""
    import copy

    clip, *rest = _vitb16_base
    return (copy.deepcopy(clip), *rest)


def test_lora_parameter_count_and_exact_start(vitb16):
    clip, tokenizer, images, tokens, (img0, txt0) = vitb16
    model = GladModel(clip, tokenizer, lora=LoraConfig(), use_alignnet=True, model_name="ViT-B-16")
    n_lora = sum(p.numel() for n, p in model.named_trainable_parameters() if "lora_" in n)
    assert n_lora == 737_280  # r = 8 on q, k, v of 12 image (768) + 12 text (512) blocks
    n_alignnet = sum(p.numel() for p in model.alignnet.parameters())
    assert n_alignnet == (1024 * 256 + 256) + (256 * 128 + 128) + (128 * 512 + 512)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == n_lora + n_alignnet

    with torch.no_grad():  # B = 0: both towers equal the original model (causal text mask included)
        img1, txt1 = model.encode_image(images), model.encode_text(tokens)
    assert (img1 - img0).abs().max() <= 1e-5 and (txt1 - txt0).abs().max() <= 1e-5

    logits = model(images, tokens)
    teacher = model.zeroshot_logits(images, tokens)
    assert torch.equal(logits, teacher)
    loss, parts = glad_loss(logits, torch.tensor([1]), teacher)
    assert parts["kl"].item() == 0.0

    loss.backward()  # gradient reaches adapters and AlignNet only
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    model.zero_grad(set_to_none=True)


def test_merged_and_disabled(vitb16):
    clip, _, images, tokens, (img0, txt0) = vitb16
    inject_lora(clip, LoraConfig())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in clip.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        img1, txt1 = clip.encode_image(images, normalize=True), clip.encode_text(tokens, normalize=True)
        assert (img1 - img0).abs().max() > 1e-3
        merge_lora(clip)
        img2, txt2 = clip.encode_image(images, normalize=True), clip.encode_text(tokens, normalize=True)
        with adapters_disabled(clip):
            img3, txt3 = clip.encode_image(images, normalize=True), clip.encode_text(tokens, normalize=True)
        unmerge_lora(clip)
    assert (img2 - img1).abs().max() <= 1e-5 and (txt2 - txt1).abs().max() <= 1e-5
    assert (img3 - img0).abs().max() <= 1e-5 and (txt3 - txt0).abs().max() <= 1e-5
