"""glad.ops against a float64 oracle, for every backend that runs on this machine.

Low-precision results are held to flash-attention's rule: at most twice the
error of plain torch computing the same op in the same dtype (no upcast), plus
one ulp of the largest value.
"""

import math

import pytest
import torch

import glad.ops as ops
from glad.ops._dispatch import _supports

CPU = torch.device("cpu")
SIZES = [(1,), (5,), (1025,), (65537,), (33, 17)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _backend(name):
    why = _supports(name, CPU)
    return pytest.param(name, marks=pytest.mark.skipif(why is not None, reason=str(why)), id=name)


BACKENDS = [_backend(n) for n in ("reference", "cpu", "triton")]


def _skip_interpreter_bf16(backend, dtype):
    """The Triton interpreter has no bfloat16: the backend must say so clearly instead."""
    if backend == "triton" and dtype == torch.bfloat16:
        g = [torch.ones(3, dtype=dtype)]
        with pytest.raises(TypeError, match="bfloat16"):
            ops.project_interpolate_(g, [torch.ones(3, dtype=dtype)], 0.5, backend="triton")
        return True
    return False


def rand_lists(sizes, dtype, scale=0.05, gen_seed=0):
    gen = torch.Generator().manual_seed(gen_seed)
    return [(torch.randn(s, generator=gen) * scale).to(dtype) for s in sizes]


def bits(t):
    """A view that torch.equal compares bit for bit (NaN == NaN, -0 != +0)."""
    return t.view({4: torch.int32, 2: torch.int16}[t.element_size()])


# ---------------------------------------------------------------- oracles


def oracle_project(gs, rs, alpha, delta):
    g64 = [g.double() for g in gs]
    r64 = [r.double() for r in rs]
    dot = sum(float((g * r).sum()) for g, r in zip(g64, r64, strict=True))
    n2 = sum(float((g * g).sum()) for g in g64)
    c = dot / (n2 + delta) if dot < 0 else 0.0
    return [(1 - alpha - alpha * c) * g + alpha * r for g, r in zip(g64, r64, strict=True)], dot, n2


def plain_project(gs, rs, alpha, delta):
    """What plain torch gives in the inputs' own dtype: the error baseline."""
    dot = sum(torch.dot(g.flatten(), r.flatten()) for g, r in zip(gs, rs, strict=True))
    n2 = sum(torch.dot(g.flatten(), g.flatten()) for g in gs)
    c = torch.clamp(dot, max=0) / (n2 + delta)
    return [(1 - alpha - alpha * c) * g + alpha * r for g, r in zip(gs, rs, strict=True)]


def oracle_sam(ps, gs, rho):
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in gs))
    scale = rho / (norm + 1e-12) if norm > 0 else 0.0
    return [p.double() + scale * g.double() for p, g in zip(ps, gs, strict=True)], norm


def plain_sam(ps, gs, rho):
    norm = torch.stack([g.norm() for g in gs]).norm()
    scale = rho / (norm + 1e-12)
    return [p + scale * g for p, g in zip(ps, gs, strict=True)]


def max_err(outs, refs):
    return max((float((o.double() - r).abs().max()) for o, r in zip(outs, refs, strict=True) if o.numel()), default=0.0)


def assert_within_rule(outs, baseline, oracle):
    """max error <= 2 x plain torch's error in the same dtype + one ulp of the largest value."""
    dtype = outs[0].dtype
    ulp = torch.finfo(dtype).eps * max(float(r.abs().max()) for r in oracle if r.numel())
    err, base = max_err(outs, oracle), max_err(baseline, oracle)
    assert err <= 2 * base + ulp, f"{dtype}: error {err:.3e} > 2 x plain torch {base:.3e} + ulp {ulp:.3e}"


def assert_stat_close(value, exact, baseline, abs_terms):
    """A float32 global statistic: the same rule against plain torch's float32 reduction,
    plus a few float32 ulps of the sum of absolute terms (the scale of rounding in a sum)."""
    assert value.dtype == torch.float32 and value.shape == ()
    base = abs(float(baseline) - exact)
    assert abs(float(value) - exact) <= 2 * base + 4 * torch.finfo(torch.float32).eps * abs_terms + 1e-30


# ---------------------------------------------------------------- project_interpolate_


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["random", "conflict", "scales"])
def test_project_matches_float64(backend, dtype, case):
    if _skip_interpreter_bf16(backend, dtype):
        return
    gs = rand_lists(SIZES, dtype, gen_seed=1)
    rs = rand_lists(SIZES, dtype, gen_seed=2)
    if case == "conflict":  # g' ~ -g: the projection branch is taken with c ~ -1
        rs = [(-1.1 * g.float() + 0.1 * r.float()).to(dtype) for g, r in zip(gs, rs, strict=True)]
    if case == "scales":  # magnitudes from 1e-3 to 1e2 across tensors
        gs = [(g.float() * 10.0 ** (i - 3)).to(dtype) for i, g in enumerate(gs)]
    alpha, delta = 0.5, 1e-12
    inputs = [g.clone() for g in gs]
    refs_before = [r.clone() for r in rs]
    oracle, dot, n2 = oracle_project(inputs, rs, alpha, delta)
    baseline = plain_project(inputs, rs, alpha, delta)

    stats = ops.project_interpolate_(gs, rs, alpha, delta, backend=backend)

    assert stats.backend == backend
    assert_within_rule(gs, baseline, oracle)
    assert all(torch.equal(bits(r), bits(b)) for r, b in zip(rs, refs_before, strict=True)), "ref_grads were modified"
    g32, r32 = [g.float().flatten() for g in inputs], [r.float().flatten() for r in rs]
    abs_dot = sum(float((g.double() * r.double()).abs().sum()) for g, r in zip(inputs, rs, strict=True))
    assert_stat_close(stats.dot, dot, sum(torch.dot(g, r) for g, r in zip(g32, r32, strict=True)), abs_dot)
    assert_stat_close(stats.norm_sq, n2, sum(torch.dot(g, g) for g in g32), n2)
    assert stats.nonfinite.dtype == torch.bool and not bool(stats.nonfinite)
    if case == "conflict":
        assert float(stats.dot) < 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_project_zero_and_tiny_grads_write_no_nan(backend, dtype):
    if _skip_interpreter_bf16(backend, dtype):
        return
    tiny = torch.finfo(dtype).tiny
    cases = [
        ([torch.zeros(7, dtype=dtype)], [torch.zeros(7, dtype=dtype)]),
        ([torch.zeros(7, dtype=dtype)], [torch.ones(7, dtype=dtype)]),
        ([torch.full((9,), tiny, dtype=dtype)], [torch.full((9,), -tiny, dtype=dtype)]),
        ([torch.full((9,), tiny / 4, dtype=dtype)], [torch.full((9,), -3.0, dtype=dtype)]),  # subnormal g
    ]
    for gs, rs in cases:
        oracle, _, _ = oracle_project(gs, rs, 0.5, 1e-12)
        stats = ops.project_interpolate_(gs, rs, 0.5, backend=backend)
        assert torch.isfinite(gs[0]).all(), (gs, rs)
        assert not bool(stats.nonfinite)
        assert max_err(gs, oracle) <= torch.finfo(dtype).eps * max(1.0, float(oracle[0].abs().max()))
    # delta = 0 with all-zero grads: the branch is not taken, so no 0/0
    g = [torch.zeros(4, dtype=dtype)]
    ops.project_interpolate_(g, [torch.zeros(4, dtype=dtype)], 0.5, 0.0, backend=backend)
    assert torch.equal(g[0], torch.zeros(4, dtype=dtype))


# The Triton interpreter computes with numpy, which warns about the NaN/Inf on purpose here.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", ["nan_g", "inf_ref", "overflow"])
def test_project_nonfinite_is_flagged_and_grads_untouched(backend, bad):
    gs = rand_lists([(5,), (1025,)], torch.float32, scale=1.0)
    rs = rand_lists([(5,), (1025,)], torch.float32, scale=1.0, gen_seed=3)
    if bad == "nan_g":
        gs[1][7] = float("nan")
    elif bad == "inf_ref":
        rs[0][2] = float("inf")
    else:  # finite values whose squares overflow float32
        gs[1][3] = 3e38
    before = [g.clone() for g in gs]
    stats = ops.project_interpolate_(gs, rs, 0.5, backend=backend)
    assert bool(stats.nonfinite)
    assert all(torch.equal(bits(g), bits(b)) for g, b in zip(gs, before, strict=True))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_project_infinite_coefficient_is_flagged(backend):
    # delta = 0 and conflicting tiny grads: ||g||^2 vanishes (or nearly) while <g, g'> < 0, so
    # c = <g, g'> / ||g||^2 is -inf or beyond float range: nothing written, flagged.
    gs = [torch.full((7,), 1e-30), torch.full((300,), 1e-30)]
    rs = [torch.full((7,), -1e30), torch.full((300,), -1e30)]
    before = [g.clone() for g in gs]
    stats = ops.project_interpolate_(gs, rs, 0.5, delta=0.0, backend=backend)
    assert bool(stats.nonfinite)
    assert all(torch.equal(bits(g), bits(b)) for g, b in zip(gs, before, strict=True))


# ---------------------------------------------------------------- sam_perturb_ / sam_restore_


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sam_matches_float64_and_restores_bit_exact(backend, dtype):
    if _skip_interpreter_bf16(backend, dtype):
        return
    ps = rand_lists(SIZES, dtype, scale=1.0, gen_seed=4)
    ps[0].fill_(-0.0)  # restore must bring back the sign of zero too
    gs = rand_lists(SIZES, dtype, gen_seed=5)
    original = [p.clone() for p in ps]
    storages = [p.untyped_storage().data_ptr() for p in ps]
    oracle, norm = oracle_sam(original, gs, 0.1)
    baseline = plain_sam(original, gs, 0.1)

    state = ops.sam_perturb_(ps, gs, 0.1, backend=backend)

    assert state.backend == backend
    assert_within_rule(ps, baseline, oracle)
    assert_stat_close(state.grad_norm, norm, torch.stack([g.float().norm() for g in gs]).norm(), norm)
    assert not bool(state.nonfinite)
    assert all(torch.equal(bits(b), bits(o)) for b, o in zip(state.backup, original, strict=True))
    ops.sam_restore_(ps, state)
    assert all(torch.equal(bits(p), bits(o)) for p, o in zip(ps, original, strict=True))
    assert [p.untyped_storage().data_ptr() for p in ps] == storages


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", ["zeros", "nan", "inf"])
def test_sam_degenerate_grads_leave_params_unmoved(backend, bad):
    ps = rand_lists([(5,), (300,)], torch.float32, scale=1.0)
    gs = [torch.zeros(5), torch.zeros(300)]
    if bad != "zeros":
        gs[1][17] = float(bad)
    original = [p.clone() for p in ps]
    state = ops.sam_perturb_(ps, gs, 0.1, backend=backend)
    assert all(torch.equal(bits(p), bits(o)) for p, o in zip(ps, original, strict=True))
    assert bool(state.nonfinite) == (bad != "zeros")
    if bad == "zeros":
        assert float(state.grad_norm) == 0.0
    ops.sam_restore_(ps, state)
    assert all(torch.equal(bits(p), bits(o)) for p, o in zip(ps, original, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_grads_perturb_by_rho(backend):
    ps = [torch.zeros(10), torch.zeros(3)]
    gs = [torch.full((10,), 1e-40), torch.full((3,), -1e-40)]  # subnormal float32
    state = ops.sam_perturb_(ps, gs, 0.1, backend=backend)
    assert all(torch.isfinite(p).all() for p in ps)
    assert not bool(state.nonfinite)
    # ||g|| ~ 3.6e-40 is far below the 1e-12 guard, so the step stays tiny: no blow-up
    assert float(torch.cat(ps).norm()) < 1e-20


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_dtypes_noncontiguous_and_none(backend):
    base = torch.randn(40, 30)
    gs = [base.t()[:, ::2], None, torch.randn(65537).half(), torch.randn(3, 5).bfloat16()]
    rs = [torch.randn(30, 20), torch.randn(4), torch.randn(65537).half(), torch.randn(3, 5).bfloat16()]
    if backend == "triton":  # the interpreter has no bfloat16
        gs, rs = gs[:3], rs[:3]
    expected = [None if g is None else g.clone() for g in gs]
    kept = [i for i, g in enumerate(gs) if g is not None]
    stats_ref = ops.project_interpolate_([expected[i] for i in kept], [rs[i] for i in kept], 0.3,
                                         backend="reference")
    base_before = base.clone()
    stats = ops.project_interpolate_(gs, rs, 0.3, backend=backend)
    for i in kept:
        tol = torch.finfo(gs[i].dtype).eps * 4 * float(expected[i].abs().max().float())
        assert torch.allclose(gs[i].float(), expected[i].float(), rtol=0, atol=tol)
    # writes landed in the user's (strided) view, nowhere else in its base
    mask = torch.zeros_like(base, dtype=torch.bool)
    mask.t()[:, ::2] = True
    assert torch.equal(base[~mask], base_before[~mask])
    assert torch.allclose(stats.dot, stats_ref.dot, rtol=1e-5)

    ps = [torch.randn(20, 30).t(), torch.randn(5), torch.randn(64).half()[::2]]
    grads = [torch.randn(30, 20), None, torch.randn(32).half()]
    original = [p.clone() for p in ps]
    state = ops.sam_perturb_(ps, grads, 0.2, backend=backend)
    assert state.backup[1] is None and torch.equal(ps[1], original[1])
    assert not torch.equal(ps[0], original[0])
    ops.sam_restore_(ps, state)
    assert all(torch.equal(bits(p.contiguous()), bits(o.contiguous())) for p, o in zip(ps, original, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_lists(backend):
    stats = ops.project_interpolate_([], [], 0.5, backend=backend)
    assert float(stats.dot) == 0 and float(stats.norm_sq) == 0 and not bool(stats.nonfinite)
    state = ops.sam_perturb_([], [], 0.1, backend=backend)
    assert state.backup == [] and float(state.grad_norm) == 0
    ops.sam_restore_([], state)
    p = torch.randn(3)
    state = ops.sam_perturb_([p, torch.empty(0)], [None, torch.empty(0)], 0.1, backend=backend)
    assert state.backup[0] is None and not bool(state.nonfinite)
    stats = ops.project_interpolate_([torch.empty(0, 4)], [torch.empty(0, 4)], 0.5, backend=backend)
    assert float(stats.norm_sq) == 0
