"""Where each frame lies in encapsulated pixel data (PS3.5 A.4).

The fragments are walked once; frames are then found, in order of preference, from
the Extended Offset Table, the Basic Offset Table, or (without either) the rules of
pydicom's ``generate_fragmented_frames``: one fragment is one frame, a single-frame
object takes every fragment, as many fragments as frames is one each, and more
fragments than frames ends a frame at a fragment whose last bytes hold a JPEG EOI /
JPEG 2000 EOC marker (``FFD9``).
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset

from ..errors import DecodeError
from ._values import element_value

__all__ = ["FrameIndex", "build_frame_index"]

_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_EOI = b"\xff\xd9"

Span = tuple[int, int]  # (start, length) of a fragment's value in the pixel data


@dataclass(frozen=True, slots=True)
class _Fragment:
    offset: int  # of its item tag, from the first item after the Basic Offset Table
    start: int  # of its value, in the pixel data buffer
    length: int


@dataclass(frozen=True, slots=True)
class FrameIndex:
    """The fragment spans of every frame found, in frame order."""

    frames: tuple[tuple[Span, ...], ...]

    def frame(self, buffer: memoryview, n: int, *, image_id: str | None) -> bytes | memoryview:
        """Frame ``n`` (1-based): a view for a one-fragment frame, else the joined bytes."""
        if n > len(self.frames):
            raise DecodeError(
                f"frame {n} not found in the encapsulated pixel data "
                f"({len(self.frames)} frame(s) present)",
                image_id=image_id,
            )
        spans = self.frames[n - 1]
        if len(spans) == 1:
            start, length = spans[0]
            return buffer[start : start + length]
        return b"".join(buffer[start : start + length] for start, length in spans)


def _walk(
    buffer: memoryview, endian: str, image_id: str | None
) -> tuple[list[int], list[_Fragment]]:
    header = struct.Struct(f"{endian}HHL")
    if len(buffer) < 8:
        raise DecodeError("encapsulated pixel data is truncated", image_id=image_id)
    group, elem, length = header.unpack_from(buffer, 0)
    if (group << 16 | elem) != _ITEM or length % 4 or 8 + length > len(buffer):
        raise DecodeError(
            "encapsulated pixel data has no valid Basic Offset Table", image_id=image_id
        )
    bot = list(struct.unpack_from(f"{endian}{length // 4}L", buffer, 8))
    first = pos = 8 + length
    fragments: list[_Fragment] = []
    while pos < len(buffer):
        if pos + 8 > len(buffer):
            raise DecodeError("encapsulated pixel data is truncated", image_id=image_id)
        group, elem, length = header.unpack_from(buffer, pos)
        tag = group << 16 | elem
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM or length == 0xFFFFFFFF:
            raise DecodeError(
                f"unexpected tag {tag:08X} at offset {pos} in encapsulated pixel data",
                image_id=image_id,
            )
        if pos + 8 + length > len(buffer):
            raise DecodeError("encapsulated pixel data fragment is truncated", image_id=image_id)
        fragments.append(_Fragment(pos - first, pos + 8, length))
        pos += 8 + length
    return bot, fragments


def _offset_table(ds: Dataset, endian: str) -> list[tuple[int, int]] | None:
    offsets = element_value(ds, "ExtendedOffsetTable")
    lengths = element_value(ds, "ExtendedOffsetTableLengths")
    if not isinstance(offsets, bytes) or not isinstance(lengths, bytes):
        return None
    if len(offsets) != len(lengths) or len(offsets) % 8:
        return None
    count = len(offsets) // 8
    return list(
        zip(
            struct.unpack(f"{endian}{count}Q", offsets),
            struct.unpack(f"{endian}{count}Q", lengths),
            strict=True,
        )
    )


def _by_marker(fragments: list[_Fragment], buffer: memoryview) -> list[list[_Fragment]]:
    frames: list[list[_Fragment]] = []
    current: list[_Fragment] = []
    for fragment in fragments:
        current.append(fragment)
        tail_start = fragment.start + max(0, fragment.length - 10)
        if _EOI in bytes(buffer[tail_start : fragment.start + fragment.length]):
            frames.append(current)
            current = []
    if current:
        # No marker at the end: the data is probably damaged, but keep what is there.
        frames.append(current)
    return frames


def _by_basic_offsets(bot: list[int], fragments: list[_Fragment]) -> list[list[_Fragment]] | None:
    starts = {f.offset for f in fragments}
    if bot[0] != 0 or any(b <= a for a, b in itertools.pairwise(bot)) or not starts.issuperset(bot):
        return None  # an unusable table: fall back to the fragments themselves
    # One pass: every entry is the start of a fragment, and both are in order.
    # (Scanning every fragment for every entry is quadratic: 60,000 tiny
    # fragments behind a matching table took minutes.)
    groups: list[list[_Fragment]] = []
    entries = iter(bot)
    next_start = next(entries, None)
    for fragment in fragments:
        if fragment.offset == next_start:
            groups.append([])
            next_start = next(entries, None)
        groups[-1].append(fragment)
    return groups


def build_frame_index(
    buffer: memoryview,
    ds: Dataset,
    number_of_frames: int,
    *,
    little_endian: bool = True,
    image_id: str | None = None,
) -> FrameIndex:
    """Index the frames of encapsulated pixel data ``buffer`` (the PixelData value)."""
    endian = "<" if little_endian else ">"
    bot, fragments = _walk(buffer, endian, image_id)
    if not fragments:
        raise DecodeError("encapsulated pixel data has no fragments", image_id=image_id)
    first_item = 8 + 4 * len(bot)
    table = _offset_table(ds, endian)
    if table:
        spans: list[tuple[Span, ...]] = []
        for offset, length in table:
            start = first_item + offset + 8
            if start + length > len(buffer):
                raise DecodeError("Extended Offset Table points past the data", image_id=image_id)
            spans.append(((start, length),))
        return FrameIndex(tuple(spans))
    grouped = _by_basic_offsets(bot, fragments) if bot else None
    if grouped is None:
        if len(fragments) == 1 or number_of_frames == 1:
            grouped = [fragments] if number_of_frames == 1 else [fragments[:1]]
        elif len(fragments) == number_of_frames:
            grouped = [[f] for f in fragments]
        elif len(fragments) > number_of_frames:
            grouped = _by_marker(fragments, buffer)
        else:
            raise DecodeError(
                f"{len(fragments)} fragments cannot hold {number_of_frames} frames",
                image_id=image_id,
            )
    return FrameIndex(
        tuple(tuple((f.start, f.length) for f in group) for group in grouped if group)
    )
