"""Where the time goes: py-spy over a whole end-to-end load, main process and workers.

``python -m benchmarks.profiler target '<json>'`` loads one series a few times
(default settings, or ``Accept-Encoding: identity``); :func:`run_profiles` runs it
under ``py-spy record --subprocesses --threads`` (CPU samples only: idle threads
are not sampled), keeps the raw collapsed stacks under ``benchmarks/results/``
and sorts every sample into a category by process, thread and the innermost
frame that names one. Without py-spy it falls back to pyinstrument on the event
loop thread alone.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["categorize", "run_profiles", "summarize"]

RATE = 200  # samples per second
# Innermost frames of a thread that waits (py-spy here samples some blocked threads).
IDLE = re.compile(
    r"^(Condition\.wait|Event\.wait|_wait_for_tstate_lock|\w*Selector\.select|select"
    r"|Popen\.(poll|wait)|sleep|wait) \("
)
# A worker blocked reading its next task from the call queue.
WORKER_IDLE = re.compile(r"Queue\.get \([^;]*;_ConnectionBase\.recv_bytes.*_recv \(")

# (category, pattern on "function (file:line)"), innermost frame first; per thread role.
WORKER_RULES = [
    ("worker: import/start", r"_find_and_load|spawn_main.*prepare|_init_worker"),
    ("worker: codec", r"imagecodecs|jpeg_ls|decode/codecs\.py|openjpeg|libjpeg|_native "),
    ("worker: LUT, min/max, contract", r"decode/(pixels|color)\.py|_to_contract"),
    (
        "worker: pickle + pipe send (incl. blocked on a full pipe)",
        r"multiprocessing/(queues|connection|reduction)|_sendback",
    ),
    ("worker: decode_frame other", r"decode/worker\.py|decode/syntaxes\.py"),
]
LOOP_RULES = [
    ("loop: import/start", r"_find_and_load|add_series_metadata|warm \("),
    ("loop: gzip inflate", r"compression_utils|zlib|decompress"),
    ("loop: multipart split", r"dicom/multipart\.py"),
    ("loop: HTTP parse + socket read", r"client_proto\.py|http_parser|streams\.py|_read_ready"),
    ("loop: submit to worker (copy + pickle setup)", r"decode/pool\.py|futures/process\.py"),
    ("loop: Image, params, metadata", r"dicom/(image|instances|modules|part10)\.py|metadata\.py"),
    ("loop: request path (loader, pool, batcher, cache, events)",
     r"imageloader/(loader|request_pool|cache|events)\.py|wadors\.py"),
    ("loop: aiohttp request + connection", r"aiohttp/|imageloader/http\.py"),
    ("loop: asyncio machinery", r"asyncio/"),
]  # fmt: skip
MAIN_THREAD_RULES = [
    (
        "main, other threads: import/start (metadata parse, shutdown)",
        r"dicomjson|instances\.py|pydicom/|shutdown|inspect\.py|_find_and_load",
    ),
    ("main, other threads: pickle args + pipe write (feeder)", r"_feed \(|queues\.py"),
    (
        "main, other threads: results read + unpickle (manager; incl. pipe waits)",
        r"futures/process\.py|connection\.py",
    ),
    ("main, other threads: asyncio.to_thread work", r"thread\.py|to_thread"),
]


def categorize(raw: str) -> Counter[str]:
    """Samples per category from py-spy's raw (collapsed) output."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = _segments(stack)
        # Children are nested: 'process 1:"";process 2:"cmd";thread (2): Name;frame;...'
        process = ""
        while frames and frames[0].startswith("process "):
            process = frames.pop(0)
        thread = frames.pop(0) if frames and frames[0].startswith("thread") else ""
        calls = frames
        if not calls:
            counts["no Python frame (native code or waiting)"] += int(count)
            continue
        if IDLE.search(calls[-1]) or WORKER_IDLE.search(";".join(calls[-4:])):
            continue  # a blocked thread that py-spy's idle detection let through
        pid = int(process.split(":", 1)[0].split()[1]) if process else 0
        tid = int(re.search(r"\((\d+)", thread).group(1)) if "(" in thread else 0
        if "resource_tracker" in process:
            category = "other: resource tracker"
        elif "spawn_main" in process or "multiprocessing-fork" in process:
            category = _first(calls, WORKER_RULES, "worker: other")
        elif tid == pid:
            category = _first(calls, LOOP_RULES, "loop: other")
        else:
            category = _first(calls, MAIN_THREAD_RULES, "main, other threads: other")
        counts[category] += int(count)
    return counts


def summarize(raw_path: Path, timing: dict[str, Any]) -> dict[str, Any]:
    """CPU ms per frame by category (start-up excluded) and how busy the loop thread was."""
    counts = categorize(raw_path.read_text())
    steady = {k: v for k, v in counts.items() if "import/start" not in k}
    loop = sum(v for k, v in steady.items() if k.startswith("loop"))
    return {
        "cpu_ms_per_frame": {
            k: v / RATE * 1000 / timing["frames"] for k, v in sorted(steady.items())
        },
        "loop_busy_fraction": loop / RATE / timing["seconds"],
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


async def _target(args: dict[str, Any]) -> dict[str, Any]:
    from imageloader import ImageLoader
    from imageloader.dicomweb import add_series_metadata
    from imageloader.http import HttpOptions

    http = HttpOptions(headers={"Accept-Encoding": "identity"}) if args["identity"] else None
    async with ImageLoader(http=http) as loader:
        ids = await add_series_metadata(loader, args["dicomweb"], args["study"], args["series"])
        await loader.decode_pool.warm()
        start = time.perf_counter()
        for _ in range(args["repeat"]):
            loader.cache.purge()
            await loader.load_and_cache_images(ids)
        seconds = time.perf_counter() - start
    return {"frames": len(ids) * args["repeat"], "seconds": seconds}


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
    results: dict[str, Any] = {"tool": "py-spy" if py_spy else "pyinstrument (loop thread only)"}
    for name, identity in (
        ("jpeg-ls", False),
        ("explicit", False),
        ("jpeg-ls", True),
        ("explicit", True),
    ):
        series = env.series[name]
        repeat = 1 if (name == "explicit" and not identity) or env.profile.name == "quick" else 2
        args = {
            "dicomweb": env.dicomweb,
            "study": series.study_uid,
            "series": series.series_uid,
            "identity": identity,
            "repeat": repeat,
        }
        label = f"{name}-{'identity' if identity else 'default'}"
        target = [sys.executable, "-m", "benchmarks.profiler", "target", json.dumps(args)]
        raw_path = out_dir / f"{stamp}-profile-{label}.txt"
        if py_spy:
            command = [py_spy, "record", "--format", "raw", "--rate", str(RATE)]
            command += ["--subprocesses", "--threads", "-o", str(raw_path), "--", *target]
        else:
            html = out_dir / f"{stamp}-profile-{label}.html"
            command = [sys.executable, "-m", "pyinstrument", "-r", "html", "-o", str(html)]
            command += ["-m", "benchmarks.profiler", "target", json.dumps(args)]
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"profiling {label} failed:\n{done.stderr[-2000:]}")
        timing = json.loads([x for x in done.stdout.splitlines() if x.startswith("{")][-1])
        entry: dict[str, Any] = {**timing, "file": raw_path.name if py_spy else html.name}
        if py_spy:
            entry.update(summarize(raw_path, timing))
        results[label] = entry
        log(f"  profile {label}: {timing['frames'] / timing['seconds']:.0f} frames/s")
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["target"]:
        print(json.dumps(asyncio.run(_target(json.loads(sys.argv[2])))))
