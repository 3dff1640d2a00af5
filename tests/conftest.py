"""Test-wide strictness: asyncio debug mode, and a check that nothing blocks the loop.

Every async test runs with the event loop in debug mode, whose slow-callback
detector logs any callback or task step that holds the loop longer than
``SLOW_CALLBACK_SECONDS``; such a log fails the test. Warnings are errors
(pyproject.toml), so an un-awaited coroutine or an unclosed resource fails too.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.corpus import CORNERSTONE

pytest_plugins = ["tests.support.fixtures"]

# Decode, file reads and Pillow must never run on the loop; the loop's own work
# for one step (parse a multipart body, build an Image) stays well under this.
SLOW_CALLBACK_SECONDS = float(os.environ.get("IMAGELOADER_SLOW_CALLBACK", "0.25"))


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing") and " took " in message:
            self.records.append(message)


@pytest.fixture
async def loop_guard() -> AsyncIterator[_SlowCallbacks]:
    """Fail the test if any callback blocks the event loop for too long."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
    if handler.records and not getattr(handler, "expected", False):
        pytest.fail("the event loop was blocked:\n" + "\n".join(handler.records))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.usefixtures("loop_guard"))


@pytest.fixture(scope="session")
def cornerstone_corpus() -> Path:
    """The Cornerstone3D test images (in the repository: ``tests/data/cornerstone``)."""
    return CORNERSTONE
