"""decode_frame as the decode pool runs it: inputs, outputs, pickling, imports."""

from __future__ import annotations

import pickle
import subprocess
import sys

import imagecodecs
import numpy as np
import pytest

from imageloader.decode.codecs import default_registry
from imageloader.decode.params import DecodedFrame, DecodeOptions, PixelParams
from imageloader.decode.pool import DecodePool
from imageloader.decode.worker import decode_frame
from imageloader.errors import DecodeError, UnsupportedTransferSyntaxError

rng = np.random.default_rng(11)
CT = (rng.integers(-2000, 2400, (32, 40))).astype(np.int16)


def ct_params(uid: str = "1.2.840.10008.1.2.1") -> PixelParams:
    return PixelParams(uid, 32, 40, 1, 16, 16, 1, "MONOCHROME2", 0, 1.0, -1024.0, "CT")


def at_odd_offset(data: bytes) -> memoryview:
    """The frame as a view that starts at an odd address, like a multipart part."""
    buffer = bytearray(len(data) + 1)
    buffer[1:] = data
    view = memoryview(buffer)[1:]
    assert np.frombuffer(view, np.uint8).ctypes.data % 2 == 1
    return view


@pytest.mark.parametrize(
    ("uid", "encode"),
    [
        ("1.2.840.10008.1.2.1", lambda a: a.astype("<i2").tobytes()),
        ("1.2.840.10008.1.2", lambda a: a.astype("<i2").tobytes()),
        ("1.2.840.10008.1.2.2", lambda a: a.astype(">i2").tobytes()),
        ("1.2.840.10008.1.2.4.80", lambda a: imagecodecs.jpegls_encode(a.view(np.uint16))),
        ("1.2.840.10008.1.2.4.90", lambda a: imagecodecs.jpeg2k_encode(a, reversible=True)),
        ("1.2.840.10008.1.2.4.201", lambda a: imagecodecs.htj2k_encode(a, reversible=True)),
    ],
)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, at_odd_offset])
def test_any_buffer_at_any_offset(uid, encode, wrap) -> None:
    data = wrap(encode(CT))
    frame = decode_frame(data, ct_params(uid), image_id="ct")
    np.testing.assert_array_equal(frame.pixels, CT.astype(np.int32) - 1024)
    assert frame.pixels.dtype == np.int16 and frame.pixels.flags.c_contiguous


def test_odd_length_native_frame_may_keep_its_padding_byte() -> None:
    params = PixelParams("1.2.840.10008.1.2.1", 3, 3, 1, 8, 8, 0, "MONOCHROME2")
    frame = decode_frame(bytes(range(9)) + b"\x00", params)
    np.testing.assert_array_equal(frame.pixels.ravel(), range(9))


def test_frame_record() -> None:
    frame = decode_frame(CT.tobytes(), ct_params(), image_id="ct")
    assert isinstance(frame, DecodedFrame)
    assert frame.codec == "numpy" and frame.decode_ms > 0
    assert frame.photometric_interpretation == "MONOCHROME2" and not frame.color
    assert frame.prescale.scaled and frame.prescale.intercept == -1024.0
    assert (frame.min_value, frame.max_value) == (float(CT.min()) - 1024, float(CT.max()) - 1024)


def test_monochrome1_is_not_inverted() -> None:
    params = PixelParams("1.2.840.10008.1.2.1", 1, 3, 1, 8, 8, 0, "MONOCHROME1")
    frame = decode_frame(bytes([0, 100, 255]), params)
    np.testing.assert_array_equal(frame.pixels.ravel(), [0, 100, 255])
    assert frame.photometric_interpretation == "MONOCHROME1"


def test_errors_name_the_image_and_pickle() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_frame(b"\x01\x02", ct_params(), image_id="wadors:https://pacs/frames/1")
    error = pickle.loads(pickle.dumps(caught.value))
    assert type(error) is DecodeError
    assert error.image_id == "wadors:https://pacs/frames/1"
    assert "wadors:https://pacs/frames/1" in str(error)


@pytest.mark.parametrize(
    "params",
    [
        PixelParams("1.2.840.10008.1.2.1", 0, 4, 1, 8, 8, 0, "MONOCHROME2"),
        PixelParams("1.2.840.10008.1.2.1", 4, 4, 2, 8, 8, 0, "MONOCHROME2"),
        PixelParams("1.2.840.10008.1.2.1", 4, 4, 1, 12, 12, 0, "MONOCHROME2"),
        PixelParams("1.2.840.10008.1.2.1", 4, 4, 1, 16, 17, 0, "MONOCHROME2"),
        PixelParams("1.2.840.10008.1.2.1", 4, 4, 3, 8, 8, 0, "YBR_PARTIAL_420"),
    ],
)
def test_invalid_pixel_modules_are_decode_errors(params: PixelParams) -> None:
    size = max(1, params.rows * params.columns * params.samples_per_pixel * 2)
    with pytest.raises(DecodeError):
        decode_frame(bytes(size)[: params.native_frame_bytes or 1], params, image_id="bad")


def test_arguments_and_results_pickle() -> None:
    registry = default_registry()
    registry.disable("pillow")
    args = (CT.tobytes(), ct_params(), DecodeOptions(use_rgba=True), "ct", registry)
    copied = pickle.loads(pickle.dumps(args))
    frame = decode_frame(*copied[:4], registry=copied[4])
    again = pickle.loads(pickle.dumps(frame))
    np.testing.assert_array_equal(again.pixels, frame.pixels)
    assert again.prescale == frame.prescale


async def test_decodes_in_a_spawned_worker_process() -> None:
    pool = DecodePool(max_workers=1, task_timeout=30)
    try:
        frame = await pool.run(decode_frame, CT.tobytes(), ct_params(), DecodeOptions(), "ct")
        np.testing.assert_array_equal(frame.pixels, CT.astype(np.int32) - 1024)
        params = ct_params("1.2.840.10008.1.2.4.100")
        with pytest.raises(UnsupportedTransferSyntaxError) as caught:
            await pool.run(decode_frame, b"", params, DecodeOptions(), "mpeg")
        assert caught.value.image_id == "mpeg"
    finally:
        await pool.aclose()


def test_worker_imports_stay_light() -> None:
    """The decode modules import numpy and each other: no asyncio, loader or codec package.

    (The package's own ``__init__`` is left out: it is the public face, not the worker's.)
    """
    code = (
        "import importlib.util, sys, types\n"
        "spec = importlib.util.find_spec('imageloader')\n"
        "package = types.ModuleType('imageloader')\n"
        "package.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['imageloader'] = package\n"
        "import imageloader.decode.worker\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    modules = set(result.stdout.split())
    assert "imageloader.decode.worker" in modules
    ours = {m for m in modules if m.startswith("imageloader.")}
    assert ours <= {
        "imageloader.decode",
        "imageloader.decode.codecs",
        "imageloader.decode.color",
        "imageloader.decode.params",
        "imageloader.decode.pixels",
        "imageloader.decode.reduce",  # decode levels: numpy, and codecs imported on use
        "imageloader.decode.syntaxes",
        "imageloader.decode.worker",
        "imageloader.errors",
        "imageloader.image",
        "imageloader.limits",  # the defaults: a dataclass of numbers
    }
    heavy = {
        "asyncio",
        "aiohttp",
        "pydicom",
        "imagecodecs",
        "PIL",
        "jpeg_ls",
        "libjpeg",
        "openjpeg",
    }
    assert not heavy & modules
