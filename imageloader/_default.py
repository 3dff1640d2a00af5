"""Module-level functions over one default ImageLoader, as Cornerstone's API reads.

``imageloader.init(**options)`` creates it (or the first call creates one with the
defaults); ``await imageloader.shutdown()`` closes it. The default loader belongs
to the event loop it is first used in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
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

_default: ImageLoader | None = None


def init(**options: Any) -> ImageLoader:
    """Create the default loader with ``ImageLoader(**options)`` and return it.

    Call :func:`shutdown` first to replace an existing one.
    """
    global _default
    if _default is not None and not _default.closed:
        raise RuntimeError("imageloader is already initialised; await imageloader.shutdown() first")
    _default = ImageLoader(**options)
    return _default


def get_default_loader() -> ImageLoader:
    """The default loader, created with the defaults if :func:`init` was not called."""
    if _default is None or _default.closed:
        return init()
    return _default


async def shutdown() -> None:
    """Close the default loader (cancel loads, stop workers, close the session)."""
    global _default
    loader, _default = _default, None
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
    """:meth:`ImageLoader.register_image_loader` on the default loader."""
    get_default_loader().register_image_loader(scheme, loader)


def register_unknown_image_loader(loader: ImageLoaderFunction | None) -> ImageLoaderFunction | None:
    """:meth:`ImageLoader.register_unknown_image_loader` on the default loader."""
    return get_default_loader().register_unknown_image_loader(loader)


def add_metadata_provider(provider: MetadataProvider, priority: float = 0) -> None:
    """Add a metadata provider to the default loader."""
    get_default_loader().metadata.add_provider(provider, priority)


def get_metadata(module_type: str, image_id: str) -> Any:
    """``metadata.get`` on the default loader."""
    return get_default_loader().metadata.get(module_type, image_id)
