"""Built-in scheme loaders: one object per kind and ImageLoader, made on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imageloader import ImageLoader
from imageloader.builtins import BUILTIN_METADATA, BUILTIN_SCHEMES
from imageloader.context import MetadataSchemeLoader, SchemeLoader
from imageloader.dicom.wadors import WadoRsLoader, wadors_options
from imageloader.errors import LoaderClosedError


async def test_one_object_per_kind_and_loader() -> None:
    async with ImageLoader(max_web_workers=0) as loader, ImageLoader(max_web_workers=0) as other:
        for scheme in BUILTIN_SCHEMES:
            made = loader.builtin_loader(scheme)
            assert isinstance(made, SchemeLoader)
            assert made is loader.builtin_loader(scheme)
            assert made is not other.builtin_loader(scheme)
            assert isinstance(made, MetadataSchemeLoader) == (scheme in BUILTIN_METADATA)
        assert loader.builtin_loader("wadouri") is loader.builtin_loader("dicomweb")
        assert loader.builtin_loader("http") is loader.builtin_loader("web")
        with pytest.raises(ValueError, match="no built-in loader"):
            loader.builtin_loader("custom")


async def test_wadors_options_are_each_loaders_own() -> None:
    async with (
        ImageLoader(max_web_workers=0) as loader,
        ImageLoader(max_web_workers=0, builtin_loaders=False) as bare,
    ):
        wadors_options(loader).batch_frames = False
        wadors = loader.builtin_loader("wadors")
        assert isinstance(wadors, WadoRsLoader) and wadors.options.batch_frames is False
        assert wadors_options(bare).batch_frames is True


async def test_none_is_made_once_the_loader_closes() -> None:
    async with ImageLoader(max_web_workers=0) as loader:
        loader.builtin_loader("dicomfile")
    with pytest.raises(LoaderClosedError):
        loader.builtin_loader("dicomfile")


def test_a_schemes_module_is_imported_on_its_first_use() -> None:
    code = (
        "import asyncio, sys\n"
        "from imageloader import ImageLoader\n"
        "async def main():\n"
        "    async with ImageLoader(max_web_workers=0) as loader:\n"
        "        before = {m for m in sys.modules if m.startswith('imageloader.')}\n"
        "        loader.builtin_loader('web')\n"
        "        after = {m for m in sys.modules if m.startswith('imageloader.')}\n"
        "    print(' '.join(sorted(before)), '|', ' '.join(sorted(after - before)))\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    before, added = (set(part.split()) for part in result.stdout.split("|"))
    assert not {"imageloader.web", "imageloader.nifti", "imageloader.dicom.wadors"} & before
    assert "imageloader.web" in added
