"""The report's "side by side with Cornerstone" sections: decoders, then loaders."""

from __future__ import annotations

from typing import Any

from ._tables import _f, _ok, _r, _table

__all__ = ["cornerstone_sections"]

OURS = (
    ("imageloader", "imageloader"),
    ("imageloader_warm", "imageloader, warm() first"),
    ("imageloader_identity", "imageloader, identity"),
)


def _codec_versions(versions: dict[str, str]) -> str:
    return ", ".join(
        f"`{name}` {version}"
        for name, version in versions.items()
        if "codec-" in name or "decoder" in name
    )


def _identical(p: dict[str, Any]) -> str:
    if p.get("identical"):
        return "yes"
    if "max_abs_diff" in p:
        return f"no ({p['differing']:,} differ, max {p['max_abs_diff']})"
    return f"no (sizes {p.get('bytes')})"


def _codecs(c: dict[str, Any]) -> list[str]:
    rows = [
        [
            r["syntax"],
            f"{r['image']} ({r['size']})",
            _f(r["kib"], 1),
            r["ours_codec"],
            _f(r["ms"]["codec"], 2),
            _f(r["ms"]["decode_frame"], 2),
            _f(r["ms"]["cornerstone"], 2),
            _r(r["codec_vs_cornerstone"]),
            _r(r["decode_frame_vs_cornerstone"]),
            _identical(r["pixels"]),
        ]
        for r in c["cases"]
    ]
    return [
        "## 8. Side by side with Cornerstone: decoders (ms per frame)",
        "",
        f"Cornerstone3D's codecs ({_codec_versions(c['versions'])}; Node {c['versions']['node']}) "
        "as `@cornerstonejs/dicom-image-loader` 5.14 calls them, one frame at a time on one "
        "thread, against ours in this process on one thread: the codec `decode_frame` "
        "picks, alone (the same work), and the whole `decode_frame` (plus checks and the "
        f"pixel contract). Median of {c['rounds']} interleaved rounds of "
        f"{c['budget_s']:.2f} s per side. Ratio = Cornerstone ms / ours ms (> 1: ours "
        "faster). Bytes identical: the codecs' decoded samples compared byte for byte.",
        "",
        *_table(
            [
                "syntax",
                "image",
                "KiB",
                "our codec",
                "ours ms",
                "ours decode_frame ms",
                "Cornerstone ms",
                "ours / Cornerstone",
                "decode_frame / Cornerstone",
                "bytes identical",
            ],
            rows,
        ),
    ]


def _loader(c: dict[str, Any]) -> list[str]:
    series = c["series"]
    fps_rows, cpu_rows = [], []
    for name, s in series.items():
        fps, cpu = s["fps"], s["cpu_ms_per_frame"]
        fps_rows.append(
            [
                name,
                s["frames"],
                _f(fps["cornerstone"]),
                *(_f(fps[k]) for k, _ in OURS),
                *(_r(s["ratios"][k]) for k, _ in OURS),
                ", ".join(sorted({_identical(p) for p in s["pixels"].values()})),
            ]
        )
        cpu_rows.append(
            [
                name,
                _f(cpu["cornerstone"], 2),
                *(_f(cpu[k], 2) for k, _ in OURS),
                *(_r(s["cpu_ratios"][k]) for k, _ in OURS),
                _f(s["first_load_fps"]["cornerstone"]),
                *(_f(s["first_load_fps"][k]) for k, _ in OURS),
            ]
        )
    labels = [label for _, label in OURS]
    return [
        "## 9. Side by side with Cornerstone: loading WADO-RS frames",
        "",
        f"`@cornerstonejs/dicom-image-loader` {c['versions']['@cornerstonejs/dicom-image-loader']} "
        f"in Node {c['versions']['node']} (shims: `navigator`, `xhr2`, `web-worker`, no "
        f"WebGL; `init({{maxWebWorkers: {c['workers']}}})`, `loadAndCacheImages` with its "
        "defaults: prefetch, 5 requests at a time, prescaled) against "
        f"`ImageLoader(max_web_workers={c['workers']})` as a user runs it (no manual "
        "warm-up), the same with `await loader.decode_pool.warm()` first, and that with "
        "`Accept-Encoding: identity` (xhr2 sends no Accept-Encoding, so Orthanc does not "
        "gzip Cornerstone's frames; aiohttp asks for gzip). The same frames from the same "
        "Orthanc; every side loads each series once untimed (Node twice the first, for its "
        f"JIT), then {c['rounds']} interleaved timed rounds (cache purged), medians. "
        "HTJ2K: Orthanc 1.10 refuses those frames as stored, so Cornerstone asks for "
        "explicit VR LE and its `beforeProcessing` hook relabels the part (imageloader does "
        "the equivalent itself). Pixels: every frame of the untimed load compared with "
        "Cornerstone's (modality LUT applied by both).",
        "",
        *_table(
            [
                "series",
                "frames",
                "Cornerstone frames/s",
                *labels,
                *(f"{label} / Cornerstone" for label in labels),
                "pixels identical",
            ],
            fps_rows,
        ),
        "Client CPU per frame (ms; Node's `process.cpuUsage()` with its worker threads; "
        "ours: this process and its decode workers; Orthanc excluded), the ratio ours / "
        "Cornerstone (< 1: ours uses less), and the untimed first load (frames/s: "
        "workers starting, or wasm compiling).",
        "",
        *_table(
            [
                "series",
                "CPU Cornerstone",
                *(f"CPU {label}" for label in labels),
                *(f"CPU {label} / Cornerstone" for label in labels),
                "first load Cornerstone",
                *(f"first load {label}" for label in labels),
            ],
            cpu_rows,
        ),
    ]


def cornerstone_sections(res: dict[str, Any]) -> list[str]:
    """Sections 8 and 9 (or the note saying why they were skipped)."""
    out: list[str] = []
    for key, title, render in (
        ("cornerstone_codecs", "8. Side by side with Cornerstone: decoders", _codecs),
        ("cornerstone_loader", "9. Side by side with Cornerstone: loading", _loader),
    ):
        if not _ok(res, key):
            continue
        if "skipped" in res[key]:
            out += [f"## {title}", "", f"Skipped: {res[key]['skipped']}.", ""]
        else:
            out += render(res[key])
    return out
