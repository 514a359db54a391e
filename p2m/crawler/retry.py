"""Retry and redirect policy: what a failed or redirected response leads to (Scrapy's RetryMiddleware and
RedirectMiddleware). Pure decisions; the engine carries them out."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from p2m.crawler.config import CrawlConfig
from p2m.crawler.fetch import Fetcher, Response
from p2m.crawler.frontier import Item, NewUrl
from p2m.crawler.offsite import OffsiteFilter
from p2m.crawler.scheduler import Slot
from p2m.crawler.stats import Stats
from p2m.crawler.urls import UrlError, normalize_url

logger = logging.getLogger(__name__)

CONNECTION_ERRORS = {"connect", "dns", "timeout", "disconnected"}


@dataclass
class Outcome:
    """What to do with a URL after a response.

    Attributes:
        retry_in: seconds until the URL is fetched again (None: it ends here).
        hold_host: with ``retry_in``, the whole host waits too (429/503).
        state, status, error: the final result when ``retry_in`` is None.
        follow: for a redirect that is followed, the new URL to enqueue.
    """

    retry_in: float | None = None
    hold_host: bool = False
    state: str = "failed"
    status: str = "failed"
    error: str = ""
    follow: NewUrl | None = None


class RetryPolicy:
    """Retries with exponential backoff and jitter (or the server's Retry-After), and gives up on dead hosts.

    Args:
        config: retries, backoff_base, backoff_max, max_retry_after, host_error_limit.
        stats: the run's counters.
        count: called with every response (``fetch/...`` counters).
        rng: jitter source.
    """

    def __init__(
        self,
        config: CrawlConfig,
        stats: Stats,
        count: Callable[[Response], None],
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.count = count
        self.rng = rng or random.Random()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before attempt ``attempt + 1``: Retry-After (capped), else base * 2**attempt * U(0.5, 1.5)."""
        c = self.config
        if retry_after is not None:
            return min(retry_after, c.max_retry_after)
        return min(c.backoff_max, c.backoff_base * (2**attempt) * self.rng.uniform(0.5, 1.5))

    async def get(self, fetcher: Fetcher, url: str, **kwargs) -> Response:
        """GET with retries in place (for robots.txt, which has no journal row to wait in)."""
        for attempt in range(self.config.retries + 1):
            resp = await fetcher.get(url, **kwargs)
            self.count(resp)
            if not (resp.retryable and attempt < self.config.retries):
                return resp
            await asyncio.sleep(self.backoff(attempt, resp.retry_after))
        return resp

    def on_error(self, item: Item, slot: Slot, resp: Response) -> Outcome:
        """The outcome of a failed response; marks ``slot`` dead after too many connection failures in a row."""
        c = self.config
        if resp.error_kind in CONNECTION_ERRORS:
            slot.errors_in_row += 1
        if resp.retryable and item.attempts < c.retries:
            if resp.retry_after is not None and resp.retry_after > c.max_retry_after:
                return Outcome(
                    error=f"{resp.error}: Retry-After {resp.retry_after:.0f} s over the "
                    f"{c.max_retry_after:.0f} s limit"
                )
            self.stats.inc(f"fetch/retry/{resp.error_kind}")
            return Outcome(
                retry_in=self.backoff(item.attempts, resp.retry_after), hold_host=resp.status in (429, 503)
            )  # the whole host asked us to slow down
        if slot.errors_in_row >= c.host_error_limit and not slot.dead_reason:
            slot.dead_reason = (
                f"host gave up after {slot.errors_in_row} connection failures in a row ({resp.error})"
            )
            logger.warning("%s: %s", slot.key, slot.dead_reason)
            self.stats.inc("fetch/dead_hosts")
        if resp.error_kind == "x_robots_tag":
            self.stats.inc("x_robots/skipped")
            return Outcome(state="skipped", status="skipped", error=resp.error)
        attempts = f" after {item.attempts + 1} attempts" if item.attempts else ""
        return Outcome(error=resp.error + attempts)


class RedirectPolicy:
    """Follows redirects as new URLs (so each hop gets robots.txt, politeness and the address guard),
    within --max-redirects and the offsite filter.

    Args:
        max_redirects: hops followed from one URL.
        offsite: the scope checks.
        stats: the run's counters.
    """

    def __init__(self, max_redirects: int, offsite: OffsiteFilter, stats: Stats) -> None:
        self.max_redirects = max_redirects
        self.offsite = offsite
        self.stats = stats

    def on_redirect(self, item: Item, resp: Response) -> Outcome:
        """A refused redirect ends the URL; a followed one ends it as ``redirect`` with the target in ``follow``."""
        target = resp.location or ""
        if item.hops + 1 > self.max_redirects:
            self.stats.inc("redirect/too_many")
            return Outcome(
                error=f"too many redirects ({item.hops + 1} > --max-redirects {self.max_redirects})"
            )
        try:
            key = normalize_url(target)
        except UrlError as exc:
            return Outcome(error=f"redirect to an unusable URL: {exc}")
        why = self.offsite.why_out(target, item.kind)
        if why:
            return Outcome(state="skipped", status="skipped", error=f"redirect to {target}: {why}")
        new = NewUrl(key, target, item.kind, item.depth, item.page_url, item.alt, item.license, item.hops + 1)
        return Outcome(
            state="done", status="redirect", error=f"redirected (HTTP {resp.status}) to {target}", follow=new
        )
