"""Where the Cornerstone3D test images are: ``tests/data/cornerstone`` in this repository.

They are part of the repository (MIT, see ``tests/data/cornerstone/LICENSE`` and its
README for where they come from), so every test that uses them runs on any clone.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORNERSTONE = REPO / "tests" / "data" / "cornerstone"
