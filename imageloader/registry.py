"""Scheme → loader registry (Cornerstone's ``registerImageLoader``).

The scheme is the text before the first ``:`` of the imageId
(:func:`~imageloader.imageid.split_scheme`, importable from here too), matched
without regard to case, as URL schemes are, and with the aliases of
:data:`~imageloader.imageid.SCHEME_ALIASES` (``wado-rs`` is ``wadors``). A registry is
a plain object: each :class:`~imageloader.ImageLoader` owns one, and tests create
their own.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

from .errors import UnknownSchemeError
from .imageid import SCHEME_ALIASES, canonical_scheme, split_scheme

if TYPE_CHECKING:
    from .context import LoadContext
    from .image import Image

__all__ = ["ImageLoaderFunction", "LoaderRegistry", "MetadataLoaderFunction", "split_scheme"]


class ImageLoaderFunction(Protocol):
    """A loader: ``async def load(image_id, ctx) -> Image``."""

    def __call__(self, image_id: str, ctx: LoadContext, /) -> Awaitable[Image]: ...


class MetadataLoaderFunction(Protocol):
    """Registers an image's metadata modules without decoding its pixels.

    ``async def load_metadata(image_id, ctx) -> None``: fetches headers (a DICOM
    header, WADO-RS metadata) and fills ``ctx.metadata.store``.
    """

    def __call__(self, image_id: str, ctx: LoadContext, /) -> Awaitable[None]: ...


class LoaderRegistry:
    """Maps schemes to loader coroutines, with an optional fallback for unknown schemes.

    A scheme may also have a metadata loader, which volumes and bulk tools use to
    learn every image's geometry before decoding any pixels.
    """

    def __init__(self) -> None:
        self._loaders: dict[str, ImageLoaderFunction] = {}
        self._metadata: dict[str, MetadataLoaderFunction] = {}
        self._unknown: ImageLoaderFunction | None = None

    def register(self, scheme: str, loader: ImageLoaderFunction) -> None:
        """Serve imageIds of ``scheme`` with ``loader`` (replacing any earlier one).

        ``scheme`` is matched without regard to case; an alias (``wado-rs``) names
        the scheme it stands for.
        """
        if not callable(loader):
            raise TypeError("loader must be callable: async def load(image_id, ctx) -> Image")
        self._loaders[_checked(scheme)] = loader

    def register_metadata(self, scheme: str, loader: MetadataLoaderFunction) -> None:
        """Serve metadata-only requests for ``scheme`` with ``loader``."""
        self._metadata[_checked(scheme)] = loader

    def resolve_metadata(self, image_id: str) -> MetadataLoaderFunction | None:
        """The metadata loader for ``image_id``'s scheme, or None."""
        return self._metadata.get(split_scheme(image_id)[0])

    def unregister(self, scheme: str) -> ImageLoaderFunction | None:
        """Remove the loader of ``scheme``; returns it (or None)."""
        return self._loaders.pop(canonical_scheme(scheme), None)

    def register_unknown(self, loader: ImageLoaderFunction | None) -> ImageLoaderFunction | None:
        """Set the fallback for schemes with no loader; returns the previous fallback."""
        previous, self._unknown = self._unknown, loader
        return previous

    @property
    def schemes(self) -> frozenset[str]:
        """The registered schemes."""
        return frozenset(self._loaders)

    def resolve(self, image_id: str) -> ImageLoaderFunction:
        """The loader for ``image_id``, or :class:`UnknownSchemeError`."""
        scheme, _ = split_scheme(image_id)
        loader = self._loaders.get(scheme)
        if loader is not None:
            return loader
        if self._unknown is not None:
            return self._unknown
        raise UnknownSchemeError(scheme, image_id=image_id, known=self._names())

    def _names(self) -> list[str]:
        """Every name a registered scheme answers to: the schemes and their aliases."""
        aliases = [alias for alias, name in SCHEME_ALIASES.items() if name in self._loaders]
        return sorted([*self._loaders, *aliases])


def _checked(scheme: str) -> str:
    if not isinstance(scheme, str) or not scheme or ":" in scheme or scheme != scheme.strip():
        raise ValueError(f"invalid scheme {scheme!r}")
    return canonical_scheme(scheme)
