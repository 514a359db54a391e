"""HTTP fetching with aiohttp: caps on bytes, timeouts, Retry-After, X-Robots-Tag and an SSRF guard after DNS."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from p2m.crawler.decode import BodyTooLarge, DecodeError, StreamDecoder, accept_encoding
from p2m.crawler.urls import UrlError, blocked_address_reason, is_ip_literal, with_canonical_host

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 522, 524})
DEFAULT_X_ROBOTS = ("noai", "noimageai", "noml", "noindex", "noimageindex")


class BlockedAddressError(OSError):
    """A host resolved only to addresses the SSRF guard refuses (every address that is not globally routable)."""


class GuardedResolver(AbstractResolver):
    """Wraps aiohttp's resolver and drops refused addresses after resolution (so DNS rebinding cannot pass).

    Args:
        allow_private: keep every address, also loopback/private/link-local/multicast ones (tests, intranets).
        allow_loopback: keep loopback addresses only (local test servers); every other non-global one is refused.
    """

    def __init__(self, allow_private: bool, allow_loopback: bool = False) -> None:
        self.inner = aiohttp.ThreadedResolver()
        self.allow_private = allow_private
        self.allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        if self.allow_private:
            return results
        kept = [r for r in results if blocked_address_reason(r["host"], self.allow_loopback) is None]
        if not kept:
            reason = (
                blocked_address_reason(results[0]["host"], self.allow_loopback) if results else "no address"
            )
            raise BlockedAddressError(
                f"{host} resolves to {reason}; refused (pass --allow-private to fetch it)"
            )
        return kept

    async def close(self) -> None:
        await self.inner.close()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def x_robots_block(values: list[str], ua_token: str, directives: tuple[str, ...]) -> str | None:
    """The first refused ``X-Robots-Tag`` directive that applies to ``ua_token``, or None.

    Each header value is ``[token:] d1, d2``; a value scoped to another crawler's token is ignored.
    """
    token = ua_token.lower()
    for value in values:
        scope, sep, rest = value.partition(":")
        if sep and scope.strip() and " " not in scope.strip() and "," not in scope:
            if scope.strip().lower() != token:
                continue
            value = rest
        for d in value.split(","):
            d = d.strip().lower()
            if d in directives:
                return d
    return None


@dataclass
class Response:
    """What one GET produced. ``error`` is a one-line reason when it failed; ``body`` is the decoded body.

    Attributes:
        url: the URL requested.
        status: HTTP status (0 when no response arrived).
        headers: response headers (empty when no response).
        body: decoded body bytes (None on error).
        error: one-line reason, '' on success.
        error_kind: a short stat key (``timeout``, ``http_404``, ``too_large``, ``blocked``...).
        retryable: a retry may succeed (5xx, 429, timeouts, connection errors).
        retry_after: seconds asked for by ``Retry-After`` (None when absent).
        location: absolute redirect target for 3xx with a Location header.
        raw_bytes: bytes read off the wire.
        elapsed: seconds from request start to the end of the body.
    """

    url: str
    status: int = 0
    headers: CIMultiDictProxy[str] | CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytes | None = None
    error: str = ""
    error_kind: str = ""
    retryable: bool = False
    retry_after: float | None = None
    location: str | None = None
    raw_bytes: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and self.location is None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class FetchSettings:
    """Fetch limits. Times in seconds, sizes in bytes."""

    user_agent: str
    allow_private: bool = False
    allow_loopback: bool = False
    max_bytes: int = 16 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0
    concurrency: int = 64
    x_robots_directives: tuple[str, ...] = DEFAULT_X_ROBOTS
    ua_token: str = "p2m"


class Fetcher:
    """One aiohttp session for the whole crawl; :meth:`get` never raises for network or HTTP problems.

    Use as ``async with Fetcher(settings) as f: r = await f.get(url)``.
    """

    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        s = self.settings
        connector = aiohttp.TCPConnector(
            limit=s.concurrency + 8,
            limit_per_host=0,
            resolver=GuardedResolver(s.allow_private, s.allow_loopback),
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            headers={"User-Agent": s.user_agent, "Accept-Encoding": accept_encoding()},
            timeout=aiohttp.ClientTimeout(
                total=s.total_timeout, sock_connect=s.connect_timeout, sock_read=s.read_timeout
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            max_line_size=16384,
            max_field_size=16384,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def get(
        self, url: str, *, accept: str = "*/*", check_x_robots: bool = False, max_bytes: int | None = None
    ) -> Response:
        """GET ``url`` without following redirects.

        Args:
            url: absolute http(s) URL.
            accept: the Accept header.
            check_x_robots: refuse (before reading the body) when ``X-Robots-Tag`` carries a refused directive.
            max_bytes: cap on raw and decoded body bytes (defaults to the settings').
        """
        assert self.session is not None, "use Fetcher as an async context manager"
        cap = max_bytes or self.settings.max_bytes
        r = Response(url=url)
        start = time.monotonic()
        try:
            u = with_canonical_host(URL(url))  # 2130706433, 0x7f.1, 127.1 -> 127.0.0.1, as browsers read them
        except (UrlError, ValueError) as exc:
            return _fail(r, f"invalid URL: {exc}", "invalid_url")
        if u.scheme not in ("http", "https"):
            return _fail(r, f"unsupported scheme {u.scheme!r}", "bad_scheme")
        if u.host and is_ip_literal(u.host) and not self.settings.allow_private:
            reason = blocked_address_reason(u.host, self.settings.allow_loopback)
            if reason:
                return _fail(r, f"refused: {reason} (pass --allow-private to fetch it)", "blocked")
        url = str(u)
        try:
            async with self.session.get(url, allow_redirects=False, headers={"Accept": accept}) as resp:
                r.status = resp.status
                r.headers = resp.headers
                await self._handle(resp, r, cap, check_x_robots)
        except BlockedAddressError as exc:
            _fail(r, f"refused: {exc}", "blocked")
        except aiohttp.ClientConnectorDNSError as exc:
            cause = exc.os_error
            if isinstance(cause, BlockedAddressError):
                _fail(r, f"refused: {cause}", "blocked")
            else:
                _fail(r, f"DNS lookup failed for {u.host}: {cause}", "dns", retryable=True)
        except asyncio.TimeoutError:
            t = self.settings
            _fail(
                r,
                f"timed out (connect {t.connect_timeout:g} s, read {t.read_timeout:g} s, "
                f"total {t.total_timeout:g} s)",
                "timeout",
                retryable=True,
            )
        except aiohttp.InvalidURL as exc:  # e.g. a host aiohttp calls "not canonical": a retry cannot help
            _fail(r, f"invalid URL: {_first_line(exc)}", "invalid_url")
        except aiohttp.ClientConnectorError as exc:
            _fail(
                r,
                f"cannot connect to {u.host}:{u.port}: {exc.os_error.strerror or exc.os_error}",
                "connect",
                retryable=True,
            )
        except aiohttp.ServerDisconnectedError:
            _fail(r, "server closed the connection before the response ended", "disconnected", retryable=True)
        except aiohttp.ClientPayloadError as exc:
            _fail(r, f"broken response body: {_first_line(exc)}", "payload", retryable=True)
        except aiohttp.ClientResponseError as exc:
            _fail(r, f"bad HTTP response: {_first_line(exc.message)}", "protocol")
        except aiohttp.ClientError as exc:
            _fail(r, f"{type(exc).__name__}: {_first_line(exc)}", type(exc).__name__, retryable=True)
        r.elapsed = time.monotonic() - start
        return r

    async def _handle(
        self, resp: aiohttp.ClientResponse, r: Response, cap: int, check_x_robots: bool
    ) -> None:
        status = resp.status
        if status in (301, 302, 303, 307, 308):
            loc = resp.headers.get("Location")
            if not loc:
                _fail(r, f"HTTP {status} redirect without a Location header", f"http_{status}")
                return
            try:
                r.location = str(resp.url.join(URL(loc.strip(), encoded=False)))
            except ValueError:
                _fail(r, f"HTTP {status} redirect to an invalid Location {loc[:100]!r}", "bad_location")
            return
        if status >= 400 or status < 200:
            r.retry_after = (
                parse_retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
            )
            _fail(
                r,
                f"HTTP {status} {resp.reason or ''}".rstrip(),
                f"http_{status}",
                retryable=status in RETRY_STATUSES,
            )
            return
        if check_x_robots:
            blocked = x_robots_block(
                resp.headers.getall("X-Robots-Tag", []),
                self.settings.ua_token,
                self.settings.x_robots_directives,
            )
            if blocked:
                _fail(r, f"X-Robots-Tag: {blocked} (the site opts out)", "x_robots_tag")
                return
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > cap:
            _fail(r, f"Content-Length {int(length)} bytes over the {cap}-byte cap", "too_large")
            return
        try:
            decoder = StreamDecoder(resp.headers.get("Content-Encoding", ""), cap)
        except DecodeError as exc:
            _fail(r, str(exc), "bad_encoding")
            return
        parts: list[bytes] = []
        try:
            async for chunk in resp.content.iter_chunked(65536):
                r.raw_bytes += len(chunk)
                if r.raw_bytes > cap:
                    raise BodyTooLarge()
                out = decoder.feed(chunk)
                if out:
                    parts.append(out)
            decoder.finish()
        except BodyTooLarge:
            what = "decompressed body" if decoder.stages else "body"
            _fail(r, f"{what} over the {cap}-byte cap; download stopped", "too_large")
            resp.close()
            return
        except DecodeError as exc:
            _fail(r, str(exc), "bad_encoding")
            r.body = b"".join(parts)  # what was decoded before the error (callers may use it for pages)
            return
        r.body = b"".join(parts)


def _fail(r: Response, error: str, kind: str, retryable: bool = False) -> Response:
    r.error = error
    r.error_kind = kind
    r.retryable = retryable
    r.body = None
    return r


def _first_line(obj: object) -> str:
    text = str(obj).strip()
    return text.splitlines()[0][:200] if text else type(obj).__name__
