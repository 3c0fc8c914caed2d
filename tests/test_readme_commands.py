"""The README's protocol commands, run verbatim on a user's machine: a CoOp data root in ~/data and
OpenAI's ViT-B-16 in the Hugging Face cache (random weights, tiny images), offline.

Only budget flags are added (one iteration, one seed, no loader workers, small evaluation batches).
The tests assert what really ran: ViT-B-16 with QuickGELU, the protocol's datasets read from disk
(never the built-in world), the methods asked for, the output layout the README describes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from user_fixtures import run_shell

from glad.engine.results import read_records
from glad.protocols import BASE_TO_NOVEL_DATASETS, DG_TARGETS, TRANSFER_TARGETS

README = Path(__file__).resolve().parents[1] / "README.md"
TRAIN_BUDGET = "--max-iters 1 --seeds 1 --workers 0 --eval-batch-size 4"
EVAL_BUDGET = "--workers 0 --batch-size 4"

pytestmark = pytest.mark.slow


def protocol_commands(heading: str = "## Run the paper's protocols") -> list[str]:
    """The commands of the first bash block under `heading`, continuation lines joined."""
    text = README.read_text()
    section = text[text.index(heading):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands, current = [], ""
    for line in block.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        current += line[:-1].rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(" ".join(current.split()))
            current = ""
    return commands


COMMANDS = protocol_commands()


def command(prefix: str, contains: str = "") -> str:
    matches = [c for c in COMMANDS if c.startswith(prefix) and contains in c]
    assert len(matches) == 1, f"README should hold one command starting {prefix!r}: {COMMANDS}"
    return matches[0]


def with_budget(cmd: str) -> str:
    return f"{cmd} {TRAIN_BUDGET if ' train' in cmd else EVAL_BUDGET if 'glad eval' in cmd else ''}".strip()


@pytest.fixture(scope="module")
def user(user_home):
    return user_home


def run_readme(prefix: str, user, contains: str = ""):
    cmd = command(prefix, contains)
    res = run_shell(with_budget(cmd), user.home)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


def assert_real_run(folder: Path, protocol: str, methods: set[str], datasets: set[str]):
    """The run used ViT-B-16 `openai` with QuickGELU on these CoOp datasets, nothing else."""
    run = json.loads((folder / "config.json").read_text())
    assert run["config"]["model"] == "ViT-B-16" and run["config"]["pretrained"] == "openai"
    assert run["resolved"]["quick_gelu"] is True and run["resolved"]["image_size"] == 224
    assert run["resolved"]["preprocess"]["mean"] == [0.48145466, 0.4578275, 0.40821073]  # OpenAI's, from the tag
    records = [r for r in read_records(str(folder / "results.jsonl")) if r["protocol"] == protocol]
    assert {r["method"] for r in records} == methods
    assert {r["eval_dataset"] for r in records} == datasets
    assert all(r["model"] == "ViT-B-16" and r["quick_gelu"] is True for r in records)
    assert not any("world" in r["eval_dataset"] or "world" in r["train_dataset"] for r in records)
    return records


def assert_adapter(folder: Path, alignnet: bool):
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "ViT-B-16" and config["quick_gelu"] is True
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    assert len([k for k in tensors if k.endswith("lora_A.weight")]) == 2 * 12 * 3  # q, k, v of both towers
    assert any(k.startswith("alignnet.") for k in tensors) == alignnet
    assert all(t.isfinite().all() for t in tensors.values())


def test_readme_lists_the_protocol_commands():
    assert [c.split(" --")[0] for c in COMMANDS] == [
        "glad train", "glad train", "glad train", "glad train", "glad train", "torchrun", "torchrun",
        "glad eval", "glad report runs/b2n"]


def test_base_to_novel_then_eval_and_report(user):
    import shutil

    out = user.home / "runs" / "b2n"
    shutil.rmtree(out, ignore_errors=True)  # a run of its own, whichever test made one before
    res = run_readme("glad train --protocol base-to-novel", user)
    records = assert_real_run(out, "base-to-novel", {"glad"}, set(BASE_TO_NOVEL_DATASETS))
    assert {r["split"] for r in records} == {"base", "novel"} and len(records) == 2 * 11
    for name in BASE_TO_NOVEL_DATASETS:
        job = out / "glad" / f"{name}-base" / "seed1"
        assert (job / "done.json").exists() and not (job / "checkpoints").exists()
        assert_adapter(job / "adapter", alignnet=True)
    # 2 training images per class on disk, 16 asked for: said, and recorded.
    assert "fewer than 16 training images" in res.stderr
    assert all(r["short_classes"] for r in records)
    assert "| dtd | glad |" in res.stdout
    res = run_readme("glad eval", user)
    assert re.search(r"dtd \[novel\]: \d+\.\d\d% of 1", res.stdout), res.stdout
    res = run_readme("glad report runs/b2n", user)
    assert (out / "results-base-to-novel.png").read_bytes()[:4] == b"\x89PNG"


def test_cross_dataset_then_domain_generalization(user):
    run_readme("glad train --protocol cross-dataset", user)
    out = user.home / "runs" / "imagenet"
    assert_real_run(out, "cross-dataset", {"glad"}, {"imagenet", *TRANSFER_TARGETS})
    done = out / "glad" / "imagenet-all" / "seed1" / "done.json"
    stamp = done.stat().st_mtime_ns
    run_readme("glad train --protocol domain-generalization", user)
    assert done.stat().st_mtime_ns == stamp  # the source model is trained once
    assert_real_run(out, "domain-generalization", {"glad"}, {"imagenet", *DG_TARGETS})
    assert_adapter(done.parent / "adapter", alignnet=True)


def test_few_shot_on_the_eleven_datasets(user):
    # the protocol's shots are 1 2 4 8 16; one of them is the budget here
    res = run_shell(with_budget(command("glad train --protocol few-shot")) + " --shots 1", user.home)
    assert res.returncode == 0, res.stderr[-3000:]
    out = user.home / "runs" / "fewshot"
    records = assert_real_run(out, "few-shot", {"glad"}, set(BASE_TO_NOVEL_DATASETS))
    assert {r["shots"] for r in records} == {1} and {r["split"] for r in records} == {"all"}
    assert (out / "glad" / "dtd-all-1shot" / "seed1" / "metrics.jsonl").exists()
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["shots"] == [1]
    assert "| Dataset | Method | 1 shot |" in (out / "results-few-shot.md").read_text()


def test_ablation_on_dtd(user):
    run_readme("glad train --dataset dtd", user)
    out = user.home / "runs" / "glad"
    methods = {"zeroshot", "lora", "lora-sam", "lora-gradreg", "lora-alignnet", "glad"}
    assert_real_run(out, "base-to-novel", methods, {"dtd"})
    for method in methods - {"zeroshot"}:
        assert_adapter(out / method / "dtd-base" / "seed1" / "adapter", alignnet="alignnet" in method
                       or method == "glad")


def test_torchrun_cross_dataset(user):
    run_readme("torchrun", user, "cross-dataset")
    out = user.home / "runs" / "imagenet-ddp"
    assert_real_run(out, "cross-dataset", {"glad"}, {"imagenet", *TRANSFER_TARGETS})


USE_COMMANDS = protocol_commands("## Use your tuned model")


def test_use_your_tuned_model_commands(user):
    """predict, export and a Hub id, as the README writes them, after its base-to-novel run."""
    import shutil

    from PIL import Image

    adapter = user.home / "runs" / "b2n" / "glad" / "dtd-base" / "seed1" / "adapter"
    if not adapter.exists():  # run on its own: make the run the commands refer to
        run_readme("glad train --protocol base-to-novel", user)
    photos = user.home / "photos"
    photos.mkdir(exist_ok=True)
    for i in range(3):
        Image.new("RGB", (64, 48), (40 * i, 90, 200 - 40 * i)).save(photos / f"p{i}.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    # the Hub id of the README: the adapter as huggingface_hub caches a repository
    repo = user.home / ".cache" / "huggingface" / "hub" / "models--you--dtd-glad"
    snapshot = repo / "snapshots" / ("a" * 40)
    if not snapshot.exists():
        shutil.copytree(adapter, snapshot)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text("a" * 40)
    predict, export, export_peft, export_hf, hub = USE_COMMANDS
    res = run_shell(predict, user.home)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count(": error:") == 1 and "broken.jpg" in res.stdout
    import csv

    rows = list(csv.DictReader((user.home / "predictions.csv").open()))
    assert len([r for r in rows if not r["error"]]) == 3 * 1  # dtd's base half here: 1 class
    res = run_shell(export, user.home)
    assert res.returncode == 0, res.stderr[-3000:]
    import open_clip

    plain = open_clip.create_model_and_transforms(f"local-dir:{user.home / 'vitb16-dtd'}")[0]
    assert sum(type(m).__name__ == "QuickGELU" for m in plain.modules()) == 24
    for cmd in (export_peft, export_hf):
        res = run_shell(cmd, user.home)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "AlignNet is not in the export" in res.stdout  # the README's run is glad: it has one
    import peft
    import transformers

    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tokens = open_clip.get_tokenizer("ViT-B-16")(["a photo of a banded.", "a photo of a dotted."])
    with torch.no_grad():
        want = plain.eval().encode_image(images), plain.encode_text(tokens)
        base = open_clip.create_model("ViT-B-16-quickgelu", pretrained=str(user.hf_weights)).eval()
        tuned = peft.PeftModel.from_pretrained(base, str(user.home / "vitb16-dtd-peft")).eval().base_model.model
        hf = transformers.CLIPModel.from_pretrained(str(user.home / "vitb16-dtd-hf")).eval()
        hf_img, hf_txt = hf.get_image_features(pixel_values=images), hf.get_text_features(input_ids=tokens)
        for got in ((tuned.encode_image(images), tuned.encode_text(tokens)),
                    tuple(getattr(x, "pooler_output", x) for x in (hf_img, hf_txt))):
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=0)
    classes = json.loads((user.home / "vitb16-dtd-hf" / "glad_adapter.json").read_text())["classnames"]
    classify = transformers.pipeline("zero-shot-image-classification", model=str(user.home / "vitb16-dtd-hf"))
    assert classify(Image.open(photos / "p0.jpg"), candidate_labels=classes)[0]["label"] in classes
    res = run_shell(with_budget(hub), user.home)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"dtd \[base\]: \d+\.\d\d% of 1", res.stdout), res.stdout


def test_torchrun_job_parallel_base_to_novel(user):
    run_readme("torchrun", user, "--parallel jobs")
    out = user.home / "runs" / "b2n-jobs"
    run = json.loads((out / "config.json").read_text())
    assert run["resolved"]["quick_gelu"] is True and run["config"]["model"] == "ViT-B-16"
    from glad.engine.runner import read_run_records

    records = read_run_records(str(out))
    assert {r["eval_dataset"] for r in records} == set(BASE_TO_NOVEL_DATASETS) and len(records) == 22
    shards = [read_records(str(out / f"results-shard{i}-of-2.jsonl")) for i in (0, 1)]
    assert all(shards) and len(shards[0]) + len(shards[1]) == 22
    assert "| dtd | glad |" in (out / "results-base-to-novel.md").read_text()
