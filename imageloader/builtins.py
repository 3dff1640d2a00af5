"""The built-in schemes: one :class:`~imageloader.context.SchemeLoader` each, per ImageLoader.

An :class:`~imageloader.ImageLoader` holds one :class:`BuiltinLoaders`. A scheme's
loader object (``WadoRsLoader``, ``NiftiLoader`` ...) is made on the first use of
the scheme, with that ImageLoader's limits, events and cache, and owns its options
and caches until :meth:`BuiltinLoaders.aclose`. Its module is imported then too, so
optional dependencies (Pillow, nibabel) are needed only by those who load such
images. Registering (explicit, no import side effects) puts a forwarding coroutine
per scheme in the ImageLoader's registry, so a custom loader registered for a
scheme replaces the built-in one as any other would.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from .context import MetadataSchemeLoader, SchemeLoader
from .errors import LoaderClosedError
from .imageid import canonical_scheme

if TYPE_CHECKING:
    from .context import LoadContext, LoaderServices
    from .image import Image
    from .registry import LoaderRegistry

__all__ = ["BUILTIN_METADATA", "BUILTIN_SCHEMES", "BuiltinLoaders"]

#: scheme → "module:Class" of its loader; schemes naming one class share one object.
BUILTIN_SCHEMES: dict[str, str] = {
    "dicomfile": ".dicom.dicomfile:DicomFileLoader",
    "wadouri": ".dicom.wadouri:WadoUriLoader",
    "dicomweb": ".dicom.wadouri:WadoUriLoader",
    "wadors": ".dicom.wadors:WadoRsLoader",
    "http": ".web:WebLoader",
    "https": ".web:WebLoader",
    "web": ".web:WebLoader",
    "nifti": ".nifti.loader:NiftiLoader",
}

#: The schemes whose loader also reads metadata alone (headers, no pixels).
BUILTIN_METADATA: frozenset[str] = frozenset(
    {"dicomfile", "wadouri", "dicomweb", "wadors", "nifti"}
)


class BuiltinLoaders:
    """The built-in scheme loaders of one ImageLoader, each made on first use."""

    def __init__(self, services: LoaderServices) -> None:
        self._services = services
        self._made: dict[str, SchemeLoader] = {}  # "module:Class" -> its one object
        self._closed = False

    def get(self, scheme: str) -> SchemeLoader:
        """The loader object of ``scheme``; ValueError for a scheme not built in."""
        target = BUILTIN_SCHEMES.get(canonical_scheme(scheme))
        if target is None:
            raise ValueError(f"no built-in loader for scheme {scheme!r}")
        made = self._made.get(target)
        if made is None:
            if self._closed:
                raise LoaderClosedError("this ImageLoader is closed")
            module, _, name = target.partition(":")
            cls = getattr(importlib.import_module(module, __package__), name)
            made = self._made[target] = cls(self._services)
        return made

    def register(self, registry: LoaderRegistry) -> None:
        """Register every built-in scheme (and its metadata loader) in ``registry``."""
        for scheme in BUILTIN_SCHEMES:
            registry.register(scheme, functools.partial(self._load, scheme))
            if scheme in BUILTIN_METADATA:
                registry.register_metadata(scheme, functools.partial(self._load_metadata, scheme))

    async def _load(self, scheme: str, image_id: str, ctx: LoadContext, /) -> Image:
        return await self.get(scheme).load(image_id, ctx)

    async def _load_metadata(self, scheme: str, image_id: str, ctx: LoadContext, /) -> None:
        loader = self.get(scheme)
        assert isinstance(loader, MetadataSchemeLoader), loader
        await loader.load_metadata(image_id, ctx)

    async def aclose(self) -> None:
        """Close every loader made (in reverse order); none is made afterwards."""
        self._closed = True
        made, self._made = list(self._made.values()), {}
        for loader in reversed(made):
            await loader.aclose()
