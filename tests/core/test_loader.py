"""ImageLoader behaviour: dedup, cache, failures, cancellation, ordering, events, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import AsyncIterator

import numpy as np
import pytest

from imageloader import Image, ImageLoader, LoadContext, RequestType
from imageloader import events as ev
from imageloader.errors import (
    CacheFullError,
    FetchError,
    InvalidImageIdError,
    LoadCancelledError,
    LoaderClosedError,
    LoadFailedError,
    UnknownSchemeError,
)

from .helpers import CountingLoader


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=0, builtin_loaders=False) as il:
        yield il


def _settle() -> asyncio.Future[None]:
    return asyncio.ensure_future(asyncio.sleep(0))


async def test_concurrent_loads_of_one_image_run_the_loader_once(loader: ImageLoader) -> None:
    fake = CountingLoader()
    fake.gate = asyncio.Event()
    loader.register_image_loader("t", fake)
    tasks = [asyncio.create_task(loader.load_and_cache_image("t:1")) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert loader.in_flight == 1 and loader.is_loading("t:1")
    fake.gate.set()
    images = await asyncio.gather(*tasks)
    assert fake.calls["t:1"] == 1
    assert all(image is images[0] for image in images)
    assert loader.in_flight == 0


async def test_cache_hit_runs_no_loader(loader: ImageLoader) -> None:
    fake = CountingLoader()
    loader.register_image_loader("t", fake)
    first = await loader.load_and_cache_image("t:1")
    for _ in range(10):
        assert await loader.load_image("t:1") is first
    assert fake.calls["t:1"] == 1
    assert loader.cache.hits == 10


async def test_load_image_does_not_cache(loader: ImageLoader) -> None:
    fake = CountingLoader()
    loader.register_image_loader("t", fake)
    await loader.load_image("t:1")
    assert "t:1" not in loader.cache
    await loader.load_image("t:1")
    assert fake.calls["t:1"] == 2


async def test_load_image_joins_an_in_flight_cached_load(loader: ImageLoader) -> None:
    fake = CountingLoader()
    fake.gate = asyncio.Event()
    loader.register_image_loader("t", fake)
    cached = asyncio.create_task(loader.load_and_cache_image("t:1"))
    plain = asyncio.create_task(loader.load_image("t:1"))
    await asyncio.sleep(0.01)
    fake.gate.set()
    assert await cached is await plain
    assert fake.calls["t:1"] == 1 and "t:1" in loader.cache


async def test_failed_load_is_typed_evented_and_leaves_nothing(loader: ImageLoader) -> None:
    fake = CountingLoader()
    fake.fail["t:bad"] = FetchError("server said no", image_id="t:bad", status=500)
    loader.register_image_loader("t", fake)
    failures: list[ev.Event] = []
    loader.events.on(ev.IMAGE_LOAD_FAILED, failures.append)
    with pytest.raises(FetchError) as info:
        await loader.load_and_cache_image("t:bad")
    assert info.value.image_id == "t:bad" and info.value.status == 500
    assert "t:bad" not in loader.cache and loader.in_flight == 0
    assert [(e.image_id, type(e.detail["error"])) for e in failures] == [("t:bad", FetchError)]
    # A later attempt runs the loader again (failures are not cached).
    fake.fail.clear()
    assert (await loader.load_and_cache_image("t:bad")).image_id == "t:bad"


async def test_foreign_exceptions_and_bad_results_become_load_failed(loader: ImageLoader) -> None:
    async def raises(image_id: str, ctx: LoadContext) -> Image:
        raise ValueError("oops")

    async def returns_none(image_id: str, ctx: LoadContext) -> Image:
        return None  # type: ignore[return-value]

    loader.register_image_loader("r", raises)
    loader.register_image_loader("n", returns_none)
    with pytest.raises(LoadFailedError, match="ValueError: oops") as info:
        await loader.load_image("r:1")
    assert isinstance(info.value.__cause__, ValueError) and info.value.image_id == "r:1"
    with pytest.raises(LoadFailedError, match="not an Image"):
        await loader.load_image("n:1")


async def test_unknown_scheme_and_invalid_ids(loader: ImageLoader) -> None:
    failures: list[ev.Event] = []
    loader.events.on(ev.IMAGE_LOAD_FAILED, failures.append)
    with pytest.raises(UnknownSchemeError) as info:
        await loader.load_image("nope:1")
    assert info.value.scheme == "nope" and info.value.image_id == "nope:1"
    for bad in ("", None, 7):
        with pytest.raises(InvalidImageIdError):
            await loader.load_image(bad)  # type: ignore[arg-type]
    assert len(failures) == 4 and loader.in_flight == 0


async def test_one_waiter_leaving_does_not_cancel_the_others(loader: ImageLoader) -> None:
    fake = CountingLoader()
    fake.gate = asyncio.Event()
    loader.register_image_loader("t", fake)
    leaver = asyncio.create_task(loader.load_and_cache_image("t:1"))
    stayer = asyncio.create_task(loader.load_and_cache_image("t:1"))
    await asyncio.sleep(0.01)
    leaver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaver
    assert fake.cancelled == []
    fake.gate.set()
    image = await stayer
    assert image.image_id == "t:1" and "t:1" in loader.cache


async def test_last_waiter_leaving_cancels_the_load_and_frees_the_slot(loader: ImageLoader) -> None:
    fake = CountingLoader()
    fake.gate = asyncio.Event()
    loader.register_image_loader("t", fake)
    task = asyncio.create_task(loader.load_and_cache_image("t:1"))
    await asyncio.sleep(0.01)
    assert loader.request_pool.running() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)
    assert fake.cancelled == ["t:1"]
    assert loader.in_flight == 0 and "t:1" not in loader.cache
    assert loader.request_pool.running() == 0


async def test_cancel_load_image_fails_every_awaiter_with_a_typed_error(
    loader: ImageLoader,
) -> None:
    fake = CountingLoader()
    fake.gate = asyncio.Event()
    loader.register_image_loader("t", fake)
    tasks = [asyncio.create_task(loader.load_and_cache_image("t:1")) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert loader.cancel_load_image("t:1") is True
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, LoadCancelledError) and r.image_id == "t:1" for r in results)
    assert loader.cancel_load_image("t:1") is False
    assert loader.in_flight == 0 and "t:1" not in loader.cache
    assert loader.request_pool.running() == 0


async def test_waiting_load_cancelled_before_it_started(loader: ImageLoader) -> None:
    fake = CountingLoader()
    fake.gate = asyncio.Event()
    loader.register_image_loader("t", fake)
    loader.request_pool.limits[RequestType.PREFETCH] = 1
    first = asyncio.create_task(loader.load_image("t:1", request_type="prefetch"))
    second = asyncio.create_task(loader.load_image("t:2", request_type="prefetch"))
    await asyncio.sleep(0.01)
    assert loader.request_pool.waiting() == 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    await asyncio.sleep(0.01)
    assert loader.request_pool.waiting() == 0 and fake.calls["t:2"] == 0
    fake.gate.set()
    await first
    assert loader.in_flight == 0 and loader.request_pool.running() == 0


async def test_interaction_joining_a_queued_prefetch_raises_its_priority(
    loader: ImageLoader,
) -> None:
    fake = CountingLoader()
    fake.gate = asyncio.Event()
    loader.register_image_loader("t", fake)
    loader.request_pool.limits[RequestType.PREFETCH] = 2
    loader.request_pool.capacity = 2
    blockers = [
        asyncio.create_task(loader.load_and_cache_image(f"t:block{i}", request_type="prefetch"))
        for i in range(2)
    ]
    queued = [
        asyncio.create_task(loader.load_and_cache_image(f"t:q{i}", request_type="prefetch"))
        for i in range(5)
    ]
    await asyncio.sleep(0.01)
    urgent = asyncio.create_task(loader.load_image("t:q4", request_type="interaction"))
    await asyncio.sleep(0.01)
    fake.gate.set()
    await asyncio.gather(*blockers, *queued, urgent)
    # q4 was queued last as prefetch; the interaction caller moved it to the front.
    assert fake.started.index("t:q4") == 2
    assert fake.calls["t:q4"] == 1


async def test_load_and_cache_images_keeps_order_and_raises_first_error(
    loader: ImageLoader,
) -> None:
    fake = CountingLoader()
    loader.register_image_loader("t", fake)
    ids = [f"t:{i}" for i in range(100)]
    images = await loader.load_and_cache_images(ids)
    assert [i.image_id for i in images] == ids
    assert all(i in loader.cache for i in ids)
    fake.fail["t:bad"] = FetchError("nope", image_id="t:bad", status=502)
    with pytest.raises(FetchError):
        await loader.load_and_cache_images(["t:100", "t:bad", "t:101"])
    mixed = await loader.load_and_cache_images(["t:bad", "t:5"], return_exceptions=True)
    assert isinstance(mixed[0], FetchError) and isinstance(mixed[1], Image)
    assert loader.in_flight == 0


async def test_iter_images_yields_as_completed_and_early_exit_cancels(
    loader: ImageLoader,
) -> None:
    gates = {f"t:{i}": asyncio.Event() for i in range(3)}

    async def gated(image_id: str, ctx: LoadContext) -> Image:
        await gates[image_id].wait()
        return Image.from_array(image_id, np.zeros((2, 2), np.uint8))

    loader.register_image_loader("t", gated)
    seen: list[str] = []

    async def consume() -> None:
        async for image in loader.iter_images(list(gates)):
            assert isinstance(image, Image)
            seen.append(image.image_id)
            if len(seen) == 2:
                break

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    gates["t:2"].set()
    await asyncio.sleep(0.01)
    gates["t:0"].set()
    await asyncio.wait_for(consumer, 2)
    assert seen == ["t:2", "t:0"]
    await asyncio.sleep(0.01)
    assert loader.in_flight == 0  # t:1 was cancelled when the loop ended


async def test_iter_images_return_exceptions(loader: ImageLoader) -> None:
    fake = CountingLoader()
    fake.fail["t:x"] = FetchError("gone", image_id="t:x", status=410)
    loader.register_image_loader("t", fake)
    results = [r async for r in loader.iter_images(["t:1", "t:x"], return_exceptions=True)]
    assert sorted(type(r).__name__ for r in results) == ["FetchError", "Image"]


async def test_events_on_load_and_cache(loader: ImageLoader) -> None:
    loader.register_image_loader("t", CountingLoader())
    names: list[tuple[str, str | None]] = []
    sub = loader.events.subscribe()
    loader.events.on(ev.IMAGE_LOADED, lambda e: 1 / 0)  # a broken callback changes nothing
    await loader.load_and_cache_image("t:1")
    await loader.load_and_cache_image("t:1")  # hit: no new events
    loader.cache.remove("t:1")
    sub.close()
    names = [(e.name, e.image_id) async for e in sub]
    assert names == [
        (ev.IMAGE_CACHE_IMAGE_ADDED, "t:1"),
        (ev.IMAGE_LOADED, "t:1"),
        (ev.IMAGE_CACHE_IMAGE_REMOVED, "t:1"),
    ]


async def test_image_larger_than_cache_is_returned_uncached(
    loader: ImageLoader, caplog: pytest.LogCaptureFixture
) -> None:
    loader.cache.set_max_size_bytes(16)
    loader.register_image_loader("t", CountingLoader(size=8))
    full: list[ev.Event] = []
    loader.events.on(ev.IMAGE_CACHE_FULL, full.append)
    plain = asyncio.create_task(loader.load_image("t:1"))
    cached = asyncio.create_task(loader.load_and_cache_image("t:1"))
    with caplog.at_level(logging.WARNING, logger="imageloader"):
        image = await cached  # the load succeeded: no error after it
    assert image.image_id == "t:1" and await plain is image
    assert len(loader.cache) == 0 and loader.cache.size_bytes == 0
    assert [(e.image_id, type(e.detail["error"])) for e in full] == [("t:1", CacheFullError)]
    assert "returned uncached" in caplog.text and "t:1" in caplog.text


async def test_non_default_options_bypass_the_cache(loader: ImageLoader) -> None:
    fake = CountingLoader()
    loader.register_image_loader("t", fake)
    cached = await loader.load_and_cache_image("t:1")
    raw = await loader.load_and_cache_image("t:1", prescale=False)
    assert raw is not cached and loader.cache.peek("t:1") is cached
    assert fake.contexts[-1].options.prescale is False
    assert fake.calls["t:1"] == 2


async def test_load_time_is_recorded(loader: ImageLoader) -> None:
    loader.register_image_loader("t", CountingLoader())
    image = await loader.load_image("t:1")
    assert image.load_time_ms > 0


async def test_closed_loader_refuses_and_close_cancels_in_flight() -> None:
    loader = ImageLoader(max_web_workers=0, builtin_loaders=False)
    fake = CountingLoader()
    fake.gate = asyncio.Event()
    loader.register_image_loader("t", fake)
    task = asyncio.create_task(loader.load_image("t:1"))
    await asyncio.sleep(0.01)
    await loader.aclose()
    with pytest.raises(LoaderClosedError) as info:
        await task
    assert info.value.image_id == "t:1"
    assert fake.cancelled == ["t:1"]
    with pytest.raises(LoaderClosedError):
        await loader.load_image("t:1")
    await loader.aclose()  # idempotent


async def test_entering_starts_nothing_heavy() -> None:
    async with ImageLoader() as loader:
        assert loader._decode_pool is None and loader._http is None


async def test_unclosed_loader_warns() -> None:
    loader = ImageLoader(max_web_workers=0, builtin_loaders=False)
    loader.register_image_loader("t", CountingLoader())
    await loader.load_image("t:1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loader
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_loader_from_another_loop_is_refused() -> None:
    loader = ImageLoader(max_web_workers=0, builtin_loaders=False)
    loader.register_image_loader("t", CountingLoader())

    async def use() -> None:
        await loader.load_image("t:1")

    asyncio.run(use())
    with pytest.raises(LoaderClosedError, match="another event loop"):
        asyncio.run(use())

    async def close() -> None:
        loader._loop = asyncio.get_running_loop()
        await loader.aclose()

    asyncio.run(close())


async def test_loop_guard_detects_a_blocked_loop(loop_guard) -> None:  # type: ignore[no-untyped-def]
    import time

    loop_guard.expected = True
    time.sleep(SLOW)  # noqa: ASYNC251 - deliberately blocks this task's step
    await asyncio.sleep(0)
    assert loop_guard.records and "took" in loop_guard.records[0]


SLOW = 0.4
