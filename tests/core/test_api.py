"""The public face: the names are the contract."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

import imageloader
from imageloader import errors

#: The submodules a user imports from (README, examples): reachable as attributes.
PUBLIC_SUBMODULES = {
    "dicomweb", "errors", "events", "geometry", "integrations", "metadata", "nifti", "output",
    "render",
}  # fmt: skip


def test_all_is_sorted_and_complete() -> None:
    assert imageloader.__all__ == sorted(imageloader.__all__)
    expected = {
        "AccessPolicy", "HttpOptions", "Image", "ImageCache", "ImageLoader", "ImageLoaderError",
        "Limits", "LoadContext", "LoadOptions", "MetadataRegistry", "PreScale", "RequestPool",
        "RequestType", "Volume", "__version__", "add_metadata_provider", "cancel_load_image",
        "get_default_loader", "get_metadata", "init", "iter_images", "load_and_cache_image",
        "load_and_cache_images", "load_image", "register_image_loader",
        "register_unknown_image_loader", "shutdown", *PUBLIC_SUBMODULES,
    }  # fmt: skip
    assert set(imageloader.__all__) == expected
    for name in imageloader.__all__:
        assert hasattr(imageloader, name), name


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_name_in_all_imports_in_a_fresh_interpreter() -> None:
    """``from imageloader import X`` works for every X of ``__all__`` (also ``import *``)."""
    code = (
        "import json, imageloader\n"
        "names = {}\n"
        "for name in imageloader.__all__:\n"
        "    exec(f'from imageloader import {name} as value', names)\n"
        "star = {}\n"
        "exec('from imageloader import *', star)\n"
        "print(json.dumps(sorted(n for n in imageloader.__all__ if n in star)))\n"
    )
    assert json.loads(_run(code)) == imageloader.__all__
    # The options the ImageLoader takes are all importable from the package.
    assert imageloader.HttpOptions.__module__ == "imageloader.http"
    assert imageloader.Limits.__module__ == "imageloader.limits"
    assert imageloader.AccessPolicy.__module__ == "imageloader.security"


def test_dir_lists_the_public_submodules_and_names() -> None:
    listed = set(dir(imageloader))
    assert listed >= PUBLIC_SUBMODULES
    assert set(imageloader.__all__) <= listed
    for name in PUBLIC_SUBMODULES:
        module = getattr(imageloader, name)
        assert isinstance(module, types.ModuleType) and module.__name__ == f"imageloader.{name}"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = imageloader.nope  # type: ignore[attr-defined]


def test_import_imageloader_stays_light() -> None:
    """The package imports its heavy parts (aiohttp, the loader, submodules) on first use."""
    code = "import sys, imageloader\ndir(imageloader)\nprint(' '.join(sorted(sys.modules)))\n"
    modules = set(_run(code).split())
    ours = {m for m in modules if m.startswith("imageloader")}
    assert ours == {"imageloader", "imageloader.errors", "imageloader.events", "imageloader.image"}
    assert not {"aiohttp", "pydicom", "anyio", "dask", "distributed"} & modules


def test_error_tree_has_one_root() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.ImageLoaderError), name
    assert issubclass(errors.LoadTimeoutError, TimeoutError)
    assert issubclass(errors.InvalidImageIdError, ValueError)
    assert issubclass(errors.NotFoundError, errors.FetchError)
    assert issubclass(errors.UnsupportedTransferSyntaxError, errors.DecodeError)


def test_errors_name_the_image_id_and_survive_pickling() -> None:
    import pickle

    err = errors.FetchError("boom", image_id="wadors:x", url="http://h/x", status=503)
    assert "wadors:x" in str(err) and "503" in str(err) and "http://h/x" in str(err)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is errors.FetchError
    assert (clone.image_id, clone.status, clone.url, str(clone)) == (
        "wadors:x",
        503,
        "http://h/x",
        str(err),
    )
    ts = errors.UnsupportedTransferSyntaxError("1.2.3", image_id="a:b", install="pyjpegls")
    clone2 = pickle.loads(pickle.dumps(ts))
    assert clone2.transfer_syntax_uid == "1.2.3" and "pyjpegls" in str(clone2)


async def test_module_level_functions_use_one_default_loader() -> None:
    loader = imageloader.init(max_web_workers=0, max_cache_size_bytes=1 << 20)
    try:
        with pytest.raises(RuntimeError, match="already initialised"):
            imageloader.init()

        async def fake(image_id: str, ctx: imageloader.LoadContext) -> imageloader.Image:
            return imageloader.Image.from_array(image_id, np.ones((2, 3), np.uint8))

        imageloader.register_image_loader("fake", fake)
        assert imageloader.get_default_loader() is loader
        image = await imageloader.load_and_cache_image("fake:1")
        assert loader.cache.get_image("fake:1") is image
        assert await imageloader.load_image("fake:1") is image
        images = await imageloader.load_and_cache_images(["fake:2", "fake:1"])
        assert [i.image_id for i in images] == ["fake:2", "fake:1"]
        previous = imageloader.register_unknown_image_loader(fake)
        assert previous is None
        assert (await imageloader.load_image("nope:3")).image_id == "nope:3"
        imageloader.add_metadata_provider(lambda t, i: {"t": t} if i == "fake:1" else None)
        assert imageloader.get_metadata("x", "fake:1") == {"t": "x"}
    finally:
        await imageloader.shutdown()
    assert loader.closed
    # After shutdown, a new default loader can be made.
    again = imageloader.get_default_loader()
    assert again is not loader
    await imageloader.shutdown()


def test_image_from_array_derives_fields() -> None:
    grey = imageloader.Image.from_array("x:1", np.array([[-5, 10], [3, 7]], dtype=np.int16))
    assert (grey.rows, grey.columns, grey.height, grey.width) == (2, 2, 2, 2)
    assert (grey.min_pixel_value, grey.max_pixel_value) == (-5.0, 10.0)
    assert not grey.color and grey.number_of_components == 1 and not grey.rgba
    assert grey.size_in_bytes == 8 and grey.data_type == "int16"
    assert (grey.window_width, grey.window_center) == (16.0, 3.0)
    rgb = imageloader.Image.from_array("x:2", np.zeros((3, 5, 3), np.uint8), slope=2.0)
    assert rgb.color and rgb.number_of_components == 3 and not rgb.rgba
    assert (rgb.rows, rgb.columns) == (3, 5) and rgb.slope == 2.0
    assert (rgb.window_width, rgb.window_center) == (256.0, 128.0)
    rgba = imageloader.Image.from_array("x:3", np.zeros((3, 5, 4), np.uint8))
    assert rgba.rgba and rgba.number_of_components == 4
    with pytest.raises(ValueError, match="pixel array"):
        imageloader.Image.from_array("x:4", np.zeros((2, 2, 2, 2)))
    with pytest.raises(TypeError, match="unknown Image fields"):
        imageloader.Image.from_array("x:5", np.zeros((2, 2)), bogus=1)


def test_an_error_can_be_restated_for_another_image() -> None:
    err = errors.FetchError("boom", image_id="wadors:a", url="http://h/x", status=502)
    other = err.for_image("wadors:b")
    assert type(other) is errors.FetchError and other is not err
    assert other.image_id == "wadors:b" and other.status == 502
    assert str(other) == "boom (HTTP 502) from http://h/x [imageId: wadors:b]"
    assert err.for_image("wadors:a") is err
