"""Slice orientation: the pixels and the image plane module agree with the NIfTI affine.

A synthetic volume stores each voxel's own index ``(i, j, k)``; after loading, every
pixel's position computed the DICOM way from the registered imagePlaneModule must be
nibabel's world position of the voxel whose index it holds (converted RAS → LPS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from imageloader import ImageLoader
from imageloader.geometry import slice_geometry
from imageloader.metadata import ImagePlaneModule
from imageloader.nifti import create_nifti_image_ids
from tests.nifti._volumes import index_volume, nifti_bytes, oblique_affine, write

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
SHAPE = (5, 4, 3)


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=0) as il:
        yield il


def dicom_position(plane: ImagePlaneModule, row: int, column: int) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: IPP + column·Δc·row_cosines + row·Δr·column_cosines."""
    assert plane.image_position_patient and plane.row_cosines and plane.column_cosines
    return (
        np.asarray(plane.image_position_patient)
        + column * plane.column_pixel_spacing * np.asarray(plane.row_cosines)
        + row * plane.row_pixel_spacing * np.asarray(plane.column_cosines)
    )


async def load_slices(
    loader: ImageLoader, path: Path
) -> list[tuple[str, np.ndarray, ImagePlaneModule]]:
    ids = await create_nifti_image_ids(loader, str(path))
    images = await loader.load_and_cache_images(ids)
    return [
        (i, image.pixel_data, loader.metadata.get("imagePlaneModule", i))
        for i, image in zip(ids, images, strict=True)
    ]


@pytest.mark.parametrize("gz", [False, True])
async def test_every_pixel_is_where_the_affine_puts_its_voxel(
    loader: ImageLoader, tmp_path: Path, gz: bool
) -> None:
    affine = oblique_affine((0.8, 1.5, 2.5), (10.0, -20.0, 30.0))
    path = write(
        tmp_path / f"index.nii{'.gz' if gz else ''}",
        nifti_bytes(index_volume(SHAPE), affine, gz=gz),
    )
    slices = await load_slices(loader, path)
    assert len(slices) == SHAPE[2]
    for frame, (_, pixels, plane) in enumerate(slices):
        assert pixels.shape == (SHAPE[1], SHAPE[0]) == (plane.rows, plane.columns)
        for row in range(plane.rows):
            for column in range(plane.columns):
                value = int(pixels[row, column])
                i, j, k = value % 100, value // 100 % 100, value // 10000
                # The axis convention: pixel[r, c] is voxel (i=c, j=r, k=frame).
                assert (i, j, k) == (column, row, frame)
                world_ras = nib.affines.apply_affine(affine, (i, j, k))
                np.testing.assert_allclose(
                    dicom_position(plane, row, column), RAS_TO_LPS @ world_ras, atol=1e-9
                )


async def test_slices_form_the_volume_the_header_describes(
    loader: ImageLoader, tmp_path: Path
) -> None:
    affine = oblique_affine((0.8, 1.5, 2.5), (10.0, -20.0, 30.0))
    path = write(tmp_path / "grid.nii", nifti_bytes(index_volume(SHAPE), affine))
    slices = await load_slices(loader, path)
    geometry = slice_geometry({image_id: plane for image_id, _, plane in slices})
    assert geometry.regular
    np.testing.assert_allclose(geometry.spacing, (0.8, 1.5, 2.5))
    plane = slices[0][2]
    assert plane.pixel_spacing == pytest.approx((1.5, 0.8))  # (between rows, between columns)
    assert plane.slice_thickness == pytest.approx(2.5)
    normal = np.cross(plane.row_cosines, plane.column_cosines)
    k_axis = RAS_TO_LPS @ affine[:3, 2] / 2.5
    # Slices are sorted along row × column; with this affine that is +k or -k.
    assert abs(float(np.dot(normal, k_axis))) == pytest.approx(1.0)


async def test_ras_identity_is_lps_with_x_and_y_flipped(
    loader: ImageLoader, tmp_path: Path
) -> None:
    affine = np.eye(4)
    affine[:3, 3] = (7.0, 8.0, 9.0)
    path = write(tmp_path / "ras.nii", nifti_bytes(index_volume(SHAPE), affine))
    _, _, plane = (await load_slices(loader, path))[1]
    assert plane.row_cosines == (-1.0, 0.0, 0.0)  # i runs to patient right: -x in LPS
    assert plane.column_cosines == (0.0, -1.0, 0.0)  # j runs anterior: -y in LPS
    assert plane.image_position_patient == (-7.0, -8.0, 10.0)  # slice k = 1
    assert plane.image_orientation_patient == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    assert not plane.using_default_values


async def test_without_qform_or_sform_pixdim_scales_the_voxel_grid(
    loader: ImageLoader, tmp_path: Path
) -> None:
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    body = nifti_bytes(index_volume(SHAPE), affine, codes=(0, 0))
    path = write(tmp_path / "method1.nii", body)
    _, _, plane = (await load_slices(loader, path))[2]
    # NIfTI's method 1 (x = pixdim1·i, y = pixdim2·j, z = pixdim3·k) in RAS, then LPS.
    assert plane.row_cosines == (-1.0, 0.0, 0.0)
    assert plane.column_cosines == (0.0, -1.0, 0.0)
    assert plane.image_position_patient == (0.0, 0.0, 8.0)
    assert plane.pixel_spacing == (3.0, 2.0)


async def test_a_2d_image_without_slice_thickness(loader: ImageLoader, tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.uint8).reshape(4, 3)
    body = bytearray(nifti_bytes(data, np.diag([0.5, 0.25, 1.0, 1.0]), codes=(0, 1)))
    # No k axis at all: srow_z (offset 312) and pixdim[3] (offset 88) zero.
    body[312:328] = bytes(16)
    body[88:92] = bytes(4)
    path = write(tmp_path / "flat.nii", bytes(body))
    ids = await create_nifti_image_ids(loader, str(path))
    assert len(ids) == 1
    loaded = await loader.load_image(ids[0])
    np.testing.assert_array_equal(loaded.pixel_data, data.T)
    plane = loader.metadata.get("imagePlaneModule", ids[0])
    assert plane.pixel_spacing == (0.25, 0.5) and not plane.using_default_values
    assert (loaded.row_pixel_spacing, loaded.column_pixel_spacing) == (0.25, 0.5)
    assert plane.slice_thickness == 1.0  # a default along the normal of the plane
    assert np.cross(plane.row_cosines, plane.column_cosines) == pytest.approx((0, 0, 1))
