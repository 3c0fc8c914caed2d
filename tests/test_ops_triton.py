"""The Triton backend on flat buffers (run on CPU through TRITON_INTERPRET=1).

Its accuracy on lists of tensors is covered by test_ops.py with the other backends.
"""

import pytest
import torch
import triton
import triton.language as tl

import glad.ops as ops
from glad.ops._dispatch import _supports
from glad.ops._triton import BLOCK, _block_offsets

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


@triton.jit
def _offsets_probe(out_ptr, pid, BLOCK: tl.constexpr):
    tl.store(out_ptr + tl.arange(0, BLOCK), _block_offsets(pid, BLOCK))


def test_block_offsets_are_64_bit():
    # The offset arithmetic every kernel uses, at a program id whose first offset passes 2**31
    # (a 32-bit product would wrap): checked without allocating 8 GB.
    pid = 2**31 // BLOCK + 3
    out = torch.empty(BLOCK, dtype=torch.int64)
    _offsets_probe[(1,)](out, pid, BLOCK=BLOCK)
    assert out[0].item() == pid * BLOCK > 2**31 and out[-1].item() == pid * BLOCK + BLOCK - 1


def test_launches_are_guarded_by_the_tensors_device():
    from glad.ops._triton import _on_device

    guard = _on_device(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(_on_device(torch.device("cpu")), torch.cuda.device)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.cuda
def test_tensors_on_another_device_than_the_current_one():
    torch.cuda.set_device(0)
    g = [torch.randn(5000, device="cuda:1"), torch.randn(7, device="cuda:1")]
    r = [torch.randn_like(t) for t in g]
    want = [t.clone() for t in g]
    ops.project_interpolate_(want, r, 0.5, backend="reference")
    ops.project_interpolate_(g, r, 0.5, backend="triton")
    torch.cuda.synchronize(1)
    for a, b in zip(g, want, strict=True):
        torch.testing.assert_close(a, b)


def test_every_kernel_compiles_ahead_of_time_for_sm80_and_sm90():
    # Triton's own compiler with an explicit GPU target: no GPU needed, all dtype variants.
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("triton_aot.py")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    res = subprocess.run([sys.executable, str(script), "80", "90"], capture_output=True, text=True, env=env,
                         timeout=600)
    from triton_aot import variants

    n = len(list(variants()))  # every kernel x dtype x switch x count width
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"sm_80: {n} kernel variants compiled" in res.stdout and f"sm_90: {n} kernel" in res.stdout
