"""HttpClient against a local fault server: retries, limits, timeouts, credentials, cancellation."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from imageloader.errors import (
    AccessDeniedError,
    FetchError,
    ImageTooLargeError,
    LoadTimeoutError,
    NotFoundError,
    TruncatedResponseError,
)
from imageloader.http import HttpClient, HttpOptions, redact_url
from imageloader.limits import Limits
from imageloader.security import AccessPolicy

from .faultserver import FaultServer, fault_server

FAST = HttpOptions(retries=2, backoff_base=0.01, backoff_max=0.02, read_timeout=0.5)


@pytest.fixture
async def server() -> AsyncIterator[FaultServer]:
    async with fault_server() as s:
        yield s


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient(FAST)
    yield c
    await c.aclose()


async def test_get_returns_body_headers_and_status(server: FaultServer, client: HttpClient) -> None:
    resp = await client.get(server.url("/ok?size=1000"), image_id="x:1")
    assert resp.status == 200 and resp.body == b"x" * 1000
    assert resp.content_type.startswith("application/octet-stream")


async def test_500_then_200_is_retried(server: FaultServer, client: HttpClient) -> None:
    resp = await client.get(server.url("/flaky?fails=2&status=500"))
    assert resp.body == b"finally"
    assert server.hits["/flaky"] == 3 and client.retries == 2


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_retryable_statuses(server: FaultServer, client: HttpClient, status: int) -> None:
    resp = await client.get(server.url(f"/flaky?fails=1&status={status}"))
    assert resp.body == b"finally" and server.hits["/flaky"] == 2


async def test_retry_after_is_honoured(server: FaultServer, client: HttpClient) -> None:
    start = time.perf_counter()
    await client.get(server.url("/flaky?fails=1&status=503&retry_after=0.3"))
    assert time.perf_counter() - start >= 0.28


async def test_retry_after_is_capped(server: FaultServer) -> None:
    client = HttpClient(HttpOptions(retries=1, retry_after_max=0.1))
    try:
        start = time.perf_counter()
        await client.get(server.url("/flaky?fails=1&status=429&retry_after=3600"))
        assert time.perf_counter() - start < 2
    finally:
        await client.aclose()


async def test_persistent_5xx_fails_after_the_retries(
    server: FaultServer, client: HttpClient
) -> None:
    with pytest.raises(FetchError) as info:
        await client.get(server.url("/status/503"), image_id="x:9")
    assert info.value.status == 503 and info.value.image_id == "x:9"
    assert server.hits["/status/503"] == 1 + FAST.retries


@pytest.mark.parametrize("status", [400, 401, 403, 410])
async def test_other_4xx_are_not_retried(
    server: FaultServer, client: HttpClient, status: int
) -> None:
    with pytest.raises(FetchError) as info:
        await client.get(server.url(f"/status/{status}"), image_id="x:2")
    assert info.value.status == status and not isinstance(info.value, NotFoundError)
    assert server.hits[f"/status/{status}"] == 1


async def test_404_is_not_found(server: FaultServer, client: HttpClient) -> None:
    with pytest.raises(NotFoundError) as info:
        await client.get(server.url("/status/404"), image_id="x:3")
    assert info.value.url is not None and info.value.url.endswith("/status/404")
    assert server.hits["/status/404"] == 1


async def test_connection_refused(client: HttpClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(FetchError) as info:
            await client.get(f"http://127.0.0.1:{port}/x", image_id="x:4")
    assert info.value.status is None and "x:4" in str(info.value)
    assert client.retries == FAST.retries


async def test_reset_mid_body_is_retried_then_truncated(
    server: FaultServer, client: HttpClient
) -> None:
    resp = await client.get(server.url("/reset-once"))
    assert resp.body == b"second time lucky"
    with pytest.raises(TruncatedResponseError):
        await client.get(server.url("/reset"), image_id="x:5")
    assert server.hits["/reset"] == 1 + FAST.retries


async def test_slow_drip_times_out_without_retry(server: FaultServer, client: HttpClient) -> None:
    start = time.perf_counter()
    with pytest.raises(LoadTimeoutError) as info:
        await client.get(server.url("/slow?pause=5"), image_id="x:6")
    assert time.perf_counter() - start < 3
    assert info.value.image_id == "x:6" and server.hits["/slow"] == 1


async def test_response_size_limits(server: FaultServer) -> None:
    client = HttpClient(FAST, limits=Limits(max_response_bytes=1000))
    try:
        with pytest.raises(ImageTooLargeError):
            await client.get(server.url("/ok?size=5000"), image_id="x:7")
        with pytest.raises(ImageTooLargeError):
            await client.get(server.url("/chunked?size=500000"), image_id="x:7")
        assert (await client.get(server.url("/chunked?size=900"))).body == b"c" * 900
    finally:
        await client.aclose()


async def test_a_gzip_body_is_limited_by_what_it_inflates_to(server: FaultServer) -> None:
    client = HttpClient(FAST, limits=Limits(max_response_bytes=1 << 20))
    try:
        # ~10 KB on the wire (under the limit), 10 MB inflated (over it).
        with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
            await client.get(server.url("/gzip-bomb"), image_id="x:7")
    finally:
        await client.aclose()


async def test_hook_headers_stay_on_their_origin(server: FaultServer) -> None:
    calls: list[tuple[str, str | None]] = []

    async def hook(url: str, image_id: str | None) -> dict[str, str]:
        calls.append((url, image_id))
        return {"Authorization": "Bearer secret-token"}

    async with fault_server() as other:
        client = HttpClient(HttpOptions(request_hook=hook))
        try:
            same = server.url("/redirect?to=/echo-auth")
            assert (await client.get(same, image_id="x:8")).body == b"Bearer secret-token"
            cross = server.url("/redirect?to=" + other.url("/echo-auth"))
            assert (await client.get(cross)).body == b"<none>"
            assert "Authorization" not in other.requests[-1].headers
        finally:
            await client.aclose()
    assert calls[0] == (same, "x:8")


async def test_basic_auth_only_to_its_origin(server: FaultServer) -> None:
    async with fault_server() as other:
        auth = {server.url("/"): ("alice", "pw")}
        client = HttpClient(HttpOptions(auth=auth))
        try:
            sent = (await client.get(server.url("/echo-auth"))).body
            assert sent == b"Basic " + base64.b64encode(b"alice:pw")
            assert (await client.get(other.url("/echo-auth"))).body == b"<none>"
            cross = server.url("/redirect?to=" + other.url("/echo-auth"))
            assert (await client.get(cross)).body == b"<none>"
        finally:
            await client.aclose()


async def test_credentials_never_appear_in_errors(server: FaultServer, client: HttpClient) -> None:
    url = server.url("/status/500").replace("http://", "http://bob:hunter2@")
    with pytest.raises(FetchError) as info:
        await client.get(url, image_id="x:10")
    assert "hunter2" not in str(info.value) and "hunter2" not in (info.value.url or "")
    assert redact_url("http://u:p@h:1/a?b") == "http://h:1/a?b"


async def test_redirect_to_a_host_outside_the_allow_list_is_never_requested(
    server: FaultServer,
) -> None:
    async with fault_server() as other:
        port = server.server.port
        client = HttpClient(FAST, access=AccessPolicy(hosts=[f"127.0.0.1:{port}"]))
        try:
            with pytest.raises(AccessDeniedError):
                await client.get(server.url("/redirect?to=" + other.url("/ok")), image_id="x:11")
            assert other.requests == []
            with pytest.raises(AccessDeniedError):
                await client.get(other.url("/ok"))
            assert other.requests == []
        finally:
            await client.aclose()


async def test_cancelling_mid_body_releases_the_connection(
    server: FaultServer, client: HttpClient
) -> None:
    task = asyncio.create_task(client.get(server.url("/slow?pause=5")))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    session = await client.session()
    connector = session.connector
    assert connector is not None
    # No connection is still checked out of the pool (aiohttp's own bookkeeping).
    assert len(connector._acquired) == 0
    assert (await client.get(server.url("/ok"))).status == 200


async def test_dns_failure_is_a_typed_error() -> None:
    client = HttpClient(HttpOptions(retries=0, total_timeout=5))
    try:
        with pytest.raises((FetchError, LoadTimeoutError)) as info:
            await client.get("http://no-such-host.invalid/x", image_id="x:12")
        assert info.value.image_id == "x:12"
    finally:
        await client.aclose()


async def test_a_session_passed_in_stays_open() -> None:
    async with aiohttp.ClientSession() as session:
        client = HttpClient(session=session)
        assert await client.session() is session
        await client.aclose()
        assert not session.closed


def _by_name(server: FaultServer, path: str) -> str:
    # By host name: cookie jars refuse cookies for IP addresses unless told otherwise.
    return server.url(path).replace("127.0.0.1", "localhost")


async def test_cookies_are_not_kept_by_default(server: FaultServer) -> None:
    async with fault_server() as other:
        client = HttpClient(FAST)
        try:
            # The redirect hop to another origin carries no cookie from the first...
            hop = _by_name(server, "/set-cookie?to=" + _by_name(other, "/echo-cookie"))
            assert (await client.get(hop)).body == b"<none>"
            # ...and no later load, to either origin, gets it back.
            assert (await client.get(_by_name(server, "/echo-cookie"))).body == b"<none>"
            assert (await client.get(_by_name(other, "/echo-cookie"))).body == b"<none>"
        finally:
            await client.aclose()


async def test_opted_in_cookies_stay_on_their_origin(server: FaultServer) -> None:
    async with fault_server() as other:  # same host, another port: another origin
        client = HttpClient(HttpOptions(cookies=True, retries=0))
        try:
            hop = _by_name(server, "/set-cookie?value=abc&to=" + _by_name(other, "/echo-cookie"))
            assert (await client.get(hop)).body == b"<none>"
            assert (await client.get(_by_name(server, "/echo-cookie"))).body == b"session=abc"
            assert (await client.get(_by_name(other, "/echo-cookie"))).body == b"<none>"
        finally:
            await client.aclose()


async def test_a_drip_that_never_goes_silent_long_enough_ends_at_the_total_deadline(
    server: FaultServer,
) -> None:
    # One byte every 0.2 s never trips a 1 s read timeout; the total deadline ends it.
    client = HttpClient(HttpOptions(retries=0, read_timeout=1.0, total_timeout=1.5))
    started = time.monotonic()
    try:
        with pytest.raises(LoadTimeoutError) as info:
            await client.get(server.url("/drip?every=0.2&bytes=100"), image_id="x:drip")
    finally:
        await client.aclose()
    assert info.value.image_id == "x:drip"
    assert 1.4 < time.monotonic() - started < 5


def test_the_default_deadline_is_at_most_two_minutes() -> None:
    options = HttpOptions()
    assert options.total_timeout is not None and options.total_timeout <= 120
    assert options.cookies is False
