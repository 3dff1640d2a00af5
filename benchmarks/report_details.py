"""The report's later sections: priorities, memory, multi-frame, core, where the time goes,
the dataset job (section 11, placed after section 10 by :func:`dataset_report`) and
decode levels and progressive loading (section 12, :func:`progressive_report`)."""

from __future__ import annotations

from typing import Any

from ._tables import _f, _insert_section, _ok, _r, _table

__all__ = [
    "dataset_report",
    "dataset_sections",
    "profile_sections",
    "progressive_report",
    "progressive_sections",
    "rest_sections",
]

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
        if all("groups" in p for p in prof.values()):
            out += _profile_groups(res["profiles"]["tool"], prof)
        else:  # results from before the per-thread CPU was measured
            out += _profile_flat(res["profiles"]["tool"], prof)
    if _ok(res, "costs"):
        costs = res["costs"]
        flat = {k: v for k, v in costs.items() if not isinstance(v, dict)}
        out += ["Unit costs (ms unless named):", ""]
        out += _table(["measure", "value"], [[k, _f(v, 3)] for k, v in flat.items()])
        for key, value in costs.items():
            if isinstance(value, dict):
                out += _table([key, "value"], [[k, _f(v, 2)] for k, v in value.items()])
    return out


def _yes(value: Any) -> str:
    return "yes" if value else "**NO**"


def _dataset(d: dict[str, Any]) -> list[str]:
    rows, split = [], []
    for key, s in d["sets"].items():
        sec, sps, mbs, fps = s["seconds"], s["series_per_s"], s["mb_per_s"], s["frames_per_s"]
        rows.append(
            [
                key,
                len(s["series"]),
                s["frames"],
                _f(s["decoded_mb"], 1),
                _f(sec["ours"], 2),
                _f(sec["baseline"], 2),
                _r(s["ratio"]),
                _f(sps["ours"], 2),
                _f(sps["baseline"], 2),
                _f(mbs["ours"], 1),
                _f(mbs["baseline"], 1),
                _f(fps["ours"]),
                _f(fps["baseline"]),
            ]
        )
        o, b = s["split_s"]["ours"], s["split_s"]["baseline"]
        split.append(
            [
                key,
                _f(o["search_ids"], 2),
                _f(o["prefetch"], 2),
                _f(o["close"], 2),
                _f(b["retrieve"], 2),
                _f(b["save"], 2),
                _f(b["dcm2niix"], 2),
                f"{_f(s['output_mib']['ours'], 1)} / {_f(s['output_mib']['baseline'], 1)}",
            ]
        )
    checks = []
    for name, e in d["equal"].items():
        if "voxels_equal" not in e:
            note, got = e.get("note", ""), e.get("baseline_received", "")
            checks.append([name, _yes(False), f"not compared: {note}", "", "", "", "", got])
            continue
        diff = ""
        if "differing_voxels" in e:
            diff = f"{e['differing_voxels']:,} differ, max {e['max_abs_diff']}"
        elif not e["voxels_equal"]:
            diff = "shapes differ"
        checks.append(
            [
                name,
                _yes(e["equal"]),
                _yes(e["voxels_equal"]) + (f" ({diff})" if diff else ""),
                f"{e['affine_max_diff_mm']:.2g}",
                " / ".join("×".join(map(str, e["shape"][k])) for k in ("ours", "dcm2niix")),
                " / ".join(e["datatype"][k] for k in ("ours", "dcm2niix")),
                " / ".join(e["orientation"][k] for k in ("ours", "dcm2niix")),
                e.get("baseline_received", ""),
            ]
        )
    return [
        "## 11. The dataset job: DICOMweb series → NIfTI + index.csv",
        "",
        f"Ours: `ImageLoader(max_web_workers={d['workers']})` entered for the job (workers "
        'start inside the timing), per series `search_series(study, Modality="CT")` → '
        '`image_ids_for_series`, then one `prefetch(..., format="nifti")`: a `.nii.gz`, a '
        "manifest per series and `index.csv`. Baseline, what users run today: per series "
        "dicomweb-client `retrieve_series` (its default Accept: Orthanc transcodes to the "
        "syntax in the last column below), `ds.save_as` into a folder, `dcm2niix -z y -f %s` on it "
        f"(dcm2niix {d['dcm2niix']}, gzip by "
        f"{'pigz' if d.get('pigz') else 'its own zlib, one core: pigz is not installed'}); "
        "sequential, no index. Fresh output folders each "
        f"round, {d['rounds']} interleaved rounds (order alternating), medians. Ratio = "
        "baseline s / ours s. MB/s: decoded pixel bytes of the set (10^6 B) per second, the "
        "same bytes for both.",
        "",
        *_table(
            [
                "series set",
                "series",
                "frames",
                "decoded MB",
                "ours s",
                "baseline s",
                "baseline / ours",
                "ours series/s",
                "baseline series/s",
                "ours MB/s",
                "baseline MB/s",
                "ours frames/s",
                "baseline frames/s",
            ],
            rows,
        ),
        "Where the time goes (s, medians): ours = QIDO-RS + metadata, prefetch (load, "
        "decode, write), loader exit; baseline = `retrieve_series`, `save_as`, dcm2niix; "
        "and the NIfTI written (MiB, ours / dcm2niix; ours gzips at level 1).",
        "",
        *_table(
            [
                "series set",
                "ours search + ids",
                "ours prefetch",
                "ours close",
                "retrieve_series",
                "save_as",
                "dcm2niix",
                "NIfTI MiB",
            ],
            split,
        ),
        "Same as dcm2niix (once per series, first round): after "
        "`nibabel.as_closest_canonical`, `get_fdata()` voxels equal and affines within "
        f"0.01 mm. All equal: {_yes(d['all_equal'])}.",
        "",
        *_table(
            [
                "series",
                "equal",
                "voxels equal",
                "affine max diff (mm)",
                "shape (ours / dcm2niix)",
                "datatype",
                "orientation",
                "retrieve_series got",
            ],
            checks,
        ),
    ]


def dataset_sections(res: dict[str, Any]) -> list[str]:
    """Section 11 (or the note saying why it was skipped)."""
    if not _ok(res, "dataset"):
        return []
    if "skipped" in res["dataset"]:
        title = "## 11. The dataset job: DICOMweb series → NIfTI + index.csv"
        return [title, "", f"Skipped: {res['dataset']['skipped']}.", ""]
    return _dataset(res["dataset"])


def dataset_report(text: str, res: dict[str, Any]) -> str:
    """``text`` (the rendered report) with section 11 before its errors and figures."""
    return _insert_section(text, dataset_sections(res))


PROGRESSIVE_TITLE = "## 12. Decode levels and progressive loading (issue 15)"


def _failed(key: str, part: dict[str, Any]) -> list[str]:
    return [f"{key}: failed: {part['error']}", ""]


def _progressive_levels(lv: dict[str, Any]) -> list[str]:
    goal = lv["goal"]
    levels = list(lv["cases"][0]["levels"])
    rows = []
    for case in lv["cases"]:
        cells = [case["syntax"], _f(case["kib"], 1)]
        cells += [_f(case["levels"][n]["ms"], 2) for n in levels]
        cells += [_r(case["levels"][n]["ratio"]) for n in levels[1:]]
        cells.append(" / ".join(f"`{case['levels'][n]['codec']}`" for n in levels))
        rows.append(cells)
    sizes = ", ".join(
        f"{n}: {'×'.join(map(str, lv['cases'][0]['levels'][n]['shape']))}" for n in levels
    )
    return [
        f"Decode levels, in this process on one thread: `decode_frame(data, params, "
        f"DecodeOptions(decode_level=n))` on the {lv['image']} (level {sizes}). ms per "
        f"frame: each round gives every case {lv['budget_s']:.2f} s in turn, median of "
        f"{lv['rounds']} rounds; ratio = full ms / level ms; the codec `decode_frame` "
        "reports at levels 0 / 1 / 2 / 3 (`+downsample`: decoded in full, then reduced).",
        "",
        *_table(
            [
                "goal",
                "measured",
                "met",
            ],
            [
                [
                    f"≥ {goal['target']:g}× faster at level {goal['level']} than in full "
                    f"on {goal['syntax']}",
                    _r(goal["ratio"]),
                    _yes(goal["met"]),
                ]
            ],
        ),
        *_table(
            [
                "syntax",
                "KiB",
                *(f"level {n} ms" if n != "0" else "full ms" for n in levels),
                *(f"full / level {n}" for n in levels[1:]),
                "codec at levels 0 / 1 / 2 / 3",
            ],
            rows,
        ),
    ]


def _progressive_stages(st: dict[str, Any]) -> list[str]:
    stages, full = st["stages"], st["full"]
    shapes = " then ".join(
        f"{'×'.join(map(str, shape))} (level {level})"
        for shape, level in zip(stages["shapes"], stages["decode_levels"], strict=False)
    )
    rows = [
        [
            "`iter_image_stages`: first image",
            _f(stages["first_s"] * 1000, 1),
            f"{_r(st['full_vs_first'])} (time to full without stages / time to first image)",
        ],
        [
            "`iter_image_stages`: last image (full)",
            _f(stages["last_s"] * 1000, 1),
            _r(st["full_vs_last"]),
        ],
        ["`load_image` (full, no stages)", _f(full["s"] * 1000, 1), _r(1.0)],
    ]
    notes = []
    if stages.get("first_bytes_received"):
        notes.append(
            f"The first image was decoded from the first {stages['first_bytes_received']:,.0f} "
            f"bytes of the body (median; {stages['first_bytes_received'] / st['body_bytes']:.1%})."
        )
    check = st.get("first_vs_complete_level")
    if check:
        exact = check.get("exact_from_codestream_bytes")
        at_link = (
            f", about {exact / (st['link_mb_per_s'] * 1e6) * 1000:.0f} ms into the transfer "
            "at the link's rate"
            if exact
            else ""
        )
        notes.append(
            f"Against the same level decoded from the complete codestream, the first image "
            f"differs in {check['differing_pixels']:,.0f} of {check['pixels']:,} pixels (median "
            f"over rounds; max abs difference {check['max_abs_diff']:g}). `decode_partial` "
            f"gives exactly that level from the first "
            + (f"{exact:,} bytes of the codestream{at_link}." if exact else "— only the whole.")
        )
    return [
        f"Time to first image, one {'×'.join(map(str, full['shape']))} HTJ2K frame "
        f"(`{st['file']}`, codestream {st['codestream_bytes']:,} bytes) from a local aiohttp "
        f"server that sends the frames body {st['chunk_bytes']:,} bytes at a time with "
        f"{st['pause_ms']:g} ms asleep between ({st['send_s'] * 1000:.0f} ms to send the "
        f"{st['body_bytes']:,}-byte body: {st['link_mb_per_s']:.2f} MB/s; no latency: the "
        "first chunk leaves at once). `async for image in loader.iter_image_stages(image_id, "
        f"levels={tuple(st['levels'])})` ({shapes}) against `await loader.load_image(image_id)`;"
        " a fresh `ImageLoader(max_web_workers=1)` per side and round, workers warmed and "
        "the metadata loaded before the clock starts; ms from the call, median of "
        f"{st['rounds']} interleaved rounds.",
        "",
        *_table(["", "ms", "`load_image` ms / this"], rows),
        *([" ".join(notes), ""] if notes else []),
    ]


def _progressive_thumbnails(th: dict[str, Any]) -> list[str]:
    sides = th["sides"]
    names = {
        "levels": "`image_router()`: decoded at the covering level, then fitted",
        "full_then_fit": "`image_router(decode_levels=False)`: decoded in full, then fitted",
    }
    rows = [
        [
            names[key],
            _f(s["images_per_s"], 1),
            _f(s["s"], 2),
            _f(s["cpu_ms_per_image"]["app"], 1),
            _f(s["cpu_ms_per_image"]["workers"], 1),
            ", ".join("×".join(map(str, shape)) for shape in s["png_shapes"]),
            _f(s["png_kib"], 1),
        ]
        for key, s in sides.items()
    ]
    return [
        f"The FastAPI thumbnail route: `GET /images/{{id}}?size={th['size']}` for "
        f"{th['images']} distinct frames of the {th['series']} series (JPEG 2000 lossless, "
        f"512² 16-bit) from the private Orthanc, {th['concurrency']} requests at a time "
        "(aiohttp), from an app `FastAPI(lifespan=imageloader_lifespan(access=AccessPolicy("
        f"...), max_web_workers={th['workers']}))` served by uvicorn in its own process, "
        "started for the round (so every load is cold; one untimed request of another frame "
        f"first); Orthanc warmed by an untimed pass; median of {th['rounds']} interleaved "
        "rounds; CPU of the app and its decode workers from `/proc`.",
        "",
        *_table(
            [
                "route",
                "images/s",
                "s",
                "app CPU ms / image",
                "workers CPU ms / image",
                "PNG",
                "PNG KiB",
            ],
            rows,
        ),
        f"Decode levels / full then fit: {_r(th['ratio'])} images/s.",
        "",
    ]


def progressive_sections(res: dict[str, Any]) -> list[str]:
    """Section 12 (empty when it did not run or failed as a whole)."""
    if not _ok(res, "progressive"):
        return []
    p = res["progressive"]
    out = [PROGRESSIVE_TITLE, ""]
    for key, render in (
        ("levels", _progressive_levels),
        ("stages", _progressive_stages),
        ("thumbnails", _progressive_thumbnails),
    ):
        part = p.get(key)
        if part is None:
            continue
        out += _failed(key, part) if "error" in part else render(part)
    return out


def progressive_report(text: str, res: dict[str, Any]) -> str:
    """``text`` (the rendered report) with section 12 before its errors and figures."""
    return _insert_section(text, progressive_sections(res))


PROFILE_GROUPS = (  # key, title, prefix of its rows
    ("loop", "event loop thread", "loop"),
    ("threads", "other threads of the main process", "threads"),
    ("workers", "decode workers", "workers"),
)


def _profile_groups(tool: str, prof: dict[str, Any]) -> list[str]:
    """One table: per thread group its measured CPU, then that CPU split by category."""
    out = [
        f"Tool: {tool}. Only the timed loads (warm workers; no imports, metadata "
        "fetch or shutdown). **Bold rows are measured CPU** ms per frame: the event "
        "loop thread's `time.thread_time()`, the main process's other threads "
        "(process CPU minus the loop's), the decode workers' "
        "`/proc/<pid>/task/*/schedstat`. The rows under a bold row split that CPU by "
        "the share of the group's stack samples whose innermost recognised frame "
        "names the category (each group's rows add up to its total); samples no rule "
        "names are `unattributed / other` (a group with CPU but no sample is all "
        "unattributed: pyinstrument samples the loop thread alone). Waits with a "
        "Python frame on top (select, locks, sleeps, an idle pool thread) are dropped; "
        "a thread blocked inside a pipe read or write still counts. `sampled (face "
        "value)` is the samples unscaled: time on a core or runnable, so more than the "
        "CPU when the thread waits for a core (`waiting for a core`: the loop thread's "
        "run-queue time, from schedstat); a runnable thread's samples land where it "
        "lost its core, often just after waking another process (the socket send to "
        "Orthanc in the HTTP request row, the pipe write to a worker in the hand-off "
        "row), so those rows may lean high when that wait is long. pyinstrument (the "
        "fallback) times wall-clock and its hook adds CPU to Python-heavy code. Raw "
        "collapsed stacks (and pyinstrument's HTML) in the files named.",
        "",
    ]
    rows: list[list[Any]] = [
        [
            "**wall ms per frame**",
            *(_f(p["seconds"] / p["frames"] * 1000, 2) for p in prof.values()),
        ]
    ]
    for key, title, prefix in PROFILE_GROUPS:
        groups = [p["groups"].get(key, {}) for p in prof.values()]
        if not any(g.get("cpu_ms_per_frame") or g.get("sampled_ms_per_frame") for g in groups):
            continue
        total = [g.get("cpu_ms_per_frame") for g in groups]
        if any(t is not None for t in total):
            rows.append([f"**{title}: total CPU per frame**", *(_bold(t) for t in total)])
        names: list[str] = []
        for g in groups:
            names += [n for n in g.get("categories", {}) if n not in names]
        rows += [
            [f"{prefix}: {n}", *(_f(g.get("categories", {}).get(n, 0), 2) for g in groups)]
            for n in names
        ]
        rows.append(
            [
                f"{prefix}: sampled (face value)",
                *(_f(g.get("sampled_ms_per_frame", 0), 2) for g in groups),
            ]
        )
        if key == "loop":
            rows.append(
                [
                    f"{prefix}: waiting for a core (run queue)",
                    *(_f(g.get("runqueue_ms_per_frame", ""), 2) for g in groups),
                ]
            )
    rows.append(
        [
            "other processes (resource tracker), sampled",
            *(_f(p.get("other_processes_ms_per_frame", 0), 2) for p in prof.values()),
        ]
    )
    rows.append(
        [
            "event loop busy (CPU / wall)",
            *(_f(p.get("loop_busy_fraction", 0), 2) for p in prof.values()),
        ]
    )
    rows.append(
        [
            "samples: loop / threads / workers",
            *(
                " / ".join(
                    _count(p["groups"].get(k, {}).get("samples")) for k, _, _ in PROFILE_GROUPS
                )
                for p in prof.values()
            ),
        ]
    )
    rows.append(
        [
            "stacks py-spy could not read (left out)",
            *(_count(p.get("sampling", {}).get("errors")) for p in prof.values()),
        ]
    )
    rows.append(["tool", *(p.get("tool", "") for p in prof.values())])
    rows.append(
        ["file", *(" ".join(filter(None, (p["file"], p.get("html")))) for p in prof.values())]
    )
    return out + _table(["CPU ms per frame", *prof], rows)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _bold(value: float | None) -> str:
    return "" if value is None else f"**{value:.2f}**"


def _profile_flat(tool: str, prof: dict[str, Any]) -> list[str]:
    out = [
        f"Tool: {tool}. CPU ms per frame by process, thread and "
        "innermost recognised frame, start-up excluded. py-spy's idle detection does "
        "not work on this VM: waits with a Python frame on top (select, locks, "
        "sleeps) are dropped here, but a thread blocked inside a pipe read or write "
        "still counts (the IPC rows include such waits). Raw stacks in the files named.",
        "",
    ]
    cats = sorted({c for p in prof.values() for c in p.get("cpu_ms_per_frame", {})})
    if not cats:
        out += ["No category: these runs kept no collapsed stacks to sort (HTML only).", ""]
    rows = [
        [c, *(_f(p.get("cpu_ms_per_frame", {}).get(c, 0), 2) for p in prof.values())] for c in cats
    ]
    rows.append(
        [
            "**wall ms per frame**",
            *(_f(p["seconds"] / p["frames"] * 1000, 2) for p in prof.values()),
        ]
    )
    if any("loop_busy_fraction" in p for p in prof.values()):
        rows.append(
            ["event loop busy", *(_f(p.get("loop_busy_fraction", 0), 2) for p in prof.values())]
        )
    rows.append(["file", *(p["file"] for p in prof.values())])
    return out + _table(["category", *prof], rows)
