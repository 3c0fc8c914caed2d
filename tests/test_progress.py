"""Progress where stderr is no terminal: plain lines at an interval; a lock wait said once."""

from __future__ import annotations

import io
import logging
import threading
import time

from glad.progress import Progress


def test_plain_lines_without_a_terminal():
    stream = io.StringIO()  # not a TTY: CI logs, nohup, SLURM
    bar = Progress(4, "glad dtd-base seed1", stream=stream, every=0.0)
    bar.set_postfix(loss="1.234")
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("glad dtd-base seed1: 4/4 steps (100 %")
    assert "loss=1.234" in lines[-1]
    quiet = io.StringIO()
    Progress(4, "x", stream=quiet, enabled=False, every=0.0).update(4)
    slow = io.StringIO()
    Progress(4, "x", stream=slow, every=3600.0).update(4)
    assert quiet.getvalue() == slow.getvalue() == ""


def test_waiting_on_another_processs_lock_is_said(tmp_path, caplog):
    from glad.world.cache import file_lock

    held, release = threading.Event(), threading.Event()

    def holder():
        with file_lock(tmp_path / "m.lock"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    threading.Timer(0.3, release.set).start()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="glad"), file_lock(tmp_path / "m.lock", waiting="waiting for X"):
        waited = time.monotonic() - start
    t.join()
    assert waited > 0.2 and [r.getMessage() for r in caplog.records] == ["waiting for X"]
