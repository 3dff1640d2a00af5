"""HTTP for the network loaders: one shared aiohttp session, retries, timeouts, limits, auth.

- One ``aiohttp.ClientSession`` per :class:`~imageloader.ImageLoader`, created inside
  the running loop on the first request (or one the caller passes in and keeps
  owning).
- Retries with exponential backoff and full jitter on connection errors, a body cut
  short, and 429/500/502/503/504 (``Retry-After`` honoured, capped); never on other
  4xx.
- A request hook (Cornerstone's ``beforeSend``), sync or async, returns headers to
  add. Those headers, and ``auth`` given per origin, go only to the origin of the
  request: redirects are followed by hand, and a hop to another origin drops them.
- Every URL, the first and each redirect, passes the loader's access policy (SSRF).
- Bodies are read with a ceiling (``Limits.max_response_bytes``), checked against
  ``Content-Length`` before reading and while streaming otherwise.
- Every response has a deadline: ``read_timeout`` of silence, and ``total_timeout``
  for the whole request and body (120 s by default), so a server that drips a byte
  every few seconds cannot hold a load, or a connection, for ever.
- No cookies are kept unless ``HttpOptions(cookies=True)``; then each origin (scheme,
  host and port) has its own jar, and a cookie never goes to another origin.
- Errors are ours (``FetchError``, ``NotFoundError``, ``LoadTimeoutError``, ...),
  and never carry credentials: userinfo is stripped from the URLs they name.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .errors import (
    FetchError,
    ImageTooLargeError,
    LoadTimeoutError,
    NotFoundError,
    TruncatedResponseError,
)
from .limits import Limits

if TYPE_CHECKING:
    from .security import AccessPolicy

__all__ = ["HttpClient", "HttpOptions", "HttpResponse", "RequestHook", "redact_url"]

logger = logging.getLogger("imageloader.http")
T = TypeVar("T")

RequestHook = Callable[[str, str | None], Mapping[str, str] | Awaitable[Mapping[str, str]] | None]
"""``hook(url, image_id)`` → headers to add to this request (or None)."""

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that carry credentials: never sent to an origin they were not given for.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How the shared session connects, waits, retries and authenticates."""

    #: Seconds to establish a connection.
    connect_timeout: float = 10.0
    #: Seconds of silence allowed while reading a response (a slow drip fails here).
    read_timeout: float = 30.0
    #: Seconds for a whole request including its body (a redirect hop starts anew); a
    #: slow drip ends here. Raise it for objects that take longer on your links; None
    #: removes the bound.
    total_timeout: float | None = 120.0
    #: Keep cookies the servers set, in one jar per origin (off: none are stored, so
    #: nothing one load's server set reaches another load).
    cookies: bool = False
    #: Open connections in all, and to one host.
    limit: int = 100
    limit_per_host: int = 16
    #: Retries after the first attempt, and their backoff.
    retries: int = 3
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    #: Longest ``Retry-After`` honoured; longer ones fail instead of hanging.
    retry_after_max: float = 30.0
    max_redirects: int = 10
    #: Headers added to every request (no credentials here: use ``auth`` or the hook).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: HTTP basic auth by origin, ``{"https://pacs": ("user", "password")}``: sent only
    #: to that origin (scheme, host and port).
    auth: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    request_hook: RequestHook | None = None
    user_agent: str = "imageloader/0.1"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete response: final URL (credentials stripped), status, headers and body."""

    url: str
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def content_type(self) -> str:
        """The full Content-Type header (with its parameters), or ''."""
        return self.headers.get("Content-Type", "")


def redact_url(url: str) -> str:
    """The URL without user:password (safe to log or put in an error)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def origin(url: str) -> str:
    """``scheme://host:port`` with the default port made explicit."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def _basic_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


class HttpClient:
    """GETs over the loader's one session, with retries, limits and credential hygiene."""

    def __init__(
        self,
        options: HttpOptions | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        limits: Limits | None = None,
        access: AccessPolicy | None = None,
    ) -> None:
        self.options = options or HttpOptions()
        self.limits = limits or Limits()
        self.access = access
        self._session = session
        self._owns_session = session is None
        self._auth_by_origin = {
            origin(url): _basic_auth(user, password)
            for url, (user, password) in self.options.auth.items()
        }
        self._jars: dict[str, aiohttp.CookieJar] = {}
        self.requests = 0
        self.retries = 0
        self.bytes_received = 0

    async def session(self) -> aiohttp.ClientSession:
        """The shared session, created in the running loop on first use."""
        if self._session is None:
            opts = self.options
            connector = aiohttp.TCPConnector(
                limit=opts.limit, limit_per_host=opts.limit_per_host, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=opts.total_timeout,
                    sock_connect=opts.connect_timeout,
                    sock_read=opts.read_timeout,
                ),
                headers={"User-Agent": opts.user_agent, **opts.headers},
                read_bufsize=1 << 20,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # cookies, if wanted, per origin here
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session if this client created it."""
        if self._session is not None and self._owns_session and not self._session.closed:
            await self._session.close()

    async def get(
        self,
        url: str,
        *,
        image_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        max_bytes: int | None = None,
    ) -> HttpResponse:
        """GET the whole body, retried as documented; raises our typed errors.

        ``retry_statuses`` narrows which statuses are retried (a caller with a
        fallback of its own may want a 500 at once); ``max_bytes`` lowers the body's
        ceiling below ``Limits.max_response_bytes`` (metadata is megabytes, not a
        gigabyte).
        """
        ceiling = self.limits.max_response_bytes
        if max_bytes is not None:
            ceiling = min(ceiling, max_bytes)

        async def whole(resp: aiohttp.ClientResponse) -> HttpResponse:
            body = await self._read_body(resp, image_id, ceiling)
            return HttpResponse(redact_url(str(resp.url)), resp.status, resp.headers, body)

        return await self.request(
            url, whole, image_id=image_id, headers=headers, retry_statuses=retry_statuses
        )

    async def request(
        self,
        url: str,
        consume: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        *,
        image_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
    ) -> T:
        """GET ``url`` and return ``await consume(response)`` for a 2xx response.

        The whole attempt, body included, is retried on connection errors and
        bodies cut short; ``consume`` may read as much or as little as it needs
        (the connection is closed, not reused, when it stops early).
        """
        attempt = 0
        while True:
            try:
                async with self._request(url, image_id, headers) as resp:
                    if resp.status < 300:
                        return await consume(resp)
                    delay = self._retry_delay(resp, attempt, retry_statuses)
                    if delay is None:
                        raise self._status_error(resp, url, image_id)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                # A read timeout (slow drip) is final; a refused or reset connection is not.
                final = isinstance(exc, aiohttp.ServerTimeoutError) and not isinstance(
                    exc, aiohttp.ConnectionTimeoutError
                )
                if final or attempt >= self.options.retries:
                    raise self._translate(exc, url, image_id) from exc
                delay = self._backoff(attempt)
            except TimeoutError as exc:
                raise self._translate(exc, url, image_id) from exc
            except aiohttp.ClientError as exc:
                raise self._translate(exc, url, image_id) from exc
            attempt += 1
            self.retries += 1
            logger.debug("retrying %s in %.2fs (attempt %d)", redact_url(url), delay, attempt)
            await asyncio.sleep(delay)

    @asynccontextmanager
    async def _request(
        self, url: str, image_id: str | None, extra: Mapping[str, str] | None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One attempt: follow redirects by hand, keeping credentials on their origin."""
        session = await self.session()
        first_origin = origin(url)
        hooked = await self._hook_headers(url, image_id)
        current = url
        for _ in range(self.options.max_redirects + 1):
            if self.access is not None:
                self.access.check_url(current, image_id=image_id)
            same_origin = origin(current) == first_origin
            send: CIMultiDict[str] = CIMultiDict(extra or {})
            if same_origin:
                if (auth := self._auth_by_origin.get(first_origin)) is not None:
                    send["Authorization"] = auth
                send.update(hooked)
            else:
                for name in list(send):
                    if name.lower() in _CREDENTIAL_HEADERS:
                        del send[name]
            jar = self._jar(current)
            if jar is not None and (cookies := jar.filter_cookies(URL(current))):
                send["Cookie"] = "; ".join(f"{k}={m.value}" for k, m in cookies.items())
            self.requests += 1
            resp = await session.get(current, headers=send, allow_redirects=False)
            try:
                if jar is not None:
                    jar.update_cookies(resp.cookies, resp.url)
                location = resp.headers.get("Location")
                if resp.status in REDIRECT_STATUSES and location:
                    current = urljoin(str(resp.url), location)
                    resp.release()
                    continue
                yield resp
                return
            finally:
                resp.release()
        raise FetchError("too many redirects", image_id=image_id, url=redact_url(url))

    def _jar(self, url: str) -> aiohttp.CookieJar | None:
        """The cookie jar of ``url``'s origin (None when cookies are off)."""
        if not self.options.cookies:
            return None
        key = origin(url)
        jar = self._jars.get(key)
        if jar is None:
            jar = self._jars[key] = aiohttp.CookieJar(unsafe=True)
        return jar

    async def _hook_headers(self, url: str, image_id: str | None) -> Mapping[str, str]:
        hook = self.options.request_hook
        if hook is None:
            return {}
        result = hook(url, image_id)
        if inspect.isawaitable(result):
            result = await result
        return dict(result or {})

    def _retry_delay(
        self, resp: aiohttp.ClientResponse, attempt: int, statuses: frozenset[int]
    ) -> float | None:
        if resp.status not in statuses or attempt >= self.options.retries:
            return None
        after = _retry_after(resp.headers.get("Retry-After"), self.options.retry_after_max)
        return after if after is not None else self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.options.backoff_max, self.options.backoff_base * (2**attempt))
        return random.uniform(0, ceiling)

    def _status_error(
        self, resp: aiohttp.ClientResponse, url: str, image_id: str | None
    ) -> FetchError:
        reason = resp.reason or "HTTP error"
        safe = redact_url(url)
        if resp.status == 404:
            return NotFoundError("not found", image_id=image_id, url=safe, status=404)
        return FetchError(reason, image_id=image_id, url=safe, status=resp.status)

    def _translate(
        self, exc: BaseException, url: str, image_id: str | None
    ) -> FetchError | LoadTimeoutError:
        safe = redact_url(url)
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return LoadTimeoutError(f"timed out fetching {safe}", image_id=image_id)
        if isinstance(exc, aiohttp.ClientPayloadError):
            return TruncatedResponseError(
                f"response body incomplete: {exc}", image_id=image_id, url=safe
            )
        return FetchError(f"{type(exc).__name__}: {exc}", image_id=image_id, url=safe)

    async def _read_body(
        self, resp: aiohttp.ClientResponse, image_id: str | None, ceiling: int | None = None
    ) -> bytes:
        if ceiling is None:
            ceiling = self.limits.max_response_bytes
        length = resp.content_length
        safe = redact_url(str(resp.url))
        if length is not None and length > ceiling:
            raise ImageTooLargeError(
                f"response of {length} bytes exceeds the limit of {ceiling} from {safe}",
                image_id=image_id,
            )
        # A compressed body's Content-Length says nothing of what it inflates to
        # (Orthanc gzips frames): count the decoded bytes as they come instead.
        encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
        if length is not None and not encoded:
            body = await resp.read()
        else:
            chunks = bytearray()
            async for chunk in resp.content.iter_chunked(1 << 20):
                chunks += chunk
                # A buffered (or inflating) body is read without the task ever being
                # suspended: let the loop run between megabytes.
                await asyncio.sleep(0)
                if len(chunks) > ceiling:
                    raise ImageTooLargeError(
                        f"response exceeds the limit of {ceiling} bytes from {safe}",
                        image_id=image_id,
                    )
            body = bytes(chunks)
        self.bytes_received += len(body)
        return body
