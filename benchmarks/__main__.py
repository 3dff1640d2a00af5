"""``python -m benchmarks [--quick]``: the whole suite, results in ``benchmarks/results/``.

Makes the data (cached in ``benchmarks/.data/``), starts a private Orthanc, runs
every measurement (each side by side with its baseline, interleaved), profiles,
and writes ``<date>.json``, ``<date>.md`` and PNG figures; a full run also
refreshes ``latest.md`` and ``latest-*.png``. Every server and process it starts
is stopped on the way out, Ctrl-C included. ``--only e2e,memory`` runs a subset.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .environment import BenchEnv, Profile, bench_environment, cores

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = (
    "e2e",
    "decode_scaling",
    "startup",
    "priorities",
    "memory",
    "multiframe",
    "core",
    "costs",
    "profiles",
    "cornerstone_codecs",
    "cornerstone_loader",
    "fastapi",
    "dataset",
    "progressive",
)


def _runner(name: str, env: BenchEnv, log: Callable[[str], None], stamp: str) -> Any:
    if name == "e2e":
        from .e2e import run_e2e

        return asyncio.run(run_e2e(env, log))
    if name == "decode_scaling":
        from .startup import run_decode_scaling

        return asyncio.run(run_decode_scaling(env, log))
    if name == "startup":
        from .startup import run_startup

        return asyncio.run(run_startup(env, log))
    if name == "priorities":
        from .priorities import run_priorities

        return asyncio.run(run_priorities(env, log, variants=env.facts.get("variants", False)))
    if name == "memory":
        from .memory import run_memory

        return run_memory(env, log)
    if name == "multiframe":
        from .multiframe import run_multiframe

        return asyncio.run(run_multiframe(env, log))
    if name == "core":
        from .bench_core import measure

        return asyncio.run(measure(env.profile.core_hits, env.profile.core_loads))
    if name == "costs":
        from .costs import run_costs

        return asyncio.run(run_costs(env, log))
    if name == "profiles":
        from .profiler import run_profiles

        return run_profiles(env, log, RESULTS, stamp)
    if name == "cornerstone_codecs":
        from .cornerstone_codecs import run_cornerstone_codecs

        return asyncio.run(run_cornerstone_codecs(env, log))
    if name == "cornerstone_loader":
        from .cornerstone_loader import run_cornerstone_loader

        return asyncio.run(run_cornerstone_loader(env, log))
    if name == "fastapi":
        from .fastapi_path import run_fastapi

        return asyncio.run(run_fastapi(env, log))
    if name == "dataset":
        from .dataset import run_dataset

        return asyncio.run(run_dataset(env, log))
    if name == "progressive":
        from .progressive import run_progressive

        return asyncio.run(run_progressive(env, log))
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke profile (~3 min)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument(
        "--priority-variants",
        action="store_true",
        help="also measure priorities with request_limits={'prefetch': 4} and identity",
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        type=Path,
        help="rewrite the Markdown of stored results (profiles re-categorised); no measuring",
    )
    args = parser.parse_args(argv)
    if args.render:
        return _rerender(args.render)
    profile = Profile.get("quick" if args.quick else "full")
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    day = datetime.date.today().isoformat()
    stamp = day if profile.name == "full" else f"{day}-quick"
    if args.only:
        stamp += "-partial"  # never overwrite a whole run's results
    RESULTS.mkdir(exist_ok=True)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    # A plain SIGTERM would skip the clean-up below and leave Orthanc running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {}
    with bench_environment(profile, log) as env:
        env.facts["variants"] = args.priority_variants
        results["meta"] = _meta(env)
        for name in sections:
            log(f"{name} ...")
            t0 = time.perf_counter()
            try:
                results[name] = _runner(name, env, log, stamp)
            except Exception as exc:  # one broken measurement must not lose the others
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            results["meta"].setdefault("section_seconds", {})[name] = time.perf_counter() - t0
    results["meta"]["wall_seconds"] = time.perf_counter() - started
    results["meta"]["setup"] = env.facts
    _write(results, stamp, full=profile.name == "full" and not args.only)
    log(f"done in {results['meta']['wall_seconds']:.0f} s")
    return 1 if any("error" in v for v in results.values() if isinstance(v, dict)) else 0


def _rerender(path: Path) -> int:
    from .profiler import summarize

    results = json.loads(path.read_text())
    for entry in results.get("profiles", {}).values():
        if isinstance(entry, dict) and str(entry.get("file", "")).endswith(".txt"):
            entry.update(summarize(path.parent / entry["file"], entry))
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    _write(results, path.stem, full="-" not in path.stem.removeprefix(path.stem[:10]))
    return 0


def _meta(env: BenchEnv) -> dict[str, Any]:
    import aiohttp
    import dicomweb_client
    import imagecodecs
    import numpy
    import pydicom

    return {
        "profile": env.profile.name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {cores()} cores, Python {platform.python_version()}",
        "versions": {
            "aiohttp": aiohttp.__version__,
            "numpy": numpy.__version__,
            "pydicom": pydicom.__version__,
            "dicomweb-client": dicomweb_client.__version__,
            "imagecodecs": imagecodecs.__version__,
            "orthanc": env.server.request("GET", "/system").json().get("Version"),
        },
        "instances_per_series": env.profile.instances,
        "multiframe_frames": env.profile.multiframe_frames,
        "rounds": env.profile.rounds,
        "series": {
            n: {"transfer_syntax": s.transfer_syntax_uid, "encoder": s.encoder}
            for n, s in env.series.items()
        },
    }


def _write(results: dict[str, Any], stamp: str, *, full: bool) -> None:
    from .fastapi_path import fastapi_report
    from .plots import make_plots
    from .report import render
    from .report_details import dataset_report, progressive_report

    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    plots = make_plots(results, RESULTS, stamp)
    text = render(results, [p.name for p in plots])
    text = fastapi_report(text, results)  # section 10, before the errors and figures
    text = dataset_report(text, results)  # section 11, after it
    text = progressive_report(text, results)  # section 12, after that
    (RESULTS / f"{stamp}.md").write_text(text)
    if full:
        latest = text
        for plot in plots:
            name = plot.name.replace(stamp, "latest")
            shutil.copyfile(plot, RESULTS / name)
            latest = latest.replace(plot.name, name)
        (RESULTS / "latest.md").write_text(latest)
    print(f"wrote {RESULTS / (stamp + '.md')}")


if __name__ == "__main__":
    sys.exit(main())
