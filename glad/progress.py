"""Progress a person can see wherever glad runs: a tqdm bar on a terminal, and where stderr
is a file or a pipe (CI logs, nohup, SLURM) one plain line every `every` seconds."""

from __future__ import annotations

import sys
import time


class Progress:
    """`update(n)`, `set_postfix(**values)`, `close()`, as tqdm's bar; silent when not enabled."""

    def __init__(self, total: int, desc: str, *, initial: int = 0, enabled: bool = True, unit: str = "step",
                 every: float = 30.0, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n, self.postfix = initial, ""
        self.bar = None
        self.start = self.last = time.monotonic()
        self.enabled = enabled
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, file=self.stream)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def _line(self) -> None:
        elapsed = time.monotonic() - self.start
        share = self.n / self.total if self.total else 1.0
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s ({100 * share:.0f} %, {elapsed:.0f} s)"
              + (f", {self.postfix}" if self.postfix else ""), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
