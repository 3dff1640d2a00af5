"""PET body-weight SUV factor, as ``@cornerstonejs/calculate-suv`` computes it.

``suvbw = weight_g / decayed_dose`` where the injected dose decays from the
radiopharmaceutical start to the scan time::

    decayed_dose = total_dose * 2 ** (-(scan_time - start_time) / half_life)

The scan time is the series date/time when it is not after the acquisition
date/time; otherwise the GE private post-injection time when present, else the
acquisition date/time. The start time is RadiopharmaceuticalStartDateTime, or
RadiopharmaceuticalStartTime on the series date. Units ``GML`` are SUV already
(factor 1); ``CNTS`` uses the Philips private SUV or activity-concentration scale
factor. Anything missing or inconsistent gives None, never an exception.

Unlike calculate-suv, which looks at every instance of a series for the earliest
acquisition time, this sees one instance; and it requires DecayCorrection START
(images decay-corrected to the scan start), the case the formula is right for.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset

from ._values import FrameView, element_value, to_float, to_string

__all__ = ["suv_body_weight"]

_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")


def parse_da(value: Any) -> tuple[int, int, int] | None:
    """A DA value ``YYYYMMDD`` as (year, month, day), or None when malformed."""
    text = to_string(value)
    if text is None or len(text) != 8 or not text.isdigit():
        return None
    return int(text[:4]), int(text[4:6]), int(text[6:])


def parse_tm(value: Any) -> tuple[int, int, int, int] | None:
    """A TM value ``HH[MM[SS[.F{1,6}]]]`` as (hour, minute, second, microsecond)."""
    text = to_string(value)
    match = _TIME.match(text or "")
    if match is None:
        return None
    hh, mm, ss, frac = match.groups()
    micro = int(frac.ljust(6, "0")) if frac else 0
    return int(hh), int(mm or 0), int(ss or 0), micro


def combine(date: Any, time: Any) -> datetime | None:
    """A DA and a TM value as one naive datetime, or None when either is malformed."""
    day, clock = parse_da(date), parse_tm(time)
    if day is None or clock is None:
        return None
    try:
        return datetime(*day, *clock)
    except ValueError:
        return None


def parse_dt(value: Any) -> datetime | None:
    """A DT value (its first 8 characters the date, the rest the time)."""
    text = to_string(value)
    if text is None or len(text) < 10:
        return None
    return combine(text[:8], text[8:])


def _private(ds: Dataset, group: int, offset: int, creator: str) -> Any:
    try:
        return ds.get_private_item(group, offset, creator).value
    except (KeyError, ValueError):
        return None


def _private_number(ds: Dataset, group: int, offset: int, creator: str) -> float | None:
    value = _private(ds, group, offset, creator)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip(" \x00")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return to_float(value)


def _decayed_dose(view: FrameView) -> float | None:
    ds = view.root
    info = element_value(ds, "RadiopharmaceuticalInformationSequence")
    if not info or not isinstance(info[0], Dataset):
        return None
    radio = info[0]
    dose = to_float(element_value(radio, "RadionuclideTotalDose"))
    half_life = to_float(element_value(radio, "RadionuclideHalfLife"))
    if not dose or not half_life or dose <= 0 or half_life <= 0:
        return None
    series = combine(view.root_value("SeriesDate"), view.root_value("SeriesTime"))
    acquisition = combine(view.root_value("AcquisitionDate"), view.root_value("AcquisitionTime"))
    if series is None or acquisition is None:
        return None
    if series <= acquisition:
        scan = series
    else:
        ge = _private(ds, 0x0009, 0x0D, "GEMS_PETD_01")
        scan = (parse_dt(ge) if ge is not None else None) or acquisition
    start_dt = element_value(radio, "RadiopharmaceuticalStartDateTime")
    if start_dt is not None:
        start = parse_dt(start_dt)
    else:
        start = combine(
            view.root_value("SeriesDate"), element_value(radio, "RadiopharmaceuticalStartTime")
        )
    if start is None:
        return None
    decay_seconds = (scan - start).total_seconds()
    if decay_seconds < 0:
        return None
    decayed = dose * 2.0 ** (-decay_seconds / half_life)
    return decayed if decayed > 0 else None


def suv_body_weight(view: FrameView) -> float | None:
    """The body-weight SUV factor of a PET object, or None when it cannot be computed."""
    if to_string(view.root_value("Modality")) != "PT":
        return None
    corrected = view.strings("CorrectedImage") or ()
    if "ATTN" not in corrected or "DECY" not in corrected:
        return None
    if to_string(view.root_value("DecayCorrection")) != "START":
        return None
    weight = view.number("PatientWeight")
    if not weight or weight <= 0:
        return None
    decayed = _decayed_dose(view)
    if decayed is None:
        return None
    weight_g = weight * 1000.0
    units = to_string(view.root_value("Units"))
    if units == "BQML":
        return weight_g / decayed
    if units == "GML":
        return 1.0
    if units == "CNTS":
        philips = "Philips PET Private Group"
        suv_scale = _private_number(view.root, 0x7053, 0x00, philips)
        if suv_scale:
            return suv_scale
        activity_scale = _private_number(view.root, 0x7053, 0x09, philips)
        if activity_scale:
            return activity_scale * weight_g / decayed
    return None
