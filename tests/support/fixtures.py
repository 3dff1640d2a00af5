"""pytest fixtures for a real Orthanc DICOMweb server (register with ``pytest_plugins``).

- ``orthanc`` (session): one server, no auth, shared by the whole session. Do not
  kill or restart it: use ``orthanc_factory`` for fault tests.
- ``orthanc_auth`` (session): a second server with HTTP basic auth;
  ``orthanc_auth.auth`` is the (user, password) pair.
- ``orthanc_dataset`` (session): the test data uploaded to ``orthanc`` (a
  :class:`~tests.support.dataset.Dataset`).
- ``orthanc_factory`` (function): ``orthanc_factory(**kwargs)`` starts a private
  server (same arguments as :class:`OrthancServer`); all are stopped after the test.

Tests that use any of these get the ``orthanc`` marker (``-m "not orthanc"`` skips
them). Without the Orthanc packages they are skipped, except under ``CI=true``,
where a missing server is a failure: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .dataset import Dataset, build_dataset
from .encoders import missing_tools
from .orthanc import OrthancServer, missing_orthanc, stop_all

_ORTHANC_FIXTURES = {"orthanc", "orthanc_auth", "orthanc_dataset", "orthanc_factory"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _ORTHANC_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.orthanc)


def _unavailable(reason: str) -> None:
    """Skip, or fail under CI=true: CI has the packages, so their absence is a bug."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, but the Orthanc tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"Orthanc is not available: {reason}")


def _require_orthanc() -> None:
    reason = missing_orthanc()
    if reason is not None:
        _unavailable(reason)


@pytest.fixture(scope="session")
def _orthanc_session_servers() -> Iterator[list[OrthancServer]]:
    # Session servers are stopped together at the very end: Orthanc takes seconds
    # to stop, and stop_all overlaps those waits.
    servers: list[OrthancServer] = []
    yield servers
    stop_all(servers)


@pytest.fixture(scope="session")
def orthanc(
    _orthanc_session_servers: list[OrthancServer], tmp_path_factory: pytest.TempPathFactory
) -> OrthancServer:
    """A session-wide Orthanc with the DICOMweb plugin, on 127.0.0.1, no auth."""
    _require_orthanc()
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    _orthanc_session_servers.append(server)
    return server.start()


@pytest.fixture(scope="session")
def orthanc_auth(
    _orthanc_session_servers: list[OrthancServer], tmp_path_factory: pytest.TempPathFactory
) -> OrthancServer:
    """A session-wide Orthanc that requires HTTP basic auth (see ``.auth``)."""
    _require_orthanc()
    users = {"imageloader": secrets.token_urlsafe(12)}
    server = OrthancServer(tmp_path_factory.mktemp("orthanc-auth"), users=users)
    _orthanc_session_servers.append(server)
    return server.start()


@pytest.fixture(scope="session")
def orthanc_dataset(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The test data, uploaded to ``orthanc`` once per session."""
    missing = missing_tools()
    if missing:
        _unavailable(f"encoders not found: {', '.join(missing)} (dcmtk, libgdcm-tools)")
    return build_dataset(orthanc, tmp_path_factory.mktemp("orthanc-dataset"))


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., OrthancServer]]:
    """Start private servers for one test (to kill, restart, or break); all stop after it."""
    _require_orthanc()
    servers: list[OrthancServer] = []

    def start(**kwargs: Any) -> OrthancServer:
        server = OrthancServer(tmp_path / f"orthanc-{len(servers)}", **kwargs)
        servers.append(server)
        return server.start()

    yield start
    stop_all(servers)
