"""Your own data: an image folder trains on every class with every training image by default
(the finetune protocol), and the adapter then names any of its classes."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from data_fixtures import make_imagefolder
from engine_fixtures import TINY_MODEL
from glad_cli.main import cli

CLASSES = ["red_circle", "blue_square", "green_triangle", "orange_star"]


def _train(tmp_path, *extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    folder = make_imagefolder(tmp_path / "shapes", per_class=5, splits=("train", "test"), classnames=CLASSES)
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--dataset", f"imagefolder:{folder}", "--model", TINY_MODEL,
                                   "--pretrained", "none", "--method", "glad", "--seed", "1", "--epochs", "1",
                                   "--batch-size", "4", "--workers", "0", "--device", "cpu", "--output", str(out),
                                   *extra])
    assert res.exit_code == 0, res.output
    return folder, out, res.output


@pytest.mark.usefixtures("tiny")
def test_own_folder_trains_every_class_on_every_image(tmp_path):
    folder, out, output = _train(tmp_path)
    run = json.loads((out / "config.json").read_text())
    assert run["config"]["protocol"] == "finetune" and run["config"]["shots"] == [0]
    job = out / "glad" / "shapes-all" / "seed1"
    assert json.loads((job / "done.json").read_text())["steps"] == 5  # 4 classes x 5 images, batch 4, 1 epoch
    adapter = json.loads((job / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["classnames"]) == sorted(CLASSES)  # every class, not the base half
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["split"], r["num_samples"]) for r in records] == [("all", 20)]
    assert "Fine-tuned on all classes" in output and "all images" in output
    res = CliRunner().invoke(cli, ["predict", "--adapter", str(job / "adapter"), str(folder / "test"),
                                   "--top-k", "4", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    named = {line.split(": ")[1].split(",")[0].rsplit(" ", 1)[0] for line in res.output.splitlines() if ": " in line}
    assert named and named <= set(CLASSES)


@pytest.mark.usefixtures("tiny")
def test_shots_subsample_own_data(tmp_path):
    _, out, _ = _train(tmp_path, "--shots", "2")
    job = out / "glad" / "shapes-all" / "seed1"
    assert json.loads((job / "done.json").read_text())["steps"] == 2  # 4 classes x 2 shots, batch 4


def test_finetune_needs_a_dataset_and_shots_zero_is_its_alone():
    res = CliRunner().invoke(cli, ["train", "--protocol", "finetune"])
    assert res.exit_code == 2 and "--dataset imagefolder:PATH" in res.output
    res = CliRunner().invoke(cli, ["train", "--dataset", "dtd", "--shots", "0"])
    assert res.exit_code == 2 and "--shots must be >= 1" in res.output


@pytest.mark.usefixtures("tiny")
def test_a_same_named_folder_elsewhere_is_not_taken_as_done(tmp_path):
    _, out, _ = _train(tmp_path / "a")
    other = make_imagefolder(tmp_path / "b" / "shapes", per_class=3, splits=("train", "test"), classnames=CLASSES)
    res = CliRunner().invoke(cli, ["train", "--dataset", f"imagefolder:{other}", "--model", TINY_MODEL,
                                   "--pretrained", "none", "--method", "glad", "--seed", "1", "--epochs", "1",
                                   "--batch-size", "4", "--workers", "0", "--device", "cpu", "--output", str(out)])
    assert res.exit_code == 2, res.output
    assert "dataset named 'shapes'" in res.output and "done, skipped" not in res.output
    before = (out / "config.json").read_text()
    assert str(tmp_path / "a") in before and str(other) not in before  # the record still names the first data


@pytest.mark.usefixtures("tiny")
def test_a_second_run_into_a_busy_output_is_refused_naming_the_holder(tmp_path):
    from glad.config import TrainConfig
    from glad.engine.runner import OutputConflictError, Runner
    from glad.io import folder_lock

    folder = make_imagefolder(tmp_path / "shapes", per_class=3, splits=("train", "test"), classnames=CLASSES)
    out = tmp_path / "run"
    cfg = TrainConfig(datasets=[f"imagefolder:{folder}"], protocol="finetune", shots=[0], output=str(out),
                      model=TINY_MODEL, pretrained=None, device="cpu", workers=0, methods=["lora"], seeds=[1])
    with folder_lock(str(out)):
        with pytest.raises(OutputConflictError, match=r"in use by another glad run \(pid \d+"):
            Runner(cfg).run()


@pytest.mark.usefixtures("tiny")
def test_file_system_problems_are_one_line(tmp_path, monkeypatch):
    folder = make_imagefolder(tmp_path / "shapes", per_class=3, splits=("train", "test"), classnames=CLASSES)
    flags = ["train", "--dataset", f"imagefolder:{folder}", "--model", TINY_MODEL, "--pretrained", "none",
             "--method", "lora", "--seed", "1", "--max-iters", "1", "--workers", "0", "--device", "cpu"]
    busy = tmp_path / "a-file"
    busy.write_text("mine")
    res = CliRunner().invoke(cli, [*flags, "--output", str(busy)])
    assert res.exit_code == 2 and "is a file, not a folder" in res.output and busy.read_text() == "mine"
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    import os

    if os.access(ro, os.W_OK):  # root writes anywhere: make the write fail as a read-only file system would
        import errno

        import glad.io

        def refuse(*a, **k):
            raise OSError(errno.EROFS, "Read-only file system", str(ro / "run"))
        monkeypatch.setattr(glad.io.os, "makedirs", refuse)
    res = CliRunner().invoke(cli, [*flags, "--output", str(ro / "run")])
    assert res.exit_code == 2, res.output
    [line] = [x for x in res.output.splitlines() if "error" in x]
    assert str(ro / "run") in line and ("Read-only" in line or "Permission" in line)
    monkeypatch.undo()
    monkeypatch.setenv("GLAD_CACHE", "/proc/x")
    res = CliRunner().invoke(cli, [*flags, "--shots", "2", "--output", str(tmp_path / "run")])  # draws are cached
    assert res.exit_code == 2 and "GLAD_CACHE=/proc/x is not a usable folder" in res.output, res.output


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize("classes,per_class,needle", [(["only"], 3, "at least two"),
                                                      (CLASSES, 1, "no test image")])
def test_unscorable_data_is_refused_before_training(tmp_path, classes, per_class, needle):
    folder = make_imagefolder(tmp_path / "shapes", per_class=per_class, classnames=classes)  # glad splits it
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--dataset", f"imagefolder:{folder}", "--model", TINY_MODEL,
                                   "--pretrained", "none", "--device", "cpu", "--workers", "0", "--output", str(out)])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not (out / "glad").exists()


@pytest.mark.usefixtures("tiny")
def test_a_full_disk_is_one_line_and_resume_completes_with_nothing_lost(tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    folder = make_imagefolder(tmp_path / "shapes", per_class=3, splits=("train", "test"), classnames=CLASSES)
    flags = ["train", "--dataset", f"imagefolder:{folder}", "--model", TINY_MODEL, "--pretrained", "none",
             "--method", "lora", "--seeds", "1", "--seeds", "2", "--epochs", "1", "--batch-size", "3",
             "--workers", "0", "--device", "cpu", "--output", str(tmp_path / "run")]
    real = safetensors.torch.save_file

    def full_disk_on_seed2s_adapter(tensors, path, *a, **kw):
        if "seed2" in str(path) and "adapter" in os.path.basename(os.path.dirname(str(path))):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk_on_seed2s_adapter)
    res = CliRunner().invoke(cli, flags)
    assert res.exit_code == 2, res.output
    [line] = [x for x in res.output.splitlines() if "error" in x]
    assert "No space left on device" in line and "--resume" in line
    first = (tmp_path / "run" / "lora" / "shapes-all" / "seed1" / "adapter" / "adapter_model.safetensors")
    kept = first.read_bytes()
    monkeypatch.undo()
    res = CliRunner().invoke(cli, [*flags, "--resume"])
    assert res.exit_code == 0, res.output
    assert first.read_bytes() == kept  # seed 1's finished job untouched
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in records) == [1, 2]
