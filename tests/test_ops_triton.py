"""The Triton backend on flat buffers (run on CPU through TRITON_INTERPRET=1).

Its accuracy on lists of tensors is covered by test_ops.py with the other backends.
"""

import pytest
import torch

import glad.ops as ops
from glad.ops._dispatch import _supports

why = _supports("triton", torch.device("cpu"))
pytestmark = [pytest.mark.triton, pytest.mark.skipif(why is not None, reason=str(why))]


def _model(dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 80), torch.nn.Linear(80, 33)).to(dtype)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_flat_buffers_match_reference_and_repeat_bit_for_bit(dtype):
    model = _model(dtype)
    flat = ops.FlatParams(model.parameters())
    ref = [torch.randn_like(g) for g in flat.grads_flat]
    start = [g.clone() for g in flat.grads_flat]

    expected = [g.clone() for g in start]
    want = ops.project_interpolate_(expected, ref, 0.5, backend="reference")
    got = ops.project_interpolate_(flat.grads_flat, ref, 0.5, backend="triton")
    tol = 2 * torch.finfo(dtype).eps * float(expected[0].abs().max())
    torch.testing.assert_close(flat.grads_flat[0], expected[0], rtol=0, atol=tol)
    torch.testing.assert_close(got.dot, want.dot, rtol=1e-5, atol=1e-5)

    again = [g.clone() for g in start]
    ops.project_interpolate_(again, ref, 0.5, backend="triton")
    ops.project_interpolate_(start, ref, 0.5, backend="triton")
    assert torch.equal(again[0], start[0])  # deterministic: fixed slots, fixed order

    params_before = [p.clone() for p in flat.params_flat]
    state = ops.sam_perturb_(flat.params_flat, flat.grads_flat, 0.05, backend="triton")
    step = (flat.params_flat[0].double() - params_before[0].double()).norm()
    assert float(step) == pytest.approx(0.05, rel=1e-2)  # ||rho g / ||g|| || = rho
    ops.sam_restore_(flat.params_flat, state)
    assert torch.equal(flat.params_flat[0], params_before[0])
    assert torch.equal(model[0].weight.detach().flatten(), params_before[0][: 64 * 80])


def test_bfloat16_is_refused_clearly_under_the_interpreter():
    with pytest.raises(TypeError, match="interpreter"):
        ops.sam_perturb_([torch.zeros(4, dtype=torch.bfloat16)], [torch.ones(4, dtype=torch.bfloat16)], 0.1,
                         backend="triton")
