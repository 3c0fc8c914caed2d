"""The real path's failure modes, each a test: user data stays where it is, failed starts leave
nothing, bad numbers and divergence are refused, errors are one line, signals stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from click.testing import CliRunner
from data_fixtures import corrupt_image, make_coop_dataset, make_imagefolder, write_image
from engine_fixtures import PYTHON, base_flags, write_launcher
from glad_cli.main import cli

from glad.engine.results import read_records


@pytest.fixture(scope="module")
def dtd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_coop_dataset(root, "dtd", n_classes=4, per_class=(4, 2, 3))
    return root


def _train(*args):
    return CliRunner().invoke(cli, ["train", *args])


def _listing(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("glad: error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_user_data_runs_write_under_output_with_short_names(tiny, dtd_root, tmp_path):
    mine = make_imagefolder(tmp_path / "user" / "my_pets", n_classes=4, per_class=8)
    csv_dir = tmp_path / "user" / "csvdata"
    for i in range(16):
        write_image(csv_dir / f"{i}.png", i % 4, i)
    (csv_dir / "flowers.csv").write_text("path,label\n" + "".join(f"{i}.png,c{i % 4}\n" for i in range(16)))
    before = _listing(tmp_path / "user")
    out = tmp_path / "out"
    res = _train(*base_flags(dtd_root, out, **{"--epochs": 1}), "--dataset", f"imagefolder:{mine}",
                 "--dataset", str(csv_dir / "flowers.csv"), "--method", "lora", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert _listing(tmp_path / "user") == before  # nothing written into the user's data
    for label in ("my_pets", "flowers"):
        # your own data: the finetune protocol (every class), here with --shots 2 from base_flags
        assert (out / "lora" / f"{label}-all" / "seed1" / "adapter" / "adapter_model.safetensors").exists()
    records = read_records(str(out / "results.jsonl"))
    assert {r["eval_dataset"] for r in records} == {"my_pets", "flowers"}
    md = (out / "results-finetune.md").read_text()
    assert "| my_pets | lora |" in md and str(tmp_path) not in md
    resolved = json.loads((out / "config.json").read_text())["resolved"]["datasets"]
    assert resolved["my_pets"] == f"imagefolder:{mine}"


def test_same_stem_twice_gets_unique_names(tiny, dtd_root, tmp_path):
    from glad.engine.runner import dataset_labels

    labels = dataset_labels(["imagefolder:/a/pets", "imagefolder:/b/pets/", "/c/pets.csv", "dtd"])
    assert list(labels.values()) == ["pets", "pets-2", "pets-3", "dtd"]


@pytest.mark.parametrize("args,needle", [
    (["--model", "no-such-model"], "no-such-model"),
    (["--pretrained", "/nowhere/weights.safetensors"], "weights.safetensors"),
    (["--dataset", "eurosat"], "eurosat"),
])
def test_failed_start_writes_nothing(tiny, dtd_root, tmp_path, args, needle):
    out = tmp_path / "run"
    _one_line_error(_train(*base_flags(dtd_root, out), "--dataset", "dtd", *args), needle)
    assert not out.exists()


def test_missing_coop_data_is_named_at_once(tiny, dtd_root, tmp_path):
    # the paper's protocol on a root that holds only dtd: every missing folder named, nothing written
    out = tmp_path / "run"
    line = _one_line_error(_train("--protocol", "base-to-novel", "--data-root", str(dtd_root), "--output", str(out)),
                           "imagenet", "DATASETS.md", "Also missing: caltech101")
    assert "dtd" not in line.split("Also missing")[1] and not out.exists()


def test_failed_training_start_does_not_block_the_corrected_rerun(tiny, tmp_path):
    root = tmp_path / "data"
    make_coop_dataset(root, "dtd", n_classes=2, per_class=(2, 1, 1))
    victim = next((root / "dtd" / "images").rglob("*_0000.jpg"))
    good = victim.read_bytes()
    corrupt_image(victim)
    out = tmp_path / "run"
    flags = base_flags(root, out, **{"--epochs": 1, "--shots": 4})
    _one_line_error(_train(*flags, "--dataset", "dtd", "--method", "lora", "--seed", "1"), "cannot decode",
                    victim.name)
    victim.write_bytes(good)
    res = _train(*flags, "--lr", "0.02", "--dataset", "dtd", "--method", "lora", "--seed", "1")
    assert res.exit_code == 0, res.output  # not "a run with other settings": the first one left no result


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_are_refused(tiny, dtd_root, tmp_path, value):
    out = tmp_path / "run"
    _one_line_error(_train(*base_flags(dtd_root, out), "--lr", value), "--lr", "finite")
    assert not out.exists()


def test_diverging_run_saves_and_reports_nothing(tiny, dtd_root, tmp_path):
    out = tmp_path / "run"
    res = _train(*base_flags(dtd_root, out), "--lr", "1e38", "--dataset", "dtd", "--method", "lora", "--seed", "1")
    line = _one_line_error(res, "NaN/Inf", "step 1", "--lr")
    assert "nothing was saved" in line
    assert not list(out.rglob("adapter_model.safetensors")) and not list(out.rglob("step-*"))
    assert not (out / "results.jsonl").exists()


def test_config_file_numbers_and_flag_names(tiny, dtd_root, tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 1e-3\ndataset: dtd\nseed: 2\nbatch-size: 4\nmethod: [lora]\n")
    res = _train(*base_flags(dtd_root, out, **{"--epochs": 1}), "--config", str(cfg))
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["lr"], saved["datasets"], saved["seeds"], saved["methods"]) == (0.01, ["dtd"], [2], ["lora"])
    cfg.write_text("lr: 1e-3\n")  # the file's lr applies when no flag gives one
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--model", "x", "--help"])
    assert res.exit_code == 0
    from glad_cli.train import _load_yaml

    assert _load_yaml(str(cfg)) == {"lr": 0.001}
    cfg.write_text('lora-r: "3"\n')  # quoted: a string, not a number
    _one_line_error(_train(*base_flags(dtd_root, tmp_path / "r2"), "--config", str(cfg)), "--lora-r", "integer")
    cfg.write_text("learning-rate: 0.1\n")
    _one_line_error(_train(*base_flags(dtd_root, tmp_path / "r3"), "--config", str(cfg)), "learning-rate",
                    "did you mean")


@pytest.mark.parametrize("args,needles", [
    (["--device", "gpu"], ["--device", "gpu"]),
    (["--device", "cuda"], ["--device cuda", "no CUDA device"]),
    (["--template", "{} {}"], ["--template", "exactly one"]),
])
def test_one_line_errors(tiny, dtd_root, tmp_path, args, needles):
    out = tmp_path / "run"
    _one_line_error(_train(*base_flags(dtd_root, out), "--dataset", "dtd", *args), *needles)
    assert not out.exists()


def test_corrupt_image_with_workers_is_one_line(tiny, tmp_path):
    root = tmp_path / "data"
    make_coop_dataset(root, "dtd", n_classes=2, per_class=(2, 1, 1))
    victim = corrupt_image(next((root / "dtd" / "images").rglob("*_0000.jpg")))
    res = _train(*base_flags(root, tmp_path / "run", **{"--workers": 2, "--shots": 4}), "--dataset", "dtd",
                 "--method", "lora", "--seed", "1")
    line = _one_line_error(res, "cannot decode", victim.name)
    assert "--skip-corrupt" not in line


def test_truncated_adapter_is_one_line(tiny, dtd_root, tmp_path):
    out = tmp_path / "run"
    assert _train(*base_flags(dtd_root, out, **{"--epochs": 1}), "--dataset", "dtd", "--method", "lora",
                  "--seed", "1").exit_code == 0
    adapter = out / "lora" / "dtd-base" / "seed1" / "adapter"
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    res = CliRunner().invoke(cli, ["eval", "--adapter", str(adapter), "--dataset", "dtd", "--data-root",
                                   str(dtd_root), "--workers", "0", "--device", "cpu"])
    _one_line_error(res, str(weights), "truncated")


def test_report_plot_draws_every_protocol(tiny, dtd_root, tmp_path):
    root = tmp_path / "data"
    make_coop_dataset(root, "imagenet", n_classes=3, per_class=(2, 1, 2))
    make_coop_dataset(root, "dtd", n_classes=2, per_class=(2, 1, 2))
    out = tmp_path / "xd"
    assert _train(*base_flags(root, out, **{"--epochs": 1}), "--protocol", "cross-dataset", "--dataset", "imagenet",
                  "--dataset", "dtd", "--method", "lora", "--seed", "1").exit_code == 0
    res = CliRunner().invoke(cli, ["report", str(out), "--plot"])
    assert res.exit_code == 0, res.output
    assert (out / "results-cross-dataset.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_after_a_step_with_a_checkpoint_and_the_resume_command(tiny, dtd_root, tmp_path, sig):
    launcher = write_launcher(tmp_path, tiny)
    out = tmp_path / "run"
    args = [*base_flags(dtd_root, out, **{"--epochs": 400, "--shots": 4}), "--dataset", "dtd", "--method", "lora",
            "--seed", "1", "--checkpoint-every", "100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([PYTHON, str(launcher), "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # some steps into training
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + int(sig), stderr
    assert "continue with: glad train" in stderr and stderr.rstrip().endswith("--resume"), stderr
    checkpoints = list((out / "lora" / "dtd-base" / "seed1" / "checkpoints").glob("step-*"))
    assert len(checkpoints) == 1 and not (out / "results.jsonl").exists()
    assert "Traceback" not in stderr


def test_few_shot_protocol_defaults_to_coops_shots(monkeypatch):
    import glad.engine.runner as runner

    seen = []
    monkeypatch.setattr(runner, "run_protocol", lambda cfg, **kw: seen.append(cfg))
    for args, shots in ((["--protocol", "few-shot"], [1, 2, 4, 8, 16]), (["--protocol", "few-shot", "--shots", "4"], [4]),
                        (["--protocol", "base-to-novel"], [16])):
        res = CliRunner().invoke(cli, ["train", *args, "--data-root", "somewhere"])
        assert res.exit_code == 0, res.output
        assert seen[-1].shots == shots and seen[-1].model == "ViT-B-16" and seen[-1].datasets == []
    CliRunner().invoke(cli, ["train"])  # no option: the demo, with its own settings
    assert seen[-1].model == "glad-tiny" and seen[-1].methods == ["zeroshot", "lora", "glad"]


def test_fp16_autocast_trains_with_loss_scaling(tiny, dtd_root, tmp_path):
    # "amp": fp16 autocast with a GradScaler wired into GradReg (for GPUs without bf16); its
    # state is checkpointed; the open_clip spelling amp_bf16 is bf16 autocast.
    from glad.engine.runtime import setup_runtime

    assert setup_runtime("cpu", "amp").grad_scaler() is not None
    assert setup_runtime("cpu", "amp_bf16").autocast_dtype is torch.bfloat16
    assert setup_runtime("cpu", "bf16").grad_scaler() is None
    out = tmp_path / "amp"
    res = _train(*base_flags(dtd_root, out, **{"--epochs": 12}), "--precision", "amp", "--dataset", "dtd",
                 "--method", "glad", "--seed", "1")
    assert res.exit_code == 0, res.output
    done = json.loads((out / "glad" / "dtd-base" / "seed1" / "done.json").read_text())
    # the scaler starts at 2**16 and halves on each overflow, skipping those steps, as torch's does
    assert 0 < done["skipped_steps"] < done["steps"]
    from glad.engine.metrics import read_metrics

    rows = read_metrics(str(out / "glad" / "dtd-base" / "seed1" / "metrics.jsonl"))
    skipped = [r["skipped"] for r in rows]
    assert skipped[0] and not skipped[-1]
    _one_line_error(_train(*base_flags(dtd_root, tmp_path / "x"), "--precision", "fp16"), "--precision fp16", "amp")


def test_quiet_by_default_and_verbose_on_request(tiny, dtd_root, tmp_path):
    from engine_fixtures import PYTHON, write_launcher

    launcher = write_launcher(tmp_path, tiny)
    args = [*base_flags(dtd_root, tmp_path / "q", **{"--epochs": 1}), "--dataset", "dtd", "--method", "lora",
            "--seed", "1"]
    quiet = subprocess.run([PYTHON, str(launcher), "train", *args], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    noise = [line for line in quiet.stderr.splitlines() if "Instantiating" in line or "Loaded built-in" in line]
    assert noise == []
    lines = [line for line in (quiet.stdout + quiet.stderr).splitlines() if line.strip()]
    assert len(lines) <= 20, "\n".join(lines)  # records, the table, where the files are
    assert "files in" in quiet.stdout
    loud = subprocess.run([PYTHON, str(launcher), "-v", "train", *args[:-6], "--output", str(tmp_path / "v"),
                           "--dataset", "dtd", "--method", "lora", "--seed", "1"],
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and "Instantiating" in loud.stderr


def test_open_clip_names_and_threads(monkeypatch):
    import glad.engine.runner as runner

    seen = []
    monkeypatch.setattr(runner, "run_protocol", lambda cfg, **kw: seen.append(cfg))
    threads = torch.get_num_threads()
    try:
        res = CliRunner().invoke(cli, ["train", "--data-root", "d", "--grad-clip-norm", "1.5", "--warmup", "7",
                                       "--precision", "amp_bf16", "--threads", "1"])
        assert res.exit_code == 0, res.output
        assert (seen[-1].grad_clip, seen[-1].warmup_iters, seen[-1].precision) == (1.5, 7, "amp_bf16")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_template_round_trip(tiny, dtd_root, tmp_path):
    out = tmp_path / "t"
    res = _train(*base_flags(dtd_root, out, **{"--epochs": 1}), "--dataset", "dtd", "--method", "lora", "--seed", "1",
                 "--template", "a close-up of {}.")
    assert res.exit_code == 0, res.output
    adapter = out / "lora" / "dtd-base" / "seed1" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["template"] == config["template_override"] == "a close-up of {}."
    res = CliRunner().invoke(cli, ["eval", "--adapter", str(adapter), "--dataset", "dtd", "--split", "base",
                                   "--data-root", str(dtd_root), "--workers", "0", "--device", "cpu", "--json"])
    evaluated = json.loads(res.output)[0]
    recorded = next(r for r in read_records(str(out / "results.jsonl")) if r["split"] == "base")
    assert evaluated["template"] == "a close-up of {}." and evaluated["accuracy"] == recorded["accuracy"]
    res = CliRunner().invoke(cli, ["eval", "--adapter", str(adapter), "--dataset", "dtd", "--split", "base",
                                   "--data-root", str(dtd_root), "--workers", "0", "--device", "cpu", "--json",
                                   "--template", "{} texture."])
    assert json.loads(res.output)[0]["template"] == "{} texture."


def test_every_option_of_every_command_explains_itself():
    import click

    missing = []

    def walk(command, path):
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append((" ".join(path), param.opts))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(cli, ["glad"])
    assert missing == []
    text = " ".join(CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output.split())
    assert "imagefolder:PATH" in text and "PATH.csv" in text and "PATH.json" in text
    assert "runs the built-in offline demo instead, with its own settings" in text
