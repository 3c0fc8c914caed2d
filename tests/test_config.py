"""Typed run settings: validation names the flag and the fix."""

import re

import pytest

from glad.config import METHODS, ConfigError, TrainConfig


def test_defaults_match_the_paper():
    cfg = TrainConfig().validate()
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.lora_r, cfg.rho, cfg.gradreg_alpha) == (20, 1e-3, 32, 8, 0.1, 0.5)
    assert cfg.methods == ["glad"] and METHODS["glad"].alignnet and METHODS["glad"].gradreg_mode == "gradreg"
    assert not METHODS["lora"].kl and METHODS["lora-sam"].gradreg_mode == "sam"


@pytest.mark.parametrize("field,value,flag", [
    ("gradreg_alpha", 1.5, "--gradreg-alpha"), ("rho", -0.1, "--rho"), ("shots", [0], "--shots"),
    ("protocol", "zero-shot", "protocol"), ("methods", ["coop"], "method"), ("precision", "fp8", "--precision"),
    ("max_iters", 0, "--max-iters"), ("warmup_iters", -5, "--warmup-iters"),
    ("checkpoint_every", -3, "--checkpoint-every"), ("eval_batch_size", 0, "--eval-batch-size"),
    ("lora_encoders", ["audio"], "--lora-encoders"), ("lora_targets", ["qkv"], "--lora-targets"),
])
def test_invalid_settings_are_named(field, value, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**{field: value}).validate()


def test_round_trip_and_unknown_keys():
    cfg = TrainConfig(shots=[4], seeds=[1])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="lr_rate"):
        TrainConfig.from_dict({"lr_rate": 1})


@pytest.mark.parametrize("field,value,needle", [
    ("epochs", "3", "--epochs must be an integer"), ("lr", "1e-3", "--lr must be a number"),
    ("lr", float("inf"), "--lr must be a finite number"), ("rho", float("nan"), "--rho must be a finite"),
    ("seeds", [1, "2"], "--seeds must be an integer"), ("rslora", "yes", "--rslora must be true or false"),
    ("template", "{} and {}", "--template must hold exactly one {}"), ("device", "gpu", "--device"),
])
def test_wrong_types_and_non_finite_numbers_are_named(field, value, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        TrainConfig(**{field: value}).validate()


def test_flag_spellings_and_did_you_mean():
    from glad.config import canonical_settings

    assert canonical_settings({"dataset": "dtd", "seed": 2, "batch-size": 8, "grad-clip-norm": 1.0}) == {
        "datasets": ["dtd"], "seeds": [2], "batch_size": 8, "grad_clip": 1.0}
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        canonical_settings({"epochz": 1})
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        canonical_settings({"learning-rate": 1})


@pytest.mark.parametrize("flags", [["--max-iters", "0"], ["--seed", "1", "--seeds", "2"], ["--lr", "-1"],
                                   ["--lora-targets", "qkv"], ["--shots", "0"]])
def test_bad_settings_are_refused_before_torch_is_imported(flags):
    """A mistyped setting costs a Python start, not torch's import (seconds on a cold disk)."""
    import subprocess
    import sys

    code = ("import sys\nfrom glad_cli.main import cli\ntry:\n    cli(['train', '--dataset', 'dtd', *sys.argv[1:]])\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code, *flags], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "exit 2 False", (res.stdout, res.stderr)
    assert len([line for line in res.stderr.splitlines() if "error" in line.lower()]) == 1, res.stderr


def test_every_train_option_is_its_trainconfig_field():
    """`glad train`'s options are generated from TrainConfig: the same name, default, type, choices
    and help; a field without an option (or an option shadowing a field) fails here."""
    import dataclasses
    import typing

    import click
    from glad_cli.main import cli

    from glad.config import FIELD_TYPES, TrainConfig, option_name

    params = {p.name: p for p in cli.commands["train"].params}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if not meta["cli"]:
            continue
        p = params.pop(f.name)
        assert option_name(f.name) in p.opts
        assert p.help == (meta["help"].format(meta["note"]()) if meta["note"] else meta["help"])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        got = list(p.default) if isinstance(p.default, tuple) else p.default
        assert got == default, f.name
        if meta["choices"]:
            assert list(p.type.choices) == list(meta["choices"])
        annotation = FIELD_TYPES[f.name]
        if type(None) in typing.get_args(annotation):  # X | None
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        base = [annotation]
        is_list = typing.get_origin(base[0]) is list
        assert p.multiple == (is_list and meta["nargs"] is None), f.name
        inner = typing.get_args(base[0])[0] if is_list else base[0]
        if inner is not bool and not meta["choices"]:
            assert p.type == click.types.convert_type(inner), f.name
    # what is left are the hand-written options: plural fields behind singular flags, and CLI-only ones
    assert set(params) == {"config", "datasets", "seeds", "seed", "methods", "threads", "resume", "demo"}
