"""What the sandbox child runs: each probe drives one entry point the way a loader does.

A probe returns a small picklable summary. Our typed errors are expected answers to
hostile input: a probe records them step by step and carries on where a loader
would. Anything else (a foreign exception, or a typed one caused by a MemoryError)
propagates, and the sandbox reports it as a failure of the case.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from imageloader.decode.codecs import CodecRegistry, default_registry
from imageloader.decode.params import DecodedFrame, DecodeOptions, PixelParams
from imageloader.decode.worker import decode_frame
from imageloader.errors import DecodeError, ImageLoaderError
from imageloader.limits import Limits

IMAGE_ID = "fuzz:case"

#: A step's outcome: "ok", or the qualified name of the typed error it raised.
Step = tuple[str, str]


def warm_up() -> None:
    """Import the decode stack before the address space is capped."""
    import imagecodecs
    import PIL.Image  # noqa: F401
    import pydicom  # noqa: F401

    from imageloader.dicom import dicomjson, modules, part10  # noqa: F401

    for name in ("jpeg_ls", "libjpeg", "openjpeg", "rle", "nibabel"):
        with contextlib.suppress(ImportError):
            __import__(name)
    with contextlib.suppress(ImportError):
        from imageloader import web  # noqa: F401
        from imageloader.nifti import volume  # noqa: F401
    # Map each native library now, not inside the first capped case.
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    params = PixelParams("1.2.840.10008.1.2.4.90", 8, 8, 1, 16, 16, 0, "MONOCHROME2")
    for uid, encode in (
        ("1.2.840.10008.1.2.4.90", lambda a: imagecodecs.jpeg2k_encode(a, reversible=True)),
        ("1.2.840.10008.1.2.4.201", lambda a: imagecodecs.htj2k_encode(a, reversible=True)),
        ("1.2.840.10008.1.2.4.80", imagecodecs.jpegls_encode),
        ("1.2.840.10008.1.2.4.70", lambda a: imagecodecs.jpeg8_encode(a, lossless=True)),
    ):
        try:
            stream = bytes(encode(image))
        except Exception:  # an encoder this build lacks: nothing to map
            continue
        for codec in _family_codecs(uid):
            with contextlib.suppress(ImageLoaderError):
                decode_frame(stream, PixelParams(uid, *_rest(params)), registry=_only(codec))


def _rest(params: PixelParams) -> tuple[Any, ...]:
    return (
        params.rows,
        params.columns,
        params.samples_per_pixel,
        params.bits_allocated,
        params.bits_stored,
        params.pixel_representation,
        params.photometric_interpretation,
    )


def _family_codecs(uid: str) -> list[str]:
    from imageloader.decode.syntaxes import SYNTAXES

    return [c.name for c in default_registry().codecs(SYNTAXES[uid].family)]


@functools.cache
def _only(codec: str | None) -> CodecRegistry | None:
    """The default registry with every codec but ``codec`` disabled (None: all enabled)."""
    if codec is None:
        return None
    registry = default_registry()
    registry.disable(*(c.name for c in registry if c.name != codec))
    return registry


def _causes_memory(exc: BaseException) -> bool:
    link: BaseException | None = exc
    for _ in range(16):
        if link is None:
            return False
        if isinstance(link, MemoryError) or any(
            word in str(link) for word in ("bad_alloc", "insufficient memory")
        ):
            return True
        link = link.__cause__ or link.__context__
    return False


def _typed(exc: ImageLoaderError) -> str:
    """The name of an expected error; a typed error hiding a MemoryError is re-raised."""
    if _causes_memory(exc):
        raise exc
    return type(exc).__qualname__


def attempt(steps: list[Step], step: str, call: Callable[[], Any]) -> Any:
    """``call()``, noting "ok" or the typed error under ``step``; None after an error."""
    try:
        value = call()
    except ImageLoaderError as exc:
        steps.append((step, _typed(exc)))
        return None
    steps.append((step, "ok"))
    return value


def summarize(frame: DecodedFrame) -> dict[str, Any]:
    """What the properties check about a decoded frame (the pixels stay here)."""
    pixels = frame.pixels
    floating = pixels.dtype.kind == "f"
    return {
        "shape": tuple(int(n) for n in pixels.shape),
        "dtype": pixels.dtype.str,
        "contiguous": bool(pixels.flags.c_contiguous),
        "min_value": frame.min_value,
        "max_value": frame.max_value,
        "data_min": float(np.nanmin(pixels) if floating else pixels.min()) if pixels.size else None,
        "data_max": float(np.nanmax(pixels) if floating else pixels.max()) if pixels.size else None,
        "color": frame.color,
        "pi": frame.photometric_interpretation,
        "codec": frame.codec,
    }


# -- probes ------------------------------------------------------------------------------


def probe_decode(
    data: bytes,
    params: PixelParams,
    options: DecodeOptions,
    max_frame_pixels: int,
    codec: str | None,
) -> dict[str, Any]:
    """``decode_frame`` as a decode worker runs it (with one codec, or the default order)."""
    frame = decode_frame(data, params, options, IMAGE_ID, max_frame_pixels, registry=_only(codec))
    return summarize(frame)


def probe_part10(data: bytes, limits: Limits, decode: bool) -> dict[str, Any]:
    """Parse, cut every frame (up to a bound), read pixel params and modules, decode."""
    from imageloader.dicom.modules import metadata_modules
    from imageloader.dicom.part10 import parse_part10

    steps: list[Step] = []
    obj = attempt(steps, "parse", lambda: parse_part10(data, image_id=IMAGE_ID, limits=limits))
    if obj is None:
        return {"steps": steps}
    count = obj.number_of_frames
    # Frames outside 1..count must be refused (InvalidImageIdError): noted apart.
    outside: list[Step] = []
    for n in (0, -1, count + 1):
        attempt(outside, f"frame {n}", lambda n=n: obj.frame(n))
    frames: dict[int, bytes] = {}
    lengths: dict[int, int] = {}
    for n in sorted({*range(1, min(count, 16) + 1), max(count - 1, 1), count}):
        cut = attempt(steps, f"frame {n}", lambda n=n: obj.frame(n))
        if cut is not None:
            frames[n] = bytes(cut)
            lengths[n] = len(cut)
    decoded: list[tuple[int, PixelParams, dict[str, Any]]] = []
    for n in sorted({1, count}):
        metadata_modules(obj.dataset, frame=n)  # tolerant by contract: nothing may escape
        params = attempt(steps, f"params {n}", lambda n=n: obj.pixel_params(n, limits=limits))
        if not decode or params is None or n not in frames:
            continue
        frame = attempt(
            steps,
            f"decode {n}",
            lambda data=frames[n], params=params: decode_frame(
                data, params, DecodeOptions(), IMAGE_ID, limits.max_frame_pixels
            ),
        )
        if frame is not None:
            decoded.append((n, params, summarize(frame)))
    return {
        "steps": steps,
        "outside": outside,
        "frames": count,
        "encapsulated": obj.is_encapsulated,
        "frame_bits": None if obj.is_encapsulated else obj._frame_bits,
        "lengths": lengths,
        "decoded": decoded,
    }


def probe_dicomjson(obj: Any, bulk: dict[str, bytes] | None, limits: Limits) -> dict[str, Any]:
    """DICOM JSON → dataset → every frame's modules → pixel params, as ``wadors:`` does."""
    from imageloader.dicom.dicomjson import (
        bulkdata_references,
        dataset_from_json,
        transfer_syntax_of,
    )
    from imageloader.dicom.modules import (
        metadata_modules,
        metadata_modules_by_frame,
        pixel_params_from_modules,
    )
    from imageloader.dicom.part10 import frame_count, pixel_params
    from imageloader.metadata import module_to_json

    steps: list[Step] = []
    if isinstance(obj, dict):
        list(bulkdata_references(obj))  # never raises: a generator over whatever came
    handler = None if bulk is None else (lambda tag, vr, uri: bulk.get(uri))
    ds = attempt(
        steps,
        "dataset",
        lambda: dataset_from_json(obj, bulkdata_handler=handler, image_id=IMAGE_ID),
    )
    if ds is None:
        return {"steps": steps}
    frames = frame_count(ds)
    by_frame = attempt(steps, "modules by frame", lambda: metadata_modules_by_frame(ds))
    modules = metadata_modules(ds, frame=1)
    json.dumps(module_to_json(modules))  # served to users as JSON: must serialise
    syntax = transfer_syntax_of(ds) or "1.2.840.10008.1.2.1"
    attempt(steps, "params", lambda: pixel_params(ds, syntax, image_id=IMAGE_ID, limits=limits))
    attempt(
        steps,
        "params from modules",
        lambda: pixel_params_from_modules(modules, syntax, image_id=IMAGE_ID),
    )
    return {
        "steps": steps,
        "frames": frames,
        "by_frame": None if by_frame is None else len(by_frame),
        "modules": sorted(modules),
    }


def probe_web(data: bytes, use_rgba: bool, max_frame_pixels: int) -> dict[str, Any]:
    """``decode_web_image`` as the web loader's decode worker runs it."""
    from imageloader.web import decode_web_image

    decoded = decode_web_image(data, IMAGE_ID, use_rgba, max_frame_pixels)
    pixels = decoded.pixels
    return {
        "shape": tuple(int(n) for n in pixels.shape),
        "dtype": pixels.dtype.str,
        "color": decoded.color,
        "min_value": decoded.min_value,
        "max_value": decoded.max_value,
    }


def probe_nifti(body: bytes, limits: Limits) -> dict[str, Any]:
    """``read_volume`` then every frame (up to a bound), as the NIfTI loader does."""
    from imageloader.nifti.volume import frame_pixels, read_volume

    steps: list[Step] = []
    volume = attempt(steps, "read", lambda: read_volume(body, IMAGE_ID, limits))
    if volume is None:
        return {"steps": steps}
    frames = volume.info.frames
    shapes = []
    for n in sorted({0, min(1, frames - 1), frames - 1}):
        for prescale in (False, True):
            pixels = attempt(
                steps, f"frame {n}", lambda n=n, p=prescale: frame_pixels(volume, n, p)
            )
            if pixels is not None:
                shapes.append(tuple(int(s) for s in pixels.pixels.shape))
    return {
        "steps": steps,
        "frames": frames,
        "rows": volume.info.rows,
        "columns": volume.info.columns,
        "shapes": shapes,
    }


def probe_self_test(kind: str) -> Any:
    """Misbehave on purpose, so the sandbox's own tests see each failure it must report."""
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "hang":
        time.sleep(3600)
    if kind == "allocate":
        return len(bytearray(4 << 30))  # over the sandbox's address-space cap
    if kind == "foreign":
        raise KeyError("not ours")
    if kind == "typed":
        raise DecodeError("ours", image_id=IMAGE_ID)
    return os.getpid()


PROBES: dict[str, Callable[..., Any]] = {
    "self-test": probe_self_test,
    "decode": probe_decode,
    "part10": probe_part10,
    "dicomjson": probe_dicomjson,
    "web": probe_web,
    "nifti": probe_nifti,
}
