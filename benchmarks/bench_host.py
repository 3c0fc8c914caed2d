"""Host time per call: what validation and dispatch cost beside the kernels (CPU here; on a GPU
this is the time the device can sit idle waiting for the host).

    python benchmarks/bench_host.py [--json OUT]

Measures on 150 one-element tensors (the adapter's tensor count, almost no arithmetic):
glad.ops.project_interpolate_ and sam_perturb_ + sam_restore_ through the public API
(validation cached after the first call) and as the bare glad:: C++ ops; and the teacher
pass's switching of the adapters off and on for ViT-B-16 (walking the model vs the modules
collected once). Microseconds per call, best of 5 repeats of 300 calls.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch


def per_call_us(fn, calls=300, repeats=5) -> float:
    for _ in range(20):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return round(best * 1e6, 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import open_clip

    import glad.ops as ops
    from glad.models import GladModel, LoraConfig, adapters_disabled
    from glad.ops import _native  # noqa: F401  (registers the glad:: ops)

    g = [torch.randn(1) for _ in range(150)]
    r = [torch.randn(1) for _ in range(150)]
    p = [torch.randn(1) for _ in range(150)]
    out = {}
    for backend in ("cpu", "reference"):
        state = [None]

        def perturb_restore(backend=backend, state=state):
            s = ops.sam_perturb_(p, g, 0.01, backend=backend, backup=state[0] and state[0].backup)
            ops.sam_restore_(p, s)
            state[0] = s

        out[f"project_{backend}"] = per_call_us(lambda b=backend: ops.project_interpolate_(g, r, 0.5, backend=b))
        out[f"perturb_restore_{backend}"] = per_call_us(perturb_restore)
    backup = [torch.empty(1) for _ in range(150)]
    out["project_bare_cpp_op"] = per_call_us(lambda: torch.ops.glad.project_interpolate_(g, r, 0.5, 1e-12))
    out["perturb_restore_bare_cpp_ops"] = per_call_us(
        lambda: (torch.ops.glad.sam_perturb_(p, g, backup, 0.01), torch.ops.glad.sam_restore_(p, backup)))

    logging.disable(logging.WARNING)
    model = GladModel(open_clip.create_model("ViT-B-16"), open_clip.get_tokenizer("ViT-B-16"), lora=LoraConfig())

    def walked():
        with adapters_disabled(model), adapters_disabled(model):
            pass

    def collected():
        with adapters_disabled(model, model.adapter_switches()), adapters_disabled(model, model.adapter_switches()):
            pass

    out["teacher_switch_walking_the_model"] = per_call_us(walked, calls=50)
    out["teacher_switch_collected_once"] = per_call_us(collected, calls=50)
    print(json.dumps(out, indent=2))
    if args.json:
        from glad.io import atomic_write_json
        from glad.provenance import machine_info

        atomic_write_json(args.json, {"command": "python benchmarks/bench_host.py --json " + args.json,
                                      "machine": machine_info(torch.device("cpu")), "unit": "us per call",
                                      "results": out})


if __name__ == "__main__":
    main()
