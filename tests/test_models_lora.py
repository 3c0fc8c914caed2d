"""LoRA layers and injection: exact equivalence at B = 0, merge/unmerge, switching off, gradients."""

import pytest
import torch
import torch.nn as nn

from glad.models import (
    LoraConfig,
    LoraLinear,
    RngReplay,
    adapters_disabled,
    encoder_tower,
    inject_lora,
    is_merged,
    lora_parameters,
    merge_lora,
    unmerge_lora,
)
from glad.models.attention import LoraAttention, LoraMultiheadAttention, lora_attention_from
from glad.models.testing import build_tiny_clip

ALL_TARGETS = ("q", "k", "v", "out", "mlp_fc", "mlp_proj")


pytestmark = pytest.mark.usefixtures("one_thread")


PROMPTS = ["a photo of a cat", "a dog", "one two three four five six seven eight nine ten eleven twelve"]


def _inputs(tokenizer, n_images=2, size=32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n_images, 3, size, size, generator=g), tokenizer(PROMPTS)


@torch.no_grad()
def _encode(model, images, tokens):
    return model.encode_image(images), model.encode_text(tokens)


def _randomise_lora(model, std=0.2, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _assert_close(a, b, atol=1e-5):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= atol, (a - b).abs().max().item()


# ----------------------------------------------------------------------------- config
def test_config_defaults_and_scaling():
    c = LoraConfig()
    assert (c.r, c.alpha, c.dropout, c.targets, c.encoders, c.layers, c.rslora) == (
        8, 8.0, 0.0, ("q", "k", "v"), ("image", "text"), None, False)
    assert c.scaling == 1.0
    assert LoraConfig(r=4, alpha=8, rslora=True).scaling == pytest.approx(4.0)
    c2 = LoraConfig(targets=["q", "v"], layers=[0, -1])
    assert c2.targets == ("q", "v") and c2.layers == (0, -1)
    assert LoraConfig.from_dict(c2.to_dict()) == c2


@pytest.mark.parametrize("kwargs, word", [
    (dict(r=0), "rank"), (dict(r=2.5), "rank"), (dict(alpha=-1), "alpha"), (dict(dropout=1.0), "dropout"),
    (dict(targets=("q", "x")), "targets"), (dict(targets=()), "targets"), (dict(encoders=("audio",)), "encoders"),
    (dict(layers=()), "layers"), (dict(layers=(0.5,)), "layers"),
])
def test_config_rejects_bad_values(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LoraConfig(**kwargs)


def test_select_layers():
    assert LoraConfig().select_layers(3) == [0, 1, 2]
    assert LoraConfig(layers=(0, -1, 2)).select_layers(12) == [0, 2, 11]
    with pytest.raises(ValueError, match="out of range"):
        LoraConfig(layers=(12,)).select_layers(12)
    with pytest.raises(ValueError, match="unknown"):
        LoraConfig.from_dict({"r": 8, "rank": 3})


# ------------------------------------------------------------------------ equivalence
TOWER_VARIANTS = {
    "default": {},
    "custom-qk-norm": dict(vision_cfg={"qk_norm": True}, text_cfg={"qk_norm": True}),
    "custom-scales": dict(vision_cfg={"scale_heads": True, "scale_attn_inner": True, "scale_attn": True,
                                      "scale_fc": True},
                          text_cfg={"scale_heads": True, "scale_attn_inner": True}),
    # a class token makes open_clip build per-sample [N*heads, L, L] causal + padding masks
    "custom-text-padmask": dict(custom_text=True, text_cfg={"embed_cls": True}),
    "custom-text-padmask-qknorm": dict(custom_text=True, text_cfg={"embed_cls": True, "qk_norm": True}),
    "custom-text-bidirectional": dict(custom_text=True, text_cfg={"no_causal_mask": True}),
    "layerscale-quickgelu": dict(quick_gelu=True, vision_cfg={"ls_init_value": 0.5}),
}


@pytest.mark.parametrize("variant", sorted(TOWER_VARIANTS))
@pytest.mark.parametrize("targets", [("q", "k", "v"), ALL_TARGETS])
def test_zero_adapters_equal_original(variant, targets):
    model, tok = build_tiny_clip(**TOWER_VARIANTS[variant])
    images, tokens = _inputs(tok)
    img0, txt0 = _encode(model, images, tokens)
    inject_lora(model, LoraConfig(targets=targets))
    # every block of both towers now carries adapters
    for encoder in ("image", "text"):
        tower = encoder_tower(model, encoder)
        for block in getattr(tower, "transformer", tower).resblocks:
            assert isinstance(block.attn, (LoraMultiheadAttention, LoraAttention))
    img1, txt1 = _encode(model, images, tokens)
    _assert_close(img1, img0)
    _assert_close(txt1, txt0)
    # and in training mode (nn.MultiheadAttention takes another code path there)
    model.train()
    img2, txt2 = _encode(model, images, tokens)
    _assert_close(img2, img0)
    _assert_close(txt2, txt0)


def test_text_causal_mask_is_applied():
    # With a causal mask, what follows the end-of-text token cannot change the text feature.
    model, tok = build_tiny_clip()
    inject_lora(model, LoraConfig(targets=ALL_TARGETS))
    _randomise_lora(model)
    tokens = tok(["a cat"])
    eot = int(tokens.argmax(dim=-1))
    tampered = tokens.clone()
    tampered[0, eot + 1:] = 7  # arbitrary tokens after EOT (all below the EOT id)
    with torch.no_grad():
        a, b = model.encode_text(tokens), model.encode_text(tampered)
    assert torch.equal(a, b)
    # ...whereas a token before EOT does
    tampered[0, 1] = 7
    with torch.no_grad():
        assert not torch.allclose(model.encode_text(tampered), a)


def _mha_pair(batch_first, seed=0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    ref = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    ref.load_state_dict(mha.state_dict())
    return ref, lora_attention_from(mha, LoraConfig(r=2, targets=("q", "k", "v", "out"))).eval()


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "float2d", "bool2d", "float3d", "padding", "both"])
@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_matches_torch(batch_first, mask_kind, need_weights):
    ref, lora = _mha_pair(batch_first)
    n, length, heads = 3, 5, 4
    x = torch.randn(n, length, 16)
    if not batch_first:
        x = x.transpose(0, 1)
    causal_bool = torch.ones(length, length, dtype=torch.bool).triu(1)
    causal = torch.zeros(length, length).masked_fill(causal_bool, float("-inf"))
    pad = torch.zeros(n, length, dtype=torch.bool)
    pad[0, -2:] = True
    kwargs = {
        "none": {}, "float2d": {"attn_mask": causal}, "bool2d": {"attn_mask": causal_bool},
        "float3d": {"attn_mask": causal.expand(n * heads, length, length) + torch.randn(n * heads, length, length)},
        "padding": {"key_padding_mask": pad}, "both": {"attn_mask": causal, "key_padding_mask": pad},
    }[mask_kind]
    with torch.no_grad():
        out_ref, w_ref = ref(x, x, x, need_weights=need_weights, **kwargs)
        out, w = lora(x, x, x, need_weights=need_weights, **kwargs)
    _assert_close(out, out_ref)
    if need_weights:
        _assert_close(w, w_ref)
    else:
        assert w is None and w_ref is None


def test_multihead_attention_cross_and_per_head_weights():
    ref, lora = _mha_pair(True)
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 6, 16)
    with torch.no_grad():
        out_ref, w_ref = ref(q, kv, kv, need_weights=True, average_attn_weights=False)
        out, w = lora(q, kv, kv, need_weights=True, average_attn_weights=False)
    _assert_close(out, out_ref)
    _assert_close(w, w_ref)


def test_transformer_batch_first_false():
    from open_clip.transformer import Transformer

    torch.manual_seed(0)
    tr = Transformer(width=32, layers=2, heads=4, batch_first=False).eval()
    x = torch.randn(2, 7, 32)
    mask = torch.zeros(7, 7).masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    with torch.no_grad():
        ref = tr(x, attn_mask=mask)
        for block in tr.resblocks:
            assert block.attn.batch_first is False
            block.attn = lora_attention_from(block.attn, LoraConfig())
        out = tr(x, attn_mask=mask)
    _assert_close(out, ref)


def test_attention_rejects_unsupported():
    with pytest.raises(TypeError, match="cannot add LoRA"):
        lora_attention_from(nn.Linear(4, 4), LoraConfig())
    with pytest.raises(ValueError, match="add_bias_kv"):
        lora_attention_from(nn.MultiheadAttention(8, 2, add_bias_kv=True), LoraConfig())


# ----------------------------------------------------------------- merge / disable
@pytest.mark.parametrize("variant", ["default", "custom-qk-norm", "custom-text-padmask"])
def test_merged_equals_unmerged_and_disabled_equals_original(variant):
    model, tok = build_tiny_clip(**TOWER_VARIANTS[variant])
    images, tokens = _inputs(tok)
    img0, txt0 = _encode(model, images, tokens)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, LoraConfig(targets=ALL_TARGETS))
    _randomise_lora(model)
    img1, txt1 = _encode(model, images, tokens)
    assert (img1 - img0).abs().max() > 1e-2 and (txt1 - txt0).abs().max() > 1e-2  # adapters do something

    merge_lora(model)
    assert is_merged(model)
    img2, txt2 = _encode(model, images, tokens)
    _assert_close(img2, img1)
    _assert_close(txt2, txt1)

    with adapters_disabled(model):  # merged: taken out for the duration
        assert not is_merged(model)
        img3, txt3 = _encode(model, images, tokens)
        with pytest.raises(RuntimeError, match="disabled"):
            merge_lora(model)
    _assert_close(img3, img0)
    _assert_close(txt3, txt0)
    assert is_merged(model)

    unmerge_lora(model)
    assert not is_merged(model)
    for k, v in base.items():  # the base weights are back (to float rounding)
        _assert_close(model.state_dict()[k], v, atol=1e-6)
    img4, _ = _encode(model, images, tokens)
    _assert_close(img4, img1)
    merge_lora(model)
    merge_lora(model)  # idempotent
    _assert_close(_encode(model, images, tokens)[0], img1)


def test_disabled_context_restores_state_on_error():
    model, tok = build_tiny_clip()
    inject_lora(model, LoraConfig())
    with pytest.raises(KeyError):
        with adapters_disabled(model):
            with adapters_disabled(model):  # nests
                pass
            assert all(m.disabled for m in model.modules() if hasattr(m, "lora_A"))
            raise KeyError("boom")
    assert not any(m.disabled for m in model.modules() if hasattr(m, "lora_A"))


def test_lora_linear_low_precision_merge():
    base = nn.Linear(32, 16).to(torch.bfloat16)
    layer = LoraLinear(base, r=4, scaling=2.0)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = (x.double() @ (base.weight.double() + 2.0 * layer.lora_B.weight.double() @ layer.lora_A.weight.double()).t()
               + base.bias.double())
        unmerged = layer(x).double()
        layer.merge()
        merged = layer(x).double()
    # bf16 merged and unmerged paths are each within bf16 rounding of the float64 truth
    tol = 4 * 2**-8 * ref.abs().max().item()
    assert (unmerged - ref).abs().max() <= tol
    assert (merged - ref).abs().max() <= tol


# ----------------------------------------------------------------------- selection
def test_only_adapters_trainable_and_layer_selection():
    model, _ = build_tiny_clip()
    inject_lora(model, LoraConfig(targets=("q", "v"), encoders=("text",), layers=(-1,)))
    text, image = encoder_tower(model, "text").resblocks, encoder_tower(model, "image").transformer.resblocks
    assert isinstance(text[1].attn, LoraMultiheadAttention)
    assert isinstance(text[0].attn, nn.MultiheadAttention)
    assert all(isinstance(b.attn, nn.MultiheadAttention) for b in image)
    attn = text[1].attn
    assert attn.q_proj is not None and attn.k_proj is None and attn.v_proj is not None
    assert not isinstance(attn.out_proj, LoraLinear)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [
        "transformer.resblocks.1.attn.q_proj.lora_A.weight", "transformer.resblocks.1.attn.q_proj.lora_B.weight",
        "transformer.resblocks.1.attn.v_proj.lora_A.weight", "transformer.resblocks.1.attn.v_proj.lora_B.weight",
    ]


def test_state_dict_keeps_base_names():
    model, _ = build_tiny_clip()
    before = set(model.state_dict())
    inject_lora(model, LoraConfig(targets=ALL_TARGETS))
    after = set(model.state_dict())
    assert before <= after
    assert all(".lora_A." in k or ".lora_B." in k for k in after - before)


def test_gradients_reach_only_adapters_in_both_towers():
    model, tok = build_tiny_clip()
    inject_lora(model, LoraConfig())
    images, tokens = _inputs(tok)
    img = model.encode_image(images, normalize=True)
    txt = model.encode_text(tokens, normalize=True)
    (img @ txt.t()).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    # with B = 0 only B gets a gradient at the start, in both towers
    for tower in ("visual.", "transformer."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(tower) and "lora_B" in n]
        assert grads and all(g.abs().sum() > 0 for g in grads), tower


def test_inject_errors():
    model, _ = build_tiny_clip()
    inject_lora(model, LoraConfig())
    with pytest.raises(ValueError, match="already"):
        inject_lora(model, LoraConfig())
    with pytest.raises(ValueError, match="image tower is missing; train the text tower alone"):
        inject_lora(nn.Sequential(nn.Linear(2, 2)), LoraConfig(encoders=("image",)))
    with pytest.raises(TypeError, match="LoraConfig"):
        inject_lora(build_tiny_clip()[0], {"r": 8})


# ------------------------------------------------------------------------- dropout
def test_dropout_masks_replay():
    model, tok = build_tiny_clip()
    inject_lora(model, LoraConfig(dropout=0.5))
    _randomise_lora(model)
    model.train()
    images, _ = _inputs(tok)
    replay = RngReplay()
    with torch.no_grad():
        with replay:
            a = model.encode_image(images)
        with replay:
            b = model.encode_image(images)
        c = model.encode_image(images)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    replay.reset()
    with replay, torch.no_grad():
        d = model.encode_image(images)
    assert not torch.equal(a, d)

