"""Typed run settings: validation names the flag and the fix."""

import pytest

from glad.config import METHODS, ConfigError, TrainConfig


def test_defaults_match_the_paper():
    cfg = TrainConfig().validate()
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.lora_r, cfg.rho, cfg.gradreg_alpha) == (20, 1e-3, 32, 8, 0.1, 0.5)
    assert cfg.methods == ["glad"] and METHODS["glad"].alignnet and METHODS["glad"].gradreg_mode == "gradreg"
    assert not METHODS["lora"].kl and METHODS["lora-sam"].gradreg_mode == "sam"


@pytest.mark.parametrize("field,value,flag", [
    ("gradreg_alpha", 1.5, "--gradreg-alpha"), ("rho", -0.1, "--rho"), ("shots", 0, "--shots"),
    ("protocol", "few-shot", "protocol"), ("methods", ["coop"], "method"), ("precision", "fp8", "--precision"),
])
def test_invalid_settings_are_named(field, value, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**{field: value}).validate()


def test_round_trip_and_unknown_keys():
    cfg = TrainConfig(shots=4, seeds=[1])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="lr_rate"):
        TrainConfig.from_dict({"lr_rate": 1})
