from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import AsyncIterable

import numpy as np
import pytest

from imageloader import Image, ImageLoader, LoadContext
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


async def _first_event(events: AsyncIterable[ev.Event]) -> ev.Event:
    async for event in events:  # noqa: B007
        break  # what leaked: the subscription stayed registered, buffering everything
    return event


async def _break_after_one(bus: ev.EventBus) -> None:
    task = asyncio.ensure_future(_first_event(bus))
    await asyncio.sleep(0)
    bus.emit(ev.IMAGE_LOAD_PROGRESS, "x:0")
    assert (await task).image_id == "x:0"


async def test_breaking_out_of_async_for_unsubscribes() -> None:
    bus = ev.EventBus()
    for _ in range(50):
        await _break_after_one(bus)
        async with bus.subscribe() as events:
            bus.emit(ev.IMAGE_LOADED, "x:1")
            assert (await anext(events)).image_id == "x:1"
    assert bus.subscriptions == 0
    assert not bus.has_listeners(ev.IMAGE_LOADED)


async def test_an_iterating_task_that_ends_unsubscribes() -> None:
    bus = ev.EventBus()
    seen: list[str | None] = []

    async def consume() -> None:
        async for event in bus.subscribe([ev.IMAGE_LOADED]):
            seen.append(event.image_id)
            if len(seen) == 2:
                return

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    assert bus.subscriptions == 1
    for n in range(5):
        bus.emit(ev.IMAGE_LOADED, f"x:{n}")
        await asyncio.sleep(0)
    await task
    assert seen == ["x:0", "x:1"] and bus.subscriptions == 0
    # A cancelled consumer lets go too.
    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # asyncio keeps the CancelledError on the awaited future, whose traceback holds the
    # consumer's frames: a reference cycle, gone at the next collection.
    del task
    await asyncio.sleep(0)
    gc.collect()
    assert bus.subscriptions == 0


async def test_an_abandoned_subscription_does_not_keep_loaded_images() -> None:
    loader = ImageLoader(max_web_workers=0, max_cache_size_bytes=1 << 20)

    async def big(image_id: str, ctx: LoadContext) -> Image:
        return Image.from_array(image_id, np.zeros((512, 512), np.int16))

    loader.register_image_loader("big", big)
    async with loader:
        for _ in range(50):
            await _break_after_one(loader.events)
        refs = []
        for n in range(20):
            image = await loader.load_and_cache_image(f"big:{n}")
            refs.append(weakref.ref(image.pixel_data))
        del image
        loader.cache.purge()
        await asyncio.sleep(0)
        assert loader.events.subscriptions == 0
        assert [r for r in refs if r() is not None] == []


async def test_a_slow_subscriber_drops_the_oldest_events_and_counts_them() -> None:
    bus = ev.EventBus()
    async with bus.subscribe(maxsize=3) as events:
        for n in range(10):
            bus.emit(ev.IMAGE_LOADED, f"x:{n}")
        assert events.dropped == 7
        assert [(await anext(events)).image_id for _ in range(3)] == ["x:7", "x:8", "x:9"]
    with pytest.raises(ValueError, match="maxsize"):
        bus.subscribe(maxsize=0)
