"""The Markdown summary of a results dict: goals first, then every measurement's table."""

from __future__ import annotations

from typing import Any

from ._tables import _f, _ok, _r, _table
from .report_cornerstone import cornerstone_sections
from .report_details import profile_sections, rest_sections

__all__ = ["render"]


def _goals(res: dict[str, Any]) -> list[str]:
    rows = []
    if _ok(res, "e2e"):
        e2e = res["e2e"]
        for name in ("jpeg-ls", "jpeg-lossless"):
            r = e2e[name]["ratios"]
            rows.append(
                [
                    f"1. end to end vs peer ≥ 6× ({name})",
                    _r(r["default_vs_peer"]),
                    "yes" if r["default_vs_peer"] >= 6 else "no",
                ]
            )
        worst = min(e2e, key=lambda n: e2e[n]["ratios"]["default_vs_lower_ceiling"])
        value = e2e[worst]["ratios"]["default_vs_lower_ceiling"]
        rows.append(
            [
                f"2. end to end ≥ 0.85 × lower ceiling (worst: {worst})",
                _r(value),
                "yes" if value >= 0.85 else "no",
            ]
        )
    if _ok(res, "decode_scaling"):
        for name in ("jpeg-ls", "j2k"):
            value = res["decode_scaling"][name]["scaling"]
            rows.append(
                [
                    f"3. decode pool 2 vs 1 workers ≥ 1.8× ({name})",
                    _r(value),
                    "yes" if value >= 1.8 else "no",
                ]
            )
    if _ok(res, "priorities"):
        value = res["priorities"]["p95_ratio"]
        rows.append(["4. INTERACTION p95 busy ≤ 2× idle", _r(value), "yes" if value <= 2 else "no"])
    if _ok(res, "memory"):
        for name, m in res["memory"].items():
            limit = m["cache_limit_mib"] + 100
            rows.append(
                [
                    f"5. peak RSS ≤ cache + 100 MB ({name}; main / main+workers)",
                    f"{m['peak_main_mib']:.0f} / {m['peak_total_mib']:.0f} MiB vs {limit:.0f}",
                    f"main {'yes' if m['peak_main_mib'] <= limit else 'no'}, "
                    f"total {'yes' if m['peak_total_mib'] <= limit else 'no'}",
                ]
            )
    return ["## Goals", "", *_table(["goal", "measured", "met"], rows)]


def _e2e(res: dict[str, Any]) -> list[str]:
    e2e = res["e2e"]
    rows, ceil = [], []
    for name, e in e2e.items():
        fps, r = e["fps"], e["ratios"]
        rows.append(
            [
                name,
                e["frames"],
                _f(e["compressed_kib_per_frame"]),
                _f(fps["peer"]),
                _f(fps["peer_identity"]),
                _f(fps["il_default"]),
                _f(fps["il_w2"]),
                _r(r["default_vs_peer"]),
                _r(r["identity_vs_peer_identity"]),
                _r(r["identity_vs_peer"]),
            ]
        )
        best = e["best_concurrency"]
        ceil.append(
            [
                name,
                f"{_f(fps['fetch_gzip'])} (c={best['gzip']})",
                f"{_f(fps['fetch_identity'])} (c={best['identity']})",
                _f(fps["decode"]),
                _r(r["default_vs_lower_ceiling"]),
                _r(r["identity_vs_lower_ceiling"]),
                _r(r["default_vs_shared_bound"]),
                _r(r["identity_vs_shared_bound"]),
            ]
        )
    split = [
        [n, *(_f(e["peer_ms_per_frame"][k], 1) for k in ("http", "decode", "lut"))]
        for n, e in e2e.items()
    ]
    cpu = [
        [
            n,
            _f(e["fps"]["il_default"]),
            *(_f(e["cpu_ms_per_frame"][k], 2) for k in ("main", "workers", "server")),
            _f(e["cpu_ms_per_frame"]["cores"], 2),
            # The default loader asks for pixel data without gzip: the identity bound.
            _r(e["fps"]["il_default"] * (1 / e["fps"]["fetch_identity"] + 1 / e["fps"]["decode"])),
        ]
        for n, e in e2e.items()
        if "cpu_ms_per_frame" in e
    ]
    return [
        "## 1. End to end: WADO-RS frames → numpy (frames/s, median of rounds)",
        "",
        "`peer` = dicomweb-client `retrieve_instance_frames` + pydicom `pixel_array` + "
        "`apply_modality_lut`, sequential, on the first frames of the series; `imageloader "
        "default` = `ImageLoader()` (max_web_workers resolves to the core count) loading "
        "the whole series; `identity` = the same with `Accept-Encoding: identity` "
        "(Orthanc gzips every response otherwise).",
        "",
        *_table(
            [
                "series",
                "frames",
                "KiB/frame",
                "peer",
                "peer identity",
                "imageloader default",
                "imageloader identity",
                "default / peer",
                "identity / peer identity",
                "identity / peer",
            ],
            rows,
        ),
        "Peer time per frame (ms): HTTP (dicomweb-client), codec (pydicom), modality LUT.",
        "",
        *_table(["series", "HTTP", "codec", "LUT"], split),
        "## 2. Ceilings (frames/s) and imageloader against them",
        "",
        "Lower ceiling = min(fetch, decode) of the same transport. Shared bound = "
        "1 / (1/fetch + 1/decode): what is left when fetch (Orthanc included) and decode "
        "compete for the same cores.",
        "",
        *_table(
            [
                "series",
                "fetch gzip",
                "fetch identity",
                "decode (all cores)",
                "default / lower",
                "identity / lower",
                "default / shared",
                "identity / shared",
            ],
            ceil,
        ),
        *(
            [
                "CPU per frame (ms) by process while the default loader loads the series, "
                "and the cores they kept busy together (of 2; Orthanc included): where "
                "the next gap is.",
                "",
                *_table(
                    [
                        "series",
                        "frames/s",
                        "main process",
                        "decode workers",
                        "Orthanc",
                        "cores busy",
                        "of shared bound (identity)",
                    ],
                    cpu,
                ),
            ]
            if cpu
            else []
        ),
    ]


def _scaling(res: dict[str, Any]) -> list[str]:
    out = ["## 3. Scaling, cold start, time to first image", ""]
    if _ok(res, "e2e"):
        rows = [
            [n, _f(e["fps"]["il_w1"]), _f(e["fps"]["il_w2"]), _r(e["ratios"]["workers_2_vs_1"])]
            for n, e in res["e2e"].items()
        ]
        out += ["End to end (identity) by `max_web_workers`:", ""]
        out += _table(["series", "1 worker", "2 workers", "2 / 1"], rows)
    if _ok(res, "decode_scaling"):
        dec = res["decode_scaling"]
        keys = list(next(iter(dec.values()))["fps"])
        rows = [
            [
                n,
                *(_f(d["fps"][k]) for k in keys),
                _r(d["scaling"]),
                _r(d.get("executor_scaling", float("nan"))),
                _r(d["pool_vs_pydicom"]),
            ]
            for n, d in dec.items()
        ]
        out += ["Decode only (frames in memory), frames/s:", ""]
        out += _table(
            ["series", *keys, "pool N / 1", "bare executor N / 1", "pool N / pydicom"], rows
        )
    if _ok(res, "startup"):
        st = res["startup"]
        out += [
            f"`DecodePool.warm()` of {len(st) - 1 and 2} workers: "
            f"{st['pool_warm_seconds'] * 1000:.0f} ms.",
            "",
        ]
        rows = [
            [
                n,
                _f(s["cold_first_ms"]),
                _f(s["warm_first_ms"]),
                _r(s["cold_vs_warm_first"]),
                _f(s["cold_series_s"], 2),
                _f(s["warm_series_s"], 2),
                _r(s["cold_vs_warm_series"]),
            ]
            for n, s in st.items()
            if isinstance(s, dict)
        ]
        out += _table(
            [
                "series",
                "cold first image ms",
                "warm first image ms",
                "cold/warm",
                "cold series s",
                "warm series s",
                "cold/warm",
            ],
            rows,
        )
    return out


def render(res: dict[str, Any], plots: list[str]) -> str:
    meta = res.get("meta", {})
    encoders = ", ".join(f"{n}: {s['encoder']}" for n, s in meta.get("series", {}).items())
    lines = [
        f"# Benchmark results — {meta.get('date', '?')} ({meta.get('profile', '?')} profile)",
        "",
        "Generated by `python -m benchmarks` — do not edit by hand. "
        f"Machine: {meta.get('machine')}; shared and noisy, so every comparison is "
        f"interleaved in the same run ({meta.get('rounds')} rounds, medians) and read as a "
        f"ratio. Orthanc runs on the same cores. Versions: {meta.get('versions')}.",
        "",
        f"Data: a synthetic 512×512 16-bit CT phantom, {meta.get('instances_per_series')} "
        "instances per series, one series per transfer syntax "
        f"({encoders}); "
        f"multi-frame instance of {meta.get('multiframe_frames')} frames.",
        "",
        f"Wall time: {meta.get('wall_seconds', 0):.0f} s (sections: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in meta.get("section_seconds", {}).items())
        + f"; setup {meta.get('setup')}).",
        "",
    ]
    lines += _goals(res)
    if _ok(res, "e2e"):
        lines += _e2e(res)
    lines += _scaling(res) + rest_sections(res) + cornerstone_sections(res) + profile_sections(res)
    errors = [
        f"- {k}: {v['error']}" for k, v in res.items() if isinstance(v, dict) and "error" in v
    ]
    if errors:
        lines += ["## Errors", "", *errors, ""]
    lines += ["## Figures", "", *(f"![{p}]({p})" for p in plots), ""]
    return "\n".join(lines)
