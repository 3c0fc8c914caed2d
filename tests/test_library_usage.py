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
