"""What a load gets, and what a loader is.

:class:`LoadContext` (what a loader coroutine gets besides the imageId),
:class:`LoadOptions` (the options that change its pixels), :class:`SchemeLoader`
(the object that serves a built-in scheme, with its own options and caches) and
:class:`LoaderServices`. Loaders (``dicom/``, ``web``, ``nifti/``, custom schemes)
and volumes sit below :mod:`imageloader.loader`, which imports them: they see their
:class:`~imageloader.ImageLoader` through :class:`LoaderServices`, a Protocol it
satisfies, never through the class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .cache import ImageCache
from .decode.params import DecodeOptions
from .errors import ImageLoaderError
from .events import EventBus
from .image import Image
from .metadata import MetadataRegistry
from .request_pool import RequestType, Ticket

if TYPE_CHECKING:
    from .decode.pool import DecodePool
    from .http import HttpClient
    from .limits import Limits
    from .security import AccessPolicy

__all__ = [
    "LoadContext",
    "LoadOptions",
    "LoaderServices",
    "MetadataSchemeLoader",
    "SchemeLoader",
]

#: Options that change the pixels a load produces (part of the in-flight key):
#: ``prescale`` applies the modality LUT (Cornerstone's ``preScale.enabled``),
#: ``use_rgba`` gives colour images as RGBA instead of RGB. The decode workers get
#: the same object, so it is one class with two names.
LoadOptions = DecodeOptions


@runtime_checkable
class SchemeLoader(Protocol):
    """A built-in scheme's loader: one object per ImageLoader, owning its state.

    It is made once per :class:`~imageloader.ImageLoader`, on the first use of one
    of its schemes, with that loader's :class:`LoaderServices` (limits, events,
    cache): its options and caches live on it, not in module globals, and
    ``aclose`` releases them when the ImageLoader closes. A custom scheme needs none
    of this: ``register_image_loader(scheme, coroutine_function)``.
    """

    async def load(self, image_id: str, ctx: LoadContext) -> Image:
        """Load one image."""
        ...

    async def aclose(self) -> None:
        """Release what it holds (cancel its own tasks, drop its caches)."""
        ...


@runtime_checkable
class MetadataSchemeLoader(SchemeLoader, Protocol):
    """A scheme loader that can also register an image's metadata without its pixels."""

    async def load_metadata(self, image_id: str, ctx: LoadContext) -> None:
        """Register the image's metadata modules (headers only, no pixel data)."""
        ...


class LoaderServices(Protocol):
    """What an :class:`~imageloader.ImageLoader` offers the loaders and volumes it runs.

    Its resources (created on first use), its built-in scheme loaders, and the two
    loads a volume needs: metadata first, then its images as they complete.
    """

    @property
    def events(self) -> EventBus:
        """The loader's event bus."""
        ...

    @property
    def cache(self) -> ImageCache:
        """The loader's image cache."""
        ...

    @property
    def metadata(self) -> MetadataRegistry:
        """The loader's metadata registry."""
        ...

    @property
    def default_options(self) -> LoadOptions:
        """The options of loads that ask for none."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the loader has closed."""
        ...

    @property
    def decode_pool(self) -> DecodePool:
        """The decode pool (started on first use)."""
        ...

    @property
    def http(self) -> HttpClient:
        """The HTTP client over the one shared aiohttp session."""
        ...

    @property
    def limits(self) -> Limits:
        """Size limits against hostile or broken input."""
        ...

    @property
    def access(self) -> AccessPolicy:
        """Which schemes, hosts and file roots this loader may touch."""
        ...

    def builtin_loader(self, scheme: str) -> SchemeLoader:
        """The built-in loader object of ``scheme`` (made on first use)."""
        ...

    def add_closer(self, closer: Callable[[], Any]) -> Callable[[], None]:
        """Run ``closer()`` when the loader closes; returns a function that takes it back."""
        ...

    async def load_metadata(
        self,
        image_ids: Iterable[str],
        *,
        request_type: RequestType | str = ...,
        concurrency: int = ...,
    ) -> None:
        """Make sure every imageId has its metadata modules, without decoding pixels."""
        ...

    def iter_images(
        self,
        image_ids: Iterable[str],
        *,
        request_type: RequestType | str = ...,
        priority: float = ...,
        cache: bool = ...,
        return_exceptions: bool = ...,
        decode_level: int = ...,
    ) -> AsyncIterator[Image | ImageLoaderError]:
        """Yield images as each completes (not in order)."""
        ...


@dataclass(slots=True)
class LoadContext:
    """What a loader coroutine gets besides the imageId.

    ``request_type`` and ``priority`` are those the load runs at (they may rise while
    it waits, when a more urgent caller joins); loaders pass them on to the decode
    pool. ``loader`` is the owning :class:`~imageloader.ImageLoader` (typed as the
    :class:`LoaderServices` it offers).
    """

    loader: LoaderServices
    image_id: str
    options: LoadOptions
    request_type: RequestType
    priority: float
    ticket: Ticket | None = None

    @property
    def metadata(self) -> MetadataRegistry:
        """The loader's metadata registry."""
        return self.loader.metadata

    @property
    def decode_pool(self) -> DecodePool:
        """The loader's decode pool (started on first use)."""
        return self.loader.decode_pool

    @property
    def http(self) -> HttpClient:
        """The loader's HTTP client over the one shared aiohttp session."""
        return self.loader.http

    @property
    def limits(self) -> Limits:
        """Size limits against hostile or broken input."""
        return self.loader.limits

    @property
    def access(self) -> AccessPolicy:
        """Which schemes, hosts and file roots this loader may touch."""
        return self.loader.access
