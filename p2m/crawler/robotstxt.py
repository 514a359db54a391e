"""The robots.txt middleware: reads each host's robots.txt before its first request (RFC 9309), sets the
host's Crawl-delay, and refuses the URLs it disallows (Scrapy's RobotsTxtMiddleware)."""

from __future__ import annotations

import logging
import time

from p2m.crawler.config import CrawlConfig
from p2m.crawler.fetch import Fetcher
from p2m.crawler.frontier import Item, NewUrl
from p2m.crawler.offsite import OffsiteFilter
from p2m.crawler.retry import RetryPolicy
from p2m.crawler.robots import MAX_ROBOTS_BYTES, RobotsCache, RobotsRules, rules_from_response
from p2m.crawler.scheduler import Slot
from p2m.crawler.stats import Stats
from p2m.crawler.urls import normalize_url

logger = logging.getLogger(__name__)


class RobotsMiddleware:
    """robots.txt per origin, with a 24-hour cache.

    Args:
        config: user agent token, max_crawl_delay, follow_robots_sitemaps.
        stats: the run's counters.
        offsite: the checks a robots.txt redirect hop goes through.
        retry: fetches robots.txt with retries.
    """

    def __init__(self, config: CrawlConfig, stats: Stats, offsite: OffsiteFilter, retry: RetryPolicy) -> None:
        self.config = config
        self.stats = stats
        self.offsite = offsite
        self.retry = retry
        self.cache = RobotsCache()

    def _rules(self, error: str) -> RobotsRules:
        """Disallow-all rules for a robots.txt that could not be read (``error`` says why)."""
        return rules_from_response(0, None, error, self.config.ua_token)

    async def read(self, slot: Slot, fetcher: Fetcher) -> list[NewUrl]:
        """Read ``slot``'s robots.txt (or take it from the cache) and apply it to the slot; returns the
        sitemaps it lists when --sitemaps-from-robots is on."""
        rules = self.cache.get(slot.key)
        if rules is None:
            rules = await self._fetch(slot, fetcher)
        slot.robots = rules
        delay = rules.crawl_delay()
        if delay:
            if delay > self.config.max_crawl_delay:
                logger.warning(
                    "%s: Crawl-delay %s s cut to --max-crawl-delay %s s",
                    slot.key,
                    delay,
                    self.config.max_crawl_delay,
                )
                delay = self.config.max_crawl_delay
            slot.min_delay = delay
            slot.concurrency = 1
            slot.next_start = max(
                slot.next_start, time.monotonic() + delay
            )  # counts from the robots.txt request
            self.stats.max_value("robots/crawl_delay_max", delay)
        news = []
        if self.config.follow_robots_sitemaps:
            news = [
                NewUrl(normalize_url(s), s, "sitemap", 0) for s in rules.sitemaps() if self.offsite.valid(s)
            ]
        slot.robots_state = "ready"
        return news

    async def _fetch(self, slot: Slot, fetcher: Fetcher) -> RobotsRules:
        url = f"{slot.key}/robots.txt"
        resp = None
        refused = None
        for _hop in range(6):  # RFC 9309: follow at least five redirects
            resp = await self.retry.get(
                fetcher, url, accept="text/plain,*/*;q=0.5", max_bytes=MAX_ROBOTS_BYTES + 1
            )
            if resp.location is None:
                break
            refused = self.offsite.robots_redirect_refused(slot.key, resp.location)
            if refused:
                break
            url = resp.location
        assert resp is not None
        self.stats.inc("robots/fetched")
        self.stats.inc(f"robots/status/{resp.status or resp.error_kind}")
        if refused:
            self.stats.inc("robots/redirect_refused")
            rules = self._rules(refused)
        elif resp.location is not None:
            rules = self._rules("too many redirects")
        elif resp.error_kind == "too_large":
            rules = rules_from_response(200, b"", "", self.config.ua_token)
        else:
            rules = rules_from_response(resp.status, resp.body, resp.error, self.config.ua_token)
        if resp.error_kind == "blocked":  # the SSRF guard: say so on every URL of the host
            slot.dead_reason = resp.error
        self.cache.put(slot.key, rules)
        if rules.mode == "disallow_all":
            self.stats.inc("robots/disallow_all_hosts")
            logger.warning("%s: %s; the host is treated as disallowed", slot.key, rules.reason)
        return rules

    def read_failed(self, slot: Slot, exc: BaseException) -> None:
        """robots.txt could not be read for a reason of ours (a bug): the host is not crawled."""
        slot.robots = self._rules(f"internal error: {type(exc).__name__}: {exc}")
        slot.robots_state = "ready"

    def refusal(self, item: Item, slot: Slot) -> tuple[str, str, str] | None:
        """``(state, status, reason)`` when ``item`` must not be fetched (dead host, robots.txt), else None."""
        if slot.dead_reason:
            return "failed", "failed", slot.dead_reason
        rules = slot.robots or self._rules(
            "robots.txt was not read"
        )  # never crawl a host whose robots.txt is unread
        if not rules.allowed(item.url):
            self.stats.inc("robots/forbidden")
            return "skipped", "skipped", rules.why_not()
        return None
