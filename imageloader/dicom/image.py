"""Decoding a DICOM frame in the decode pool, at its load's priority, into an Image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..decode.image import create_image
from ..decode.params import PixelParams
from ..decode.syntaxes import SYNTAXES
from ..decode.worker import decode_frame
from ..image import Image

if TYPE_CHECKING:
    from ..context import LoadContext

__all__ = ["decode_to_image"]


async def decode_to_image(
    image_id: str,
    ctx: LoadContext,
    data: bytes | memoryview,
    params: PixelParams,
    modules: Mapping[str, Any],
    transfer_syntax_uid: str,
) -> Image:
    """Decode one frame in the decode pool, at the load's priority, into its Image."""
    syntax = SYNTAXES.get(params.transfer_syntax_uid)
    decoded = await ctx.decode_pool.run(
        decode_frame,
        data,
        params,
        ctx.options,
        image_id,
        ctx.limits.max_frame_pixels,
        ctx.limits.max_frame_bytes,
        request_type=ctx.request_type,
        priority=ctx.priority,
        # Uncompressed frames need no codec: a process round trip would cost more.
        inline=syntax is not None
        and not syntax.encapsulated
        and len(data) == params.native_frame_bytes,
    )
    return create_image(
        image_id,
        decoded,
        modules,
        transfer_syntax_uid=transfer_syntax_uid,
        photometric_interpretation=params.photometric_interpretation,
    )
