"""The compiled glad:: ops: schemas (opcheck), determinism across thread counts, torch.compile."""

import pytest
import torch

import glad.ops as ops
from glad.ops import _native

pytestmark = pytest.mark.skipif(not _native.BUILT, reason=str(_native.native_status()["cpu"]["reason"]))


def _lists(sizes, dtypes, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(d) for s, d in zip(sizes, dtypes, strict=True)]


SIZES = [(3, 5), (1,), (1025,), (7, 9)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float32]


def test_opcheck_project_interpolate():
    gs, rs = _lists(SIZES, DTYPES, 0), _lists(SIZES, DTYPES, 1)
    gs[3], rs[3] = gs[3].t(), rs[3].t()  # non-contiguous grads are written through
    torch.library.opcheck(torch.ops.glad.project_interpolate_.default, (gs, rs, 0.5, 1e-12))


def test_opcheck_sam_perturb_and_restore():
    ps, gs = _lists(SIZES, DTYPES, 2), _lists(SIZES, DTYPES, 3)
    backup = [torch.empty_like(p) for p in ps]
    torch.library.opcheck(torch.ops.glad.sam_perturb_.default, (ps, gs, backup, 0.05))
    torch.library.opcheck(torch.ops.glad.sam_restore_.default, (ps, [p.clone() for p in ps]))


def test_results_do_not_depend_on_the_thread_count():
    chunk = _native._C.cpu_chunk_elements()
    sizes = [(chunk * 3 + 17,), (chunk - 1,), (5,), (chunk + 1,), (300, 301)]
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.float32, torch.float32]
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            gs, rs = _lists(sizes, dtypes, 4), _lists(sizes, dtypes, 5)
            ps = _lists(sizes, dtypes, 6)
            stats = ops.project_interpolate_(gs, rs, 0.5, backend="cpu")
            state = ops.sam_perturb_(ps, rs, 0.1, backend="cpu")
            results.append((gs, ps, stats.dot, stats.norm_sq, state.grad_norm))
    finally:
        torch.set_num_threads(threads)
    (g1, p1, *s1), (g2, p2, *s2) = results
    assert all(torch.equal(a, b) for a, b in zip(g1 + p1, g2 + p2, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(s1, s2, strict=True))


def test_chunk_boundaries_match_the_reference():
    chunk = _native._C.cpu_chunk_elements()
    sizes = [(chunk - 1,), (chunk,), (chunk + 1,), (2 * chunk + 3,)]
    dtypes = [torch.float32] * 4
    gs, rs = _lists(sizes, dtypes, 7), _lists(sizes, dtypes, 8)
    expected = [g.clone() for g in gs]
    ops.project_interpolate_(expected, rs, 0.5, backend="reference")
    stats = ops.project_interpolate_(gs, rs, 0.5, backend="cpu")
    for g, e in zip(gs, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
    assert float(stats.norm_sq) == pytest.approx(sum(float((e.double() ** 2).sum()) for e in _lists(sizes, dtypes, 7)))


def test_backup_buffers_are_reused():
    ps, gs = _lists(SIZES, DTYPES, 9), _lists(SIZES, DTYPES, 10)
    original = [p.clone() for p in ps]
    state = ops.sam_perturb_(ps, gs, 0.1, backend="cpu")
    ops.sam_restore_(ps, state)
    ptrs = [b.data_ptr() for b in state.backup]
    state2 = ops.sam_perturb_(ps, gs, 0.1, backend="cpu", backup=state.backup)
    assert [b.data_ptr() for b in state2.backup] == ptrs
    ops.sam_restore_(ps, state2)
    assert all(torch.equal(p, o) for p, o in zip(ps, original, strict=True))
    with pytest.raises(ValueError, match="backup has 1 entries"):
        ops.sam_perturb_(ps, gs, 0.1, backend="cpu", backup=state.backup[:1])


def test_ops_trace_under_torch_compile():
    def step(gs, rs, ps):
        stats = ops.project_interpolate_(gs, rs, 0.5, backend="cpu")
        state = ops.sam_perturb_(ps, gs, 0.05, backend="cpu")
        return stats.dot * 2, stats.nonfinite, state.grad_norm

    gs, rs, ps = _lists(SIZES, DTYPES, 11), _lists(SIZES, DTYPES, 12), _lists(SIZES, DTYPES, 13)
    g_eager, p_eager = [g.clone() for g in gs], [p.clone() for p in ps]
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    out = compiled(gs, rs, ps)
    expected = step(g_eager, rs, p_eager)
    assert all(torch.equal(a, b) for a, b in zip(out, expected, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(gs + ps, g_eager + p_eager, strict=True))


def test_direct_op_calls_check_their_arguments():
    with pytest.raises(RuntimeError, match=r"grads has 1 tensors but ref_grads has 0"):
        torch.ops.glad.project_interpolate_([torch.ones(2)], [], 0.5, 1e-12)
    with pytest.raises(RuntimeError, match="supported dtypes"):
        torch.ops.glad.project_interpolate_([torch.ones(2).double()], [torch.ones(2).double()], 0.5, 1e-12)
