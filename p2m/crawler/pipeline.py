"""The image pipeline: hash first, check new bytes off the event loop, score, store (Scrapy's ImagesPipeline)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from p2m.crawler.config import CrawlConfig
from p2m.crawler.fetch import Response
from p2m.crawler.frontier import Frontier, Item
from p2m.crawler.images import CheckedImage, ImageRejected, check_image, store_image
from p2m.crawler.person import MediaPipePersonFilter
from p2m.crawler.stats import Stats

REJECTED_CACHE = 10_000  # rejected byte hashes remembered (oldest forgotten first)

# finish(item, state, status, error, resp=..., sha256=..., image=..., kind=..., raw_sha256=...)
Finish = Callable[..., None]


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def image_pool(processes: int) -> Executor:
    """Image checks run in ``processes`` child processes, or in threads when ``processes`` is 0."""
    if processes <= 0:
        return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="p2m-image")
    return ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("forkserver"))


def _check_in_worker(data: bytes, **options) -> CheckedImage:
    """:func:`check_image` for an executor: the unchanged bytes are not sent back (the caller has them)."""
    checked = check_image(data, **options)
    if not checked.rotated:
        checked.data = b""
    return checked


class ImagePipeline:
    """Turns an image response into a stored file, a duplicate or a rejection, recorded through ``finish``.

    Hash first: bytes already stored (or already rejected) are recorded without decoding; the same
    new bytes arriving from several URLs at once are checked once, the other URLs wait for that
    result. New bytes get every check of :func:`p2m.crawler.images.check_image`.

    Args:
        out: the crawl folder.
        config: size limits, person threshold.
        frontier: the journal (which bytes are stored).
        stats: the run's counters.
        finish: records a URL's result.
        cpu: executor for decoding (threads or processes).
        io: executor for hashing big bodies and writing files.
        person_filter: the optional person scorer, run on ``detector``.
        detector: a one-thread executor for the person scorer.
    """

    def __init__(
        self,
        out: Path,
        config: CrawlConfig,
        frontier: Frontier,
        stats: Stats,
        finish: Finish,
        cpu: Executor,
        io: Executor,
        person_filter: MediaPipePersonFilter | None = None,
        detector: Executor | None = None,
    ) -> None:
        self.out = out
        self.config = config
        self.frontier = frontier
        self.stats = stats
        self.finish = finish
        self.cpu = cpu
        self.io = io
        self.person_filter = person_filter
        self.detector = detector
        self._checking: dict[str, asyncio.Future] = {}  # raw sha256 -> done when its first check ends
        self._rejected: dict[str, tuple[str, str]] = {}  # raw sha256 -> (stat key, reason)

    async def process(self, item: Item, resp: Response) -> bool:
        """Record ``item``'s image; returns True when a new file was stored."""
        body = resp.body or b""
        loop = asyncio.get_running_loop()
        raw = (
            sha256_hex(body)
            if len(body) <= 1 << 20
            else await loop.run_in_executor(self.io, sha256_hex, body)
        )
        while True:
            stored = self.frontier.stored_sha(raw)
            if stored is not None:
                self.stats.inc("image/duplicate")
                self.finish(item, "done", "duplicate", resp=resp, sha256=stored, kind="image")
                return False
            rejected = self._rejected.get(raw)
            if rejected is not None:
                self.stats.inc(f"image/rejected/{rejected[0]}")
                self.finish(item, "failed", "rejected", rejected[1], resp=resp, kind="image")
                return False
            waiting = self._checking.get(raw)
            if waiting is None:
                break
            self.stats.inc("image/waited_for_same_bytes")
            await waiting
        done = loop.create_future()
        self._checking[raw] = done
        try:
            return await self._new_image(item, resp, raw)
        finally:
            del self._checking[raw]
            done.set_result(None)

    async def _new_image(self, item: Item, resp: Response, raw: str) -> bool:
        """Every check on bytes not seen before, then store them."""
        c = self.config
        loop = asyncio.get_running_loop()
        self.stats.inc("image/checked")  # decoded and hashed: once per distinct content
        body = resp.body or b""
        try:
            checked = await loop.run_in_executor(
                self.cpu,
                functools.partial(
                    _check_in_worker,
                    body,
                    min_size=c.min_size_px,
                    max_pixels=c.max_pixels,
                    declared_type=resp.content_type,
                    preview=self.person_filter is not None,
                    sha256=raw,
                ),
            )
            if not checked.rotated:
                checked.data = body
        except ImageRejected as exc:
            self._remember_rejection(raw, exc.key, exc.reason)
            self.stats.inc(f"image/rejected/{exc.key}")
            self.finish(item, "failed", "rejected", exc.reason, resp=resp, kind="image")
            return False
        if self.frontier.image_known(checked.sha256):  # other bytes that became the same file (EXIF rotation)
            self.stats.inc("image/duplicate")
            self.finish(item, "done", "duplicate", resp=resp, sha256=checked.sha256, kind="image")
            return False
        score = None
        if self.person_filter is not None:
            score = await loop.run_in_executor(self.detector, self.person_filter.score, checked.preview)
            if score < c.person_threshold:
                reason = f"no person found (mediapipe score {score:.2f} < {c.person_threshold:.2f})"
                self._remember_rejection(raw, "no_person", reason)
                self.stats.inc("image/rejected/no_person")
                self.finish(item, "failed", "rejected", reason, resp=resp, kind="image")
                return False
        rel, _ = await loop.run_in_executor(self.io, store_image, self.out, checked)
        if self.frontier.image_known(checked.sha256):  # the same file arrived from other bytes meanwhile
            self.stats.inc("image/duplicate")
            self.finish(item, "done", "duplicate", resp=resp, sha256=checked.sha256, kind="image")
            return False
        image_row = {
            "sha256": checked.sha256,
            "path": rel,
            "width": checked.width,
            "height": checked.height,
            "format": checked.format,
            "bytes": len(checked.data),
            "phash": checked.phash,
            "person_score": score,
        }
        self.stats.inc("image/stored")
        if checked.rotated:
            self.stats.inc("image/exif_rotated")
        self.finish(
            item,
            "done",
            "ok",
            resp=resp,
            sha256=checked.sha256,
            image=image_row,
            kind="image",
            raw_sha256=raw,
        )
        return True

    def _remember_rejection(self, raw: str, key: str, reason: str) -> None:
        """Rejections depend only on the bytes: the same bytes from another URL are rejected without a decode."""
        if len(self._rejected) >= REJECTED_CACHE:
            self._rejected.pop(next(iter(self._rejected)))
        self._rejected[raw] = (key, reason)
