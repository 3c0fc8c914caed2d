"""`glad bench train` / `glad bench eval`: report structure on a tiny model (no timing asserted)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from engine_fixtures import TINY_MODEL
from glad_cli.main import cli

from glad.bench import train as train_bench
from glad.bench.eval import VARIANTS as EVAL_VARIANTS
from glad.bench.memory import state_bytes, transient_peak_bytes
from glad.bench.timing import Clock, PartTimers, patched
from glad.bench.train import METHODS as TRAIN_METHODS
from glad.bench.train import SPLIT_PARTS


def _invoke(*args):
    result = CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False)
    return result


def _json(output: str) -> dict:
    return json.loads(output[output.index("{"):])  # progress lines go to stderr, the report to stdout


@pytest.fixture(scope="module")
def train_report(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "train.json"
    res = CliRunner().invoke(cli, ["bench", "train", "--model", TINY_MODEL, "--batch-size", "4",
                                   "--num-classes", "3", "--rounds", "3", "--warmup", "1",
                                   "--split-rounds", "1", "--device", "cpu", "--threads", "1", "--json", "--quiet",
                                   "--output", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    printed = _json(res.output)
    assert json.loads(out.read_text()) == printed  # --output holds what --json printed
    return printed


def test_train_report_has_every_method_with_ratios_from_the_medians(train_report):
    methods = train_report["methods"]
    assert list(methods) == list(TRAIN_METHODS)
    lora = methods["lora"]["median_ms"]
    for name, entry in methods.items():
        assert len(entry["times_ms"]) == 3 and len(entry["wall_times_ms"]) == 3
        assert entry["median_ms"] == pytest.approx(sorted(entry["times_ms"])[1], abs=1e-3)
        assert entry["ratio_to_lora"] == pytest.approx(entry["median_ms"] / lora)
        assert entry["passes"] == (2 if name in ("lora-sam", "lora-gradreg", "glad") else 1)
        assert entry["teacher"] == (name != "lora")
        assert entry["skipped_steps"] == 0
        assert entry["state_mb"] > 0 and entry["peak_mem_mb"] >= entry["state_mb"]
        assert set(entry["split_ms"]) == set(SPLIT_PARTS)
        assert all(v >= 0 for v in entry["split_ms"].values())
        assert set(entry["split_grouped_ms"]) == {"passes", "teacher", "text_encoding", "ops", "optimizer",
                                                  "other"}
    assert methods["lora"]["ratio_to_lora"] == 1.0


def test_train_split_puts_the_work_where_the_method_does_it(train_report):
    split = {n: e["split_ms"] for n, e in train_report["methods"].items()}
    assert split["lora"]["teacher"] == 0 and split["lora"]["gradreg_ops"] == 0  # no KL, one pass
    assert split["lora-alignnet"]["gradreg_ops"] == 0
    for name in ("lora-alignnet", "lora-gradreg", "glad"):
        assert split[name]["teacher"] > 0
    for name in ("lora-sam", "lora-gradreg", "glad"):
        assert split[name]["gradreg_ops"] > 0
    for entry in split.values():
        assert entry["text_forward"] > 0 and entry["backward"] > 0 and entry["optimizer"] > 0


def test_train_split_adds_up_to_the_instrumented_step(train_report):
    for entry in train_report["methods"].values():
        assert sum(entry["split_ms"].values()) == pytest.approx(entry["split_step_ms"], rel=1e-9)
        assert sum(entry["split_grouped_ms"].values()) == pytest.approx(entry["split_step_ms"], rel=1e-9)


def test_train_paired_ratios_and_record(train_report):
    m = train_report["methods"]
    per_round = [a / b for a, b in zip(m["lora-gradreg"]["times_ms"], m["lora"]["times_ms"], strict=True)]
    assert m["lora-gradreg"]["paired_ratio_to_lora"] == pytest.approx(statistics.median(per_round))
    assert "targets" not in train_report
    assert train_report["config"]["model"] == TINY_MODEL and train_report["clock"] == "cpu"
    assert "CPU time" in train_report["clock_description"] and "1 torch thread" in train_report["clock_description"]
    assert train_report["model_config"]["vision_cfg"]["image_size"] == train_report["image_size"]
    assert train_report["machine"]["cpu_count"] >= 1 and "torch" in train_report["machine"]
    assert len(train_report["load"]["rounds"]) == 1 + 3 + 0  # memory (the one warmup) + timed rounds
    assert train_report["command"]


def test_train_subset_of_methods_without_memory_or_split(tiny):
    res = _invoke("train", "--model", TINY_MODEL, "--batch-size", "2", "--num-classes", "2", "--rounds", "1",
                  "--warmup", "0", "--split-rounds", "0", "--no-memory", "--method", "lora-alignnet",
                  "--method", "glad", "--device", "cpu", "--quiet")
    assert res.exit_code == 0, res.output
    assert "lora-alignnet" in res.output and "\nglad " in res.output
    assert "lora-gradreg" not in res.output and "split step" in res.output  # no split columns filled


def test_eval_report(tiny):
    res = _invoke("eval", "--model", TINY_MODEL, "--batch-size", "4", "--num-classes", "50", "--rounds", "3",
                  "--warmup", "1", "--text-classes", "2", "--device", "cpu", "--threads", "1", "--json", "--quiet")
    assert res.exit_code == 0, res.output
    report = _json(res.output)
    variants = report["variants"]
    assert list(variants) == list(EVAL_VARIANTS)
    for entry in variants.values():
        assert len(entry["times_ms"]) == 3
        assert entry["images_per_s"] == pytest.approx(4 / (entry["median_batch_ms"] / 1e3))
        assert entry["text_ms_per_class"] > 0
    assert variants["lora-merged"]["x_plain"] == pytest.approx(
        variants["lora-merged"]["images_per_s"] / variants["clip"]["images_per_s"])
    assert variants["lora-merged+alignnet"]["x_plain"] == pytest.approx(
        variants["lora-merged+alignnet"]["images_per_s"] / variants["clip+alignnet"]["images_per_s"])
    assert variants["clip"]["x_plain"] == 1.0 and "targets" not in report


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "no-such-model"], "unknown model"),
    (["train", "--method", "zeroshot"], "is not one of"),
    (["eval", "--device", "cpu", "--clock", "wall", "--batch-size", "0"], "batch-size"),
])
def test_bad_input_is_a_clear_error(tiny, args, message):
    res = CliRunner().invoke(cli, ["bench", *args, "--device", "cpu", "--quiet"])
    assert res.exit_code != 0
    assert message in res.output.lower()


def test_bad_config_names_the_value():
    with pytest.raises(ValueError, match="zeroshot"):
        train_bench.Config(methods=("zeroshot",)).validate()
    with pytest.raises(ValueError, match="clock"):
        train_bench.Config(clock="sundial").validate()


class _FakeClock(Clock):
    """A clock that advances only when told: exact accounting without timing."""

    def __init__(self):
        super().__init__(torch.device("cpu"), "cpu")
        self.t = 0.0
        self.now = lambda: self.t


def test_part_timers_are_exclusive_and_absorbing():
    clock = _FakeClock()
    timers = PartTimers(clock)

    def leaf():
        clock.t += 1.0

    inner = timers.wrap("inner", leaf)

    def outer():
        clock.t += 2.0
        inner()

    def teacher():
        clock.t += 4.0
        inner()  # inside an absorbing part: counted as the teacher's

    timers.wrap("outer", outer)()
    timers.wrap("teacher", teacher, absorb=True)()
    assert dict(timers.totals) == {"inner": 1.0, "outer": 2.0, "teacher": 5.0}


def test_patched_restores_instance_and_class_attributes():
    class Thing:
        def f(self):
            return "class"

    thing = Thing()
    with patched([(thing, "f", lambda: "instance"), (Thing, "g", 1)]):
        assert thing.f() == "instance" and Thing.g == 1
    assert thing.f() == "class" and not hasattr(Thing, "g") and "f" not in vars(thing)
    with pytest.raises(RuntimeError), patched([(Thing, "f", lambda self: "patched")]):
        raise RuntimeError
    assert thing.f() == "class"


def test_memory_measures_count_what_they_should():
    lin = torch.nn.Linear(100, 10)  # 1010 float32 values
    assert state_bytes(lin) == 1010 * 4
    lin(torch.randn(3, 100)).sum().backward()
    assert state_bytes(lin) == 2 * 1010 * 4  # + gradients
    peak = transient_peak_bytes(lambda: torch.ones(1 << 20).add_(1), torch.device("cpu"))
    assert peak is None or peak >= 4 << 20  # the 4 MiB temporary, if this torch's profiler reports it


def test_quiet_unless_verbose(tmp_path):
    # the profiler that measures memory logs its start/stop and a device count from C++: not by default
    args = [sys.executable, "-m", "glad", "bench", "train", "--batch-size", "2", "--num-classes", "2", "--rounds",
            "1", "--warmup", "1", "--split-rounds", "0", "--device", "cpu", "--threads", "1", "--quiet"]
    env = {**os.environ, "GLAD_CACHE": str(tmp_path)}
    env.pop("KINETO_LOG_LEVEL", None)
    quiet = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and len(quiet.stdout.strip().splitlines()) == 4 + 2 + 5  # header, columns, methods
    loud = subprocess.run(args[:3] + ["-v"] + args[3:], capture_output=True, text=True, timeout=300, env=env)
    assert loud.returncode == 0 and "profiler_start" in loud.stderr
