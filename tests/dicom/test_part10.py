"""Part 10 parsing and frame access: every test object, every frame, against pydicom."""

from __future__ import annotations

import io
import os
import random
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.filereader import data_element_generator
from pydicom.pixels import pack_bits, pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from imageloader import errors
from imageloader.dicom import part10
from imageloader.dicom.modules import metadata_modules
from imageloader.dicom.part10 import Part10Object, parse_part10
from imageloader.limits import Limits

from ._dicomdata import (
    BROKEN,
    CORNERSTONE,
    PYDICOM_PIXEL_FILES,
    cornerstone_files,
    cornerstone_params,
    data_file,
    pydicom_warnings_allowed,
    read,
    to_bytes,
)

DATA_DIR = os.path.dirname(data_file("CT_small.dcm"))


def _id(path: str | Path) -> str:
    path = str(path)
    return os.path.relpath(path, DATA_DIR) if path.startswith(DATA_DIR) else os.path.basename(path)


def _parse(source: str | Path | bytes, image_id: str = "test:1") -> Part10Object:
    with pydicom_warnings_allowed():
        return parse_part10(source if isinstance(source, bytes) else str(source), image_id=image_id)


def _reference_frames(ds: pydicom.Dataset, frames: int, encapsulated: bool) -> list[bytes]:
    """The frames as pydicom gives them: generate_frames, or a plain slice of native data."""
    with pydicom_warnings_allowed():
        if encapsulated:
            extended = None
            if "ExtendedOffsetTable" in ds:
                extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
            return list(
                generate_frames(ds.PixelData, number_of_frames=frames, extended_offsets=extended)
            )
        length = get_expected_length(ds, "bytes") // frames
        return [ds.PixelData[i * length : (i + 1) * length] for i in range(frames)]


def _assert_frames_match(obj: Part10Object, path: str | Path) -> None:
    ds = read(path)
    bits, big_ow = ds.BitsAllocated, not obj.little_endian and ds["PixelData"].VR == "OW"
    if not obj.is_encapsulated and (bits == 1 or (bits == 8 and big_ow)):
        # Bit-packed frames, and 8-bit samples in big endian words: compare the samples.
        for n in range(1, obj.number_of_frames + 1):
            with pydicom_warnings_allowed():
                expected = pixel_array(ds, index=n - 1, raw=True).ravel()
            data = np.frombuffer(bytes(obj.frame(n)), dtype=np.uint8)
            if bits == 1:
                data = np.unpackbits(data, bitorder="little")
            np.testing.assert_array_equal(data[: expected.size], expected)
        return
    reference = _reference_frames(ds, obj.number_of_frames, obj.is_encapsulated)
    assert len(reference) >= obj.number_of_frames
    for n in range(1, obj.number_of_frames + 1):
        assert bytes(obj.frame(n)) == reference[n - 1], f"frame {n}"


@pytest.mark.parametrize("path", PYDICOM_PIXEL_FILES, ids=_id)
def test_pydicom_files_give_pydicom_frames(path: str) -> None:
    expected_error = BROKEN.get(os.path.basename(path))
    if expected_error is not None:
        with pytest.raises(getattr(errors, expected_error)) as info:
            _parse(path, image_id="dicomfile:broken")
        assert info.value.image_id == "dicomfile:broken"
        return
    obj = _parse(path)
    assert obj.number_of_frames >= 1
    _assert_frames_match(obj, path)
    # Every object that parses also yields its decode parameters and its modules.
    last = obj.number_of_frames
    with pydicom_warnings_allowed():
        params = obj.pixel_params(last)
        modules = metadata_modules(obj.dataset, frame=last)
    assert (params.rows, params.columns) == (obj.dataset.Rows, obj.dataset.Columns)
    assert "imagePixelModule" in modules and "imagePlaneModule" in modules


@pytest.mark.parametrize("path", cornerstone_params(), ids=_id)
def test_cornerstone_files_give_pydicom_frames(path: Path) -> None:
    if path.name == "no-pixel-data.dcm":
        with pytest.raises(errors.MetadataError, match="no pixel data") as info:
            _parse(path, image_id="dicomfile:sr")
        assert info.value.image_id == "dicomfile:sr"
        return
    obj = _parse(path)
    _assert_frames_match(obj, path)
    # From bytes (wadouri) exactly as from the path (dicomfile).
    from_bytes = _parse(path.read_bytes())
    assert from_bytes.number_of_frames == obj.number_of_frames
    assert [bytes(from_bytes.frame(n)) for n in range(1, obj.number_of_frames + 1)] == [
        bytes(obj.frame(n)) for n in range(1, obj.number_of_frames + 1)
    ]


def _corpus(name: str) -> Path:
    return CORNERSTONE / name


def test_fragmented_multiframe_without_offset_table_splits_at_end_markers() -> None:
    path = _corpus("CT0012.fragmented_no_bot_jpeg_baseline.51.dcm")
    obj = _parse(path)
    ds = read(path)
    fragments = list(pydicom.encaps.generate_fragments(ds.PixelData[8:]))
    assert obj.is_encapsulated and obj.number_of_frames == 2 and len(fragments) > 2
    first, second = bytes(obj.frame(1)), bytes(obj.frame(2))
    assert first.startswith(b"\xff\xd8") and first.rstrip(b"\x00").endswith(b"\xff\xd9")
    assert second.startswith(b"\xff\xd8")
    assert len(first) + len(second) == sum(len(f) for f in fragments)


def test_native_frames_are_views_without_copies() -> None:
    obj = _parse(data_file("emri_small.dcm"))
    frame = obj.frame(3)
    assert isinstance(frame, memoryview)
    assert frame.obj is obj.dataset.PixelData  # a slice of the dataset's bytes, not a copy
    assert len(frame) == 64 * 64 * 2


def test_big_endian_frames_stay_big_endian() -> None:
    little = _parse(_corpus("CTImage.dcm"))
    big = _parse(_corpus("CTImage.dcm_BigEndianExplicitTransferSyntax_1.2.840.10008.1.2.2.dcm"))
    assert big.transfer_syntax_uid == "1.2.840.10008.1.2.2"
    le = np.frombuffer(little.frame(1), dtype="<i2")
    be = np.frombuffer(big.frame(1), dtype=">i2")
    np.testing.assert_array_equal(le, be)
    assert bytes(big.frame(1)) != bytes(little.frame(1))


@pytest.mark.parametrize(
    ("big", "little"),
    [
        ("OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_2frame.dcm"),  # 8-bit in OW: words swapped back
        ("SC_rgb_small_odd_big_endian.dcm", "SC_rgb_small_odd.dcm"),  # odd length, OW
        ("SC_rgb_expb_2frame.dcm", "SC_rgb_2frame.dcm"),  # 8-bit in OB
    ],
)
def test_big_endian_8bit_frames_equal_the_little_endian_twin(big: str, little: str) -> None:
    be, le = _parse(data_file(big)), _parse(data_file(little))
    assert be.number_of_frames == le.number_of_frames
    for n in range(1, be.number_of_frames + 1):
        assert bytes(be.frame(n)) == bytes(le.frame(n))


def test_big_endian_16bit_frames_are_the_swapped_twin() -> None:
    be, le = (
        _parse(data_file("SC_rgb_expb_16bit_2frame.dcm")),
        _parse(data_file("SC_rgb_16bit_2frame.dcm")),
    )
    for n in (1, 2):
        np.testing.assert_array_equal(
            np.frombuffer(be.frame(n), ">u2"), np.frombuffer(le.frame(n), "<u2")
        )


def test_deflated_object_gives_inflated_little_endian_frames() -> None:
    plain = _parse(
        _corpus("CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm")
    )
    deflated = _parse(
        _corpus(
            "CTImage.dcm_DeflatedExplicitVRLittleEndianTransferSyntax_1.2.840.10008.1.2.1.99.dcm"
        )
    )
    assert deflated.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"
    assert bytes(deflated.frame(1)) == bytes(plain.frame(1))
    assert deflated.pixel_params().transfer_syntax_uid == ExplicitVRLittleEndian


def test_bit_packed_frames_not_on_a_byte_boundary_are_repacked() -> None:
    ds = read(data_file("liver.dcm"))
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 2, size=(3, 3, 5), dtype=np.uint8)  # 15 bits per frame
    ds.Rows, ds.Columns, ds.NumberOfFrames = 3, 5, 3
    del ds.PerFrameFunctionalGroupsSequence
    ds.PixelData = pack_bits(frames)
    obj = _parse(to_bytes(ds))
    for n in range(1, 4):
        data = obj.frame(n)
        assert isinstance(data, bytes) and len(data) == 2
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        np.testing.assert_array_equal(bits[:15], frames[n - 1].ravel())
        assert not bits[15:].any()  # the spare bits of the last byte are zero


def _jpeg2000_frames() -> tuple[pydicom.Dataset, list[bytes]]:
    ds = read(data_file("emri_small_jpeg_2k_lossless.dcm"))
    with pydicom_warnings_allowed():
        return ds, list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))


def _with_pixel_data(ds: pydicom.Dataset, encapsulated: bytes) -> bytes:
    ds.PixelData = encapsulated
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return to_bytes(ds)


@pytest.mark.parametrize(
    ("has_bot", "fragments_per_frame"), [(True, 1), (False, 1), (True, 3), (False, 3)]
)
def test_encapsulated_layouts(has_bot: bool, fragments_per_frame: int) -> None:
    ds, frames = _jpeg2000_frames()
    assert all(f.rstrip(b"\x00").endswith(b"\xff\xd9") for f in frames)
    data = _with_pixel_data(
        ds, encapsulate(frames, fragments_per_frame=fragments_per_frame, has_bot=has_bot)
    )
    obj = _parse(data)
    assert obj.transfer_syntax_uid == JPEG2000Lossless and obj.number_of_frames == 10
    for n, expected in enumerate(frames, start=1):
        assert bytes(obj.frame(n)) == expected
    assert isinstance(obj.frame(1), bytes if fragments_per_frame > 1 else memoryview)


def test_extended_offset_table() -> None:
    ds, frames = _jpeg2000_frames()
    encapsulated, offsets, lengths = encapsulate_extended(frames)
    ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = offsets, lengths
    obj = _parse(_with_pixel_data(ds, encapsulated))
    for n, expected in enumerate(frames, start=1):
        assert bytes(obj.frame(n)) == expected


def test_single_frame_takes_every_fragment() -> None:
    ds, frames = _jpeg2000_frames()
    ds.NumberOfFrames = 1
    obj = _parse(
        _with_pixel_data(ds, encapsulate(frames[:1], fragments_per_frame=4, has_bot=False))
    )
    assert bytes(obj.frame(1)) == frames[0]


def test_pixel_data_must_fit_the_transfer_syntax() -> None:
    data = Path(data_file("CT_small.dcm")).read_bytes()
    explicit, rle = b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.5\x00"  # same length
    assert data.count(explicit) == 1
    with pytest.raises(errors.DecodeError, match="native pixel data does not fit"):
        _parse(data.replace(explicit, rle))


def test_fewer_fragments_than_frames_is_a_decode_error() -> None:
    ds, frames = _jpeg2000_frames()
    obj = _parse(_with_pixel_data(ds, encapsulate(frames[:4], has_bot=False)))
    with pytest.raises(errors.DecodeError, match="4 fragments cannot hold 10 frames"):
        obj.frame(1)


def test_frame_index_is_built_once_under_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    ds, frames = _jpeg2000_frames()
    obj = _parse(_with_pixel_data(ds, encapsulate(frames, has_bot=False)))
    calls = []
    real = part10.build_frame_index

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(part10, "build_frame_index", counting)
    results: dict[int, bytes] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, bytes(obj.frame(n))))
        for n in range(1, 11)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert [results[n] for n in range(1, 11)] == frames


@pytest.mark.parametrize("bad", [True, 1.0, "1"])
def test_frame_numbers_that_are_not_ints_are_invalid_image_ids(bad: object) -> None:
    obj = _parse(data_file("emri_small.dcm"), image_id="dicomfile:/emri&frame=x")
    with pytest.raises(errors.InvalidImageIdError) as info:
        obj.frame(bad)  # type: ignore[arg-type]
    assert info.value.image_id == "dicomfile:/emri&frame=x"


@pytest.mark.parametrize("bad", [0, -1, 11])
def test_frames_outside_the_object_are_not_found_naming_the_range(bad: int) -> None:
    obj = _parse(data_file("emri_small.dcm"), image_id="dicomfile:/emri&frame=x")
    with pytest.raises(
        errors.NotFoundError, match=rf"frame {bad} of 10 does not exist \(frames are 1\.\.10\)"
    ) as info:
        obj.frame(bad)
    assert info.value.image_id == "dicomfile:/emri&frame=x"


def _value_ranges(data: bytes) -> list[tuple[int, int]]:
    """Where each top-level element value lies in an explicit/implicit LE object."""
    with pydicom_warnings_allowed():
        ds = pydicom.dcmread(io.BytesIO(data))
        implicit, little = ds.original_encoding
        fp = io.BytesIO(data)
        fp.seek(132)
        pydicom.filereader._read_file_meta_info(fp)
        elements = list(data_element_generator(fp, implicit, little))
    # Undefined-length sequences come back parsed (no position): their items are not walked.
    return [
        (e.value_tell, e.length)
        for e in elements
        if isinstance(e, RawDataElement) and e.length not in (0, 0xFFFFFFFF)
    ]


TRUNCATION_SAMPLES = [
    "CTImage.dcm",
    "CTImage.dcm_BigEndianExplicitTransferSyntax_1.2.840.10008.1.2.2.dcm",
    "CTImage.dcm_JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70.dcm",
    "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm",
    "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm",
    "TestPattern_Palette_16.dcm",
    "no-pixel-spacing.dcm",
]


def _load_every_frame(data: bytes, image_id: str = "wadouri:cut") -> None:
    obj = _parse(data, image_id=image_id)
    for n in range(1, obj.number_of_frames + 1):
        obj.frame(n)


@pytest.mark.parametrize("name", TRUNCATION_SAMPLES)
def test_cut_inside_any_element_is_a_decode_error(name: str) -> None:
    data = _corpus(name).read_bytes()
    # Inside every defined-length element, and at the end of the pixel data (for
    # encapsulated data: in the last fragment, and just before the sequence delimiter).
    cuts = {len(data) - k for k in (1, 5, 8, 9, 100)}
    for start, length in _value_ranges(data):
        cuts |= {start - 3, start + 1, start + length - 1}
    for cut in sorted(cuts):
        with pytest.raises(errors.DecodeError) as info:
            _load_every_frame(data[:cut])
        assert info.value.image_id == "wadouri:cut"


def _outcome(data: bytes) -> str:
    try:
        _load_every_frame(data)
    except errors.DecodeError:
        return "decode"
    except errors.MetadataError as exc:
        return f"metadata: {exc.message}"
    return "ok"


@pytest.mark.parametrize(
    "path",
    [
        *(str(p) for p in cornerstone_files() if p.suffix == ".dcm"),
        data_file("image_dfl.dcm"),
        data_file("liver.dcm"),
        data_file("emri_small_RLE.dcm"),
        data_file("OT-PAL-8-face.dcm"),
    ],
    ids=_id,
)
def test_truncated_objects_never_raise_foreign_errors(path: str) -> None:
    data = Path(path).read_bytes()
    rng = random.Random(path)
    cuts = rng.sample(range(1, len(data) - 16), 40)  # image_dfl.dcm has 8 trailing bytes
    outcomes = {_outcome(data[:cut]) for cut in cuts}
    # Only a cut exactly between two header elements leaves a valid, shorter object.
    assert outcomes <= {"decode", "metadata: the DICOM object has no pixel data"}
    assert "decode" in outcomes


def test_truncated_pixel_data_names_the_sizes() -> None:
    data = _corpus("CTImage.dcm").read_bytes()
    with pytest.raises(errors.DecodeError, match="truncated"):
        _parse(data[:-1000], image_id="wadouri:x")


def test_not_dicom_is_a_decode_error() -> None:
    with pytest.raises(errors.DecodeError, match="not a DICOM Part 10 object"):
        _parse(b"<html><body>502 Bad Gateway</body></html>" * 10)
    with pytest.raises(errors.DecodeError):
        _parse(b"")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.NotFoundError) as info:
        parse_part10(tmp_path / "absent.dcm", image_id="dicomfile:absent")
    assert info.value.image_id == "dicomfile:absent"
    with pytest.raises(errors.DecodeError):
        parse_part10(tmp_path, image_id="dicomfile:dir")


def test_frame_pixel_limit() -> None:
    data = _corpus("CTImage.dcm").read_bytes()
    with pytest.raises(errors.ImageTooLargeError, match="max_frame_pixels") as info:
        parse_part10(data, image_id="wadouri:big", limits=Limits(max_frame_pixels=512 * 511))
    assert info.value.image_id == "wadouri:big"
    assert parse_part10(data, limits=Limits(max_frame_pixels=512 * 512)).number_of_frames == 1


def test_size_estimate_covers_the_pixel_data() -> None:
    path = _corpus("CTImage.dcm")
    obj = _parse(path)
    assert 512 * 512 * 2 <= obj.size_in_bytes <= path.stat().st_size + 1024


def test_pixel_params_of_a_ct() -> None:
    params = _parse(_corpus("CTImage.dcm")).pixel_params()
    assert (params.rows, params.columns, params.samples_per_pixel) == (512, 512, 1)
    assert (params.bits_allocated, params.bits_stored, params.pixel_representation) == (16, 16, 1)
    assert params.photometric_interpretation == "MONOCHROME2"
    assert (params.rescale_slope, params.rescale_intercept, params.modality) == (1.0, -1024.0, "CT")
    assert params.palette is None and params.suvbw is None and params.dose_grid_scaling is None


def test_pixel_params_missing_fields_are_metadata_errors() -> None:
    ds = read(data_file("CT_small.dcm"))
    del ds.PhotometricInterpretation
    with pytest.raises(errors.MetadataError, match="PhotometricInterpretation"):
        part10.pixel_params(ds, ExplicitVRLittleEndian, image_id="x")
    del ds.Rows
    with pytest.raises(errors.MetadataError, match="Rows") as info:
        part10.pixel_params(ds, ExplicitVRLittleEndian, image_id="x")
    assert info.value.image_id == "x"


def test_rtdose_dose_grid_scaling() -> None:
    obj = _parse(data_file("rtdose.dcm"))
    params = obj.pixel_params(5)
    assert params.dose_grid_scaling == pytest.approx(1e-6)
    assert params.modality == "RTDOSE" and params.bits_allocated == 32
    assert obj.number_of_frames == 15


# -- found by fuzzing (tests/fuzz/test_fuzz_part10.py) --------------------------------------


def test_many_fragments_behind_an_offset_table_are_indexed_in_linear_time() -> None:
    # 60,000 one-fragment frames with a Basic Offset Table: grouping the fragments
    # scanned every fragment for every entry, minutes of work for 600 kB.
    ds = read(data_file("emri_small_jpeg_2k_lossless.dcm"))
    ds.PixelData = encapsulate([b"\xff\xd9"] * 60_000, has_bot=True)
    ds.NumberOfFrames = 60_000
    obj = _parse(to_bytes(ds))
    start = time.perf_counter()
    assert bytes(obj.frame(60_000)) == b"\xff\xd9"
    assert time.perf_counter() - start < 5
    assert bytes(obj.frame(1)) == bytes(obj.frame(30_000)) == b"\xff\xd9"


def _deflate_bomb(megabytes: int) -> bytes:
    """image_dfl.dcm with a private OB element of zeros first in its deflated dataset."""
    raw = Path(data_file("image_dfl.dcm")).read_bytes()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")  # (0002,0000) group length
    body = zlib.decompress(raw[meta_end:], -zlib.MAX_WBITS)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunks = [
        packer.compress(b"\x09\x00\x10\x00OB\x00\x00" + (megabytes << 20).to_bytes(4, "little"))
    ]
    zeros = bytes(1 << 20)
    chunks += [packer.compress(zeros) for _ in range(megabytes)]
    chunks += [packer.compress(body), packer.flush()]
    return raw[:meta_end] + b"".join(chunks)


def test_a_deflate_bomb_is_refused_before_it_is_inflated() -> None:
    # 128 kB that inflate to 128 MB: pydicom inflates a deflated dataset whole.
    bomb = _deflate_bomb(128)
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(errors.ImageTooLargeError, match="inflates past") as caught:
            parse_part10(bomb, image_id="wadouri:bomb", limits=Limits(max_response_bytes=32 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.image_id == "wadouri:bomb"
    assert peak < 16 << 20, f"{peak} bytes held while counting"
    # Within the limit it is an object like any other (whose 8 MB element is kept).
    assert _parse(_deflate_bomb(8)).transfer_syntax_uid == "1.2.840.10008.1.2.1.99"


def test_a_path_no_file_can_have_is_a_decode_error() -> None:
    for path in ("/tmp/a\x00b.dcm", "/tmp/\ud800.dcm"):
        with pytest.raises(errors.DecodeError):
            parse_part10(path, image_id="dicomfile:x")


def test_a_header_read_bounds_a_deflated_dataset_too(tmp_path: Path) -> None:
    # dicomfile: metadata reads the header only; pydicom inflated the whole dataset.
    from imageloader.dicom.dicomfile import _read_header
    from imageloader.dicom.part10 import read_header

    path = tmp_path / "bomb.dcm"
    path.write_bytes(_deflate_bomb(128))
    with pytest.raises(errors.ImageTooLargeError):
        read_header(path, image_id="dicomfile:bomb", limits=Limits(max_response_bytes=32 << 20))
    path.write_bytes(_deflate_bomb(8))  # within the (default) limit: read as any other
    assert read_header(path).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    (tmp_path / "dfl.dcm").write_bytes(Path(data_file("image_dfl.dcm")).read_bytes())
    assert _read_header(str(tmp_path / "dfl.dcm"), "dicomfile:dfl")[0]["imagePixelModule"]
    with pytest.raises(errors.NotFoundError):
        _read_header(str(tmp_path / "missing.dcm"), "dicomfile:missing")
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(errors.DecodeError):
        _read_header(str(tmp_path / "junk.dcm"), "dicomfile:junk")


# -- the parse's own bounds: time, reads, cancellation ------------------------------------


def _deflated_zeros(megabytes: int) -> bytes:
    """A deflated object whose dataset is an empty element then zeros: pydicom parses
    them as millions of 8-byte elements (~0.25 s of CPU per MiB without a bound)."""
    from tests.hostile import craft

    return craft.deflated_zeros(megabytes << 20)


def test_a_parse_past_max_parse_seconds_is_a_timeout() -> None:
    hostile = _deflated_zeros(64)
    started = time.monotonic()
    with pydicom_warnings_allowed(), pytest.raises(errors.LoadTimeoutError) as caught:
        parse_part10(hostile, image_id="wadouri:zeros", limits=Limits(max_parse_seconds=0.2))
    assert time.monotonic() - started < 1.5
    assert caught.value.image_id == "wadouri:zeros"
    assert "max_parse_seconds" in str(caught.value)
    # A legitimate object of many elements, with no time at all: the same error.
    with pydicom_warnings_allowed(), pytest.raises(errors.LoadTimeoutError):
        parse_part10(
            data_file("waveform_ecg.dcm"),
            image_id="dicomfile:x",
            limits=Limits(max_parse_seconds=0),
        )
    # The header read (dicomfile: metadata) is held to it too.
    with pytest.raises(errors.LoadTimeoutError):
        part10.read_header(data_file("CT_small.dcm"), limits=Limits(max_parse_seconds=0))


def test_a_parse_of_too_many_elements_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    with pydicom_warnings_allowed(), pytest.raises(errors.ImageTooLargeError) as caught:
        parse_part10(_deflated_zeros(200), image_id="wadouri:zeros")  # within the size limit
    assert time.monotonic() - started < 8  # ~3 s here; unbounded, ~50 s
    assert caught.value.image_id == "wadouri:zeros"
    assert f"more than {part10.MAX_PARSE_READS} elements" in str(caught.value)
    # The cap counts reads: a real object needs a few per element.
    ct = Path(data_file("CT_small.dcm")).read_bytes()
    monkeypatch.setattr(part10, "MAX_PARSE_READS", 50)
    with pytest.raises(errors.ImageTooLargeError, match="more than 50 elements"):
        parse_part10(ct, image_id="wadouri:ct")
    monkeypatch.setattr(part10, "MAX_PARSE_READS", 1000)
    assert parse_part10(ct, image_id="wadouri:ct").number_of_frames == 1


def test_a_set_cancel_event_stops_the_parse_at_its_next_read() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(errors.LoadCancelledError):
        parse_part10(data_file("CT_small.dcm"), image_id="dicomfile:ct", cancel=cancel)
    with pytest.raises(errors.LoadCancelledError):
        part10.read_header(data_file("CT_small.dcm"), cancel=cancel)


def test_deflated_objects_parse_through_the_probe_as_pydicom_reads_them() -> None:
    # The dataset is inflated here and parsed through the probe (so that its reads
    # are bounded); what comes out is what pydicom's own inflation gave.
    paths = [data_file("image_dfl.dcm")] + [
        str(p) for p in Path(CORNERSTONE).glob("*Deflated*.dcm")
    ]
    assert len(paths) > 1
    for path in paths:
        with pydicom_warnings_allowed():
            expected = pydicom.dcmread(path)
            obj = parse_part10(path, image_id="dicomfile:dfl")
            header = part10.read_header(path)
        ds = obj.dataset
        assert ds.original_encoding == expected.original_encoding == (False, True)
        assert ds.file_meta == expected.file_meta
        assert ds.preamble == expected.preamble
        assert obj.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"
        assert bytes(ds.PixelData) == bytes(expected.PixelData)
        assert [e.tag for e in ds] == [e.tag for e in expected]
        assert "PixelData" not in header and header.SOPInstanceUID == expected.SOPInstanceUID
    # A truncated deflate stream is a DecodeError, as pydicom's zlib.decompress made it.
    whole = Path(data_file("image_dfl.dcm")).read_bytes()
    with pytest.raises(errors.DecodeError, match="truncated"):
        parse_part10(whole[:-200], image_id="wadouri:cut")


async def test_a_cancelled_load_stops_its_parsing_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from imageloader import ImageLoader

    checks: list[float] = []
    parsing = threading.Event()
    real_check = part10._ParseGuard.check

    def counted(self: part10._ParseGuard) -> None:
        checks.append(time.monotonic())
        if len(checks) == 50_000:
            parsing.set()
        real_check(self)

    monkeypatch.setattr(part10._ParseGuard, "check", counted)
    path = tmp_path / "zeros.dcm"
    path.write_bytes(_deflated_zeros(200))
    async with ImageLoader(max_web_workers=1) as loader:
        task = asyncio.create_task(loader.load_image(f"dicomfile:{path}"))
        assert await asyncio.to_thread(parsing.wait, 10)  # parsing, in its thread
        task.cancel()
        with pytest.raises((asyncio.CancelledError, errors.LoadCancelledError)):
            await task
        cancelled = time.monotonic()
        await asyncio.sleep(1.0)
        assert checks[-1] - cancelled < 0.5, "the parse went on after the load was cancelled"
        # The threads are free again: a small load is not held up.
        started = time.monotonic()
        with pydicom_warnings_allowed():
            image = await loader.load_image(f"dicomfile:{data_file('CT_small.dcm')}")
        assert image.rows == 128
        assert time.monotonic() - started < 5
