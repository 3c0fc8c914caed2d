"""The built-in default run: glad-tiny on the procedurally generated world, offline, in minutes.

`glad train` with neither a dataset nor a model runs this. The settings below are
sized so that the whole base-to-novel comparison (zero-shot, the CLIP-LoRA
baseline and GLAD) finishes in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

BUILTIN_MODEL = "glad-tiny"
BUILTIN_PRETRAINED = "glad-world"
BUILTIN_METHODS = ["zeroshot", "lora", "glad"]

# Few-shot training on 32px images with a tiny model: shorter schedule, same recipe.
BUILTIN_TRAINING = {"shots": [16], "epochs": 10, "batch_size": 32, "lr": 1e-3, "seeds": [1, 2, 3], "workers": 0,
                    "eval_batch_size": 256}


def use_builtin_datasets() -> None:
    """Let dataset names reach glad's built-in world: glad.world registers its datasets and
    protocol variants when a name nobody registered is first asked for (it provides them like
    a user's package). glad's train and eval ask for it; importing glad changes nothing."""
    from glad.providers import register_provider

    register_provider("glad.world")


def builtin_datasets(protocol: str) -> list[str]:
    """Dataset names of the built-in world for a protocol (transfer: source first, then targets)."""
    from glad.data import get_protocol

    use_builtin_datasets()
    spec = get_protocol(protocol, variant="builtin")  # registered by glad.world
    if spec.source is None:
        return list(spec.targets)
    return [spec.source, *spec.targets]


def builtin_overrides(protocol: str) -> dict:
    """TrainConfig fields of the built-in default for `protocol`."""
    training = dict(BUILTIN_TRAINING)
    if protocol == "few-shot":
        training["shots"] = [1, 4, 16]
    return {"protocol": protocol, "datasets": builtin_datasets(protocol), "model": BUILTIN_MODEL,
            "pretrained": BUILTIN_PRETRAINED, "methods": list(BUILTIN_METHODS),
            "output": _builtin_output(protocol), **training}


def _builtin_output(protocol: str) -> str:
    # Cross-dataset and domain generalization share their source model, as on ImageNet.
    if protocol in ("cross-dataset", "domain-generalization"):
        return "runs/builtin-transfer"
    return f"runs/builtin-{protocol}"
