"""robots.txt per RFC 9309 with protego: status-code rules, Crawl-delay, and a per-origin cache."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from protego import Protego

logger = logging.getLogger(__name__)

MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309: parse at least 500 KiB
ROBOTS_TTL_S = 24 * 3600  # RFC 9309: do not use a cached copy for more than 24 hours


@dataclass
class RobotsRules:
    """The rules of one origin (``scheme://host:port``).

    Attributes:
        mode: ``rules`` (a parsed file), ``allow_all`` (4xx) or ``disallow_all`` (5xx, 429, unreachable).
        reason: why, for ``allow_all`` / ``disallow_all`` (e.g. ``robots.txt returned HTTP 503``).
        parser: the protego parser in ``rules`` mode.
        ua_token: the product token matched against ``User-agent`` lines.
        fetched_at: wall-clock time the file was read.
    """

    mode: str
    reason: str = ""
    parser: Protego | None = None
    ua_token: str = "*"
    fetched_at: float = field(default_factory=time.time)

    def allowed(self, url: str) -> bool:
        """True when ``url`` may be fetched."""
        if self.mode == "allow_all":
            return True
        if self.mode == "disallow_all":
            return False
        assert self.parser is not None
        return self.parser.can_fetch(url, self.ua_token)

    def why_not(self) -> str:
        """The one-line reason used when :meth:`allowed` is False."""
        if self.mode == "disallow_all":
            return f"disallowed: {self.reason}, so the whole host is treated as disallowed (RFC 9309)"
        return "disallowed by robots.txt"

    def crawl_delay(self) -> float | None:
        """Seconds between requests asked for by ``Crawl-delay`` or ``Request-rate`` (None when absent)."""
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(self.ua_token)
        rate = self.parser.request_rate(self.ua_token)
        if rate is not None and rate.requests:
            per_request = rate.seconds / rate.requests
            delay = max(delay or 0.0, per_request)
        return float(delay) if delay is not None else None

    def sitemaps(self) -> list[str]:
        """``Sitemap:`` URLs listed in the file."""
        return list(self.parser.sitemaps) if self.parser is not None else []

    def expired(self, now: float | None = None) -> bool:
        """True once the rules are older than 24 hours."""
        return (now or time.time()) - self.fetched_at > ROBOTS_TTL_S


def rules_from_response(status: int, body: bytes | None, error: str, ua_token: str) -> RobotsRules:
    """Apply RFC 9309's status rules to a robots.txt fetch (after redirects were followed).

    Args:
        status: final HTTP status (0 when no response arrived).
        body: the body on 2xx.
        error: the fetch error ('' when a response arrived).
        ua_token: the crawler's product token.

    Returns:
        2xx: the parsed rules; 4xx (except 429): allow all; 429, 5xx, network errors: disallow all.
    """
    if 200 <= status < 300 and body is not None:
        text = body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
        try:
            parser = Protego.parse(text)
        except Exception as exc:  # protego is lenient; a crash here must not stop the crawl
            logger.warning("robots.txt could not be parsed (%s); allowing all", exc)
            return RobotsRules("allow_all", reason="robots.txt could not be parsed", ua_token=ua_token)
        return RobotsRules("rules", parser=parser, ua_token=ua_token)
    if 400 <= status < 500 and status != 429:
        return RobotsRules("allow_all", reason=f"robots.txt returned HTTP {status}", ua_token=ua_token)
    if status:
        return RobotsRules("disallow_all", reason=f"robots.txt returned HTTP {status}", ua_token=ua_token)
    return RobotsRules(
        "disallow_all", reason=f"robots.txt unreachable ({error or 'no response'})", ua_token=ua_token
    )


class RobotsCache:
    """Rules per origin, kept for at most 24 hours."""

    def __init__(self) -> None:
        self._rules: dict[str, RobotsRules] = {}

    def get(self, origin: str) -> RobotsRules | None:
        """Cached rules for ``origin`` (None when unknown or expired)."""
        rules = self._rules.get(origin)
        if rules is not None and rules.expired():
            del self._rules[origin]
            return None
        return rules

    def put(self, origin: str, rules: RobotsRules) -> None:
        """Cache ``rules`` for ``origin``."""
        self._rules[origin] = rules

    def __len__(self) -> int:
        return len(self._rules)
