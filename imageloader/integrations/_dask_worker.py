"""The worker side of the Dask integration: one ImageLoader per process, and the tasks.

Tasks are module-level functions (Dask ships them by reference). Each asks
:func:`process_loader` for its process's loader: created on first use on an event
loop in a daemon thread, shared by every Dask thread of the process, closed at
process exit (or by :func:`close_process_loaders`).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import numpy as np

from ..errors import ImageLoaderError, MetadataError
from ..image import Image
from ..loader import ImageLoader
from ..output import SeriesWriter, WrittenSeries, series_key

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

# (result per imageId) imageId, series staged into (or known), pixel bytes, error.
BatchResult = tuple[str, str | None, int, ImageLoaderError | None]


class ProcessLoader:
    """An ImageLoader on an event loop in a daemon thread; callable from any thread."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="imageloader-dask-loop", daemon=True
        )
        self._thread.start()
        self.loader: ImageLoader = self.run(self._open(dict(options)))

    @staticmethod
    async def _open(options: dict[str, Any]) -> ImageLoader:
        # Made inside its loop: the loader binds to the loop it is opened in.
        return await ImageLoader(**options).__aenter__()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loader's loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self, timeout: float = 30.0) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.loader.aclose(), self._loop).result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()


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
def probe(image_id: str, options: Mapping[str, Any]) -> tuple[tuple[int, ...], str]:
    pl = process_loader(options)
    image = pl.run(pl.loader.load_and_cache_image(image_id, request_type="compute"))
    return tuple(image.pixel_data.shape), image.pixel_data.dtype.str


def load_frames(
    image_ids: tuple[str, ...], options: Mapping[str, Any], shape: tuple[int, ...], dtype: str
) -> np.ndarray[Any, Any]:
    pl = process_loader(options)

    async def load_all() -> list[Image]:
        loads = (pl.loader.load_image(i, request_type="compute") for i in image_ids)
        return list(await asyncio.gather(*loads))

    images = pl.run(load_all())
    out = np.empty((len(images), *shape), dtype=np.dtype(dtype))
    for index, image in enumerate(images):
        if image.pixel_data.shape != shape:
            raise MetadataError(
                f"frame is {image.pixel_data.shape}, the series is {shape}: not one volume",
                image_id=image.image_id,
            )
        out[index] = image.pixel_data
    return out


def prefetch_batch(
    image_ids: tuple[str, ...], output: str | None, options: Mapping[str, Any]
) -> list[BatchResult]:
    pl = process_loader(options)
    loader = pl.loader

    async def work() -> list[BatchResult]:
        writer = SeriesWriter(output) if output is not None else None
        results: list[BatchResult] = []
        async for result in loader.iter_images(image_ids, cache=False, return_exceptions=True):
            if isinstance(result, Image):
                modules = loader.metadata.modules(result.image_id)
                series = series_key(modules)
                if writer is not None:
                    series = await asyncio.to_thread(writer.stage, result, modules)
                results.append((result.image_id, series, result.pixel_data.nbytes, None))
            else:
                image_id = result.image_id or "?"
                known = loader.metadata.modules(image_id, ("generalSeriesModule",))
                results.append((image_id, series_key(known) if known else None, 0, result))
        return results

    return pl.run(work())


def finalize(output: str, series: str) -> WrittenSeries:
    return SeriesWriter(output).finalize(series)
