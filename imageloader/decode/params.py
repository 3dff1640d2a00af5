"""The picklable inputs and outputs of a decode task.

A worker gets one frame's bytes, a :class:`PixelParams` (the pixel-module
attributes and the modality LUT inputs, read from the dataset or DICOM JSON in the
main process) and :class:`DecodeOptions`; it returns a :class:`DecodedFrame`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..image import PreScale

__all__ = ["DecodeOptions", "DecodedFrame", "Palette", "PixelParams"]


@dataclass(frozen=True, slots=True)
class Palette:
    """PALETTE COLOR lookup tables: descriptors ``(entries, first_mapped, bits)`` and data.

    ``red``/``green``/``blue`` are the LUT entries as unsigned integers (uint8 or
    uint16 by the descriptor's bits), already expanded from segmented LUTs.
    """

    red_descriptor: tuple[int, int, int]
    green_descriptor: tuple[int, int, int]
    blue_descriptor: tuple[int, int, int]
    red: npt.NDArray[np.unsignedinteger[Any]]
    green: npt.NDArray[np.unsignedinteger[Any]]
    blue: npt.NDArray[np.unsignedinteger[Any]]


@dataclass(frozen=True, slots=True)
class PixelParams:
    """Everything a worker needs to turn one frame's bytes into pixels."""

    transfer_syntax_uid: str
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int = 0
    #: Modality LUT inputs (None: absent from the object).
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    modality: str | None = None
    #: PET SUV body-weight factor and RTDOSE DoseGridScaling, where present.
    suvbw: float | None = None
    dose_grid_scaling: float | None = None
    palette: Palette | None = None

    @property
    def frame_pixels(self) -> int:
        """Rows × columns."""
        return self.rows * self.columns

    @property
    def native_frame_bytes(self) -> int:
        """Bytes of one uncompressed frame (bit-packed for BitsAllocated 1)."""
        samples = self.rows * self.columns * self.samples_per_pixel
        if self.photometric_interpretation == "YBR_FULL_422":
            samples = self.rows * self.columns * 2  # one Cb and one Cr per pixel pair
        if self.bits_allocated == 1:
            return (samples + 7) // 8
        return samples * (self.bits_allocated // 8)


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Per-load choices that change the pixels (also ``imageloader.LoadOptions``).

    ``prescale``: apply the modality LUT (Cornerstone's ``preScale.enabled``).
    ``use_rgba``: colour images as RGBA instead of RGB. ``decode_level``: the frame
    at 1/2ⁿ of its rows and columns (Cornerstone's ``decodeLevel``; see
    :mod:`imageloader.decode.reduce`). A load's options are part of its in-flight
    key and go to the decode worker as they are.
    """

    prescale: bool = True
    use_rgba: bool = False
    decode_level: int = 0


@dataclass(slots=True)
class DecodedFrame:
    """One decoded frame, in Cornerstone3D's pixel contract.

    ``pixels``: ``(rows, columns)`` greyscale, or ``(rows, columns, 3|4)`` uint8
    interleaved RGB(A). ``min_value``/``max_value`` are from the data.
    ``photometric_interpretation`` is the one the pixels are in now (``RGB`` after
    colour conversion). ``codec`` names the decoder that ran.
    """

    pixels: npt.NDArray[Any]
    min_value: float
    max_value: float
    color: bool
    photometric_interpretation: str
    prescale: PreScale
    decode_ms: float
    codec: str
    #: The decode level the pixels are at (0: full size).
    decode_level: int = 0
