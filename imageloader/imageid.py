"""ImageId syntax: ``scheme:rest``, as Cornerstone splits it, and what every loader checks.

The lowest room of the loader side: the access policy checks schemes with it, the
registry dispatches on it and the loaders' parsers share :func:`http_url` and
:func:`check_frame`, so it imports nothing of theirs.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from .errors import InvalidImageIdError, NotFoundError

__all__ = ["SCHEME_ALIASES", "canonical_scheme", "check_frame", "http_url", "split_scheme"]

#: Other spellings of built-in schemes: the seed page (Cornerstone's docs) writes
#: ``wado-rs:`` and ``wado-uri:``. An alias is the same scheme everywhere: in the
#: registry, the access policy and every loader's parser.
SCHEME_ALIASES: dict[str, str] = {"wado-rs": "wadors", "wado-uri": "wadouri"}

#: What may follow the colon before the rest of an imageId (and is dropped).
_SPACE = " \t\r\n\f\v"


def canonical_scheme(scheme: str) -> str:
    """``"WADO-RS"`` → ``"wadors"``: lower case (schemes are, RFC 3986 §3.1), aliases resolved."""
    scheme = scheme.lower()
    return SCHEME_ALIASES.get(scheme, scheme)


def split_scheme(image_id: object) -> tuple[str, str]:
    """``"wadors:https://x/y"`` → ``("wadors", "https://x/y")``.

    The scheme comes back canonical (:func:`canonical_scheme`: ``"Wado-RS"`` is
    ``"wadors"``), and whitespace after the colon is dropped, as the seed page's
    ``wado-rs: https://…`` writes it, so every parser reads the same rest.
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
    return canonical_scheme(scheme), rest.lstrip(_SPACE)


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
    """Raise :class:`NotFoundError` unless ``frame`` is one of ``count`` frames.

    Frames are numbered from ``first``: 1 for DICOM (and WADO-RS), 0 for NIfTI. The
    message names the valid range ("frame 2 of 1 does not exist"): the imageId is
    well formed, the object just has no such frame (so a service answers 404).
    """
    if isinstance(frame, bool) or not isinstance(frame, int):
        raise InvalidImageIdError(f"frame {frame!r} is not a number", image_id=image_id)
    if not first <= frame < first + count:
        last = first + count - 1
        shown = frame if first == 1 else f"{frame} (0-based)"
        valid = "it has none" if count <= 0 else f"frames are {first}..{last}"
        raise NotFoundError(f"frame {shown} of {count} does not exist ({valid})", image_id=image_id)
