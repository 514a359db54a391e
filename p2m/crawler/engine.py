"""The crawl engine: hands each URL to the part that owns it, and records the result. It only dispatches.

The parts, each in its own module as in Scrapy: the scheduler (per-host politeness), the fetcher,
the robots.txt middleware (:mod:`robotstxt`), the retry and redirect policy (:mod:`retry`), the
offsite filter (:mod:`offsite`), the scraper for pages and sitemaps (:mod:`scraper`) and the image
pipeline (:mod:`pipeline`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from yarl import URL

from p2m.crawler.config import CrawlConfig
from p2m.crawler.fetch import Fetcher, FetchSettings, Response
from p2m.crawler.frontier import Frontier, Item, NewUrl
from p2m.crawler.offsite import OffsiteFilter
from p2m.crawler.person import MediaPipePersonFilter
from p2m.crawler.pipeline import ImagePipeline, image_pool
from p2m.crawler.retry import RedirectPolicy, RetryPolicy
from p2m.crawler.robotstxt import RobotsMiddleware
from p2m.crawler.scheduler import Scheduler, Task
from p2m.crawler.scraper import Scraper, decide_kind
from p2m.crawler.stats import Stats
from p2m.crawler.urls import Scope, UrlError, normalize_url

logger = logging.getLogger(__name__)

IMAGE_ACCEPT = "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.5"
PAGE_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".avif")
FLUSH_EVERY_S = 0.05  # journal results are written in one transaction per this many seconds


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

    def __init__(
        self,
        out: Path,
        config: CrawlConfig,
        frontier: Frontier,
        scope: Scope,
        stats: Stats,
        person_filter: MediaPipePersonFilter | None = None,
    ) -> None:
        self.out = out
        self.config = config
        self.frontier = frontier
        self.stats = stats
        counts = frontier.counts()
        self.images_stored = counts.get("image/ok", 0)
        self.pages_read = sum(counts.get(f"{k}/ok", 0) for k in ("page", "auto"))
        self.inflight_images = 0
        self.inflight_pages = 0
        self._counted: set[int] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self.stop_reason: str | None = None
        self.scheduler: Scheduler | None = None
        #: Hooks for a crawl spread over several crawlers (:mod:`p2m.scale.crawl`): ``route(news)`` returns the
        #: new URLs this crawler owns and hands the others to theirs; ``linger`` keeps :meth:`run` going when
        #: idle (URLs may still arrive through :meth:`add_urls`) until :meth:`stop`.
        self.route: Callable[[list[NewUrl]], list[NewUrl]] | None = None
        self.linger = False
        self.cpu = image_pool(config.image_processes)
        self.io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="p2m-store")  # fsync waits overlap
        self.detector = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2m-person")
        self.offsite = OffsiteFilter(scope, config.images_any_domain, frontier, stats)
        self.retry = RetryPolicy(config, stats, self._count_response)
        self.redirects = RedirectPolicy(config.max_redirects, self.offsite, stats)
        self.robots = RobotsMiddleware(config, stats, self.offsite, self.retry)
        self.scraper = Scraper(
            config.depth, config.max_bytes, self.offsite, stats, self.cpu, self._enqueue, self._finish
        )
        self.images = ImagePipeline(
            out, config, frontier, stats, self._finish, self.cpu, self.io, person_filter, self.detector
        )

    # -- entry --------------------------------------------------------------------------------
    async def run(self, progress=None) -> str:
        """Crawl until the frontier is empty, a limit is reached or :meth:`stop` is called; returns why it ended."""
        c = self.config
        self.scheduler = Scheduler(c.concurrency, c.per_host, c.delay, self._admit)
        self.scheduler.linger = self.linger
        settings = FetchSettings(
            user_agent=c.user_agent,
            allow_private=c.allow_private,
            allow_loopback=c.allow_loopback,
            max_bytes=c.max_bytes,
            connect_timeout=c.connect_timeout,
            read_timeout=c.read_timeout,
            total_timeout=c.total_timeout,
            concurrency=c.concurrency,
            x_robots_directives=tuple(c.x_robots_directives),
            ua_token=c.ua_token,
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
            if not self.offsite.seed_denied(new):
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
                    self._enqueue(await self.robots.read(task.slot, self.fetcher))
                else:
                    await self._fetch_item(task)
            except Exception as exc:  # a bug must cost one URL, not the crawl
                logger.exception("internal error on %s", task.item.url if task.item else task.slot.key)
                self.stats.inc("engine/internal_error")
                if task.item is not None:
                    self._finish(
                        task.item, "failed", "failed", f"internal error: {type(exc).__name__}: {exc}"
                    )
                else:
                    self.robots.read_failed(task.slot, exc)
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

    # -- one URL ------------------------------------------------------------------------------
    async def _fetch_item(self, task: Task) -> None:
        item, slot = task.item, task.slot
        assert item is not None and self.scheduler is not None
        refused = self.robots.refusal(item, slot)
        if refused:
            self._finish(item, *refused)
            return
        is_image = item.kind == "image"
        resp = await self.fetcher.get(
            item.url, accept=IMAGE_ACCEPT if is_image else PAGE_ACCEPT, check_x_robots=is_image
        )
        self._count_response(resp)
        self.scheduler.release_host(
            task
        )  # the host is free again: parsing and image checks need no connection
        if resp.location is not None:
            self._redirect(item, resp)
            return
        if resp.error:
            outcome = self.retry.on_error(item, slot, resp)
            if outcome.retry_in is None:
                self._finish(item, outcome.state, outcome.status, outcome.error, resp=resp)
                return
            if outcome.hold_host:
                self.scheduler.hold_host(slot, outcome.retry_in)
            self.frontier.retry_later(item, time.time() + outcome.retry_in, resp.error, resp.status or None)
            self.scheduler.push(item)
            return
        slot.errors_in_row = 0
        kind = decide_kind(resp) if item.kind in ("auto", "page") else item.kind
        if kind == "image":
            if await self.images.process(item, resp):
                self.images_stored += 1
                if self.config.max_images is not None and self.images_stored >= self.config.max_images:
                    self.stop("max_images")
        elif kind in ("sitemap", "feed"):
            await self.scraper.sitemap(item, resp)
        elif kind == "page":
            await self.scraper.page(item, resp)
            self.pages_read += 1
        else:
            self._finish(
                item,
                "failed",
                "failed",
                f"unsupported content type {resp.content_type or '(none)'}",
                resp=resp,
            )
            self.stats.inc("page/unsupported_type")

    def _redirect(self, item: Item, resp: Response) -> None:
        outcome = self.redirects.on_redirect(item, resp)
        if outcome.follow is None:
            self._finish(item, outcome.state, outcome.status, outcome.error, resp=resp)
        elif self._enqueue([outcome.follow]):
            self.stats.inc("redirect/followed")
            self._finish(item, outcome.state, outcome.status, outcome.error, resp=resp)
        else:
            self.stats.inc("redirect/to_seen")
            self._finish(
                item,
                outcome.state,
                outcome.status,
                f"{outcome.error}, already seen (redirect loop or duplicate)",
                resp=resp,
            )

    # -- recording ----------------------------------------------------------------------------
    def _enqueue(self, news: list[NewUrl]) -> list[Item]:
        if self.route is not None:
            news = self.route(news)
        keep = self.offsite.keep(news)
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

    def _finish(
        self,
        item: Item,
        state: str,
        status: str,
        error: str = "",
        *,
        resp: Response | None = None,
        sha256: str | None = None,
        image: dict | None = None,
        kind: str | None = None,
        raw_sha256: str | None = None,
    ) -> None:
        if status not in ("ok", "duplicate", "redirect"):
            self.stats.inc(f"url/{status}")
            if error:
                self.stats.message(error)
        self.frontier.finish(
            item,
            state,
            status,
            error=error,
            http_status=resp.status if resp is not None and resp.status else None,
            sha256=sha256,
            content_type=resp.content_type if resp is not None else None,
            nbytes=resp.raw_bytes if resp is not None else None,
            image=image,
            kind=kind,
            raw_sha256=raw_sha256,
        )
        if self.frontier.deferred and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_EVERY_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self.frontier.flush()
