"""The properties every fuzz target shares, checked in the test process.

- :func:`run_case`: a sandboxed case must end by returning or by raising one of
  our typed errors that names the imageId; a crash, a hang, a foreign exception
  and an allocation that ran out of memory are failures. Each case is tallied.
- :func:`assert_decoded`: a decoded frame keeps the pixel contract (shape from the
  pixel module, dtype from the value range, RGB(A) uint8 for colour).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from imageloader.decode.params import DecodeOptions, PixelParams
from imageloader.decode.pixels import dtype_for_range, scaling_for
from imageloader.errors import ImageLoaderError

from ._fuzz import CASE_TIMEOUT, record
from ._probes import IMAGE_ID
from ._sandbox import Crashed, Hung, Raised, Returned, Sandbox

T = TypeVar("T")

GREY_DTYPES = frozenset({"|u1", "<u2", "<u4", "|i1", "<i2", "<f4"})

#: Bugs found in files this suite's authors do not own, reported to their owners:
#: (target, exception type, words of its message). A case that hits one is tallied as
#: KNOWN instead of failing, so a long run goes on looking for new ones; each has a
#: strict xfail test (tests/fuzz/test_known_issues.py) that starts to pass when fixed.
KNOWN_ISSUES: tuple[tuple[str, str, str], ...] = ()  # (target, exception type, words)


def _known(target: str, raised: Raised) -> bool:
    return any(
        target == known_target and raised.type_name == type_name and words in raised.message
        for known_target, type_name, words in KNOWN_ISSUES
    )


def outcome_of(
    call: Callable[[], T], *expected: type[ImageLoaderError]
) -> tuple[T | None, ImageLoaderError | None]:
    """``(call(), None)``, or ``(None, error)`` when it raised one of ``expected``."""
    try:
        return call(), None
    except expected as exc:
        return None, exc


def _describe_input(context: str) -> str:
    return f" (input: {context})" if context else ""


def run_case(
    sandbox: Sandbox, target: str, probe: str, *args: Any, context: str = ""
) -> Returned | Raised:
    """Run one case; fail (AssertionError, so Hypothesis shrinks it) unless it ended well."""
    outcome = sandbox.run(probe, *args, timeout=CASE_TIMEOUT)
    where = _describe_input(context)
    if isinstance(outcome, Hung):
        record(target, "HANG", outcome.seconds)
        raise AssertionError(f"{target}: no answer after {outcome.timeout:g} s{where}")
    if isinstance(outcome, Crashed):
        record(target, "CRASH", outcome.seconds)
        raise AssertionError(f"{target}: the process died (exit code {outcome.exitcode}){where}")
    if isinstance(outcome, Raised):
        known = not outcome.typed and not outcome.memory and _known(target, outcome)
        name = "KNOWN ISSUE" if known else outcome.type_name.rsplit(".", 1)[-1]
        record(target, name, outcome.seconds)
        if outcome.memory:
            raise AssertionError(
                f"{target}: ran out of memory (an allocation sized by the input?){where}\n"
                f"{outcome.traceback}"
            )
        if known:
            return outcome
        if not outcome.typed:
            raise AssertionError(
                f"{target}: foreign exception {outcome.type_name}: {outcome.message}{where}\n"
                f"{outcome.traceback}"
            )
        assert outcome.image_id == IMAGE_ID, f"{outcome.type_name} does not name the imageId"
        return outcome
    record(target, _first_error(outcome.value), outcome.seconds)
    return outcome


def _first_error(value: Any) -> str:
    """How a probe's steps ended: "ok", or the first typed error one of them raised."""
    steps = value.get("steps") if isinstance(value, dict) else None
    for _, result in steps or ():
        if result != "ok":
            return str(result)
    return "ok"


def _same(a: float, b: float | None) -> bool:
    if b is None:
        return False
    return (math.isnan(a) and math.isnan(b)) or a == b


def _integral_scaling(params: PixelParams, options: DecodeOptions) -> bool:
    scaling = scaling_for(params) if options.prescale else None
    if scaling is None:
        return True
    numbers = (scaling.slope, scaling.intercept, scaling.suvbw, scaling.dose_grid_scaling)
    return all(n is None or float(n).is_integer() for n in numbers)


def assert_decoded(summary: dict[str, Any], params: PixelParams, options: DecodeOptions) -> None:
    """A decoded frame's summary (from :func:`tests.fuzz._probes.summarize`) keeps the contract."""
    shape = summary["shape"]
    assert shape[:2] == (params.rows, params.columns), (shape, params)
    assert summary["contiguous"], "pixels must be C-contiguous"
    if summary["color"]:
        assert len(shape) == 3 and shape[2] == (4 if options.use_rgba else 3), shape
        assert summary["dtype"] == "|u1", summary["dtype"]
        assert summary["pi"] == "RGB", summary["pi"]
    else:
        assert len(shape) == 2, shape
        assert summary["dtype"] in GREY_DTYPES, summary["dtype"]
        assert summary["pi"] in ("MONOCHROME1", "MONOCHROME2"), summary["pi"]
        lo, hi = summary["min_value"], summary["max_value"]
        expected = dtype_for_range(lo, hi)
        if _integral_scaling(params, options):
            # Integer samples, integer scaling: the smallest container of the range.
            assert np.dtype(summary["dtype"]) == expected, (summary["dtype"], lo, hi)
        else:
            # Fractional scaling: float32, unless the scaled range is integral. (Its
            # ends are float32 values, which may round to integers: 1e-300 → 0.0.)
            assert summary["dtype"] in ("<f4", expected.str), (summary["dtype"], lo, hi)
    assert _same(summary["min_value"], summary["data_min"]), summary
    assert _same(summary["max_value"], summary["data_max"]), summary
