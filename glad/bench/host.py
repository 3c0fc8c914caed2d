"""`glad bench host`: host time per call, what validation and dispatch cost beside the kernels
(CPU here; on a GPU this is the time the device can sit idle waiting for the host).

On 150 one-element tensors (the adapter's tensor count, almost no arithmetic):
glad.ops.project_interpolate_ and sam_perturb_ + sam_restore_ through the public API
(validation cached after the first call) and as the bare glad:: C++ ops; and the teacher
pass's switching of the adapters off and on for a model (walking the model vs the modules
collected once). Wall microseconds per call, best of 5 repeats of 300 calls (50 for the switch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glad.bench import backbone
from glad.bench import report as reports
from glad.bench.timing import per_call_us


@dataclass
class Config:
    """Settings of `glad bench host` (CLI flags map one-to-one)."""

    model: str = "ViT-B-16"
    calls: int = 300
    repeats: int = 5


def run(cfg: Config, progress=None, command: str | None = None) -> dict:
    import glad.ops as ops
    from glad.models import GladModel, adapters_disabled
    from glad.ops import _native

    say = progress or (lambda _msg: None)
    if cfg.calls < 1 or cfg.repeats < 1:
        raise ValueError(f"calls and repeats must be >= 1, got {cfg.calls} and {cfg.repeats}")
    torch.set_num_threads(1)
    report = reports.start("host", cfg, torch.device("cpu"), "wall", command)

    def us(fn, calls=cfg.calls):
        return per_call_us(fn, calls=calls, repeats=cfg.repeats)

    g, r, p = ([torch.randn(1) for _ in range(150)] for _ in range(3))
    out = {}
    backends = ["reference"] + (["cpu"] if _native.BUILT else [])
    for backend in backends:
        say(f"ops, {backend} backend")
        state = [None]

        def perturb_restore(backend=backend, state=state):
            s = ops.sam_perturb_(p, g, 0.01, backend=backend, backup=state[0] and state[0].backup)
            ops.sam_restore_(p, s)
            state[0] = s

        out[f"project_{backend}"] = us(lambda b=backend: ops.project_interpolate_(g, r, 0.5, backend=b))
        out[f"perturb_restore_{backend}"] = us(perturb_restore)
    if "cpu" in backends:
        backup = [torch.empty(1) for _ in range(150)]
        out["project_bare_cpp_op"] = us(lambda: torch.ops.glad.project_interpolate_(g, r, 0.5, 1e-12))
        out["perturb_restore_bare_cpp_ops"] = us(
            lambda: (torch.ops.glad.sam_perturb_(p, g, backup, 0.01), torch.ops.glad.sam_restore_(p, backup)))

    say(f"teacher switch, {cfg.model}")
    clip, tokenizer, _ = backbone.load_backbone(cfg.model, None, "cpu")
    model = GladModel(clip, tokenizer, lora=backbone.lora_config())

    def walked():
        with adapters_disabled(model), adapters_disabled(model):
            pass

    def collected():
        with adapters_disabled(model, model.adapter_switches()), adapters_disabled(model, model.adapter_switches()):
            pass

    out["teacher_switch_walking_the_model"] = us(walked, calls=max(1, cfg.calls // 6))
    out["teacher_switch_collected_once"] = us(collected, calls=max(1, cfg.calls // 6))
    report["unit"] = "us per call"
    return reports.finish(report, results=out)


LABELS = {
    "project_cpu": "project_interpolate_, cpu backend (validation cached)",
    "project_bare_cpp_op": "the same as the bare glad::project_interpolate_ C++ op",
    "perturb_restore_cpu": "sam_perturb_ + sam_restore_, cpu backend (validation cached)",
    "perturb_restore_bare_cpp_ops": "the same as the bare C++ ops",
    "project_reference": "project_interpolate_, reference backend",
    "perturb_restore_reference": "sam_perturb_ + sam_restore_, reference backend",
    "teacher_switch_walking_the_model": "teacher pass: adapters off and on, nested, walking the model",
    "teacher_switch_collected_once": "the same with the modules collected once (what the step does)",
}


def table(report: dict) -> str:
    cfg = report["config"]
    lines = reports.header(report, f"150 one-element tensors; {cfg['model']} for the switch; best of {cfg['repeats']}")
    lines += ["| call | µs per call |", "|---|---:|"]
    for key in sorted(report["results"], key=lambda k: list(LABELS).index(k) if k in LABELS else len(LABELS)):
        lines.append(f"| {LABELS.get(key, key)} | {report['results'][key]:.1f} |")
    return "\n".join(lines)
