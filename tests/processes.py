"""Child-process accounting for leak checks (Linux /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def _children(pid: int) -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(entry)] = cmdline
    return found


def worker_children(pid: int | None = None) -> dict[int, str]:
    """Live children of ``pid`` (default: this process), without the resource tracker.

    The multiprocessing resource tracker is the interpreter's shared service: any
    user of multiprocessing starts it once, it exits with the interpreter, and
    stopping it would unlink semaphores other code still uses. It is not a worker.
    """
    return {
        child: cmd
        for child, cmd in _children(os.getpid() if pid is None else pid).items()
        if "multiprocessing.resource_tracker" not in cmd
    }
