"""Side by side with Cornerstone, decoders: the same frames through Cornerstone3D's codecs and ours.

Cornerstone's side is ``cornerstone/codecs.mjs`` in Node: the codec packages at the
versions ``@cornerstonejs/dicom-image-loader`` 5.14 pins (``codec-charls``,
``codec-libjpeg-turbo-8bit``, ``codec-openjpeg``, ``codec-openjph`` as WebAssembly,
``jpeg-lossless-decoder-js`` in JavaScript), called as that loader's
``shared/decoders`` call them, on one thread, the decoded samples copied out of wasm
memory. Ours, in this process on one thread: the codec ``decode_frame`` picks, alone
(``codec`` — the same work), and the whole ``decode_frame`` (codec, checks, sign
extension, modality LUT or colour conversion — more work). Frames: Cornerstone's
test images (``tests/data/cornerstone``), plus HTJ2K encodings of two of them made
here (OpenJPH via imagecodecs; the corpus has none). Median ms per frame over
interleaved rounds (ours, ours whole, Cornerstone, frame by frame, each given the
same time budget). The codec outputs are compared byte for byte.
"""

from __future__ import annotations

import functools
import json
import statistics
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imageloader.decode.codecs import default_registry
from imageloader.decode.syntaxes import SYNTAXES, read_header
from imageloader.decode.worker import decode_frame

from .bench_codecs import CORPUS, Case, _case, _htj2k_cases, ms_per_call
from .cornerstone_node import NodeScript, missing_node, prepare, versions
from .environment import BenchEnv

__all__ = ["run_cornerstone_codecs"]

Log = Callable[[str], None]
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
CT = "CTImage.dcm_{}TransferSyntax_{}.dcm"

#: (syntax, image, corpus file or None for the HTJ2K ones made here, Cornerstone codec)
CASES: tuple[tuple[str, str, str | None, str], ...] = (
    ("JPEG-LS lossless", "CT", CT.format("JPEGLSLossless", "1.2.840.10008.1.2.4.80"), "jpegls"),
    ("JPEG-LS lossless", "test pattern RGB", "TestPattern_JPEG-LS-Lossless.dcm", "jpegls"),
    (
        "JPEG lossless SV1",
        "CT",
        CT.format("JPEGProcess14SV1", "1.2.840.10008.1.2.4.70"),
        "jpeglossless",
    ),
    ("JPEG lossless SV1", "test pattern RGB", "TestPattern_JPEG-Lossless_RGB.dcm", "jpeglossless"),
    ("JPEG baseline 8-bit", "CT", CT.format("JPEGProcess1", "1.2.840.10008.1.2.4.50"), "jpeg8"),
    (
        "JPEG baseline 8-bit",
        "test pattern YBR_FULL",
        "TestPattern_JPEG-Baseline_YBRFull.dcm",
        "jpeg8",
    ),
    (
        "JPEG baseline 8-bit",
        "test pattern YBR_FULL_422",
        "TestPattern_JPEG-Baseline_YBR422.dcm",
        "jpeg8",
    ),
    (
        "JPEG 2000 lossless",
        "CT",
        CT.format("JPEG2000LosslessOnly", "1.2.840.10008.1.2.4.90"),
        "j2k",
    ),
    ("HTJ2K lossless", "CT", None, "htj2k"),
    ("HTJ2K lossless", "test pattern RGB", None, "htj2k"),
)


def _frames(corpus: Path) -> list[tuple[str, str, Case, str]]:
    made = {
        c.label: c
        for c in _htj2k_cases(corpus / "CTImage.dcm", corpus / "TestPattern_RGB.dcm")
        if c.params.transfer_syntax_uid == HTJ2K_LOSSLESS
    }
    return [
        (syntax, image, _case(corpus / file, image) if file else made[image], codec)
        for syntax, image, file, codec in CASES
    ]


_ms = ms_per_call


def _compare(ours: np.ndarray, theirs: bytes) -> dict[str, Any]:
    mine = np.ascontiguousarray(ours)
    if mine.tobytes() == theirs:
        return {"identical": True}
    out: dict[str, Any] = {"identical": False, "bytes": [mine.nbytes, len(theirs)]}
    if mine.nbytes == len(theirs):
        other = np.frombuffer(theirs, mine.dtype).reshape(mine.shape)
        diff = np.abs(mine.astype(np.int64) - other.astype(np.int64))
        out.update(differing=int((diff > 0).sum()), max_abs_diff=int(diff.max()))
    return out


async def run_cornerstone_codecs(env: BenchEnv | None, log: Log) -> dict[str, Any]:
    """ms per frame of Cornerstone's codecs and ours on the same frames; outputs compared."""
    reason = missing_node()
    if reason is not None:
        log(f"  skipped: {reason}")
        return {"skipped": reason}
    workdir = prepare(log)
    quick = env is not None and env.profile.name == "quick"
    rounds, budget = (3, 0.1) if quick else (7, 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = _frames(CORPUS)
    folder = workdir / "frames"
    folder.mkdir(exist_ok=True)
    registry = default_registry()
    manifest, ours = [], {}
    for index, (_, _, case, codec) in enumerate(frames):
        name = f"{index:02d}"
        (folder / f"{name}.bin").write_bytes(case.data)
        manifest.append(
            {
                "name": name,
                "codec": codec,
                "file": str(folder / f"{name}.bin"),
                "bitsAllocated": case.params.bits_allocated,
            }
        )
        family = SYNTAXES[case.params.transfer_syntax_uid].family
        info = read_header(case.data, family)
        chosen = decode_frame(case.data, case.params).codec
        [codec_obj] = [c for c in registry.codecs(family) if c.name == chosen]
        ours[name] = (
            chosen,
            functools.partial(codec_obj.decode, case.data, case.params, info),
            functools.partial(decode_frame, case.data, case.params),
        )
    (folder / "cases.json").write_text(json.dumps(manifest))
    samples: dict[str, dict[str, list[float]]] = {
        n: {"codec": [], "decode_frame": [], "cornerstone": []} for n in ours
    }
    results: list[dict[str, Any]] = []
    async with NodeScript("codecs.mjs", str(folder / "cases.json")) as node:
        for name, (_, codec_fn, whole_fn) in ours.items():  # warm up both sides
            codec_fn()
            whole_fn()
            await node.ask(cmd="time", name=name, budget=budget / 2)
        for round_ in range(rounds):
            for name, (_, codec_fn, whole_fn) in ours.items():
                samples[name]["codec"].append(_ms(codec_fn, budget))
                samples[name]["decode_frame"].append(_ms(whole_fn, budget))
                answer = await node.ask(cmd="time", name=name, budget=budget)
                samples[name]["cornerstone"].append(answer["ms"])
            log(f"  codecs round {round_ + 1}/{rounds} done")
        for (syntax, image, case, _), (name, (chosen, codec_fn, _)) in zip(
            frames, ours.items(), strict=True
        ):
            dump = folder / f"{name}.cornerstone"
            answer = await node.ask(cmd="dump", name=name, path=str(dump))
            med = {k: statistics.median(v) for k, v in samples[name].items()}
            p = case.params
            results.append(
                {
                    "syntax": syntax,
                    "image": image,
                    "size": f"{p.columns}×{p.rows}×{p.samples_per_pixel}, {p.bits_stored} bit",
                    "kib": len(case.data) / 1024,
                    "ours_codec": chosen,
                    "ms": med,
                    "samples": samples[name],
                    "codec_vs_cornerstone": med["cornerstone"] / med["codec"],
                    "decode_frame_vs_cornerstone": med["cornerstone"] / med["decode_frame"],
                    "cornerstone_output": answer["type"],
                    "pixels": _compare(codec_fn().pixels, dump.read_bytes()),
                }
            )
            log(
                f"  {syntax} {image}: ours {med['codec']:.2f} ms ({chosen}), whole "
                f"{med['decode_frame']:.2f}, Cornerstone {med['cornerstone']:.2f} ms; "
                f"identical {results[-1]['pixels']['identical']}"
            )
    return {"rounds": rounds, "budget_s": budget, "versions": versions(workdir), "cases": results}
