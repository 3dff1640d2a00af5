"""The exceptions imageloader raises. Every one names the imageId it concerns.

Tree::

    ImageLoaderError
    ├── InvalidImageIdError (ValueError)        empty, non-str or malformed imageId
    ├── UnknownSchemeError (LookupError)        no loader for the scheme and no fallback
    ├── AccessDeniedError (PermissionError)     outside the configured schemes, hosts or roots
    ├── LoaderClosedError (RuntimeError)        the ImageLoader was closed
    ├── LoadCancelledError                      cancel_load_image() stopped the load
    ├── LoadFailedError                         a custom loader raised a foreign exception
    ├── CacheFullError                          the image is larger than the whole cache
    ├── ImageTooLargeError                      over a pixel, frame or byte limit
    ├── LoadTimeoutError (TimeoutError)         a fetch or decode took too long
    ├── FetchError                              HTTP status or connection failure (status, url)
    │   ├── NotFoundError                       HTTP 404
    │   ├── TruncatedResponseError              body ended early (e.g. no closing boundary)
    │   └── ResponseFormatError                 unexpected Content-Type or malformed body
    ├── DecodeError                             pixel data could not be decoded
    │   └── UnsupportedTransferSyntaxError      no codec (installed) for the transfer syntax
    └── MetadataError                           the object lacks what an image needs

Third-party exceptions (aiohttp, pydicom, Pillow, codecs) are translated at the
boundary with ``raise ... from exc``; they never leak through the public API.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable
from typing import Self

__all__ = [
    "AccessDeniedError",
    "CacheFullError",
    "DecodeError",
    "FetchError",
    "ImageLoaderError",
    "ImageTooLargeError",
    "InvalidImageIdError",
    "LoadCancelledError",
    "LoadFailedError",
    "LoadTimeoutError",
    "LoaderClosedError",
    "MetadataError",
    "NotFoundError",
    "ResponseFormatError",
    "TruncatedResponseError",
    "UnknownSchemeError",
    "UnsupportedTransferSyntaxError",
]


class ImageLoaderError(Exception):
    """Root of every error imageloader raises.

    ``image_id`` is the imageId the error concerns (``None`` only for errors that
    concern no single image, such as a closed loader).
    """

    def __init__(self, message: str, *, image_id: str | None = None) -> None:
        self.image_id = image_id
        self.message = message
        super().__init__(f"{message} [imageId: {image_id}]" if image_id is not None else message)

    def for_image(self, image_id: str) -> Self:
        """This error, naming ``image_id`` instead (one failure shared by several loads)."""
        if image_id == self.image_id:
            return self
        clone = copy.copy(self)
        clone.image_id = image_id
        clone.args = (f"{self.message} [imageId: {image_id}]",)
        clone.__cause__ = self.__cause__
        return clone

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling, and errors
        # cross process boundaries (decode workers, Dask).
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(
    cls: type[ImageLoaderError], args: tuple[object, ...], state: dict[str, object]
) -> ImageLoaderError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class InvalidImageIdError(ImageLoaderError, ValueError):
    """The imageId is empty, not a string, or malformed for its scheme."""


class UnknownSchemeError(ImageLoaderError, LookupError):
    """No loader is registered for the imageId's scheme and there is no fallback.

    ``known`` lists the schemes that are registered (aliases included) and
    ``suggestion`` the closest of them to ``scheme``, when one is close.
    """

    def __init__(self, scheme: str, *, image_id: str, known: Iterable[str] = ()) -> None:
        self.scheme = scheme
        self.known = tuple(known)
        close = difflib.get_close_matches(scheme, self.known, n=1, cutoff=0.6)
        self.suggestion = close[0] if close else None
        message = f"no image loader registered for scheme {scheme!r}"
        if self.suggestion is not None:
            message += f"; did you mean {self.suggestion!r}?"
        if self.known:
            shown = ", ".join(self.known[:24]) + (", …" if len(self.known) > 24 else "")
            message += f" (registered: {shown})"
        super().__init__(message, image_id=image_id)


class AccessDeniedError(ImageLoaderError, PermissionError):
    """The imageId is outside the allowed schemes, hosts or file roots."""


class LoaderClosedError(ImageLoaderError, RuntimeError):
    """The ImageLoader was closed; open a new one."""


class LoadCancelledError(ImageLoaderError):
    """``cancel_load_image`` stopped this load before it finished."""


class LoadFailedError(ImageLoaderError):
    """A registered loader raised an exception that is not an ImageLoaderError.

    The original exception is the ``__cause__``.
    """


class CacheFullError(ImageLoaderError):
    """The image is larger than the cache's whole capacity; nothing was cached."""


class ImageTooLargeError(ImageLoaderError):
    """The image (or response) exceeds a configured limit on pixels, frames or bytes."""


class LoadTimeoutError(ImageLoaderError, TimeoutError):
    """A fetch or a decode did not finish in the time allowed."""


class FetchError(ImageLoaderError):
    """An HTTP request failed: ``status`` is the HTTP status (``None`` for a connection error)."""

    def __init__(
        self,
        message: str,
        *,
        image_id: str | None = None,
        url: str | None = None,
        status: int | None = None,
    ) -> None:
        self.url = url
        self.status = status
        detail = message
        if status is not None:
            detail += f" (HTTP {status})"
        if url is not None:
            detail += f" from {url}"
        super().__init__(detail, image_id=image_id)


class NotFoundError(FetchError):
    """The server answered 404: no such study, series, instance or frame."""


class TruncatedResponseError(FetchError):
    """The response body ended before it was complete."""


class ResponseFormatError(FetchError):
    """The response had an unexpected Content-Type or a malformed body."""


class DecodeError(ImageLoaderError):
    """The pixel data could not be decoded."""


class UnsupportedTransferSyntaxError(DecodeError):
    """No decoder is available for the transfer syntax.

    ``transfer_syntax_uid`` names the syntax; ``install`` names the package that adds a
    decoder for it, when one exists.
    """

    def __init__(
        self,
        transfer_syntax_uid: str,
        *,
        image_id: str | None = None,
        install: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.transfer_syntax_uid = transfer_syntax_uid
        self.install = install
        message = f"no decoder available for transfer syntax {transfer_syntax_uid}"
        if detail:
            message += f" ({detail})"
        if install:
            message += f"; install {install}"
        super().__init__(message, image_id=image_id)


class MetadataError(ImageLoaderError):
    """The object lacks what an image needs (no pixel data, missing pixel module fields)."""
