"""Limits against hostile or broken input: response bytes, pixels, frames, caches.

Every loader checks these before it allocates: a response is refused once it
passes ``max_response_bytes`` (while streaming, not after), a frame header that
claims more than ``max_frame_pixels`` pixels is refused before decoding (a
decompression bomb), and so on. The defaults fit clinical data with room to spare.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits. Each is a ceiling; exceeding it raises ImageTooLargeError."""

    #: Bytes of one HTTP response body (a whole Part 10 object for wadouri).
    max_response_bytes: int = 1 << 30
    #: Pixels (rows × columns) of one frame: 2**28 is 16384 × 16384.
    max_frame_pixels: int = 1 << 28
    #: Bytes of a preallocated volume.
    max_volume_bytes: int = 8 << 30
    #: Frames asked for in one WADO-RS request when frames are batched.
    max_frames_per_request: int = 32
    #: Parsed Part 10 objects kept for their other frames (dicomfile:, wadouri:).
    dataset_cache_entries: int = 16
    #: Bytes of parsed Part 10 objects kept (the larger of the two limits is not exceeded).
    dataset_cache_bytes: int = 512 << 20
    #: Bytes of metadata modules kept by imageId (an LRU; ~3 KB per image, so ~20,000).
    max_metadata_bytes: int = 64 << 20
