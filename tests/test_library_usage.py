"""The README's library example, on a tiny CLIP: the public pieces compose into a GLAD loop."""

import torch

from glad.models import GladModel, LoraConfig, glad_loss, load_adapter, save_adapter
from glad.models.testing import build_tiny_clip
from glad.optim import GradReg


def test_readme_training_loop(tmp_path):
    clip, tokenizer = build_tiny_clip(seed=1)
    model = GladModel(clip, tokenizer, lora=LoraConfig(r=8), use_alignnet=True, model_name="tiny", pretrained=None)
    classnames = ["red circle", "blue square", "green triangle"]
    tokens = model.tokenize([f"a photo of a {c}." for c in classnames])
    base = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2, weight_decay=1e-2)
    opt = GradReg(model.trainable_parameters(), base, rho=0.1, alpha=0.5, mode="gradreg", model=model)
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    losses = []
    for _ in range(8):
        teacher = model.zeroshot_logits(images, tokens)

        def closure(teacher=teacher):
            opt.zero_grad()
            loss, _ = glad_loss(model(images, tokens), labels, teacher, kl_weight=1.0)
            loss.backward()
            return loss

        losses.append(opt.step(closure).detach().item())  # the closure's loss, as torch optimizers return it
    assert losses[-1] < losses[0]
    save_adapter(model, tmp_path / "adapter")
    fresh = GladModel(build_tiny_clip(seed=1)[0], tokenizer, lora=LoraConfig(r=8), use_alignnet=True,
                      model_name="tiny", pretrained=None)
    load_adapter(fresh, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(fresh(images, tokens), model(images, tokens), atol=1e-6)


def test_importing_glad_changes_no_process_wide_setting():
    """Importing glad registers nothing, switches nothing: no dataset provider, no TF32, no
    deterministic mode, no offline hub (a fresh interpreter, as a user's script starts)."""
    import subprocess
    import sys

    code = (
        "import os, torch\n"
        "before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,\n"
        "          torch.are_deterministic_algorithms_enabled(), os.environ.get('HF_HUB_OFFLINE'))\n"
        "import glad, glad.engine, glad.engine.runner, glad.engine.use, glad.models, glad.ops, glad.optim\n"
        "import glad.providers as registry\n"
        "after = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,\n"
        "         torch.are_deterministic_algorithms_enabled(), os.environ.get('HF_HUB_OFFLINE'))\n"
        "assert before == after, (before, after)\n"
        "assert registry._providers == {}, registry._providers\n"
        "print('ok')\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_a_runs_numerics_are_scoped_to_it():
    """TF32 and deterministic algorithms are the run's (glad train / eval enter Runtime.numerics);
    the caller's settings are back after, also after an error."""
    from glad.engine.runtime import Runtime

    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled())
    runtime = Runtime(device=torch.device("cpu"), tf32=True, deterministic=True)
    try:
        with runtime.numerics():
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
            assert torch.are_deterministic_algorithms_enabled()
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.are_deterministic_algorithms_enabled()) == flags
