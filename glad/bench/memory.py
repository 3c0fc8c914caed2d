"""Memory a workload holds: bytes kept between steps, transient peaks, the resident set."""

from __future__ import annotations

import os
import resource

import torch


def state_bytes(model, optimizer=None) -> int:
    """Bytes of every distinct storage a method keeps between steps: weights, buffers,
    gradients, optimizer state and GradReg's gradient buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        base = optimizer.base_optimizer
        tensors += [v for s in base.state.values() for v in s.values() if torch.is_tensor(v)]
        buffers = getattr(optimizer, "_buffers", None)  # the two flat gradient buffers
        for flats in getattr(buffers, "flat", []):
            tensors += list(flats)
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def transient_peak_bytes(fn, device: torch.device) -> int | None:
    """Peak bytes allocated by `fn` above what was allocated when it started (None if unknown).

    CUDA: the caching allocator's peak counter. CPU: the profiler's allocation events,
    whose running total is the allocations made since profiling began.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        peak, todo = 0, list(prof.profiler.kineto_results.experimental_event_tree())
        while todo:
            event = todo.pop()
            if event.tag == _EventType.Allocation:
                peak = max(peak, event.extra_fields.total_allocated)
            todo.extend(event.children)
        return int(peak)
    except Exception:  # private profiler API: a torch without it simply reports no number
        return None


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's largest resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
