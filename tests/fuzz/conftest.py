"""Fuzzing fixtures: the sandbox process, the profiles, and the cases-run summary.

See :mod:`tests.fuzz._fuzz` for the profiles (``IMAGELOADER_FUZZ=ci|long``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._fuzz import PROFILE, TALLY, summary_lines, write_report
from ._sandbox import Sandbox

_HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """One child process for hostile inputs, stopped (and waited for) at the end."""
    box = Sandbox()
    try:
        yield box
    finally:
        box.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE != "long":
        return
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            # A long run is bounded by its example budgets, not by the suite's 60 s.
            item.add_marker(pytest.mark.timeout(0))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY:
        return
    terminalreporter.section("fuzz cases run")
    for line in summary_lines():
        terminalreporter.write_line(line)
    path = write_report()
    if path is not None:
        terminalreporter.write_line(f"written to {path}")
