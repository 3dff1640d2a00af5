"""Metadata modules, field by field, with Cornerstone's semantics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from imageloader import errors
from imageloader.dicom.modules import (
    MAX_FRAMES,
    metadata_modules,
    metadata_modules_by_frame,
    pixel_params_from_modules,
)
from imageloader.dicom.part10 import parse_part10, pixel_params
from imageloader.metadata import (
    MODULE_TYPES,
    GeneralImageModule,
    GeneralSeriesModule,
    ImagePixelModule,
    ImagePlaneModule,
    ModalityLutModule,
    MultiframeModule,
    PatientModule,
    PatientStudyModule,
    ScalingModule,
    SopCommonModule,
    VoiLutModule,
)

from ._dicomdata import CORNERSTONE, data_file, pydicom_warnings_allowed, read, to_bytes


def _corpus(name: str) -> Path:
    return CORNERSTONE / name


def _modules(source: str | Path | Dataset, frame: int = 1) -> dict[str, object]:
    with pydicom_warnings_allowed():
        ds = source if isinstance(source, Dataset) else parse_part10(str(source)).dataset
        return metadata_modules(ds, frame=frame)


def test_ct_modules_field_by_field() -> None:
    modules = _modules(_corpus("CTImage.dcm"))
    # Every module but scalingModule (a CT has no SUV or dose factor), in the standard order.
    assert list(modules) == [name for name in MODULE_TYPES if name != "scalingModule"]
    assert modules["imagePixelModule"] == ImagePixelModule(
        samples_per_pixel=1,
        photometric_interpretation="MONOCHROME2",
        rows=512,
        columns=512,
        bits_allocated=16,
        bits_stored=16,
        high_bit=15,
        pixel_representation=1,
    )
    assert modules["imagePlaneModule"] == ImagePlaneModule(
        rows=512,
        columns=512,
        frame_of_reference_uid="1.2.840.113619.2.30.1.1762295590.1623.978668949.886.8493.0.12",
        image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        row_cosines=(1.0, 0.0, 0.0),
        column_cosines=(0.0, 1.0, 0.0),
        image_position_patient=(-161.399994, -148.800003, 4.7),
        slice_thickness=5.0,
        slice_location=4.6999998093,
        spacing_between_slices=6.5,
        pixel_spacing=(0.675781, 0.675781),
        row_pixel_spacing=0.675781,
        column_pixel_spacing=0.675781,
        using_default_values=False,
    )
    assert modules["generalSeriesModule"] == GeneralSeriesModule(
        modality="CT",
        series_instance_uid="1.2.840.113619.2.30.1.1762295590.1623.978668949.890",
        series_number=2,
        study_instance_uid="1.2.840.113619.2.30.1.1762295590.1623.978668949.886",
        series_description="HELICAL CHEST",
        series_date="20010105",
        series_time="083709",
        acquisition_date="20010105",
        acquisition_time="083848",
    )
    assert modules["generalImageModule"] == GeneralImageModule(
        sop_instance_uid="1.2.840.113619.2.30.1.1762295590.1623.978668950.109",
        instance_number=1,
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
    )
    assert modules["patientModule"] == PatientModule(patient_id="2178309", patient_name="MISTER^CT")
    # Empty PatientAge and PatientSex are absent, not "".
    assert modules["patientStudyModule"] == PatientStudyModule(
        study_date="20010105", study_time="083501", study_description="CHEST"
    )
    assert modules["sopCommonModule"] == SopCommonModule(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.840.113619.2.30.1.1762295590.1623.978668950.109",
    )
    assert modules["voiLutModule"] == VoiLutModule(window_center=(40.0,), window_width=(400.0,))
    assert modules["modalityLutModule"] == ModalityLutModule(
        rescale_intercept=-1024.0, rescale_slope=1.0
    )
    assert modules["multiframeModule"] == MultiframeModule(number_of_frames=1, frame_number=1)


def test_us_palette_without_pixel_spacing_uses_defaults() -> None:
    modules = _modules(_corpus("no-pixel-spacing.dcm"))
    plane = modules["imagePlaneModule"]
    assert isinstance(plane, ImagePlaneModule)
    assert plane.pixel_spacing is None
    assert (plane.row_pixel_spacing, plane.column_pixel_spacing) == (1.0, 1.0)
    assert plane.image_orientation_patient == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert plane.image_position_patient == (0.0, 0.0, 0.0)
    assert plane.using_default_values is True
    pixel = modules["imagePixelModule"]
    assert isinstance(pixel, ImagePixelModule)
    assert pixel.photometric_interpretation == "PALETTE COLOR"
    assert pixel.red_palette_color_lookup_table_descriptor == (256, 0, 16)
    assert pixel.blue_palette_color_lookup_table_descriptor == (256, 0, 16)
    red = pixel.red_palette_color_lookup_table_data
    assert red is not None and red.dtype == np.uint16 and red.shape == (256,)
    assert (int(red[0]), int(red[1]), int(red[-1])) == (0, 256, 256)
    series, image = modules["generalSeriesModule"], modules["generalImageModule"]
    assert isinstance(series, GeneralSeriesModule) and series.modality == "US"
    assert isinstance(image, GeneralImageModule) and image.lossy_image_compression == "00"


def _enhanced_mr() -> Dataset:
    """emri_small (10 frames) turned into an enhanced MR with functional groups."""
    ds = read(data_file("emri_small.dcm"))
    for keyword in (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "WindowCenter",
        "WindowWidth",
        "RescaleSlope",
        "RescaleIntercept",
    ):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"

    def item(**values: object) -> Dataset:
        out = Dataset()
        for key, value in values.items():
            setattr(out, key, value)
        return out

    shared = item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[0, 1, 0, 0, 0, -1])]),
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[0.5, 0.75], SliceThickness=2)]),
        PixelValueTransformationSequence=Sequence(
            [item(RescaleSlope=2, RescaleIntercept=-10, RescaleType="US")]
        ),
    )
    per_frame = []
    for n in range(1, 11):
        group = item(
            PlanePositionSequence=Sequence([item(ImagePositionPatient=[3.0 * n, -5, 7])]),
            FrameVOILUTSequence=Sequence(
                [item(WindowCenter=[100 + n, 200], WindowWidth=[400, 800 + n])]
            ),
            # An item naming an instance is a reference, not this frame's data.
            ConversionSourceAttributesSequence=Sequence(
                [item(SOPInstanceUID="1.2.3.4", WindowCenter=9999)]
            ),
        )
        if n == 3:
            group.PixelValueTransformationSequence = Sequence(
                [item(RescaleSlope=4, RescaleIntercept=0, RescaleType="US")]
            )
        per_frame.append(group)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds


@pytest.mark.parametrize("frame", [1, 3, 10])
def test_enhanced_multiframe_reads_the_frame_functional_groups(frame: int) -> None:
    obj = parse_part10(to_bytes(_enhanced_mr()), image_id="dicomfile:emr")
    with pydicom_warnings_allowed():
        modules = metadata_modules(obj.dataset, frame=frame)
        params = obj.pixel_params(frame)
    plane = modules["imagePlaneModule"]
    assert isinstance(plane, ImagePlaneModule)
    assert plane.image_position_patient == (3.0 * frame, -5.0, 7.0)
    assert plane.image_orientation_patient == (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    assert (plane.row_cosines, plane.column_cosines) == ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))
    assert plane.pixel_spacing == (0.5, 0.75)
    assert (plane.row_pixel_spacing, plane.column_pixel_spacing) == (0.5, 0.75)
    assert plane.slice_thickness == 2.0 and plane.using_default_values is False
    assert modules["voiLutModule"] == VoiLutModule(
        window_center=(100.0 + frame, 200.0), window_width=(400.0, 800.0 + frame)
    )
    slope, intercept = (4.0, 0.0) if frame == 3 else (2.0, -10.0)  # per-frame beats shared
    assert modules["modalityLutModule"] == ModalityLutModule(
        rescale_intercept=intercept, rescale_slope=slope, rescale_type="US"
    )
    assert (params.rescale_slope, params.rescale_intercept) == (slope, intercept)
    assert modules["multiframeModule"] == MultiframeModule(number_of_frames=10, frame_number=frame)


def test_enhanced_ct_from_pydicom() -> None:
    first, second = (
        _modules(data_file("eCT_Supplemental.dcm"), 1),
        _modules(data_file("eCT_Supplemental.dcm"), 2),
    )
    for modules in (first, second):
        plane = modules["imagePlaneModule"]
        assert isinstance(plane, ImagePlaneModule)
        assert plane.image_orientation_patient == (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        assert plane.pixel_spacing == (0.388672, 0.388672) and plane.slice_thickness == 10.0
        assert modules["voiLutModule"] == VoiLutModule(window_center=(49.0,), window_width=(102.0,))
        assert modules["modalityLutModule"] == ModalityLutModule(-1024.0, 1.0, "US")
    plane1, plane2 = first["imagePlaneModule"], second["imagePlaneModule"]
    assert isinstance(plane1, ImagePlaneModule) and isinstance(plane2, ImagePlaneModule)
    assert plane2.image_position_patient == (99.5, -301.5, -149.0)
    assert plane1.image_position_patient is not None
    assert plane1.image_position_patient[2] != plane2.image_position_patient[2]


def test_rtdose_frames_step_along_the_grid_frame_offsets() -> None:
    path = data_file("rtdose.dcm")
    first, last = _modules(path, 1), _modules(path, 15)
    for modules, z in ((first, -761.87), (last, -761.87 + 70)):
        plane = modules["imagePlaneModule"]
        assert isinstance(plane, ImagePlaneModule)
        assert plane.image_position_patient == pytest.approx((189.43125, 199.43125, z))
        assert plane.pixel_spacing == (10.0, 10.0)
    multiframe = last["multiframeModule"]
    assert multiframe == MultiframeModule(
        number_of_frames=15, frame_number=15, frame_increment_pointer="3004000C"
    )
    # Absolute offsets (the z of each plane of an axial grid) are taken as they are.
    ds = read(path)
    ds.GridFrameOffsetVector = [-761.87 + 2.5 * k for k in range(15)]
    plane = _modules(ds, 4)["imagePlaneModule"]
    assert isinstance(plane, ImagePlaneModule)
    assert plane.image_position_patient == pytest.approx((189.43125, 199.43125, -754.37))


def test_scaling_module_carries_dose_grid_scaling_to_rebuilt_params() -> None:
    path = data_file("rtdose.dcm")
    ds = read(path)
    modules = _modules(path, 3)
    scaling = modules["scalingModule"]
    assert scaling == ScalingModule(suvbw=None, dose_grid_scaling=float(ds.DoseGridScaling))
    # With the dataset gone, parameters rebuilt from the modules keep the factor.
    rebuilt = pixel_params_from_modules(modules, "1.2.840.10008.1.2")
    direct = pixel_params(ds, "1.2.840.10008.1.2", frame=3)
    assert rebuilt.dose_grid_scaling == direct.dose_grid_scaling == float(ds.DoseGridScaling)
    assert "scalingModule" not in _modules(data_file("CT_small.dcm"))


def test_nm_multiframe_geometry_from_the_detector() -> None:
    ds = read(data_file("CT_small.dcm"))
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    ds.Modality, ds.NumberOfFrames, ds.SpacingBetweenSlices = "NM", 4, 2.5
    detector = Dataset()
    detector.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    detector.ImagePositionPatient = [10, 20, 30]
    ds.DetectorInformationSequence = Sequence([detector])
    plane = _modules(ds, 3)["imagePlaneModule"]
    assert isinstance(plane, ImagePlaneModule)
    assert plane.image_orientation_patient == (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    # normal = row x column = (0, 1, 0); two steps of 2.5 from the detector position
    assert plane.image_position_patient == (10.0, 25.0, 30.0)
    assert plane.using_default_values is False


DX = "1.2.840.10008.5.1.4.1.1.1.1"


@pytest.mark.parametrize(
    ("sop_class", "attributes", "spacing"),
    [
        (
            DX,
            {"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.25},
            0.16,
        ),
        (
            DX,
            {
                "ImagerPixelSpacing": [0.2, 0.2],
                "DistanceSourceToDetector": 1000,
                "DistanceSourceToPatient": 800,
            },
            0.16,
        ),
        (DX, {"ImagerPixelSpacing": [0.2, 0.2], "PixelSpacing": [0.15, 0.15]}, 0.15),
        (
            DX,
            {
                "ImagerPixelSpacing": [0.2, 0.2],
                "PixelSpacing": [0.3, 0.3],
                "PixelSpacingCalibrationType": "FIDUCIAL",
            },
            0.3,
        ),
        (DX, {"ImagerPixelSpacing": [0.2, 0.2]}, 0.2),
        ("1.2.840.10008.5.1.4.1.1.2", {"ImagerPixelSpacing": [0.2, 0.2]}, None),
    ],
)
def test_projection_radiograph_spacing(
    sop_class: str, attributes: dict[str, object], spacing: float | None
) -> None:
    ds = read(data_file("CT_small.dcm"))
    # CT_small carries its scanner geometry: only the attributes under test may speak.
    for keyword in ("PixelSpacing", "DistanceSourceToDetector", "DistanceSourceToPatient"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = sop_class
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    plane = _modules(ds)["imagePlaneModule"]
    assert isinstance(plane, ImagePlaneModule)
    if spacing is None:
        assert plane.pixel_spacing is None and plane.using_default_values is True
        assert plane.row_pixel_spacing == 1.0
    else:
        assert plane.pixel_spacing == pytest.approx((spacing, spacing))
        assert plane.row_pixel_spacing == pytest.approx(spacing)


def test_objects_without_an_image_leave_the_image_modules_out() -> None:
    modules = _modules(read(_corpus("no-pixel-data.dcm")))
    assert "imagePixelModule" not in modules and "imagePlaneModule" not in modules
    sop = modules["sopCommonModule"]
    assert isinstance(sop, SopCommonModule) and sop.sop_class_uid is not None


def test_modules_by_frame_share_what_does_not_change() -> None:
    ds = _enhanced_mr()
    with pydicom_warnings_allowed():
        every = metadata_modules_by_frame(ds)
        single = [metadata_modules(ds, frame=n) for n in range(1, 11)]
    assert every == single
    assert every[0]["imagePixelModule"] is every[9]["imagePixelModule"]
    assert every[0]["imagePlaneModule"] != every[9]["imagePlaneModule"]


@pytest.mark.parametrize("name", ["CTImage.dcm", "TestPattern_Palette_16.dcm"])
def test_pixel_params_from_modules_match_the_dataset(name: str) -> None:
    obj = parse_part10(str(_corpus(name)))
    with pydicom_warnings_allowed():
        expected = obj.pixel_params()
        rebuilt = pixel_params_from_modules(
            metadata_modules(obj.dataset), obj.transfer_syntax_uid, image_id="x"
        )
    for field in dataclasses.fields(expected):
        if field.name != "palette":
            assert getattr(rebuilt, field.name) == getattr(expected, field.name), field.name
    if expected.palette is None:
        assert rebuilt.palette is None
    else:
        assert rebuilt.palette is not None
        assert rebuilt.palette.red_descriptor == expected.palette.red_descriptor
        np.testing.assert_array_equal(rebuilt.palette.blue, expected.palette.blue)


def test_pixel_params_from_modules_needs_the_pixel_module() -> None:
    with pytest.raises(errors.MetadataError, match="imagePixelModule") as info:
        pixel_params_from_modules({}, ExplicitVRLittleEndian, image_id="wadors:x")
    assert info.value.image_id == "wadors:x"


def test_pixel_params_of_a_dataset_without_file_meta() -> None:
    ds = read(data_file("CT_small.dcm"))
    params = pixel_params(ds, "1.2.840.10008.1.2.1.99")
    assert params.transfer_syntax_uid == ExplicitVRLittleEndian  # deflated: inflated bytes
    assert (params.rows, params.columns, params.bits_stored) == (128, 128, 16)


def test_modules_by_frame_refuse_more_frames_than_the_bound() -> None:
    # Found by fuzzing DICOM JSON: NumberOfFrames 2147483647 in an instance's metadata
    # (no pixel data to check it against) built modules frame by frame until memory
    # ran out. The same header with an honest count still gives every frame.
    ds = read(data_file("MR_small.dcm"))
    ds.NumberOfFrames = 2147483647
    with pytest.raises(errors.ImageTooLargeError, match="2147483647 frames") as caught:
        metadata_modules_by_frame(ds, image_id="wadors:big")
    assert caught.value.image_id == "wadors:big"
    ds.NumberOfFrames = MAX_FRAMES + 1
    with pytest.raises(errors.ImageTooLargeError):
        metadata_modules_by_frame(ds)
    ds.NumberOfFrames = 3
    assert len(metadata_modules_by_frame(ds, max_frames=3)) == 3
    with pytest.raises(errors.ImageTooLargeError):
        metadata_modules_by_frame(ds, max_frames=2)


def test_instance_metadata_claiming_too_many_frames_is_too_large() -> None:
    from imageloader.dicom.dicomjson import dataset_from_json
    from imageloader.dicom.instances import instance_modules

    item = {
        "00280008": {"vr": "IS", "Value": [2147483647]},
        "00280010": {"vr": "US", "Value": [64]},
        "00280011": {"vr": "US", "Value": [64]},
    }
    with pytest.raises(errors.ImageTooLargeError) as caught:
        instance_modules(
            "https://pacs/studies/1/series/2/instances/3", dataset_from_json(item), "x"
        )
    assert caught.value.image_id == "x"
