"""Run a case in a child process under an address-space cap and watch its process tree.

The child runs :mod:`tests.hostile._child` under ``prlimit --as`` (util-linux;
``RLIMIT_AS`` set in the child when ``prlimit`` is missing), which its decode
workers inherit: a bound that does not hold fails fast with a MemoryError instead
of taking the machine's memory. While it runs, every ``SAMPLE_SECONDS`` the
tree (the child and its descendants, found through ``/proc/<pid>/task/*/children``)
is read from ``/proc/<pid>/status``:

- ``tree_rss``: the largest sum of VmRSS over the tree at one sample;
- ``tree_hwm``: the sum over every process seen of its last VmHWM (its own peak
  resident size): an upper bound of the tree's peak that a short spike between two
  samples cannot escape (shared memory counts in each process that touched it).

The child is killed (its whole process group) after ``timeout`` seconds, or as
soon as the tree holds more than ``kill_above`` bytes (the bound is broken already:
a case that would take the machine's memory fails in seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SECONDS = 0.01
#: Address space each process of the tree may map: well above what a bounded case
#: needs (a Python process with numpy and a few threads maps ~1 GiB without touching
#: it), well below the machine.
ADDRESS_SPACE = int(os.environ.get("IMAGELOADER_HOSTILE_AS_MB", "4096")) << 20
MIB = 1 << 20


@dataclass
class Run:
    """What a case did: its JSON report, and what its process tree held."""

    report: dict[str, Any]
    returncode: int | None
    seconds: float
    tree_rss: int = 0
    tree_hwm: int = 0
    per_process: dict[int, int] = field(default_factory=dict)
    processes: int = 0
    stderr: str = ""

    @property
    def peak(self) -> int:
        """The tree's peak resident bytes (the larger of the two measures)."""
        return max(self.tree_rss, self.tree_hwm)

    def summary(self) -> str:
        return (
            f"{self.report.get('outcome')} {self.report.get('type')} in {self.seconds:.2f} s, "
            f"tree peak {self.peak / MIB:.0f} MiB (sampled RSS {self.tree_rss / MIB:.0f}, "
            f"sum of HWM {self.tree_hwm / MIB:.0f}) over {self.processes} processes: "
            f"{self.report.get('message', '')[:300]}"
        )


def _status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a live process, in bytes; None when it is gone or a zombie."""
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return (rss, hwm) if rss is not None and hwm is not None else None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found.extend(int(c) for c in children.read().split())
        except (OSError, ValueError):
            continue
    return found


def _tree(root: int, limit: int = 64) -> list[int]:
    pids, queue = [], [root]
    while queue and len(pids) < limit:
        pid = queue.pop()
        pids.append(pid)
        queue.extend(_children(pid))
    return pids


def _preexec(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_case(
    spec: dict[str, Any],
    workdir: Path,
    *,
    timeout: float = 30.0,
    address_space: int = ADDRESS_SPACE,
    kill_above: int | None = None,
) -> Run:
    """Run one case (see :mod:`tests.hostile._child`) and measure its process tree."""
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "tests.hostile._child", str(spec_path)]
    prlimit = shutil.which("prlimit")
    if prlimit and address_space:
        command = [prlimit, f"--as={address_space}", *command]
        limit = 0
    else:
        limit = address_space
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    stdout_path, stderr_path = workdir / "stdout.txt", workdir / "stderr.txt"
    start = time.perf_counter()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=(lambda: _preexec(limit)) if limit else None,
        )
        hwm: dict[int, int] = {}
        tree_rss = 0
        over = False
        deadline = start + timeout
        try:
            while child.poll() is None and time.perf_counter() < deadline:
                total = 0
                for pid in _tree(child.pid):
                    seen = _status(pid)
                    if seen is None:
                        continue
                    total += seen[0]
                    hwm[pid] = max(hwm.get(pid, 0), seen[1])
                tree_rss = max(tree_rss, total)
                if kill_above is not None and total > kill_above:
                    over = True
                    break
                time.sleep(SAMPLE_SECONDS)
        finally:
            if child.poll() is None:
                # The whole group: the child and the decode workers it started.
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            # Workers outlive a killed child only as orphans of its group: gone too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
    seconds = time.perf_counter() - start
    lines = stdout_path.read_text(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        report = {}
    if not report:
        outcome = "over budget" if over else "hung" if seconds >= timeout else "died"
        report = {"outcome": outcome, "type": None, "typed": False}
        report["message"] = f"exit {child.returncode}"
    return Run(
        report=report,
        returncode=child.returncode,
        seconds=seconds,
        tree_rss=tree_rss,
        tree_hwm=sum(hwm.values()),
        per_process=hwm,
        processes=len(hwm),
        stderr=stderr_path.read_text(errors="replace")[-4000:],
    )
