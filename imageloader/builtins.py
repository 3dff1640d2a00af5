"""Registers the built-in schemes on an ImageLoader, explicitly (no import side effects).

Each loader module is imported only when its scheme is first used, so optional
dependencies (Pillow, nibabel) are needed only by those who load such images.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .context import LoadContext
    from .image import Image
    from .registry import ImageLoaderFunction, LoaderRegistry, MetadataLoaderFunction

__all__ = ["BUILTIN_METADATA", "BUILTIN_SCHEMES", "register_builtin_loaders"]

#: scheme → "module:function" of its loader coroutine.
BUILTIN_SCHEMES: dict[str, str] = {
    "dicomfile": ".dicom.dicomfile:load_dicomfile",
    "wadouri": ".dicom.wadouri:load_wadouri",
    "dicomweb": ".dicom.wadouri:load_wadouri",
    "wadors": ".dicom.wadors:load_wadors",
    "http": ".web:load_web_image",
    "https": ".web:load_web_image",
    "web": ".web:load_web_image",
    "nifti": ".nifti.loader:load_nifti",
}


#: scheme → "module:function" of its metadata loader (headers only, no pixels).
BUILTIN_METADATA: dict[str, str] = {
    "dicomfile": ".dicom.dicomfile:load_dicomfile_metadata",
    "wadouri": ".dicom.wadouri:load_wadouri_metadata",
    "dicomweb": ".dicom.wadouri:load_wadouri_metadata",
    "wadors": ".dicom.wadors:load_wadors_metadata",
    "nifti": ".nifti.loader:load_nifti_metadata",
}


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module, __package__), name)


class _LazyLoader:
    """A loader that imports its module on first use."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._loader: ImageLoaderFunction | None = None

    async def __call__(self, image_id: str, ctx: LoadContext, /) -> Image:
        if self._loader is None:
            self._loader = _resolve(self.target)
        assert self._loader is not None
        return await self._loader(image_id, ctx)

    def __repr__(self) -> str:
        return f"<builtin loader {self.target}>"


class _LazyMetadataLoader:
    """A metadata loader that imports its module on first use."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._loader: MetadataLoaderFunction | None = None

    async def __call__(self, image_id: str, ctx: LoadContext, /) -> None:
        if self._loader is None:
            self._loader = _resolve(self.target)
        assert self._loader is not None
        await self._loader(image_id, ctx)

    def __repr__(self) -> str:
        return f"<builtin metadata loader {self.target}>"


class Registrant(Protocol):
    """What registering needs of an :class:`~imageloader.ImageLoader` (which calls this)."""

    @property
    def registry(self) -> LoaderRegistry:
        """The loader's scheme registry."""
        ...

    def register_image_loader(self, scheme: str, loader: ImageLoaderFunction) -> None:
        """Serve imageIds of ``scheme`` with ``loader``."""
        ...


def register_builtin_loaders(loader: Registrant) -> None:
    """Register every built-in scheme (and its metadata loader) on ``loader``."""
    for scheme, target in BUILTIN_SCHEMES.items():
        loader.register_image_loader(scheme, _LazyLoader(target))
    for scheme, target in BUILTIN_METADATA.items():
        loader.registry.register_metadata(scheme, _LazyMetadataLoader(target))
