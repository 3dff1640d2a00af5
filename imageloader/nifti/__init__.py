"""``nifti:<url or path>?frame=<f>``: slices of NIfTI-1/NIfTI-2 files (``.nii``, ``.nii.gz``).

As Cornerstone3D's nifti-volume-loader::

    ids = await create_nifti_image_ids(loader, "https://host/brain.nii.gz")
    images = await loader.load_and_cache_images(ids)

- :func:`create_nifti_image_ids` reads only the header: over HTTP it stops the
  download once the header is in (a ``.nii.gz`` is inflated only that far), from
  disk it reads just those bytes. It registers every slice's metadata modules and
  returns one imageId per slice of one volume (``timepoint`` picks the volume of a
  4-D file).
- Frames are **0-based**, as Cornerstone's: ``frame`` ``f`` is slice
  ``k = f mod nz`` of volume ``t = f div nz``. The imageId is the source followed by
  ``?frame=<f>``, even when the URL has a query of its own (the last ``?frame=``
  counts), exactly as Cornerstone builds it.
- Loading a slice downloads (or reads) the file once for all its slices, parses it
  in a worker thread and keeps it in an :class:`~imageloader.objectcache.ObjectCache`
  until its last cached slice leaves the image cache (Cornerstone keeps it forever).
- Slices are ``(rows, columns) = (nj, ni)`` arrays in DICOM's patient coordinates
  (LPS): see :mod:`imageloader.nifti.geometry` for the axis convention.
- ``scl_slope``/``scl_inter`` are applied (``prescale``) with the DICOM path's
  container rules for integer data; floating-point data stays floating point.

Local paths are confined by the loader's :class:`~imageloader.security.AccessPolicy`
roots. ``Limits.max_response_bytes`` bounds the bytes read (downloaded or from
disk), ``max_volume_bytes`` the voxel data a header declares (checked before it is
inflated) and ``max_frame_pixels`` a slice. Needs nibabel (``imageloader[nifti]``).

Modules: :mod:`.loader` (imageIds, the loader and metadata loader), :mod:`.header`
(finding and parsing a header), :mod:`.geometry` (metadata modules in LPS) and
:mod:`.volume` (a whole file in memory, one frame as pixels).
"""

from .header import NiftiInfo
from .loader import (
    DEFAULT_MODALITY,
    SCHEME,
    create_nifti_image_ids,
    load_nifti,
    load_nifti_metadata,
    nifti_image_id,
    parse_nifti_id,
    read_nifti_header,
)

__all__ = [
    "DEFAULT_MODALITY",
    "SCHEME",
    "NiftiInfo",
    "create_nifti_image_ids",
    "load_nifti",
    "load_nifti_metadata",
    "nifti_image_id",
    "parse_nifti_id",
    "read_nifti_header",
]
