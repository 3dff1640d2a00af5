"""Limits against hostile or broken input: response bytes, pixels, frames, caches.

Every loader checks these before it allocates: a response is refused once it
passes ``max_response_bytes`` (while streaming, not after), a frame header that
claims more than ``max_frame_pixels`` pixels, or a frame whose decoding would need
more than ``max_frame_bytes``, is refused before decoding (a decompression bomb),
and so on. The defaults fit clinical data with room to spare.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_FRAME_PIXELS",
    "DEFAULT_MAX_METADATA_BYTES",
    "Limits",
]

#: 16384 × 16384: the default :attr:`Limits.max_frame_pixels`.
DEFAULT_MAX_FRAME_PIXELS = 1 << 28
#: The default :attr:`Limits.max_frame_bytes`, 64 MiB: 8192² 8-bit, 5792² 16-bit or
#: 4729² RGB samples. JPEG 2000's decoder (OpenJPEG) holds about 6 times the decoded
#: frame while it decodes (32-bit working samples, then the output); at this bound the
#: costliest frame (8-bit greyscale JPEG 2000, 8192²) peaks at 450 MiB in its decode
#: worker and 0.7 GiB for the whole service (docs/security.md, "Bounds").
DEFAULT_MAX_FRAME_BYTES = 64 << 20
#: Metadata modules kept by imageId (the store's LRU bound).
DEFAULT_MAX_METADATA_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits. Each is a ceiling; exceeding it raises ImageTooLargeError."""

    #: Bytes of one HTTP response body (a whole Part 10 object for wadouri), counted
    #: after gzip inflation, and of a deflated Part 10 dataset inflated: 256 MiB keeps
    #: a service's process tree under a gigabyte (a body is briefly held twice while
    #: it is read); raise it for larger multi-frame objects.
    max_response_bytes: int = 256 << 20
    #: Seconds one Part 10 object (or header) may take to parse, checked at each read
    #: pydicom makes: a legitimate 256 MiB object parses in 0.2 s (2.2 s deflated, mostly
    #: inflating), a 300-frame enhanced CT in 0.1 s; a crafted one (a deflated dataset
    #: of zeros, parsed as millions of empty elements) is stopped with LoadTimeoutError.
    max_parse_seconds: float = 10.0
    #: Pixels (rows × columns) of one frame: 2**28 is 16384 × 16384.
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    #: Bytes one frame needs decoded, checked against the pixel module and the
    #: codestream's own header before any codec allocates: the larger of its samples
    #: as the codec returns them (rows × columns × samples × 1, 2 or 4 bytes), and its
    #: pixels after the modality LUT or colour conversion; plus, for JPEG 2000, the
    #: decoder's bookkeeping for each tile.
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: Bytes of one metadata (DICOM JSON) response: a series' metadata is megabytes,
    #: and parsed JSON takes many times its size.
    max_metadata_response_bytes: int = 32 << 20
    #: Bytes of a preallocated volume, and of a NIfTI file's voxel data (held whole
    #: while its slices are cut): the default cache's size, so a volume fits in it.
    max_volume_bytes: int = 1 << 30
    #: Frames asked for in one WADO-RS request when frames are batched.
    max_frames_per_request: int = 32
    #: Parsed Part 10 objects kept for their other frames (dicomfile:, wadouri:).
    dataset_cache_entries: int = 16
    #: Bytes of parsed Part 10 objects kept (the larger of the two limits is not exceeded).
    dataset_cache_bytes: int = 512 << 20
    #: Bytes of metadata modules kept by imageId (an LRU; ~3 KB per image, so ~20,000).
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES
    #: Bytes of the Part 10 files held in memory by ``loader.files`` (``add`` past
    #: it raises ImageTooLargeError; nothing is evicted: ``remove`` releases).
    max_files_bytes: int = 512 << 20
