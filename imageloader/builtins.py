"""Registers the built-in schemes on an ImageLoader, explicitly (no import side effects).

Each loader module is imported only when its scheme is first used, so optional
dependencies (Pillow, nibabel) are needed only by those who load such images.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .image import Image
    from .loader import ImageLoader, LoadContext
    from .registry import ImageLoaderFunction

__all__ = ["BUILTIN_SCHEMES", "register_builtin_loaders"]

#: scheme → "module:function" of its loader coroutine.
BUILTIN_SCHEMES: dict[str, str] = {
    "dicomfile": ".dicom.dicomfile:load_dicomfile",
    "wadouri": ".dicom.wadouri:load_wadouri",
    "dicomweb": ".dicom.wadouri:load_wadouri",
    "wadors": ".dicom.wadors:load_wadors",
}


class _LazyLoader:
    """A loader that imports its module on first use."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._loader: ImageLoaderFunction | None = None

    async def __call__(self, image_id: str, ctx: LoadContext, /) -> Image:
        if self._loader is None:
            module, _, name = self.target.partition(":")
            self._loader = getattr(importlib.import_module(module, __package__), name)
        assert self._loader is not None
        return await self._loader(image_id, ctx)

    def __repr__(self) -> str:
        return f"<builtin loader {self.target}>"


def register_builtin_loaders(loader: ImageLoader) -> None:
    """Register every built-in scheme on ``loader``."""
    for scheme, target in BUILTIN_SCHEMES.items():
        loader.register_image_loader(scheme, _LazyLoader(target))
