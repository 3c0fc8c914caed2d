"""GradReg: the two-pass step of GLAD's Algorithm 1 around any torch optimizer.

One step (mode ``gradreg``), over the parameters as one flat vector:

1. ``g = grad L(theta)``                       (first call of the closure)
2. ``theta <- theta + rho * g / ||g||``        (``glad.ops.sam_perturb_``)
3. ``g' = grad L(theta + eps)``; restore theta  (second call, ``sam_restore_``)
4. ``if <g, g'> < 0: g' <- g' - <g, g'> / (||g||^2 + delta) * g``
5. ``g_f = (1 - alpha) g + alpha g'``           (4-5: ``project_interpolate_``)

then clipping of ``g_f`` and the base optimizer's step. Mode ``sam`` steps with
``g'`` (steps 1-3), mode ``off`` with ``g`` (one pass).

How the step keeps its costs low: the gradients live in two persistent flat
buffers (one per pass, ``p.grad`` being views into them, see ``glad.ops.flat``), so
the projection, the finiteness checks and the clipping each run on one tensor
per dtype, and nothing is allocated or copied per step when the closure zeroes
with ``zero_grad(set_to_none=False)``. By default the parameters' values move
into one buffer per dtype too, so the perturbation and its undo run on one
tensor. The step synchronises with the device exactly once, reading the sum of
the values it checks for NaN/Inf, which decides whether the base optimizer
steps (see ``GradReg.step``). Measurements: benchmarks/gradreg.md.
"""

from __future__ import annotations

import math
import warnings

import torch

from glad.models.replay import RngReplay
from glad.ops.flat import FlatGrads, FlatParamLayout, check_storage
from glad.optim._distributed import all_reduce_mean_, ddp_group, sum_over_ranks
from glad.optim._passes import frozen_running_stats, running_stat_layers

MODES = ("gradreg", "sam", "off")


class NonFiniteStepWarning(RuntimeWarning):
    """A step was skipped because its loss or a gradient was NaN or infinite."""


class GradReg(torch.optim.Optimizer):
    """Gradient-regularised (or SAM, or plain) steps of `base_optimizer` over `params`.

    A ``torch.optim.Optimizer`` whose ``param_groups`` and ``state`` are the base
    optimizer's own (the same objects): LR schedulers, ``zero_grad`` and step hooks
    attach to GradReg itself, and what they change is what the base optimizer steps with.

    Args:
        params: the trainable parameters theta (tensors or param-group dicts), or
            ``None`` for all parameters of `base_optimizer`. They must be exactly
            the base optimizer's parameters.
        base_optimizer: any ``torch.optim.Optimizer`` over `params`; LR
            schedulers attach to GradReg or to it alike (one set of param_groups).
        rho: SAM radius (>= 0). alpha: weight of the perturbed gradient in
            ``g_f`` (in [0, 1]). delta: stabiliser of the projection (>= 0).
        mode: ``"gradreg"`` (Algorithm 1), ``"sam"`` or ``"off"``.
        model: the module the closure runs (DDP-wrapped or not). With it, the
            perturbed pass leaves BatchNorm running statistics untouched, and a
            DDP model makes the skip decision agree across ranks and enables
            `per_rank_perturbation`.
        max_grad_norm: clip the global L2 norm of the final gradient ``g_f``.
        scaler: a ``torch.amp.GradScaler`` for fp16 autocast. The closure then
            calls ``scaler.scale(loss).backward()`` and returns the unscaled
            loss; GradReg unscales ``g_f``, skips on overflow and calls
            ``scaler.update()``. bf16 autocast needs no scaler.
        per_rank_perturbation: under DDP, compute the SAM perturbation from each
            rank's own gradient (the "m-sharpness" variant): the first pass runs
            inside ``model.no_sync()`` and ``g`` is averaged by hand afterwards.
            By default both passes use the all-reduced gradients, so N ranks
            update exactly like one process on the union of their batches.
        replay_rng: replay the CPU/CUDA random state of the first pass in the
            second, so dropout draws the same masks in both.
        backend: backend of the ``glad.ops`` calls (``"auto"``, ``"reference"``, ...).
        flat_params: move the parameters' values into one buffer per (device,
            dtype) (each ``p.data`` becomes a view of it; the Parameter objects
            and their values stay), so that the perturbation and its undo run
            on one tensor instead of one per parameter: at LoRA sizes per-tensor
            overhead costs more than the arithmetic. ``None`` (default): on for
            ``sam``/``gradreg`` unless some parameters already share memory
            with each other. Either way, build GradReg after moving or casting
            the model (a step after ``model.to()`` raises a clear error).
    """

    def __init__(self, params, base_optimizer, rho: float = 0.1, alpha: float = 0.5,
                 delta: float = 1e-12, mode: str = "gradreg", *, model=None,
                 max_grad_norm: float | None = None, scaler=None,
                 per_rank_perturbation: bool = False, replay_rng: bool = True,
                 backend: str = "auto", flat_params: bool | None = None):
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(f"base_optimizer must be a torch.optim.Optimizer, got "
                            f"{type(base_optimizer).__name__}; build e.g. "
                            f"torch.optim.AdamW(params) and pass that")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {MODES}")
        _check_number("rho", rho, low=0.0)
        _check_number("alpha", alpha, low=0.0, high=1.0)
        _check_number("delta", delta, low=0.0)
        if max_grad_norm is not None:
            _check_number("max_grad_norm", max_grad_norm, low=0.0, strict=True)
        self.base_optimizer = base_optimizer
        self.mode, self.rho, self.alpha, self.delta = mode, float(rho), float(alpha), float(delta)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.model = model
        self.backend = backend
        self.replay_rng = bool(replay_rng)
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.params = _collect_params(params, base_optimizer)
        super().__init__(self.params, dict(base_optimizer.defaults))  # validates; sets up the hooks
        self._groups_fixed = True  # from here on param_groups and state are the base optimizer's
        del self._own_groups, self._own_state

        self._ddp, self._group = ddp_group(model)
        self.per_rank_perturbation = bool(per_rank_perturbation)
        if self.per_rank_perturbation and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            raise ValueError("per_rank_perturbation=True needs model= the DistributedDataParallel "
                             "module the closure runs (for its no_sync()); got "
                             f"{type(model).__name__}")
        self._buffers = FlatGrads(self.params, count=1 if mode == "off" else 2)
        # the perturbation's operands: the parameters, or their flat buffers (same order)
        if flat_params is None:
            flat_params = not _share_storage(self.params)
        self._layout = FlatParamLayout(self.params) if flat_params and mode != "off" else None
        self.flat_params = self._layout is not None
        self._pointers = [p.data_ptr() for p in self.params]
        self._first = 0              # the buffer the first pass fills (sam alternates them)
        self._norm_layers = running_stat_layers(model)
        self._rng = RngReplay({p.device for p in self.params})

        # Also compute what the training metrics need and the step does not (||g'||; ||g|| when
        # mode is "off"): one reduction each, on the device.
        self.track_metrics = False
        self.steps = 0               # step() calls
        self._skipped = 0
        self.last_info: dict[str, torch.Tensor | None] = {}

    # -- the optimizer surface --------------------------------------------------------------
    # One set of groups and state, the base optimizer's, read through on every access (its
    # load_state_dict replaces the objects): a scheduler's lr is the one the base steps with.
    # While Optimizer.__init__ runs they are its own scratch copies.
    @property
    def param_groups(self):
        return self.base_optimizer.param_groups if self._fixed() else vars(self)["_own_groups"]

    @param_groups.setter
    def param_groups(self, value):
        if self._fixed():
            self.base_optimizer.param_groups = value
        else:
            vars(self)["_own_groups"] = value

    @property
    def state(self):
        return self.base_optimizer.state if self._fixed() else vars(self)["_own_state"]

    @state.setter
    def state(self, value):
        if self._fixed():
            self.base_optimizer.state = value
        else:
            vars(self)["_own_state"] = value

    @property
    def defaults(self):
        return self.base_optimizer.defaults

    @defaults.setter
    def defaults(self, value):
        pass  # Optimizer.__init__ sets them; the base optimizer's are the ones

    def _fixed(self) -> bool:
        return vars(self).get("_groups_fixed", False)

    def add_param_group(self, param_group: dict) -> None:
        if self._fixed():  # the gradient buffers are laid out for these parameters
            raise RuntimeError("GradReg's parameters are fixed when it is built (its gradient buffers are laid "
                               "out for them); build a new base optimizer and GradReg with every parameter")
        super().add_param_group(param_group)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because the loss or a gradient was not finite."""
        return self._skipped

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the gradients, in place by default.

        GradReg keeps its gradient buffers anyway, so dropping the gradients saves
        no memory; zeroing in place lets backward write straight into the buffers
        (``set_to_none=True`` costs one copy per tensor at the next step).
        """
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """The base optimizer's state plus GradReg's counters and settings (for resume)."""
        return {"base": self.base_optimizer.state_dict(),
                "gradreg": {"version": 1, "mode": self.mode, "rho": self.rho,
                            "alpha": self.alpha, "delta": self.delta,
                            "max_grad_norm": self.max_grad_norm,
                            "steps": self.steps, "skipped_steps": self._skipped}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved. The settings stay those given to the constructor."""
        if not isinstance(state, dict) or "base" not in state or "gradreg" not in state:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not a GradReg state dict (keys {keys}); expected 'base' and "
                             f"'gradreg' as written by GradReg.state_dict()")
        own = state["gradreg"]
        changed = [k for k in ("mode", "rho", "alpha", "delta", "max_grad_norm")
                   if k in own and own[k] != getattr(self, k)]
        if changed:
            warnings.warn("resuming GradReg with different settings: " + ", ".join(
                f"{k} {own[k]!r} -> {getattr(self, k)!r}" for k in changed), stacklevel=2)
        self.base_optimizer.load_state_dict(state["base"])
        self.steps = int(own.get("steps", 0))
        self._skipped = int(own.get("skipped_steps", 0))

    def __repr__(self) -> str:
        return (f"GradReg(mode={self.mode!r}, rho={self.rho}, alpha={self.alpha}, "
                f"delta={self.delta}, max_grad_norm={self.max_grad_norm}, "
                f"base={type(self.base_optimizer).__name__})")

    # -- the step ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure):
        """One step; returns the loss the closure returned at theta (the first pass).

        `closure` zeroes the gradients, runs forward and backward on one batch and
        returns the loss (with a `scaler`: backward of ``scaler.scale(loss)``,
        returning ``loss``). It is called once (``off``) or twice (at theta, then
        at theta + eps); never call backward yourself before ``step``.

        If the loss of either pass, ``g`` or ``g'`` is NaN or infinite, the
        parameters and the base optimizer are left exactly as they were, the
        step is counted in `skipped_steps` and a `NonFiniteStepWarning` is
        issued. That decision is the step's only host-device synchronisation.
        """
        if not callable(closure):
            raise TypeError("GradReg.step needs a closure that zeroes the grads, runs forward "
                            "and backward on the batch and returns the loss")
        closure = torch.enable_grad()(closure)
        self.steps += 1
        # (what, 0-d value): the step is skipped when any value is NaN/Inf, decided at the end
        # with one isfinite over all of them (few tiny ops rather than a few per check).
        checks: list[tuple[str, torch.Tensor]] = []
        info: dict[str, torch.Tensor | None] = {}
        buffers, params = self._buffers, self.params
        check_storage(params, self._pointers)
        a = self._first

        if self.mode == "off":
            loss = closure()
            checks.append(("loss", _loss_value(loss)))
            buffers.harvest(a)
            info["loss"] = _detached(loss)
            if self.track_metrics:
                info["grad_norm"] = buffers.norm(a)
            self._finish(a, checks, info, grad_name="g")
            return loss

        from glad.ops import project_interpolate_, sam_perturb_, sam_restore_

        b = 1 - a
        if self.replay_rng:
            self._rng.capture()
        if self.per_rank_perturbation:
            with self.model.no_sync():
                loss = closure()
        else:
            loss = closure()
        checks.append(("loss", _loss_value(loss)))
        buffers.harvest(a)
        if self._layout is not None:
            params, grads = self._layout.flat, buffers.flat[a]
        else:
            grads = buffers.views[a]
        state = sam_perturb_(params, grads, self.rho, backend=self.backend)
        checks.append(("g", state.grad_norm))  # not finite exactly when g is not
        info["grad_norm"] = state.grad_norm
        if self.replay_rng:
            self._rng.restore()
        buffers.attach(b, zero=True)  # g stays in buffer a; the second backward fills b
        try:
            with frozen_running_stats(self._norm_layers):
                loss2 = closure()
        finally:
            sam_restore_(params, state)
        checks.append(("perturbed loss", _loss_value(loss2)))
        buffers.harvest(b)
        info["loss"], info["perturbed_loss"] = _detached(loss), _detached(loss2)
        if self.track_metrics:  # ||g'||, for cos(g, g') in the training metrics (one reduction)
            info["perturbed_grad_norm"] = buffers.norm(b)

        if self.mode == "sam":  # step with g' where it lies; its finiteness comes with its norm
            self._first = b
            self._finish(b, checks, info, grad_name="g'")
            return loss

        if self.per_rank_perturbation:  # g is still this rank's own; the update needs the mean
            all_reduce_mean_(buffers.flat[a], self._group)
        scale = None
        if self.scaler is not None:
            # Both gradients carry the loss scale S, a power of two: dividing by it and multiplying
            # back are exact, and the projection sees the unscaled g and g' (its delta means the
            # same as without a scaler). S stays on the device: reading it would sync.
            scale = self.scaler._get_scale_async()
            torch._foreach_mul_(buffers.flat[a] + buffers.flat[b], scale.double().reciprocal().float())
        stats = project_interpolate_(buffers.flat[a], buffers.flat[b], self.alpha, self.delta,
                                     backend=self.backend)
        if scale is not None:  # g_f back in the scaler's units, for its unscale_ and overflow check
            torch._foreach_mul_(buffers.flat[a], scale)
        checks += [("g'", stats.dot), ("g", stats.norm_sq)]  # the op wrote nothing if either is not finite
        info["dot"], info["norm_sq"] = stats.dot, stats.norm_sq
        buffers.attach_used(a)  # g_f, in buffer a
        self._finish(a, checks, info, grad_name=None)
        return loss

    # -- shared tail: clip, decide, step ----------------------------------------------------
    def _finish(self, k, checks, info, grad_name) -> None:
        """Unscale, clip and check the final gradient (buffer `k`), then step or skip.

        grad_name: the check a non-finite norm of buffer `k` stands for (None when an
        earlier check already covers the gradient's finiteness and no norm is needed).
        """
        buffers, scaler = self._buffers, self.scaler
        device = buffers.flat[k][0].device
        if scaler is not None:
            # Turn any failed check into a NaN in g_f (x * 0 is 0 for finite x, NaN
            # otherwise), so that the scaler's own overflow check, and hence its scale
            # backoff, agrees with the skip decision.
            first = buffers.flat[k][0]
            failed = _checks_sum(checks, device)
            if self._ddp:  # every rank's scaler backs off when any rank's checks failed
                failed = sum_over_ranks(failed, self._group)
            first[:1].add_(failed.mul(0.0).to(first.dtype))
            scaler.unscale_(self.base_optimizer)
            grad_name = grad_name or "final gradient"
        if self.max_grad_norm is not None or grad_name is not None:
            norm = buffers.norm(k)
            checks.append((grad_name or "final gradient", norm))
            info["final_grad_norm"] = norm
            if self.max_grad_norm is not None:  # as torch.nn.utils.clip_grad_norm_, on flat buffers
                coef = torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0)
                buffers.scale_(k, coef)
        # The sum of all checked values is finite exactly when each of them is (NaN and
        # Inf propagate; finite values summing past 3e38 would read as non-finite).
        total = _checks_sum(checks, device)
        if self._ddp:
            total = sum_over_ranks(total, self._group)
        info["check_sum"] = total
        self.last_info = info
        bad = not math.isfinite(total.item())
        info["skipped"] = bad
        if bad:  # decided by the .item() above: the step's one host sync
            self._skipped += 1
            reasons = list(dict.fromkeys(name for name, value in checks
                                         if not math.isfinite(float(value))))
            reasons = reasons or ["loss or gradient on another rank"]
            warnings.warn(f"GradReg step {self.steps}: non-finite {', '.join(reasons)}; step "
                          f"skipped, parameters unchanged ({self._skipped} skipped so far)",
                          NonFiniteStepWarning, stacklevel=3)
            if scaler is not None:
                scaler.update()
            return
        # With a scaler this is what scaler.step does once its overflow check passed (that check
        # is part of `bad`, see above); calling it would read its flag from the device a second time.
        self.base_optimizer.step()
        if scaler is not None:
            scaler.update()


def _check_number(name, value, low=None, high=None, strict=False):
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = f"{'>' if strict else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name}={value!r}: expected a finite number {bounds}")


def _collect_params(params, base_optimizer) -> list[torch.Tensor]:
    base = [p for group in base_optimizer.param_groups for p in group["params"]]
    if params is None:
        mine = base
    else:
        mine = []
        for item in params:
            mine.extend(item["params"] if isinstance(item, dict) else [item])
    mine = [p for p in mine if p.requires_grad]
    base_ids = {id(p) for p in base if p.requires_grad}
    mine_ids = {id(p) for p in mine}
    if len(mine_ids) != len(mine):
        raise ValueError("params lists a parameter more than once; pass each once")
    if not mine:
        raise ValueError("GradReg got no parameters that require grad; pass the trainable ones")
    if mine_ids != base_ids:
        raise ValueError(f"params ({len(mine_ids)} tensors) and base_optimizer "
                         f"({len(base_ids)} trainable tensors) differ by "
                         f"{len(mine_ids ^ base_ids)}; GradReg and its base optimizer must "
                         f"hold the same parameters (or pass params=None)")
    return mine


def _share_storage(params) -> bool:
    """Do any two of `params` live in the same storage (tied through views, or already flat)?"""
    pointers = [p.untyped_storage().data_ptr() for p in params]
    return len(set(pointers)) != len(pointers)


def _loss_value(loss) -> torch.Tensor:
    """The closure's loss as a 0-d tensor whose finiteness is the loss's."""
    if isinstance(loss, torch.Tensor):
        if loss.dim() == 0:
            return loss.detach()
        return loss.detach().sum()
    if isinstance(loss, (int, float)):
        return torch.tensor(float(loss))
    raise TypeError(f"the closure returned {type(loss).__name__}; it must return the loss "
                    f"(a tensor or a number)")


def _detached(loss):
    return loss.detach() if isinstance(loss, torch.Tensor) else loss


def _checks_sum(checks, device) -> torch.Tensor:
    """0-d float32 on `device`: the sum of the checked values (few ops: one stack, one sum)."""
    if not checks:
        return torch.zeros((), dtype=torch.float32, device=device)
    values = [v if (v.dtype == torch.float32 and v.device == device)
              else v.to(device=device, dtype=torch.float32, non_blocking=True) for _, v in checks]
    return torch.stack(values).sum()
