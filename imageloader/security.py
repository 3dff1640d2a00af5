"""Access policy for services that take imageIds from their users.

By default everything is allowed (a script loading its own data). A service sets
allow-lists: schemes, HTTP hosts, and file roots that ``dicomfile:`` and ``nifti:``
paths must resolve into (after following symlinks, so neither ``..`` nor a symlink
escapes). Once a policy restricts anything, local files are refused unless ``roots``
names them; devices, FIFOs and other non-regular files are refused under any policy.
A refused imageId raises :class:`~imageloader.errors.AccessDeniedError` before any
request is made or file opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import AccessDeniedError, InvalidImageIdError
from .imageid import canonical_scheme, split_scheme

__all__ = ["MAX_PATH_CHARS", "AccessPolicy"]

_DEFAULT_PORTS = {"http": 80, "https": 443}

#: Longest local path accepted (Linux's PATH_MAX).
MAX_PATH_CHARS = 4096


def _norm_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True, slots=True, init=False)
class AccessPolicy:
    """Which schemes, hosts and file roots a loader may touch (None: no restriction)."""

    schemes: frozenset[str] | None
    hosts: frozenset[str] | None
    roots: tuple[Path, ...] | None

    def __init__(
        self,
        *,
        schemes: Iterable[str] | None = None,
        hosts: Iterable[str] | None = None,
        roots: Iterable[str | os.PathLike[str]] | None = None,
    ) -> None:
        object.__setattr__(
            self,
            "schemes",
            None if schemes is None else frozenset(canonical_scheme(s) for s in schemes),
        )
        object.__setattr__(
            self, "hosts", None if hosts is None else frozenset(_norm_host(h) for h in hosts)
        )
        object.__setattr__(
            self,
            "roots",
            None if roots is None else tuple(Path(os.path.realpath(r)) for r in roots),
        )

    @property
    def restricted(self) -> bool:
        """Whether any allow-list is set."""
        return self.schemes is not None or self.hosts is not None or self.roots is not None

    def check_scheme(self, image_id: str) -> None:
        """Refuse an imageId whose scheme is not allowed (matched as the registry does).

        An imageId with no scheme at all is malformed (:class:`InvalidImageIdError`)
        rather than refused, unless the policy allows the empty scheme.
        """
        if self.schemes is None:
            return
        scheme, _ = split_scheme(image_id)
        if scheme in self.schemes:
            return
        if not scheme:
            raise InvalidImageIdError(
                "imageId has no scheme: expected scheme:rest, e.g. wadors:https://…",
                image_id=image_id,
            )
        raise AccessDeniedError(f"scheme {scheme!r} is not allowed", image_id=image_id)

    def check_url(self, url: str, *, image_id: str | None = None) -> None:
        """Refuse a URL that is not http(s) or whose host is not allowed."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise AccessDeniedError(f"malformed URL: {exc}", image_id=image_id) from exc
        if parts.scheme not in ("http", "https"):
            raise AccessDeniedError(
                f"URL scheme {parts.scheme!r} is not allowed", image_id=image_id
            )
        if self.hosts is None:
            return
        host = _norm_host(parts.hostname or "")
        port = port if port is not None else _DEFAULT_PORTS[parts.scheme]
        with_port = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if host in self.hosts or with_port in self.hosts or f"{host}:{port}" in self.hosts:
            return
        # When the host is allowed on other ports only, the port is what differs.
        on_other_ports = any(
            allowed.rpartition(":")[0] in (host, f"[{host}]") for allowed in self.hosts
        )
        named = with_port if on_other_ports else host
        raise AccessDeniedError(f"host {named!r} is not allowed", image_id=image_id)

    def resolve_path(self, path: str | os.PathLike[str], *, image_id: str | None = None) -> Path:
        """The real path of a local file, refused unless inside an allowed root.

        A policy that restricts anything but names no roots allows no local file
        (deny by default). Devices, FIFOs, sockets and directories are refused under
        every policy: ``/dev/zero`` has no size to check and never ends. A path that
        does not exist passes (its reader says it is not found).

        Blocking (it follows symlinks on disk): call it from a worker thread.
        """
        raw = os.fspath(path)
        if "\x00" in raw:
            raise AccessDeniedError("path contains a NUL byte", image_id=image_id)
        if len(raw) > MAX_PATH_CHARS:
            # No file has such a path (PATH_MAX), and resolving one costs time
            # quadratic in its components.
            raise AccessDeniedError(
                f"path is longer than {MAX_PATH_CHARS} characters", image_id=image_id
            )
        if self.roots is None and self.restricted:
            raise AccessDeniedError(
                "local files are not allowed: the access policy names no roots",
                image_id=image_id,
            )
        real = Path(os.path.realpath(raw))
        if self.roots is not None and not any(
            real == root or real.is_relative_to(root) for root in self.roots
        ):
            raise AccessDeniedError("path is outside the allowed roots", image_id=image_id)
        try:
            mode = real.stat().st_mode
        except OSError:
            return real  # missing or unreadable: the reader raises the typed error
        if not stat.S_ISREG(mode):
            raise AccessDeniedError("not a regular file", image_id=image_id)
        return real
