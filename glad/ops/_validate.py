"""Argument checks shared by every backend: clear errors before any kernel runs."""

from __future__ import annotations

import operator
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from itertools import repeat

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


# Lists validated recently: a training loop passes the same tensors every step, and
# validating 150 of them costs more host time than the kernels take on a GPU. An entry holds
# the ids of the lists' items, weak references to the result's tensors (so a finished job's
# buffers are freed; a result whose tensor died is a miss) and a fingerprint of the tensors'
# addresses, shapes, strides, dtypes and devices, which is all a validation depends on: so
# `.data =`, `set_()` or an in-place resize between calls is noticed, and a new tensor at a
# reused id is only ever taken for one that would pass the same checks.
_CACHE_SIZE = 8
_validated: OrderedDict[tuple, tuple] = OrderedDict()
_Ref = weakref.ref


class _Dead(Exception):
    """A weakly held tensor is gone."""


class _Refs(tuple):
    """Weak references to a list or tuple of tensors (`kind`)."""

    kind: type


class _Nested(tuple):
    """A list or tuple (`kind`) holding tensors or sequences, each weakened."""

    kind: type


def _sequence(cls, items, kind):
    out = cls(items)
    out.kind = kind
    return out


def _weak(obj):
    """`obj` with every tensor in its (nested) tuples and lists held by a weak reference."""
    if isinstance(obj, torch.Tensor):
        return _Ref(obj)
    if isinstance(obj, (tuple, list)):
        if obj and all(isinstance(x, torch.Tensor) for x in obj):
            return _sequence(_Refs, map(_Ref, obj), type(obj))
        if any(isinstance(x, (torch.Tensor, tuple, list)) for x in obj):
            return _sequence(_Nested, map(_weak, obj), type(obj))
    return obj  # no tensor inside (indices, numbers): kept as it is


def _strong(obj):
    """The inverse of `_weak`; raises _Dead when a tensor is gone."""
    kind = type(obj)
    if kind is _Refs:  # a list of tensors: C-level passes only
        out = list(map(_Ref.__call__, obj))
        if any(map(operator.is_, out, repeat(None))):
            raise _Dead
        return out if obj.kind is list else obj.kind(out)
    if kind is _Nested:
        return obj.kind(map(_strong, obj))
    if kind is _Ref:
        target = obj()
        if target is None:
            raise _Dead
        return target
    return obj


def clear_validation_cache() -> None:
    """Forget the lists validated so far (and drop the references the cache holds)."""
    _validated.clear()


def _python_fingerprint(lists):
    return [(t.data_ptr(), t.shape, t.stride(), t.dtype, t.device) for tensors in lists for t in tensors]


def _fingerprint_function():
    """The compiled fingerprint when glad._C has it (one C++ pass), else the same in Python."""
    try:
        from glad import _C
    except ImportError:
        return _python_fingerprint
    if not hasattr(_C, "tensor_fingerprint"):  # an extension built before it existed
        return _python_fingerprint
    return lambda lists: _C.tensor_fingerprint([list(x) for x in lists])


_fingerprint = None


def _pointers(lists):
    global _fingerprint
    if _fingerprint is None:
        _fingerprint = _fingerprint_function()
    return _fingerprint(lists)


def cached_check(key: tuple, inputs: tuple, check, outputs):
    """`check()`, reused while the lists in `inputs` hold the same objects as at the last call
    under `key` and the tensor lists `outputs(result)` keep their addresses."""
    if torch.compiler.is_compiling():
        return check()
    entry = _validated.get(key)
    if entry is not None:
        ids, pointers, weak_result = entry
        if all(list(map(id, x)) == seen for x, seen in zip(inputs, ids, strict=True)):
            try:
                result = _strong(weak_result)
            except _Dead:
                result = None
            if result is not None and _pointers(outputs(result)) == pointers:
                _validated.move_to_end(key)
                return result
    result = check()
    _validated[key] = (tuple(list(map(id, x)) for x in inputs), _pointers(outputs(result)), _weak(result))
    _validated.move_to_end(key)
    while len(_validated) > _CACHE_SIZE:
        _validated.popitem(last=False)
    return result


def check_pairs(first, second, first_name, second_name, *, check_alias=True):
    """Validates two parallel lists and drops the pairs holding a None.

    Returns (firsts, seconds, kept) where kept are the indices of the pairs
    kept. Every kept pair must agree in shape and dtype, be fp32/fp16/bf16, and
    all tensors must live on one device. A call with the same tensors as a recent
    one (same objects, same addresses) reuses that validation.
    """
    first = _as_list(first, first_name)
    second = _as_list(second, second_name)
    key = ("pairs", first_name, second_name, check_alias, id(first[0]) if first else None)
    return cached_check(key, (first, second),
                        lambda: _check_pairs(first, second, first_name, second_name, check_alias),
                        outputs=lambda result: result[:2])


def _check_pairs(first, second, first_name, second_name, check_alias):
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
