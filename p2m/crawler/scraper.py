"""Pages, sitemaps and feeds: what a non-image response is, and the URLs it yields (Scrapy's scraper)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor

from p2m.crawler.fetch import Response
from p2m.crawler.frontier import Item, NewUrl
from p2m.crawler.images import sniff_format
from p2m.crawler.offsite import OffsiteFilter
from p2m.crawler.parse import parse_html
from p2m.crawler.sitemaps import BodyTooLarge, DecodeError, parse_sitemap_or_feed, sniff_xml_kind
from p2m.crawler.stats import Stats
from p2m.crawler.urls import normalize_url

NO_IMAGES = {"noai", "noimageai", "noml", "none"}  # page-level robots meta values that keep its images out


def decide_kind(resp: Response) -> str:
    """What a response to an ``auto``/``page`` URL is: ``image``, ``sitemap``, ``feed``, ``page`` or ``other``."""
    body = resp.body or b""
    if sniff_format(body[:16]):
        return "image"
    xml = sniff_xml_kind(body)
    if xml:
        return xml
    ctype = resp.content_type
    if (
        "html" in ctype
        or body[:1024].lstrip().lower().startswith((b"<!doctype html", b"<html"))
        or b"<html" in body[:1024].lower()
    ):
        return "page"
    return "other"


class Scraper:
    """Parses pages and sitemaps off the event loop and hands the URLs found to ``enqueue``.

    Args:
        depth: link distance followed from a seed.
        max_bytes: cap on a decompressed sitemap.
        offsite: drops unusable URLs.
        stats: the run's counters.
        cpu: the executor parsing runs in.
        enqueue: takes the new URLs.
        finish: records a URL's result.
    """

    def __init__(
        self,
        depth: int,
        max_bytes: int,
        offsite: OffsiteFilter,
        stats: Stats,
        cpu: Executor,
        enqueue: Callable[[list[NewUrl]], object],
        finish: Callable[..., None],
    ) -> None:
        self.depth = depth
        self.max_bytes = max_bytes
        self.offsite = offsite
        self.stats = stats
        self.cpu = cpu
        self.enqueue = enqueue
        self.finish = finish

    async def page(self, item: Item, resp: Response) -> None:
        """Images (unless the page opts out) and, below --depth, links (unless nofollow)."""
        charset = None
        ctype = resp.headers.get("Content-Type", "")
        if "charset=" in ctype:
            charset = ctype.split("charset=", 1)[1].split(";")[0].strip().strip('"') or None
        loop = asyncio.get_running_loop()
        page = await loop.run_in_executor(self.cpu, parse_html, resp.body or b"", item.url, charset)
        self.stats.inc("page/parsed")
        self.stats.inc("page/images_found", len(page.images))
        news: list[NewUrl] = []
        valid = self.offsite.valid
        if page.robots & NO_IMAGES:
            self.stats.inc("page/meta_robots_noimageai")
        else:
            for ref in page.images:
                if valid(ref.url):
                    news.append(
                        NewUrl(
                            normalize_url(ref.url),
                            ref.url,
                            "image",
                            item.depth,
                            item.url,
                            ref.alt,
                            page.license,
                        )
                    )
        if item.depth < self.depth and not (page.robots & {"nofollow", "none"}):
            self.stats.inc("page/links", len(page.links))
            for link in page.links:
                if valid(link):
                    news.append(NewUrl(normalize_url(link), link, "page", item.depth + 1, item.url))
        self.enqueue(news)
        self.finish(item, "done", "ok", resp=resp, kind="page")

    async def sitemap(self, item: Item, resp: Response) -> None:
        """Sitemaps, pages and images listed by a sitemap, sitemap index, RSS or Atom feed."""
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self.cpu,
                functools.partial(
                    parse_sitemap_or_feed, resp.body or b"", item.url, max_bytes=self.max_bytes
                ),
            )
        except BodyTooLarge:
            self.finish(item, "failed", "failed", f"sitemap over the {self.max_bytes}-byte cap", resp=resp)
            return
        except DecodeError as exc:
            self.finish(item, "failed", "failed", f"unreadable sitemap/feed: {exc}", resp=resp)
            return
        self.stats.inc(f"sitemap/parsed/{found.kind}")
        valid = self.offsite.valid
        news = [
            NewUrl(normalize_url(u), u, "sitemap", item.depth, item.url) for u in found.sitemaps if valid(u)
        ]
        news += [NewUrl(normalize_url(u), u, "page", item.depth, item.url) for u in found.pages if valid(u)]
        news += [
            NewUrl(normalize_url(u), u, "image", item.depth, item.url, alt)
            for u, alt in found.images
            if valid(u)
        ]
        self.enqueue(news)
        self.finish(
            item, "done", "ok", resp=resp, kind="feed" if found.kind in ("rss", "atom") else "sitemap"
        )
