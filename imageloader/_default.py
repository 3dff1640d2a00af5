"""Module-level functions over a default ImageLoader, as Cornerstone's API reads.

``imageloader.init(**options)`` sets the default loader's options (and creates it);
without it the first call creates one with the defaults. An ``ImageLoader`` belongs to
one event loop, and scripts, notebooks and test suites run many (``asyncio.run`` twice),
so there is one default loader per event loop: each is created on first use in its
loop, from the options of ``init`` and every ``register_*``/``add_metadata_provider``
made through these functions, and is closed with its loop (when the loop shuts down its
async generators, as ``asyncio.run`` does) or by ``await imageloader.shutdown()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ImageLoaderError
from .image import Image
from .loader import ImageLoader
from .metadata import MetadataProvider
from .registry import ImageLoaderFunction

__all__ = [
    "add_metadata_provider",
    "cancel_load_image",
    "get_default_loader",
    "get_metadata",
    "init",
    "iter_images",
    "load_and_cache_image",
    "load_and_cache_images",
    "load_image",
    "register_image_loader",
    "register_unknown_image_loader",
    "shutdown",
]


@dataclass
class _Setup:
    """What every default loader is made with: ``init``'s options and the registrations."""

    options: dict[str, Any] = field(default_factory=dict)
    loaders: dict[str, ImageLoaderFunction] = field(default_factory=dict)
    unknown: ImageLoaderFunction | None = None
    providers: list[tuple[MetadataProvider, float]] = field(default_factory=list)

    def make(self) -> ImageLoader:
        loader = ImageLoader(**self.options)
        for scheme, function in self.loaders.items():
            loader.register_image_loader(scheme, function)
        if self.unknown is not None:
            loader.register_unknown_image_loader(self.unknown)
        for provider, priority in self.providers:
            loader.metadata.add_provider(provider, priority)
        return loader


_setup = _Setup()
#: A loader made outside any event loop (``init()`` at start-up): the first loop adopts it.
_pending: ImageLoader | None = None
#: The default loader of each running loop, and the async generator that closes it.
_by_loop: dict[asyncio.AbstractEventLoop, tuple[ImageLoader, AsyncGenerator[None, None]]] = {}


async def _closes_with_loop(
    loop: asyncio.AbstractEventLoop, loader: ImageLoader
) -> AsyncGenerator[None, None]:
    """Suspended for the loop's life; the loop's ``shutdown_asyncgens()`` closes the loader.

    Whoever retires an entry earlier (:func:`shutdown`, a closed loop) removes it from
    ``_by_loop`` first, so this finishes without awaiting anything.
    """
    try:
        yield
    finally:
        if _by_loop.get(loop, (None,))[0] is loader:
            del _by_loop[loop]
            if not loop.is_closed():
                await loader.aclose()


def _retire(loop: asyncio.AbstractEventLoop) -> ImageLoader | None:
    """Forget ``loop``'s default loader and finish its lifetime generator; return the loader."""
    entry = _by_loop.pop(loop, None)
    if entry is None:
        return None
    with contextlib.suppress(StopIteration, StopAsyncIteration):
        entry[1].aclose().send(None)  # awaits nothing now
    return entry[0]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _current() -> ImageLoader | None:
    """The live default loader of the running loop, or the one waiting to be adopted."""
    loop = _running_loop()
    entry = _by_loop.get(loop) if loop is not None else None
    if entry is not None and not entry[0].closed:
        return entry[0]
    if _pending is not None and not _pending.closed:
        return _pending
    return None


def _live() -> list[ImageLoader]:
    loaders = [loader for loader, _ in _by_loop.values() if not loader.closed]
    if _pending is not None and not _pending.closed:
        loaders.append(_pending)
    return loaders


def init(**options: Any) -> ImageLoader:
    """Set the default loaders' options, create the running loop's one and return it.

    Call :func:`shutdown` first to replace an existing one.
    """
    if _current() is not None:
        raise RuntimeError("imageloader is already initialised; await imageloader.shutdown() first")
    _setup.options = dict(options)
    return get_default_loader()


def get_default_loader() -> ImageLoader:
    """The running loop's default loader, created (from :func:`init`'s options) if needed.

    Outside any event loop the loader made is adopted by the first loop that uses it.
    """
    global _pending
    loop = _running_loop()
    if loop is None:
        if _pending is None or _pending.closed:
            _pending = _setup.make()
        return _pending
    entry = _by_loop.get(loop)
    if entry is not None and not entry[0].closed:
        return entry[0]
    _retire(loop)
    for other in [other for other in _by_loop if other.is_closed()]:
        # Closed without shutting down its async generators: its resources went with it.
        _retire(other)
    if _pending is not None and not _pending.closed:
        loader, _pending = _pending, None
    else:
        loader = _setup.make()
    lifetime = _closes_with_loop(loop, loader)
    _by_loop[loop] = (loader, lifetime)
    with contextlib.suppress(StopIteration, StopAsyncIteration):
        lifetime.asend(None).send(None)  # the loop tracks it now
    return loader


async def shutdown() -> None:
    """Close the running loop's default loader and forget ``init``'s options and registrations.

    The next call creates a fresh default loader with the defaults.
    """
    global _pending, _setup
    loop = _running_loop()
    loaders = [_retire(loop) if loop is not None else None, _pending]
    _pending = None
    _setup = _Setup()
    for loader in loaders:
        if loader is not None:
            await loader.aclose()


async def load_image(image_id: str, **options: Any) -> Image:
    """:meth:`ImageLoader.load_image` on the default loader."""
    return await get_default_loader().load_image(image_id, **options)


async def load_and_cache_image(image_id: str, **options: Any) -> Image:
    """:meth:`ImageLoader.load_and_cache_image` on the default loader."""
    return await get_default_loader().load_and_cache_image(image_id, **options)


async def load_and_cache_images(image_ids: Iterable[str], **options: Any) -> list[Any]:
    """:meth:`ImageLoader.load_and_cache_images` on the default loader."""
    images: list[Any] = await get_default_loader().load_and_cache_images(image_ids, **options)
    return images


def iter_images(
    image_ids: Iterable[str], **options: Any
) -> AsyncIterator[Image | ImageLoaderError]:
    """:meth:`ImageLoader.iter_images` on the default loader."""
    return get_default_loader().iter_images(image_ids, **options)


def cancel_load_image(image_id: str) -> bool:
    """:meth:`ImageLoader.cancel_load_image` on the default loader."""
    return get_default_loader().cancel_load_image(image_id)


def register_image_loader(scheme: str, loader: ImageLoaderFunction) -> None:
    """:meth:`ImageLoader.register_image_loader` on every default loader, now and later."""
    get_default_loader()  # made before the change is recorded, so it gets it once
    _setup.loaders[scheme] = loader
    for live in _live():
        live.register_image_loader(scheme, loader)


def register_unknown_image_loader(loader: ImageLoaderFunction | None) -> ImageLoaderFunction | None:
    """:meth:`ImageLoader.register_unknown_image_loader` on every default loader."""
    current = get_default_loader()
    previous = current.register_unknown_image_loader(loader)
    _setup.unknown = loader
    for live in _live():
        if live is not current:
            live.register_unknown_image_loader(loader)
    return previous


def add_metadata_provider(provider: MetadataProvider, priority: float = 0) -> None:
    """Add a metadata provider to every default loader, now and later."""
    get_default_loader()  # made before the change is recorded, so it gets it once
    _setup.providers.append((provider, priority))
    for live in _live():
        live.metadata.add_provider(provider, priority)


def get_metadata(module_type: str, image_id: str) -> Any:
    """``metadata.get`` on the default loader."""
    return get_default_loader().metadata.get(module_type, image_id)
