"""What a new user gets wrong, each answered by one clear line and exit code 2, before any
work and with nothing written: settings, configs, data, models, outputs and adapters.

The table is the inventory; the last test prints how many cases there are.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from data_fixtures import make_coop_dataset, make_imagefolder, write_image
from engine_fixtures import TINY_MODEL
from glad_cli.main import cli

CLASSES = ["red_circle", "blue_square", "green_triangle"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny):
    """Data, a trained adapter and the odd files the cases below point at."""
    root = tmp_path_factory.mktemp("bad")
    data = root / "data"
    make_coop_dataset(data, "dtd", n_classes=4, per_class=(4, 2, 3))
    good = make_imagefolder(root / "good", per_class=3, splits=("train", "test"), classnames=CLASSES)
    make_imagefolder(root / "one_class", per_class=3, classnames=["only"])
    make_imagefolder(root / "one_image", per_class=1, classnames=CLASSES)
    (root / "empty").mkdir()
    looped = make_imagefolder(root / "looped", per_class=2, classnames=CLASSES[:2])
    (looped / CLASSES[0] / "loop").symlink_to(looped)
    broken = make_imagefolder(root / "broken", per_class=3, splits=("train", "test"), classnames=CLASSES)
    for p in sorted((broken / "train").rglob("*.png"))[:3]:
        p.write_bytes(b"not an image")
    for name, text in {"empty.csv": "", "nolabel.csv": "path,label\na.png\n", "split.csv": "a.png,cat,holdout\n",
                       "header.csv": "path,kind\na.png,cat\n"}.items():
        (root / name).write_text(text)
    write_image(root / "a.png", 0)
    (root / "bad.yaml").write_text("lr: [1, 2\n")
    (root / "list.yaml").write_text("- lr\n")
    (root / "unknown.yaml").write_text("learning_rat: 0.1\n")
    (root / "a-file").write_text("mine")
    (root / "notes.csv").write_text("mine")
    (root / "not_weights").mkdir()
    out = root / "run"
    res = CliRunner().invoke(cli, ["train", "--dataset", f"imagefolder:{good}", "--model", TINY_MODEL,
                                   "--pretrained", "none", "--method", "glad", "--seed", "1", "--max-iters", "1",
                                   "--workers", "0", "--device", "cpu", "--output", str(out)])
    assert res.exit_code == 0, res.output
    adapter = out / "glad" / "good-all" / "seed1" / "adapter"
    broken_adapter = root / "broken_adapter"
    broken_adapter.mkdir()
    (broken_adapter / "adapter_config.json").write_text("{oops")
    peft_folder = root / "peft_adapter"
    peft_folder.mkdir()
    (peft_folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (root / "export").mkdir()
    (root / "export" / "open_clip_model.safetensors").write_bytes(b"earlier")
    return {"root": root, "data": data, "good": good, "adapter": adapter, "out": out}


T = ["train", "--dataset", "imagefolder:{good}", "--model", TINY_MODEL, "--pretrained", "none", "--device", "cpu",
     "--workers", "0", "--output", "{root}/new"]
SETTINGS = [  # (flags added to a good train command, what the line must say)
    (["--lr", "-1"], "--lr"), (["--lr", "nan"], "lr"), (["--lr", "abc"], "--lr"), (["--wd", "-1"], "--wd"),
    (["--epochs", "0"], "--epochs"), (["--batch-size", "0"], "--batch-size"), (["--shots", "-1"], "--shots"),
    (["--protocol", "few-shot", "--shots", "0"], "--shots"), (["--shots", "1", "--shots", "2"], "few-shot"),
    (["--seed", "1", "--seeds", "2"], "conflict"), (["--max-iters", "0"], "--max-iters"),
    (["--max-iters", "-1"], "--max-iters"), (["--warmup-iters", "-5"], "--warmup-iters"),
    (["--checkpoint-every", "-3"], "--checkpoint-every"), (["--eval-batch-size", "0"], "--eval-batch-size"),
    (["--lora-r", "0"], "--lora-r"), (["--lora-alpha", "0"], "alpha"), (["--lora-alpha", "inf"], "alpha"),
    (["--lora-dropout", "1.0"], "--lora-dropout"), (["--lora-dropout", "-0.1"], "--lora-dropout"),
    (["--rho", "-1"], "--rho"), (["--gradreg-alpha", "1.5"], "--gradreg-alpha"), (["--delta", "0"], "--delta"),
    (["--kl-weight", "-1"], "--kl-weight"), (["--precision", "fp8"], "--precision"),
    (["--precision", "fp16"], "--precision"), (["--eval-precision", "fp8"], "--eval-precision"),
    (["--device", "tpu"], "--device"), (["--device", "cuda:x"], "--device"), (["--parallel", "foo"], "--parallel"),
    (["--shard", "3/2"], "--shard"), (["--shard", "x"], "--shard"), (["--crop-scale", "0", "1"], "--crop-scale"),
    (["--crop-scale", "0.9", "0.5"], "--crop-scale"), (["--template", "no slot"], "--template"),
    (["--template", "{} and {}"], "--template"), (["--protocol", "zero-shot"], "--protocol"),
    (["--method", "coop"], "--method"), (["--image-cache-gb", "-1"], "--image-cache-gb"),
    (["--workers", "-1"], "--workers"), (["--grad-clip", "0"], "--grad-clip"), (["--lora-targets", "qkv"], "qkv"),
    (["--lora-encoders", "audio"], "audio"), (["--lr"], "--lr"), (["--no-such-flag"], "no-such-flag"),
    (["--config", "{root}/missing.yaml"], "missing.yaml"), (["--config", "{root}/bad.yaml"], "YAML"),
    (["--config", "{root}/list.yaml"], "mapping"), (["--config", "{root}/unknown.yaml"], "learning_rat"),
]
DATA = [  # (train command's dataset spec, what the line must say)
    ("dtd", "dtd"), ("imagefolder:{root}/nowhere", "not found"), ("imagefolder:{root}/empty", "no class folders"),
    ("imagefolder:{root}/one_class", "at least two"), ("imagefolder:{root}/one_image", "no test image"),
    ("imagefolder:{root}/looped", "a cycle"),
    ("{root}/empty.csv", "empty"), ("{root}/nolabel.csv", "row 2"), ("{root}/split.csv", "holdout"),
    ("{root}/header.csv", "'label'"), ("{root}/missing.csv", "missing.csv"), ("{root}/missing.json", "missing.json"),
    ("nosuchdataset", "nosuchdataset"),
]
MODELS = [  # (flags replacing the model's, what the line must say)
    (["--model", "ViT-B-99"], "unknown model"), (["--model", "ViT-B-16", "--pretrained", "nosuchtag"], "nosuchtag"),
    (["--model", "ViT-B-16", "--pretrained", "{root}/none.safetensors"], "none.safetensors"),
    (["--model", "ViT-B-16", "--pretrained", "{root}/not_weights"], "folder"),
    (["--model", "local-dir:{root}/nowhere"], "open_clip_config.json"),
    (["--model", TINY_MODEL, "--pretrained", "none", "--tokenizer", "{root}/no_tokenizer"], "--tokenizer"),
    (["--model", TINY_MODEL, "--pretrained", "{root}/a.png"], "a.png"),
]
OUTPUTS_AND_ADAPTERS = [  # (a whole command, what the line must say)
    (["train", "--dataset", "imagefolder:{good}", "--model", TINY_MODEL, "--pretrained", "none", "--device", "cpu",
      "--output", "{root}/a-file"], "is a file"),
    (["train", "--dataset", "imagefolder:{good}", "--model", TINY_MODEL, "--pretrained", "none", "--device", "cpu",
      "--method", "glad", "--seed", "1", "--lr", "0.5", "--output", "{out}"], "other settings"),
    (["predict", "--adapter", "{adapter}", "{root}/*.jpeg"], "no images"),
    (["eval", "--adapter", "{root}/nowhere", "--dataset", "imagefolder:{good}"], "nowhere"),
    (["eval", "--adapter", "{root}/broken_adapter", "--dataset", "imagefolder:{good}"], "not valid JSON"),
    (["eval", "--adapter", "{root}/peft_adapter", "--dataset", "imagefolder:{good}"], "PEFT adapter"),
    (["eval", "--adapter", "{adapter}", "--dataset", "imagefolder:{good}", "--model", "glad-tiny",
      "--pretrained", "none"], "was trained on"),
    (["eval", "--adapter", "{adapter}", "--dataset", "imagefolder:{root}/nowhere"], "not found"),
    (["eval", "--adapter", "{adapter}", "--dataset", "imagefolder:{good}", "--batch-size", "0"], "batch"),
    (["predict", "--adapter", "{adapter}", "{good}/test", "--template", "no slot"], "--template"),
    (["predict", "--adapter", "{adapter}", "{good}/test", "--output", "{root}/p.xlsx"], ".csv or .json"),
    (["predict", "--adapter", "{adapter}", "{good}/test", "--output", "{root}/notes.csv"], "--force"),
    (["predict", "--adapter", "{adapter}", "{root}/empty"], "no images"),
    (["predict", "--adapter", "{adapter}", "{good}/test", "--classes", "{root}/none.txt"], "none.txt"),
    (["predict", "--adapter", "{adapter}", "{good}/test", "--top-k", "0"], "--top-k"),
    (["predict", "--adapter", "{root}/broken_adapter", "{good}/test"], "not valid JSON"),
    (["export", "--adapter", "{adapter}", "--output", "{root}/export"], "--force"),
    (["export", "--adapter", "{adapter}", "--output", "{root}/a-file"], "is a file"),
    (["export", "--adapter", "{root}/nowhere", "--output", "{root}/e2"], "nowhere"),
    (["report", "{root}/nowhere"], "nowhere"),
]
CASES = ([(f"setting {' '.join(flags)}", T + flags, needle) for flags, needle in SETTINGS]
         + [(f"data {spec}", [*T[:1], "--dataset", spec, *T[3:]], needle) for spec, needle in DATA]
         + [(f"model {' '.join(flags)}", [*T[:3], *flags, *T[7:]], needle) for flags, needle in MODELS]
         + [(" ".join(argv[:2]) + f" ({needle})", argv, needle) for argv, needle in OUTPUTS_AND_ADAPTERS])


def _fill(text: str, world: dict) -> str:
    for key, value in world.items():
        text = text.replace("{" + key + "}", str(value))
    return text


@pytest.mark.parametrize("name,argv,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(world, name, argv, needle):
    before = sorted(os.listdir(world["root"]))
    args = [_fill(a, world) for a in argv]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, f"{name}: {res.exit_code}\n{res.output}\n{res.exception!r}"
    errors = [line for line in res.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    assert _fill(needle, world) in errors[0], errors[0]
    assert sorted(os.listdir(world["root"])) == before, f"{name} wrote into the folder"


def test_unreadable_images_are_named_at_the_jobs_start_all_at_once(world):
    """Image files are opened when their job starts (reading every header up front would cost
    minutes on ImageNet): before any training step, every bad file in one line."""
    out = world["root"] / "broken_run"
    res = CliRunner().invoke(cli, ["train", "--dataset", f"imagefolder:{world['root'] / 'broken'}", "--model",
                                   TINY_MODEL, "--pretrained", "none", "--device", "cpu", "--workers", "0",
                                   "--output", str(out)])
    assert res.exit_code == 2 and "cannot decode 3 image(s)" in res.output, res.output
    assert not list(out.rglob("adapter_model.safetensors")) and not list(out.rglob("checkpoints"))


def test_the_inventory(capsys):
    with capsys.disabled():
        print(f"\nbad inputs checked: {len(CASES) + 1} (unreadable images, settings {len(SETTINGS)}, data {len(DATA)}, models {len(MODELS)}, "
              f"outputs and adapters {len(OUTPUTS_AND_ADAPTERS)})")
    assert len(CASES) + 1 >= 90  # and the unreadable-images case above
