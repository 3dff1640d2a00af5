"""Fuzzing profiles, per-target example budgets, and the tally of fuzz cases run.

Profiles (``IMAGELOADER_FUZZ``):

- ``ci`` (default): each target's base budget, derandomized (the same examples on
  every run, no example database), so the whole ``tests/fuzz`` run is reproducible
  and takes about a minute on two cores;
- ``long``: ``IMAGELOADER_FUZZ_SCALE`` (default 12) times the budgets, random
  seeds (``--hypothesis-seed=N`` fixes one), no deadline, failures kept in the
  ``.hypothesis`` database so they replay first next time, and no per-test timeout.

Every executed example is counted under its target (shrinking and replays too:
they are cases run); the tally is printed at the end of the session and written as
JSON to ``IMAGELOADER_FUZZ_REPORT`` (default ``build/fuzz-cases.json``).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("IMAGELOADER_FUZZ", "ci").strip().lower() or "ci"
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"IMAGELOADER_FUZZ must be 'ci' or 'long', not {PROFILE!r}")
SCALE = float(os.environ.get("IMAGELOADER_FUZZ_SCALE", "12")) if PROFILE == "long" else 1.0
#: Seconds one sandboxed case may take before it counts as a hang.
CASE_TIMEOUT = float(os.environ.get("IMAGELOADER_FUZZ_CASE_TIMEOUT", "30"))
REPORT = Path(
    os.environ.get(
        "IMAGELOADER_FUZZ_REPORT", Path(__file__).resolve().parents[2] / "build/fuzz-cases.json"
    )
)

_QUIET = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]
settings.register_profile(
    "imageloader-fuzz-ci",
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=2),
    print_blob=True,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "imageloader-fuzz-long",
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)
_BASE = settings.get_profile(f"imageloader-fuzz-{PROFILE}")


def fuzz_settings(examples: int, *, sandboxed: bool = False) -> settings:
    """Settings for a target whose CI budget is ``examples`` (scaled in the long profile).

    Sandboxed targets bound each case themselves (:data:`CASE_TIMEOUT`), so they
    have no Hypothesis deadline (which would also count the process round trip).
    """
    budget = max(1, round(examples * SCALE))
    if sandboxed:
        return settings(_BASE, max_examples=budget, deadline=None)
    return settings(_BASE, max_examples=budget)


@dataclass
class Tally:
    """The cases one target ran and how they ended."""

    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    slowest: float = 0.0


TALLY: dict[str, Tally] = {}
_STARTED = time.monotonic()


def record(target: str, outcome: str, seconds: float = 0.0) -> None:
    """Count one case of ``target`` that ended in ``outcome`` ("ok" or an error's name)."""
    tally = TALLY.setdefault(target, Tally())
    tally.cases += 1
    tally.outcomes[outcome] += 1
    tally.seconds += seconds
    tally.slowest = max(tally.slowest, seconds)


def summary_lines() -> list[str]:
    """One line per target: cases run, the commonest outcomes, the slowest case."""
    lines = [f"profile {PROFILE} (scale {SCALE:g}), case timeout {CASE_TIMEOUT:g} s"]
    for target in sorted(TALLY):
        tally = TALLY[target]
        common = ", ".join(f"{name} {count}" for name, count in tally.outcomes.most_common(4))
        lines.append(
            f"{target:<28} {tally.cases:>7} cases  slowest {tally.slowest:6.2f} s  [{common}]"
        )
    total = sum(t.cases for t in TALLY.values())
    lines.append(f"{'total':<28} {total:>7} cases")
    return lines


def report() -> dict[str, Any]:
    """The tally as JSON-able data."""
    return {
        "profile": PROFILE,
        "scale": SCALE,
        "case_timeout_seconds": CASE_TIMEOUT,
        "wall_seconds": round(time.monotonic() - _STARTED, 1),
        "total_cases": sum(t.cases for t in TALLY.values()),
        "targets": {
            target: {
                "cases": tally.cases,
                "outcomes": dict(tally.outcomes.most_common()),
                "case_seconds": round(tally.seconds, 3),
                "slowest_case_seconds": round(tally.slowest, 3),
            }
            for target, tally in sorted(TALLY.items())
        },
    }


def write_report() -> Path | None:
    """Write the tally to :data:`REPORT` (nothing when no case ran)."""
    if not TALLY:
        return None
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report(), indent=2) + "\n")
    return REPORT
