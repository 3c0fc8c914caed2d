"""The cuda and triton backends on a GPU (skipped where no CUDA device is visible).

The same float64-oracle checks as test_ops.py, plus what only a GPU can show:
no host sync in a step, and bit-identical repeats.
"""

import pytest
import torch
from test_ops import (
    assert_within_rule,
    bits,
    oracle_project,
    oracle_sam,
    plain_project,
    plain_sam,
    rand_lists,
)

import glad.ops as ops
from glad.ops._dispatch import _supports

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")]
SIZES = [(1,), (5,), (1025,), (65537,), (33, 17), (3, 100_003)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _gpu_backend(name):
    why = _supports(name, torch.device("cuda")) if torch.cuda.is_available() else "no CUDA device"
    return pytest.param(name, marks=pytest.mark.skipif(why is not None, reason=str(why)), id=name)


BACKENDS = [_gpu_backend(n) for n in ("cuda", "triton", "reference")]


def _cuda(ts):
    return [t.cuda() for t in ts]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_project_and_sam_match_float64(backend, dtype):
    gs, rs = rand_lists(SIZES, dtype, gen_seed=1), rand_lists(SIZES, dtype, gen_seed=2)
    rs = [(-1.1 * g.float() + 0.1 * r.float()).to(dtype) for g, r in zip(gs, rs, strict=True)]
    oracle, dot, n2 = oracle_project(gs, rs, 0.5, 1e-12)
    baseline = plain_project(_cuda(gs), _cuda(rs), 0.5, 1e-12)
    g_dev = _cuda(gs)
    stats = ops.project_interpolate_(g_dev, _cuda(rs), 0.5, backend=backend)
    assert stats.dot.is_cuda and stats.nonfinite.is_cuda and not bool(stats.nonfinite)
    assert_within_rule([g.cpu() for g in g_dev], [b.cpu() for b in baseline], oracle)
    assert float(stats.dot) == pytest.approx(dot, rel=1e-4) and float(stats.norm_sq) == pytest.approx(n2, rel=1e-4)

    ps = rand_lists(SIZES, dtype, scale=1.0, gen_seed=3)
    oracle, norm = oracle_sam(ps, gs, 0.1)
    baseline = plain_sam(_cuda(ps), _cuda(gs), 0.1)
    p_dev = _cuda(ps)
    state = ops.sam_perturb_(p_dev, _cuda(gs), 0.1, backend=backend)
    assert_within_rule([p.cpu() for p in p_dev], [b.cpu() for b in baseline], oracle)
    assert float(state.grad_norm) == pytest.approx(norm, rel=1e-4)
    ops.sam_restore_(p_dev, state)
    assert all(torch.equal(bits(p.cpu()), bits(o)) for p, o in zip(p_dev, ps, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_and_zero_grads_on_the_device(backend):
    g = _cuda([torch.zeros(1000), torch.zeros(7)])
    p = _cuda([torch.randn(1000), torch.randn(7)])
    before = [t.clone() for t in p]
    state = ops.sam_perturb_(p, g, 0.1, backend=backend)
    assert float(state.grad_norm) == 0 and all(torch.equal(a, b) for a, b in zip(p, before, strict=True))
    g[0][3] = float("inf")
    state = ops.sam_perturb_(p, g, 0.1, backend=backend)
    assert bool(state.nonfinite) and all(torch.equal(a, b) for a, b in zip(p, before, strict=True))
    r = _cuda([torch.randn(1000), torch.randn(7)])
    g_before = [t.clone() for t in g]
    stats = ops.project_interpolate_(g, r, 0.5, backend=backend)
    assert bool(stats.nonfinite) and all(torch.equal(bits(a), bits(b)) for a, b in zip(g, g_before, strict=True))


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] != "reference"])
def test_repeats_are_bit_identical_and_need_no_host_sync(backend):
    gs = _cuda(rand_lists(SIZES, torch.float32, gen_seed=5))
    rs = _cuda(rand_lists(SIZES, torch.float32, gen_seed=6))
    ops.project_interpolate_([g.clone() for g in gs], rs, 0.5, backend=backend)  # warm up (compiles)
    a, b = [g.clone() for g in gs], [g.clone() for g in gs]
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        sa = ops.project_interpolate_(a, rs, 0.5, backend=backend)
        sb = ops.project_interpolate_(b, rs, 0.5, backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(sa.dot, sb.dot) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_cuda_ops_pass_opcheck():
    if _supports("cuda", torch.device("cuda")) is not None:
        pytest.skip("the cuda backend is not built")
    gs = _cuda(rand_lists([(3, 5), (1025,)], torch.float32, gen_seed=7))
    rs = _cuda(rand_lists([(3, 5), (1025,)], torch.float32, gen_seed=8))
    torch.library.opcheck(torch.ops.glad.project_interpolate_.default, (gs, rs, 0.5, 1e-12))
    backup = [torch.empty_like(g) for g in gs]
    torch.library.opcheck(torch.ops.glad.sam_perturb_.default, (gs, rs, backup, 0.05))
    torch.library.opcheck(torch.ops.glad.sam_restore_.default, (gs, [g.clone() for g in gs]))
