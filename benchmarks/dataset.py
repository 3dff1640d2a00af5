"""Measurement 11: the dataset job — DICOMweb series → one NIfTI file per series + ``index.csv``.

Per series set (the first ``SINGLE`` of ``SERIES`` alone, then all of them in one
job), every round runs both sides, order alternating, each into a fresh output
folder deleted after the round:

- ``ours``: ``ImageLoader(max_web_workers=<cores>)`` entered for the job (its decode
  workers start inside the timing, as a user's script starts them), then per series
  ``search_series(loader, base, study, Modality="CT")`` (QIDO-RS, the study → its CT
  series), ``image_ids_for_series`` and one ``prefetch(loader, ids, output=DIR,
  format="nifti")`` of every imageId: ``DIR/<SeriesUID>.nii.gz``, a JSON manifest per
  series and ``DIR/index.csv``. The loader's exit (workers stopping) is timed too.
- ``baseline``, what users run today: per series, dicomweb-client's
  ``retrieve_series`` (pydicom Datasets of whole Part 10 instances: Orthanc
  transcodes compressed series to explicit VR little endian, the default transfer
  syntax of that request), ``ds.save_as`` of each into a folder of its own, and
  ``dcm2niix -z y -f %s -o OUT FOLDER`` on it (the Debian binary; without pigz it
  gzips with its internal zlib, on one core: most of its time). Sequential, as such
  scripts are; no ``index.csv``.

Both sides get the series UIDs they start from (ours the study UID, found through
QIDO-RS); series metadata is read once untimed before the rounds so neither side pays
Orthanc's first touch. Figures are medians over rounds: seconds, series/s, decoded
MB/s (the decoded pixel bytes of the set, ``PrefetchReport.bytes``, 10^6 bytes, for
both sides: the same pixels) and frames/s; ratio = baseline seconds / ours.

Correctness, once per series per run (in the first round, untimed): after
``nibabel.as_closest_canonical`` the voxel arrays (``get_fdata``) of ours and
dcm2niix's output must be equal and the affines agree within 0.01 mm; the result is
recorded per series (with the largest differences), never raised.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imageloader import ImageLoader
from imageloader.dicomweb import image_ids_for_series, search_series, series_uids

from .environment import BenchEnv, Series, cores

__all__ = ["AFFINE_TOLERANCE_MM", "SERIES", "run_dataset"]

Log = Callable[[str], None]
#: Uncompressed, JPEG-LS and JPEG lossless: what a dataset job meets most. All of
#: them make one job; the first ``SINGLE`` also run alone (dcm2niix takes ~60 ms a
#: slice, so each set costs the full profile ~20 s a series a round).
SERIES = ("explicit", "jpeg-ls", "jpeg-lossless")
SINGLE = 2
AFFINE_TOLERANCE_MM = 0.01
_MB = 1e6
_RESAMPLED = ("_Tilt_", "_Eq_")  # dcm2niix's resampled copies, not its main output


async def run_dataset(env: BenchEnv, log: Log) -> dict[str, Any]:
    """Every series set: ours and the baseline side by side, and the outputs compared."""
    tool = shutil.which("dcm2niix")
    if tool is None:
        return {"skipped": "dcm2niix not found (Debian package dcm2niix)"}
    try:
        import dicomweb_client  # noqa: F401  (imported before timing, for both sides)
        import nibabel  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"{exc.name} not installed (the bench extra)"}
    names = [n for n in SERIES if n in env.series]
    if not names:
        return {"skipped": f"none of {SERIES} in the environment ({list(env.series)})"}
    chosen = {n: env.series[n] for n in names}
    sets: dict[str, tuple[str, ...]] = {n: (n,) for n in names[:SINGLE]}
    if len(names) > 1:
        sets["+".join(names)] = tuple(names)
    _warm(env, list(chosen.values()))

    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        key: {"ours": [], "baseline": []} for key in sets
    }
    equal: dict[str, dict[str, Any]] = {}
    output_mib: dict[str, dict[str, float]] = {}
    for round_ in range(env.profile.rounds):
        for key, members in sets.items():
            series = [chosen[n] for n in members]
            work = Path(tempfile.mkdtemp(prefix="imageloader-bench-dataset-"))
            try:
                ours_dir, base_dir = work / "ours", work / "baseline"
                sides = ["ours", "baseline"] if round_ % 2 == 0 else ["baseline", "ours"]
                for side in sides:
                    if side == "ours":
                        result = await _ours(env, series, ours_dir)
                    else:
                        result = _baseline(env, series, base_dir, tool)
                    samples[key][side].append(result)
                if key not in output_mib:
                    output_mib[key] = {
                        "ours": _mib(ours_dir.glob("*.nii.gz")),
                        "baseline": _mib(base_dir.glob("nifti/*/*.nii.gz")),
                    }
                for s in series:  # once per series per run, untimed
                    if s.name not in equal:
                        equal[s.name] = _compare(
                            ours_dir / f"{s.series_uid}.nii.gz", base_dir / "nifti" / s.series_uid
                        )
                        received = samples[key]["baseline"][-1]["received"][s.name]
                        equal[s.name]["baseline_received"] = received
                        log(f"  dataset {s.name}: equal to dcm2niix {equal[s.name]['equal']}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
            o, b = samples[key]["ours"][-1], samples[key]["baseline"][-1]
            log(
                f"  dataset {key} round {round_ + 1}: ours {o['seconds']:.2f} s, "
                f"baseline {b['seconds']:.2f} s ({b['seconds'] / o['seconds']:.2f}×)"
            )
    return {
        "workers": cores(),
        "rounds": env.profile.rounds,
        "dcm2niix": _version(tool),
        # dcm2niix -z y gzips through pigz when it is on the PATH, else its own zlib.
        "pigz": shutil.which("pigz") is not None,
        "series": {
            n: {
                "transfer_syntax": s.transfer_syntax_uid,
                "frames": len(s.sop_uids),
                "series_uid": s.series_uid,
            }
            for n, s in chosen.items()
        },
        "sets": {
            key: _summary(members, samples[key], output_mib[key]) for key, members in sets.items()
        },
        "equal": equal,
        "all_equal": all(e["equal"] for e in equal.values()),
    }


def _warm(env: BenchEnv, series: list[Series]) -> None:
    """Read each series' metadata once (untimed): Orthanc's first touch, for neither side."""
    from dicomweb_client import DICOMwebClient

    client = DICOMwebClient(url=env.dicomweb)
    try:
        for s in series:
            client.retrieve_series_metadata(s.study_uid, s.series_uid)
    finally:
        client._session.close()


async def _ours(env: BenchEnv, series: list[Series], out: Path) -> dict[str, Any]:
    """Study → CT series (QIDO-RS) → imageIds → ``prefetch(format="nifti")``; timed whole."""
    from imageloader.output import prefetch

    start = time.perf_counter()
    async with ImageLoader(max_web_workers=cores()) as loader:
        ids: list[str] = []
        found: list[str] = []
        for s in series:
            results = await search_series(loader, env.dicomweb, s.study_uid, Modality="CT")
            for study, uid in series_uids(results, env.dicomweb):
                if study and uid:
                    found.append(uid)
                    ids += await image_ids_for_series(loader, env.dicomweb, study, uid)
        listed = time.perf_counter()
        report = await prefetch(loader, ids, output=out, format="nifti")
        written = time.perf_counter()
    seconds = time.perf_counter() - start
    expected = {s.series_uid for s in series}
    if (
        set(found) != expected
        or report.failures
        or {w.series for w in report.written} != expected
        or any(w.format != "nifti" or not w.data.exists() for w in report.written)
        or report.index is None
        or not report.index.exists()
    ):
        raise AssertionError(
            f"dataset job: found {found}, wrote {[w.series for w in report.written]}, "
            f"failures {dict(list(report.failures.items())[:3])}, index {report.index}"
        )
    return {
        "seconds": seconds,
        "frames": report.loaded,
        "bytes": report.bytes,
        "split_s": {
            "search_ids": listed - start,
            "prefetch": written - listed,
            "close": seconds - (written - start),
        },
    }


def _baseline(env: BenchEnv, series: list[Series], out: Path, tool: str) -> dict[str, Any]:
    """dicomweb-client ``retrieve_series`` → ``save_as`` → ``dcm2niix``, series by series."""
    from dicomweb_client import DICOMwebClient

    split = {"retrieve": 0.0, "save": 0.0, "dcm2niix": 0.0}
    frames = 0
    received: dict[str, str] = {}  # the transfer syntax Orthanc sent, by series name
    start = time.perf_counter()
    client = DICOMwebClient(url=env.dicomweb)
    try:
        for s in series:
            t0 = time.perf_counter()
            datasets = client.retrieve_series(s.study_uid, s.series_uid)
            t1 = time.perf_counter()
            folder = out / "dicom" / s.series_uid
            folder.mkdir(parents=True)
            for ds in datasets:
                ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm")
            t2 = time.perf_counter()
            target = out / "nifti" / s.series_uid
            target.mkdir(parents=True)
            done = subprocess.run(
                [tool, "-z", "y", "-f", "%s", "-o", str(target), str(folder)],
                capture_output=True,
                text=True,
                timeout=1800,
                check=False,
            )
            if done.returncode != 0 or not any(target.glob("*.nii.gz")):
                raise RuntimeError(
                    f"dcm2niix failed ({done.returncode}): {(done.stdout + done.stderr)[-400:]}"
                )
            t3 = time.perf_counter()
            split["retrieve"] += t1 - t0
            split["save"] += t2 - t1
            split["dcm2niix"] += t3 - t2
            frames += len(datasets)
            received[s.name] = str(datasets[0].file_meta.TransferSyntaxUID)
    finally:
        client._session.close()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "frames": frames, "split_s": split, "received": received}


def _compare(ours: Path, folder: Path) -> dict[str, Any]:
    """Ours against dcm2niix's main output, after ``as_closest_canonical``; never raises."""
    try:
        return _compare_files(ours, folder)
    except Exception as exc:  # a file nibabel cannot read is a mismatch, not a crash
        return {"equal": False, "note": f"{type(exc).__name__}: {exc}"}


def _compare_files(ours: Path, folder: Path) -> dict[str, Any]:
    import nibabel as _nibabel
    import numpy as np

    nibabel: Any = _nibabel  # untyped
    theirs = sorted(p for p in folder.glob("*.nii.gz") if not any(r in p.name for r in _RESAMPLED))
    if len(theirs) != 1 or not ours.exists():
        return {
            "equal": False,
            "note": f"ours exists: {ours.exists()}; dcm2niix wrote {[p.name for p in theirs]}",
        }
    mine_raw, ref_raw = nibabel.load(ours), nibabel.load(theirs[0])
    mine = nibabel.as_closest_canonical(mine_raw)
    ref = nibabel.as_closest_canonical(ref_raw)
    out: dict[str, Any] = {
        "shape": {"ours": list(mine.shape), "dcm2niix": list(ref.shape)},
        "datatype": {
            "ours": str(mine_raw.get_data_dtype()),
            "dcm2niix": str(ref_raw.get_data_dtype()),
        },
        "orientation": {
            "ours": "".join(nibabel.aff2axcodes(mine_raw.affine)),
            "dcm2niix": "".join(nibabel.aff2axcodes(ref_raw.affine)),
        },
    }
    same_shape = mine.shape == ref.shape
    voxels_equal = False
    if same_shape:
        a, b = mine.get_fdata(), ref.get_fdata()
        voxels_equal = bool(np.array_equal(a, b))
        if not voxels_equal:
            diff = np.abs(a - b)
            out["max_abs_diff"] = float(np.nanmax(diff))
            out["differing_voxels"] = int(np.count_nonzero(diff))
        del a, b
    affine_diff = float(np.max(np.abs(mine.affine - ref.affine)))
    out.update(
        voxels_equal=voxels_equal,
        affine_max_diff_mm=affine_diff,
        equal=same_shape and voxels_equal and affine_diff <= AFFINE_TOLERANCE_MM,
    )
    return out


def _summary(
    members: tuple[str, ...], samples: dict[str, list[dict[str, Any]]], output_mib: dict[str, float]
) -> dict[str, Any]:
    decoded = samples["ours"][0]["bytes"]  # the same pixels on both sides
    frames = samples["ours"][0]["frames"]
    seconds = {side: statistics.median(r["seconds"] for r in v) for side, v in samples.items()}
    return {
        "series": list(members),
        "frames": frames,
        "decoded_mb": decoded / _MB,
        "seconds": seconds,
        "ratio": seconds["baseline"] / seconds["ours"],
        "series_per_s": {side: len(members) / s for side, s in seconds.items()},
        "mb_per_s": {side: decoded / _MB / s for side, s in seconds.items()},
        "frames_per_s": {side: frames / s for side, s in seconds.items()},
        "split_s": {
            side: {k: statistics.median(r["split_s"][k] for r in runs) for k in runs[0]["split_s"]}
            for side, runs in samples.items()
        },
        "baseline_frames": samples["baseline"][0]["frames"],
        "output_mib": output_mib,
        "samples_s": {side: [r["seconds"] for r in runs] for side, runs in samples.items()},
    }


def _mib(paths: Any) -> float:
    return float(sum(p.stat().st_size for p in paths)) / (1 << 20)


def _version(tool: str) -> str:
    done = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[-1].strip() if lines else "?"
