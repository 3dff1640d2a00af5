"""QIDO-RS query strings (PS3.18 8.3.4), checked before any request is sent.

:func:`query_params` turns search filters into the ``(key, value)`` pairs of a QIDO-RS
query. Every attribute is a DICOM keyword known to pydicom's dictionary (``Modality``,
``StudyDate``), a tag as 8 hex digits (``"00100020"``), or a dotted path of those into
a sequence (``"ReferencedSeriesSequence.SeriesInstanceUID"``); anything else is a
``ValueError`` naming it. Values go as given (the server does the matching: wildcards
``*`` and ``?``, date ranges ``"20240101-20241231"``); a list or tuple is a list of
UIDs, joined with commas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.datadict import tag_for_keyword

__all__ = ["check_attribute", "check_uid", "is_uid", "query_params"]

_TAG = re.compile(r"[0-9A-Fa-f]{8}")
#: A DICOM UID (PS3.5 9.1): digits in dot-separated components, at most 64 characters.
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def check_attribute(name: str) -> str:
    """``name`` if it is a DICOM keyword, an 8-hex-digit tag, or a dotted path of them."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"not a DICOM attribute: {name!r}")
    for part in name.split("."):
        if not (_TAG.fullmatch(part) or tag_for_keyword(part) is not None):
            raise ValueError(f"unknown DICOM keyword or tag: {part!r}")
    return name


def is_uid(value: object) -> bool:
    """Whether ``value`` is a DICOM UID: the one rule for every UID put into a URL."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def check_uid(what: str, value: str) -> str:
    """``value`` if it is a DICOM UID (it goes into a URL path); else ValueError."""
    if not is_uid(value):
        raise ValueError(f"{what} is not a DICOM UID: {value!r}")
    return value


def _value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError(f"filter {name}: a bool is not a DICOM value")
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise TypeError(f"filter {name}: expected a str, a number or a list of str, got {value!r}")


def _include_fields(includefield: str | Iterable[str] | None) -> list[str]:
    if includefield is None:
        return []
    fields = [includefield] if isinstance(includefield, str) else list(includefield)
    return [f if f == "all" else check_attribute(f) for f in fields]


def query_params(
    filters: Mapping[str, Any],
    *,
    includefield: str | Iterable[str] | None = None,
    fuzzymatching: bool | None = None,
) -> list[tuple[str, str]]:
    """The query's pairs (without ``limit``/``offset``); ValueError/TypeError if bad.

    ``includefield`` is a keyword, a tag or ``"all"``, or a list of them (one
    ``includefield`` parameter each); ``fuzzymatching`` is sent as ``true``/``false``.
    """
    params = [(check_attribute(name), _value(name, value)) for name, value in filters.items()]
    params += [("includefield", field) for field in _include_fields(includefield)]
    if fuzzymatching is not None:
        if not isinstance(fuzzymatching, bool):
            raise TypeError(f"fuzzymatching must be a bool, got {fuzzymatching!r}")
        params.append(("fuzzymatching", "true" if fuzzymatching else "false"))
    return params
