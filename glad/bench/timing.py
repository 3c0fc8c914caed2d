"""How every glad benchmark takes its times: clocks, interleaved rounds, paired ratios.

On a shared machine a busy spell slows whatever runs during it, so providers run
interleaved (A B C, B C A, ...) and ratios come from times taken a moment apart.
On a CPU the default clock is the process's CPU time, summed over its threads, which does
not count time spent waiting for a core another process holds; on a GPU it is wall time
around a synchronised call, or CUDA events for device time.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections import defaultdict

import torch

CLOCK_NOW = {"cpu": time.process_time, "thread": time.thread_time, "wall": time.perf_counter}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"``: cuda when available, else cpu."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_clock(kind: str, threads: int | None = None) -> str:
    """What a clock counts, in the words a table states it."""
    threads = torch.get_num_threads() if threads is None else threads
    return {"cpu": f"process CPU time, summed over its {threads} torch thread{'s' * (threads != 1)} (not wall time)",
            "thread": "CPU time of the timing thread (one torch thread; not wall time)",
            "wall": "wall time",
            "cuda": "device time between CUDA events"}[kind]


class Clock:
    """Synchronised timing on one device: ``cpu`` (process CPU time), ``thread`` or ``wall`` seconds."""

    def __init__(self, device: torch.device, kind: str = "auto"):
        if kind == "auto":
            kind = "cpu" if device.type == "cpu" else "wall"
        if kind not in CLOCK_NOW:
            raise ValueError(f"clock must be auto, {', '.join(CLOCK_NOW)}; got {kind!r}")
        if kind != "wall" and device.type != "cpu":
            raise ValueError(f"clock {kind!r} times the host only; on {device} use --clock wall")
        self.device, self.kind = device, kind
        self.now = CLOCK_NOW[kind]

    def sync(self) -> None:
        sync(self.device)

    def describe(self) -> str:
        return describe_clock(self.kind)

    def measure(self, fn):
        """(seconds on this clock, wall seconds, fn's result) of one synchronised call."""
        self.sync()
        c0, w0 = self.now(), time.perf_counter()
        out = fn()
        self.sync()
        return self.now() - c0, time.perf_counter() - w0, out

    def median_seconds(self, fn, repeats: int, inner: int = 1) -> float:
        """Median over `repeats` of the mean seconds of `inner` back-to-back calls (one untimed call first)."""
        fn()
        times = []
        for _ in range(repeats):
            self.sync()
            start = self.now()
            for _ in range(inner):
                fn()
            self.sync()
            times.append((self.now() - start) / inner)
        return statistics.median(times)


def interleaved(clock: Clock, fns: dict, rounds: int, offset: int = 0, after_round=None):
    """Runs every callable of `fns` once per round, in an order rotated each round; returns
    ({name: [clock seconds]}, {name: [wall seconds]}). `after_round(r)` is called after each."""
    names = list(fns)
    times, walls = {n: [] for n in names}, {n: [] for n in names}
    for r in range(rounds):
        k = (r + offset) % len(names)
        for name in names[k:] + names[:k]:
            seconds, wall, _ = clock.measure(fns[name])
            times[name].append(seconds)
            walls[name].append(wall)
        if after_round is not None:
            after_round(r)
    return times, walls


def device_seconds(fn, device: torch.device, calls: int = 1):
    """(seconds per call on the device, host seconds per call issuing them; None on a CPU,
    where the two are one). On a GPU: `calls` back-to-back calls between two CUDA events."""
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls, None
    torch.cuda.synchronize(device)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    host = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - host) / calls
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3 / calls, host


def kernel_launches(fn, device: torch.device) -> int | None:
    """CUDA kernels one call launches (None off a GPU, or when the profiler cannot say)."""
    if device.type != "cuda":
        return None
    try:
        from torch.profiler import ProfilerActivity, profile

        fn()  # warm: first-call allocations are not the op's
        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize(device)
        return sum(1 for e in prof.events() if getattr(e, "device_type", None) is not None
                   and str(e.device_type).endswith("CUDA") and not e.name.startswith(("Memcpy", "Memset")))
    except Exception:  # noqa: BLE001 - a count is a nicety, never a failure
        return None


def per_call_us(fn, calls: int = 300, repeats: int = 5, warm: int = 20) -> float:
    """Best over `repeats` of the wall microseconds per call, over `calls` back-to-back calls."""
    for _ in range(warm):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return round(best * 1e6, 1)


def median(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def paired_ratio(num_times, den_times) -> float:
    """Median over rounds of the per-round ratio: blind to slow drifts of the machine's speed
    (both times of a round were taken a moment apart)."""
    return median([a / b for a, b in zip(num_times, den_times, strict=True) if b > 0])


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


class PartTimers:
    """Exclusive time per named part: wrapped callables, nested calls subtracted from their parent.

    A part opened with ``absorb=True`` (the teacher pass) counts everything inside it as its own.
    """

    def __init__(self, clock: Clock):
        self.clock = clock
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []

    def wrap(self, name: str, fn, absorb: bool = False):
        def timed(*args, **kwargs):
            if self._stack and self._stack[-1][2]:
                return fn(*args, **kwargs)
            self.clock.sync()
            start = self.clock.now()
            self._stack.append([name, 0.0, absorb])
            try:
                return fn(*args, **kwargs)
            finally:
                self.clock.sync()
                elapsed = self.clock.now() - start
                _, inner, _ = self._stack.pop()
                self.totals[name] += elapsed - inner
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed


@contextlib.contextmanager
def patched(patches):
    """Set (owner, attribute, value) for the block; put the old values back after."""
    saved = []
    try:
        for owner, name, value in patches:
            had = name in vars(owner)  # an instance attribute (or the class's own) to put back
            saved.append((owner, name, had, getattr(owner, name, None)))
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, had, old in reversed(saved):
            if had:
                setattr(owner, name, old)
            else:
                delattr(owner, name)
