"""Argument checks shared by every backend: clear errors before any kernel runs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _as_list(tensors, name):
    if isinstance(tensors, torch.Tensor):
        raise TypeError(f"{name} must be a list of tensors, got a single Tensor; wrap it: [{name}]")
    if not isinstance(tensors, Sequence):
        tensors = list(tensors)
    return tensors


def _span(t):
    """[first byte, one past the last byte) of the memory `t` may touch, or None if empty.

    Addresses, not storages: two tensors can only share memory where these ranges meet.
    """
    n = t.numel()
    if n == 0:
        return None
    start = t.data_ptr()
    size = t.element_size()
    if t.is_contiguous():
        return start, start + n * size
    low = sum((k - 1) * st for k, st in zip(t.shape, t.stride(), strict=True) if st < 0)
    high = sum((k - 1) * st for k, st in zip(t.shape, t.stride(), strict=True) if st > 0)
    return start + low * size, start + (high + 1) * size


def _check_no_overlap(written, written_name, read, read_name, index):
    """Rejects a written tensor that shares memory with any other tensor of either list.

    Conservative: two strided views that interleave without touching the same
    element are rejected too (their spans overlap).
    """
    spans = []
    for lst, which in ((written, 0), (read, 1)):
        for i, t in enumerate(lst):
            s = _span(t)
            if s is not None:
                spans.append((s[0], s[1], which, index[i]))
    spans.sort()
    names = (written_name, read_name)
    # Sweep in order of start, keeping the span that reaches furthest: the first overlap
    # that involves a written tensor is always an overlap with that span.
    prev = None
    for cur in spans:
        if prev is not None and cur[0] < prev[1] and (prev[2] == 0 or cur[2] == 0):
            a, b = names[prev[2]] + f"[{prev[3]}]", names[cur[2]] + f"[{cur[3]}]"
            raise ValueError(
                f"{a} and {b} share memory; the op writes {written_name} in place, so every tensor "
                f"it writes must have its own memory. Pass a copy (e.g. {b}.clone())."
            )
        if prev is None or cur[1] > prev[1]:
            prev = cur


def _explain(i, a, b, first_name, second_name, device):
    """Raises the error that describes what is wrong with pair i."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        bad = first_name if not isinstance(a, torch.Tensor) else second_name
        raise TypeError(f"{bad}[{i}] is a {type(a if bad == first_name else b).__name__}; expected a Tensor or None.")
    if a.shape != b.shape:
        raise ValueError(
            f"{first_name}[{i}] has shape {tuple(a.shape)} but {second_name}[{i}] has shape "
            f"{tuple(b.shape)}; each pair must have the same shape."
        )
    if a.dtype != b.dtype:
        raise TypeError(
            f"{first_name}[{i}] is {a.dtype} but {second_name}[{i}] is {b.dtype}; each pair must "
            f"have one dtype (cast one of them with .to({a.dtype}))."
        )
    if a.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{first_name}[{i}] is {a.dtype}; supported dtypes are float32, float16 and bfloat16.")
    other = a.device if a.device != device else b.device
    raise ValueError(
        f"pair {i} is on {other} but earlier tensors are on {device}; all tensors of one call "
        f"must be on one device (call the op once per device)."
    )


def check_pairs(first, second, first_name, second_name, *, check_alias=True):
    """Validates two parallel lists and drops the pairs holding a None.

    Returns (firsts, seconds, kept) where kept are the indices of the pairs
    kept. Every kept pair must agree in shape and dtype, be fp32/fp16/bf16, and
    all tensors must live on one device.
    """
    first = _as_list(first, first_name)
    second = _as_list(second, second_name)
    if len(first) != len(second):
        raise ValueError(
            f"{first_name} has {len(first)} tensors but {second_name} has {len(second)}; "
            f"pass one {second_name} entry (or None) for each of {first_name}."
        )
    a_list, b_list, kept = [], [], []
    device = None
    tensor, supported = torch.Tensor, SUPPORTED_DTYPES
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        if a is None or b is None:
            continue
        # One cheap test per pair; the slow path below only runs to word the error.
        if not (type(a) is tensor or isinstance(a, tensor)) or not (type(b) is tensor or isinstance(b, tensor)):
            _explain(i, a, b, first_name, second_name, device)
        dtype = a.dtype
        if device is None:
            device = a.device
        if a.shape != b.shape or dtype is not b.dtype or dtype not in supported or a.device != device \
                or b.device != device:
            _explain(i, a, b, first_name, second_name, device)
        a_list.append(a)
        b_list.append(b)
        kept.append(i)
    # Memory addresses do not exist while torch.compile traces (fake tensors); eager calls check.
    if check_alias and a_list and not torch.compiler.is_compiling():
        _check_no_overlap(a_list, first_name, b_list, second_name, kept)
    return a_list, b_list, kept
