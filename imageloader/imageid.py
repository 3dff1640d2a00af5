"""ImageId syntax: ``scheme:rest``, as Cornerstone splits it.

The lowest room of the loader side: the access policy checks schemes with it and
the registry dispatches on it, so it imports nothing of theirs.
"""

from __future__ import annotations

from .errors import InvalidImageIdError

__all__ = ["split_scheme"]


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
