"""``ImageLoader``: the one object that owns the registry, cache, pools, session and events.

One request flows: cache hit → return; already in flight → await the same task;
otherwise a task takes a request-pool slot, resolves the scheme's loader, runs it
(fetch over the shared session, decode in the decode pool) and caches the Image.
Loaders get a :class:`~imageloader.context.LoadContext` (defined in :mod:`.context`
with :class:`LoadOptions`; both importable from here too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from . import events as ev
from .builtins import BuiltinLoaders
from .cache import ImageCache
from .context import LoadContext, LoadOptions, SchemeLoader
from .errors import (
    CacheFullError,
    ImageLoaderError,
    LoadCancelledError,
    LoaderClosedError,
    LoadFailedError,
)
from .image import Image
from .inflight import Flight
from .levels import at_level, check_level, level_key
from .limits import Limits
from .metadata import MetadataRegistry
from .registry import ImageLoaderFunction, LoaderRegistry, split_scheme
from .request_pool import RequestPool, RequestType

if TYPE_CHECKING:
    import aiohttp
    import numpy.typing as npt

    from .decode.pool import DecodePool
    from .dicom.memoryfiles import MemoryFiles
    from .http import HttpClient, HttpOptions
    from .security import AccessPolicy
    from .volume import Volume, VolumeStage

__all__ = ["ImageLoader", "LoadContext", "LoadOptions"]

logger = logging.getLogger("imageloader")

DEFAULT_CACHE_SIZE = 1 << 30  # Cornerstone's default: 1 GiB
#: After an interactive load, background decodes stay out of the workers' queues this
#: long: the next interactive load of a burst (a user scrolling) is likely coming.
URGENT_HOLD_SECONDS = 0.5


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class _Load:
    """One load in flight: its context, whether a caller wants it cached, its task."""

    __slots__ = ("cache", "ctx", "flight")

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx
        self.cache = False
        self.flight: Flight[Image]


class ImageLoader:
    """Loads images by imageId: scheme dispatch, request pool, cache, decode pool, events.

    Use as an async context manager (or call :meth:`aclose`)::

        async with ImageLoader(max_web_workers=2) as loader:
            image = await loader.load_and_cache_image("dicomfile:/data/ct.dcm")

    Entering starts nothing heavy: decode workers and the HTTP session start on
    first use. Leaving cancels loads in flight, closes the session (unless it was
    passed in) and stops every worker process.
    """

    def __init__(
        self,
        *,
        max_web_workers: int | None = None,
        max_cache_size_bytes: int = DEFAULT_CACHE_SIZE,
        request_limits: Mapping[RequestType | str, int] | None = None,
        max_concurrent_requests: int | None = None,
        starvation_seconds: float = 5.0,
        prescale: bool = True,
        use_rgba: bool = False,
        session: aiohttp.ClientSession | None = None,
        http: HttpOptions | None = None,
        limits: Limits | None = None,
        access: AccessPolicy | None = None,
        decode_timeout: float | None = 60.0,
        builtin_loaders: bool = True,
    ) -> None:
        self.events = ev.EventBus()
        self.cache = ImageCache(max_cache_size_bytes, self.events)
        self._limits = limits = limits if limits is not None else Limits()
        self.metadata = MetadataRegistry(max_store_bytes=limits.max_metadata_bytes)
        self.registry = LoaderRegistry()
        self.request_pool = RequestPool(
            request_limits, capacity=max_concurrent_requests, starvation_seconds=starvation_seconds
        )
        self.default_options = LoadOptions(prescale=prescale, use_rgba=use_rgba)
        self.max_web_workers = max_web_workers
        self.decode_timeout = decode_timeout
        self._session = session
        self._http_options = http
        self._access = access
        self._decode_pool: DecodePool | None = None
        self._http: HttpClient | None = None
        self._state = _State.UNOPENED
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: dict[tuple[str, LoadOptions], _Load] = {}
        self._closers: list[Callable[[], Any]] = []
        self._builtins = BuiltinLoaders(self)
        if builtin_loaders:
            self._builtins.register(self.registry)

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> ImageLoader:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has run."""
        return self._state is _State.CLOSED

    def _open(self) -> asyncio.AbstractEventLoop:
        if self._state is _State.CLOSED:
            raise LoaderClosedError("this ImageLoader is closed")
        loop = asyncio.get_running_loop()
        if self._state is _State.UNOPENED:
            self._state = _State.OPEN
            self._loop = loop
        elif self._loop is not loop:
            raise LoaderClosedError(
                "this ImageLoader belongs to another event loop; create one per loop"
            )
        return loop

    def builtin_loader(self, scheme: str) -> SchemeLoader:
        """The built-in loader object serving ``scheme`` (made on first use).

        It owns the scheme's options and caches, e.g.
        ``loader.builtin_loader("wadors").options``; one object serves the schemes
        of one kind (``http``, ``https`` and ``web``). Raises ValueError for a
        scheme that is not built in.
        """
        return self._builtins.get(scheme)

    @property
    def files(self) -> MemoryFiles:
        """DICOM Part 10 files held in memory (Cornerstone's ``wadouri.fileManager``).

        ``image_id = loader.files.add(data)`` takes ``bytes``, ``bytearray``,
        ``memoryview`` or a binary file object and returns ``dicomfile:N``; its
        frames are ``f"{image_id}?frame={n}"`` (1-based) and load like any
        ``dicomfile:`` id. ``loader.files.remove(image_id)`` releases it (and its
        cached frames). Bounded by ``Limits.max_files_bytes``.
        """
        from .dicom.dicomfile import DicomFileLoader

        dicomfile = self._builtins.get("dicomfile")
        assert isinstance(dicomfile, DicomFileLoader), dicomfile
        return dicomfile.files

    def add_closer(self, closer: Callable[[], Any]) -> Callable[[], None]:
        """Run ``closer()`` (sync, or returning an awaitable) when the loader closes.

        Returns a function that takes the closer back (a volume done streaming needs
        none: a long-lived loader would otherwise collect one per volume).
        """
        self._closers.append(closer)

        def forget() -> None:
            if closer in self._closers:
                self._closers.remove(closer)

        return forget

    async def aclose(self) -> None:
        """Cancel loads in flight, stop workers, close the session. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        tasks = [load.flight.task for load in self._inflight.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()
        try:
            for closer in reversed(self._closers):
                result = closer()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            await self._builtins.aclose()
            if self._http is not None:
                await self._http.aclose()
            if self._decode_pool is not None:
                await self._decode_pool.aclose()
        finally:
            self.events.close()

    close = aclose

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_state", None) is _State.OPEN:
            _warn(
                f"unclosed {self!r}: use 'async with ImageLoader()' or 'await loader.aclose()'",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        return f"<ImageLoader {self._state.value} cache={self.cache.size_bytes}B>"

    # -- owned resources (created on first use) ----------------------------------------
    @property
    def decode_pool(self) -> DecodePool:
        """The decode pool (``max_web_workers`` processes, started on demand)."""
        if self._decode_pool is None:
            if self._state is _State.CLOSED:
                raise LoaderClosedError("this ImageLoader is closed")
            from .decode.pool import DecodePool

            self._decode_pool = DecodePool(self.max_web_workers, task_timeout=self.decode_timeout)
            pool = self.request_pool
            self._decode_pool.urgent = lambda: pool.active_within(
                RequestType.INTERACTION, URGENT_HOLD_SECONDS
            )
        return self._decode_pool

    @property
    def http(self) -> HttpClient:
        """The HTTP client over the one shared aiohttp session (created on first request)."""
        if self._http is None:
            if self._state is _State.CLOSED:
                raise LoaderClosedError("this ImageLoader is closed")
            from .http import HttpClient

            self._http = HttpClient(
                self._http_options, session=self._session, limits=self.limits, access=self.access
            )
        return self._http

    @property
    def limits(self) -> Limits:
        """Limits against hostile input (response bytes, pixels, frames) and on held state."""
        return self._limits

    @property
    def access(self) -> AccessPolicy:
        """Allowed schemes, hosts and file roots (everything, unless configured)."""
        if self._access is None:
            from .security import AccessPolicy

            self._access = AccessPolicy()
        return self._access

    # -- registry ----------------------------------------------------------------------
    def register_image_loader(self, scheme: str, loader: ImageLoaderFunction) -> None:
        """Serve imageIds of ``scheme`` with ``async def loader(image_id, ctx) -> Image``."""
        self.registry.register(scheme, loader)

    def register_unknown_image_loader(
        self, loader: ImageLoaderFunction | None
    ) -> ImageLoaderFunction | None:
        """Set the loader for schemes with none; returns the previous one."""
        return self.registry.register_unknown(loader)

    # -- loading -----------------------------------------------------------------------
    async def load_image(
        self,
        image_id: str,
        *,
        request_type: RequestType | str = RequestType.INTERACTION,
        priority: float = 0,
        prescale: bool | None = None,
        use_rgba: bool | None = None,
        decode_level: int = 0,
    ) -> Image:
        """Load an image without caching it (a cached or in-flight entry is reused).

        ``decode_level`` ``n`` gives the frame at 1/2ⁿ of its rows and columns
        (Cornerstone's ``decodeLevel``; :mod:`imageloader.decode.reduce`): a cached
        image of that level, else one downsampled from the cached full-size image,
        else decoded at that level.
        """
        return await self._load(
            image_id, request_type, priority, prescale, use_rgba, cache=False, level=decode_level
        )

    async def load_and_cache_image(
        self,
        image_id: str,
        *,
        request_type: RequestType | str = RequestType.INTERACTION,
        priority: float = 0,
        prescale: bool | None = None,
        use_rgba: bool | None = None,
        decode_level: int = 0,
    ) -> Image:
        """Load an image and keep it in the cache.

        Options that differ from the loader's defaults (``prescale``, ``use_rgba``)
        give a different image, which is loaded but neither read from nor put in the
        cache (the cache holds one image per imageId). Each ``decode_level`` is
        cached under a key of its own, :func:`level_key` (``imageId#decodeLevel=n``),
        within the same byte bound; a cached full-size image serves every level
        without decoding.
        """
        return await self._load(
            image_id, request_type, priority, prescale, use_rgba, cache=True, level=decode_level
        )

    @overload
    async def load_and_cache_images(
        self,
        image_ids: Iterable[str],
        *,
        request_type: RequestType | str = ...,
        priority: float = ...,
        return_exceptions: Literal[False] = ...,
        decode_level: int = ...,
    ) -> list[Image]: ...

    @overload
    async def load_and_cache_images(
        self,
        image_ids: Iterable[str],
        *,
        request_type: RequestType | str = ...,
        priority: float = ...,
        return_exceptions: Literal[True],
        decode_level: int = ...,
    ) -> list[Image | ImageLoaderError]: ...

    async def load_and_cache_images(
        self,
        image_ids: Iterable[str],
        *,
        request_type: RequestType | str = RequestType.PREFETCH,
        priority: float = 0,
        return_exceptions: bool = False,
        decode_level: int = 0,
    ) -> list[Image] | list[Image | ImageLoaderError]:
        """Load and cache many images; the list is in the order given.

        The first failure cancels the rest and is raised, unless
        ``return_exceptions`` puts each error in its image's place instead.
        ``decode_level``: as for :meth:`load_and_cache_image`.
        """
        ids = list(image_ids)
        results: list[Image | ImageLoaderError | None] = [None] * len(ids)
        many = self._run_many(ids, request_type, priority, return_exceptions, level=decode_level)
        async for index, result in many:
            results[index] = result
        return results  # type: ignore[return-value]

    async def iter_images(
        self,
        image_ids: Iterable[str],
        *,
        request_type: RequestType | str = RequestType.PREFETCH,
        priority: float = 0,
        cache: bool = True,
        return_exceptions: bool = False,
        decode_level: int = 0,
    ) -> AsyncIterator[Image | ImageLoaderError]:
        """Yield images as each completes (not in order).

        The first failure cancels the rest and is raised, unless
        ``return_exceptions`` yields the error (which names its imageId) instead.
        Leaving the loop early cancels the loads still running. ``decode_level``:
        as for :meth:`load_and_cache_image`.
        """
        async for _, result in self._run_many(
            list(image_ids),
            request_type,
            priority,
            return_exceptions,
            cache=cache,
            level=decode_level,
        ):
            yield result

    def iter_image_stages(
        self,
        image_id: str,
        *,
        request_type: RequestType | str = RequestType.INTERACTION,
        priority: float = 0,
        levels: Sequence[int] = (2,),
        range_bytes: int | None = None,
    ) -> AsyncIterator[Image]:
        """Successively better Images of one frame as its bytes arrive; the last is the
        full frame, cached (see :mod:`imageloader.progressive`)."""
        from .progressive import iter_image_stages

        self._open()
        return iter_image_stages(
            self,
            image_id,
            request_type=request_type,
            priority=priority,
            levels=levels,
            range_bytes=range_bytes,
        )

    async def _run_many(
        self,
        ids: Sequence[str],
        request_type: RequestType | str,
        priority: float,
        return_exceptions: bool,
        *,
        cache: bool = True,
        level: int = 0,
    ) -> AsyncIterator[tuple[int, Image | ImageLoaderError]]:
        check_level(level)
        # A sliding window of tasks: enough to keep every slot busy, without one task
        # per imageId for a 100,000-image prefetch.
        window = max(2 * self.request_pool.capacity, 8)
        pending: dict[asyncio.Task[Image], int] = {}
        position = 0
        # Finished tasks, in the order they finished: O(1) a completion, where
        # asyncio.wait adds and removes a callback on every pending task each time.
        finished: asyncio.Queue[asyncio.Task[Image]] = asyncio.Queue()

        def refill() -> None:
            nonlocal position
            while position < len(ids) and len(pending) < window:
                coro = self._load(
                    ids[position], request_type, priority, None, None, cache=cache, level=level
                )
                task = asyncio.ensure_future(coro)
                task.add_done_callback(finished.put_nowait)
                pending[task] = position
                position += 1

        try:
            refill()
            while pending:
                done = [await finished.get()]
                while not finished.empty():
                    done.append(finished.get_nowait())
                for task in done:
                    index = pending.pop(task)
                    exc = (
                        task.exception()
                        if not task.cancelled()
                        else LoadCancelledError("load was cancelled", image_id=ids[index])
                    )
                    if exc is None:
                        yield index, task.result()
                    elif return_exceptions and isinstance(exc, ImageLoaderError):
                        yield index, exc
                    else:
                        raise exc
                refill()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def load_metadata(
        self,
        image_ids: Iterable[str],
        *,
        request_type: RequestType | str = RequestType.PREFETCH,
        concurrency: int = 16,
    ) -> None:
        """Make sure every imageId has its metadata modules, without decoding pixels.

        Uses each scheme's metadata loader (a DICOM header, WADO-RS metadata) for the
        imageIds whose ``imagePixelModule`` or ``imagePlaneModule`` is unknown. The
        first failure is raised; schemes without a metadata loader are left as they are.
        """
        self._open()
        rtype = RequestType(request_type)
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(image_id: str) -> None:
            known = self.metadata.modules(image_id, ("imagePixelModule", "imagePlaneModule"))
            if len(known) == 2:
                return
            load = self.registry.resolve_metadata(image_id)
            if load is None:
                return
            async with gate:
                await load(image_id, LoadContext(self, image_id, self.default_options, rtype, 0))

        ids = list(image_ids)
        for image_id in ids:
            split_scheme(image_id)
        tasks = [asyncio.ensure_future(one(image_id)) for image_id in ids]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def create_and_cache_volume(
        self,
        volume_id: str,
        image_ids: Sequence[str],
        *,
        request_type: RequestType | str = RequestType.PREFETCH,
        priority: float = 0,
        dtype: npt.DTypeLike | None = None,
        stages: str | Sequence[VolumeStage] | None = None,
    ) -> Volume:
        """Allocate and cache a volume at once; its slices stream in (see :mod:`.volume`).

        The volume has the dtype its slices decode to (int16 for a CT, float32 where
        the modality LUT has fractions), from their metadata; ``dtype`` asks for
        another, into which a slice is copied only if its values fit. ``stages``
        (``"interleaved"``, or :class:`~imageloader.volume.VolumeStage` s) loads the
        slices in stages, as Cornerstone's progressive retrieve.
        """
        from .volume import create_and_cache_volume

        self._open()
        return await create_and_cache_volume(
            self,
            volume_id,
            image_ids,
            request_type=request_type,
            priority=priority,
            dtype=dtype,
            stages=stages,
        )

    def cancel_load_image(self, image_id: str) -> bool:
        """Cancel the load of ``image_id`` in flight; its awaiters get LoadCancelledError.

        Returns whether a load was in flight.
        """
        found = False
        for (flight_id, _), load in list(self._inflight.items()):
            if flight_id == image_id and not load.flight.done():
                load.flight.task.cancel()
                found = True
        return found

    def is_loading(self, image_id: str) -> bool:
        """Whether a load of ``image_id`` is in flight."""
        return any(key[0] == image_id for key in self._inflight)

    @property
    def in_flight(self) -> int:
        """Loads in flight (each may have many awaiters)."""
        return len(self._inflight)

    async def _load(
        self,
        image_id: str,
        request_type: RequestType | str,
        priority: float,
        prescale: bool | None,
        use_rgba: bool | None,
        *,
        cache: bool,
        level: int = 0,
    ) -> Image:
        self._open()
        options = self.default_options
        check_level(level)
        if (prescale is not None and prescale != options.prescale) or (
            use_rgba is not None and use_rgba != options.use_rgba
        ):
            options = LoadOptions(
                prescale=options.prescale if prescale is None else prescale,
                use_rgba=options.use_rgba if use_rgba is None else use_rgba,
            )
        cacheable = options is self.default_options
        if level:
            options = dataclasses.replace(options, decode_level=level)
        if cacheable and isinstance(image_id, str):
            image = self.cache.get_image(level_key(image_id, level))
            if image is not None:
                return image
            full = self.cache.get_image(image_id) if level else None
            if full is not None:
                # A lower level of a cached image: downsampled, not decoded again.
                image = await asyncio.to_thread(at_level, full, level)
                if cache:
                    self._cache_put(image, level)
                self.events.emit(ev.IMAGE_LOADED, image_id, image=image)
                return image
        rtype = RequestType(request_type)
        key = (image_id, options)
        load = self._inflight.get(key)
        if load is None or load.flight.done():
            try:
                split_scheme(image_id)
                if self._access is not None:
                    self._access.check_scheme(image_id)
                self.registry.resolve(image_id)
            except ImageLoaderError as exc:
                self.events.emit(ev.IMAGE_LOAD_FAILED, str(image_id), error=exc)
                raise
            load = _Load(LoadContext(self, image_id, options, rtype, priority))
            load.flight = Flight(self._run(key, load), name=f"imageloader:{image_id[:200]}")
            load.flight.task.add_done_callback(functools.partial(self._settled, key, load))
            self._inflight[key] = load
        else:
            self._raise_priority(load, rtype, priority)
        if cache and cacheable:
            load.cache = True
        task = load.flight.task
        try:
            return await load.flight.join()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                # The load was cancelled, not this caller: say why, as an error.
                if self._state is _State.CLOSED:
                    raise LoaderClosedError(
                        "the ImageLoader closed during the load", image_id=image_id
                    ) from None
                raise LoadCancelledError("load was cancelled", image_id=image_id) from None
            raise

    def _cache_put(self, image: Image, level: int) -> None:
        try:
            self.cache.put_image(image, key=level_key(image.image_id, level))
        except CacheFullError as exc:
            # The load succeeded: return the image uncached rather than fail it.
            logger.warning("%s; returned uncached", exc)
            self.events.emit(ev.IMAGE_CACHE_FULL, image.image_id, image=image, error=exc)

    def _settled(self, key: tuple[str, LoadOptions], load: _Load, _: asyncio.Task[Image]) -> None:
        # Also reached by a task cancelled before it ever ran (its finally never runs).
        if self._inflight.get(key) is load:
            del self._inflight[key]

    def _raise_priority(self, load: _Load, rtype: RequestType, priority: float) -> None:
        ctx = load.ctx
        if (rtype.rank, priority) < (ctx.request_type.rank, ctx.priority):
            ctx.request_type, ctx.priority = rtype, priority
            if ctx.ticket is not None:
                self.request_pool.reprioritize(ctx.ticket, rtype, priority)

    async def _run(self, key: tuple[str, LoadOptions], load: _Load) -> Image:
        image_id = key[0]
        ctx = load.ctx
        started = time.perf_counter()
        try:
            try:
                ctx.ticket = self.request_pool.enqueue(ctx.request_type, ctx.priority)
                try:
                    await self.request_pool.wait(ctx.ticket)
                    loader = self.registry.resolve(image_id)
                    image = await loader(image_id, ctx)
                finally:
                    self.request_pool.release(ctx.ticket)
                if not isinstance(image, Image):
                    raise LoadFailedError(
                        f"the {split_scheme(image_id)[0]!r} loader returned "
                        f"{type(image).__name__}, not an Image",
                        image_id=image_id,
                    )
            except asyncio.CancelledError:
                raise
            except ImageLoaderError as exc:
                if exc.image_id != image_id:
                    # Raised where the imageId is unknown (the decode pool), or for the
                    # load that shared its fetch (frames of one object): name this one.
                    raise exc.for_image(image_id) from exc.__cause__
                raise
            except Exception as exc:
                raise LoadFailedError(
                    f"loader failed: {type(exc).__name__}: {exc}", image_id=image_id
                ) from exc
            image.load_time_ms = (time.perf_counter() - started) * 1000.0
            if load.cache:
                self._cache_put(image, key[1].decode_level)
            self.events.emit(ev.IMAGE_LOADED, image_id, image=image)
            return image
        except ImageLoaderError as exc:
            self.events.emit(ev.IMAGE_LOAD_FAILED, image_id, error=exc)
            raise
        finally:
            if self._inflight.get(key) is load:
                del self._inflight[key]
