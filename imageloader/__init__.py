"""imageloader: asyncio-native image loading, modeled on Cornerstone3D's image loaders.

::

    async with ImageLoader(max_web_workers=2) as loader:
        image = await loader.load_and_cache_image("dicomfile:/data/ct.dcm")

or, Cornerstone-style, through the default loader::

    image = await imageloader.load_image("wadors:https://pacs/.../frames/1")
    await imageloader.shutdown()
"""

import importlib
from typing import TYPE_CHECKING, Any

from . import errors, events
from .errors import ImageLoaderError
from .image import Image, PreScale

if TYPE_CHECKING:
    from . import dicomweb, geometry, integrations, metadata, nifti, output, render
    from ._default import (
        add_metadata_provider,
        cancel_load_image,
        get_default_loader,
        get_metadata,
        init,
        iter_images,
        load_and_cache_image,
        load_and_cache_images,
        load_image,
        register_image_loader,
        register_unknown_image_loader,
        shutdown,
    )
    from .cache import ImageCache
    from .context import LoadContext, LoadOptions
    from .http import HttpOptions
    from .limits import Limits
    from .loader import ImageLoader
    from .metadata import MetadataRegistry
    from .request_pool import RequestPool, RequestType
    from .security import AccessPolicy
    from .volume import Volume

# Imported on first use: decode workers import this package too, and must not pay
# for aiohttp and the loader machinery they never run.
_LAZY = {
    **dict.fromkeys(
        [
            "add_metadata_provider", "cancel_load_image", "get_default_loader", "get_metadata",
            "init", "iter_images", "load_and_cache_image", "load_and_cache_images", "load_image",
            "register_image_loader", "register_unknown_image_loader", "shutdown",
        ],
        "._default",
    ),
    "ImageCache": ".cache",
    "HttpOptions": ".http",
    "Limits": ".limits",
    "ImageLoader": ".loader",
    "LoadContext": ".context",
    "LoadOptions": ".context",
    "MetadataRegistry": ".metadata",
    "RequestPool": ".request_pool",
    "RequestType": ".request_pool",
    "AccessPolicy": ".security",
    "Volume": ".volume",
}  # fmt: skip

#: The public submodules, imported on first use too (``imageloader.dicomweb``);
#: ``errors`` and ``events`` are light and imported above.
_SUBMODULES = ("dicomweb", "geometry", "integrations", "metadata", "nifti", "output", "render")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)  # the import binds it here
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'imageloader' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__version__ = "0.1.0"

__all__ = [
    "AccessPolicy",
    "HttpOptions",
    "Image",
    "ImageCache",
    "ImageLoader",
    "ImageLoaderError",
    "Limits",
    "LoadContext",
    "LoadOptions",
    "MetadataRegistry",
    "PreScale",
    "RequestPool",
    "RequestType",
    "Volume",
    "__version__",
    "add_metadata_provider",
    "cancel_load_image",
    "dicomweb",
    "errors",
    "events",
    "geometry",
    "get_default_loader",
    "get_metadata",
    "init",
    "integrations",
    "iter_images",
    "load_and_cache_image",
    "load_and_cache_images",
    "load_image",
    "metadata",
    "nifti",
    "output",
    "register_image_loader",
    "register_unknown_image_loader",
    "render",
    "shutdown",
]
