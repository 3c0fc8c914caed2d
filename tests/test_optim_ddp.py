"""GradReg under DistributedDataParallel: 2 gloo ranks on CPU against one process on the whole batch."""

import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from glad.optim import GradReg, NonFiniteStepWarning

# Two spawned processes importing torch: ~15-25 s on a small machine.
pytestmark = pytest.mark.slow

WORLD = 2
STEPS = 3
RHO, ALPHA, LR = 0.5, 0.5, 1e-2
# (name, mode, per_rank_perturbation)
# "-views": DDP hands out gradients that alias its communication buckets;
# "-lists": without GradReg's flat parameter layout (by default it is set up after DDP
# wrapped the model).
SCENARIOS = [("gradreg", "gradreg", False), ("sam", "sam", False), ("off", "off", False),
             ("gradreg-per-rank", "gradreg", True), ("sam-per-rank", "sam", True),
             ("gradreg-views", "gradreg", False), ("gradreg-per-rank-views", "gradreg", True),
             ("gradreg-lists", "gradreg", False)]


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def global_batch(step):
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(8 * WORLD, 5, generator=gen), torch.randint(0, 3, (8 * WORLD,), generator=gen)


def shard(step, rank):
    x, y = global_batch(step)
    return x[rank * 8:(rank + 1) * 8], y[rank * 8:(rank + 1) * 8]


def run(net, mode, per_rank, batches, loss_offset=None, flat_params=None):
    params = list(net.parameters())
    opt = GradReg(params, torch.optim.AdamW(params, lr=LR), rho=RHO, alpha=ALPHA, mode=mode,
                  model=net, per_rank_perturbation=per_rank, flat_params=flat_params)
    for step, (x, y) in enumerate(batches):
        def closure(x=x, y=y, step=step):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            if loss_offset is not None:
                loss = loss + loss_offset(step)
            return loss
        opt.step(closure)
    return opt


def _worker(rank, port, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        results = {}
        for name, mode, per_rank in SCENARIOS:
            model = make_model()
            net = nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=name.endswith("-views"))
            run(net, mode, per_rank, [shard(s, rank) for s in range(STEPS)],
                flat_params=False if name.endswith("-lists") else None)
            results[name] = [p.detach().clone() for p in model.parameters()]
        # An infinite loss on rank 1 only (its gradients are finite): every rank must skip.
        model = make_model()
        net = nn.parallel.DistributedDataParallel(model)

        def offset(step):
            return float("inf") if rank == 1 and step == 1 else 0.0

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NonFiniteStepWarning)
            opt = run(net, "gradreg", False,
                      [shard(s, rank) for s in range(2)], loss_offset=offset)
        results["skip"] = [p.detach().clone() for p in model.parameters()]
        results["skip_count"] = opt.skipped_steps
        results["skip_warned"] = sum(issubclass(w.category, NonFiniteStepWarning) for w in caught)
        # The same with fp16-style loss scaling: every rank's scaler backs off together.
        model = make_model()
        net = nn.parallel.DistributedDataParallel(model)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
        opt = GradReg(None, torch.optim.AdamW(model.parameters(), lr=LR), rho=RHO, alpha=ALPHA, model=net,
                      scaler=scaler)
        for step, (x, y) in enumerate([shard(s, rank) for s in range(2)]):
            def scaled(x=x, y=y, step=step):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(net(x), y)
                scaler.scale(loss).backward()
                return loss + offset(step)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NonFiniteStepWarning)
                opt.step(scaled)
        results["scaled_skip"] = [opt.skipped_steps, scaler.get_scale()]
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def per_rank_reference(mode):
    """m-sharpness by hand: each shard perturbs by its own g; g and g' are shard means."""
    model = make_model()
    params = list(model.parameters())
    base = torch.optim.AdamW(params, lr=LR)
    for step in range(STEPS):
        gs, gps = [], []
        for rank in range(WORLD):
            x, y = shard(step, rank)
            g = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
            norm = torch.linalg.vector_norm(torch.stack([t.norm() for t in g]))
            eps = [RHO * t / (norm + 1e-12) for t in g]
            with torch.no_grad():
                torch._foreach_add_(params, eps)
            gp = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
            with torch.no_grad():
                torch._foreach_sub_(params, eps)
            gs.append(g)
            gps.append(gp)
        g = [sum(ts) / WORLD for ts in zip(*gs, strict=True)]
        gp = [sum(ts) / WORLD for ts in zip(*gps, strict=True)]
        if mode == "sam":
            final = gp
        else:
            dot = sum((a * b).sum() for a, b in zip(g, gp, strict=True))
            nsq = sum((a * a).sum() for a in g)
            c = torch.clamp(dot, max=0) / (nsq + 1e-12)
            final = [(1 - ALPHA - ALPHA * c) * a + ALPHA * b for a, b in zip(g, gp, strict=True)]
        for p, t in zip(params, final, strict=True):
            p.grad = t
        base.step()
    return params


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp"))
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name,mode", [("gradreg", "gradreg"), ("sam", "sam"), ("off", "off"),
                                       ("gradreg-views", "gradreg"), ("gradreg-lists", "gradreg")])
def test_two_ranks_equal_one_process_on_the_concatenated_batch(ddp_results, name, mode):
    model = make_model()
    run(model, mode, False, [global_batch(s) for s in range(STEPS)])
    start = list(make_model().parameters())
    for rank in range(WORLD):
        for p, q, p0 in zip(ddp_results[rank][name], model.parameters(), start, strict=True):
            assert not torch.equal(p, p0)
            torch.testing.assert_close(p, q.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,mode", [("gradreg-per-rank", "gradreg"), ("sam-per-rank", "sam"),
                                       ("gradreg-per-rank-views", "gradreg")])
def test_per_rank_perturbation_is_m_sharpness(ddp_results, name, mode):
    expected = per_rank_reference(mode)
    for rank in range(WORLD):
        for p, q in zip(ddp_results[rank][name], expected, strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=0, atol=1e-6)
    # and it is a different update from the default (all-reduced) perturbation
    assert not all(torch.allclose(p, q, atol=1e-6) for p, q in
                   zip(ddp_results[0][name], ddp_results[0][mode], strict=True))


def test_a_skip_on_one_rank_is_a_skip_on_every_rank(ddp_results):
    model = make_model()
    run(model, "gradreg", False, [global_batch(0)])
    for rank in range(WORLD):
        assert ddp_results[rank]["skip_count"] == 1
        for p, q in zip(ddp_results[rank]["skip"], model.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=0, atol=1e-6)
    assert ddp_results[0]["skip_warned"] == 1 and ddp_results[1]["skip_warned"] == 1
    # with a GradScaler: step 0 grows the scale (2^10 -> 2^11), the skipped step 1 backs it off
    # on every rank (2^10), not only on the rank whose loss was infinite
    assert ddp_results[0]["scaled_skip"] == ddp_results[1]["scaled_skip"] == [1, 2.0**10]
