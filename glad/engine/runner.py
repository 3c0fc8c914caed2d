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

import contextlib
import copy
import functools
import json
import logging
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import torch

from glad.config import METHODS, ConfigError, TrainConfig, default_workers
from glad.data import (
    PROTOCOLS,
    MissingDataError,
    build_dataset,
    fewshot,
    subsample_classes,
)
from glad.data.decoded import GIB, PreparedTestImages, test_images_bytes
from glad.data.transforms import Preprocess
from glad.engine.defaults import use_builtin_datasets
from glad.engine.evaluate import evaluate, shard
from glad.engine.results import read_records, write_tables
from glad.engine.runtime import Runtime, launch_ranks, setup_runtime
from glad.engine.train import StopRequested, train
from glad.io import FolderBusyError, append_line, atomic_write_text, folder_lock
from glad.models import (
    GladModel,
    LoraConfig,
    load_adapter,
    plan_lora,
    save_adapter,
    uses_quick_gelu,
)
from glad.models.loading import load_base_clip

log = logging.getLogger("glad")


class OutputConflictError(RuntimeError):
    """The output folder holds a different run, or an unfinished one without --resume."""


@dataclass(frozen=True)
class Job:
    """Train `train_dataset` (its `classes` part) with `shots` a class; evaluate on each of `evals`."""

    train_dataset: str
    classes: str  # "base" | "all"
    evals: tuple[tuple[str, str], ...]  # (eval dataset, split: base | novel | all)
    shots: int = 16


def plan(cfg: TrainConfig) -> list[Job]:
    """The jobs of a protocol (glad.data.PROTOCOLS); `--dataset` names override its datasets:
    each one for base-to-novel and few-shot (one job per shot count), SOURCE TARGET... for the
    transfer protocols."""
    protocol = PROTOCOLS[cfg.protocol]
    if protocol.source is None:
        names = cfg.datasets or protocol.targets
        return [Job(ds, protocol.train_classes, tuple((ds, split) for split in protocol.test_classes), k)
                for ds in names for k in cfg.shots]
    source, targets = protocol.source, protocol.targets
    if cfg.datasets:
        source, targets = cfg.datasets[0], cfg.datasets[1:] or targets
    return [Job(source, "all", tuple([(source, "all")] + [(t, "all") for t in targets]), cfg.shots[0])]


def dataset_label(spec: str) -> str:
    """A short readable name for a dataset spec: the CoOp/registered name, or the folder or file
    stem of `imagefolder:PATH`, `PATH.csv` and `PATH.json`."""
    from glad.config import user_data
    from glad.data.registry import normalize_name

    mine = user_data(spec)
    if mine is None:
        return normalize_name(spec.strip())
    raw = mine[1]
    stem = os.path.splitext(os.path.basename(os.path.normpath(os.path.expanduser(raw))))[0]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "dataset"


def dataset_labels(specs) -> dict[str, str]:
    """`dataset_label` of each spec, made unique within the run (`-2`, `-3` ... on clashes)."""
    labels, taken = {}, set()
    for spec in specs:
        if spec in labels:
            continue
        label, n = dataset_label(spec), 2
        while label in taken:
            label, n = f"{dataset_label(spec)}-{n}", n + 1
        labels[spec] = label
        taken.add(label)
    return labels


@functools.lru_cache(maxsize=1)
def _provenance() -> dict:
    """Versions and git commit, asked once a process: every record carries them."""
    from glad.provenance import versions

    return versions()


def read_run_config(output: str) -> dict:
    """The config.json a run wrote in `output` ({} when there is none)."""
    path = os.path.join(output, "config.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def earlier_run(output: str) -> dict:
    """The config.json of an earlier run that left results in `output`; {} when there is none,
    or only the settings of a run that failed before its first result."""
    return read_run_config(output) if _holds_results(output) else {}


def check_output(cfg: TrainConfig, resume: bool, job_dirs: list[str] | None = None,
                 earlier: dict | None = None) -> None:
    """Refuse to mix runs: an output folder holds one set of training settings. Without
    `resume`, an unfinished job (checkpoints, no done.json) is refused too: any in the folder,
    or only those of `job_dirs` (a job shard's own: other shards may be training now).
    `earlier` is `earlier_run(cfg.output)` when the caller has read it."""
    earlier = earlier_run(cfg.output) if earlier is None else earlier
    if not earlier:
        return
    saved = earlier.get("training_identity", {})
    mine = cfg.training_identity()
    diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} there vs {mine.get(k)!r} now" for k in diff[:6])
        raise OutputConflictError(f"output folder {cfg.output} holds a run with other settings ({details}); "
                                  "choose another --output, or rerun with the same settings")
    if not resume:
        roots = job_dirs if job_dirs is not None else [root for root, dirs, _ in os.walk(cfg.output)
                                                       if "checkpoints" in dirs]
        for root in roots:
            if os.path.isdir(os.path.join(root, "checkpoints")) and not os.path.exists(os.path.join(root, "done.json")):
                raise OutputConflictError(f"{root} holds an unfinished training job; pass --resume to "
                                          "continue it, or choose another --output")


def _holds_results(output: str) -> bool:
    """Whether a run left anything of value in `output`: results, checkpoints or finished jobs."""
    if os.path.exists(os.path.join(output, "results.jsonl")) or any(
            n.startswith("results-shard") for n in (os.listdir(output) if os.path.isdir(output) else [])):
        return True
    for _, dirs, files in os.walk(output):
        if "checkpoints" in dirs or "done.json" in files or "adapter_model.safetensors" in files:
            return True
    return False


def check_data(output: str, mine: dict[str, dict], earlier: dict | None = None) -> None:
    """Refuse to mix data: a dataset name (its table label) in an output folder stands for one
    source and one file list, so another folder of the same name is not "done" there."""
    saved = (earlier_run(output) if earlier is None else earlier).get("data", {})
    clash = [label for label in mine if label in saved and saved[label] != mine[label]]
    if clash:
        label = clash[0]
        raise OutputConflictError(f"output folder {output} holds results for a dataset named {label!r} from "
                                  f"{saved[label].get('source')}, with other files than {mine[label].get('source')} "
                                  "now; choose another --output")


def _write_run_config(cfg: TrainConfig, resolved: dict, data: dict[str, dict]) -> None:
    try:  # another protocol's datasets in this folder stay on record
        earlier = read_run_config(cfg.output).get("data", {})
    except (OSError, ValueError):
        earlier = {}
    data = {"config": cfg.to_dict(), "training_identity": cfg.training_identity(), "resolved": resolved,
            "data": {**earlier, **data}, **_provenance()}
    atomic_write_text(os.path.join(cfg.output, "config.json"), json.dumps(data, indent=2, sort_keys=True))


class Runner:
    def __init__(self, cfg: TrainConfig, resume: bool = False, echo=print, stop_flag=lambda: False):
        use_builtin_datasets()
        self.cfg = cfg.validate()
        self.resume = resume
        self.echo = echo
        self.stop_flag = stop_flag
        self.runtime: Runtime | None = None
        self._datasets = {}
        self._clip = None
        self.labels: dict[str, str] = {}
        self._data_identity: dict | None = None
        self._prepared: OrderedDict = OrderedDict()  # (dataset, split, size) -> PreparedTestImages
        # records an earlier run (or an earlier job of this one) left, by what they measured
        self.reusable: dict[tuple, dict] = {}

    # -- pieces -------------------------------------------------------------------------
    def dataset(self, name):
        if name not in self._datasets:
            self._datasets[name] = build_dataset(name, self.cfg.data_root)
        return self._datasets[name]

    def base_clip(self):
        if self._clip is None:
            cfg = self.cfg
            self._clip = load_base_clip(cfg.model, cfg.pretrained, cache_dir=cfg.cache_dir,
                                        device=self.runtime.device, offline=cfg.offline, quick_gelu=cfg.quick_gelu,
                                        tokenizer=cfg.tokenizer)
        return self._clip

    def build_model(self, method, seed: int) -> GladModel:
        clip, _, _, tokenizer = self.base_clip()
        cfg = self.cfg
        lora = None
        if method.train:
            lora = self.lora_config()
        torch.manual_seed(seed)  # LoRA A and AlignNet initialisation
        model = GladModel(copy.deepcopy(clip), tokenizer, lora=lora, use_alignnet=method.alignnet,
                          model_name=cfg.model, pretrained=cfg.pretrained,
                          tokenizer_path=cfg.tokenizer and os.path.abspath(cfg.tokenizer))
        return model.to(self.runtime.device)

    def lora_config(self) -> LoraConfig:
        cfg = self.cfg
        return LoraConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                          targets=tuple(cfg.lora_targets), encoders=tuple(cfg.lora_encoders), rslora=cfg.rslora)

    def preprocess(self) -> Preprocess:
        """The base model's image preprocessing (open_clip's, for its config and weights)."""
        return Preprocess.of_model(self.base_clip()[0])

    @property
    def workers(self) -> int:
        return default_workers() if self.cfg.workers is None else self.cfg.workers

    def prepared_test(self, name: str, split: str, items):
        """The test images of (dataset, split) decoded and cropped once for every adapter of the
        run that is evaluated on them, within `--image-cache-gb` (older sets are dropped first);
        None when they do not fit (they are then decoded at each evaluation, as before)."""
        budget = int(self.cfg.image_cache_gb * GIB)
        key = (name, split, self.preprocess())
        if key in self._prepared:
            self._prepared.move_to_end(key)
            return self._prepared[key]
        items = shard(items, self.runtime)  # this rank's share only
        need = test_images_bytes(len(items), self.preprocess().size)
        if need > budget:
            return None
        while self._prepared and sum(p.nbytes for p in self._prepared.values()) + need > budget:
            self._prepared.popitem(last=False)
        self._prepared[key] = PreparedTestImages(items, self.preprocess(), workers=self.workers)
        return self._prepared[key]

    def check_evaluable(self, jobs: list[Job]) -> None:
        """Refuse now what would fail after training: fewer than two classes to train on, a
        test split with no image, a scored class without a test image."""
        for job in jobs:
            data = self.dataset(job.train_dataset)
            if len(data.classnames) < 2:
                raise ConfigError(f"{self.labels[job.train_dataset]} has {len(data.classnames)} class(es); a "
                                  "classifier needs at least two (one folder per class)")
            for name, split in job.evals:
                part = self.dataset(name) if split == "all" else subsample_classes(self.dataset(name), split)
                label = f"{self.labels[name]}{'' if split == 'all' else f' [{split}]'}"
                if not part.test:
                    raise ConfigError(f"{label} has no test images, so nothing can be scored; give it a test/ "
                                      "folder (or test rows), or at least two images a class")
                tested = {d.label for d in part.test}
                untested = [c for i, c in enumerate(part.classnames) if i not in tested]
                if untested:
                    raise ConfigError(f"{label}: {len(untested)} class(es) have no test image and could not be "
                                      f"scored: {', '.join(untested[:10])}; add test images for them (a class "
                                      "needs at least two images when glad splits the folder)")

    def data_identity(self) -> dict[str, dict]:
        """{label: where the dataset is read from, and a hash of its file lists} (made once)."""
        from glad.data.shots import fingerprint

        if self._data_identity is None:
            self._data_identity = {}
            for spec, label in self.labels.items():
                ds = self.dataset(spec)
                self._data_identity[label] = {"source": ds.folder or ds.name, "files": fingerprint(ds)}
        return self._data_identity

    def resolved(self) -> dict:
        """What the settings turned into: the model really built and each dataset's source."""
        clip = self.base_clip()[0]
        preprocess = self.preprocess()
        return {"quick_gelu": uses_quick_gelu(clip), "image_size": preprocess.image_size,
                "preprocess": preprocess.to_dict(),
                "datasets": {label: spec for spec, label in self.labels.items()}}

    def _check_stop(self):
        if self.stop_flag():
            raise StopRequested("stopped between jobs")

    # -- the run ------------------------------------------------------------------------
    def run(self):
        """Run the plan; one run at a time per output folder (job-array shards: one per shard),
        locked from the first write to the end."""
        cfg = self.cfg
        if os.path.exists(cfg.output) and not os.path.isdir(cfg.output):
            raise OutputConflictError(f"--output {cfg.output} is a file, not a folder; choose a folder for the run")
        with contextlib.ExitStack() as self._held:
            return self._run()

    def _lock_output(self) -> None:
        """Take the output folder's lock (rank 0 under torchrun: the ranks are one run) until
        `run` returns; refused in one line while another run holds it."""
        cfg = self.cfg
        if launch_ranks()[0] != 0:
            return
        name = ".glad.lock" if cfg.shard is None else f".glad-shard-{cfg.shard.replace('/', '-of-')}.lock"
        try:
            self._held.enter_context(folder_lock(cfg.output, name))
        except FolderBusyError as e:
            raise OutputConflictError(str(e)) from None

    def _run(self):
        cfg = self.cfg
        # Job-parallel: each process runs whole jobs on its own device, no DDP (see job_shard).
        shard_index, shard_count = job_shard(cfg)
        self.runtime = setup_runtime(cfg.device, cfg.precision, cfg.deterministic, cfg.eval_precision,
                                     distributed=cfg.parallel != "jobs")
        self._held.enter_context(self.runtime.numerics())  # TF32 etc. for this run only
        jobs = plan(cfg)
        self.labels = dataset_labels(n for job in jobs for n in (job.train_dataset, *(e for e, _ in job.evals)))
        tasks = [(METHODS[m], job, seed) for m in cfg.methods for job in jobs for seed in cfg.seeds]
        tasks = tasks[shard_index::shard_count]  # the same plan in every process, dealt out
        earlier = earlier_run(cfg.output)  # read once for both checks
        check_output(cfg, self.resume, None if shard_count == 1 else
                     [self.job_dir(method, job, seed) for method, job, seed in tasks], earlier)
        missing = {}
        for spec in self.labels:  # fail on missing data now, not after hours of training
            try:
                self.dataset(spec)
            except MissingDataError as e:
                missing[self.labels[spec]] = str(e)
        if missing:
            first, *others = missing
            more = f" Also missing: {', '.join(others)}." if others else ""
            raise MissingDataError(missing[first] + more)
        check_data(cfg.output, self.data_identity(), earlier)
        self.check_evaluable(jobs)
        self.base_clip()  # weights load (or fail) before anything is written
        if any(METHODS[m].train for m in cfg.methods):
            try:  # a tower LoRA cannot go into is refused now, not after the first job's data load
                plan_lora(self.base_clip()[0], self.lora_config())
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if cfg.tensorboard:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self._lock_output()  # the first write: from here on the folder is this run's
        if self.runtime.is_main:
            _write_run_config(cfg, self.resolved(), self.data_identity())
        # One writer per file: job shards append to their own results file; readers merge them.
        name = "results.jsonl" if shard_count == 1 else f"results-shard{shard_index}-of-{shard_count}.jsonl"
        results_path = os.path.join(cfg.output, name)
        # Read once: each (method, job, seed) is visited once a run, so no record added below
        # can change what is done.
        records = read_run_records(cfg.output)
        done = {EvalKey.of(r) for r in records if r["protocol"] == cfg.protocol}
        # Evaluations another protocol of this folder already made (the shared ImageNet source
        # model of cross-dataset and domain generalization; zero-shot CLIP anywhere), reused.
        self.reusable.clear()
        for r in records:
            if r.get("eval_precision", "fp32") == self.runtime.eval_precision:
                self.reusable.setdefault(EvalKey.of(r).reuse(), r)
        for method, job, seed in tasks:
            self._check_stop()
            self._run_job(method, job, seed, results_path, done)
        if cfg.parallel == "jobs" and shard_count > 1 and cfg.shard is None:
            _jobs_barrier()  # torchrun: the tables once every rank has finished its jobs
        records = read_run_records(cfg.output)
        tables = {}
        # one process makes the tables: rank 0 (under torchrun, in either mode) or each job-array shard
        if self.runtime.is_main and launch_ranks()[0] == 0:
            tables = write_tables(records, cfg.output)
            if cfg.protocol in tables:
                self.echo(tables[cfg.protocol].markdown())
            self.echo(f"files in {cfg.output}/: results-{cfg.protocol}.md/.csv (tables), results*.jsonl (one record "
                      f"per evaluation), <method>/<dataset>-<classes>/seed<k>/ (adapter, metrics.jsonl, done.json); "
                      f"charts: glad report {cfg.output} --plot")
        self.runtime.barrier()
        return tables

    def job_dir(self, method, job: Job, seed: int) -> str:
        name = f"{self.labels[job.train_dataset]}-{job.classes}"
        if self.cfg.protocol == "few-shot":  # one folder per shot count
            name += f"-{job.shots}shot"
        return os.path.join(self.cfg.output, method.name, name, f"seed{seed}")

    def _run_job(self, method, job: Job, seed: int, results_path: str, done: set) -> None:
        cfg, runtime = self.cfg, self.runtime
        train_label = self.labels[job.train_dataset]
        keys = {(e, s): EvalKey(method.name, train_label, self.labels[e], s, seed, job.shots) for e, s in job.evals}
        todo = [(e, s) for e, s in job.evals if keys[e, s] not in done]
        if not todo:
            log.info("%s %s seed %d: done, skipped", method.name, train_label, seed)
            return
        fresh = []
        for eval_name, split in todo:
            # decided by the key, which every rank holds (only rank 0 holds the record itself), so
            # all ranks take the same path and their collectives stay matched
            reuse_key = keys[eval_name, split].reuse()
            if reuse_key not in self.reusable:
                fresh.append((eval_name, split))
            elif runtime.is_main:  # the same model on the same images: its record, not a new pass
                earlier = self.reusable[reuse_key]
                self._record(results_path, {**earlier, "protocol": cfg.protocol, "train_dataset": train_label,
                                            "seed": seed, "shots": job.shots, "eval_seconds": 0.0,
                                            "reused_from": {k: earlier[k] for k in ("protocol", "seed")},
                                            "config": cfg.to_dict(), **_provenance()})
        if not fresh:
            return
        job_dir = self.job_dir(method, job, seed)
        model = self.build_model(method, seed)
        extra = {}
        if method.train:
            extra = self._train_or_load(model, method, job, seed, job_dir)
        transform = model.preprocess.test_transform()
        for eval_name, split in fresh:
            self._check_stop()
            data = self.dataset(eval_name)
            if split != "all":
                data = subsample_classes(data, split)
            record = None
            start = time.perf_counter()
            # every rank evaluates its shard; rank 0 writes the record
            res = evaluate(model, data.test, data.classnames, cfg.template or data.template, transform,
                           runtime, batch_size=cfg.eval_batch_size, workers=self.workers,
                           stop_flag=self.stop_flag, prepared=self.prepared_test(eval_name, split, data.test))
            if runtime.world_size > 1:
                log.info("rank %d evaluated %d of %d images of %s [%s]", runtime.rank,
                         res["shard_sizes"][runtime.rank], res["num_samples"], self.labels[eval_name], split)
            if runtime.is_main:
                record = {"protocol": cfg.protocol, "method": method.name, "train_dataset": train_label,
                          "eval_dataset": self.labels[eval_name], "split": split, "seed": seed,
                          "shots": job.shots, "model": cfg.model, "pretrained": cfg.pretrained,
                          "quick_gelu": uses_quick_gelu(model.clip), "eval_precision": runtime.eval_precision,
                          **extra, **res, "eval_seconds": round(time.perf_counter() - start, 3),
                          "config": cfg.to_dict(), **_provenance()}
                self._record(results_path, record, job_dir if method.train else None)
            # every rank knows the key (only rank 0 holds the record): all take the same path
            self.reusable[keys[eval_name, split].reuse()] = record
            runtime.barrier()

    def _record(self, results_path: str, record: dict, job_dir: str | None = None) -> None:
        line = json.dumps(record, sort_keys=True)
        append_line(results_path, line)
        if job_dir is not None:
            append_line(os.path.join(job_dir, "results.jsonl"), line)
        reused = " (reused)" if "reused_from" in record else ""
        self.echo(f"{record['method']:>14} | {record['train_dataset']} -> {record['eval_dataset']} "
                  f"[{record['split']}] seed {record['seed']}: {record['accuracy']:.2f}% of "
                  f"{record['num_samples']}{reused}")

    def _train_or_load(self, model, method, job: Job, seed: int, job_dir: str) -> dict:
        """Train the job (or load its finished adapter); returns what its records carry."""
        cfg, runtime = self.cfg, self.runtime
        adapter = os.path.join(job_dir, "adapter")
        data = fewshot(self.dataset(job.train_dataset), job.shots, seed)
        if job.classes != "all":
            data = subsample_classes(data, job.classes)
        short = short_classes(data.train, data.classnames, job.shots)
        extra = {"short_classes": short}
        if os.path.exists(os.path.join(job_dir, "done.json")):
            load_adapter(model, adapter)
            return extra
        if short and runtime.is_main:
            listed = ", ".join(f"{name} ({n})" for name, n in list(short.items())[:10])
            log.warning("%s: %d class(es) have fewer than %d training images and train on what they have: %s%s",
                        self.labels[job.train_dataset], len(short), job.shots, listed,
                        " ..." if len(short) > 10 else "")
        start = time.perf_counter()
        crop_scale = cfg.crop_scale or data.info.get("crop_scale") or (0.08, 1.0)
        stats = train(model, method, cfg, data.train, data.classnames, cfg.template or data.template,
                      model.preprocess.train_transform(tuple(crop_scale)), seed, job_dir, runtime,
                      stop_flag=self.stop_flag)
        if runtime.is_main:
            save_adapter(model, adapter, classnames=data.classnames, template=cfg.template or data.template,
                         template_override=cfg.template)
            job_config = {"config": cfg.to_dict(), "method": method.name, "train_dataset": job.train_dataset,
                          "classes": job.classes, "seed": seed, "resolved": self.resolved(), **_provenance()}
            atomic_write_text(os.path.join(job_dir, "config.json"), json.dumps(job_config, indent=2, sort_keys=True))
            stats["train_seconds"] = round(time.perf_counter() - start, 3)
            stats["short_classes"] = short
            atomic_write_text(os.path.join(job_dir, "done.json"), json.dumps(stats, indent=2))
            shutil.rmtree(os.path.join(job_dir, "checkpoints"), ignore_errors=True)
        runtime.barrier()
        return extra


def job_shard(cfg: TrainConfig) -> tuple[int, int]:
    """(index, count) of this process's share of the plan: `--shard I/N` (0 <= I < N, e.g. a SLURM
    array task), or under torchrun with `--parallel jobs` its rank of the world; else (0, 1)."""
    if cfg.shard is not None:
        index, count = (int(x) for x in cfg.shard.split("/"))
        return index, count
    if cfg.parallel == "jobs":
        return launch_ranks()[:2]
    return 0, 1


def _jobs_barrier() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")  # only to wait for each other: no tensors cross
    dist.barrier()


def read_run_records(folder: str) -> list[dict]:
    """Every record of an output folder: results.jsonl and the job shards' results files."""
    import glob

    records = read_records(os.path.join(folder, "results.jsonl"))
    for path in sorted(glob.glob(os.path.join(folder, "results-shard*-of-*.jsonl"))):
        records += read_records(path)
    return records


class EvalKey(NamedTuple):
    """One evaluation of a run: a results record's identity within its protocol."""

    method: str
    train_dataset: str
    eval_dataset: str
    split: str
    seed: int
    shots: int

    @classmethod
    def of(cls, record: dict) -> EvalKey:
        return cls(record["method"], record["train_dataset"], record["eval_dataset"], record["split"],
                   record["seed"], record.get("shots", 16))

    def reuse(self) -> tuple:
        """What the result depends on: zero-shot CLIP only on the images and classes; a trained
        adapter also on what it was trained on (dataset, classes, seed, shots)."""
        method = METHODS.get(self.method)
        if method is not None and not method.train:
            return (self.method, self.eval_dataset, self.split)
        return tuple(self)


def short_classes(items, classnames, shots: int) -> dict[str, int]:
    """Classes of a few-shot training set holding fewer than `shots` images: {class name: count}."""
    counts = [0] * len(classnames)
    for item in items:
        counts[item.label] += 1
    return {classnames[i]: n for i, n in enumerate(counts) if n < shots}


def run_protocol(cfg: TrainConfig, resume: bool = False, echo=print, stop_flag=lambda: False):
    """Run `cfg.protocol` for every method, dataset and seed; returns the tables printed.

    `stop_flag()` turning true stops the run after the current step (with a checkpoint) or
    between evaluations, raising StopRequested; `--resume` continues it.
    """
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {cfg.protocol!r}")
    return Runner(cfg, resume=resume, echo=echo, stop_flag=stop_flag).run()
