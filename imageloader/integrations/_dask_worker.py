"""The worker side of the Dask integration: one ImageLoader per process, and the tasks.

Tasks are module-level functions (Dask ships them by reference). Each asks
:func:`process_loader` for its process's loader: created on first use on an event
loop in a daemon thread, shared by every Dask thread of the process, closed at
process exit (or by :func:`close_process_loaders`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeAlias, TypeVar

import numpy as np
from anyio import from_thread
from anyio.from_thread import start_blocking_portal
from anyio.lowlevel import current_token

from ..errors import MetadataError
from ..image import Image
from ..loader import ImageLoader
from ..metadata import ImagePixelModule
from ..output import LocalBackend, SeriesWriter, SettledLoad, WrittenSeries

__all__ = [
    "DEFAULT_LOADER_OPTIONS",
    "BatchResult",
    "ProcessLoader",
    "close_process_loaders",
    "loader_options",
    "process_loader",
]

T = TypeVar("T")

#: What a worker's loader gets unless told otherwise: decode in the worker process,
#: and a small cache (Dask keeps its own results; a 1 GiB cache per worker would
#: fight the worker's memory limit).
DEFAULT_LOADER_OPTIONS: Mapping[str, Any] = {
    "max_web_workers": 0,
    "max_cache_size_bytes": 64 << 20,
}

# (result per imageId) imageId, series staged into (or known), pixel bytes, error
# (the load's ImageLoaderError, or the OSError that kept its frame from being staged).
BatchResult: TypeAlias = SettledLoad


class ProcessLoader:
    """An ImageLoader on an event loop in a thread of its own; callable from any thread.

    The loop and its thread are AnyIO's blocking portal (``start_blocking_portal``);
    :meth:`run` enters it with ``anyio.from_thread.run`` and the loop's token: one
    hop to the loop and back (``portal.call`` takes two, ~45 µs more a call).
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._portal_cm = start_blocking_portal(name="imageloader-dask-loop")
        self._portal = self._portal_cm.__enter__()
        try:
            self._token = self._portal.call(current_token)
            self.loader: ImageLoader = self._portal.call(self._open, dict(options))
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    @staticmethod
    async def _open(options: dict[str, Any]) -> ImageLoader:
        # Made inside its loop: the loader binds to the loop it is opened in.
        return await ImageLoader(**options).__aenter__()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loader's loop and wait for its result (from another thread)."""
        return from_thread.run(_awaited, coro, token=self._token)

    def close(self, timeout: float = 30.0) -> None:
        """Close the loader, then stop its loop (waiting ``timeout`` seconds for each)."""
        try:
            self._portal.start_task_soon(self.loader.aclose).result(timeout)
        finally:
            with contextlib.suppress(RuntimeError):  # stopped already
                self._portal.call(self._portal.stop, True)  # cancel what still runs there
            # The loop's thread ends once its worker threads have; a hung one (a decode
            # that never returns) must not hang the process's exit: wait only so long.
            stopper = threading.Thread(
                target=self._portal_cm.__exit__, args=(None, None, None), daemon=True
            )
            stopper.start()
            stopper.join(timeout)


async def _awaited(coro: Coroutine[Any, Any, T]) -> T:
    return await coro


_LOADERS: dict[str, ProcessLoader] = {}
_LOCK = threading.Lock()
_OWNER_PID = os.getpid()


def loader_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The defaults with ``options`` on top."""
    return {**DEFAULT_LOADER_OPTIONS, **(options or {})}


def process_loader(options_given: Mapping[str, Any] | None = None) -> ProcessLoader:
    """This process's loader for these options (created on first use).

    ``options_given`` are :class:`~imageloader.ImageLoader` keyword arguments on top of
    :data:`DEFAULT_LOADER_OPTIONS`; they must be picklable to reach the workers.
    """
    global _OWNER_PID
    options = loader_options(options_given)
    key = repr(sorted(options.items()))
    with _LOCK:
        if os.getpid() != _OWNER_PID:
            # A forked child inherits the table but not the threads behind it.
            _LOADERS.clear()
            _OWNER_PID = os.getpid()
        loader = _LOADERS.get(key)
        if loader is None:
            loader = _LOADERS[key] = ProcessLoader(options)
        return loader


def close_process_loaders() -> int:
    """Close this process's loaders (runs at process exit too); returns how many."""
    with _LOCK:
        loaders = list(_LOADERS.values()) if os.getpid() == _OWNER_PID else []
        _LOADERS.clear()
    for loader in loaders:
        loader.close()
    return len(loaders)


def _register_exit_hook() -> None:
    # Closing a loader needs worker threads (asyncio.to_thread), and at interpreter
    # exit concurrent.futures refuses new ones once its own exit hook has run. Hooks
    # registered with threading._register_atexit run before that one (in reverse
    # order of registration), so the loaders close while threads can still start.
    # The fallback, plain atexit, can only close what needs no new thread.
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(close_process_loaders)
            return
    except RuntimeError:  # already shutting down
        pass
    atexit.register(close_process_loaders)


_register_exit_hook()


# -- tasks ---------------------------------------------------------------------------------
def probe(image_ids: tuple[str, ...], options: Mapping[str, Any]) -> tuple[tuple[int, ...], str]:
    """The series' frame shape (the first frame's) and dtype (a volume's: ``volume_dtype``
    of every frame's metadata; the first frame's where a scheme has no metadata loader)."""
    from ..volume import DTYPE_MODULES, volume_dtype  # on first use, as loader.py does

    pl = process_loader(options)
    loader = pl.loader

    async def work() -> tuple[Image, list[dict[str, Any]]]:
        image, _ = await asyncio.gather(
            loader.load_and_cache_image(image_ids[0], request_type="compute"),
            loader.load_metadata(image_ids, request_type="compute"),
        )
        return image, [loader.metadata.modules(i, DTYPE_MODULES) for i in image_ids]

    image, modules = pl.run(work())
    pixels = image.pixel_data
    if all(isinstance(m.get("imagePixelModule"), ImagePixelModule) for m in modules):
        dtype = volume_dtype(*modules, prescale=loader.default_options.prescale)
    else:  # nothing says before the frames load: the first one's, the others checked
        dtype = pixels.dtype
    return tuple(pixels.shape), dtype.str


def load_frames(
    image_ids: tuple[str, ...], options: Mapping[str, Any], shape: tuple[int, ...], dtype: str
) -> np.ndarray[Any, Any]:
    """The frames stacked in an array of ``dtype``; a frame of another shape, or whose
    values do not fit ``dtype`` (never wrapped, clipped or truncated), raises
    MetadataError naming it."""
    from ..volume import cast_problem

    pl = process_loader(options)

    async def load_all() -> list[Image]:
        loads = (pl.loader.load_image(i, request_type="compute") for i in image_ids)
        return list(await asyncio.gather(*loads))

    images = pl.run(load_all())
    out = np.empty((len(images), *shape), dtype=np.dtype(dtype))
    for index, image in enumerate(images):
        pixels = image.pixel_data
        if pixels.shape != shape:
            raise MetadataError(
                f"frame is {pixels.shape}, the series is {shape}: not one volume",
                image_id=image.image_id,
            )
        problem = cast_problem(pixels, out.dtype)
        if problem is not None:
            raise MetadataError(
                f"the {pixels.dtype} frame does not fit the {out.dtype} series: {problem} "
                "(load_series_dask(..., dtype=...) asks for a dtype that holds it)",
                image_id=image.image_id,
            )
        out[index] = pixels
    return out


def prefetch_batch(
    image_ids: tuple[str, ...], output: str | None, options: Mapping[str, Any]
) -> list[BatchResult]:
    pl = process_loader(options)
    loader = pl.loader

    async def work() -> list[BatchResult]:
        # The same loading and staging as a local prefetch (one frame's failure to
        # stage fails that frame, not the batch).
        writer = SeriesWriter(output) if output is not None else None
        return [settled async for settled in LocalBackend(loader).load(image_ids, writer)]

    return pl.run(work())


def finalize(output: str, series: str, format: str = "npy") -> WrittenSeries:
    return SeriesWriter(output, format=format).finalize(series)
