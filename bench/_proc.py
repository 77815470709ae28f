"""What the benchmark scripts share about the processes they time."""

from __future__ import annotations

import psutil


def tree_rss(proc: psutil.Process) -> int | None:
    """Resident memory (bytes) of ``proc`` and all its children (DataLoader workers), or None
    once ``proc`` has exited."""
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0
    for p in tree:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # a worker that just exited
    return total
