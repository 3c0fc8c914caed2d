"""glad.ops argument checks, backend selection and the FlatParams helper."""

import pytest
import torch

import glad.ops as ops
from glad.ops._dispatch import ENV_VAR


def _pair(n=4):
    return [torch.randn(n)], [torch.randn(n)]


def test_backend_info_lists_every_backend_with_a_reason():
    info = ops.backend_info()
    assert set(info) == {"reference", "cpu", "cuda", "triton"}
    for name, entry in info.items():
        assert isinstance(entry["available"], bool) and entry["reason"], name
    assert info["reference"]["available"]


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: ([torch.ones(3)], [torch.ones(3), torch.ones(3)]), ValueError, "has 1 tensors but ref_grads has 2"),
        (lambda: ([torch.ones(3)], [torch.ones(4)]), ValueError, r"shape \(3,\).*shape \(4,\)"),
        (lambda: ([torch.ones(3)], [torch.ones(3).half()]), TypeError, "torch.float16"),
        (lambda: ([torch.ones(3).double()], [torch.ones(3).double()]), TypeError, "supported dtypes"),
        (lambda: ([torch.ones(3), torch.ones(2, device="meta")], [torch.ones(3), torch.ones(2, device="meta")]),
         ValueError, "one device"),
        (lambda: (torch.ones(3), torch.ones(3)), TypeError, "single Tensor"),
        (lambda: ([torch.ones(3)], ["x"]), TypeError, "ref_grads.0. is a str"),
    ],
)
def test_bad_lists_are_rejected_with_a_clear_error(make, error, match):
    grads, refs = make()
    with pytest.raises(error, match=match):
        ops.project_interpolate_(grads, refs, 0.5)


def test_aliasing_between_grads_and_ref_grads_is_rejected():
    g = torch.randn(10)
    with pytest.raises(ValueError, match=r"grads\[0\] and ref_grads\[0\] share memory"):
        ops.project_interpolate_([g], [g], 0.5)
    with pytest.raises(ValueError, match="share memory"):
        ops.project_interpolate_([g[:6]], [g[4:]], 0.5)  # overlapping views
    with pytest.raises(ValueError, match=r"grads\[0\] and grads\[1\]"):
        ops.project_interpolate_([g, g], [torch.randn(10), torch.randn(10)], 0.5)  # written twice
    ops.project_interpolate_([g[:5]], [g[5:]], 0.5)  # disjoint views of one buffer are fine
    p = torch.randn(10)
    with pytest.raises(ValueError, match=r"params\[0\] and grads\[0\] share memory"):
        ops.sam_perturb_([p], [p], 0.1)


@pytest.mark.parametrize("kwargs, error", [({"alpha": float("nan")}, ValueError),
                                            ({"alpha": torch.tensor(0.5)}, TypeError),
                                            ({"alpha": 0.5, "delta": -1.0}, ValueError)])
def test_bad_scalars_are_rejected(kwargs, error):
    g, r = _pair()
    with pytest.raises(error):
        ops.project_interpolate_(g, r, **kwargs)


def test_bad_rho_and_state_are_rejected():
    p, g = _pair()
    with pytest.raises(ValueError, match="rho"):
        ops.sam_perturb_(p, g, -0.1)
    with pytest.raises(TypeError, match="SamState"):
        ops.sam_restore_(p, [p[0].clone()])
    state = ops.sam_perturb_(p, g, 0.1)
    with pytest.raises(ValueError, match="has 2 tensors but state.backup has 1"):
        ops.sam_restore_(p + p, state)


def test_backend_selection_and_override(monkeypatch):
    g, r = _pair()
    monkeypatch.delenv(ENV_VAR, raising=False)
    auto = ops.project_interpolate_(g, r, 0.5).backend
    assert auto == ("cpu" if ops.backend_info()["cpu"]["available"] else "reference")
    monkeypatch.setenv(ENV_VAR, "reference")
    assert ops.project_interpolate_(g, r, 0.5).backend == "reference"
    assert ops.project_interpolate_(g, r, 0.5, backend="auto").backend == "reference"
    monkeypatch.setenv(ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match=f"{ENV_VAR}='nonsense'"):
        ops.project_interpolate_(g, r, 0.5)
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(ValueError, match="choose one of"):
        ops.project_interpolate_(g, r, 0.5, backend="fast")
    with pytest.raises(RuntimeError, match="cuda"):
        ops.project_interpolate_(g, r, 0.5, backend="cuda")  # CPU tensors


def test_ops_do_not_record_autograd_on_leaf_params():
    p = torch.randn(6, requires_grad=True)
    p.grad = torch.randn(6)
    state = ops.sam_perturb_([p], [p.grad], 0.1)
    assert p.grad_fn is None and p.is_leaf
    ops.sam_restore_([p], state)


# ---------------------------------------------------------------- FlatParams


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))


def test_flat_params_are_views_and_keep_values_and_grads():
    model = _model()
    model[2].bias.requires_grad_(False)
    values = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(4, 5)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    flat = ops.FlatParams(model.parameters())
    assert len(flat) == 3 and len(flat.params_flat) == 1 and flat.params_flat[0].numel() == 35 + 7 + 21
    for n, p in model.named_parameters():
        assert torch.equal(p, values[n])
        if p.requires_grad:
            assert p.untyped_storage().data_ptr() == flat.params_flat[0].untyped_storage().data_ptr()
            assert torch.equal(p.grad, grads[n])
            assert p.grad.untyped_storage().data_ptr() == flat.grads_flat[0].untyped_storage().data_ptr()
    flat.params_flat[0].add_(1.0)  # writes through to the model
    assert torch.equal(model[0].weight, values["0.weight"] + 1)


def test_flat_grads_accumulate_in_place_and_survive_set_to_none():
    model = _model()
    flat = ops.FlatParams(model.parameters())
    x = torch.randn(4, 5)
    flat.zero_grad()
    model(x).sum().backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.equal(flat.grads_flat[0], expected)  # backward wrote into the flat buffer
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    flat.attach_grads()
    assert torch.equal(flat.grads_flat[0], expected)
    assert model[0].weight.grad.untyped_storage().data_ptr() == flat.grads_flat[0].untyped_storage().data_ptr()


def test_ops_on_flat_buffers_equal_ops_on_the_tensors():
    model = _model()
    model(torch.randn(4, 5)).sum().backward()
    params = list(model.parameters())
    refs = [torch.randn_like(p) for p in params]
    per_tensor = [p.grad.clone() for p in params]
    ops.project_interpolate_(per_tensor, refs, 0.5, backend="reference")
    flat = ops.FlatParams(params)
    ops.project_interpolate_(flat.grads_flat, [torch.cat([r.flatten() for r in refs])], 0.5, backend="reference")
    for p, e in zip(params, per_tensor, strict=True):
        torch.testing.assert_close(p.grad, e)


def test_flat_params_groups_by_dtype_and_rejects_duplicates():
    a, b, c = (torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2).half()),
               torch.nn.Parameter(torch.randn(4)))
    flat = ops.FlatParams([a, b, c])
    assert [t.dtype for t in flat.params_flat] == [torch.float32, torch.float16]
    assert [t.numel() for t in flat.params_flat] == [7, 2]
    with pytest.raises(ValueError, match="same parameter twice"):
        ops.FlatParams([a, a])


def test_validation_is_cached_per_list_and_redone_when_tensors_change(monkeypatch):
    import glad.ops._validate as v

    v.clear_validation_cache()
    calls = []
    real = v._check_pairs
    monkeypatch.setattr(v, "_check_pairs", lambda *a: calls.append(1) or real(*a))
    g = [torch.randn(3), torch.randn(5)]
    r = [torch.randn(3), torch.randn(5)]
    for _ in range(3):
        ops.project_interpolate_(g, r, 0.5, backend="reference")
    assert len(calls) == 1  # the same tensors: validated once
    g2 = [g[0], torch.randn(5)]
    ops.project_interpolate_(g2, r, 0.5, backend="reference")
    assert len(calls) == 2  # a new tensor in the list: validated again
    # the same tensor object, now aliasing a read tensor: the new address is noticed
    g[1].data = r[1].data
    with pytest.raises(ValueError, match="share memory"):
        ops.project_interpolate_(g, r, 0.5, backend="reference")
    assert len(v._validated) <= v._CACHE_SIZE
    v.clear_validation_cache()
    assert not v._validated


def test_cuda_kernels_missing_for_this_gpu_fall_back_once_with_a_warning(monkeypatch):
    # A build without this card's architecture fails only when a kernel launches: the first
    # use probes, `auto` moves on (one warning), an explicit backend="cuda" is refused.
    from glad.ops import _dispatch, _native

    monkeypatch.setattr(_native, "BUILT_WITH_CUDA", True)
    monkeypatch.setattr(_dispatch, "_probed", {})
    calls = []

    def no_kernel_image(name, device):
        calls.append(name)
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(_dispatch, "_probe_call", no_kernel_image)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (12, 0))
    device = torch.device("cuda", 0)
    with pytest.warns(RuntimeWarning, match="no kernel image.*TORCH_CUDA_ARCH_LIST=12.0"):
        assert _dispatch.resolve("auto", device) != "cuda"
    assert _dispatch.resolve("auto", device) != "cuda" and calls == ["cuda"]  # probed once
    with pytest.raises(RuntimeError, match="'cuda' cannot run here: its kernels do not run"):
        _dispatch.resolve("cuda", device)
    monkeypatch.setattr(_dispatch, "_probed", {})
    monkeypatch.setattr(_dispatch, "_probe_call", lambda name, device: None)
    assert _dispatch.resolve("auto", device) == "cuda"  # kernels that run are used


def test_the_validation_cache_keeps_no_tensor_alive():
    """A finished job's gradients and backups are freed: glad.ops remembers what it validated
    through weak references only, and a dead entry is a miss, never a stale result."""
    import gc
    import weakref

    params = [torch.randn(5), torch.randn(3, 4)]
    grads = [torch.randn(5), torch.randn(3, 4)]
    state = ops.sam_perturb_(params, grads, 0.1)
    ops.sam_restore_(params, state)
    state = ops.sam_perturb_(params, grads, 0.1, backup=state.backup)  # the cached path
    ops.sam_restore_(params, state)
    refs = [weakref.ref(t) for t in (*params, *grads, *state.backup)]
    del params, grads, state
    gc.collect()
    assert all(r() is None for r in refs)
    params, grads = [torch.randn(5)], [torch.randn(5)]  # new tensors, maybe at reused ids
    before = params[0].clone()
    ops.project_interpolate_(grads, [torch.randn(5)], 0.5)
    state = ops.sam_perturb_(params, grads, 0.1)
    ops.sam_restore_(params, state)
    assert torch.equal(params[0], before)
