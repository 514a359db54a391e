"""The crawl engine: wires frontier, scheduler, fetcher, robots, parsers and image checks together."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from yarl import URL

from p2m.crawler.config import CrawlConfig
from p2m.crawler.fetch import Fetcher, FetchSettings, Response
from p2m.crawler.frontier import Frontier, Item, NewUrl
from p2m.crawler.images import CheckedImage, ImageRejected, check_image, sniff_format, store_image
from p2m.crawler.parse import parse_html
from p2m.crawler.person import MediaPipePersonFilter
from p2m.crawler.robots import RobotsCache, rules_from_response
from p2m.crawler.scheduler import Scheduler, Slot, Task
from p2m.crawler.sitemaps import BodyTooLarge, DecodeError, parse_sitemap_or_feed, sniff_xml_kind
from p2m.crawler.stats import Stats
from p2m.crawler.urls import Scope, UrlError, canonical_host, normalize_url, registrable_domain

logger = logging.getLogger(__name__)

IMAGE_ACCEPT = "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.5"
PAGE_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".avif")
CONNECTION_ERRORS = {"connect", "dns", "timeout", "disconnected"}
REJECTED_CACHE = 10_000  # rejected byte hashes remembered (oldest forgotten first)
FLUSH_EVERY_S = 0.05  # journal results are written in one transaction per this many seconds


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_in_worker(data: bytes, **options) -> CheckedImage:
    """:func:`check_image` for an executor: the unchanged bytes are not sent back (the caller has them)."""
    checked = check_image(data, **options)
    if not checked.rotated:
        checked.data = b""
    return checked


def _image_pool(processes: int) -> Executor:
    """Image checks run in ``processes`` child processes (so decoding does not hold the event loop's GIL),
    or in threads when ``processes`` is 0."""
    if processes <= 0:
        return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="p2m-image")
    return ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("forkserver"))


def guess_kind(url: str) -> str:
    """``image`` for a URL whose path ends like an image file, else ``auto`` (decided by the response)."""
    return "image" if URL(url).path.lower().endswith(IMAGE_SUFFIXES) else "auto"


class Crawler:
    """Runs one crawl over a journal. Built by :func:`p2m.crawler.crawl`; use :meth:`run` once.

    Args:
        out: the crawl folder (``images/`` goes there).
        config: the settings.
        frontier: the open journal.
        scope: which hosts and URLs are in scope.
        stats: the run's counters.
        person_filter: the optional person scorer.
    """

    def __init__(self, out: Path, config: CrawlConfig, frontier: Frontier, scope: Scope, stats: Stats,
                 person_filter: MediaPipePersonFilter | None = None) -> None:
        self.out = out
        self.config = config
        self.frontier = frontier
        self.scope = scope
        self.stats = stats
        self.person_filter = person_filter
        self.robots = RobotsCache()
        self.rng = random.Random()
        counts = frontier.counts()
        self.images_stored = counts.get("image/ok", 0)
        self.pages_read = sum(counts.get(f"{k}/ok", 0) for k in ("page", "auto"))
        self.inflight_images = 0
        self.inflight_pages = 0
        self._counted: set[int] = set()
        self._checking: dict[str, asyncio.Future] = {}  # raw sha256 -> done when its first check ends
        self._rejected: dict[str, tuple[str, str]] = {}  # raw sha256 -> (stat key, reason)
        self._flush_handle: asyncio.TimerHandle | None = None
        self.stop_reason: str | None = None
        self.scheduler: Scheduler | None = None
        #: Hooks for a crawl spread over several crawlers (:mod:`p2m.scale.crawl`): ``route(news)`` returns the
        #: new URLs this crawler owns and hands the others to theirs; ``linger`` keeps :meth:`run` going when
        #: idle (URLs may still arrive through :meth:`add_urls`) until :meth:`stop`.
        self.route: Callable[[list[NewUrl]], list[NewUrl]] | None = None
        self.linger = False
        self.cpu = _image_pool(config.image_processes)
        self.io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="p2m-store")  # fsync waits overlap
        self.detector = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2m-person")

    # -- entry --------------------------------------------------------------------------------
    async def run(self, progress=None) -> str:
        """Crawl until the frontier is empty, a limit is reached or :meth:`stop` is called; returns why it ended."""
        c = self.config
        self.scheduler = Scheduler(c.concurrency, c.per_host, c.delay, self._admit)
        self.scheduler.linger = self.linger
        settings = FetchSettings(
            user_agent=c.user_agent, allow_private=c.allow_private, allow_loopback=c.allow_loopback,
            max_bytes=c.max_bytes,
            connect_timeout=c.connect_timeout, read_timeout=c.read_timeout, total_timeout=c.total_timeout,
            concurrency=c.concurrency, x_robots_directives=tuple(c.x_robots_directives), ua_token=c.ua_token,
        )
        for item in self.frontier.queued():
            self.scheduler.push(item)
        self.frontier.deferred = True  # results are written in batches (see _finish)
        try:
            async with Fetcher(settings) as fetcher:
                self.fetcher = fetcher
                workers = [asyncio.create_task(self._worker()) for _ in range(c.concurrency)]
                ticker = asyncio.create_task(self._tick(progress)) if progress is not None else None
                await self.scheduler.run()
                await asyncio.gather(*workers)
                if ticker is not None:
                    ticker.cancel()
        finally:
            self.cpu.shutdown(wait=True)
            self.io.shutdown(wait=True)
            self.detector.shutdown(wait=True)
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self.frontier.deferred = False
            self.frontier.flush()
        if self.stop_reason:
            return self.stop_reason
        if self.scheduler.queued():
            return "max_pages" if c.max_pages is not None and self.pages_read >= c.max_pages else "limits"
        return "finished"

    def stop(self, reason: str = "interrupted") -> None:
        """Stop handing out new URLs; requests in flight finish and are recorded."""
        if self.stop_reason is None:
            self.stop_reason = reason
            logger.info("stopping: %s", reason)
        if self.scheduler is not None:
            self.scheduler.close()

    def add_seeds(self, urls: list[str]) -> int:
        """Enqueue seed URLs at depth 0; returns how many were new. A seed that --deny drops is counted
        (``seed/denied``), logged and recorded as skipped, so that the manifest says why."""
        news = []
        for url in urls:
            try:
                key = normalize_url(url)
            except UrlError as exc:
                self.stats.inc("seed/invalid")
                logger.warning("seed skipped: %s", exc)
                continue
            new = NewUrl(key, url, guess_kind(url), 0)
            why = self.scope.why_out(url)
            if why is not None and any(p.search(url) for p in self.scope.deny):
                self.stats.inc("seed/denied")
                logger.warning("seed skipped: %s %s", url, why)
                self.frontier.record_skipped(new, f"seed {why}")
                continue
            news.append(new)
        return len(self._enqueue(news))

    def add_urls(self, news: list[NewUrl]) -> int:
        """Enqueue URLs found elsewhere (by another crawler); returns how many were new."""
        return len(self._enqueue(news))

    def idle(self) -> bool:
        """With ``linger``: nothing in flight and nothing that can start (a plain run would have ended)."""
        return self.scheduler is not None and self.scheduler.idle

    # -- workers ------------------------------------------------------------------------------
    def _admit(self, item: Item) -> bool:
        c = self.config
        if item.kind == "image":
            if c.max_images is not None and self.images_stored + self.inflight_images >= c.max_images:
                return False
            self.inflight_images += 1
            self._counted.add(item.id)
        elif item.kind in ("page", "auto"):
            if c.max_pages is not None and self.pages_read + self.inflight_pages >= c.max_pages:
                return False
            self.inflight_pages += 1
            self._counted.add(item.id)
        return True

    async def _worker(self) -> None:
        assert self.scheduler is not None
        while True:
            task = await self.scheduler.next()
            if task is None:
                return
            try:
                if task.item is None:
                    await self._read_robots(task.slot)
                else:
                    await self._fetch_item(task)
            except Exception as exc:  # a bug must cost one URL, not the crawl
                logger.exception("internal error on %s", task.item.url if task.item else task.slot.key)
                self.stats.inc("engine/internal_error")
                if task.item is not None:
                    self._finish(task.item, "failed", "failed", f"internal error: {type(exc).__name__}: {exc}")
                else:  # robots.txt unread for a reason of ours: the host is not crawled
                    task.slot.robots = rules_from_response(
                        0, None, f"internal error: {type(exc).__name__}: {exc}", self.config.ua_token)
                    task.slot.robots_state = "ready"
            finally:
                if task.item is not None and task.item.id in self._counted:
                    self._counted.discard(task.item.id)
                    if task.item.kind == "image":
                        self.inflight_images -= 1
                    elif task.item.kind in ("page", "auto"):
                        self.inflight_pages -= 1
                self.scheduler.done(task)

    async def _tick(self, bar) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            bar(self)
            if self.config.manifest_every_s and time.monotonic() - last > self.config.manifest_every_s:
                last = time.monotonic()
                self.stats.inc("output/periodic_writes")
                self.frontier.flush()
                run = self.stats.to_dict()
                await asyncio.get_running_loop().run_in_executor(self.io, self._write_partial, run)

    def _write_partial(self, run: dict) -> None:
        """The periodic manifest and stats, written in a thread from a read-only connection (the loop goes on)."""
        from p2m.crawler.api import write_outputs  # noqa: PLC0415 - avoids an import cycle

        reader = Frontier(self.frontier.path, readonly=True)
        try:
            write_outputs(self.out, reader, run, self.config, partial=True)
        finally:
            reader.close()

    # -- robots.txt ---------------------------------------------------------------------------
    async def _read_robots(self, slot: Slot) -> None:
        rules = self.robots.get(slot.key)
        if rules is None:
            url = f"{slot.key}/robots.txt"
            resp = None
            refused = None
            for _hop in range(6):  # RFC 9309: follow at least five redirects
                resp = await self._get_with_retries(url, accept="text/plain,*/*;q=0.5", max_bytes=512 * 1024 + 1)
                if resp.location is None:
                    break
                refused = self._robots_redirect_refused(slot.key, resp.location)
                if refused:
                    break
                url = resp.location
            assert resp is not None
            self.stats.inc("robots/fetched")
            self.stats.inc(f"robots/status/{resp.status or resp.error_kind}")
            if refused:
                self.stats.inc("robots/redirect_refused")
                rules = rules_from_response(0, None, refused, self.config.ua_token)
            elif resp.location is not None:
                rules = rules_from_response(0, None, "too many redirects", self.config.ua_token)
            elif resp.error_kind == "too_large":
                rules = rules_from_response(200, b"", "", self.config.ua_token)
            else:
                rules = rules_from_response(resp.status, resp.body, resp.error, self.config.ua_token)
            if resp.error_kind == "blocked":  # the SSRF guard: say so on every URL of the host
                slot.dead_reason = resp.error
            self.robots.put(slot.key, rules)
            if rules.mode == "disallow_all":
                self.stats.inc("robots/disallow_all_hosts")
                logger.warning("%s: %s; the host is treated as disallowed", slot.key, rules.reason)
        slot.robots = rules
        delay = rules.crawl_delay()
        if delay:
            if delay > self.config.max_crawl_delay:
                logger.warning("%s: Crawl-delay %s s cut to --max-crawl-delay %s s", slot.key, delay,
                               self.config.max_crawl_delay)
                delay = self.config.max_crawl_delay
            slot.min_delay = delay
            slot.concurrency = 1
            slot.next_start = max(slot.next_start, time.monotonic() + delay)  # counts from the robots.txt request
            self.stats.max_value("robots/crawl_delay_max", delay)
        if self.config.follow_robots_sitemaps:
            news = [NewUrl(normalize_url(s), s, "sitemap", 0) for s in rules.sitemaps() if self._valid(s)]
            self._enqueue(news)
        slot.robots_state = "ready"

    def _robots_redirect_refused(self, origin: str, target: str) -> str | None:
        """Why a robots.txt redirect to ``target`` is not followed (None: follow it).

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
            canonical_host(URL(target).raw_host or ""))
        if same_site and not any(p.search(target) for p in self.scope.deny):
            return None
        return f"robots.txt redirected to {target}: {why}"

    async def _get_with_retries(self, url: str, **kwargs) -> Response:
        for attempt in range(self.config.retries + 1):
            resp = await self.fetcher.get(url, **kwargs)
            self._count_response(resp)
            if not (resp.retryable and attempt < self.config.retries):
                return resp
            await asyncio.sleep(self._backoff(attempt, resp.retry_after))
        return resp

    # -- one URL ------------------------------------------------------------------------------
    async def _fetch_item(self, task: Task) -> None:
        item, slot = task.item, task.slot
        assert item is not None
        if slot.dead_reason:
            self._finish(item, "failed", "failed", slot.dead_reason)
            return
        rules = slot.robots
        if rules is None:  # never crawl a host whose robots.txt was not read
            rules = rules_from_response(0, None, "robots.txt was not read", self.config.ua_token)
        if not rules.allowed(item.url):
            self.stats.inc("robots/forbidden")
            self._finish(item, "skipped", "skipped", rules.why_not())
            return
        is_image = item.kind == "image"
        resp = await self.fetcher.get(item.url, accept=IMAGE_ACCEPT if is_image else PAGE_ACCEPT,
                                      check_x_robots=is_image)
        self._count_response(resp)
        assert self.scheduler is not None
        self.scheduler.release_host(task)  # the host is free again: parsing and image checks need no connection
        if resp.location is not None:
            self._redirect(item, resp)
            return
        if resp.error:
            self._failed_fetch(item, slot, resp)
            return
        slot.errors_in_row = 0
        kind = item.kind
        if kind in ("auto", "page"):
            kind = self._decide_kind(resp)
        if kind == "image":
            await self._image(item, resp)
            return
        if kind in ("sitemap", "feed"):
            await self._sitemap(item, resp)
            return
        if kind == "page":
            await self._page(item, resp)
            return
        self._finish(item, "failed", "failed", f"unsupported content type {resp.content_type or '(none)'}",
                     resp=resp)
        self.stats.inc("page/unsupported_type")

    def _decide_kind(self, resp: Response) -> str:
        body = resp.body or b""
        if sniff_format(body[:16]):
            return "image"
        xml = sniff_xml_kind(body)
        if xml:
            return xml
        ctype = resp.content_type
        if "html" in ctype or body[:1024].lstrip().lower().startswith((b"<!doctype html", b"<html")) \
                or b"<html" in body[:1024].lower():
            return "page"
        return "other"

    def _redirect(self, item: Item, resp: Response) -> None:
        target = resp.location or ""
        if item.hops + 1 > self.config.max_redirects:
            self.stats.inc("redirect/too_many")
            self._finish(item, "failed", "failed",
                         f"too many redirects ({item.hops + 1} > --max-redirects {self.config.max_redirects})",
                         resp=resp)
            return
        try:
            key = normalize_url(target)
        except UrlError as exc:
            self._finish(item, "failed", "failed", f"redirect to an unusable URL: {exc}", resp=resp)
            return
        why = self._out_of_scope(target, item.kind)
        if why:
            self._finish(item, "skipped", "skipped", f"redirect to {target}: {why}", resp=resp)
            return
        new = NewUrl(key, target, item.kind, item.depth, item.page_url, item.alt, item.license, item.hops + 1)
        if self._enqueue([new]):
            self.stats.inc("redirect/followed")
            self._finish(item, "done", "redirect", f"redirected (HTTP {resp.status}) to {target}", resp=resp)
        else:
            self.stats.inc("redirect/to_seen")
            self._finish(item, "done", "redirect",
                         f"redirected (HTTP {resp.status}) to {target}, already seen (redirect loop or duplicate)",
                         resp=resp)

    def _failed_fetch(self, item: Item, slot: Slot, resp: Response) -> None:
        c = self.config
        assert self.scheduler is not None
        if resp.error_kind in CONNECTION_ERRORS:
            slot.errors_in_row += 1
        if resp.retryable and item.attempts < c.retries:
            if resp.retry_after is not None and resp.retry_after > c.max_retry_after:
                self._finish(item, "failed", "failed",
                             f"{resp.error}: Retry-After {resp.retry_after:.0f} s over the "
                             f"{c.max_retry_after:.0f} s limit", resp=resp)
                return
            wait = self._backoff(item.attempts, resp.retry_after)
            if resp.status in (429, 503):
                self.scheduler.hold_host(slot, wait)  # the whole host asked us to slow down
            self.stats.inc(f"fetch/retry/{resp.error_kind}")
            self.frontier.retry_later(item, time.time() + wait, resp.error, resp.status or None)
            self.scheduler.push(item)
            return
        if slot.errors_in_row >= c.host_error_limit and not slot.dead_reason:
            slot.dead_reason = f"host gave up after {slot.errors_in_row} connection failures in a row ({resp.error})"
            logger.warning("%s: %s", slot.key, slot.dead_reason)
            self.stats.inc("fetch/dead_hosts")
        if resp.error_kind == "x_robots_tag":
            self.stats.inc("x_robots/skipped")
            self._finish(item, "skipped", "skipped", resp.error, resp=resp)
            return
        attempts = f" after {item.attempts + 1} attempts" if item.attempts else ""
        self._finish(item, "failed", "failed", resp.error + attempts, resp=resp)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        c = self.config
        if retry_after is not None:
            return min(retry_after, c.max_retry_after)
        return min(c.backoff_max, c.backoff_base * (2 ** attempt) * self.rng.uniform(0.5, 1.5))

    # -- pages, sitemaps, images --------------------------------------------------------------
    async def _page(self, item: Item, resp: Response) -> None:
        charset = None
        ctype = resp.headers.get("Content-Type", "")
        if "charset=" in ctype:
            charset = ctype.split("charset=", 1)[1].split(";")[0].strip().strip('"') or None
        loop = asyncio.get_running_loop()
        page = await loop.run_in_executor(self.cpu, parse_html, resp.body or b"", item.url, charset)
        self.pages_read += 1
        self.stats.inc("page/parsed")
        self.stats.inc("page/images_found", len(page.images))
        news: list[NewUrl] = []
        if page.robots & {"noai", "noimageai", "none"}:
            self.stats.inc("page/meta_robots_noimageai")
        else:
            for ref in page.images:
                if self._valid(ref.url):
                    news.append(NewUrl(normalize_url(ref.url), ref.url, "image", item.depth, item.url, ref.alt,
                                       page.license))
        follow = item.depth < self.config.depth and not (page.robots & {"nofollow", "none"})
        if follow:
            self.stats.inc("page/links", len(page.links))
            for link in page.links:
                if self._valid(link):
                    news.append(NewUrl(normalize_url(link), link, "page",
                                       item.depth + 1, item.url))
        self._enqueue(news)
        self._finish(item, "done", "ok", resp=resp, kind="page")

    async def _sitemap(self, item: Item, resp: Response) -> None:
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self.cpu, functools.partial(
                parse_sitemap_or_feed, resp.body or b"", item.url, max_bytes=self.config.max_bytes))
        except BodyTooLarge:
            self._finish(item, "failed", "failed", f"sitemap over the {self.config.max_bytes}-byte cap", resp=resp)
            return
        except DecodeError as exc:
            self._finish(item, "failed", "failed", f"unreadable sitemap/feed: {exc}", resp=resp)
            return
        self.stats.inc(f"sitemap/parsed/{found.kind}")
        news = [NewUrl(normalize_url(u), u, "sitemap", item.depth, item.url) for u in found.sitemaps
                if self._valid(u)]
        news += [NewUrl(normalize_url(u), u, "page", item.depth, item.url) for u in found.pages if self._valid(u)]
        news += [NewUrl(normalize_url(u), u, "image", item.depth, item.url, alt) for u, alt in found.images
                 if self._valid(u)]
        self._enqueue(news)
        self._finish(item, "done", "ok", resp=resp, kind="feed" if found.kind in ("rss", "atom") else "sitemap")

    async def _image(self, item: Item, resp: Response) -> None:
        """Hash first: bytes already stored (or already rejected) are recorded without decoding; the same new
        bytes arriving from several URLs at once are checked once, the other URLs wait for that result."""
        body = resp.body or b""
        loop = asyncio.get_running_loop()
        raw = _sha256(body) if len(body) <= 1 << 20 else await loop.run_in_executor(self.io, _sha256, body)
        while True:
            stored = self.frontier.stored_sha(raw)
            if stored is not None:
                self.stats.inc("image/duplicate")
                self._finish(item, "done", "duplicate", resp=resp, sha256=stored, kind="image")
                return
            rejected = self._rejected.get(raw)
            if rejected is not None:
                self.stats.inc(f"image/rejected/{rejected[0]}")
                self._finish(item, "failed", "rejected", rejected[1], resp=resp, kind="image")
                return
            waiting = self._checking.get(raw)
            if waiting is None:
                break
            self.stats.inc("image/waited_for_same_bytes")
            await waiting
        done = loop.create_future()
        self._checking[raw] = done
        try:
            await self._new_image(item, resp, raw)
        finally:
            del self._checking[raw]
            done.set_result(None)

    async def _new_image(self, item: Item, resp: Response, raw: str) -> None:
        """Every check on bytes not seen before, then store them."""
        c = self.config
        loop = asyncio.get_running_loop()
        self.stats.inc("image/checked")  # decoded and hashed: once per distinct content
        body = resp.body or b""
        try:
            checked = await loop.run_in_executor(self.cpu, functools.partial(
                _check_in_worker, body, min_size=c.min_size_px, max_pixels=c.max_pixels,
                declared_type=resp.content_type, preview=self.person_filter is not None, sha256=raw))
            if not checked.rotated:
                checked.data = body
        except ImageRejected as exc:
            self._remember_rejection(raw, exc.key, exc.reason)
            self.stats.inc(f"image/rejected/{exc.key}")
            self._finish(item, "failed", "rejected", exc.reason, resp=resp, kind="image")
            return
        if self.frontier.image_known(checked.sha256):  # other bytes that became the same file (EXIF rotation)
            self.stats.inc("image/duplicate")
            self._finish(item, "done", "duplicate", resp=resp, sha256=checked.sha256, kind="image")
            return
        score = None
        if self.person_filter is not None:
            score = await loop.run_in_executor(self.detector, self.person_filter.score, checked.preview)
            if score < c.person_threshold:
                reason = f"no person found (mediapipe score {score:.2f} < {c.person_threshold:.2f})"
                self._remember_rejection(raw, "no_person", reason)
                self.stats.inc("image/rejected/no_person")
                self._finish(item, "failed", "rejected", reason, resp=resp, kind="image")
                return
        rel, _ = await loop.run_in_executor(self.io, store_image, self.out, checked)
        if self.frontier.image_known(checked.sha256):  # the same file arrived from other bytes meanwhile
            self.stats.inc("image/duplicate")
            self._finish(item, "done", "duplicate", resp=resp, sha256=checked.sha256, kind="image")
            return
        image_row = {"sha256": checked.sha256, "path": rel, "width": checked.width, "height": checked.height,
                     "format": checked.format, "bytes": len(checked.data), "phash": checked.phash,
                     "person_score": score}
        self.images_stored += 1
        self.stats.inc("image/stored")
        if checked.rotated:
            self.stats.inc("image/exif_rotated")
        self._finish(item, "done", "ok", resp=resp, sha256=checked.sha256, image=image_row, kind="image",
                     raw_sha256=raw)
        if c.max_images is not None and self.images_stored >= c.max_images:
            self.stop("max_images")

    def _remember_rejection(self, raw: str, key: str, reason: str) -> None:
        """Rejections depend only on the bytes: the same bytes from another URL are rejected without a decode."""
        if len(self._rejected) >= REJECTED_CACHE:
            self._rejected.pop(next(iter(self._rejected)))
        self._rejected[raw] = (key, reason)

    # -- helpers ------------------------------------------------------------------------------
    def _valid(self, url: str) -> bool:
        try:
            normalize_url(url)
        except UrlError:
            self.stats.inc("frontier/invalid_url")
            return False
        return True

    def _out_of_scope(self, url: str, kind: str) -> str | None:
        if kind == "image" and self.config.images_any_domain:
            return self.scope.why_out(url) if any(p.search(url) for p in self.scope.deny) else None
        return self.scope.why_out(url)

    def _enqueue(self, news: list[NewUrl]) -> list[Item]:
        if self.route is not None:
            news = self.route(news)
        keep = []
        for new in news:
            why = self._out_of_scope(new.url, new.kind)
            if why is None:
                keep.append(new)
            elif new.kind == "image":  # images are recorded, so that the manifest says why they were not fetched
                self.stats.inc("scope/out_of_scope/image")
                self.frontier.record_skipped(new, f"out of scope: {why}")
            else:
                self.stats.inc(f"scope/out_of_scope/{new.kind}")
        items = self.frontier.enqueue_many(keep)
        self.stats.inc("frontier/enqueued", len(items))
        self.stats.inc("frontier/duplicate", len(keep) - len(items))
        if self.scheduler is not None:
            for item in items:
                self.scheduler.push(item)
        return items

    def _count_response(self, resp: Response) -> None:
        self.stats.inc("fetch/requests")
        self.stats.inc("fetch/bytes", resp.raw_bytes)
        if resp.status:
            self.stats.inc(f"fetch/status/{resp.status}")
        if resp.error:
            self.stats.inc(f"fetch/error/{resp.error_kind}")
            self.stats.message(resp.error)
        self.stats.max_value("fetch/latency_max_s", round(resp.elapsed, 3))

    def _finish(self, item: Item, state: str, status: str, error: str = "", *, resp: Response | None = None,
                sha256: str | None = None, image: dict | None = None, kind: str | None = None,
                raw_sha256: str | None = None) -> None:
        if status not in ("ok", "duplicate", "redirect"):
            self.stats.inc(f"url/{status}")
            if error:
                self.stats.message(error)
        self.frontier.finish(
            item, state, status, error=error, http_status=resp.status if resp is not None and resp.status else None,
            sha256=sha256, content_type=resp.content_type if resp is not None else None,
            nbytes=resp.raw_bytes if resp is not None else None, image=image, kind=kind, raw_sha256=raw_sha256,
        )
        if self.frontier.deferred and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_EVERY_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self.frontier.flush()
