"""The Orthanc fixtures work, and what Orthanc 1.10 / DICOMweb 1.7 really does.

These tests pin down the server behaviour the wadors:/wadouri: loaders rely on
(or must work around): per-part Content-Types, transfer syntax labels, refusals.
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from imageloader.dicom.multipart import (
    parse_multipart_related,
    transfer_syntax_from_content_type,
)
from imageloader.errors import TruncatedResponseError
from tests.support.dataset import ANY_TRANSFER_SYNTAX, Dataset, DatasetInstance
from tests.support.encoders import quiet
from tests.support.orthanc import OrthancError, OrthancServer, process_alive, stop_all

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def stored_frames(instance: DatasetInstance) -> list[bytes]:
    """The frames as the uploaded file stores them (native: sliced; encapsulated: fragments)."""
    with quiet():
        ds = pydicom.dcmread(instance.path)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=instance.number_of_frames))
    size = len(ds.PixelData) // instance.number_of_frames
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(instance.number_of_frames)]


def orthanc_processes(server: OrthancServer) -> list[int]:
    """Live processes running ``server``'s configuration, from /proc.

    Matching on the configuration path ignores Orthancs that other test runs on
    this machine may start and stop meanwhile.
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(server.config_path).encode() in cmdline and process_alive(int(entry)):
                found.append(int(entry))
    return found


# -- the session server and its data -----------------------------------------------------


def test_system_answers_as_this_server(orthanc: OrthancServer) -> None:
    system = orthanc.request("GET", "/system")
    assert system.status == 200
    assert system.json()["Name"] == orthanc.name
    assert orthanc.base_url == f"http://127.0.0.1:{orthanc.port}"
    assert orthanc.dicomweb_url == f"{orthanc.base_url}/dicom-web"
    assert "dicom-web" in orthanc.request("GET", "/plugins").json()


def test_dataset_covers_every_source_and_encoder(orthanc_dataset: Dataset) -> None:
    sources = {i.source for i in orthanc_dataset}
    assert sources == {"pydicom", "pydicom-data", "cornerstone", "encoder"}
    encoded = {i.transfer_syntax_uid for i in orthanc_dataset.where(source="encoder")}
    htj2k = {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"}
    assert htj2k | {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"} <= encoded
    assert orthanc_dataset.where(multiframe=True, servable=True)
    assert len(orthanc_dataset.where(servable=True)) > 100
    for instance in orthanc_dataset:
        assert instance.path.is_file()
        assert instance.number_of_frames >= 1
    # Every copy has UIDs of its own: nothing was deduplicated away.
    assert len({i.sop_uid for i in orthanc_dataset}) == len(orthanc_dataset)
    assert not orthanc_dataset["cornerstone/no-pixel-data.dcm"].has_pixel_data
    # A deliberately broken pydicom test file that neither pydicom nor DCMTK can rewrite.
    assert [r.name for r in orthanc_dataset.rejected] == ["pydicom/SC_rgb_jpeg.dcm"]


def test_qido_lists_the_uploaded_studies(orthanc: OrthancServer, orthanc_dataset: Dataset) -> None:
    found = orthanc.request(
        "GET", "/dicom-web/studies", headers={"Accept": "application/dicom+json"}
    )
    assert found.status == 200
    study_uids = {study["0020000D"]["Value"][0] for study in found.json()}
    assert {i.study_uid for i in orthanc_dataset} <= study_uids


@pytest.mark.parametrize(
    ("name", "frames"),
    [
        ("cornerstone/CTImage.dcm", [1]),
        ("encoder/ct-dcmcjpeg-lossless-sv1", [1]),
        ("encoder/ct-gdcmconv-j2k", [1]),
        ("encoder/multiframe-explicit-le", [1, 3]),
        ("encoder/multiframe-pydicom-rle", [3, 2]),
        ("pydicom-data/emri_small_jpeg_ls_lossless.dcm", [10]),
    ],
)
async def test_wado_rs_frames_are_the_stored_bytes(
    orthanc: OrthancServer, orthanc_dataset: Dataset, name: str, frames: list[int]
) -> None:
    instance = orthanc_dataset[name]
    url = instance.frames_url(orthanc.dicomweb_url, *frames)
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": ANY_TRANSFER_SYNTAX}) as response,
    ):
        assert response.status == 200
        body = await response.read()
        content_type = response.headers["Content-Type"]
    # Orthanc puts the syntax inside the quoted type parameter of the response.
    assert content_type.startswith('multipart/related; type="')
    assert transfer_syntax_from_content_type(content_type) == instance.transfer_syntax_uid
    parts = parse_multipart_related(body, content_type)
    stored = stored_frames(instance)
    assert [bytes(p.data) for p in parts] == [stored[n - 1] for n in frames]
    for part, number in zip(parts, frames, strict=True):
        assert part.transfer_syntax_uid == instance.transfer_syntax_uid
        assert part.headers["Content-Location"].endswith(f"/frames/{number}")
        assert int(part.headers["Content-Length"]) == len(part.data)


def test_per_part_content_types(orthanc_dataset: Dataset) -> None:
    seen = {
        i.transfer_syntax_uid: (i.frame_content_type or "").split(";")[0]
        for i in orthanc_dataset.where(servable=True)
    }
    assert seen["1.2.840.10008.1.2"] == "application/octet-stream"
    assert seen[EXPLICIT_LE] == "application/octet-stream"
    assert seen["1.2.840.10008.1.2.4.50"] == "image/jpeg"
    assert seen["1.2.840.10008.1.2.4.70"] == "image/jpeg"
    # Not the image/x-jls and image/x-dicom-rle that Cornerstone's table expects.
    assert seen["1.2.840.10008.1.2.4.80"] == "image/jls"
    assert seen["1.2.840.10008.1.2.5"] == "image/dicom-rle"
    # Both JPEG 2000 syntaxes are labelled image/jp2.
    assert seen["1.2.840.10008.1.2.4.90"] == seen["1.2.840.10008.1.2.4.91"] == "image/jp2"


def test_htj2k_is_stored_but_labelled_explicit_little_endian(
    orthanc: OrthancServer, orthanc_dataset: Dataset
) -> None:
    # Orthanc 1.10.1 (DCMTK 3.6.7) does not know HTJ2K: it keeps the file, calls it
    # explicit VR little endian, and serves the HTJ2K codestream under that label.
    # A loader must not trust the label when the frame size is wrong for it.
    instance = orthanc_dataset["encoder/ct-htj2k-lossless"]
    assert instance.orthanc_transfer_syntax == EXPLICIT_LE
    response = orthanc.request(
        "GET", instance.frames_url("/dicom-web", 1), headers={"Accept": ANY_TRANSFER_SYNTAX}
    )
    (part,) = parse_multipart_related(response.body, response.headers["Content-Type"])
    assert part.transfer_syntax_uid == EXPLICIT_LE
    assert bytes(part.data[:4]) == b"\xff\x4f\xff\x51"  # SOC, SIZ: a J2K codestream
    assert bytes(part.data) == stored_frames(instance)[0]
    # The colour HTJ2K file cannot even be served.
    assert orthanc_dataset["encoder/rgb-htj2k-lossless"].frame_status == 500


def test_syntaxes_orthanc_serves_only_transcoded(
    orthanc: OrthancServer, orthanc_dataset: Dataset
) -> None:
    # transfer-syntax=* fails (500) for big endian, deflate and JPEG .53/.55; asking
    # for explicit little endian instead gets a transcoded frame.
    accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'
    for name in (
        "encoder/ct-dcmconv-big-endian",
        "cornerstone/CTImage.dcm_DeflatedExplicitVRLittleEndianTransferSyntax_1.2.840.10008.1.2.1.99"
        ".dcm",
        "cornerstone/CTImage.dcm_JPEGProcess10_12TransferSyntax_1.2.840.10008.1.2.4.55.dcm",
    ):
        instance = orthanc_dataset[name]
        assert instance.frame_status == 500, name
        response = orthanc.request(
            "GET", instance.frames_url("/dicom-web", 1), headers={"Accept": accept}
        )
        assert response.status == 200, name
        (part,) = parse_multipart_related(response.body, response.headers["Content-Type"])
        assert (part.transfer_syntax_uid, len(part.data)) == (EXPLICIT_LE, 512 * 512 * 2)


def test_wado_uri_returns_the_part10_file(orthanc: OrthancServer, orthanc_dataset: Dataset) -> None:
    instance = orthanc_dataset["encoder/ct-dcmcjpls-lossless"]
    response = orthanc.request("GET", instance.wadouri_url("/wado"))
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/dicom"
    assert response.body[128:132] == b"DICM"
    with quiet():
        served = pydicom.dcmread(io.BytesIO(response.body))
        stored = pydicom.dcmread(instance.path)
    assert served.SOPInstanceUID == instance.sop_uid
    assert served.file_meta.TransferSyntaxUID == instance.transfer_syntax_uid
    assert served.PixelData == stored.PixelData


def test_dicomweb_client_default_frame_request_is_refused(
    orthanc: OrthancServer, orthanc_dataset: Dataset
) -> None:
    requests = pytest.importorskip("requests")
    dicomweb_client = pytest.importorskip("dicomweb_client")

    instance = orthanc_dataset["encoder/ct-dcmconv-explicit-le"]
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment for loopback traffic
    sent: list[str] = []
    session.hooks["response"].append(lambda r, *a, **k: sent.append(r.request.headers["Accept"]))
    client = dicomweb_client.DICOMwebClient(orthanc.dicomweb_url, session=session)
    uids = (instance.study_uid, instance.series_uid, instance.sop_uid)
    # dicomweb-client 0.61 asks for any media type without a transfer syntax;
    # Orthanc answers 400 ("Transfer syntax "" is incompatible with media type "*/*"").
    with pytest.raises(requests.HTTPError) as refused:
        client.retrieve_instance_frames(*uids, frame_numbers=[1])
    assert refused.value.response.status_code == 400
    assert sent == ['multipart/related; type="*/*"']
    # Naming the media type and transfer-syntax=* works.
    frames = client.retrieve_instance_frames(
        *uids, frame_numbers=[1], media_types=(("application/octet-stream", "*"),)
    )
    assert frames == stored_frames(instance)
    session.close()


# -- auth -----------------------------------------------------------------------------------


def test_basic_auth_server(orthanc_auth: OrthancServer) -> None:
    assert orthanc_auth.auth is not None
    user, password = orthanc_auth.auth
    for path in ("/system", "/dicom-web/studies"):
        refused = orthanc_auth.request("GET", path, auth=False)
        assert refused.status == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
    assert orthanc_auth.request("GET", "/system").status == 200
    token = base64.b64encode(f"{user}:{password}x".encode()).decode()
    wrong = {"Authorization": f"Basic {token}"}
    assert orthanc_auth.request("GET", "/system", headers=wrong, auth=False).status == 401


# -- lifecycle --------------------------------------------------------------------------------


def test_kill_then_restart_keeps_port_and_storage(
    orthanc_factory: Callable[..., OrthancServer], cornerstone_corpus: Path
) -> None:
    server = orthanc_factory()
    stored = server.upload(cornerstone_corpus / "CTImage.dcm")
    assert stored.status == "Success"
    port, pid = server.port, server.last_pid
    assert pid is not None

    server.kill()
    assert not server.running and not server.is_answering()
    assert not process_alive(pid)
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie

    server.restart()
    assert server.port == port and server.last_pid != pid
    assert server.request("GET", "/instances").json() == [stored.orthanc_id]
    again = server.upload(cornerstone_corpus / "CTImage.dcm")
    assert again.status == "AlreadyStored"  # same UIDs: Orthanc deduplicates
    server.kill()  # spares the teardown a graceful stop (seconds)


def test_stop_leaves_no_orthanc_process(orthanc_factory: Callable[..., OrthancServer]) -> None:
    server = orthanc_factory()
    pid = server.last_pid
    assert orthanc_processes(server) == [pid]
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < server.stop_timeout + 1
    assert not Path(f"/proc/{pid}").exists()  # exited and reaped
    assert orthanc_processes(server) == []
    assert not server.is_answering()
    assert "Orthanc has stopped" in server.log_tail()  # SIGTERM: a clean shutdown
    server.stop()  # stopping twice is harmless


def test_start_on_a_taken_port_fails_with_the_log(orthanc: OrthancServer, tmp_path: Path) -> None:
    server = OrthancServer(tmp_path / "taken", port=orthanc.port)
    try:
        with pytest.raises(OrthancError, match="already in use") as failed:
            server.start()
        assert "exited with code" in str(failed.value)
        assert orthanc_processes(server) == []  # the failed process was reaped
        assert orthanc.is_answering()  # and the server on that port is untouched
    finally:
        server.close()


def test_stop_all_stops_servers_together_and_cleanly(
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    servers = [orthanc_factory(), orthanc_factory(users={"u": "p"})]
    started = time.monotonic()
    stop_all(servers)
    # Overlapped: about one Orthanc shutdown (2.5-4 s), not one per server.
    assert time.monotonic() - started < 6
    for server in servers:
        assert not server.running and orthanc_processes(server) == []
        assert "Orthanc has stopped" in server.log_tail()  # one SIGTERM each, clean exits


def test_failed_transcode_mid_retrieve_is_a_truncated_body(
    orthanc: OrthancServer, orthanc_dataset: Dataset
) -> None:
    # A study of two CTs and then an instance Orthanc cannot transcode (colour
    # HTJ2K): by the time the transcode fails, Orthanc has sent 200 and two
    # instances (about 1 MB), so it just stops, without the close delimiter. (With
    # only one CT before it, the answer is a clean 500: nothing was sent yet.)
    study = generate_uid(entropy_srcs=["imageloader-tests", "truncated-retrieve"])
    names = (
        "encoder/ct-dcmconv-explicit-le",
        "encoder/ct-dcmconv-implicit-le",
        "encoder/rgb-htj2k-lossless",
    )
    for number, name in enumerate(names, 1):
        with quiet():
            ds = pydicom.dcmread(orthanc_dataset[name].path)
            ds.PatientID, ds.PatientName = "TRUNCATED", "Truncated^Retrieve"
            ds.StudyInstanceUID, ds.InstanceNumber = study, number
            ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study, "series"])
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[study, name])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=False)
        orthanc.upload(buffer.getvalue())
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
    response = orthanc.request("GET", f"/dicom-web/studies/{study}", headers={"Accept": accept})
    assert response.status == 200
    assert response.body.count(b"DICM") == 2  # two whole instances, then nothing
    with pytest.raises(TruncatedResponseError, match="no closing multipart boundary"):
        parse_multipart_related(response.body, response.headers["Content-Type"])
