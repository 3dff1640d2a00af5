"""DICOM dataset → Cornerstone's metadata modules (``imagePlaneModule`` and friends).

The fields follow Cornerstone3D's DICOM image loader metadata providers and its
``@cornerstonejs/metadata`` package, in snake_case. A frame of an enhanced
multi-frame object reads its functional groups first (per-frame, then shared, then
the top level), as Cornerstone's combined instance does; ``imagePlaneModule``'s
defaults and fallbacks are described in :mod:`._plane`. ``imagePixelModule`` carries
the PALETTE COLOR descriptors and the expanded LUT data.

A module whose essential attributes are missing (``imagePixelModule`` or
``imagePlaneModule`` of an object without Rows/Columns) is left out of the result.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

from ..decode.params import Palette, PixelParams
from ..errors import ImageTooLargeError, MetadataError
from ..metadata import (
    MODULE_TYPES,
    GeneralImageModule,
    GeneralSeriesModule,
    ImagePixelModule,
    ModalityLutModule,
    MultiframeModule,
    PatientModule,
    PatientStudyModule,
    ScalingModule,
    SopCommonModule,
    VoiLutModule,
)
from ._palette import PaletteError, read_descriptors, read_palette
from ._plane import image_plane_module
from ._suv import suv_body_weight
from ._values import FrameView, decoder_syntax, floats, frame_count, tags_as_strings, to_string

__all__ = [
    "MAX_FRAMES",
    "metadata_modules",
    "metadata_modules_by_frame",
    "pixel_params_from_modules",
]

#: Frames whose modules :func:`metadata_modules_by_frame` builds at most (each costs
#: ~0.2 ms and ~2 kB). Enough for any radiology object; a whole-slide level with
#: more tiles than this is refused rather than registered frame by frame.
MAX_FRAMES = 1 << 16


def image_pixel_module(view: FrameView) -> ImagePixelModule | None:
    """Cornerstone's imagePixelModule (None without the essential pixel attributes)."""
    samples, rows, columns = (view.integer(k) for k in ("SamplesPerPixel", "Rows", "Columns"))
    bits_allocated = view.integer("BitsAllocated")
    photometric = view.string("PhotometricInterpretation")
    if samples is None or rows is None or columns is None or bits_allocated is None:
        return None
    if photometric is None:
        return None
    bits_stored = view.integer("BitsStored") or bits_allocated
    high_bit = view.integer("HighBit")
    palette = None
    descriptors: tuple[tuple[int, int, int] | None, ...] = (None, None, None)
    if photometric == "PALETTE COLOR":
        try:
            little = view.root.original_encoding[1] is not False
            palette = read_palette(view.root, little_endian=little)
        except PaletteError:
            palette = None
        if palette is not None:
            descriptors = (
                palette.red_descriptor,
                palette.green_descriptor,
                palette.blue_descriptor,
            )
        else:
            # The data may come later (DICOM JSON bulk data): keep what the descriptors say.
            descriptors = read_descriptors(view.root) or descriptors
    aspect = view.numbers("PixelAspectRatio", 2)
    return ImagePixelModule(
        samples_per_pixel=samples,
        photometric_interpretation=photometric,
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=bits_stored - 1 if high_bit is None else high_bit,
        pixel_representation=view.integer("PixelRepresentation") or 0,
        planar_configuration=view.integer("PlanarConfiguration") or 0,
        pixel_aspect_ratio=None if aspect is None else (aspect[0], aspect[1]),
        smallest_pixel_value=view.number("SmallestImagePixelValue"),
        largest_pixel_value=view.number("LargestImagePixelValue"),
        red_palette_color_lookup_table_descriptor=descriptors[0],
        green_palette_color_lookup_table_descriptor=descriptors[1],
        blue_palette_color_lookup_table_descriptor=descriptors[2],
        red_palette_color_lookup_table_data=palette.red if palette else None,
        green_palette_color_lookup_table_data=palette.green if palette else None,
        blue_palette_color_lookup_table_data=palette.blue if palette else None,
    )


def _first_number(view: FrameView, keyword: str) -> float | None:
    values = floats(view.value(keyword))
    return values[0] if values else None


def _instance_modules(view: FrameView) -> dict[str, object]:
    """The modules that are the same for every frame."""
    root = view.root_value
    modules: dict[str, object] = {}
    pixel = image_pixel_module(view)
    if pixel is not None:
        modules["imagePixelModule"] = pixel
    modules["generalSeriesModule"] = GeneralSeriesModule(
        modality=to_string(root("Modality")),
        series_instance_uid=to_string(root("SeriesInstanceUID")),
        series_number=view.integer("SeriesNumber"),
        study_instance_uid=to_string(root("StudyInstanceUID")),
        series_description=to_string(root("SeriesDescription")),
        series_date=to_string(root("SeriesDate")),
        series_time=to_string(root("SeriesTime")),
        acquisition_date=to_string(root("AcquisitionDate")),
        acquisition_time=to_string(root("AcquisitionTime")),
    )
    modules["generalImageModule"] = GeneralImageModule(
        sop_instance_uid=to_string(root("SOPInstanceUID")),
        instance_number=view.integer("InstanceNumber"),
        lossy_image_compression=to_string(root("LossyImageCompression")),
        lossy_image_compression_ratio=_first_number(view, "LossyImageCompressionRatio"),
        lossy_image_compression_method=to_string(root("LossyImageCompressionMethod")),
        image_type=view.strings("ImageType"),
    )
    modules["patientModule"] = PatientModule(
        patient_id=to_string(root("PatientID")),
        patient_name=to_string(root("PatientName")),
        patient_birth_date=to_string(root("PatientBirthDate")),
    )
    modules["patientStudyModule"] = PatientStudyModule(
        patient_age=to_string(root("PatientAge")),
        patient_size=view.number("PatientSize"),
        patient_sex=to_string(root("PatientSex")),
        patient_weight=view.number("PatientWeight"),
        study_date=to_string(root("StudyDate")),
        study_time=to_string(root("StudyTime")),
        study_description=to_string(root("StudyDescription")),
    )
    modules["sopCommonModule"] = SopCommonModule(
        sop_class_uid=to_string(root("SOPClassUID")),
        sop_instance_uid=to_string(root("SOPInstanceUID")),
    )
    modality = to_string(root("Modality"))
    suvbw = suv_body_weight(view) if modality == "PT" else None
    dose = view.number("DoseGridScaling") if modality == "RTDOSE" else None
    if suvbw is not None or dose is not None:
        modules["scalingModule"] = ScalingModule(suvbw=suvbw, dose_grid_scaling=dose)
    return modules


def _frame_modules(view: FrameView, frames: int) -> dict[str, object]:
    """The modules that may differ from frame to frame."""
    modules: dict[str, object] = {}
    plane = image_plane_module(view)
    if plane is not None:
        modules["imagePlaneModule"] = plane
    modules["voiLutModule"] = VoiLutModule(
        window_center=view.numbers("WindowCenter"),
        window_width=view.numbers("WindowWidth"),
        voi_lut_function=view.string("VOILUTFunction"),
    )
    modules["modalityLutModule"] = ModalityLutModule(
        rescale_intercept=view.number("RescaleIntercept"),
        rescale_slope=view.number("RescaleSlope"),
        rescale_type=view.string("RescaleType"),
    )
    pointer = "\\".join(tags_as_strings(view.value("FrameIncrementPointer"))) or None
    modules["multiframeModule"] = MultiframeModule(
        number_of_frames=frames,
        frame_number=view.frame,
        frame_time=view.number("FrameTime"),
        frame_time_vector=view.numbers("FrameTimeVector"),
        frame_increment_pointer=pointer,
    )
    return modules


def _ordered(*parts: dict[str, object]) -> dict[str, object]:
    merged = {k: v for part in parts for k, v in part.items()}
    return {name: merged[name] for name in MODULE_TYPES if name in merged}


def metadata_modules(ds: Dataset, *, frame: int = 1) -> dict[str, object]:
    """Every standard module of ``ds`` for ``frame`` (1-based), keyed by Cornerstone's name."""
    frames = max(frame_count(ds), 1)
    return _ordered(_instance_modules(FrameView(ds)), _frame_modules(FrameView(ds, frame), frames))


def metadata_modules_by_frame(
    ds: Dataset, *, image_id: str | None = None, max_frames: int = MAX_FRAMES
) -> list[dict[str, object]]:
    """:func:`metadata_modules` of every frame, in order; frame-independent modules are shared.

    Raises ImageTooLargeError when the object claims more than ``max_frames`` frames:
    the work is per frame, and a header (DICOM JSON has no pixel data to check it
    against) may claim 2**31 - 1 of them.
    """
    frames = max(frame_count(ds), 1)
    if frames > max_frames:
        raise ImageTooLargeError(
            f"{frames} frames exceed the limit of {max_frames} frames per object",
            image_id=image_id,
        )
    shared = _instance_modules(FrameView(ds))
    return [
        _ordered(shared, _frame_modules(FrameView(ds, n), frames)) for n in range(1, frames + 1)
    ]


def _module(modules: Mapping[str, object], name: str, kind: type, image_id: str | None) -> object:
    module = modules.get(name)
    if module is not None and not isinstance(module, kind):
        raise MetadataError(f"{name} is a {type(module).__name__}", image_id=image_id)
    return module


def pixel_params_from_modules(
    modules: Mapping[str, object],
    transfer_syntax_uid: str,
    *,
    image_id: str | None = None,
) -> PixelParams:
    """Pixel parameters from an image's metadata modules: the one derivation.

    The modules a loader registers carry all a decode needs (PALETTE COLOR tables
    in ``imagePixelModule``; PET SUV and RTDOSE DoseGridScaling in ``scalingModule``).
    """
    pixel = _module(modules, "imagePixelModule", ImagePixelModule, image_id)
    if not isinstance(pixel, ImagePixelModule):
        raise MetadataError("no imagePixelModule for the image", image_id=image_id)
    lut = _module(modules, "modalityLutModule", ModalityLutModule, image_id)
    series = _module(modules, "generalSeriesModule", GeneralSeriesModule, image_id)
    scaling = _module(modules, "scalingModule", ScalingModule, image_id)
    palette = None
    if pixel.photometric_interpretation == "PALETTE COLOR":
        red_d = pixel.red_palette_color_lookup_table_descriptor
        green_d = pixel.green_palette_color_lookup_table_descriptor
        blue_d = pixel.blue_palette_color_lookup_table_descriptor
        red = pixel.red_palette_color_lookup_table_data
        green = pixel.green_palette_color_lookup_table_data
        blue = pixel.blue_palette_color_lookup_table_data
        if red_d is None or green_d is None or blue_d is None:
            raise MetadataError("PALETTE COLOR without lookup tables", image_id=image_id)
        if red is None or green is None or blue is None:
            raise MetadataError("PALETTE COLOR without lookup tables", image_id=image_id)
        palette = Palette(red_d, green_d, blue_d, red, green, blue)
    return PixelParams(
        transfer_syntax_uid=decoder_syntax(transfer_syntax_uid),
        rows=pixel.rows,
        columns=pixel.columns,
        samples_per_pixel=pixel.samples_per_pixel,
        bits_allocated=pixel.bits_allocated,
        bits_stored=pixel.bits_stored,
        pixel_representation=pixel.pixel_representation,
        photometric_interpretation=pixel.photometric_interpretation,
        planar_configuration=pixel.planar_configuration,
        rescale_slope=lut.rescale_slope if isinstance(lut, ModalityLutModule) else None,
        rescale_intercept=lut.rescale_intercept if isinstance(lut, ModalityLutModule) else None,
        modality=series.modality if isinstance(series, GeneralSeriesModule) else None,
        suvbw=scaling.suvbw if isinstance(scaling, ScalingModule) else None,
        dose_grid_scaling=(
            scaling.dose_grid_scaling if isinstance(scaling, ScalingModule) else None
        ),
        palette=palette,
    )
