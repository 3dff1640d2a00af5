"""``multipart/related`` bodies, as WADO-RS returns frames, split without copying.

A WADO-RS frame response is one buffer of several MB. It is split on the event
loop, so the work must stay in C: ``bytes.find`` locates each delimiter (or the
part's ``Content-Length`` says where it must be, and one comparison confirms it),
and each part's payload is a ``memoryview`` into the body, never a copy.

Two entry points:

- :func:`parse_multipart_related` follows RFC 2046: boundary from the
  Content-Type, an optional preamble, CRLF before every delimiter, transport
  padding after it, an epilogue after the close delimiter. A body that stops
  before the close delimiter raises :class:`~imageloader.errors.TruncatedResponseError`
  (Orthanc answers 200 and stops mid-body when a transcode fails). Anything else
  malformed raises :class:`~imageloader.errors.ResponseFormatError`.
- :func:`parse_loose_multipart` is Cornerstone's lenient reading for bodies that
  only resemble multipart: the boundary is given or taken from the first ``--``
  line of the body, delimiters need no CRLF before them, and the close delimiter
  may lack its trailing ``--``.

Callers check :func:`is_multipart` first: a body that is not multipart is a single
part, and its transfer syntax comes from :func:`transfer_syntax_from_content_type`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

from ..errors import ResponseFormatError, TruncatedResponseError

__all__ = [
    "Part",
    "is_multipart",
    "parse_loose_multipart",
    "parse_media_type",
    "parse_multipart_related",
    "transfer_syntax_from_content_type",
]

# A parameter: name, then "=" and a quoted string (with \-escapes) or a bare value.
# Lenient on purpose: a bare value runs to the next ";" and an unclosed quote is
# kept as text, so no header value can make the parser raise.
_PARAM = re.compile(r';\s*([^\s=;]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*)))?', re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)
# What may follow "--boundary": "--" (close delimiter), or transport padding and
# the line end. LF alone is accepted: some servers write bare LF line ends.
_DELIMITER_TAIL = re.compile(rb"--|[ \t]*\r?\n")
# The body ended inside a delimiter line: the response was cut short.
_INCOMPLETE_TAIL = re.compile(rb"(?:-|[ \t]*\r?)\Z")
_HEADER_NAME = re.compile(r"[^\s:]+")
# The blank line that ends a part's header block (CRLF or bare LF line ends).
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_BLANK_TO_END = re.compile(rb"\s*\Z")
# A header block longer than this is not a header block: stop looking for its end.
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Part:
    """One body part of a multipart response.

    ``data`` is a view into the response body (no copy); ``offset`` is where it
    starts in that body, which tells whether a 16-bit frame is aligned.
    """

    headers: CIMultiDictProxy[str]
    #: The part's Content-Type, or the multipart ``type`` parameter if it has none.
    content_type: str | None
    #: The ``transfer-syntax`` parameter of ``content_type`` (None if absent or empty).
    transfer_syntax_uid: str | None
    data: memoryview
    offset: int


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into its lowercased media type and its parameters.

    Parameter names are lowercased; quoted values are unquoted. Never raises: a
    malformed value gives whatever could be read from it.
    """
    media_type, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        name, quoted, bare = match.groups()
        if quoted is not None:
            params.setdefault(name.lower(), _UNESCAPE.sub(r"\1", quoted))
        else:
            params.setdefault(name.lower(), (bare or "").strip())
    return media_type.strip().lower(), params


def is_multipart(content_type: str | None) -> bool:
    """True if ``content_type`` is a ``multipart/*`` media type."""
    return content_type is not None and parse_media_type(content_type)[0].startswith("multipart/")


def transfer_syntax_from_content_type(content_type: str | None) -> str | None:
    """The transfer syntax UID a Content-Type names, or None.

    Looks at the ``transfer-syntax`` parameter, then inside the ``type``
    parameter: Orthanc labels a frame response
    ``multipart/related; type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2"``.
    """
    if not content_type:
        return None
    _, params = parse_media_type(content_type)
    uid = params.get("transfer-syntax", "").strip()
    if not uid and "type" in params:
        uid = parse_media_type(params["type"])[1].get("transfer-syntax", "").strip()
    return uid or None


def parse_multipart_related(
    body: bytes | bytearray,
    content_type: str,
    *,
    image_id: str | None = None,
    url: str | None = None,
    max_parts: int | None = None,
) -> list[Part]:
    """Split a ``multipart/*`` response body into its parts (RFC 2046).

    Raises :class:`ResponseFormatError` if ``content_type`` is not multipart or has
    no boundary, or the body is malformed, and :class:`TruncatedResponseError` if
    the body ends before the close delimiter. With ``max_parts``, a body holding more
    parts is refused as soon as one more is found: each part costs Python work on
    the event loop, and a megabyte of empty parts would hold it for a second.
    """
    media_type, params = parse_media_type(content_type)
    if not media_type.startswith("multipart/"):
        raise ResponseFormatError(
            f"expected a multipart body, got Content-Type {content_type!r}",
            image_id=image_id,
            url=url,
        )
    boundary = params.get("boundary", "")
    if not boundary:
        raise ResponseFormatError(
            f"multipart Content-Type has no boundary parameter: {content_type!r}",
            image_id=image_id,
            url=url,
        )
    splitter = _Splitter(body, _encode_boundary(boundary, image_id, url), image_id, url)
    return splitter.split_strict(params.get("type"), max_parts)


def parse_loose_multipart(
    body: bytes | bytearray,
    *,
    boundary: str | None = None,
    image_id: str | None = None,
    url: str | None = None,
) -> list[Part]:
    """Split a body that only resembles multipart, as Cornerstone's parser does.

    The boundary is ``boundary`` or the first line starting with ``--`` before the
    body's first blank line. Delimiters are found wherever ``--boundary`` occurs
    (one CRLF or LF before it belongs to the delimiter), and the last one may lack
    its ``--``. A part with no delimiter after it raises :class:`TruncatedResponseError`.
    """
    if boundary is None:
        delimiter = _sniff_delimiter(body, image_id, url)
    else:
        delimiter = b"--" + _encode_boundary(boundary, image_id, url)
    splitter = _Splitter(body, delimiter[2:], image_id, url)
    return splitter.split_loose()


def _encode_boundary(boundary: str, image_id: str | None, url: str | None) -> bytes:
    try:
        return boundary.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise ResponseFormatError(
            f"multipart boundary is not text: {boundary!r}", image_id=image_id, url=url
        ) from exc


def _sniff_delimiter(body: bytes | bytearray, image_id: str | None, url: str | None) -> bytes:
    head_end = body.find(b"\r\n\r\n")
    if head_end < 0:
        raise ResponseFormatError(
            "no blank line ends the body's header block", image_id=image_id, url=url
        )
    for line in bytes(body[:head_end]).split(b"\r\n"):
        candidate = line.rstrip(b" \t")
        if candidate.startswith(b"--") and len(candidate) > 2:
            return candidate
    raise ResponseFormatError(
        "no boundary line in the body's header block", image_id=image_id, url=url
    )


class _Splitter:
    """The splitting state for one body; every search is a C-level ``find``."""

    def __init__(
        self, body: bytes | bytearray, boundary: bytes, image_id: str | None, url: str | None
    ) -> None:
        self.body = body
        self.view = memoryview(body)
        self.delimiter = b"--" + boundary
        self.image_id = image_id
        self.url = url

    def split_strict(self, default_type: str | None, max_parts: int | None = None) -> list[Part]:
        body, delimiter = self.body, self.delimiter
        needle = b"\r\n" + delimiter
        first = self._delimiter_at(0, len(delimiter)) if body.startswith(delimiter) else None
        if first is None:
            first = self._next_delimiter(needle, 0)
        if first is None:
            if delimiter.startswith(body):
                raise self._truncated("the body ended before the first boundary")
            raise self._malformed("no opening multipart boundary in the body")
        if first[1]:
            raise self._malformed("the multipart body has no parts")
        start = first[2]
        parts: list[Part] = []
        while True:
            part, (_, close, start) = self._strict_part(start, needle, default_type)
            parts.append(part)
            if max_parts is not None and len(parts) > max_parts:
                raise self._malformed(f"the multipart body has more than {max_parts} part(s)")
            if close:
                return parts

    def _strict_part(
        self, start: int, needle: bytes, default_type: str | None
    ) -> tuple[Part, tuple[int, bool, int]]:
        if self.body.startswith(needle, start):
            # No headers and no body: the delimiter line is followed by the next one.
            found = self._delimiter_at(start, len(needle))
            if found is not None:
                return self._part(CIMultiDict(), start, start, default_type), found
        headers, data_start = self._headers(start, needle)
        found = None
        declared = _content_length(headers)
        if declared is not None and self.body.startswith(needle, data_start + declared):
            # Fast path: the part says where it ends, and the delimiter is there.
            found = self._delimiter_at(data_start + declared, len(needle))
        if found is None:
            found = self._next_delimiter(needle, data_start)
        if found is None:
            raise self._truncated("no closing multipart boundary")
        end = found[0]
        if declared is not None and declared != end - data_start:
            raise self._malformed(
                f"a part's Content-Length is {declared} but it holds {end - data_start} bytes"
            )
        return self._part(headers, data_start, end, default_type), found

    def split_loose(self) -> list[Part]:
        body, delimiter = self.body, self.delimiter
        at = body.find(delimiter)
        if at < 0:
            raise self._malformed("the boundary does not occur in the body")
        start = self._loose_part_start(at + len(delimiter))
        if start is None:
            raise self._malformed("the multipart body has no parts")
        parts: list[Part] = []
        while start is not None:
            at = body.find(delimiter, start)
            if at < 0:
                raise self._truncated("no boundary after the last part")
            end = at
            # The line end before a delimiter, if any, belongs to the delimiter.
            if end - 2 >= start and body.startswith(b"\r\n", end - 2):
                end -= 2
            elif end - 1 >= start and body.startswith(b"\n", end - 1):
                end -= 1
            if start == end:
                headers, data_start = CIMultiDict[str](), start
            else:
                headers, data_start = self._headers(start, delimiter, end)
            parts.append(self._part(headers, min(data_start, end), end, None))
            start = self._loose_part_start(at + len(delimiter))
        return parts

    def _loose_part_start(self, i: int) -> int | None:
        """Where the part after a loose delimiter starts; None if that was the last."""
        body = self.body
        if body.startswith(b"--", i) or _BLANK_TO_END.match(body, i):
            return None
        match = _DELIMITER_TAIL.match(body, i)
        if match is None:
            raise self._malformed("unexpected bytes after a multipart boundary")
        return match.end()

    def _next_delimiter(self, needle: bytes, start: int) -> tuple[int, bool, int] | None:
        """The next real delimiter at or after ``start``: (index, is_close, next part start)."""
        body = self.body
        while True:
            at = body.find(needle, start)
            if at < 0:
                return None
            found = self._delimiter_at(at, len(needle))
            if found is not None:
                return found
            # "--boundary" followed by other bytes is not a delimiter: keep looking.
            start = at + 1

    def _delimiter_at(self, at: int, length: int) -> tuple[int, bool, int] | None:
        tail = at + length
        match = _DELIMITER_TAIL.match(self.body, tail)
        if match is not None:
            return at, match.group() == b"--", match.end()
        if _INCOMPLETE_TAIL.match(self.body, tail):
            raise self._truncated("the body ended inside a multipart boundary line")
        return None

    def _headers(
        self, start: int, needle: bytes, end: int | None = None
    ) -> tuple[CIMultiDict[str], int]:
        """Parse the header block at ``start``; return it and where the data starts.

        ``needle`` must not occur in the block: a blank line found past it belongs
        to a later part, and this one has none.
        """
        body = self.body
        for blank in (b"\r\n", b"\n"):
            if body.startswith(blank, start):
                return CIMultiDict(), start + len(blank)
        limit = min(len(body) if end is None else end, start + _MAX_HEADER_BYTES)
        blank_line = _BLANK_LINE.search(body, start, limit)
        if blank_line is None or body.find(needle, start, blank_line.start()) >= 0:
            if blank_line is None and limit == len(body) and body.find(needle, start) < 0:
                raise self._truncated("the body ended inside a part's headers")
            raise self._malformed("a part's header block has no blank line after it")
        text = body[start : blank_line.start()].decode("latin-1")
        return self._header_lines(text), blank_line.end()

    def _header_lines(self, text: str) -> CIMultiDict[str]:
        fields: list[list[str]] = []
        for line in text.replace("\r\n", "\n").split("\n"):
            if line[:1] in (" ", "\t") and fields:
                fields[-1][1] += " " + line.strip()  # an obsolete folded continuation
                continue
            name, colon, value = line.partition(":")
            name = name.rstrip(" \t")
            if not colon or _HEADER_NAME.fullmatch(name) is None:
                raise self._malformed(f"malformed part header line {line[:80]!r}")
            fields.append([name, value.strip()])
        return CIMultiDict((name, value) for name, value in fields)

    def _part(
        self, headers: CIMultiDict[str], start: int, end: int, default_type: str | None
    ) -> Part:
        content_type = headers.get("Content-Type", default_type)
        return Part(
            headers=CIMultiDictProxy(headers),
            content_type=content_type,
            transfer_syntax_uid=_own_transfer_syntax(content_type),
            data=self.view[start:end],
            offset=start,
        )

    def _malformed(self, message: str) -> ResponseFormatError:
        return ResponseFormatError(message, image_id=self.image_id, url=self.url)

    def _truncated(self, message: str) -> TruncatedResponseError:
        return TruncatedResponseError(message, image_id=self.image_id, url=self.url)


def _own_transfer_syntax(content_type: str | None) -> str | None:
    if not content_type:
        return None
    uid = parse_media_type(content_type)[1].get("transfer-syntax", "").strip()
    return uid or None


def _content_length(headers: CIMultiDict[str]) -> int | None:
    value = headers.get("Content-Length")
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        return None  # unusable; the delimiter search decides where the part ends
    return int(value)
