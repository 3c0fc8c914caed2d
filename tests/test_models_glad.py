"""GladModel and glad_loss: zero-shot start, teacher path, caching, trainable set, merging."""

import pytest
import torch
import torch.nn.functional as F

from glad.models import (
    GladModel,
    LoraConfig,
    adapters_disabled,
    glad_loss,
    is_merged,
    tokens_key,
)
from glad.models.testing import build_tiny_clip, build_tiny_glad

CLASSES = ["cat", "dog", "car", "tree", "boat"]


pytestmark = pytest.mark.usefixtures("one_thread")


DEFAULT_LORA = LoraConfig()




def _batch(model, n=4, seed=2):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    return images, model.tokenize([f"a photo of a {c}" for c in CLASSES]), labels


def _perturb_trainables(model, std=0.2, seed=4):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def test_fresh_model_equals_zero_shot_exactly():
    model = build_tiny_glad()
    images, tokens, labels = _batch(model)
    logits = model(images, tokens)
    teacher = model.zeroshot_logits(images, tokens)
    assert torch.equal(logits, teacher)
    loss, parts = glad_loss(logits, labels, teacher)
    assert parts["kl"].item() == 0.0
    assert torch.equal(loss, parts["ce"])
    # ...and zero-shot is plain CLIP at the full context: exp(logit_scale) * <f, t>
    with torch.no_grad():
        f = model.clip.encode_image(images, normalize=True)
        t = model.clip.encode_text(model.tokenizer([f"a photo of a {c}" for c in CLASSES]), normalize=True)
    torch.testing.assert_close(teacher, model.clip.logit_scale.exp() * f @ t.t(), rtol=1e-5, atol=1e-5)


def test_trainable_parameters_are_lora_and_alignnet_only():
    model = build_tiny_glad()
    trainable = model.trainable_parameters()
    names = [n for n, _ in model.named_trainable_parameters()]
    assert all(("lora_" in n) or n.startswith("alignnet.") for n in names)
    assert {id(p) for p in trainable} == {id(p) for p in model.parameters() if p.requires_grad}
    n_alignnet = sum(p.numel() for p in model.alignnet.parameters())
    assert n_alignnet == (64 * 256 + 256) + (256 * 128 + 128) + (128 * 32 + 32)
    # q/k/v of 2 image blocks (width 64) and 2 text blocks (width 48), r = 8: 2*r*width each
    n_lora = sum(p.numel() for n, p in model.named_trainable_parameters() if "lora_" in n)
    assert n_lora == 2 * 3 * 2 * 8 * 64 + 2 * 3 * 2 * 8 * 48
    assert build_tiny_glad(lora=None, alignnet=False).trainable_parameters() == []


def test_gradients_flow_only_to_adapters_and_alignnet():
    model = build_tiny_glad()
    _perturb_trainables(model)  # past step 0 every trainable tensor gets a gradient
    images, tokens, labels = _batch(model)
    teacher = model.zeroshot_logits(images, tokens)
    assert not teacher.requires_grad
    loss, parts = glad_loss(model(images, tokens), labels, teacher)
    assert parts["kl"].item() > 0
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    text_lora = [p for n, p in model.named_trainable_parameters() if n.startswith("clip.transformer.")]
    assert text_lora and all(p.grad is not None for p in text_lora)  # text LoRA trains through encode_text


def test_zero_shot_path_ignores_adapters_and_caches_text_features():
    model = build_tiny_glad()
    images, tokens, _ = _batch(model)
    before = model.zeroshot_logits(images, tokens)
    _perturb_trainables(model, std=0.5)
    assert not torch.allclose(model(images, tokens), before)
    calls = []
    hook = model.clip.token_embedding.register_forward_hook(lambda *a: calls.append(1))
    after = model.zeroshot_logits(images, tokens)
    assert calls == []  # text features came from the cache
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    same_tokens = tokens.clone()  # another tensor with the same classes: same cache entry
    assert model.zeroshot_text_features(same_tokens) is model.zeroshot_text_features(tokens)
    assert calls == []
    other = model.tokenize(["a photo of a horse"])
    model.zeroshot_text_features(other)
    assert calls == [1]
    tokens[0, 1] += 1  # edited in place: must be recomputed
    model.zeroshot_text_features(tokens)
    assert calls == [1, 1]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # lower precision: a separate entry
        model.zeroshot_text_features(tokens)
    assert calls == [1, 1, 1]
    model.zeroshot_text_features(tokens)
    assert calls == [1, 1, 1]
    hook.remove()
    assert tokens_key(tokens) != tokens_key(same_tokens)
    model.clear_zeroshot_cache()
    assert not model._zs_cache


def test_adapters_disabled_switches_alignnet_off_too():
    model = build_tiny_glad(lora=None)
    _perturb_trainables(model)
    images, tokens, _ = _batch(model)
    f, t = model.encode_image(images), model.encode_text(tokens)
    with torch.no_grad():
        tuned = model.logits(f, t)
        with adapters_disabled(model):
            assert model.alignnet.disabled
            off = model.logits(f, t)
    assert not model.alignnet.disabled
    assert not torch.allclose(tuned, off)
    torch.testing.assert_close(off, model.clip.logit_scale.exp() * f @ t.t(), rtol=1e-5, atol=1e-5)


def test_merged_context():
    model = build_tiny_glad(lora=LoraConfig(targets=("q", "k", "v", "out")))
    _perturb_trainables(model)
    images, tokens, _ = _batch(model)
    with torch.no_grad():
        ref = model(images, tokens)
        with model.merged():
            assert is_merged(model.clip)
            with model.merged():  # nested: stays merged
                pass
            assert is_merged(model.clip)
            fast = model(images, tokens)
        assert not is_merged(model.clip)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-4)
    model.merge()
    assert is_merged(model.clip)
    model.unmerge()
    assert not is_merged(model.clip)


def test_chunked_logits_inside_model():
    model = build_tiny_glad()
    _perturb_trainables(model)
    images, tokens, _ = _batch(model)
    with torch.no_grad():
        f, t = model.encode_image(images), model.encode_text(tokens)
        big = model.logits(f, t)
        model.chunk_budget_bytes = 1  # one class per chunk
        small = model.logits(f, t)
    torch.testing.assert_close(small, big, rtol=1e-6, atol=1e-5)


def test_model_variants_and_errors():
    model = build_tiny_glad(custom_text=True)
    images, tokens, _ = _batch(model)
    assert model(images, tokens).shape == (4, len(CLASSES))
    assert model.tokenize("one prompt").shape == (1, 16)
    clip, tok = build_tiny_clip()
    GladModel(clip, tok, lora=LoraConfig(r=4))
    with pytest.raises(ValueError, match="already carries LoRA"):
        GladModel(clip, tok, lora=LoraConfig(r=8))
    kept = GladModel(clip, tok, lora=None)  # adopt the existing adapters
    assert kept.lora_config == LoraConfig(r=4)
    assert "model_name='tiny'" in repr(build_tiny_glad())


# ---------------------------------------------------------------------------- loss
def test_glad_loss_matches_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    teacher = torch.randn(6, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (6,), generator=g)
    loss, parts = glad_loss(logits, labels, teacher, kl_weight=0.7)
    p_zs = teacher.softmax(-1)
    kl = (p_zs * (p_zs.log() - logits.log_softmax(-1))).sum(-1).mean()
    ce = F.cross_entropy(logits, labels)
    torch.testing.assert_close(parts["kl"].double(), kl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["ce"].double(), ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.double(), ce + 0.7 * kl, rtol=1e-5, atol=1e-6)
    assert not parts["kl"].requires_grad


def test_glad_loss_teacher_gets_no_gradient_and_options():
    logits = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 3])
    loss, _ = glad_loss(logits, labels, teacher)
    loss.backward()
    assert teacher.grad is None and logits.grad is not None
    plain, parts = glad_loss(logits, labels)
    assert parts["kl"].item() == 0.0
    torch.testing.assert_close(plain, F.cross_entropy(logits, labels))
    off, parts = glad_loss(logits, labels, teacher, kl_weight=0)
    assert parts["kl"].item() == 0.0
    with pytest.raises(ValueError, match="kl_weight"):
        glad_loss(logits, labels, teacher, kl_weight=-1)
    with pytest.raises(ValueError, match="shape"):
        glad_loss(logits, labels, teacher[:, :3])


def test_teacher_pass_switches_modules_collected_once(monkeypatch):
    import glad.models.glad_model as gm

    model = build_tiny_glad()
    images, tokens, _ = _batch(model)
    _perturb_trainables(model)
    calls = []
    real = gm.switchable_modules
    monkeypatch.setattr(gm, "switchable_modules", lambda m: calls.append(1) or real(m))
    first = model.zeroshot_logits(images, tokens)
    model.clear_zeroshot_cache()
    second = model.zeroshot_logits(images, tokens)
    assert len(calls) == 1  # not a walk of the model per teacher pass
    torch.testing.assert_close(first, second)
    # and it is the frozen CLIP: adapters and AlignNet off inside, back on after
    with torch.no_grad(), adapters_disabled(model):  # walks the model: the uncached way
        plain = model.logits(model.encode_image(images), model.encode_text(tokens))
    torch.testing.assert_close(first, plain)
    assert all(not m.disabled for m in model.adapter_switches())
