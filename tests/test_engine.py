"""End to end: each protocol and method on miniature CoOp data and a tiny open_clip model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from click.testing import CliRunner
from engine_fixtures import PYTHON, base_flags, write_launcher
from glad_cli.main import cli
from safetensors.torch import load_file

from glad.engine.results import harmonic_mean, read_records


def _train(*args, env=None):
    result = CliRunner().invoke(cli, ["train", *args], env=env, catch_exceptions=False)
    return result


def test_base_to_novel_table_and_records(tiny, coop_root, tmp_path):
    out = tmp_path / "b2n"
    res = _train(*base_flags(coop_root, out), "--dataset", "oxford_pets", "--dataset", "dtd",
                 "--method", "zeroshot", "--method", "lora", "--method", "glad", "--seeds", "1", "--seeds", "2")
    assert res.exit_code == 0, res.output
    records = read_records(str(out / "results.jsonl"))
    assert len(records) == 3 * 2 * 2 * 2  # methods x datasets x splits x seeds
    md = (out / "results-base-to-novel.md").read_text()
    assert "| Dataset | Method | Base | Novel | HM | Seeds |" in md
    # HM is that of the seed-averaged base and novel accuracies.
    for method in ("zeroshot", "glad"):
        base = [r["accuracy"] for r in records if r["method"] == method and r["eval_dataset"] == "dtd"
                and r["split"] == "base"]
        novel = [r["accuracy"] for r in records if r["method"] == method and r["eval_dataset"] == "dtd"
                 and r["split"] == "novel"]
        hm = harmonic_mean(sum(base) / 2, sum(novel) / 2)
        # grouped by dataset: oxford_pets' rows, then dtd's, then the averages
        rows = [line for line in md.splitlines() if line.count("|") > 2 and line.split("|")[2].strip() == method]
        row = rows[1]
        assert float(row.split("|")[5]) == pytest.approx(hm, abs=0.006)
    assert sum(line.startswith("| Average |") for line in md.splitlines()) == 1
    job = out / "glad" / "dtd-base" / "seed1"
    assert (job / "adapter" / "adapter_model.safetensors").exists() and (job / "done.json").exists()
    assert json.loads((job / "config.json").read_text())["config"]["lora_r"] == 8
    assert not (job / "checkpoints").exists()
    csv_text = (out / "results-base-to-novel.csv").read_text()
    assert csv_text.startswith("Dataset,Method,Base,Base std,Novel,Novel std,HM,Seeds")
    # A rerun skips every completed (dataset, seed) and rewrites nothing it had.
    before = (out / "results.jsonl").read_text()
    res = _train(*base_flags(coop_root, out), "--dataset", "oxford_pets", "--dataset", "dtd",
                 "--method", "zeroshot", "--method", "lora", "--method", "glad", "--seeds", "1", "--seeds", "2")
    assert res.exit_code == 0 and (out / "results.jsonl").read_text() == before


@pytest.mark.parametrize("method", ["lora-sam", "lora-gradreg", "lora-alignnet"])
def test_each_ablation_method_trains(tiny, coop_root, tmp_path, method):
    out = tmp_path / method
    res = _train(*base_flags(coop_root, out, **{"--epochs": 1}), "--dataset", "oxford_pets", "--method", method,
                 "--seed", "1")
    assert res.exit_code == 0, res.output
    assert {r["split"] for r in read_records(str(out / "results.jsonl"))} == {"base", "novel"}


def test_cross_dataset_then_domain_generalization_share_the_source_model(tiny, coop_root, tmp_path):
    out = tmp_path / "transfer"
    res = _train(*base_flags(coop_root, out), "--protocol", "cross-dataset", "--dataset", "imagenet",
                 "--dataset", "dtd", "--dataset", "eurosat", "--method", "glad", "--seed", "1")
    assert res.exit_code == 0, res.output
    done = out / "glad" / "imagenet-all" / "seed1" / "done.json"
    stamp = done.stat().st_mtime_ns
    res = _train(*base_flags(coop_root, out), "--protocol", "domain-generalization", "--dataset", "imagenet",
                 "--dataset", "imagenet_a", "--method", "glad", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert done.stat().st_mtime_ns == stamp  # trained once, reused
    dg_source = [r for r in read_records(str(out / "results.jsonl"))
                 if r["protocol"] == "domain-generalization" and r["eval_dataset"] == "imagenet"]
    assert len(dg_source) == 1 and dg_source[0]["reused_from"]["protocol"] == "cross-dataset"
    xd = (out / "results-cross-dataset.md").read_text()
    assert "| Method | imagenet (source) | dtd | eurosat | Target average |" in xd
    dg = (out / "results-domain-generalization.md").read_text()
    assert "imagenet_a" in dg and "dtd" not in dg
    records = read_records(str(out / "results.jsonl"))
    a = next(r for r in records if r["eval_dataset"] == "imagenet_a")
    assert a["num_samples"] == 2 * 2  # only the class folders present are classes


@pytest.mark.parametrize("args,message", [
    (["--dataset", "no_such_set"], "no_such_set"),
    (["--protocol", "few-shots"], "few-shots"),
    (["--shots", "1", "--shots", "4"], "--protocol few-shot"),
    (["--method", "coop"], "coop"),
    (["--gradreg-alpha", "1.5"], "--gradreg-alpha"),
    (["--rho", "-1"], "--rho"),
    (["--shots", "0"], "--shots"),
    (["--dataset", "food101"], "food-101"),  # missing data: names the folder expected
])
def test_bad_input_is_one_clear_line(tiny, coop_root, tmp_path, args, message):
    out = tmp_path / "bad"
    res = CliRunner().invoke(cli, ["train", *base_flags(coop_root, out), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists(), "a rejected run must write nothing"


def test_output_holding_other_settings_is_refused(tiny, coop_root, tmp_path):
    out = tmp_path / "run"
    flags = base_flags(coop_root, out, **{"--epochs": 1})
    assert _train(*flags, "--dataset", "oxford_pets", "--method", "lora", "--seed", "1").exit_code == 0
    before = (out / "results.jsonl").read_text()
    res = CliRunner().invoke(cli, ["train", *flags, "--lr", "0.5", "--dataset", "oxford_pets", "--method", "lora",
                                   "--seed", "1"])
    assert res.exit_code == 2 and "other settings" in res.output and "lr" in res.output
    assert (out / "results.jsonl").read_text() == before


def test_missing_weights_file_is_a_clear_error(tiny, coop_root, tmp_path):
    res = CliRunner().invoke(cli, ["train", *base_flags(coop_root, tmp_path / "w", **{"--pretrained":
                                   str(tmp_path / "nope.safetensors")}), "--dataset", "oxford_pets"])
    assert res.exit_code == 2 and "nope.safetensors" in res.output


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_adapter_and_results(tiny, coop_root, tmp_path):
    launcher = write_launcher(tmp_path, tiny)
    flags = base_flags(coop_root, tmp_path / "x", **{"--epochs": 20, "--checkpoint-every": 1}) + [
        "--dataset", "oxford_pets", "--method", "glad", "--seed", "3", "--deterministic"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(output, resume=False):
        args = [PYTHON, str(launcher), "train", *flags, "--output", str(output)] + (["--resume"] if resume else [])
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)

    ref = tmp_path / "ref"
    assert run(ref).returncode == 0
    killed = tmp_path / "killed"
    args = [PYTHON, str(launcher), "train", *flags, "--output", str(killed)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "glad" / "oxford_pets-base" / "seed3" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # right after a checkpoint, mid-training
    proc.wait()
    assert not (latest.parent.parent / "done.json").exists(), "the job finished before the kill"
    unfinished = CliRunner().invoke(cli, ["train", *flags, "--output", str(killed)])
    assert unfinished.exit_code == 2 and "--resume" in unfinished.output
    assert run(killed, resume=True).returncode == 0
    job = "glad/oxford_pets-base/seed3/adapter/adapter_model.safetensors"
    a, b = load_file(str(ref / job)), load_file(str(killed / job))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    acc = lambda p: sorted((r["split"], r["accuracy"]) for r in read_records(str(p / "results.jsonl")))  # noqa: E731
    assert acc(ref) == acc(killed)


def _one_process_then_two(launcher, flags, tmp_path, parallel: str = "data"):
    """`glad train flags` in one process into tmp_path/one, then under torchrun with 2 gloo
    ranks (`--parallel parallel`) into tmp_path/two; returns the torchrun run (both asserted
    to succeed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([PYTHON, str(launcher), "train", *flags, "--output", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(launcher), "train", *flags, "--parallel", parallel, "--output", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    return two


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny, coop_root, tmp_path):
    launcher = write_launcher(tmp_path, tiny)
    flags = base_flags(coop_root, tmp_path / "x", **{"--epochs": 2}) + [
        "--dataset", "oxford_pets", "--method", "glad", "--seed", "1"]
    two = _one_process_then_two(launcher, flags, tmp_path)
    job = "glad/oxford_pets-base/seed1/adapter/adapter_model.safetensors"
    a, b = load_file(str(tmp_path / "one" / job)), load_file(str(tmp_path / "two" / job))
    assert a.keys() == b.keys()
    # The same global batches; only the order of float sums differs (all-reduce). AdamW's
    # normalised steps turn those last-bit differences into ~1e-5 weight differences.
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-4, rtol=1e-3, msg=k)
    acc = lambda p: sorted((r["split"], r["accuracy"]) for r in read_records(str(p / "results.jsonl")))  # noqa: E731
    assert acc(tmp_path / "one") == acc(tmp_path / "two")
    # evaluation is shared by the ranks: each evaluated its shard, together every image once
    for r in read_records(str(tmp_path / "two" / "results.jsonl")):
        assert len(r["shard_sizes"]) == 2 and sum(r["shard_sizes"]) == r["num_samples"]
        assert r["shard_sizes"][1] > 0
    assert "rank 1 evaluated" not in two.stderr  # only rank 0 tells progress


def test_config_file_gives_defaults_and_flags_win(tiny, coop_root, tmp_path):
    out = tmp_path / "cfg"
    cfg = tmp_path / "run.yaml"
    cfg.write_text("epochs: 1\nkl-weight: 0.5\nmethods: [lora]\nseeds: [2]\n")
    res = _train(*base_flags(coop_root, out), "--config", str(cfg), "--dataset", "dtd", "--method", "zeroshot")
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["kl_weight"] == 0.5 and saved["seeds"] == [2] and saved["methods"] == ["zeroshot"]
    assert saved["epochs"] == 2  # base_flags passes --epochs 2 explicitly: the flag wins
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1\n")
    res = CliRunner().invoke(cli, ["train", *base_flags(coop_root, tmp_path / "b"), "--config", str(bad)])
    assert res.exit_code == 2 and "learning_rate" in res.output


def test_eval_and_report_rebuild(tiny, coop_root, tmp_path):
    out = tmp_path / "r"
    assert _train(*base_flags(coop_root, out, **{"--epochs": 1}), "--dataset", "dtd", "--method", "glad",
                  "--seed", "1").exit_code == 0
    adapter = out / "glad" / "dtd-base" / "seed1" / "adapter"
    res = CliRunner().invoke(cli, ["eval", "--adapter", str(adapter), "--dataset", "dtd", "--split", "novel",
                                   "--data-root", str(coop_root), "--device", "cpu", "--workers", "0", "--json"])
    assert res.exit_code == 0, res.output
    evaluated = json.loads(res.output)[0]
    recorded = next(r for r in read_records(str(out / "results.jsonl")) if r["split"] == "novel")
    assert evaluated["accuracy"] == pytest.approx(recorded["accuracy"])
    (out / "results.md").unlink()
    res = CliRunner().invoke(cli, ["report", str(out), "--plot"])
    assert res.exit_code == 0, res.output
    assert (out / "results.md").read_text().startswith("### Base-to-novel")
    assert (out / "results-base-to-novel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "results.jsonl" in res.output


@pytest.mark.slow
def test_builtin_default_runs_offline_end_to_end(tmp_path):
    """No dataset and no model: glad-tiny (test budget) on the built-in world, table printed."""
    env = {"GLAD_CACHE": str(tmp_path / "cache"), "GLAD_TINY_BUDGET": "test"}
    out = tmp_path / "builtin"
    res = _train("--output", str(out), "--epochs", "1", "--seeds", "1", "--max-iters", "3", env=env)
    assert res.exit_code == 0, res.output
    assert "| world_shapes | zeroshot |" in res.output and "| world_scenes | zeroshot |" in res.output
    assert "|  | glad |" in res.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["model"] == "glad-tiny" and saved["methods"] == ["zeroshot", "lora", "glad"]
    done = json.loads(next(out.glob("glad/*/seed1/done.json")).read_text())
    assert done["steps"] == 3 and done["epochs_planned"] == 1 and 0 < done["epochs"] < 1  # cut by --max-iters


def test_few_shot_protocol_on_a_coop_root(tiny, coop_root, tmp_path):
    out = tmp_path / "fewshot"
    flags = base_flags(coop_root, out, **{"--epochs": 1})
    del flags[flags.index("--shots"):flags.index("--shots") + 2]
    res = _train(*flags, "--protocol", "few-shot", "--dataset", "dtd",
                 "--dataset", "oxford_pets", "--shots", "1", "--shots", "2", "--method", "zeroshot",
                 "--method", "lora", "--seeds", "1", "--seeds", "2")
    assert res.exit_code == 0, res.output
    records = read_records(str(out / "results.jsonl"))
    lora = [r for r in records if r["method"] == "lora"]
    assert sorted({(r["eval_dataset"], r["shots"], r["seed"]) for r in lora}) == [
        (d, k, s) for d in ("dtd", "oxford_pets") for k in (1, 2) for s in (1, 2)]
    assert all(r["split"] == "all" and r["num_samples"] in (12, 15) for r in records)  # full test split
    for k in (1, 2):
        done = json.loads((out / "lora" / f"dtd-all-{k}shot" / "seed1" / "done.json").read_text())
        assert done["short_classes"] == {}  # 4 training images a class on disk
    md = (out / "results-few-shot.md").read_text()
    assert "| Dataset | Method | 1 shot | 2 shots |" in md and "| dtd | zeroshot |" in md
    # zero-shot CLIP is evaluated once per dataset and recorded for every seed and shot count
    zs = [r for r in records if r["method"] == "zeroshot"]
    assert len(zs) == 2 * 2 * 2 and sum("reused_from" not in r for r in zs) == 2
    assert len({r["accuracy"] for r in zs if r["eval_dataset"] == "dtd"}) == 1
    assert all(r["eval_precision"] == "fp32" for r in records)  # CPU default
    res = CliRunner().invoke(cli, ["report", str(out), "--plot"])
    assert res.exit_code == 0, res.output
    assert (out / "results-few-shot.png").read_bytes()[:4] == b"\x89PNG"


def test_few_shot_demo_on_the_builtin_world(tmp_path):
    env = {"GLAD_CACHE": str(tmp_path / "cache"), "GLAD_TINY_BUDGET": "test"}
    out = tmp_path / "demo"
    res = _train("--demo", "--protocol", "few-shot", "--output", str(out), "--epochs", "1", "--seeds", "1",
                 "--max-iters", "2", "--shots", "1", "--shots", "4", "--method", "lora", env=env)
    assert res.exit_code == 0, res.output
    records = read_records(str(out / "results.jsonl"))
    assert {(r["eval_dataset"], r["shots"]) for r in records} == {
        (d, k) for d in ("world_shapes", "world_scenes") for k in (1, 4)}
    assert "| world_shapes | lora |" in res.output


def test_training_metrics_per_step_and_their_curves(tiny, coop_root, tmp_path):
    from glad.engine.metrics import FIELDS, read_metrics

    out = tmp_path / "metrics"
    res = _train(*base_flags(coop_root, out), "--dataset", "dtd", "--method", "glad", "--method", "lora",
                 "--seed", "1")
    assert res.exit_code == 0, res.output
    job = out / "glad" / "dtd-base" / "seed1"
    rows = read_metrics(str(job / "metrics.jsonl"))
    done = json.loads((job / "done.json").read_text())
    assert [r["step"] for r in rows] == list(range(1, done["steps"] + 1))
    for r in rows:
        assert set(FIELDS) <= set(r) and r["lr"] > 0 and r["skipped"] is False
        assert r["loss"] > 0 and r["perturbed_loss"] > 0 and r["grad_norm"] > 0 and r["perturbed_grad_norm"] > 0
        assert -1.0 <= r["cos"] <= 1.0 and isinstance(r["projected"], bool)
        assert r["projected"] == (r["cos"] < 0)
        assert r["loss"] == pytest.approx(r["ce"] + r["kl"], rel=1e-4)  # kl weight 1
    summary = done["metrics"]
    assert summary["steps"] == len(rows) and len(summary["epochs"]) == 2
    assert summary["conflict_rate"] == pytest.approx(sum(r["projected"] for r in rows) / len(rows), abs=1e-4)
    lora = read_metrics(str(out / "lora" / "dtd-base" / "seed1" / "metrics.jsonl"))
    assert lora and all(r["perturbed_loss"] is None and r["cos"] is None and r["kl"] == 0 for r in lora)
    res = CliRunner().invoke(cli, ["report", str(out), "--plot"])
    assert res.exit_code == 0, res.output
    assert (out / "training.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluation_shards_cover_every_image_once():
    from glad.engine.evaluate import shard
    from glad.engine.runtime import Runtime

    items = list(range(10))
    for world in (1, 2, 3, 4, 11):
        parts = [shard(items, Runtime(device=torch.device("cpu"), rank=r, world_size=world)) for r in range(world)]
        assert sorted(i for p in parts for i in p) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _records_by_key(folder):
    from glad.engine.runner import read_run_records

    return {(r["method"], r["eval_dataset"], r["split"], r["seed"]): r["accuracy"] for r in read_run_records(str(folder))}


def test_job_parallel_torchrun_and_shards_equal_one_process(tiny, coop_root, tmp_path):
    launcher = write_launcher(tmp_path, tiny)
    flags = base_flags(coop_root, tmp_path / "x", **{"--epochs": 2}) + [
        "--dataset", "oxford_pets", "--dataset", "dtd", "--method", "lora", "--method", "glad", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([PYTHON, str(launcher), "train", *flags, "--output", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(launcher), "train", *flags, "--parallel", "jobs", "--output", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    want = _records_by_key(tmp_path / "one")
    assert _records_by_key(tmp_path / "two") == want and len(want) == 2 * 2 * 2
    # the jobs were dealt out: (lora, pets), (glad, pets) to rank 0; (lora, dtd), (glad, dtd) to rank 1
    shard = {i: read_records(str(tmp_path / "two" / f"results-shard{i}-of-2.jsonl")) for i in (0, 1)}
    assert {(r["method"], r["train_dataset"]) for r in shard[0]} == {("lora", "oxford_pets"), ("glad", "oxford_pets")}
    assert {(r["method"], r["train_dataset"]) for r in shard[1]} == {("lora", "dtd"), ("glad", "dtd")}
    table = (tmp_path / "one" / "results-base-to-novel.md").read_text()
    assert (tmp_path / "two" / "results-base-to-novel.md").read_text() == table
    # the same plan as a job array: --shard I/N, any order, then glad report merges
    for i in (1, 0):
        res = subprocess.run([PYTHON, str(launcher), "train", *flags, "--shard", f"{i}/2", "--output",
                              str(tmp_path / "array")], capture_output=True, text=True, env=env, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
    assert _records_by_key(tmp_path / "array") == want
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "array")])
    assert res.exit_code == 0 and (tmp_path / "array" / "results-base-to-novel.md").read_text() == table


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def test_a_killed_rank_is_restarted_by_torchrun_and_resumes(tiny, coop_root, tmp_path):
    launcher = write_launcher(tmp_path, tiny)
    flags = base_flags(coop_root, tmp_path / "x", **{"--epochs": 40, "--checkpoint-every": 3}) + [
        "--dataset", "oxford_pets", "--dataset", "dtd", "--method", "lora", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([PYTHON, str(launcher), "train", *flags, "--output", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    out = tmp_path / "elastic"
    proc = subprocess.Popen([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "--max-restarts", "1", str(launcher), "train", *flags, "--parallel", "jobs",
                             "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline, killed = time.time() + 300, False
    while time.time() < deadline and proc.poll() is None and not killed:
        checkpoints = list(out.glob("lora/dtd-base/seed1/checkpoints/step-*"))
        if checkpoints:  # rank 1 (dtd) is mid-training: kill it
            workers = _children(proc.pid)
            if len(workers) == 2:
                os.kill(max(workers), signal.SIGKILL)
                killed = True
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=600)
    assert killed, "the run ended before a checkpoint could be killed"
    assert proc.returncode == 0, stderr[-3000:]
    assert _records_by_key(out) == _records_by_key(tmp_path / "one")


@pytest.mark.slow
def test_builtin_transfer_demos_share_their_source_model(tmp_path):
    """The README's `glad train --demo --protocol cross-dataset`, then domain-generalization."""
    env = {"GLAD_CACHE": str(tmp_path / "cache"), "GLAD_TINY_BUDGET": "test"}
    out = tmp_path / "transfer"
    budget = ["--output", str(out), "--epochs", "1", "--seeds", "1", "--max-iters", "2", "--method", "lora"]
    res = _train("--demo", "--protocol", "cross-dataset", *budget, env=env)
    assert res.exit_code == 0, res.output
    assert "| Method | world_shapes (source) | world_textures | world_colours | world_counts |" in res.output
    res = _train("--demo", "--protocol", "domain-generalization", *budget, env=env)
    assert res.exit_code == 0, res.output
    records = read_records(str(out / "results.jsonl"))
    dg = [r for r in records if r["protocol"] == "domain-generalization"]
    assert {r["eval_dataset"] for r in dg} == {"world_shapes", "world_sketch", "world_noisy", "world_palette"}
    assert next(r for r in dg if r["eval_dataset"] == "world_shapes")["reused_from"]["protocol"] == "cross-dataset"


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["data", "jobs"])
def test_torchrun_zeroshot_over_several_seeds_reuses_on_every_rank(tiny, coop_root, tmp_path, parallel):
    """zero-shot is evaluated once for all seeds: every rank must decide so, or the ranks'
    collectives no longer match (each rank used to decide from a record only rank 0 holds)."""
    launcher = write_launcher(tmp_path, tiny)
    flags = base_flags(coop_root, tmp_path / "x") + ["--dataset", "oxford_pets", "--method", "zeroshot",
                                                     "--seeds", "1", "--seeds", "2", "--seeds", "3"]
    _one_process_then_two(launcher, flags, tmp_path, parallel)
    key = lambda r: (r["seed"], r["split"], r["accuracy"])  # noqa: E731
    records = {p: sorted(map(key, _all_records(tmp_path / p))) for p in ("one", "two")}
    assert records["one"] == records["two"] and len(records["one"]) == 6
    if parallel == "data":  # one run over both ranks: seeds 2 and 3 reuse seed 1's, base and novel
        assert sum("reused_from" in r for r in _all_records(tmp_path / "two")) == 4


def _all_records(folder):
    return [r for f in sorted(os.listdir(folder)) if f.startswith("results") and f.endswith(".jsonl")
            for r in read_records(str(folder / f))]


@pytest.mark.slow
def test_torchrun_refuses_a_training_set_that_cannot_split_over_the_ranks(tiny, tmp_path):
    from data_fixtures import make_imagefolder

    launcher = write_launcher(tmp_path, tiny)
    folder = make_imagefolder(tmp_path / "three", per_class=1, splits=("train", "test"), classnames=["a", "b", "c"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(launcher), "train", "--dataset", f"imagefolder:{folder}", "--model", "glad-test-tiny",
                          "--pretrained", "none", "--method", "lora", "--seed", "1", "--batch-size", "4",
                          "--workers", "0", "--device", "cpu", "--output", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode != 0
    lines = [x for x in res.stderr.splitlines() if x.startswith("glad: error:")]
    assert lines and all("does not split evenly over 2 processes" in x for x in lines), res.stderr[-2000:]
    # torchrun prints its own ChildFailedError for a failed rank; glad's code raised nothing
    assert "glad/engine" not in res.stderr and "glad/models" not in res.stderr
