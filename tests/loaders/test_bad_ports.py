"""Ports that are not a port are a bad imageId (a service's 400), never an untyped failure."""

from __future__ import annotations

import pytest

from imageloader import ImageLoader
from imageloader.errors import InvalidImageIdError
from imageloader.integrations.fastapi import status_for


@pytest.mark.parametrize("port", ["99999", "+8701", "８７０１", "-1", "1e3"])
@pytest.mark.parametrize(
    "template",
    [
        "wadouri:http://127.0.0.1:{port}/wado?objectUID=1",
        "wadors:http://127.0.0.1:{port}/studies/1/series/2/instances/3/frames/1",
        "http://127.0.0.1:{port}/image.png",
        "web:http://127.0.0.1:{port}/image.png",
    ],
)
async def test_a_malformed_port_is_an_invalid_image_id(template: str, port: str) -> None:
    image_id = template.format(port=port)
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(InvalidImageIdError) as info:
            await loader.load_image(image_id)
    assert info.value.image_id == image_id
    assert status_for(info.value) == 400
