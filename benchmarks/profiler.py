"""Where the time goes: CPU per frame of an end-to-end load, by process, thread and code.

``python -m benchmarks.profiler target '<json>'`` loads one series a few times
(default settings, or ``Accept-Encoding: identity``). Around the timed loads only
(not the imports, the metadata fetch, the worker start or the shutdown) it

- measures CPU time exactly: the event loop thread's (``time.thread_time``), the
  rest of the main process's threads (process CPU minus the loop's), the decode
  workers' (``/proc/<pid>/task/*/schedstat``) and how long the loop thread sat
  runnable waiting for a core;
- samples stacks: ``py-spy record --pid <itself> --subprocesses --threads``
  attached for the window (loop thread, the other threads, the workers), or, without
  py-spy, pyinstrument on the loop thread alone (its HTML kept next to the stacks).

:func:`summarize` sorts every sample by process, thread and the innermost frame that
names a category, and scales each thread group's sample shares to its measured CPU,
so the categories of a group add up to the group's CPU; what no rule recognises is
the group's ``unattributed / other`` row. The raw collapsed stacks stay under
``benchmarks/results/`` (``--render <json>`` sorts them again).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["GROUPS", "categorize", "run_profiles", "summarize"]

RATE = 200  # py-spy samples per second (500 costs a third of the frame rate on two cores)
MIN_FRAMES = 600  # frames per profiled run at least (fewer samples are mostly noise)

# Innermost frames of a thread that waits (py-spy's own idle detection lets many
# through on this VM; pyinstrument times the loop's selector wait as
# ``epoll.poll (<built-in>)``).
IDLE = re.compile(
    r"^(Condition\.wait|Event\.wait|_wait_for_tstate_lock|\w*Selector\.select|select"
    r"|Popen\.(poll|wait)|sleep|wait|(epoll|poll|devpoll|kqueue)\.\w+|lock\.acquire) \("
    r"|^_worker \(concurrent/futures/thread\.py:"  # a pool thread waiting for work
)
# A worker blocked reading its next task from the call queue.
WORKER_IDLE = re.compile(r"Queue\.get \([^;]*;_ConnectionBase\.recv_bytes.*_recv \(")

UNATTRIBUTED = "unattributed / other"
# (category, pattern on "function (file:line)"); the innermost frame matching any rule
# of the thread's group wins, the first matching rule for that frame.
LOOP_RULES = [
    ("HTTP: gzip inflate", r"compression_utils|zlib|decompress"),
    ("multipart parsing (dicom/multipart.py)", r"dicom/multipart\.py"),
    (
        "HTTP: response read + parse (socket read, HTTP parser, body streams)",
        r"aiohttp/(client_proto|http_parser|_http_parser|streams|base_protocol)"
        r"|_read_ready|sock_recv",
    ),
    (
        "HTTP: request + connection (aiohttp client, imageloader/http.py, socket send)",
        r"aiohttp/|imageloader/http\.py|multidict/|yarl/"
        r"|_SelectorSocketTransport\.write|sock_connect|getaddrinfo",
    ),
    (
        "decode-pool hand-off (decode/pool.py, transport.py shared memory, submit, "
        "results back through the self-pipe)",
        r"decode/(pool|transport)\.py|futures/process\.py|multiprocessing/"
        r"|_read_from_self|_process_self_data|run_in_executor|wrap_future|_chain_future"
        r"|_copy_future_state|_call_set_state",
    ),
    (
        "building the Image (decode/image.py, dicom/image.py, params, metadata)",
        r"decode/(image|params)\.py|dicom/(image|instances|modules|part10|_\w+)\.py"
        r"|imageloader/(image|metadata|geometry)\.py",
    ),
    (
        "loader bookkeeping (loader, request_pool, inflight, cache, events, wadors)",
        r"imageloader/(loader|request_pool|inflight|cache|objectcache|events|limits"
        r"|context|registry|imageid|_default|builtins|security)\.py"
        r"|dicom/(wadors|frames|wadouri)\.py",
    ),
    ("asyncio machinery (tasks, futures, handles, selector)", r"asyncio/|selectors\.py"),
]
THREAD_RULES = [
    (
        "inline decode (uncompressed frames, imageloader-decode threads)",
        r"imageloader/decode/(worker|pixels|color|syntaxes|codecs|transport)\.py",
    ),
    ("queue feeder: pickle args + pipe write", r"_feed \(|multiprocessing/queues\.py"),
    (
        "executor manager: results read + unpickle (incl. pipe waits)",
        r"futures/process\.py|multiprocessing/connection\.py",
    ),
    ("metadata parse, other to_thread work", r"dicomjson|instances\.py|pydicom/|to_thread"),
    ("waking the loop (call_soon_threadsafe)", r"asyncio/"),
]
WORKER_RULES = [
    ("import/start", r"_find_and_load|spawn_main.*prepare|_init_worker"),
    ("codec", r"imagecodecs|jpeg_ls|decode/codecs\.py|openjpeg|libjpeg|_native "),
    ("LUT, min/max, contract", r"decode/(pixels|color)\.py|_to_contract"),
    (
        "result hand-back: shared-memory export, pickle, pipe send (incl. full-pipe waits)",
        r"multiprocessing/(queues|connection|reduction)|_sendback|decode/transport\.py",
    ),
    ("decode_frame other", r"decode/worker\.py|decode/syntaxes\.py"),
]
#: Thread groups: (key, rules); a category is stored as "<key>: <name>".
GROUPS = {"loop": LOOP_RULES, "threads": THREAD_RULES, "workers": WORKER_RULES}


def categorize(
    raw: str, main_pid: int | None = None, worker_pids: list[int] | None = None
) -> Counter[str]:
    """Samples (or weights) per "<group>: <category>" from collapsed stacks.

    Lines are py-spy's raw format, ``process 1:"cmd";thread (tid): Name;frame;... n``.
    The loop thread is the main process's main thread (its tid is the pid); without
    ``main_pid`` the outermost process is the main one, and workers are told by
    their command line.
    """
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = _segments(stack)
        processes = []
        while frames and frames[0].startswith("process "):
            processes.append(frames.pop(0))
        thread = frames.pop(0) if frames and frames[0].startswith("thread") else ""
        calls = frames
        pids = [int(p.split(":", 1)[0].split()[1]) for p in processes]
        pid = pids[-1] if pids else 0
        tid_match = re.search(r"\((\d+)", thread)
        tid = int(tid_match.group(1)) if tid_match else 0
        main = main_pid if main_pid is not None else (pids[0] if pids else 0)
        if worker_pids is not None:
            is_worker = pid in worker_pids
        else:
            is_worker = bool(processes) and (
                "spawn_main" in processes[-1] or "multiprocessing-fork" in processes[-1]
            )
        if is_worker:
            group = "workers"
        elif pid == main or not processes:
            group = "loop" if tid == pid or not processes else "threads"
        else:
            counts["other processes (resource tracker, ...)"] += int(count)
            continue
        if not calls:
            counts[f"{group}: {UNATTRIBUTED}"] += int(count)  # native code, no Python frame
            continue
        if IDLE.search(calls[-1]) or WORKER_IDLE.search(";".join(calls[-4:])):
            continue  # a blocked thread that py-spy's idle detection let through
        counts[f"{group}: {_first(calls, GROUPS[group], UNATTRIBUTED)}"] += int(count)
    return counts


def summarize(raw_path: Path, timing: dict[str, Any]) -> dict[str, Any]:
    """CPU ms per frame by thread group and category, scaled to the measured CPU.

    ``timing`` is the target's answer: ``frames``, ``seconds``, and (when measured)
    ``pid``, ``worker_pids``, ``sample_seconds`` and ``cpu_seconds`` per group. A group
    whose CPU was measured has its sample shares scaled to it (the categories add up
    to the measured total; ``sampled_ms_per_frame`` keeps the unscaled sum, which
    also counts time the thread was runnable but off a core); otherwise the samples
    are read at face value.
    """
    counts = categorize(raw_path.read_text(), timing.get("pid"), timing.get("worker_pids"))
    unit = timing.get("sample_seconds", 1 / RATE)
    frames = timing["frames"]
    cpu = timing.get("cpu_seconds", {})
    # pyinstrument's stacks are weighted in microseconds, py-spy's are sample counts.
    timed = timing.get("tool") == "pyinstrument"
    sampled_loop = timing.get("sampling", {}).get("samples")
    groups: dict[str, Any] = {}
    for group, rules in GROUPS.items():
        names = [name for name, _ in rules] + [UNATTRIBUTED]
        weights = {n: counts.get(f"{group}: {n}", 0) for n in names}
        sampled = sum(weights.values()) * unit
        measured = cpu.get(group)
        if measured is None:
            scale = 1.0
        elif sampled > 0:
            scale = measured / sampled
        else:  # CPU but no sample: all of it unattributed
            weights[UNATTRIBUTED], scale = 1, measured / unit
        entry: dict[str, Any] = {
            "categories": {n: w * unit * scale * 1000 / frames for n, w in weights.items()},
            "sampled_ms_per_frame": sampled * 1000 / frames,
            "samples": sum(weights.values())
            if not timed
            else (sampled_loop if group == "loop" else 0),
        }
        if measured is not None:
            entry["cpu_ms_per_frame"] = measured * 1000 / frames
        groups[group] = entry
    if "loop_runqueue_seconds" in timing:
        groups["loop"]["runqueue_ms_per_frame"] = timing["loop_runqueue_seconds"] * 1000 / frames
    loop_cpu = cpu.get("loop", groups["loop"]["sampled_ms_per_frame"] * frames / 1000)
    return {
        "groups": groups,
        "other_processes_ms_per_frame": sum(
            v for k, v in counts.items() if k.startswith("other processes")
        )
        * unit
        * 1000
        / frames,
        "loop_busy_fraction": loop_cpu / timing["seconds"],
    }


def _segments(stack: str) -> list[str]:
    """Split a collapsed stack on ';', keeping quoted command lines (they hold ';') whole."""
    out: list[str] = []
    for piece in stack.split(";"):
        if out and out[-1].count('"') % 2 == 1:
            out[-1] += ";" + piece
        else:
            out.append(piece)
    return out


def _first(calls: list[str], rules: list[tuple[str, str]], default: str) -> str:
    for frame in reversed(calls):  # innermost first
        for category, pattern in rules:
            if re.search(pattern, frame):
                return category
    return default


# -- measuring (inside the target process) ---------------------------------------------
def _schedstat(path: str) -> tuple[float, float]:
    """(seconds on a core, seconds runnable waiting for one) from a schedstat file."""
    try:
        run, wait, *_ = Path(path).read_text().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run) / 1e9, int(wait) / 1e9


def _process_cpu(pid: int) -> float:
    """CPU seconds of every thread of ``pid`` (0 when it is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    return sum(_schedstat(f"/proc/{pid}/task/{t}/schedstat")[0] for t in tids)


def _cpu_now(worker_pids: list[int]) -> dict[str, float]:
    """Called on the loop thread: its CPU, the process's, the workers', the loop's waits."""
    own = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/schedstat"
    return {
        "loop": time.thread_time(),
        "process": time.process_time(),
        "workers": sum(_process_cpu(pid) for pid in worker_pids),
        "loop_runqueue": _schedstat(own)[1],
    }


class _PySpy:
    """``py-spy record`` attached to this process and its children until :meth:`stop`.

    :meth:`stop` answers py-spy's own count of samples and of stacks it failed to
    read (more of those without pausing the processes; they are left out).
    """

    def __init__(self, exe: str, raw: Path) -> None:
        command = [exe, "record", "--pid", str(os.getpid()), "--subprocesses", "--threads"]
        command += ["--format", "raw", "--rate", str(RATE), "-o", str(raw)]
        # Without --nonblocking py-spy stops every process at each sample: on two cores
        # that halves the frame rate and piles run-queue waits onto the loop thread.
        command.append("--nonblocking")
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.output = ""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while "Sampling process" not in self.output:  # py-spy is attached and sampling
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            line = self.proc.stdout.readline() if ready else ""
            if not line:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"py-spy did not start sampling: {self.output[-1000:]}")
            self.output += line
        time.sleep(0.05)  # let it find the worker processes

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=120)
        self.output += out or ""
        if self.proc.returncode != 0 and "Wrote" not in self.output:
            raise RuntimeError(f"py-spy failed: {self.output[-1000:]}")
        found = re.search(r"Samples: (\d+) Errors: (\d+)", self.output)
        return {"samples": int(found[1]), "errors": int(found[2])} if found else {}


class _Pyinstrument:
    """pyinstrument on the loop thread; :meth:`stop` writes its HTML and collapsed stacks."""

    def __init__(self, html: Path, raw: Path) -> None:
        from pyinstrument import Profiler

        self.html, self.raw = html, raw
        self.profiler = Profiler(interval=0.001, async_mode="disabled")
        self.profiler.start()

    def stop(self) -> dict[str, int]:
        session = self.profiler.stop()
        self.html.write_text(self.profiler.output_html())
        roots = sorted((p for p in sys.path if p), key=len, reverse=True)
        head = f'process {os.getpid()}:"";thread ({threading.get_native_id()}): MainThread'
        weights: Counter[str] = Counter()
        for stack, seconds in session.frame_records:
            frames = [_frame(ident, roots) for ident in stack]
            weights[";".join([head, *(f for f in frames if f)])] += round(seconds * 1e6)
        self.raw.write_text("".join(f"{s} {n}\n" for s, n in weights.items() if n > 0))
        return {"samples": session.sample_count}


def _frame(identifier: str, roots: list[str]) -> str:
    """pyinstrument's ``func\\0path\\0line\\1cClass...`` as py-spy's ``Class.func (path:line)``."""
    name, _, rest = identifier.partition("\x00")
    path, _, rest = rest.partition("\x00")
    line, *attributes = rest.split("\x01")
    if path == "<thread>":
        return ""
    cls = next((a[1:] for a in attributes if a.startswith("c")), None)
    for root in roots:
        if path.startswith(root.rstrip("/") + "/"):
            path = path[len(root.rstrip("/")) + 1 :]
            break
    return f"{cls + '.' if cls else ''}{name} ({path}:{line})"


async def _target(args: dict[str, Any]) -> dict[str, Any]:
    from imageloader import ImageLoader
    from imageloader.dicomweb import add_series_metadata
    from imageloader.http import HttpOptions

    http = HttpOptions(headers={"Accept-Encoding": "identity"}) if args["identity"] else None
    async with ImageLoader(http=http) as loader:
        ids = await add_series_metadata(loader, args["dicomweb"], args["study"], args["series"])
        await loader.decode_pool.warm()
        workers = loader.decode_pool.pids()
        raw = Path(args["raw"])
        sampler: _PySpy | _Pyinstrument | None = None
        if args.get("py_spy"):
            sampler, tool = _PySpy(args["py_spy"], raw), "py-spy"
        elif args.get("html"):
            sampler, tool = _Pyinstrument(Path(args["html"]), raw), "pyinstrument"
        else:  # none: what the loads cost without a profiler
            tool = "none"
        before = _cpu_now(workers)
        start = time.perf_counter()
        for _ in range(args["repeat"]):
            loader.cache.purge()
            await loader.load_and_cache_images(ids)
        seconds = time.perf_counter() - start
        after = _cpu_now(workers)
        sampling = sampler.stop() if sampler is not None else {}
    used = {k: after[k] - before[k] for k in after}
    cpu = {
        "loop": used["loop"],
        "threads": max(used["process"] - used["loop"], 0.0),
        "workers": used["workers"],
    }
    return {
        "frames": len(ids) * args["repeat"],
        "seconds": seconds,
        "tool": tool,
        "pid": os.getpid(),
        "worker_pids": workers,
        "sample_seconds": 1 / RATE if tool == "py-spy" else 1e-6,
        "cpu_seconds": cpu,
        "loop_runqueue_seconds": used["loop_runqueue"],
        "sampling": sampling,
    }


def _py_spy() -> str | None:
    return shutil.which("py-spy") or (
        str(Path(sys.executable).with_name("py-spy"))
        if Path(sys.executable).with_name("py-spy").exists()
        else None
    )


def run_profiles(env: Any, log: Any, out_dir: Path, stamp: str) -> dict[str, Any]:
    """Profile default and identity loads of the JPEG-LS and explicit VR LE series."""
    py_spy = _py_spy()
    root = Path(__file__).resolve().parents[1]
    results: dict[str, Any] = {
        "tool": "py-spy --nonblocking (attached for the timed loads)"
        if py_spy
        else "pyinstrument (loop thread only; py-spy not found)"
    }
    for name, identity in (
        ("jpeg-ls", False),
        ("explicit", False),
        ("jpeg-ls", True),
        ("explicit", True),
    ):
        series = env.series[name]
        repeat = 1 if name == "explicit" and not identity else 2
        repeat = max(repeat, math.ceil(MIN_FRAMES / max(len(series.sop_uids), 1)))
        label = f"{name}-{'identity' if identity else 'default'}"
        raw_path = out_dir / f"{stamp}-profile-{label}.txt"
        html = out_dir / f"{stamp}-profile-{label}.html"
        args = {
            "dicomweb": env.dicomweb,
            "study": series.study_uid,
            "series": series.series_uid,
            "identity": identity,
            "repeat": repeat,
            "raw": str(raw_path),
            "html": str(html),
            "py_spy": py_spy,
        }
        command = [sys.executable, "-m", "benchmarks.profiler", "target", json.dumps(args)]
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 and py_spy:  # py-spy may not attach (ptrace refused)
            log(f"  profile {label}: py-spy failed, pyinstrument instead")
            args["py_spy"] = None
            command[-1] = json.dumps(args)
            done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"profiling {label} failed:\n{done.stderr[-2000:]}")
        timing = json.loads([x for x in done.stdout.splitlines() if x.startswith("{")][-1])
        entry: dict[str, Any] = {**timing, "file": raw_path.name}
        if timing["tool"] == "pyinstrument":
            entry["html"] = html.name
        entry.update(summarize(raw_path, timing))
        results[label] = entry
        loop = entry["groups"]["loop"]
        log(
            f"  profile {label}: {timing['frames'] / timing['seconds']:.0f} frames/s, "
            f"loop thread {loop['cpu_ms_per_frame']:.2f} ms CPU per frame "
            f"({loop['sampled_ms_per_frame']:.2f} ms sampled)"
        )
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["target"]:
        print(json.dumps(asyncio.run(_target(json.loads(sys.argv[2])))))
