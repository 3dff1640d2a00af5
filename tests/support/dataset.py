"""The test data the session's Orthanc holds, and what Orthanc makes of each instance.

:func:`build_dataset` gathers three sets, gives every file fresh UIDs (many test
files share UIDs, and Orthanc keeps only the first instance with given UIDs),
writes the copies under one directory and uploads them:

- ``pydicom``/``pydicom-data``: every file ``pydicom.data.get_testdata_files()``
  lists that has pixel data (pydicom's own test files and the pydicom-data
  package's), read with ``force=True`` so files without a File Meta header count;
- ``cornerstone``: the Cornerstone3D corpus (all of it, ``no-pixel-data.dcm`` too,
  marked ``has_pixel_data=False``);
- ``encoder``: the variants of :mod:`tests.support.encoders`.

Each :class:`DatasetInstance` names the uploaded file (``path``: load it with
``dicomfile:`` to compare pixels with ``wadors:``/``wadouri:``), its UIDs, frames,
transfer syntax, and what Orthanc answered for frame 1 with ``transfer-syntax=*``.
Files pydicom cannot rewrite or Orthanc refuses are listed in ``Dataset.rejected``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_files

from imageloader.dicom.multipart import parse_multipart_related

from .encoders import fresh_uids, make_variants, quiet
from .orthanc import OrthancError, OrthancServer

__all__ = ["CORNERSTONE", "Dataset", "DatasetInstance", "Rejected", "build_dataset", "describe"]

from tests.corpus import CORNERSTONE

ANY_TRANSFER_SYNTAX = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True, slots=True)
class DatasetInstance:
    """One uploaded instance: its file, UIDs, frames, and Orthanc's view of it."""

    #: "<source>/<path>", e.g. "pydicom/CT_small.dcm" or "encoder/ct-htj2k-lossless".
    name: str
    #: "pydicom", "pydicom-data", "cornerstone" or "encoder".
    source: str
    #: The uploaded file (fresh UIDs; otherwise as the origin).
    path: Path
    #: The file it was made from.
    origin: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    orthanc_id: str
    number_of_frames: int
    #: (0002,0010) of the file; None if it has no File Meta header.
    transfer_syntax_uid: str | None
    has_pixel_data: bool = True
    #: For encoder variants: the encoder and whether it was lossless.
    encoder: str | None = None
    lossless: bool | None = None
    #: Orthanc's "TransferSyntax" metadata for the instance (None if it has none).
    orthanc_transfer_syntax: str | None = None
    #: Frame 1 with ``transfer-syntax=*``: HTTP status, the part's Content-Type, or the error.
    frame_status: int | None = None
    frame_content_type: str | None = None
    frame_error: str | None = None

    @property
    def servable(self) -> bool:
        """Orthanc returns frame 1 as stored, labelled with the file's transfer syntax."""
        return (
            self.frame_status == 200
            and self.frame_content_type is not None
            and f"transfer-syntax={self.transfer_syntax_uid}" in self.frame_content_type
        )

    def instance_url(self, dicomweb_url: str) -> str:
        """The WADO-RS URL of the instance under ``dicomweb_url``."""
        return (
            f"{dicomweb_url}/studies/{self.study_uid}/series/{self.series_uid}"
            f"/instances/{self.sop_uid}"
        )

    def frames_url(self, dicomweb_url: str, *frames: int) -> str:
        """The WADO-RS URL of some frames (1-based): ``.../frames/1,2``."""
        return f"{self.instance_url(dicomweb_url)}/frames/{','.join(map(str, frames or (1,)))}"

    def wadouri_url(self, wado_url: str, *, content_type: str = "application/dicom") -> str:
        """The WADO-URI URL of the instance under ``wado_url``."""
        return (
            f"{wado_url}?requestType=WADO&studyUID={self.study_uid}"
            f"&seriesUID={self.series_uid}&objectUID={self.sop_uid}&contentType={content_type}"
        )


@dataclass(frozen=True, slots=True)
class Rejected:
    """A file left out, and why (pydicom could not rewrite it, or Orthanc refused it)."""

    name: str
    origin: Path
    reason: str


@dataclass(frozen=True)
class Dataset:
    """Everything uploaded to one Orthanc, in upload order."""

    instances: tuple[DatasetInstance, ...]
    rejected: tuple[Rejected, ...]
    #: Seconds spent making, uploading and probing.
    seconds: float = 0.0
    _by_name: dict[str, DatasetInstance] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update((i.name, i) for i in self.instances)

    def __iter__(self) -> Iterator[DatasetInstance]:
        return iter(self.instances)

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, name: str) -> DatasetInstance:
        return self._by_name[name]

    def where(
        self,
        *,
        source: str | None = None,
        transfer_syntax_uid: str | None = None,
        multiframe: bool | None = None,
        servable: bool | None = None,
    ) -> list[DatasetInstance]:
        """The instances that match every criterion given."""
        return [
            i
            for i in self.instances
            if (source is None or i.source == source)
            and (transfer_syntax_uid is None or i.transfer_syntax_uid == transfer_syntax_uid)
            and (multiframe is None or (i.number_of_frames > 1) == multiframe)
            and (servable is None or i.servable == servable)
        ]


@dataclass(frozen=True, slots=True)
class _Candidate:
    name: str
    source: str
    origin: Path
    encoder: str | None = None
    lossless: bool | None = None


def build_dataset(
    server: OrthancServer, work_dir: Path, *, corpus: Path = CORNERSTONE, probe: bool = True
) -> Dataset:
    """Make the copies and variants in ``work_dir``, upload them, probe frame 1 of each."""
    started = time.monotonic()
    candidates = _pydicom_candidates() + _corpus_candidates(corpus)
    candidates += _variant_candidates(work_dir / "encoder", corpus)
    prepared: list[tuple[_Candidate, Path]] = []
    rejected: list[Rejected] = []
    for candidate in candidates:
        target = candidate.origin if candidate.source == "encoder" else work_dir / candidate.name
        try:
            # Encoder variants have their own UIDs already.
            if candidate.source != "encoder" and not _write_copy(candidate, target):
                continue  # not an image
        except Exception as exc:  # pydicom raises many types for broken files
            reason = f"pydicom cannot rewrite it: {str(exc).splitlines()[0]}"
            rejected.append(Rejected(candidate.name, candidate.origin, reason))
            continue
        prepared.append((candidate, target))

    def upload(item: tuple[_Candidate, Path]) -> DatasetInstance | Rejected:
        candidate, path = item
        try:
            instance = _upload(server, candidate, path)
        except OrthancError as exc:
            return Rejected(candidate.name, candidate.origin, str(exc))
        return _probe(server, instance) if probe else instance

    # Orthanc serves requests on several threads: upload and probe in parallel.
    # (quiet() here, once: warning filters are process-wide, not per thread.)
    with quiet(), ThreadPoolExecutor(4) as pool:
        results = list(pool.map(upload, prepared))
    instances = tuple(r for r in results if isinstance(r, DatasetInstance))
    rejected += [r for r in results if isinstance(r, Rejected)]
    return Dataset(instances, tuple(rejected), time.monotonic() - started)


def _pydicom_candidates() -> list[_Candidate]:
    found = []
    for file in sorted(get_testdata_files()):
        path = Path(file)
        if not path.is_file():
            continue
        # pydicom's own test files live in pydicom/data; pydicom-data's in data_store.
        source = "pydicom" if "pydicom" in path.parts else "pydicom-data"
        root = next(p for p in path.parents if p.name in ("test_files", "data"))
        found.append(_Candidate(f"{source}/{path.relative_to(root)}", source, path))
    return found


def _corpus_candidates(corpus: Path) -> list[_Candidate]:
    return [
        _Candidate(f"cornerstone/{path.name}", "cornerstone", path)
        for path in sorted(corpus.iterdir())
        if path.is_file() and path.name not in ("README.md", "LICENSE")
    ]


def _variant_candidates(out_dir: Path, corpus: Path) -> list[_Candidate]:
    ct, rgb = corpus / "CTImage.dcm", corpus / "TestPattern_RGB.dcm"
    return [
        _Candidate(f"encoder/{v.name}", "encoder", v.path, v.encoder, v.lossless)
        for v in make_variants(out_dir, ct=ct, rgb=rgb)
    ]


def _write_copy(candidate: _Candidate, target: Path) -> bool:
    """Write ``candidate`` with fresh UIDs to ``target``; False if it holds no image."""
    if target.exists():
        return True  # made earlier in this session's work directory
    with quiet():
        ds = pydicom.dcmread(candidate.origin, force=True)
        keep = candidate.source == "cornerstone" or any(k in ds for k in _PIXEL_KEYWORDS)
        if not keep or "SOPInstanceUID" not in ds:
            return False
        fresh_uids(ds, candidate.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        ds.save_as(partial, enforce_file_format=False)
        partial.rename(target)  # a failed write leaves no file that looks finished
    return True


def _upload(server: OrthancServer, candidate: _Candidate, path: Path) -> DatasetInstance:
    stored = server.upload(path)
    # One read for what the instance holds; defer_size keeps pixel data on disk.
    tags = ["NumberOfFrames", *_PIXEL_KEYWORDS]
    ds = pydicom.dcmread(path, force=True, specific_tags=tags, defer_size=1024)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return DatasetInstance(
        name=candidate.name,
        source=candidate.source,
        path=path,
        origin=candidate.origin,
        study_uid=stored.study_uid,
        series_uid=stored.series_uid,
        sop_uid=stored.sop_uid,
        orthanc_id=stored.orthanc_id,
        number_of_frames=_frames(ds),
        transfer_syntax_uid=str(syntax) if syntax else None,
        has_pixel_data=any(k in ds for k in _PIXEL_KEYWORDS),
        encoder=candidate.encoder,
        lossless=candidate.lossless,
    )


def _frames(ds: pydicom.Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1  # malformed on purpose in some test files ("1A")


def _probe(server: OrthancServer, instance: DatasetInstance) -> DatasetInstance:
    metadata = server.request("GET", f"/instances/{instance.orthanc_id}/metadata?expand").json()
    path = instance.frames_url("/dicom-web", 1)
    response = server.request("GET", path, headers={"Accept": ANY_TRANSFER_SYNTAX})
    part_type = error = None
    if response.status == 200:
        parts = parse_multipart_related(response.body, response.headers.get("Content-Type", ""))
        part_type = parts[0].content_type
    else:
        try:
            details = response.json()
            error = str(details.get("Details") or details.get("Message"))
        except ValueError:
            error = response.body[:200].decode(errors="replace")
    return replace(
        instance,
        orthanc_transfer_syntax=metadata.get("TransferSyntax"),
        frame_status=response.status,
        frame_content_type=part_type,
        frame_error=error,
    )


def describe(dataset: Dataset) -> str:
    """A table of the dataset (for reports and for debugging a failing test)."""
    lines = [f"{len(dataset)} instances, {len(dataset.rejected)} rejected, {dataset.seconds:.1f} s"]
    for i in dataset:
        lines.append(
            f"{i.name:60} frames={i.number_of_frames:<3} ts={i.transfer_syntax_uid} "
            f"orthanc_ts={i.orthanc_transfer_syntax} frame1={i.frame_status} "
            f"{i.frame_content_type or i.frame_error}"
        )
    lines += [f"REJECTED {r.name}: {r.reason}" for r in dataset.rejected]
    return os.linesep.join(lines)
