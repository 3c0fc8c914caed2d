"""The smaller benchmarks (gradreg, alignnet, text, host) and the benchmarks/ entry points, on tiny
sizes: each runs through the CLI, writes the report it prints, and its table states its clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from engine_fixtures import TINY_MODEL
from glad_cli.main import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(tmp_path, *args):
    out = tmp_path / "report.json"
    res = CliRunner().invoke(cli, ["bench", *args, "--quiet", "--output", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text()), res.output


def test_gradreg_splits_the_step_into_closure_base_and_added(tiny, tmp_path):
    report, table = _bench(tmp_path, "gradreg", "--quick", "--backends", "reference", "--model", TINY_MODEL)
    entry = report["backends"]["reference"]
    for workload in ("adapter", "model"):
        for row in entry[workload]["modes"].values():
            assert row["step_ms"] >= row["closure_ms"] > 0 and row["base_step_ms"] > 0
            assert row["outside_ms"] == pytest.approx(row["added_ms"] + row["base_step_ms"])
    assert entry["adapter"]["meta"] == {"tensors": 150, "values": 1_098_624}
    assert entry["model"]["meta"]["model"] == TINY_MODEL
    assert "clock: process CPU time" in table and "gradreg+flat" in table


def test_alignnet_fused_agrees_with_naive_in_less_memory(tmp_path):
    report, table = _bench(tmp_path, "alignnet", "--batch", "16", "--classes", "64", "--dim", "32", "--repeats",
                           "1", "--budget", "1")
    rows = report["rows"]
    assert [(r["mode"], r["provider"]) for r in rows] == [("infer", "naive"), ("infer", "fused"),
                                                           ("train", "naive"), ("train", "fused")]
    for r in rows:
        assert r["seconds"] > 0 and r["max_abs_diff_vs_naive"] < 1e-3
    assert "clock: CPU time of the timing thread" in table and "fused, 1 MiB budget" in table


def test_text_trim_changes_no_feature(tiny, tmp_path):
    report, table = _bench(tmp_path, "text", "--classes", "3,7", "--repeats", "1", "--model", TINY_MODEL)
    for r in report["rows"]:
        assert r["tokens_trimmed"] < r["tokens_full"] and r["max_abs_diff"] < 1e-5
        assert r["speedup"] == pytest.approx(r["full_s"] / r["trimmed_s"])
    bad = CliRunner().invoke(cli, ["bench", "text", "--classes", "ten"])
    assert bad.exit_code != 0 and "comma list of integers" in bad.output


def test_host_times_every_call(tiny, tmp_path):
    report, table = _bench(tmp_path, "host", "--model", TINY_MODEL, "--calls", "6", "--repeats", "1")
    results = report["results"]
    assert {"project_reference", "perturb_restore_reference", "teacher_switch_walking_the_model",
            "teacher_switch_collected_once"} <= set(results)
    assert all(v > 0 for v in results.values()) and report["unit"] == "us per call"
    assert "clock: wall time" in table


def test_backbones_times_lora_and_glad_on_each_model(tiny, tmp_path):
    report, table = _bench(tmp_path, "backbones", "--model", TINY_MODEL, "--model", "glad-tiny", "--rounds", "1",
                           "--warmup", "0", "--batch-size", "2", "--num-classes", "2", "--device", "cpu")
    assert list(report["models"]) == [TINY_MODEL, "glad-tiny"]
    for m in report["models"].values():
        lora, glad = m["methods"]["lora"], m["methods"]["glad"]
        assert lora["ratio_to_lora"] == 1.0 and glad["ratio_to_lora"] == glad["median_ms"] / lora["median_ms"]
    assert TINY_MODEL in table and "glad/lora" in table


@pytest.mark.parametrize("name", ["ops", "train", "eval", "data", "gradreg", "alignnet", "text", "host", "world",
                                  "backbones"])
def test_every_benchmark_script_is_its_glad_bench_command(name):
    script = os.path.join(ROOT, "benchmarks", f"bench_{name}.py")
    res = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"Usage: glad bench {name}" in res.stdout and "--output" in res.stdout


def test_benchmark_scripts_hold_no_logic():
    # benchmarks/ holds entry points and results; the code lives in glad/bench/
    for entry in sorted(os.listdir(os.path.join(ROOT, "benchmarks"))):
        if entry.endswith(".py"):
            with open(os.path.join(ROOT, "benchmarks", entry), encoding="utf-8") as f:
                code = [line for line in f if line.strip() and not line.lstrip().startswith(("#", '"""'))]
            assert len(code) <= 4, (entry, code)


def test_data_rates_beside_the_models(tiny, tmp_path):
    report, table = _bench(tmp_path, "data", "--images", "8", "--workers", "0", "--model", TINY_MODEL,
                           "--model-batch", "2", "--rounds", "1")
    assert [r["jpeg"] for r in report["loaders"]] == ["500x375", "1024x768"]
    for r in report["loaders"]:
        assert min(r["train_every_epoch"], r["train_decoded_once"], r["eval_streamed"], r["eval_prepared"]) > 0
    assert report["models"][0]["model"] == TINY_MODEL and report["models"][0]["train_step"] > 0
    assert "clock: wall time" in table and "| 1024x768 | 0 |" in table


def test_world_zero_shot_against_chance(tmp_path, monkeypatch):
    monkeypatch.setenv("GLAD_CACHE", str(tmp_path / "cache"))
    report, table = _bench(tmp_path, "world", "--budget", "test")
    rows = report["rows"]
    assert {r["protocol"] for r in rows} == {"base-to-novel", "cross-dataset", "domain-generalization"}
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and r["chance"] == pytest.approx(1 / r["n_classes"])
        assert r["x_chance"] == pytest.approx(r["accuracy"] / r["chance"])
    assert report["pretrain"]["cached"] is False and "| base-to-novel |" in table
