"""`glad bench train`: a training step of every method, side by side on one batch.

It times the code users run: ``glad.engine.train.train_step`` (the engine's step: the
teacher pass once, then GradReg's one or two passes and AdamW). Every method runs on the
same batch and the same frozen backbone (one copy of its weights is shared: it is never
written in training), interleaved round by round in an order rotated each round, so a busy
spell slows them alike; the headline is the median over rounds.

The time split comes from separate, instrumented steps (each part wrapped in a timer that
synchronises the device), so the headline steps carry no timers. The parts are means over
those steps and add up to their mean step time: what no timer claims is "other".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from glad.bench import backbone
from glad.bench import report as reports
from glad.bench.memory import state_bytes, transient_peak_bytes
from glad.bench.timing import (
    Clock,
    PartTimers,
    interleaved,
    load_average,
    median,
    paired_ratio,
    patched,
)

METHODS = ("lora", "lora-alignnet", "lora-sam", "lora-gradreg", "glad")
# the parts of a step, in table order; "passes" = forward + loss + backward of the tuned model
SPLIT_PARTS = ("teacher", "text_forward", "image_forward", "logits", "loss", "backward",
               "gradreg_ops", "optimizer", "other")
GROUPED_PARTS = ("passes", "teacher", "text_encoding", "ops", "optimizer", "other")


@dataclass
class Config(backbone.ModelBenchConfig):
    """Settings of `glad bench train` (CLI flags map one-to-one)."""

    split_rounds: int = 2
    methods: Sequence[str] = METHODS
    memory: bool = True

    def validate(self) -> Config:
        backbone.check_names("methods", self.methods, METHODS)
        if self.split_rounds < 0:
            raise ValueError(f"split_rounds must be >= 0, got {self.split_rounds}")
        return super().validate()


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    """Time training steps of every method of `cfg` side by side; returns the report."""
    from glad.config import METHODS as ALL
    from glad.config import TrainConfig
    from glad.data import format_prompt
    from glad.engine.train import make_optimizer, train_step
    from glad.models import GladModel

    say = progress or (lambda _msg: None)
    report, runtime, clock, clip, tokenizer, (images, labels, classnames) = backbone.prepare(cfg, "train", command)
    device = runtime.device
    train_cfg = TrainConfig(model=cfg.model, pretrained=cfg.pretrained, batch_size=cfg.batch_size)

    jobs = {}
    for name in cfg.methods:
        method = ALL[name]
        torch.manual_seed(cfg.seed)  # LoRA A and AlignNet initialisation, as the runner does
        model = GladModel(backbone.shared_copy(clip), tokenizer, lora=backbone.lora_config(),
                          use_alignnet=method.alignnet, model_name=cfg.model, pretrained=cfg.pretrained).to(device)
        model.train()
        # as glad.engine.train.train: prompts tokenised once per run, the same optimizer
        tokens = model.tokenize([format_prompt(backbone.TEMPLATE, c) for c in classnames]).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, method, train_cfg, model)
        kl_weight = train_cfg.kl_weight if method.kl else 0.0

        def step(model=model, optimizer=optimizer, tokens=tokens, kl_weight=kl_weight):
            return train_step(model, model, optimizer, images, labels, tokens, kl_weight, runtime)

        jobs[name] = {"model": model, "optimizer": optimizer, "step": step, "method": method}
    steps = {name: job["step"] for name, job in jobs.items()}
    names = list(steps)
    loads = []

    def after(label):
        def note(r):
            loads.append(load_average())
            say(f"{label} round {r + 1}")
        return note

    # The memory round comes after the warmup (the optimizer state exists by then); the
    # profiler's overhead touches no timed step.
    warm = max(cfg.warmup - 1, 0) if cfg.memory else cfg.warmup
    interleaved(clock, steps, warm, after_round=after("warmup"))
    transient = {}
    if cfg.memory:
        transient = {name: transient_peak_bytes(steps[name], device) for name in names}
        after("memory")(0)
    times, walls = interleaved(clock, steps, cfg.rounds, offset=cfg.warmup, after_round=after("timed"))
    splits = {n: split_steps(jobs[n], clock, cfg.split_rounds) for n in names} if cfg.split_rounds else {}

    results = {}
    for name in names:
        job = jobs[name]
        entry = {"median_ms": 1e3 * median(times[name]), "wall_median_ms": 1e3 * median(walls[name]),
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
    ref = results.get("lora")
    for entry in results.values():
        entry["ratio_to_lora"] = entry["median_ms"] / ref["median_ms"] if ref else None
        entry["wall_ratio_to_lora"] = entry["wall_median_ms"] / ref["wall_median_ms"] if ref else None
        entry["paired_ratio_to_lora"] = paired_ratio(entry["times_ms"], ref["times_ms"]) if ref else None
    report["config"]["methods"] = names
    report["load"]["rounds"] = loads
    return reports.finish(report, methods=results)


def split_steps(job, clock: Clock, rounds: int) -> dict:
    """Per-part mean milliseconds over `rounds` instrumented steps of one method; the parts
    add up to the mean instrumented step (`split_step_ms`)."""
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
    per_part = defaultdict(float)
    total = 0.0
    with patched(patches):
        for _ in range(rounds):
            timers.totals.clear()
            seconds, _, _ = clock.measure(job["step"])
            for part in SPLIT_PARTS[:-1]:
                per_part[part] += timers.totals.get(part, 0.0)
            per_part["other"] += seconds - sum(timers.totals.values())  # the timers sit inside the step
            total += seconds
    split = {part: 1e3 * per_part[part] / rounds for part in SPLIT_PARTS}
    grouped = {"passes": split["image_forward"] + split["logits"] + split["loss"] + split["backward"],
               "teacher": split["teacher"], "text_encoding": split["text_forward"],
               "ops": split["gradreg_ops"], "optimizer": split["optimizer"], "other": split["other"]}
    return {"split_ms": split, "split_grouped_ms": grouped, "split_step_ms": 1e3 * total / rounds,
            "split_rounds": rounds}


def table(report: dict) -> str:
    """The report as a plain-text table: one row per method."""
    cfg = report["config"]
    title = (f"{cfg['model']} (pretrained={cfg['pretrained']}), batch {cfg['batch_size']}, {cfg['num_classes']} "
             f"classes, {report['image_size']} px, median of {cfg['rounds']} interleaved rounds")
    head = (f"{'method':<14} {'median ms':>10} {'x lora':>7} {'peak MB':>9} | {'split step':>10} = "
            + " + ".join(f"{p}" for p in GROUPED_PARTS))
    lines = reports.header(report, title, head)
    for name, e in report["methods"].items():
        ratio = "-" if e["ratio_to_lora"] is None else f"{e['ratio_to_lora']:.2f}"
        peak = "-" if e.get("peak_mem_mb") is None else f"{e['peak_mem_mb']:.0f}"
        row = f"{name:<14} {e['median_ms']:>10.1f} {ratio:>7} {peak:>9} |"
        grouped = e.get("split_grouped_ms")
        if grouped:
            row += f" {e['split_step_ms']:>10.1f} = " + " + ".join(
                f"{grouped[p]:>{len(p)}.1f}" for p in GROUPED_PARTS)
        lines.append(row)
    if any("split_step_ms" in e for e in report["methods"].values()):
        lines.append(f"split: ms, means of {cfg['split_rounds']} instrumented steps (timers synchronise, so a split "
                     "step runs a little longer than the median); passes = image forward + logits + loss + "
                     "backward; other = what no part's timer covers")
    return "\n".join(lines)
