"""Where the Cornerstone3D test images are: ``../shared/corpus/cornerstone`` beside the repo.

``IMAGELOADER_CORNERSTONE_IMAGES`` overrides it. Tests that need the images skip
with a clear reason where the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORNERSTONE = Path(
    os.environ.get(
        "IMAGELOADER_CORNERSTONE_IMAGES", REPO.parent / "shared" / "corpus" / "cornerstone"
    )
)
