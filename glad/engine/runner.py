"""A whole protocol: every (method, dataset, seed) trained, evaluated, recorded and tabulated.

Layout of an output folder:

    config.json                     the run's resolved settings and versions
    results.jsonl                   one record per (method, train set, eval set, split, seed)
    results.md, results-<protocol>.csv   the paper-layout tables
    <method>/<dataset>-<base|all>/seed<k>/
        adapter/                    adapter_config.json + adapter_model.safetensors
        config.json                 this job's settings, versions, git commit
        checkpoints/                while training (removed when the job is done)
        done.json                   the job finished; its adapter is final

Cross-dataset and domain generalization train the same source model (all
classes), so one output folder serves both and trains it once per seed.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

import torch

import glad
from glad.config import METHODS, ConfigError, TrainConfig
from glad.data import (
    PROTOCOLS,
    build_dataset,
    fewshot,
    subsample_classes,
    test_transform,
    train_transform,
)
from glad.engine.evaluate import evaluate
from glad.engine.results import read_records, write_tables
from glad.engine.runtime import Runtime, setup_runtime
from glad.engine.train import train
from glad.io import append_line, atomic_write_text
from glad.models import GladModel, LoraConfig, load_adapter, load_clip, save_adapter

log = logging.getLogger("glad")


class OutputConflictError(RuntimeError):
    """The output folder holds a different run, or an unfinished one without --resume."""


@dataclass(frozen=True)
class Job:
    """Train `train_dataset` (its `classes` part) and evaluate on each of `evals`."""

    train_dataset: str
    classes: str  # "base" | "all"
    evals: tuple[tuple[str, str], ...]  # (eval dataset, split: base | novel | all)


def plan(cfg: TrainConfig) -> list[Job]:
    """The jobs of a protocol (glad.data.PROTOCOLS); `--dataset` names override its datasets:
    each one for base-to-novel, SOURCE TARGET... for the transfer protocols."""
    protocol = PROTOCOLS[cfg.protocol]
    if protocol.source is None:
        names = cfg.datasets or protocol.targets
        return [Job(ds, protocol.train_classes, tuple((ds, split) for split in protocol.test_classes))
                for ds in names]
    source, targets = protocol.source, protocol.targets
    if cfg.datasets:
        source, targets = cfg.datasets[0], cfg.datasets[1:] or targets
    return [Job(source, "all", tuple([(source, "all")] + [(t, "all") for t in targets]))]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(glad.__file__),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def _provenance() -> dict:
    """Versions and git commit, asked once a process (it runs git): every record carries them."""
    import open_clip

    return {"glad": glad.__version__, "torch": torch.__version__,
            "open_clip": getattr(open_clip, "__version__", "unknown"), "git_commit": _git_commit()}


def check_output(cfg: TrainConfig, resume: bool) -> None:
    """Refuse to mix runs: an output folder holds one set of training settings."""
    path = os.path.join(cfg.output, "config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f).get("training_identity", {})
    mine = cfg.training_identity()
    diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} there vs {mine.get(k)!r} now" for k in diff[:6])
        raise OutputConflictError(f"output folder {cfg.output} holds a run with other settings ({details}); "
                                  "choose another --output, or rerun with the same settings")
    if not resume:
        for root, dirs, _ in os.walk(cfg.output):
            if "checkpoints" in dirs and not os.path.exists(os.path.join(root, "done.json")):
                raise OutputConflictError(f"{root} holds an unfinished training job; pass --resume to "
                                          "continue it, or choose another --output")


def _write_run_config(cfg: TrainConfig) -> None:
    data = {"config": cfg.to_dict(), "training_identity": cfg.training_identity(), **_provenance()}
    atomic_write_text(os.path.join(cfg.output, "config.json"), json.dumps(data, indent=2, sort_keys=True))


class Runner:
    def __init__(self, cfg: TrainConfig, resume: bool = False, echo=print):
        self.cfg = cfg.validate()
        self.resume = resume
        self.echo = echo
        self.runtime: Runtime | None = None
        self._datasets = {}
        self._clip = None

    # -- pieces -------------------------------------------------------------------------
    def dataset(self, name):
        if name not in self._datasets:
            self._datasets[name] = build_dataset(name, self.cfg.data_root)
        return self._datasets[name]

    def base_clip(self):
        if self._clip is None:
            cfg = self.cfg
            # Seeded, so that a randomly initialised backbone (--pretrained none) is the same in every
            # process and every rerun.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self._clip = load_clip(cfg.model, cfg.pretrained, cache_dir=cfg.cache_dir,
                                       device=self.runtime.device, offline=cfg.offline)
        return self._clip

    def build_model(self, method, seed: int) -> GladModel:
        clip, _, _, tokenizer = self.base_clip()
        cfg = self.cfg
        lora = None
        if method.train:
            lora = LoraConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                              targets=tuple(cfg.lora_targets), encoders=tuple(cfg.lora_encoders), rslora=cfg.rslora)
        torch.manual_seed(seed)  # LoRA A and AlignNet initialisation
        model = GladModel(copy.deepcopy(clip), tokenizer, lora=lora, use_alignnet=method.alignnet,
                          model_name=cfg.model, pretrained=cfg.pretrained)
        return model.to(self.runtime.device)

    def image_size(self) -> int:
        size = self.base_clip()[0].visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    # -- the run ------------------------------------------------------------------------
    def run(self):
        cfg = self.cfg
        self.runtime = setup_runtime(cfg.device, cfg.precision, cfg.deterministic)
        check_output(cfg, self.resume)
        jobs = plan(cfg)
        for job in jobs:  # fail on missing data now, not after hours of training
            for name in {job.train_dataset, *(e for e, _ in job.evals)}:
                self.dataset(name)
        if self.runtime.is_main:
            os.makedirs(cfg.output, exist_ok=True)
            _write_run_config(cfg)
        results_path = os.path.join(cfg.output, "results.jsonl")
        # Read once: each (method, job, seed) is visited once a run, so no record added below
        # can change what is done.
        done = {(r["method"], r["train_dataset"], r["eval_dataset"], r["split"], r["seed"])
                for r in read_records(results_path) if r["protocol"] == cfg.protocol}
        for method_name in cfg.methods:
            method = METHODS[method_name]
            for job in jobs:
                for seed in cfg.seeds:
                    self._run_job(method, job, seed, results_path, done)
        records = read_records(results_path)
        tables = {}
        if self.runtime.is_main:
            tables = write_tables(records, cfg.output)
            if cfg.protocol in tables:
                self.echo(tables[cfg.protocol].markdown())
        self.runtime.barrier()
        return tables

    def _run_job(self, method, job: Job, seed: int, results_path: str, done: set) -> None:
        cfg, runtime = self.cfg, self.runtime
        todo = [(e, s) for e, s in job.evals if (method.name, job.train_dataset, e, s, seed) not in done]
        if not todo:
            log.info("%s %s seed %d: done, skipped", method.name, job.train_dataset, seed)
            return
        job_dir = os.path.join(cfg.output, method.name, f"{job.train_dataset}-{job.classes}", f"seed{seed}")
        model = self.build_model(method, seed)
        if method.train:
            self._train_or_load(model, method, job, seed, job_dir)
        transform = test_transform(self.image_size())
        for eval_name, split in todo:
            data = self.dataset(eval_name)
            if split != "all":
                data = subsample_classes(data, split)
            if runtime.is_main:
                start = time.perf_counter()
                res = evaluate(model, data.test, data.classnames, cfg.template or data.template, transform,
                               runtime, batch_size=cfg.eval_batch_size, workers=cfg.workers)
                record = {"protocol": cfg.protocol, "method": method.name, "train_dataset": job.train_dataset,
                          "eval_dataset": eval_name, "split": split, "seed": seed, "shots": cfg.shots,
                          "model": cfg.model, "pretrained": cfg.pretrained, **res,
                          "eval_seconds": round(time.perf_counter() - start, 3),
                          "config": cfg.to_dict(), **_provenance()}
                append_line(results_path, json.dumps(record, sort_keys=True))
                if method.train:
                    append_line(os.path.join(job_dir, "results.jsonl"), json.dumps(record, sort_keys=True))
                self.echo(f"{method.name:>14} | {job.train_dataset} -> {eval_name} [{split}] seed {seed}: "
                          f"{res['accuracy']:.2f}% of {res['num_samples']}")
            runtime.barrier()

    def _train_or_load(self, model, method, job: Job, seed: int, job_dir: str) -> None:
        cfg, runtime = self.cfg, self.runtime
        adapter = os.path.join(job_dir, "adapter")
        if os.path.exists(os.path.join(job_dir, "done.json")):
            load_adapter(model, adapter)
            return
        data = fewshot(self.dataset(job.train_dataset), cfg.shots, seed)
        if job.classes != "all":
            data = subsample_classes(data, job.classes)
        start = time.perf_counter()
        crop_scale = cfg.crop_scale or data.info.get("crop_scale") or (0.08, 1.0)
        stats = train(model, method, cfg, data.train, data.classnames, cfg.template or data.template,
                      train_transform(self.image_size(), tuple(crop_scale)), seed, job_dir, runtime)
        if runtime.is_main:
            save_adapter(model, adapter)
            job_config = {"config": cfg.to_dict(), "method": method.name, "train_dataset": job.train_dataset,
                          "classes": job.classes, "seed": seed, **_provenance()}
            atomic_write_text(os.path.join(job_dir, "config.json"), json.dumps(job_config, indent=2, sort_keys=True))
            stats["train_seconds"] = round(time.perf_counter() - start, 3)
            atomic_write_text(os.path.join(job_dir, "done.json"), json.dumps(stats, indent=2))
            shutil.rmtree(os.path.join(job_dir, "checkpoints"), ignore_errors=True)
        runtime.barrier()


def run_protocol(cfg: TrainConfig, resume: bool = False, echo=print):
    """Run `cfg.protocol` for every method, dataset and seed; returns the tables printed."""
    if cfg.protocol not in ("base-to-novel", "cross-dataset", "domain-generalization"):
        raise ConfigError(f"unknown protocol {cfg.protocol!r}")
    return Runner(cfg, resume=resume, echo=echo).run()
