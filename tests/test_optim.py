"""glad.optim.GradReg against float64 hand computations of Algorithm 1, plain SAM and plain steps."""

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

from glad.optim import GradReg, NonFiniteStepWarning

torch.set_num_threads(1)


class SinNet(nn.Module):
    """Small MLP with a periodic activation: a large rho can overshoot into a conflicting g'."""

    def __init__(self, dropout=0.0, batchnorm=False):
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.bn = nn.BatchNorm1d(7) if batchnorm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.sin(self.bn(self.fc1(x)))))


def batch(n=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def make_closure(model, opt, x, y, record=None, set_to_none=True):
    def closure():
        opt.zero_grad(set_to_none=set_to_none)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if record is not None:
            record.append(loss.detach())
        return loss
    return closure


def loss64(model, params64, x, y):
    """Loss of `model` evaluated in float64 at the parameter dict `params64`."""
    model64 = copy.deepcopy(model).double()
    return nn.functional.cross_entropy(functional_call(model64, params64, (x.double(),)), y)


def grad64(model, params64, x, y):
    names = list(params64)
    leaves = {n: params64[n].detach().clone().requires_grad_(True) for n in names}
    loss = loss64(model, leaves, x, y)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    return dict(zip(names, grads, strict=True))


def algorithm1_float64(model, x, y, rho, alpha, delta, mode="gradreg"):
    """Algorithm 1 by hand, in float64, over all parameters as one vector: (g_f, <g,g'>)."""
    theta = {n: p.detach().double() for n, p in model.named_parameters()}
    g = grad64(model, theta, x, y)
    norm = math.sqrt(sum(float((v * v).sum()) for v in g.values()))
    shifted = {n: theta[n] + rho * g[n] / (norm + 1e-12) for n in theta}
    gp = grad64(model, shifted, x, y)
    dot = sum(float((g[n] * gp[n]).sum()) for n in theta)
    if mode == "sam":
        return gp, dot
    if dot < 0:
        gp = {n: gp[n] - dot / (norm**2 + delta) * g[n] for n in theta}
    return {n: (1 - alpha) * g[n] + alpha * gp[n] for n in theta}, dot


@pytest.mark.parametrize("flat_params", [False, True])
@pytest.mark.parametrize("rho,conflict", [(0.05, False), (40.0, True)])
def test_gradreg_step_equals_float64_algorithm1(rho, conflict, flat_params):
    torch.manual_seed(5)
    model = SinNet()
    x, y = batch()
    alpha, delta, lr = 0.3, 1e-12, 0.5
    expected, dot = algorithm1_float64(model, x, y, rho, alpha, delta)
    assert (dot < 0) == conflict, f"test setup: expected conflict={conflict}, <g,g'>={dot}"
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}

    base = torch.optim.SGD(model.parameters(), lr=lr)
    opt = GradReg(model.parameters(), base, rho=rho, alpha=alpha, delta=delta, model=model,
                  flat_params=flat_params)
    opt.step(make_closure(model, opt, x, y))

    assert opt.skipped_steps == 0
    assert (float(opt.last_info["dot"]) < 0) == conflict
    for n, p in model.named_parameters():
        want = before[n] - lr * expected[n]
        torch.testing.assert_close(p.detach().double(), want, rtol=1e-5, atol=1e-6)


def test_sam_mode_equals_float64_sam():
    torch.manual_seed(4)
    model = SinNet()
    x, y = batch()
    expected, _ = algorithm1_float64(model, x, y, 0.2, 0.0, 0.0, mode="sam")
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=1.0), rho=0.2, mode="sam")
    opt.step(make_closure(model, opt, x, y))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach().double(), before[n] - expected[n], rtol=1e-5, atol=1e-6)


def gradreg_by_hand(model, x, y, rho, alpha, delta=1e-12):
    """Algorithm 1 in float32 with plain autograd: the final gradient per parameter."""
    params = list(model.parameters())
    g = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
    norm = torch.linalg.vector_norm(torch.stack([t.norm() for t in g]))
    eps = [rho * t / (norm + 1e-12) for t in g]
    with torch.no_grad():
        torch._foreach_add_(params, eps)
    gp = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
    with torch.no_grad():
        torch._foreach_sub_(params, eps)
    dot = sum((a * b).sum() for a, b in zip(g, gp, strict=True))
    c = torch.clamp(dot, max=0) / (norm**2 + delta)
    return [(1 - alpha - alpha * c) * a + alpha * b for a, b in zip(g, gp, strict=True)]


@pytest.mark.parametrize("set_to_none,flat_params", [(True, False), (False, False), (False, True)])
def test_gradreg_several_adamw_steps_match_by_hand(set_to_none, flat_params):
    """Steady state too: with zero_grad(set_to_none=False) backward writes into GradReg's buffers."""
    torch.manual_seed(17)
    model = SinNet()
    ref = copy.deepcopy(model)
    opt = GradReg(None, torch.optim.AdamW(model.parameters(), lr=1e-2), rho=2.0, alpha=0.7,
                  max_grad_norm=0.5, flat_params=flat_params)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    for step in range(4):
        x, y = batch(seed=50 + step)
        opt.step(make_closure(model, opt, x, y, set_to_none=set_to_none))
        final = gradreg_by_hand(ref, x, y, 2.0, 0.7)
        for p, t in zip(ref.parameters(), final, strict=True):
            p.grad = t
        torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5)
        ref_opt.step()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_sam_mode_equals_straightforward_sam_with_adamw(set_to_none):
    torch.manual_seed(5)
    model = SinNet()
    ref = copy.deepcopy(model)
    opt = GradReg(model.parameters(), torch.optim.AdamW(model.parameters(), lr=1e-2),
                  rho=0.1, mode="sam")
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    for step in range(4):
        x, y = batch(seed=10 + step)
        opt.step(make_closure(model, opt, x, y, set_to_none=set_to_none))
        # Plain SAM: ascend along g / ||g||, take the gradient there, come back, step.
        ref_opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        params = list(ref.parameters())
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        eps = [0.1 * p.grad / (norm + 1e-12) for p in params]
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.add_(e)
        ref_opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.sub_(e)
        ref_opt.step()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_off_mode_is_the_base_optimizer_alone_bit_for_bit(set_to_none):
    torch.manual_seed(6)
    model = SinNet()
    ref = copy.deepcopy(model)
    opt = GradReg(model.parameters(), torch.optim.AdamW(model.parameters(), lr=1e-2), mode="off")
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    for step in range(3):
        x, y = batch(seed=20 + step)
        calls = []
        loss = opt.step(make_closure(model, opt, x, y, record=calls, set_to_none=set_to_none))
        assert len(calls) == 1
        ref_loss = make_closure(ref, ref_opt, x, y, set_to_none=set_to_none)()
        ref_opt.step()
        assert torch.equal(loss, ref_loss)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)


def test_step_returns_the_first_pass_loss_and_calls_the_closure_twice():
    model = SinNet()
    x, y = batch()
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)
    losses = []
    loss = opt.step(make_closure(model, opt, x, y, record=losses))
    assert len(losses) == 2
    assert torch.equal(loss.detach(), losses[0])
    assert torch.equal(opt.last_info["perturbed_loss"], losses[1])


class PoisonGrad(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is not finite."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def poisoned_closure(model, opt, x, y, which):
    """A closure whose loss ("loss"), first-pass g ("g") or second-pass g' ("g'") is NaN."""
    calls = []

    def closure():
        opt.zero_grad()
        calls.append(1)
        hidden = model.fc1(x)
        if (which == "g" and len(calls) == 1) or (which == "g'" and len(calls) == 2):
            hidden = PoisonGrad.apply(hidden)
        loss = nn.functional.cross_entropy(model.fc2(torch.sin(hidden)), y)
        if which == "loss":
            loss = loss * float("nan")
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("mode,which,flat_params", [
    (m, w, False) for m in ("gradreg", "sam", "off") for w in ("loss", "g", "g'")
    if (m, w) != ("off", "g'")] + [("gradreg", "g", True), ("gradreg", "g'", True)])
def test_nonfinite_step_is_skipped_bit_exactly_and_training_goes_on(mode, which, flat_params):
    torch.manual_seed(7)
    model = SinNet()
    x, y = batch()
    opt = GradReg(None, torch.optim.AdamW(model.parameters(), lr=1e-2), rho=0.5, mode=mode,
                  max_grad_norm=1.0, flat_params=flat_params)
    opt.step(make_closure(model, opt, x, y))  # fills AdamW's state
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.base_optimizer.state_dict())

    with pytest.warns(NonFiniteStepWarning, match="skipped"):
        opt.step(poisoned_closure(model, opt, x, y, which))

    assert opt.skipped_steps == 1
    assert bool(opt.last_info["skipped"])
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    after = opt.base_optimizer.state_dict()
    for key, value in state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(after["state"][key][name], tensor), name
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteStepWarning)
        opt.step(make_closure(model, opt, x, y))
    assert opt.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))


def test_gradient_clipping_applies_to_the_final_gradient():
    torch.manual_seed(8)
    model = SinNet()
    x, y = batch()
    expected, _ = algorithm1_float64(model, x, y, 0.5, 0.5, 1e-12)
    total = math.sqrt(sum(float((v * v).sum()) for v in expected.values()))
    max_norm = total / 4
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=1.0), rho=0.5,
                  max_grad_norm=max_norm)
    opt.step(make_closure(model, opt, x, y))
    torch.testing.assert_close(float(opt.last_info["final_grad_norm"]), total, rtol=1e-5, atol=0)
    for n, p in model.named_parameters():
        want = before[n] - expected[n] * (max_norm / (total + 1e-6))
        torch.testing.assert_close(p.detach().double(), want, rtol=1e-5, atol=1e-6)


def test_both_passes_draw_the_same_random_numbers():
    model = SinNet(dropout=0.5)
    x, y = batch()
    for replay in (True, False):
        opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1), replay_rng=replay)
        draws = []

        def closure(opt=opt, draws=draws):
            opt.zero_grad()
            draws.append(torch.rand(4))
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        torch.manual_seed(9)
        opt.step(closure)
        assert torch.equal(draws[0], draws[1]) == replay
        if replay:  # the generator ends where one pass would have left it
            torch.manual_seed(9)
            torch.rand(4)
            model(x)
            expected_next = torch.rand(1)
            torch.manual_seed(9)
            opt.step(closure)
            assert torch.equal(torch.rand(1), expected_next)


def test_dropout_masks_match_float64_reference():
    """With dropout, the step equals Algorithm 1 on the one network the first pass's masks define."""
    torch.manual_seed(10)
    model = SinNet(dropout=0.5)
    x, y = batch()
    torch.manual_seed(11)
    mask = nn.functional.dropout(torch.ones(16, 7), 0.5).double()  # what the first pass draws

    class Fixed(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.fc1, self.fc2 = net.fc1, net.fc2

        def forward(self, x):
            return self.fc2(torch.sin(self.fc1(x)) * mask.to(x.dtype))

    expected, _ = algorithm1_float64(Fixed(model), x, y, 0.5, 0.5, 1e-12)
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=1.0), rho=0.5)
    torch.manual_seed(11)
    opt.step(make_closure(model, opt, x, y))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach().double(), before[n] - expected[n], rtol=1e-5, atol=1e-6)


def test_perturbed_pass_leaves_batchnorm_statistics_alone():
    torch.manual_seed(12)
    model = SinNet(batchnorm=True)
    ref = copy.deepcopy(model)
    x, y = batch()
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5, model=model)
    opt.step(make_closure(model, opt, x, y))
    ref(x)  # one forward: the statistics one step should leave
    assert torch.equal(model.bn.running_mean, ref.bn.running_mean)
    assert torch.equal(model.bn.running_var, ref.bn.running_var)
    assert int(model.bn.num_batches_tracked) == 1
    assert model.bn.track_running_stats


def test_bf16_autocast_step_runs_and_matches_the_same_computation_by_hand():
    torch.manual_seed(13)
    model = SinNet()
    ref = copy.deepcopy(model)
    x, y = batch()

    def loss_of(net):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
        return nn.functional.cross_entropy(out.float(), y)

    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=1.0), rho=0.5, alpha=0.5)

    def closure():
        opt.zero_grad()
        loss = loss_of(model)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.isfinite(loss) and opt.skipped_steps == 0
    params = list(ref.parameters())
    g = torch.autograd.grad(loss_of(ref), params)
    norm = torch.linalg.vector_norm(torch.stack([t.norm() for t in g]))
    with torch.no_grad():
        for p, t in zip(params, g, strict=True):
            p.add_(0.5 * t / (norm + 1e-12))
    gp = torch.autograd.grad(loss_of(ref), params)
    with torch.no_grad():
        for p, t in zip(params, g, strict=True):
            p.sub_(0.5 * t / (norm + 1e-12))
    dot = sum((a * b).sum() for a, b in zip(g, gp, strict=True))
    c = min(float(dot), 0.0) / (float(norm) ** 2 + 1e-12)
    for p, q, a, b in zip(model.parameters(), params, g, gp, strict=True):
        want = q - ((0.5 - 0.5 * c) * a + 0.5 * b)
        torch.testing.assert_close(p, want, rtol=1e-5, atol=1e-6)


def test_fp16_grad_scaler_gives_the_unscaled_update_and_skips_on_overflow():
    torch.manual_seed(14)
    model = SinNet()
    ref = copy.deepcopy(model)
    x, y = batch()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    opt = GradReg(None, torch.optim.AdamW(model.parameters(), lr=1e-2), rho=0.5, scaler=scaler,
                  max_grad_norm=10.0)
    ref_opt = GradReg(None, torch.optim.AdamW(ref.parameters(), lr=1e-2), rho=0.5,
                      max_grad_norm=10.0)

    def scaled_closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        return loss

    for _ in range(2):
        opt.step(scaled_closure)
        ref_opt.step(make_closure(ref, ref_opt, x, y))
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert scaler.get_scale() == 2.0**10

    # An overflowing scale: the step is skipped, nothing moves, the scale backs off.
    scaler.update(2.0**120)

    def overflowing_closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss * 1e6).backward()  # 1e6 * 2^120 is beyond float32
        return loss

    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.base_optimizer.state_dict()["state"])
    with pytest.warns(NonFiniteStepWarning):
        opt.step(overflowing_closure)
    assert opt.skipped_steps == 1
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    assert all(torch.equal(opt.base_optimizer.state_dict()["state"][k][n], t)
               for k, v in state.items() for n, t in v.items())
    assert scaler.get_scale() == 2.0**119


def test_state_dict_round_trip_resumes_exactly():
    torch.manual_seed(15)
    model = SinNet()
    opt = GradReg(None, torch.optim.AdamW(model.parameters(), lr=1e-2), rho=0.3)
    for step in range(2):
        x, y = batch(seed=30 + step)
        opt.step(make_closure(model, opt, x, y))
    opt._skipped = 2  # as if two steps had been skipped
    saved = copy.deepcopy(opt.state_dict())
    twin = copy.deepcopy(model)
    twin_opt = GradReg(None, torch.optim.AdamW(twin.parameters(), lr=5.0), rho=0.3)
    twin_opt.load_state_dict(saved)
    assert twin_opt.skipped_steps == 2 and twin_opt.steps == 2
    assert twin_opt.param_groups[0]["lr"] == 1e-2
    for step in range(2):
        x, y = batch(seed=40 + step)
        opt.step(make_closure(model, opt, x, y))
        twin_opt.step(make_closure(twin, twin_opt, x, y))
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_gradreg_is_a_torch_optimizer_sharing_groups_and_state_with_its_base():
    """Schedulers attach to GradReg itself (no reaching into base_optimizer); its param_groups
    and state are the base optimizer's own objects; hooks run; the parameters are fixed."""
    model = SinNet()
    base = torch.optim.AdamW(model.parameters(), lr=1.0)
    opt = GradReg(None, base)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is base.param_groups and opt.state is base.state
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    calls = []
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(o))
    x, y = batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        opt.step(make_closure(model, opt, x, y))
        sched.step()
    assert base.param_groups[0]["lr"] == 0.5 and calls == [opt]
    assert set(base.state) == set(model.parameters())  # AdamW's moments, seen through GradReg
    assert all(opt.state[p]["step"] == 1 for p in model.parameters())
    with pytest.raises(RuntimeError, match="fixed when it is built"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})


def test_a_parameter_unused_in_one_pass_is_handled():
    torch.manual_seed(16)
    model = SinNet()
    extra = nn.Parameter(torch.ones(3))
    x, y = batch()
    base = torch.optim.SGD(list(model.parameters()) + [extra], lr=1.0)
    opt = GradReg(None, base, rho=0.5, alpha=0.5)
    calls = []

    def closure():
        opt.zero_grad()
        calls.append(1)
        loss = nn.functional.cross_entropy(model(x), y)
        if len(calls) == 2:  # only the perturbed pass uses `extra`: g = 0, g' = 1 there
            loss = loss + extra.sum()
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(extra.detach(), torch.full((3,), 0.5))


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "adam"}, "mode"),
    ({"alpha": 1.5}, "alpha"),
    ({"rho": -1.0}, "rho"),
    ({"delta": float("nan")}, "delta"),
    ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"per_rank_perturbation": True}, "DistributedDataParallel"),
])
def test_bad_settings_are_rejected_with_the_value(kwargs, match):
    model = SinNet()
    with pytest.raises(ValueError, match=match):
        GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


@pytest.mark.parametrize("kwargs", [{"rho": 0.0}, {"alpha": 0.0}, {"alpha": 1.0}, {"delta": 0.0}])
def test_boundary_settings_are_accepted(kwargs):
    model = SinNet()
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)
    x, y = batch()
    opt.step(make_closure(model, opt, x, y))
    assert opt.skipped_steps == 0


def device_reads(monkeypatch, fn) -> list[str]:
    """The tensor-value reads (host syncs) `fn()` makes, by name."""
    reads = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    fn()
    monkeypatch.undo()
    return reads


@pytest.mark.parametrize("mode", ["off", "sam", "gradreg"])
def test_a_normal_step_reads_one_value_back_from_the_device(mode, monkeypatch):
    """The skip decision is the step's only host sync (counted as reads of tensor values)."""
    torch.manual_seed(18)
    model = SinNet()
    x, y = batch()
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), mode=mode,
                  max_grad_norm=1.0)
    opt.step(make_closure(model, opt, x, y, set_to_none=False))
    reads = device_reads(monkeypatch, lambda: opt.step(make_closure(model, opt, x, y, set_to_none=False)))
    assert reads == ["item"]


def test_an_fp16_step_reads_one_value_back_from_the_device_too(monkeypatch):
    """With a GradScaler the loss scale stays on the device: the projection unscales g and g' there,
    and the skip decision (which covers the scaler's overflow check) is still the only read."""
    torch.manual_seed(18)
    model = SinNet()
    x, y = batch()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), scaler=scaler,
                  max_grad_norm=1.0)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        return loss

    opt.step(closure)
    reads = device_reads(monkeypatch, lambda: opt.step(closure))
    assert reads == ["item"] and opt.skipped_steps == 0


def test_flat_params_keep_the_values_in_one_storage():
    torch.manual_seed(19)
    model = SinNet()
    before = [p.detach().clone() for p in model.parameters()]
    GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1))  # flat by default
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert len({p.untyped_storage().data_ptr() for p in model.parameters()}) == 1
    # a second GradReg over the same (now flat) parameters leaves them where they are
    pointers = [p.data_ptr() for p in model.parameters()]
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1))
    assert not opt.flat_params and [p.data_ptr() for p in model.parameters()] == pointers
    kept = SinNet()
    pointers = [p.data_ptr() for p in kept.parameters()]
    GradReg(None, torch.optim.SGD(kept.parameters(), lr=0.1), flat_params=False)
    assert [p.data_ptr() for p in kept.parameters()] == pointers


@pytest.mark.parametrize("flat_params", [False, True])
def test_a_model_cast_after_gradreg_was_built_is_a_clear_error(flat_params):
    model = SinNet()
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1), flat_params=flat_params)
    x, y = batch()
    opt.step(make_closure(model, opt, x, y, set_to_none=False))
    model.double()

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x.double()), y)
        loss.backward()
        return loss
    with pytest.raises(RuntimeError, match="moved or cast after GradReg was built"):
        opt.step(closure)


def test_a_closure_that_returns_no_loss_is_an_error():
    model = SinNet()
    opt = GradReg(None, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="return the loss"):
        opt.step(lambda: None)


def test_params_must_be_the_base_optimizers():
    model = SinNet()
    with pytest.raises(ValueError, match="same parameters"):
        GradReg([model.fc1.weight], torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        GradReg(model.parameters(), "sgd")
