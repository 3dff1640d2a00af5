"""Small loaders for core tests: they count calls and can be held, failed or slowed."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np

from imageloader import Image, LoadContext


def make_image(image_id: str, size: int = 4, dtype: str = "uint16") -> Image:
    array = np.arange(size * size, dtype=dtype).reshape(size, size)
    return Image.from_array(image_id, array)


class CountingLoader:
    """Loads a small image per imageId; can be gated, made to fail, or given a size."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.calls: Counter[str] = Counter()
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail: dict[str, BaseException] = {}
        self.contexts: list[LoadContext] = []

    async def __call__(self, image_id: str, ctx: LoadContext) -> Image:
        self.calls[image_id] += 1
        self.started.append(image_id)
        self.contexts.append(ctx)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(image_id)
            raise
        if image_id in self.fail:
            raise self.fail[image_id]
        return make_image(image_id, self.size)
