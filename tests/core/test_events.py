from __future__ import annotations

import asyncio
import logging

import pytest

from imageloader import events as ev


def test_callbacks_run_and_a_failing_one_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = ev.EventBus()
    got: list[ev.Event] = []

    def boom(event: ev.Event) -> None:
        raise RuntimeError("callback bug")

    bus.on(ev.IMAGE_LOADED, boom)
    off = bus.on(ev.IMAGE_LOADED, got.append)
    with caplog.at_level(logging.ERROR, logger="imageloader.events"):
        bus.emit(ev.IMAGE_LOADED, "x:1", image="img")
    assert [(e.name, e.image_id, e.detail) for e in got] == [
        (ev.IMAGE_LOADED, "x:1", {"image": "img"})
    ]
    assert "callback bug" in caplog.text
    off()
    bus.emit(ev.IMAGE_LOADED, "x:2")
    assert len(got) == 1


async def test_async_iteration_filters_and_ends_on_close() -> None:
    bus = ev.EventBus()
    sub = bus.subscribe([ev.IMAGE_LOAD_FAILED])
    received: list[str | None] = []

    async def consume() -> None:
        async for event in sub:
            received.append(event.image_id)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    bus.emit(ev.IMAGE_LOADED, "a")
    bus.emit(ev.IMAGE_LOAD_FAILED, "b")
    bus.emit(ev.IMAGE_LOAD_FAILED, "c")
    await asyncio.sleep(0)
    bus.close()
    await asyncio.wait_for(task, 2)
    assert received == ["b", "c"]


async def test_bus_itself_is_async_iterable_and_bounded() -> None:
    bus = ev.EventBus()
    sub = bus.subscribe(maxsize=2)
    for i in range(5):
        bus.emit(ev.IMAGE_LOADED, str(i))
    assert sub.dropped == 3
    assert [(await sub.__anext__()).image_id for _ in range(2)] == ["3", "4"]
    sub.close()
    iterator = aiter(bus)
    bus.emit(ev.IMAGE_LOADED, "z")
    assert (await anext(iterator)).image_id == "z"
    bus.close()
    assert not bus.has_listeners("anything")
