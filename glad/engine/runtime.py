"""Where a run executes: device, precision and (under torchrun) the process group."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from glad.config import ConfigError, launch_ranks  # noqa: F401 - where the engine reads them


@dataclass
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    rank: int = 0
    world_size: int = 1
    eval_precision: str = "fp32"  # fp32 | fp16 | bf16: autocast of evaluation passes
    precision: str = "fp32"  # training: fp32 | bf16 (autocast) | amp (fp16 autocast, loss scaling)
    deterministic: bool = False  # deterministic algorithms (numerics())
    tf32: bool = False  # TF32 tensor cores for fp32 matmuls and convolutions (numerics())

    @contextlib.contextmanager
    def numerics(self):
        """The run's process-wide numerics (TF32, deterministic algorithms) for the block; the
        caller's settings are back after. glad's train and eval entry points run inside it;
        a library user's Classifier or model calls change nothing."""
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                 torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                 os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
        try:
            if self.deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True, warn_only=True)
            if self.tf32:
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
            yield self
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0], saved[1]
            torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
            if saved[4] is None:
                os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
            else:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]

    def grad_scaler(self):
        """A GradScaler for fp16 autocast ("amp"), else None (bf16 and fp32 need none)."""
        if self.autocast_dtype is not torch.float16:
            return None
        return torch.amp.GradScaler(self.device.type)

    @property
    def eval_dtype(self) -> torch.dtype | None:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.eval_precision)

    def eval_autocast(self):
        if self.eval_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.eval_dtype)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def setup_runtime(device: str = "auto", precision: str = "auto", deterministic: bool = False,
                  eval_precision: str = "auto", distributed: bool = True) -> Runtime:
    """Pick the device and precision; join the process group when started by torchrun (unless
    `distributed` is False: each process then works alone, on its LOCAL_RANK's GPU)."""
    launched_rank, launched_world, local_rank = launch_ranks()
    world_size = launched_world if distributed else 1
    rank = launched_rank if distributed else 0
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {device}: no CUDA device is visible here; use --device cpu "
                              "(or auto, which picks a GPU when there is one)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: only {count} CUDA device(s) are visible (cuda:0 to "
                              f"cuda:{count - 1})")
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    precision = {"amp_bf16": "bf16"}.get(precision, precision)  # open_clip's name, the same thing
    if precision == "auto":  # bf16 where the GPU has it, else fp16 with loss scaling
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "amp"
        else:
            precision = "fp32"
    # fp32 on a GPU: TF32 tensor cores for matmuls and convolutions (10-bit mantissa products,
    # fp32 accumulation), as open_clip and timm train; applied by Runtime.numerics()
    tf32 = not deterministic and dev.type == "cuda" and precision == "fp32"
    dtype = {"bf16": torch.bfloat16, "amp": torch.float16}.get(precision)
    if eval_precision == "auto":  # CoOp's published CLIP numbers are fp16 ones
        eval_precision = "fp16" if dev.type == "cuda" else "fp32"
    return Runtime(device=dev, autocast_dtype=dtype, rank=rank, world_size=world_size,
                   eval_precision=eval_precision, precision=precision, deterministic=deterministic, tf32=tf32)
