"""imageloader: asyncio-native image loading, modeled on Cornerstone3D's image loaders.

::

    async with ImageLoader(max_web_workers=2) as loader:
        image = await loader.load_and_cache_image("dicomfile:/data/ct.dcm")

or, Cornerstone-style, through the default loader::

    image = await imageloader.load_image("wadors:https://pacs/.../frames/1")
    await imageloader.shutdown()
"""

from . import errors, events
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
from .errors import ImageLoaderError
from .image import Image, PreScale
from .limits import Limits
from .loader import ImageLoader, LoadContext, LoadOptions
from .metadata import MetadataRegistry
from .request_pool import RequestPool, RequestType
from .security import AccessPolicy

__version__ = "0.1.0"

__all__ = [
    "AccessPolicy",
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
    "__version__",
    "add_metadata_provider",
    "cancel_load_image",
    "errors",
    "events",
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
