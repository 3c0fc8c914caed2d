"""Every open_clip architecture: LoRA in q/k/v of every attention layer of both towers, or
the documented one-line refusal (ConvNeXt image towers), with the text tower then trained.

Models are built on the meta device (no memory, no weights). Hugging Face text towers get a
tiny config of their own model type, since their real configs would be downloaded.
"""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn as nn

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

from glad.models import LoraConfig, encoder_tower, inject_lora, lora_sites  # noqa: E402
from glad.models.lora import LoraAdapter  # noqa: E402

_POOLS = {"AttentionPoolLatent", "AttentionPool2d"}
_OTHER_ATTENTION = {"AttentionRope"} | _POOLS


def tiny_hf_config(name: str):
    """A two-layer config of the model type that `name` (an open_clip hf_model_name) has."""
    common = dict(vocab_size=128, max_position_embeddings=96)
    if name.startswith(("xlm-roberta", "facebook/xlm")):
        return transformers.XLMRobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, **common)
    if name.startswith("roberta"):
        return transformers.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, **common)
    if name.startswith("google/mt5"):
        return transformers.MT5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    if name.startswith("facebook/nllb"):
        return transformers.M2M100Config(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                                         decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, **common)
    raise AssertionError(f"no tiny config for {name}")


@pytest.fixture(scope="module")
def offline_hf_configs():
    mp = pytest.MonkeyPatch()
    mp.setattr(transformers.AutoConfig, "from_pretrained", staticmethod(lambda name, *a, **k: tiny_hf_config(name)))
    yield
    mp.undo()


def build_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return open_clip.create_model(name, pretrained=None, device="meta", pretrained_text=False)


def reference_attention_count(tower: nn.Module) -> int:
    """Attention layers counted by class name alone (the innermost of nested ones), as a
    check on glad's discovery that shares none of its logic."""
    def is_attention(m):
        n = type(m).__name__
        return n.endswith("Attention") or n in _OTHER_ATTENTION
    return sum(1 for m in tower.modules()
               if is_attention(m) and not any(is_attention(c) for c in list(m.modules())[1:]))


def config_depth(name: str, encoder: str, tower: nn.Module) -> int | None:
    """The attention layers a tower's own config promises, where it states them."""
    cfg = open_clip.get_model_config(name)
    tower_cfg = cfg["vision_cfg" if encoder == "image" else "text_cfg"]
    if encoder == "text" and "hf_model_name" in tower_cfg:
        hf = tower.config
        return getattr(hf, "num_hidden_layers", None) or getattr(hf, "encoder_layers", None) or hf.num_layers
    if encoder == "image" and "timm_model_name" in tower_cfg:
        blocks = getattr(tower.trunk, "blocks", None)
        if not isinstance(blocks, nn.Sequential | nn.ModuleList):
            return None  # staged timm trunks (ViTamin, FastViT, Swin): no single depth to read
        pool = getattr(tower.trunk, "attn_pool", None)
        return len(blocks) + (type(pool).__name__ in _POOLS)
    layers = tower_cfg.get("layers")
    if isinstance(layers, list | tuple):  # ModifiedResNet: its one attention pool
        return 1
    return layers + bool(tower_cfg.get("attentional_pool", False))


def _adapters(tower):
    return sum(isinstance(m, LoraAdapter) for m in tower.modules())


@pytest.mark.usefixtures("offline_hf_configs")
def test_every_open_clip_config_takes_lora_in_both_towers_or_refuses_in_one_line(capsys):
    refused: dict[str, str] = {}
    both: set[str] = set()
    for name in open_clip.list_models():
        model = build_meta(name)
        expected = {}
        for encoder in ("image", "text"):
            tower = encoder_tower(model, encoder)
            expected[encoder] = reference_attention_count(tower)
            depth = config_depth(name, encoder, tower)
            if depth is not None:
                assert expected[encoder] == depth, (name, encoder)
        if expected["image"] == 0:
            before = [type(m).__name__ for m in model.modules()]
            with pytest.raises(ValueError) as err:
                inject_lora(model, LoraConfig())
            message = str(err.value)
            assert "\n" not in message and "--lora-encoders text" in message, message
            assert [type(m).__name__ for m in model.modules()] == before, f"{name}: a refusal changed the model"
            refused[name] = message
            inject_lora(model, LoraConfig(encoders=("text",)))
            sites = lora_sites(model)
            assert len(sites["text"]) == expected["text"] > 0
            assert _adapters(encoder_tower(model, "text")) == 3 * expected["text"]
            continue
        inject_lora(model, LoraConfig())
        sites = lora_sites(model)
        for encoder in ("image", "text"):
            assert len(sites[encoder]) == expected[encoder] > 0, (name, encoder)
            assert _adapters(encoder_tower(model, encoder)) == 3 * expected[encoder], (name, encoder)
        both.add(name)
    pairs = open_clip.list_pretrained()
    covered = [p for p in pairs if p[0] in both]
    with capsys.disabled():
        print(f"\nLoRA in both towers: {len(both)} of {len(open_clip.list_models())} configs, "
              f"{len(covered)} of {len(pairs)} pretrained (model, tag) pairs; refused (text tower works): "
              f"{sorted(refused)}")
    assert all(p[0] in both or p[0] in refused for p in pairs)
    assert len(covered) >= 180


def test_refusal_leaves_the_model_untouched():
    model = build_meta("convnext_base")
    names = [n for n, _ in model.named_modules()]
    with pytest.raises(ValueError, match="image tower"):
        inject_lora(model, LoraConfig())
    assert [n for n, _ in model.named_modules()] == names
    assert not any(isinstance(m, LoraAdapter) for m in model.modules())


def test_kinds_of_attention_found(offline_hf_configs):
    kinds = collections.Counter()
    for name in ("ViT-B-16-SigLIP2", "EVA02-B-16", "PE-Core-B-16", "RN50", "MobileCLIP2-S0", "ViTamin-S",
                 "xlm-roberta-base-ViT-B-32", "mt5-base-ViT-B-32", "nllb-clip-base", "coca_ViT-B-32"):
        model = build_meta(name)
        inject_lora(model, LoraConfig())
        kinds.update(type(m).__name__ for m in model.modules()
                     if type(m).__name__.startswith("Lora") and not isinstance(m, LoraAdapter | nn.Linear))
    assert {"LoraPackedLinear", "LoraMultiheadAttention", "LoraAttentionPool2d"} <= set(kinds), kinds


# ------------------------------------------------------------ real (random) weights
SHRUNK_TEXT = {"width": 64, "heads": 4, "layers": 2}


def build_family(name: str, seed: int = 0) -> nn.Module:
    """A random-weight model of `name`'s family: its own image tower, a two-layer text tower."""
    text_cfg = dict(open_clip.get_model_config(name)["text_cfg"])
    shrink = {}
    if "hf_model_name" not in text_cfg:  # Hugging Face towers are shrunk by `tiny_hf_config`
        shrink["text_cfg"] = {**text_cfg, **SHRUNK_TEXT, "vocab_size": min(text_cfg.get("vocab_size", 49408), 1000)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.create_model(name, pretrained=None, pretrained_text=False, **shrink).eval()


def _inputs(model):
    size = model.visual.image_size
    size = size if isinstance(size, tuple | list) else (size, size)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, *size, generator=gen)
    text = encoder_tower(model, "text")
    vocab = getattr(model, "vocab_size", None) or text.vocab_size
    # open_clip's towers take the full context (their causal mask is that long); HF towers any length
    context = 16 if hasattr(text, "config") else (getattr(model, "context_length", None) or text.context_length)
    tokens = torch.randint(1, vocab, (3, context), generator=gen)
    return images, tokens


def _features(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


FAMILIES = ["ViT-B-16-SigLIP2", "EVA02-B-16", "PE-Core-T-16-384", "MobileCLIP2-S0", "ViTamin-S", "RN50",
            "coca_ViT-B-32", "xlm-roberta-base-ViT-B-32", "mt5-base-ViT-B-32", "nllb-clip-base"]


@pytest.mark.slow
@pytest.mark.usefixtures("offline_hf_configs")
@pytest.mark.parametrize("name", FAMILIES)
def test_family_adapters_act_as_weight_updates(name, one_thread):
    from glad.models import adapters_disabled, merge_lora, unmerge_lora

    model = build_family(name)
    images, tokens = _inputs(model)
    img0, txt0 = _features(model, images, tokens)
    # towers whose attention glad re-implements (open_clip's MultiheadAttention / Attention) match
    # to float rounding; where adapters wrap the tower's own Linears, bit for bit
    from open_clip.transformer import Attention
    wrapped = {e: not any(isinstance(m, nn.MultiheadAttention | Attention) for m in encoder_tower(model, e).modules())
               for e in ("image", "text")}
    inject_lora(model, LoraConfig(targets=("q", "k", "v", "out")))
    img1, txt1 = _features(model, images, tokens)
    for encoder, new, old in (("image", img1, img0), ("text", txt1, txt0)):
        if wrapped[encoder]:
            assert torch.equal(new, old), encoder
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoraAdapter):
                m.lora_B.weight.normal_(std=0.05)
    img2, txt2 = _features(model, images, tokens)
    # every adapter is on the forward path: each B gets a gradient
    (model.encode_image(images).square().sum() + model.encode_text(tokens).square().sum()).backward()
    idle = [n for n, p in model.named_parameters() if n.endswith("lora_B.weight") and not p.grad.abs().sum() > 0]
    assert not idle, idle
    assert not torch.equal(img2, img0) and not torch.equal(txt2, txt0)
    # merged into the weights, the original code paths give the same features: the adapters
    # act exactly as W + scaling * B A
    merge_lora(model)
    img3, txt3 = _features(model, images, tokens)
    unmerge_lora(model)
    torch.testing.assert_close(img3, img2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(txt3, txt2, rtol=1e-4, atol=1e-4)
    with adapters_disabled(model):
        img4, txt4 = _features(model, images, tokens)
    torch.testing.assert_close(img4, img0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(txt4, txt0, rtol=1e-5, atol=1e-5)


class _Towers(nn.Module):
    def __init__(self, image, text):
        super().__init__()
        self.visual, self.transformer = image, text


def test_eva_fused_qkv_with_bias(one_thread):
    """EVA-01 / EVA02-E (fused qkv with a q/v bias, read as a weight): the adapters act."""
    from timm.models.eva import EvaAttention

    from glad.models import merge_lora

    torch.manual_seed(0)
    attn = EvaAttention(64, num_heads=4, qkv_fused=True, qkv_bias=True, norm_layer=nn.LayerNorm).eval()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    model = _Towers(attn, nn.MultiheadAttention(16, 2))
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        ref = attn(x)
        inject_lora(model, LoraConfig())
        torch.testing.assert_close(attn(x), ref, rtol=0, atol=1e-5)  # bias added after the GEMM
        for m in model.modules():
            if isinstance(m, LoraAdapter):
                m.lora_B.weight.normal_(std=0.1)
        tuned = attn(x)
        assert not torch.allclose(tuned, ref, atol=1e-3)
        merge_lora(model)
        torch.testing.assert_close(attn(x), tuned, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,encoders", [("RN50", ("image", "text")), ("convnext_tiny", ("text",)),
                                           ("MobileCLIP2-S0", ("image", "text"))])
def test_frozen_backbone_normalisation_never_moves(name, encoders, one_thread):
    """Training mode leaves the frozen tower's BatchNorm statistics and the teacher unchanged."""
    from glad.models import GladModel

    model = build_family(name)
    images, tokens = _inputs(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    glad = GladModel(model, tokenizer=None, lora=LoraConfig(encoders=encoders), use_alignnet=True, trim_text=False)
    teacher0 = glad.zeroshot_logits(images, tokens)
    glad.train()
    assert glad.training and glad.alignnet.training
    loss = glad(images, tokens).logsumexp(-1).sum()
    loss.backward()
    after = model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert not moved, moved
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert all(not m.training for m in norms)
    # the teacher is the pretrained model still (train-mode kernels may round differently)
    torch.testing.assert_close(glad.zeroshot_logits(images, tokens), teacher0, rtol=1e-5, atol=1e-5)
