"""The offsite filter: which found URLs enter the frontier (scope, --deny, --images-any-domain), as Scrapy's
OffsiteMiddleware decides for its requests. Out-of-scope images are recorded, so the manifest says why."""

from __future__ import annotations

import logging

from yarl import URL

from p2m.crawler.frontier import Frontier, NewUrl
from p2m.crawler.stats import Stats
from p2m.crawler.urls import Scope, UrlError, canonical_host, normalize_url, registrable_domain

logger = logging.getLogger(__name__)


class OffsiteFilter:
    """Decides whether URLs are in the crawl.

    Args:
        scope: the crawl's domains and --deny patterns.
        images_any_domain: images may come from any host (--deny still applies).
        frontier: where refused images are recorded as skipped.
        stats: the run's counters.
    """

    def __init__(self, scope: Scope, images_any_domain: bool, frontier: Frontier, stats: Stats) -> None:
        self.scope = scope
        self.images_any_domain = images_any_domain
        self.frontier = frontier
        self.stats = stats

    def valid(self, url: str) -> bool:
        """True for a URL the crawler can use at all (counts ``frontier/invalid_url`` otherwise)."""
        try:
            normalize_url(url)
        except UrlError:
            self.stats.inc("frontier/invalid_url")
            return False
        return True

    def denied(self, url: str) -> bool:
        """True when a --deny pattern matches ``url``."""
        return any(p.search(url) for p in self.scope.deny)

    def why_out(self, url: str, kind: str) -> str | None:
        """None when a URL of this kind is in scope, else a one-line reason."""
        if kind == "image" and self.images_any_domain:
            return self.scope.why_out(url) if self.denied(url) else None
        return self.scope.why_out(url)

    def keep(self, news: list[NewUrl]) -> list[NewUrl]:
        """The URLs in scope; refused images are recorded as skipped, refused others counted."""
        kept = []
        for new in news:
            why = self.why_out(new.url, new.kind)
            if why is None:
                kept.append(new)
            elif (
                new.kind == "image"
            ):  # images are recorded, so that the manifest says why they were not fetched
                self.stats.inc("scope/out_of_scope/image")
                self.frontier.record_skipped(new, f"out of scope: {why}")
            else:
                self.stats.inc(f"scope/out_of_scope/{new.kind}")
        return kept

    def seed_denied(self, new: NewUrl) -> bool:
        """True (counted as ``seed/denied``, logged and recorded as skipped) when --deny drops a seed."""
        if not self.denied(new.url):
            return False
        why = self.scope.why_out(new.url)
        self.stats.inc("seed/denied")
        logger.warning("seed skipped: %s %s", new.url, why)
        self.frontier.record_skipped(new, f"seed {why}")
        return True

    def robots_redirect_refused(self, origin: str, target: str) -> str | None:
        """Why a robots.txt redirect from ``origin`` to ``target`` is not followed (None: follow it).

        The hop gets the checks of every other request: a usable URL, the --deny patterns, and a host
        in the crawl's scope or on the registrable domain of ``origin``; the fetcher then applies the
        address guard to it.
        """
        try:
            normalize_url(target)
        except UrlError as exc:
            return f"robots.txt redirected to an unusable URL: {exc}"
        why = self.scope.why_out(target)
        if why is None:
            return None
        same_site = registrable_domain(URL(origin).host or "") == registrable_domain(
            canonical_host(URL(target).raw_host or "")
        )
        if same_site and not self.denied(target):
            return None
        return f"robots.txt redirected to {target}: {why}"
