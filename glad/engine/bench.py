"""End-to-end costs: `glad bench train` (a training step of every method) and `glad bench eval`.

Both time the code users run, not a re-implementation: the train bench calls
``glad.engine.train.train_step`` (the engine's step: teacher pass once, then
GradReg's one or two passes and AdamW), the eval bench ``glad.engine.evaluate.predict``
inside ``merged_adapters`` (what ``evaluate`` does per batch).

How the numbers are made robust on a shared machine:

* every method (or eval variant) runs on the same batch and the same frozen backbone
  (one copy of its weights is shared: it is never written in training);
* methods are interleaved round by round, in an order rotated each round, so a
  busy spell slows them alike; the headline is the median over rounds;
* on a CPU the default clock is the process's CPU time (``time.process_time``),
  which does not count time spent waiting for a core that another process holds;
  wall-clock medians are recorded beside it; on a GPU the clock is wall time
  around a synchronised step;
* the load average is recorded before, during and after the run.

The time split comes from separate, instrumented steps (each part wrapped in a
timer that synchronises the device), so the headline steps carry no timers.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from glad.provenance import machine_info

TRAIN_METHODS = ("lora", "lora-alignnet", "lora-sam", "lora-gradreg", "glad")
# (numerator, denominator, bound): the ratios the project holds itself to (see benchmarks/README.md)
TRAIN_TARGETS = (("glad", "lora-alignnet", 2.1), ("lora-gradreg", "lora", 2.1))
# the parts of a step, in table order; "passes" = forward + loss + backward of the tuned model
SPLIT_PARTS = ("teacher", "text_forward", "image_forward", "logits", "loss", "backward",
               "gradreg_ops", "optimizer", "other")
EVAL_VARIANTS = ("clip", "lora-merged", "clip+alignnet", "lora-merged+alignnet", "lora-unmerged")
# (tuned, plain, bound): merged LoRA must evaluate at >= bound x plain CLIP's images/s
EVAL_TARGETS = (("lora-merged", "clip", 0.98), ("lora-merged+alignnet", "clip+alignnet", 0.98))
TEMPLATE = "a photo of a {}."


# ------------------------------------------------------------------------------ configs
@dataclass
class TrainBenchConfig:
    """Settings of `glad bench train` (CLI flags map one-to-one)."""

    model: str = "glad-tiny"
    pretrained: str | None = None
    batch_size: int = 32
    num_classes: int = 10
    rounds: int = 10
    warmup: int = 2
    split_rounds: int = 2
    methods: Sequence[str] = TRAIN_METHODS
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    clock: str = "auto"  # auto | cpu | wall
    memory: bool = True
    seed: int = 0

    def validate(self) -> TrainBenchConfig:
        from glad.config import METHODS

        unknown = [m for m in self.methods if m not in METHODS or not METHODS[m].train]
        if unknown or not self.methods:
            raise ValueError(f"methods {list(self.methods)!r}: expected a non-empty list of "
                             f"{', '.join(TRAIN_METHODS)}")
        _check_common(self)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.split_rounds < 0:
            raise ValueError(f"split_rounds must be >= 0, got {self.split_rounds}")
        return self


@dataclass
class EvalBenchConfig:
    """Settings of `glad bench eval` (CLI flags map one-to-one)."""

    model: str = "glad-tiny"
    pretrained: str | None = None
    batch_size: int = 64
    num_classes: int = 1000
    rounds: int = 10
    warmup: int = 2
    variants: Sequence[str] = EVAL_VARIANTS
    text_classes: int = 32  # classes whose prompt encoding is timed (per-class cost)
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    clock: str = "auto"
    seed: int = 0

    def validate(self) -> EvalBenchConfig:
        unknown = [v for v in self.variants if v not in EVAL_VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"variants {list(self.variants)!r}: expected a non-empty list of "
                             f"{', '.join(EVAL_VARIANTS)}")
        _check_common(self)
        if self.num_classes < 1 or self.text_classes < 0:
            raise ValueError(f"num_classes must be >= 1 and text_classes >= 0, got "
                             f"{self.num_classes} and {self.text_classes}")
        return self


def _check_common(cfg) -> None:
    checks = [(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
              (cfg.rounds >= 1, f"rounds must be >= 1, got {cfg.rounds}"),
              (cfg.warmup >= 0, f"warmup must be >= 0, got {cfg.warmup}"),
              (cfg.clock in ("auto", "cpu", "wall"), f"clock must be auto, cpu or wall, got {cfg.clock!r}"),
              (cfg.precision in ("auto", "fp32", "bf16"),
               f"precision must be auto, fp32 or bf16, got {cfg.precision!r}"),
              (cfg.threads is None or cfg.threads >= 1, f"threads must be >= 1, got {cfg.threads}")]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


# ------------------------------------------------------------------------------ machine
def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------------------ clocks
class Clock:
    """Synchronised timing on one device: ``cpu`` (process CPU time) or ``wall`` seconds."""

    def __init__(self, device: torch.device, kind: str = "auto"):
        if kind == "auto":
            kind = "cpu" if device.type == "cpu" else "wall"
        if kind == "cpu" and device.type != "cpu":
            raise ValueError(f"clock 'cpu' times the host only; on {device} use --clock wall")
        self.device, self.kind = device, kind
        self.now = time.process_time if kind == "cpu" else time.perf_counter

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def measure(self, fn):
        """(seconds on this clock, wall seconds, fn's result) of one synchronised call."""
        self.sync()
        c0, w0 = self.now(), time.perf_counter()
        out = fn()
        self.sync()
        return self.now() - c0, time.perf_counter() - w0, out


class PartTimers:
    """Exclusive time per named part: wrapped callables, nested calls subtracted from their parent.

    A part opened with ``absorb=True`` (the teacher pass) counts everything inside it as its own.
    """

    def __init__(self, clock: Clock):
        self.clock = clock
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []

    def wrap(self, name: str, fn, absorb: bool = False):
        def timed(*args, **kwargs):
            if self._stack and self._stack[-1][2]:
                return fn(*args, **kwargs)
            self.clock.sync()
            start = self.clock.now()
            self._stack.append([name, 0.0, absorb])
            try:
                return fn(*args, **kwargs)
            finally:
                self.clock.sync()
                elapsed = self.clock.now() - start
                _, inner, _ = self._stack.pop()
                self.totals[name] += elapsed - inner
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed


@contextlib.contextmanager
def _patched(patches):
    """Set (owner, attribute, value) for the block; put the old values back after."""
    saved = []
    try:
        for owner, name, value in patches:
            had = name in vars(owner)  # an instance attribute (or the class's own) to put back
            saved.append((owner, name, had, getattr(owner, name, None)))
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, had, old in reversed(saved):
            if had:
                setattr(owner, name, old)
            else:
                delattr(owner, name)


# ------------------------------------------------------------------------------ memory
def state_bytes(model, optimizer=None) -> int:
    """Bytes of every distinct storage a method keeps between steps: weights, buffers,
    gradients, optimizer state and GradReg's gradient buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        base = optimizer.base_optimizer
        tensors += [v for s in base.state.values() for v in s.values() if torch.is_tensor(v)]
        buffers = getattr(optimizer, "_buffers", None)  # the two flat gradient buffers
        for flats in getattr(buffers, "flat", []):
            tensors += list(flats)
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def transient_peak_bytes(fn, device: torch.device) -> int | None:
    """Peak bytes allocated by `fn` above what was allocated when it started (None if unknown).

    CUDA: the caching allocator's peak counter. CPU: the profiler's allocation events,
    whose running total is the allocations made since profiling began.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        peak, todo = 0, list(prof.profiler.kineto_results.experimental_event_tree())
        while todo:
            event = todo.pop()
            if event.tag == _EventType.Allocation:
                peak = max(peak, event.extra_fields.total_allocated)
            todo.extend(event.children)
        return int(peak)
    except Exception:  # private profiler API: a torch without it simply reports no number
        return None


# ------------------------------------------------------------------------------ models
def _runtime(device: str, precision: str):
    from glad.engine.runtime import setup_runtime

    return setup_runtime(device, precision, eval_precision=precision if precision in ("fp32", "bf16") else "auto")


def _load_backbone(model: str, pretrained: str | None, device: torch.device, seed: int):
    """The frozen CLIP, its tokenizer and image size; seeded like the engine's runner."""
    from glad.models import load_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip, _, _, tokenizer = load_clip(model, pretrained, device=device)
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return clip.eval(), tokenizer, size


def _shared_copy(clip):
    """A copy of `clip` whose frozen weights are the original's tensors (memory: one backbone)."""
    memo = {id(t): t for t in list(clip.parameters()) + list(clip.buffers())}
    return copy.deepcopy(clip, memo)


def _lora_config():
    """The engine's LoRA settings (TrainConfig defaults), as the runner builds them."""
    from glad.config import TrainConfig
    from glad.models import LoraConfig

    cfg = TrainConfig()
    return LoraConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                      targets=tuple(cfg.lora_targets), encoders=tuple(cfg.lora_encoders), rslora=cfg.rslora)


def _model_config(name: str) -> dict | None:
    """The architecture a result was measured on (a model name's config can change)."""
    import open_clip

    return open_clip.get_model_config(name)


def _batch(batch_size: int, num_classes: int, image_size: int, seed: int, device):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=g)
    labels = torch.arange(batch_size) % num_classes
    classnames = [f"class {i}" for i in range(num_classes)]
    return images.to(device), labels.to(device), classnames


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def _paired(num_times, den_times):
    """Median over rounds of the per-round ratio: a second estimate, blind to slow drifts of
    the machine's speed (both times of a round were taken a moment apart)."""
    return _median([a / b for a, b in zip(num_times, den_times, strict=True) if b > 0])


# ------------------------------------------------------------------------------ train
def _prepare(cfg):
    """What both benches start from: the load before they ran, the runtime, a clock, the
    backbone and one seeded batch (`cfg` validated and its thread count applied)."""
    cfg.validate()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    load_before = load_average()
    runtime = _runtime(cfg.device, cfg.precision)
    clock = Clock(runtime.device, cfg.clock)
    clip, tokenizer, image_size = _load_backbone(cfg.model, cfg.pretrained, runtime.device, cfg.seed)
    batch = _batch(cfg.batch_size, cfg.num_classes, image_size, cfg.seed, runtime.device)
    return load_before, runtime, clock, clip, tokenizer, image_size, batch


def run_train_bench(cfg: TrainBenchConfig, progress=None) -> dict:
    """Time training steps of every method of `cfg` side by side; returns the JSON report."""
    from glad.config import METHODS, TrainConfig
    from glad.data import format_prompt
    from glad.engine.train import make_optimizer, train_step
    from glad.models import GladModel

    say = progress or (lambda _msg: None)
    load_before, runtime, clock, clip, tokenizer, image_size, (images, labels, classnames) = _prepare(cfg)
    device = runtime.device
    train_cfg = TrainConfig(model=cfg.model, pretrained=cfg.pretrained, batch_size=cfg.batch_size)

    jobs = {}
    for name in cfg.methods:
        method = METHODS[name]
        torch.manual_seed(cfg.seed)  # LoRA A and AlignNet initialisation, as the runner does
        model = GladModel(_shared_copy(clip), tokenizer, lora=_lora_config(), use_alignnet=method.alignnet,
                          model_name=cfg.model, pretrained=cfg.pretrained).to(device)
        model.train()
        # as glad.engine.train.train: prompts tokenised once per run, the same optimizer
        tokens = model.tokenize([format_prompt(TEMPLATE, c) for c in classnames]).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, method, train_cfg, model)
        kl_weight = train_cfg.kl_weight if method.kl else 0.0

        def step(model=model, optimizer=optimizer, tokens=tokens, kl_weight=kl_weight):
            return train_step(model, model, optimizer, images, labels, tokens, kl_weight, runtime)

        jobs[name] = {"model": model, "optimizer": optimizer, "step": step, "method": method}

    times = {n: [] for n in cfg.methods}
    walls = {n: [] for n in cfg.methods}
    transient = {}
    loads = []
    names = list(cfg.methods)
    # The last warmup round (or one extra round without warmup) measures memory: the
    # optimizer state exists by then, and the profiler's overhead touches no timed step.
    memory_round = max(cfg.warmup - 1, 0) if cfg.memory else -1
    for r in range(cfg.warmup + cfg.rounds + (1 if cfg.memory and cfg.warmup == 0 else 0)):
        order = names[r % len(names):] + names[:r % len(names)]
        timed = r >= cfg.warmup and not (cfg.warmup == 0 and r == memory_round)
        for name in order:
            if r == memory_round:
                transient[name] = transient_peak_bytes(jobs[name]["step"], device)
                continue
            seconds, wall, _ = clock.measure(jobs[name]["step"])
            if timed:
                times[name].append(seconds)
                walls[name].append(wall)
        loads.append(load_average())
        say(f"round {r + 1}: " + ("memory" if r == memory_round else "timed" if timed else "warmup")
            + (": " + ", ".join(f"{n} {1e3 * walls[n][-1]:.0f} ms" for n in names) if timed else ""))

    splits = {n: _split_steps(jobs[n], clock, cfg.split_rounds) for n in names} if cfg.split_rounds else {}

    results = {}
    for name in names:
        job = jobs[name]
        entry = {"median_ms": 1e3 * _median(times[name]), "wall_median_ms": 1e3 * _median(walls[name]),
                 "times_ms": [round(1e3 * t, 3) for t in times[name]],
                 "wall_times_ms": [round(1e3 * t, 3) for t in walls[name]],
                 "passes": 1 if job["method"].gradreg_mode == "off" else 2,
                 "teacher": job["method"].kl,
                 "skipped_steps": int(job["optimizer"].skipped_steps)}
        if cfg.memory:
            state, extra = state_bytes(job["model"], job["optimizer"]), transient.get(name)
            entry["state_mb"] = state / 2**20
            entry["transient_peak_mb"] = None if extra is None else extra / 2**20
            entry["peak_mem_mb"] = None if extra is None else (state + extra) / 2**20
        if name in splits:
            entry.update(splits[name])
        results[name] = entry
    _add_train_ratios(results)
    report = {"bench": "train", "config": asdict(cfg) | {"methods": names}, "clock": clock.kind,
              "image_size": image_size, "model_config": _model_config(cfg.model), "prompt_template": TEMPLATE,
              "machine": machine_info(device),
              "load": {"before": load_before, "rounds": loads, "after": load_average()},
              "methods": results, "targets": _train_targets(results)}
    return report


def _split_steps(job, clock: Clock, rounds: int) -> dict:
    """Per-part median milliseconds over `rounds` instrumented steps of one method."""
    import glad.engine.train as engine_train
    import glad.ops as ops

    model, optimizer = job["model"], job["optimizer"]
    timers = PartTimers(clock)
    patches = [(model, "zeroshot_logits", timers.wrap("teacher", model.zeroshot_logits, absorb=True)),
               (model, "encode_text", timers.wrap("text_forward", model.encode_text)),
               (model, "encode_image", timers.wrap("image_forward", model.encode_image)),
               (model, "logits", timers.wrap("logits", model.logits)),
               (engine_train, "glad_loss", timers.wrap("loss", engine_train.glad_loss)),
               (torch.Tensor, "backward", timers.wrap("backward", torch.Tensor.backward)),
               (optimizer.base_optimizer, "step", timers.wrap("optimizer", optimizer.base_optimizer.step))]
    patches += [(ops, fn, timers.wrap("gradreg_ops", getattr(ops, fn)))
                for fn in ("sam_perturb_", "sam_restore_", "project_interpolate_")]
    per_part = defaultdict(list)
    totals = []
    with _patched(patches):
        for _ in range(rounds):
            timers.totals.clear()
            total, _, _ = clock.measure(job["step"])
            measured = sum(timers.totals.values())
            for part in SPLIT_PARTS[:-1]:
                per_part[part].append(timers.totals.get(part, 0.0))
            per_part["other"].append(max(0.0, total - measured))
            totals.append(total)
    split = {part: 1e3 * _median(per_part[part]) for part in SPLIT_PARTS}
    grouped = {"passes": split["image_forward"] + split["logits"] + split["loss"] + split["backward"],
               "teacher": split["teacher"], "text_encoding": split["text_forward"],
               "ops": split["gradreg_ops"], "optimizer": split["optimizer"], "other": split["other"]}
    return {"split_ms": split, "split_grouped_ms": grouped, "split_step_ms": 1e3 * _median(totals)}


def _add_train_ratios(results: dict) -> None:
    ref = results.get("lora")
    for entry in results.values():
        entry["ratio_to_lora"] = entry["median_ms"] / ref["median_ms"] if ref else None
        entry["wall_ratio_to_lora"] = entry["wall_median_ms"] / ref["wall_median_ms"] if ref else None


def _train_targets(results: dict) -> list[dict]:
    out = []
    for num, den, bound in TRAIN_TARGETS:
        if num in results and den in results:
            ratio = results[num]["median_ms"] / results[den]["median_ms"]
            row = {"ratio": f"{num}/{den}", "value": ratio, "bound": bound, "met": ratio <= bound,
                   "paired_value": _paired(results[num]["times_ms"], results[den]["times_ms"])}
            teacher = results[num].get("split_ms", {}).get("teacher")
            if teacher is not None and not results[den]["teacher"] and results[num]["teacher"]:
                # the numerator pays for a teacher pass its denominator does not have: show
                # the ratio without it too (what the two passes and the ops cost)
                row["value_without_teacher"] = (results[num]["median_ms"] - teacher) / results[den]["median_ms"]
            out.append(row)
    return out


def format_train_table(report: dict) -> str:
    """The report as a plain-text table: one row per method."""
    cfg, m = report["config"], report["machine"]
    lines = [f"glad bench train: {cfg['model']} (pretrained={cfg['pretrained']}), batch {cfg['batch_size']}, "
             f"{cfg['num_classes']} classes, {report['image_size']} px, {cfg['rounds']} rounds, "
             f"clock {report['clock']}",
             f"{m['cpu']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads), device "
             f"{m.get('device_name', m['device'])}, load {report['load']['before']} -> {report['load']['after']}",
             ""]
    parts = ("passes", "teacher", "text_encoding", "ops", "optimizer", "other")
    head = f"{'method':<14} {'median ms':>10} {'x lora':>7} {'peak MB':>9}  " + " ".join(f"{p:>13}" for p in parts)
    lines += [head, "-" * len(head)]
    for name, e in report["methods"].items():
        ratio = "-" if e["ratio_to_lora"] is None else f"{e['ratio_to_lora']:.2f}"
        peak = "-" if e.get("peak_mem_mb") is None else f"{e['peak_mem_mb']:.0f}"
        grouped = e.get("split_grouped_ms", {})
        cells = " ".join(f"{grouped[p]:>13.1f}" if p in grouped else f"{'-':>13}" for p in parts)
        lines.append(f"{name:<14} {e['median_ms']:>10.1f} {ratio:>7} {peak:>9}  {cells}")
    if report["targets"]:
        lines.append("")
    for t in report["targets"]:
        extra = (f" (without the teacher pass: {t['value_without_teacher']:.2f})"
                 if "value_without_teacher" in t else "")
        lines.append(f"{t['ratio']}: {t['value']:.2f} (target <= {t['bound']}: "
                     f"{'met' if t['met'] else 'NOT met'}; per-round median {t['paired_value']:.2f}){extra}")
    lines.append("split (ms, medians of instrumented steps; passes = image forward + logits + loss + backward)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ eval
def run_eval_bench(cfg: EvalBenchConfig, progress=None) -> dict:
    """Images/s of evaluation for each variant at `cfg.num_classes` classes; returns the report."""
    from glad.engine.evaluate import class_text_features, merged_adapters, predict
    from glad.models import GladModel

    say = progress or (lambda _msg: None)
    load_before, runtime, clock, clip, tokenizer, image_size, (images, _, classnames) = _prepare(cfg)
    device = runtime.device

    models = {}
    with contextlib.ExitStack() as stack:
        for name in cfg.variants:
            lora = name.startswith("lora")
            # merging writes into the base weights: merged variants get their own copy
            backbone = copy.deepcopy(clip) if name.startswith("lora-merged") else _shared_copy(clip)
            torch.manual_seed(cfg.seed)
            model = GladModel(backbone, tokenizer, lora=_lora_config() if lora else None,
                              use_alignnet=name.endswith("+alignnet"), model_name=cfg.model,
                              pretrained=cfg.pretrained).to(device)
            with torch.no_grad():  # a trained adapter, not the zero initialisation
                for p in model.trainable_parameters():
                    p.normal_(0.0, 0.02)
            model.eval()
            if name.startswith("lora-merged"):
                stack.enter_context(merged_adapters(model))
            models[name] = model

        # Text features: the prompts of `text_classes` classes encoded through the real path
        # (per-class cost); the C-class matrix the images are scored against is random unit
        # vectors (its values do not change the time, and encoding 1000 prompts per variant
        # would dominate the run).
        text_ms = {}
        for name, model in models.items():
            if cfg.text_classes:
                def encode(model=model):
                    return class_text_features(model, classnames[:cfg.text_classes], TEMPLATE, runtime)

                encode()  # warm: the first call of each model pays one-off costs
                seconds, _, _ = clock.measure(encode)
                text_ms[name] = 1e3 * seconds / cfg.text_classes
        g = torch.Generator().manual_seed(cfg.seed + 1)
        dim = next(iter(models.values())).embed_dim
        text = torch.nn.functional.normalize(torch.randn(cfg.num_classes, dim, generator=g), dim=-1).to(device)

        times = {n: [] for n in models}
        walls = {n: [] for n in models}
        loads = []
        names = list(models)
        for r in range(cfg.warmup + cfg.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                seconds, wall, _ = clock.measure(lambda name=name: predict(models[name], images, text, runtime))
                if r >= cfg.warmup:
                    times[name].append(seconds)
                    walls[name].append(wall)
            loads.append(load_average())
            say(f"round {r + 1}/{cfg.warmup + cfg.rounds}" + (" (warmup)" if r < cfg.warmup else ""))

    results = {}
    for name in names:
        med = _median(times[name])
        results[name] = {"median_batch_ms": 1e3 * med, "images_per_s": cfg.batch_size / med,
                         "wall_images_per_s": cfg.batch_size / _median(walls[name]),
                         "times_ms": [round(1e3 * t, 3) for t in times[name]],
                         "text_ms_per_class": text_ms.get(name)}
    targets = []
    for tuned, plain, bound in EVAL_TARGETS:
        if tuned in results and plain in results:
            ratio = results[tuned]["images_per_s"] / results[plain]["images_per_s"]
            targets.append({"ratio": f"{tuned}/{plain}", "value": ratio, "bound": bound, "met": ratio >= bound,
                            "paired_value": _paired(results[plain]["times_ms"], results[tuned]["times_ms"])})
    return {"bench": "eval", "config": asdict(cfg) | {"variants": names}, "clock": clock.kind,
            "image_size": image_size, "model_config": _model_config(cfg.model), "machine": machine_info(device),
            "load": {"before": load_before, "rounds": loads, "after": load_average()},
            "variants": results, "targets": targets}


def format_eval_table(report: dict) -> str:
    cfg, m = report["config"], report["machine"]
    lines = [f"glad bench eval: {cfg['model']}, batch {cfg['batch_size']}, {cfg['num_classes']} classes, "
             f"{report['image_size']} px, {cfg['rounds']} rounds, clock {report['clock']}",
             f"{m['cpu']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads), device "
             f"{m.get('device_name', m['device'])}, load {report['load']['before']} -> {report['load']['after']}",
             ""]
    head = f"{'variant':<22} {'images/s':>10} {'batch ms':>10} {'text ms/class':>14}"
    lines += [head, "-" * len(head)]
    for name, e in report["variants"].items():
        text = "-" if e["text_ms_per_class"] is None else f"{e['text_ms_per_class']:.2f}"
        lines.append(f"{name:<22} {e['images_per_s']:>10.2f} {e['median_batch_ms']:>10.1f} {text:>14}")
    if report["targets"]:
        lines.append("")
    for t in report["targets"]:
        lines.append(f"{t['ratio']}: {t['value']:.3f} of the images/s (target >= {t['bound']}: "
                     f"{'met' if t['met'] else 'NOT met'}; per-round median {t['paired_value']:.3f})")
    return "\n".join(lines)
