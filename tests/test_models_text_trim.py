"""Trimmed text tokens: same features and LoRA gradients as the full context, fallbacks elsewhere."""

import pytest
import torch

from glad.models import GladModel, LoraConfig, adapters_disabled
from glad.models.short_text import short_text_unsupported, trimmed_length
from glad.models.testing import build_tiny_clip

PROMPTS = ["a cat", "a photo of a big red dog.", "", "a photo of a small boat on the sea."]
LORA = LoraConfig(targets=("q", "k", "v", "out"))


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_lora(model, seed=3, std=0.05):
    # B != 0 so the adapters change the features (and A gets a gradient)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)


def _features_and_grads(model, tokens, weights):
    model.zero_grad(set_to_none=True)
    feats = model.encode_text(tokens)
    (feats * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return feats.detach(), grads


def _assert_trim_matches_full(model, prompts, atol, grad_tol):
    """Features within ``atol``; LoRA gradients within ``grad_tol`` times each one's largest entry."""
    trimmed, full = model.tokenize(prompts), model.tokenizer(prompts)
    assert trimmed.shape[1] < full.shape[1]  # the short path is really taken
    weights = torch.randn(len(prompts), model.embed_dim, generator=torch.Generator().manual_seed(5),
                          dtype=torch.float64).to(model.clip.logit_scale.dtype)
    f_short, g_short = _features_and_grads(model, trimmed, weights)
    f_full, g_full = _features_and_grads(model, full, weights)
    with torch.no_grad():  # the full-length path is open_clip's own
        torch.testing.assert_close(f_full, model.clip.encode_text(full, normalize=True), rtol=0, atol=0)
    torch.testing.assert_close(f_short, f_full, rtol=0, atol=atol)
    assert g_full and g_short.keys() == g_full.keys()
    assert any(".transformer." in n for n in g_full)  # text adapters are in the comparison
    for name, g in g_full.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(g_short[name], g, rtol=0, atol=grad_tol * g.abs().max().item(),
                                   msg=lambda m, name=name: f"{name}: {m}")


# ------------------------------------------------------------------ tokenize
def test_tokenize_keeps_every_real_token():
    clip, tok = build_tiny_clip()
    model = GladModel(clip, tok, lora=None, use_alignnet=False)
    assert model.trims_text
    full = tok(PROMPTS)
    tokens = model.tokenize(PROMPTS)
    length = max(len(tok.encode(p)) + 2 for p in PROMPTS)  # start + words + end
    assert tokens.shape == (len(PROMPTS), length) and tokens.dtype == full.dtype
    assert torch.equal(tokens, full[:, :length]) and not full[:, length:].any()
    assert tokens.is_contiguous()
    # one prompt filling the context: nothing to cut, all end tokens kept
    long = ["word " * 40, "a cat"]
    assert torch.equal(model.tokenize(long), tok(long))
    assert torch.equal(model.tokenize("a cat"), tok(["a cat"])[:, :4])
    assert model.tokenize([]).shape[0] == 0


def test_trimmed_length_keeps_pooled_positions():
    tokens = torch.tensor([[5, 9, 0, 0, 0, 0], [5, 7, 9, 0, 0, 0]])
    assert trimmed_length(tokens, 0, "argmax") == 3
    # a pooled position past the last non-pad column (pad id 3 here) is kept
    assert trimmed_length(torch.tensor([[3, 3, 3, 9]]), 3, "argmax") == 4
    assert trimmed_length(torch.tensor([[1, 2, 3, 3]]), 3, "eos", eos_id=3) == 3
    assert trimmed_length(torch.tensor([[0, 0, 0]]), 0, "argmax") == 1


def test_trim_text_off_and_unknown_tokenizer_keep_the_context():
    clip, tok = build_tiny_clip()
    off = GladModel(clip, tok, lora=None, use_alignnet=False, trim_text=False)
    assert not off.trims_text and torch.equal(off.tokenize(PROMPTS), tok(PROMPTS))
    # a tokenizer whose pad id is not known for sure: not cut
    other = GladModel(clip, lambda texts: tok(texts), lora=None, use_alignnet=False)
    assert not other.trims_text and torch.equal(other.tokenize(PROMPTS), tok(PROMPTS))


# -------------------------------------------------------------- exactness
def test_tiny_float64_features_and_lora_grads_match_full_context():
    clip, tok = build_tiny_clip(seed=1)
    model = GladModel(clip.double(), tok, lora=LORA, use_alignnet=False)
    _randomise_lora(model)
    _assert_trim_matches_full(model, PROMPTS, atol=1e-12, grad_tol=1e-12)


def test_tiny_float32_and_zero_shot_cache():
    clip, tok = build_tiny_clip(seed=2)
    model = GladModel(clip, tok, lora=LORA, use_alignnet=True)
    _randomise_lora(model)
    _assert_trim_matches_full(model, PROMPTS, atol=1e-6, grad_tol=1e-5)
    trimmed = model.tokenize(PROMPTS)
    zs = model.zeroshot_text_features(trimmed)
    assert model.zeroshot_text_features(trimmed) is zs  # cached per (trimmed) class set
    with torch.no_grad():
        with adapters_disabled(clip):  # the teacher is the backbone alone
            reference = clip.encode_text(tok(PROMPTS), normalize=True)
        with model.merged():
            merged = model.encode_text(trimmed)
        tuned = model.encode_text(trimmed)
    torch.testing.assert_close(model.zeroshot_text_features(tok(PROMPTS)), reference, rtol=0, atol=1e-6)
    # zero-shot features come from the backbone alone, not the adapters
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.zero_()
        plain = model.encode_text(trimmed)
    torch.testing.assert_close(zs, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(merged, tuned, rtol=0, atol=1e-5)


def test_eos_pooling_is_trimmed_exactly():
    clip, tok = build_tiny_clip(seed=3, text_cfg={"pool_type": "eos", "eos_id": 49407})
    model = GladModel(clip, tok, lora=LORA, use_alignnet=False)
    assert model.trims_text
    _randomise_lora(model)
    _assert_trim_matches_full(model, PROMPTS, atol=1e-6, grad_tol=1e-5)


def test_vitb16_random_init_features_and_lora_grads_match_full_context():
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    tok = open_clip.get_tokenizer("ViT-B-16")
    model = GladModel(clip, tok, lora=LoraConfig(encoders=("text",), targets=("q", "k", "v", "out")),
                      use_alignnet=False, model_name="ViT-B-16")
    assert model.trims_text
    _randomise_lora(model, std=0.02)
    prompts = ["a photo of a cat.", "a photo of a golden retriever, a type of dog.", "a car"]
    assert model.tokenize(prompts).shape == (3, max(len(tok.encode(p)) + 2 for p in prompts))
    _assert_trim_matches_full(model, prompts, atol=1e-6, grad_tol=1e-5)


# -------------------------------------------------------------- fallbacks
@pytest.mark.parametrize("overrides, why", [
    ({"text_cfg": {"pool_type": "last"}}, "pooling"),
    ({"text_cfg": {"pool_type": "first"}}, "pooling"),
    ({"text_cfg": {"no_causal_mask": True}}, "not causal"),
    ({"custom_text": True}, "not an open_clip CLIP"),
])
def test_unsupported_models_use_the_full_context(overrides, why):
    clip, tok = build_tiny_clip(seed=4, **overrides)
    assert why in short_text_unsupported(clip)
    model = GladModel(clip, tok, lora=LORA, use_alignnet=False)
    _randomise_lora(model)
    assert not model.trims_text
    full = tok(PROMPTS)
    assert torch.equal(model.tokenize(PROMPTS), full)
    short = GladModel(*build_tiny_clip(), lora=None, use_alignnet=False).tokenize(PROMPTS)
    with torch.no_grad():
        reference = clip.encode_text(full, normalize=True)
        # short tokens from elsewhere are padded back to the context for such models
        torch.testing.assert_close(model.encode_text(full), reference, rtol=0, atol=0)
        torch.testing.assert_close(model.encode_text(short), reference, rtol=0, atol=0)


def test_overridden_encode_text_is_not_bypassed():
    import open_clip

    class Shifted(open_clip.CLIP):
        def encode_text(self, text, normalize=False):
            return super().encode_text(text, normalize) + 1.0

    clip, tok = build_tiny_clip()
    clip.__class__ = Shifted
    assert "overrides encode_text" in short_text_unsupported(clip)
    assert not GladModel(clip, tok, lora=None, use_alignnet=False).trims_text
