"""Measure every installed codec on every transfer syntax; write ``benchmarks/CODECS.md``.

Inputs are Cornerstone3D's test images (the 512×512 16-bit CT in every syntax,
the 640×400 colour test pattern) plus HTJ2K encodings of both made here with
imagecodecs (the corpus has no HTJ2K). For each frame, each codec registered for
its family is timed on its own (median of repeated runs, after a warm-up); the
last column is the whole ``decode_frame`` (codec + pixel contract) as a worker
runs it. The codec order in ``imageloader/decode/codecs.py`` comes from this table.

Usage::

    python benchmarks/bench_codecs.py [--corpus DIR] [--output benchmarks/CODECS.md]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.encaps import generate_frames

from imageloader.decode.codecs import Unsuited, default_registry
from imageloader.decode.params import PixelParams
from imageloader.decode.syntaxes import SYNTAXES, Family, read_header
from imageloader.decode.worker import decode_frame
from imageloader.dicom.part10 import pixel_params

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "cornerstone"
HERE = Path(__file__).resolve().parent


@dataclass
class Case:
    label: str
    data: bytes
    params: PixelParams


def _params(ds: pydicom.Dataset, uid: str | None = None) -> PixelParams:
    # The loaders' own mapping, so the benchmark decodes what a load would.
    return pixel_params(ds, uid or str(ds.file_meta.TransferSyntaxUID))


def _case(path: Path, label: str, uid: str | None = None) -> Case:
    ds = pydicom.dcmread(path)
    if uid is not None:  # re-encode (RLE of the test pattern: the corpus has none)
        ds.compress(uid)
    params = _params(ds)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        data = next(generate_frames(ds.PixelData, number_of_frames=1))
    else:
        data = bytes(ds.PixelData[: params.native_frame_bytes])
    return Case(label, bytes(data), params)


def _htj2k_cases(ct: Path, rgb: Path) -> list[Case]:
    import imagecodecs

    cases = []
    for path, name in ((ct, "CT"), (rgb, "test pattern RGB")):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        lossless = imagecodecs.htj2k_encode(pixels, reversible=True)
        cases.append(Case(name, lossless, _params(ds, "1.2.840.10008.1.2.4.201")))
        lossy = imagecodecs.htj2k_encode(pixels, level=0.5, reversible=False)
        cases.append(Case(name, lossy, _params(ds, "1.2.840.10008.1.2.4.203")))
    return cases


def cases(corpus: Path) -> list[Case]:
    """The frames to measure, one per (image, transfer syntax)."""
    found = [_case(corpus / "CTImage.dcm", "CT (original file)")]
    for path in sorted(corpus.glob("CTImage.dcm_*")):
        found.append(_case(path, "CT"))
    for name in (
        "TestPattern_RGB.dcm",
        "TestPattern_JPEG-Baseline_YBRFull.dcm",
        "TestPattern_JPEG-Baseline_YBR422.dcm",
        "TestPattern_JPEG-Lossless_RGB.dcm",
        "TestPattern_JPEG-LS-Lossless.dcm",
        "TestPattern_JPEG-LS-NearLossless.dcm",
        "US-YBR_FULL_422-EVRLE.dcm",
    ):
        found.append(
            _case(corpus / name, name.removesuffix(".dcm").replace("TestPattern_", "test pattern "))
        )
    found.append(_case(corpus / "TestPattern_RGB.dcm", "test pattern RGB", "1.2.840.10008.1.2.5"))
    found += _htj2k_cases(corpus / "CTImage.dcm", corpus / "TestPattern_RGB.dcm")
    return found


def timeit(
    runs: dict[str, Callable[[], Any]], rounds: int = 7, budget: float = 0.05
) -> dict[str, float]:
    """Median ms per call of each run, interleaved round by round.

    Each round gives every run ``budget`` seconds in turn, so load from other
    processes on a shared machine falls on all of them alike; the median over
    the rounds discards the unlucky ones.
    """
    for fn in runs.values():  # warm up: imports, codec initialisation, caches
        fn()
        fn()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            samples[name].append(ms_per_call(fn, budget))
    return {name: statistics.median(values) for name, values in samples.items()}


def ms_per_call(fn: Callable[[], Any], budget: float) -> float:
    """Mean ms per call of ``fn`` called for ``budget`` seconds (at least once)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        spent = time.perf_counter() - start
        if spent >= budget:
            return spent / calls * 1000.0


def measure(case: Case) -> tuple[dict[str, str], str]:
    """ms per frame of each codec (or why it cannot), and of the whole decode_frame."""
    registry = default_registry()
    syntax = SYNTAXES[case.params.transfer_syntax_uid]
    info = read_header(case.data, syntax.family)
    results: dict[str, str] = {}
    runs: dict[str, Callable[[], Any]] = {}
    if syntax.encapsulated:
        for codec in registry.codecs(syntax.family):
            if not registry.available(codec):
                results[codec.name] = "not installed"
                continue
            try:
                out = codec.decode(case.data, case.params, info)
                if out.pixels.shape[:2] != (case.params.rows, case.params.columns):
                    raise ValueError(f"wrong shape {out.pixels.shape}")
            except Unsuited as exc:
                results[codec.name] = f"n/a ({exc})"
                continue
            except Exception as exc:
                results[codec.name] = f"fails ({type(exc).__name__})"
                continue
            runs[codec.name] = functools.partial(codec.decode, case.data, case.params, info)
    chosen = decode_frame(case.data, case.params).codec
    runs["decode_frame"] = functools.partial(decode_frame, case.data, case.params)
    times = timeit(runs)
    results.update({name: f"{ms:.2f}" for name, ms in times.items()})
    return results, f"{results.pop('decode_frame')} ({chosen})"


def _family(case: Case) -> Family:
    return SYNTAXES[case.params.transfer_syntax_uid].family


def render(rows: list[tuple[Case, dict[str, str], str]]) -> str:
    """The Markdown page: the order per family, then one table per family."""
    registry = default_registry()
    lines = [
        "# Codec speed per transfer syntax",
        "",
        "Generated by `python benchmarks/bench_codecs.py` — do not edit by hand.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}.",
        "",
        "Median ms per frame over interleaved rounds. Each codec column times that codec",
        "alone on the frame; **decode_frame** is the whole worker call (codec, sign",
        "extension, modality LUT or colour conversion) with the codec it chose. Columns",
        "are in the order `imageloader.decode.codecs` tries them: fastest first.",
        "`pylibjpeg-libjpeg` is pydicom's default plugin for JPEG-LS and JPEG lossless.",
        "",
        "## Order tried",
        "",
        "| family | codecs, in order |",
        "|---|---|",
    ]
    seen: list[str] = []
    for case, _, _ in sorted(rows, key=lambda r: list(Family).index(_family(r[0]))):
        family = SYNTAXES[case.params.transfer_syntax_uid].family
        if family.value in seen:
            continue
        seen.append(family.value)
        names = [c.name for c in registry.codecs(family)] or ["numpy (built in)"]
        lines.append(f"| {family.value} | {' → '.join(names)} |")
    lines.append("")
    order = [f.value for f in Family]
    for family_name in sorted(seen, key=order.index):
        members = [
            row
            for row in rows
            if SYNTAXES[row[0].params.transfer_syntax_uid].family.value == family_name
        ]
        family = SYNTAXES[members[0][0].params.transfer_syntax_uid].family
        codecs = [c.name for c in registry.codecs(family)]
        lines += [f"## {family_name}", ""]
        header = ["image", "transfer syntax", *codecs, "decode_frame"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for case, results, total in members:
            syntax = SYNTAXES[case.params.transfer_syntax_uid]
            p = case.params
            size = f"{p.columns}×{p.rows}, {p.samples_per_pixel}×{p.bits_stored} bit"
            cells = [f"{case.label} ({size})", f"{syntax.name} `{syntax.uid}`"]
            cells += [results.get(name, "") for name in codecs]
            lines.append("| " + " | ".join([*cells, total]) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--output", type=Path, default=HERE / "CODECS.md")
    args = parser.parse_args(argv)
    if not (args.corpus / "CTImage.dcm").is_file():
        print(f"Cornerstone test images not found in {args.corpus}", file=sys.stderr)
        return 1
    warnings.simplefilter("ignore")
    rows = []
    for case in cases(args.corpus):
        results, total = measure(case)
        print(f"{case.label:40s} {case.params.transfer_syntax_uid:24s} {results} {total}")
        rows.append((case, results, total))
    args.output.write_text(render(rows) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
