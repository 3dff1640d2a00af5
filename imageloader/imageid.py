"""ImageId syntax: ``scheme:rest``, as Cornerstone splits it, and what every loader checks.

The lowest room of the loader side: the access policy checks schemes with it, the
registry dispatches on it and the loaders' parsers share :func:`http_url` and
:func:`check_frame`, so it imports nothing of theirs.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from .errors import InvalidImageIdError

__all__ = ["check_frame", "http_url", "split_scheme"]


def split_scheme(image_id: object) -> tuple[str, str]:
    """``"wadors:https://x/y"`` → ``("wadors", "https://x/y")``.

    Raises :class:`InvalidImageIdError` for an empty or non-str imageId. An imageId
    without ``:`` has the empty scheme, which only a fallback loader can serve.
    """
    if not isinstance(image_id, str):
        raise InvalidImageIdError(
            f"imageId must be a str, not {type(image_id).__name__}", image_id=repr(image_id)
        )
    if not image_id or image_id.isspace():
        raise InvalidImageIdError("imageId is empty", image_id=image_id)
    scheme, sep, rest = image_id.partition(":")
    if not sep:
        return "", image_id
    return scheme, rest


def http_url(url: str, image_id: str) -> SplitResult:
    """``url`` split, when it is an http(s) URL with a host that can be sent.

    Raises :class:`InvalidImageIdError` naming ``image_id`` otherwise: another
    scheme, no host, a malformed port or bracketed host, or a lone surrogate
    (JSON's ``"\\ud800"``), which no request can carry.
    """
    try:
        url.encode("utf-8")
        parts = urlsplit(url)
        parts.port  # noqa: B018 - checks the port number
    except ValueError as exc:  # UnicodeEncodeError is one
        raise InvalidImageIdError(f"malformed URL: {exc}", image_id=image_id) from exc
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidImageIdError("expected an http(s) URL with a host", image_id=image_id)
    return parts


def check_frame(frame: int, count: int, image_id: str | None, *, first: int = 1) -> None:
    """Raise :class:`InvalidImageIdError` unless ``frame`` is one of ``count`` frames.

    Frames are numbered from ``first``: 1 for DICOM (and WADO-RS), 0 for NIfTI.
    """
    if isinstance(frame, bool) or not isinstance(frame, int) or not first <= frame < first + count:
        raise InvalidImageIdError(
            f"frame {frame!r} is outside {first}..{first + count - 1}", image_id=image_id
        )
