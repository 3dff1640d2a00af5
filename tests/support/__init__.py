"""Test support: a real Orthanc DICOMweb server, encoded test data, and pytest fixtures.

- :mod:`tests.support.orthanc` — :class:`OrthancServer` (start, upload, kill, restart, stop).
- :mod:`tests.support.encoders` — variants of a DICOM file made by real encoders
  (dcmtk, GDCM, pydicom, imagecodecs HTJ2K), each with fresh UIDs.
- :mod:`tests.support.dataset` — what the session's Orthanc holds, per instance.
- :mod:`tests.support.fixtures` — the pytest fixtures (``pytest_plugins``).
"""
