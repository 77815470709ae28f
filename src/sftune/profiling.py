"""Where a run's seconds go outside (and inside) training: wall time per stage of the main path.

``sftune train --profile`` prints the table; :class:`~sftune.engine.RunResult` carries it
(``stages``) for benchmarks (bench/image_bench.py's breakdown). Stages are timed with
``time.perf_counter`` around blocks of the engine; a stage entered twice adds up.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator


class Stages:
    """Wall seconds per named stage, in the order the stages first ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {name: round(s, 3) for name, s in self.seconds.items()}


def seconds_since_process_start() -> float | None:
    """Seconds since this process started (Linux: /proc; elsewhere None), i.e. interpreter start-up
    and imports before the caller's first line, to 10 ms."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22 of stat: starttime
    except (OSError, ValueError, IndexError, AttributeError):
        return None
