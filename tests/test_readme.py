"""Every Python code block of README.md runs as written, the way a user runs it.

Each block is saved to a file and run in a fresh interpreter (``python block.py``, or
served by uvicorn when it builds a FastAPI app), with no ``__main__`` guard added.
The only substitutions are the two placeholders the README names: its file
``/data/ct/slice-001.dcm`` becomes a test image, and its server ``http://pacs:8042``
becomes a local Orthanc holding study ``1.2.3`` / series ``1.2.3.4``, as the README's
code asks for. A block added to the README is picked up here by itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.corpus import CORNERSTONE, REPO
from tests.processes import worker_children
from tests.servers import http_get, served
from tests.support.fixtures import _require_orthanc
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.timeout(180)

README = REPO / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)

#: The README's placeholders, as it documents them.
FILE_PLACEHOLDER = "/data/ct/slice-001.dcm"
SERVER_PLACEHOLDER = "http://pacs:8042"
STUDY, SERIES, SLICES = "1.2.3", "1.2.3.4", 3

#: One test image per compressed family: each is decoded in a worker process.
COMPRESSED = {
    "jpeg-ls": "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm",
    "jpeg-2000": "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm",
    "rle": "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm",
    "jpeg-baseline": "CTImage.dcm_JPEGProcess1TransferSyntax_1.2.840.10008.1.2.4.50.dcm",
}


def _kind(block: str) -> str:
    if "FastAPI(" in block:
        return "fastapi"
    if 'format="nifti"' in block:
        return "dataset"
    if FILE_PLACEHOLDER in block or "pacs:8042" in block:
        return "orthanc"
    return "plain"


def _blocks(kind: str) -> list[object]:
    return [
        pytest.param(block, id=f"block{index}")
        for index, block in enumerate(BLOCKS, 1)
        if _kind(block) == kind
    ]


def test_readme_blocks_use_only_files_pydicom_itself_ships() -> None:
    """``get_testdata_file`` names in the README must be pydicom's own files: the
    suite has pydicom-data installed, a user who followed the README has not."""
    import pydicom

    shipped = Path(pydicom.__file__).parent / "data" / "test_files"
    names = re.findall(r"get_testdata_file\(\"([^\"]+)\"\)", README.read_text())
    assert names, "the README's in-memory files block uses get_testdata_file"
    for name in names:
        assert (shipped / name).is_file(), f"{name} is not shipped with pydicom itself"


def test_the_readme_has_the_blocks_this_file_runs() -> None:
    kinds = sorted(_kind(block) for block in BLOCKS)
    assert set(kinds) == {"dataset", "fastapi", "orthanc", "plain"}, kinds  # each kind is run
    assert len(kinds) >= 5, kinds  # main, custom loader, files in memory, FastAPI, dataset
    for block in BLOCKS:
        assert "__main__" not in block  # written as most people write a script


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A private Orthanc with the README's series: the CT in JPEG-LS, three slices."""
    _require_orthanc()
    server = OrthancServer(tmp_path_factory.mktemp("readme-orthanc")).start()
    try:
        for index in range(SLICES):
            ds = pydicom.dcmread(CORNERSTONE / COMPRESSED["jpeg-ls"])
            ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = index + 1
            ds.ImagePositionPatient = [-161.4, -148.8, 4.7 + 5.0 * index]
            path = tmp_path_factory.getbasetemp() / f"readme-slice-{index}.dcm"
            ds.save_as(path, enforce_file_format=True)
            server.upload(path)
        yield server
    finally:
        server.close()


def _write(block: str, folder: Path, name: str, **replace: str) -> Path:
    for old, new in replace.items():
        block = block.replace(old, new)
    path = folder / f"{name}.py"
    path.write_text(block)
    return path


def _run_watching_workers(script: Path) -> tuple[subprocess.CompletedProcess[str], set[int]]:
    """Run ``python script`` as a user would, noting the decode workers it starts."""
    process = subprocess.Popen(
        [sys.executable, script.name],
        cwd=script.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: set[int] = set()
    deadline = time.monotonic() + 150
    while process.poll() is None and time.monotonic() < deadline:
        workers.update(
            pid for pid, cmd in worker_children(process.pid).items() if "multiprocessing" in cmd
        )
        time.sleep(0.02)
    try:
        stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), workers


@pytest.mark.parametrize("block", _blocks("plain"))
def test_plain_block_runs_as_a_script(block: str, tmp_path: Path) -> None:
    result, _ = _run_watching_workers(_write(block, tmp_path, "snippet"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # no traceback, no warning
    assert result.stdout.strip()


@pytest.mark.parametrize("block", _blocks("orthanc"))
@pytest.mark.parametrize("syntax", sorted(COMPRESSED))
def test_script_without_a_main_guard_decodes_in_workers_and_runs_once(
    block: str, syntax: str, pacs: OrthancServer, tmp_path: Path
) -> None:
    script = _write(
        block,
        tmp_path,
        "readme_script",
        **{
            FILE_PLACEHOLDER: str(CORNERSTONE / COMPRESSED[syntax]),
            SERVER_PLACEHOLDER: pacs.base_url,
        },
    )
    result, workers = _run_watching_workers(script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    # The body ran once: a worker that re-ran the script would print again (or die).
    assert len([line for line in lines if line.startswith("512 512 ")]) == 1, lines
    assert lines[-1].startswith(f"{SLICES} frames -> ({SLICES}, 512, 512) "), lines
    assert len(lines) == 2, lines
    assert workers, "no decode worker process was started"


@pytest.mark.parametrize("block", _blocks("dataset"))
def test_dataset_block_writes_nifti_and_its_index(
    block: str, pacs: OrthancServer, tmp_path: Path
) -> None:
    nibabel = pytest.importorskip("nibabel")
    script = _write(block, tmp_path, "dataset_job", **{SERVER_PLACEHOLDER: pacs.base_url})
    result, workers = _run_watching_workers(script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    megabytes = SLICES * 512 * 512 * 2 / 1e6
    nifti = f"{SERIES}.nii.gz"
    assert result.stdout.splitlines() == [
        f"1 series, {SLICES} frames, {megabytes:.1f} MB",
        f"{nifti} 512x512x{SLICES} int16 0.675781x0.675781x5",
    ]
    image = nibabel.load(tmp_path / "dataset" / nifti)
    assert image.shape == (512, 512, SLICES) and workers  # decoded in worker processes


@pytest.mark.parametrize("block", _blocks("fastapi"))
def test_fastapi_block_serves_the_pacs_and_refuses_the_rest(
    block: str, pacs: OrthancServer, tmp_path: Path
) -> None:
    server = pacs.base_url.removeprefix("http://")
    _write(block, tmp_path, "readme_app", **{"pacs:8042": server})

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "readme_app:app", "--port", str(port)]

    with served(command, cwd=tmp_path) as (base, _):
        instances = pacs.request("GET", f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances")
        sop = instances.json()[0]["00080018"]["Value"][0]
        frame = (
            f"wadors:{pacs.dicomweb_url}/studies/{STUDY}/series/{SERIES}/instances/{sop}/frames/1"
        )
        status, png = http_get(f"{base}/images/{quote(frame, safe='')}")
        assert status == 200 and png.startswith(b"\x89PNG"), png[:200]
        local = quote(f"dicomfile:{CORNERSTONE / 'CTImage.dcm'}", safe="")
        assert http_get(f"{base}/images/{local}")[0] == 403  # only wadors from the PACS
