"""The leak check counts the library's own tasks, whatever folder the code lives in."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from imageloader import ImageLoader
from tests.reliability.leaks import loader_tasks


async def test_a_task_from_a_folder_named_imageloader_is_not_the_library(tmp_path: Path) -> None:
    # A clone (or a venv) in a folder named imageloader: its tests' code paths contain
    # "/imageloader/", and they are still not the library.
    folder = tmp_path / "imageloader" / "tests"
    folder.mkdir(parents=True)
    (folder / "user_module.py").write_text(
        "import asyncio\n\nasync def wait(event):\n    await event.wait()\n"
    )
    spec = importlib.util.spec_from_file_location("user_module", folder / "user_module.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    event = asyncio.Event()
    task = asyncio.ensure_future(module.wait(event))
    await asyncio.sleep(0)
    try:
        assert "/imageloader/" in task.get_coro().cr_code.co_filename  # type: ignore[union-attr]
        assert task not in loader_tasks()
    finally:
        event.set()
        await task


async def test_a_library_coroutine_and_a_named_task_are_counted() -> None:
    loader = ImageLoader(max_web_workers=0)
    gate = asyncio.Event()

    async def slow(image_id: str, ctx: object) -> object:
        await gate.wait()
        raise AssertionError("not reached")

    loader.register_image_loader("slow", slow)  # type: ignore[arg-type]
    load = asyncio.ensure_future(loader.load_image("slow:1"))
    await asyncio.sleep(0)
    # The in-flight task the loader started (named "imageloader:…"), and the caller's
    # task, whose coroutine is ImageLoader.load_image (module imageloader.loader).
    found = loader_tasks()
    assert load in found
    assert any(t.get_name() == "imageloader:slow:1" for t in found)
    load.cancel()
    await asyncio.gather(load, return_exceptions=True)
    await loader.aclose()
    assert loader_tasks() == []
