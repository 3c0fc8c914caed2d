"""AlignNet: zero-initialised start, memory-bounded logits equal to the direct formula, gradients."""

import pytest
import torch
import torch.nn.functional as F

from glad.models import AlignNet, cosine_logits, naive_alignnet_logits

pytestmark = pytest.mark.usefixtures("one_thread")


def _features(n_img, n_cls, dim, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(n_img, dim, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    t = F.normalize(torch.randn(n_cls, dim, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    return f, t


def _randomise(net, std=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return net


def test_shapes_and_zero_last_layer():
    net = AlignNet(512)
    assert [tuple(layer.weight.shape) for layer in net.layers] == [(256, 1024), (128, 256), (512, 128)]
    assert net.layers[-1].weight.abs().sum() == 0 and net.layers[-1].bias.abs().sum() == 0
    assert net(torch.randn(3, 1024)).abs().sum() == 0
    with pytest.raises(ValueError, match="hidden"):
        AlignNet(512, hidden=())


@pytest.mark.parametrize("budget", [1, 4096, 2**30])
def test_fresh_alignnet_gives_zero_shot_logits_exactly(budget):
    net = AlignNet(16, hidden=(12, 8))
    with torch.no_grad():  # first layers random, last layer zero (as after init)
        for layer in net.layers[:-1]:
            layer.weight.normal_()
    f, t = _features(5, 7, 16)
    scale = torch.tensor(100.0)
    assert torch.equal(net.logits(f, t, scale, budget), cosine_logits(f, t, scale))
    # and cosine_logits is CLIP's zero-shot formula
    torch.testing.assert_close(cosine_logits(f, t, scale), scale * f @ t.t(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("hidden", [(256, 128), (32,), (24, 16, 8)])
@pytest.mark.parametrize("budget", [1, 3000, 2**30])
@pytest.mark.parametrize("shape", [(1, 1), (4, 9), (7, 33)])
def test_fused_equals_naive(hidden, budget, shape):
    dim = 64 if hidden == (256, 128) else 20
    net = _randomise(AlignNet(dim, hidden), std=0.2)
    f, t = _features(*shape, dim)
    scale = torch.tensor(50.0)
    with torch.no_grad():
        fused = net.logits(f, t, scale, budget)
        naive = naive_alignnet_logits(net, f, t, scale)
    torch.testing.assert_close(fused, naive, rtol=1e-5, atol=2e-5)


def test_fused_equals_naive_float64_tight():
    net = _randomise(AlignNet(24, (16, 12)).double(), std=0.5)
    f, t = _features(6, 11, 24, torch.float64)
    with torch.no_grad():
        fused = net.logits(f, t, 1.0, 500)
        naive = naive_alignnet_logits(net, f, t, 1.0)
    torch.testing.assert_close(fused, naive, rtol=1e-12, atol=1e-12)


def test_large_shift_still_matches():
    # pi much larger than t: the Gram-matrix form of |t + pi|^2 stays accurate
    net = _randomise(AlignNet(32, (16, 8)), std=2.0)
    f, t = _features(3, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.logits(f, t, 10.0), naive_alignnet_logits(net, f, t, 10.0),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("budget", [1, 2**30])  # 1 byte: one class per chunk, recomputed in backward
def test_gradients_match_naive(budget):
    net = _randomise(AlignNet(20, (12, 8)), std=0.3)
    f, t = _features(4, 6, 20, torch.float64)
    net = net.double()
    g = torch.Generator().manual_seed(5)
    weights = torch.randn(4, 6, generator=g, dtype=torch.float64)

    def grads(fn):
        fi, ti = f.clone().requires_grad_(), t.clone().requires_grad_()
        net.zero_grad()
        (fn(fi, ti) * weights).sum().backward()
        return [fi.grad, ti.grad] + [p.grad.clone() for p in net.parameters()]

    fused = grads(lambda a, b: net.logits(a, b, 3.0, budget))
    naive = grads(lambda a, b: naive_alignnet_logits(net, a, b, 3.0))
    for a, b in zip(fused, naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_features_cast_and_errors():
    net = AlignNet(8, (4,))
    f, t = _features(2, 3, 8, torch.float16)
    out = net.logits(f, t, 1.0)
    assert out.dtype == torch.float32 and out.shape == (2, 3)
    with pytest.raises(ValueError, match="8-d"):
        net.logits(torch.randn(2, 9), torch.randn(3, 8), 1.0)
