"""The report's later sections: priorities, memory, multi-frame, core, and where the time goes."""

from __future__ import annotations

from typing import Any

from ._tables import _f, _ok, _r, _table

__all__ = ["profile_sections", "rest_sections"]

MEMORY_ROWS = (
    "series_decoded_mib",
    "cache_limit_mib",
    "cache_held_mib",
    "baseline_main_mib",
    "peak_main_mib",
    "baseline_workers_mib",
    "peak_workers_mib",
    "peak_total_mib",
    "main_over_limit_mib",
    "seconds",
)


def _priorities(p: dict[str, Any]) -> list[str]:
    out = [
        "## 4. Priorities",
        "",
        f"{p['interaction_loads']} INTERACTION loads (JPEG-LS frames) while a "
        f"{p['prefetch_images']}-image PREFETCH runs (it outlasted them: "
        f"{p['prefetch_outlasted_interactions']}; {p['prefetch_fps_during']:.0f} frames/s "
        "meanwhile), against the same loads on an idle loader.",
        "",
    ]
    out += _table(
        ["", "p50 ms", "p95 ms"],
        [
            ["idle", _f(p["idle_p50_ms"], 1), _f(p["idle_p95_ms"], 1)],
            ["during PREFETCH", _f(p["busy_p50_ms"], 1), _f(p["busy_p95_ms"], 1)],
            ["ratio", _r(p["p50_ratio"]), _r(p["p95_ratio"])],
        ],
    )
    rows = [
        [name, _f(v["idle_p95_ms"], 1), _f(v["busy_p95_ms"], 1), _r(v["p95_ratio"]),
         _f(v["prefetch_fps_during"])]
        for name, v in p.get("variants", {}).items()
    ]  # fmt: skip
    if rows:
        out += ["Configurations (same measurement):", ""]
        out += _table(
            ["loader options", "idle p95", "busy p95", "p95 ratio", "prefetch frames/s"], rows
        )
    return out


def rest_sections(res: dict[str, Any]) -> list[str]:
    """Sections 4 to 7."""
    out: list[str] = []
    if _ok(res, "priorities"):
        out += _priorities(res["priorities"])
    if _ok(res, "memory"):
        mem = res["memory"]
        rows = [[k, *(_f(m[k], 1) for m in mem.values())] for k in MEMORY_ROWS]
        out += ["## 5. Memory (MiB; one fresh process per series, `iter_images` prefetch)", ""]
        out += _table(["", *mem], rows)
    if _ok(res, "multiframe"):
        m = res["multiframe"]
        rows = [[k, _f(v), m["requests"].get(k, "")] for k, v in m["fps"].items()]
        out += [
            f"## 6. Multi-frame instance ({m['frames']} frames; one request per frame: the "
            f"first {m.get('per_frame_subset')}), frames/s",
            "",
        ]
        out += _table(["variant", "frames/s", "HTTP requests per load"], rows)
        out += [
            f"Batch / per frame: gzip {_r(m['batch_vs_per_frame_gzip'])}, identity "
            f"{_r(m['batch_vs_per_frame_identity'])}.",
            "",
        ]
    out += ["## 7. Core and wadouri", ""]
    if _ok(res, "core"):
        c = res["core"]
        out += [
            f"Cache hits: {_f(c['cache_hits_per_s'])}/s ({_r(c['cache_hit_vs_floor'])} of a "
            f"dict lookup in a coroutine). Dispatch: {_f(c['dispatched_loads_per_s'])} "
            f"loads/s, {c['dispatch_overhead_us']:.1f} µs per load over a direct call.",
            "",
        ]
    if _ok(res, "e2e"):
        rows = [
            [n, _f(e["fps"]["il_wadouri"]), _f(e["fps"]["il_wadors_same"]),
             _r(e["ratios"]["wadouri_vs_wadors"])]
            for n, e in res["e2e"].items()
        ]  # fmt: skip
        out += ["wadouri vs wadors, default loader, first instances of each series:", ""]
        out += _table(["series", "wadouri frames/s", "wadors frames/s", "wadouri / wadors"], rows)
    return out


def profile_sections(res: dict[str, Any]) -> list[str]:
    """Where the time goes: the categorised profiles and the unit costs."""
    out = ["## Where the time goes", ""]
    if _ok(res, "profiles"):
        prof = {k: v for k, v in res["profiles"].items() if isinstance(v, dict)}
        out += [
            f"Tool: {res['profiles']['tool']}. CPU ms per frame by process, thread and "
            "innermost recognised frame, start-up excluded. py-spy's idle detection does "
            "not work on this VM: waits with a Python frame on top (select, locks, "
            "sleeps) are dropped here, but a thread blocked inside a pipe read or write "
            "still counts (the IPC rows include such waits). Raw stacks in the files named.",
            "",
        ]
        cats = sorted({c for p in prof.values() for c in p.get("cpu_ms_per_frame", {})})
        rows = [
            [c, *(_f(p.get("cpu_ms_per_frame", {}).get(c, 0), 2) for p in prof.values())]
            for c in cats
        ]
        rows.append(
            [
                "**wall ms per frame**",
                *(_f(p["seconds"] / p["frames"] * 1000, 2) for p in prof.values()),
            ]
        )
        rows.append(
            ["event loop busy", *(_f(p.get("loop_busy_fraction", 0), 2) for p in prof.values())]
        )
        rows.append(["file", *(p["file"] for p in prof.values())])
        out += _table(["category", *prof], rows)
    if _ok(res, "costs"):
        costs = res["costs"]
        flat = {k: v for k, v in costs.items() if not isinstance(v, dict)}
        out += ["Unit costs (ms unless named):", ""]
        out += _table(["measure", "value"], [[k, _f(v, 3)] for k, v in flat.items()])
        for key, value in costs.items():
            if isinstance(value, dict):
                out += _table([key, "value"], [[k, _f(v, 2)] for k, v in value.items()])
    return out
