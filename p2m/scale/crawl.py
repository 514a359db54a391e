"""``p2m crawl --ray``: hosts partitioned over crawler actors, one crawl folder as output.

Each actor runs the ordinary :class:`~p2m.crawler.engine.Crawler` on the hosts it owns (a stable hash of
``scheme://host:port``), so robots.txt, Crawl-delay and the per-host limits hold cluster-wide: one host is only
ever fetched by one actor. A new URL found on one actor goes to the actor that owns its host, through an outbox
kept on disk until the owner has taken it, so killing an actor loses nothing: Ray restarts it, it reopens its
journal (``journals/NNN/crawl.sqlite``, URLs in flight are fetched again) and resends its outbox; owners drop
URLs they already know, so nothing is fetched twice. Images go to the one ``images/`` folder by sha256.

The crawl ends when every actor is idle and no URL is on its way between actors (seen twice in a row); then
this process merges the journals into one ``manifest.parquet`` (an image stored by two actors from two URLs is
``ok`` once and ``duplicate`` after, by fetch time) and one ``stats.json``. The folder must be on a filesystem
every node sees.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import time
import uuid
import warnings
from collections import Counter, defaultdict
from dataclasses import astuple
from pathlib import Path
from typing import Any

from p2m.crawler import CrawlConfig, CrawlResult, read_seeds
from p2m.crawler.api import JOURNAL, MANIFEST, STATS
from p2m.crawler.engine import Crawler
from p2m.crawler.frontier import Frontier, NewUrl
from p2m.crawler.manifest import write_manifest
from p2m.crawler.person import load_person_filter
from p2m.crawler.stats import Stats
from p2m.crawler.urls import Scope, UrlError, host_key
from p2m.errors import CrawlError
from p2m.io import read_json, write_json
from p2m.scale import common

logger = logging.getLogger(__name__)

#: The record of a Ray crawl in its folder: number of actors, seeds, earlier runs.
RAY_CRAWL = "ray_crawl.json"
JOURNALS = "journals"
OUTBOX = "outbox.sqlite"
#: Seconds between the driver's looks at the actors.
POLL_S = 0.25
#: Seconds between progress lines in the log.
PROGRESS_S = 10.0


def owner(url: str, actors: int) -> int:
    """The actor that owns ``url``'s host: a hash of ``scheme://host:port`` that every process agrees on."""
    digest = hashlib.sha256(host_key(url).encode()).digest()
    return int.from_bytes(digest[:8], "big") % actors


class Outbox:
    """URLs handed to other actors and not yet confirmed taken, in a SQLite file of the actor's own."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, dest INTEGER, urls TEXT)")

    def put(self, dest: int, news: list[NewUrl]) -> int:
        cur = self.db.execute(
            "INSERT INTO outbox(dest, urls) VALUES (?, ?)", (dest, json.dumps([astuple(n) for n in news]))
        )
        return int(cur.lastrowid)

    def done(self, row: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE id=?", (row,))

    def pending(self) -> list[tuple[int, int, list[NewUrl]]]:
        rows = self.db.execute("SELECT id, dest, urls FROM outbox ORDER BY id").fetchall()
        return [(r, d, [NewUrl(*u) for u in json.loads(urls)]) for r, d, urls in rows]

    def close(self) -> None:
        self.db.close()


class CrawlActor:
    """One crawler of a Ray crawl (wrapped with ``ray.remote`` by :func:`crawl`); every method runs on its loop."""

    def __init__(
        self, index: int, count: int, out: str, config: dict[str, Any], seeds: list[str], group: str
    ) -> None:
        self.index, self.count, self.out, self.group = index, count, Path(out), group
        self.config = CrawlConfig.from_options(**config)
        folder = self.out / JOURNALS / f"{index:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        self.frontier = Frontier(folder / JOURNAL)
        self.outbox = Outbox(folder / OUTBOX)
        self.person_filter = load_person_filter(self.config.person_filter)
        self.stats = Stats()
        try:
            scope = Scope(seeds, self.config.allow_domains, self.config.deny)
        except UrlError as exc:
            raise CrawlError(str(exc)) from exc
        self.crawler = Crawler(self.out, self.config, self.frontier, scope, self.stats, self.person_filter)
        self.crawler.route = self._route
        self.crawler.linger = True
        self.peers: dict[int, Any] = {}  # actor handles by index, looked up by name on first use
        self.in_flight: set[int] = set()
        self.sent = 0
        self.closed = False

    async def run(self) -> dict[str, Any]:
        """Crawl until :meth:`stop`; returns why it ended, this run's stats and the journal's counts."""
        import ray

        for row, dest, news in self.outbox.pending():  # what a killed predecessor may not have delivered
            self._send(row, dest, news)
        reason = await self.crawler.run()
        while self.in_flight:
            await asyncio.sleep(0.05)
        if reason == "finished" and self.crawler.scheduler is not None and self.crawler.scheduler.queued():
            reason = "limits"
        self.stats.finish(reason)
        self.closed = True
        self.frontier.close()
        self.outbox.close()
        if self.person_filter is not None:
            self.person_filter.close()
        with warnings.catch_warnings():  # Ray 2.60 warns about its own use of a deprecated API here
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        return {"reason": reason, "stats": self.stats.to_dict(), "restarted": restarted}

    async def add_seeds(self, urls: list[str]) -> int:
        """Seed URLs; each goes to the actor that owns its host."""
        return self.crawler.add_seeds(urls)

    async def receive(self, news: list[NewUrl]) -> int:
        """URLs of this actor's hosts found by another actor (already known ones are dropped); -1 when this
        actor's run is over (the sender keeps them in its outbox for the next run)."""
        return -1 if self.closed else self.crawler.add_urls(news)

    async def status(self) -> dict[str, Any]:
        return {
            "idle": self.crawler.idle(),
            "in_flight": len(self.in_flight),
            "images": self.crawler.images_stored,
            "pages": self.crawler.pages_read,
            "sent": self.sent,
        }

    async def stop(self, reason: str) -> None:
        self.crawler.stop(reason)

    def _route(self, news: list[NewUrl]) -> list[NewUrl]:
        mine: list[NewUrl] = []
        others: dict[int, list[NewUrl]] = defaultdict(list)
        for new in news:
            dest = owner(new.url, self.count)
            (mine if dest == self.index else others[dest]).append(new)
        for dest, batch in others.items():
            self._send(self.outbox.put(dest, batch), dest, batch)  # on disk before the page is marked done
        return mine

    def _send(self, row: int, dest: int, news: list[NewUrl]) -> None:
        self.in_flight.add(row)
        self.sent += len(news)
        if dest not in self.peers:
            import ray

            self.peers[dest] = ray.get_actor(actor_name(self.group, dest))
        ref = self.peers[dest].receive.remote(news)
        asyncio.ensure_future(self._delivered(row, ref))

    async def _delivered(self, row: int, ref: Any) -> None:
        try:
            if await ref >= 0:
                self.outbox.done(row)
        except Exception as exc:  # noqa: BLE001 - kept in the outbox, resent on the next run
            logger.warning(
                "actor %d: URLs for another actor not delivered (%s); kept for the next run", self.index, exc
            )
        finally:
            self.in_flight.discard(row)


def actor_name(group: str, index: int) -> str:
    return f"p2m-crawl-{group}-{index:03d}"


def crawl(
    seeds: list[str] | tuple[str, ...] = (),
    out: str | Path = "crawl-out",
    *,
    resume: bool = False,
    actors: int | None = None,
    address: str | None = common.LOCAL,
    config: CrawlConfig | None = None,
    **options: Any,
) -> CrawlResult:
    """:func:`p2m.crawler.crawl` over ``actors`` crawler actors on Ray (default: one per CPU of the cluster).

    A resumed crawl keeps the number of actors it started with (the host partition depends on it).

    Raises:
        CrawlError: as :func:`p2m.crawler.crawl`; also a folder of a local crawl, or another ``actors`` on resume.
    """
    import ray

    t0 = time.time()
    config = CrawlConfig.from_options(**options) if config is None else config.updated(**options)
    out = Path(out)
    record_path = out / RAY_CRAWL
    if (out / JOURNAL).exists():
        raise CrawlError(f"{out} holds a crawl made without --ray ({JOURNAL}); continue it without --ray")
    if record_path.exists() and not resume:
        raise CrawlError(
            f"{out} already holds a crawl ({RAY_CRAWL}); pass --resume to continue it, "
            "or choose another --out folder"
        )
    if resume and not record_path.exists():
        raise CrawlError(f"nothing to resume in {out}: no {RAY_CRAWL}; run without --resume to start a crawl")
    urls = read_seeds(list(seeds))
    if not urls and not resume:
        raise CrawlError("no seeds: give page, sitemap or feed URLs, image URLs, or a file of URLs")
    record = read_json(record_path) if resume else {"previous_runs": []}
    common.init(address)
    count = int(record.get("actors") or actors or common.cluster_cpus())
    if actors is not None and actors != count:
        raise CrawlError(
            f"--actors {actors}: {out} was crawled with {count} actors (its hosts are split "
            f"that way); resume with --actors {count}"
        )
    if count < 1:
        raise CrawlError(f"--actors {count}: expected at least 1")
    out.mkdir(parents=True, exist_ok=True)
    all_seeds = list(dict.fromkeys([*record.get("seeds", []), *urls]))
    write_json(
        record_path, {**record, "actors": count, "seeds": all_seeds, "config": config.to_dict()}, indent=1
    )
    for stale in [*out.glob(".*.tmp"), *(out / "images").glob("*/.*.tmp")]:  # unfinished atomic writes
        stale.unlink(missing_ok=True)

    group = uuid.uuid4().hex[:8]
    remote = ray.remote(max_restarts=-1, max_task_retries=-1)(CrawlActor)
    actor_config = {**config.to_dict(), "manifest_every_s": 0, "progress": False}
    handles = [
        remote.options(name=actor_name(group, i), scheduling_strategy="SPREAD").remote(
            i, count, str(out), actor_config, all_seeds, group
        )
        for i in range(count)
    ]
    runs = [h.run.remote() for h in handles]
    if urls:
        ray.get(handles[0].add_seeds.remote(urls))
    reason = _wait(handles, runs, config)
    results = ray.get(runs)
    for h in handles:
        ray.kill(h, no_restart=True)
    reason = _finish_reason(reason, [r["reason"] for r in results])
    stats, totals = _merge(out, count, results, config)
    run = {
        **stats,
        "elapsed_s": round(time.time() - t0, 3),
        "finish_reason": reason,
        "start_time": t0,
        "finish_time": time.time(),
    }
    previous = record.get("previous_runs", [])
    write_json(
        out / STATS,
        {
            "partial": False,
            "run": run,
            "totals": totals,
            "previous_runs": previous,
            "config": config.to_dict(),
            "ray": {
                "actors": count,
                "address": address or common.LOCAL,
                "per_actor": [r["stats"]["counters"] for r in results],
                "restarted": [r["restarted"] for r in results],
            },
        },
        indent=1,
    )
    record = read_json(record_path)
    record["previous_runs"] = [
        *previous,
        {k: run[k] for k in ("start_time", "finish_time", "elapsed_s", "finish_reason")},
    ][-50:]
    write_json(record_path, record, indent=1)
    return CrawlResult(
        out=out,
        manifest=out / MANIFEST,
        finish_reason=reason,
        stats=run,
        totals=totals,
        images_stored=totals.get("stored_files", 0),
        elapsed_s=run["elapsed_s"],
    )


def _finish_reason(driver: str, actors: list[str]) -> str:
    """Why the crawl ended: the driver's reason, else the first limit an actor met, else ``finished``."""
    if driver != "finished":
        return driver
    for reason in ("interrupted", "max_images", "max_pages", "limits"):
        if reason in actors:
            return reason
    return "finished"


def _wait(handles: list[Any], runs: list[Any], config: CrawlConfig) -> str:
    """Watch the actors until the crawl is over (or a limit or Ctrl-C stops it); returns the finish reason."""
    import ray

    quiet, last_sent, reason = 0, -1, "finished"
    said = time.monotonic()
    try:
        while True:
            done, _ = ray.wait(runs, num_returns=len(runs), timeout=POLL_S)
            if len(done) == len(runs):
                return reason
            status = ray.get([h.status.remote() for h in handles])
            images = sum(s["images"] for s in status)
            pages = sum(s["pages"] for s in status)
            if time.monotonic() - said > PROGRESS_S:
                said = time.monotonic()
                logger.info(
                    "crawl: %d images stored, %d pages read, %d of %d actors idle",
                    images,
                    pages,
                    sum(s["idle"] for s in status),
                    len(status),
                )
            if config.max_images is not None and images >= config.max_images:
                reason = "max_images"
            elif (
                config.max_pages is not None and pages >= config.max_pages and all(s["idle"] for s in status)
            ):
                reason = "max_pages"
            elif all(s["idle"] and not s["in_flight"] for s in status):
                # Over twice in a row, with no URL sent between actors meanwhile: no status was taken while a
                # URL travelled between two actors' looks.
                sent = sum(s["sent"] for s in status)
                quiet = quiet + 1 if sent == last_sent else 1
                last_sent = sent
                if quiet < 2:
                    continue
            else:
                quiet, last_sent = 0, -1
                continue
            ray.get([h.stop.remote(reason) for h in handles])
            ray.wait(runs, num_returns=len(runs))
            return reason
    except KeyboardInterrupt:
        logger.info("stopping: interrupted")
        ray.get([h.stop.remote("interrupted") for h in handles])
        ray.wait(runs, num_returns=len(runs))
        return "interrupted"


class _Journals:
    """The actors' journals as one row source for :func:`p2m.crawler.manifest.write_manifest`.

    An image file stored by two actors (same bytes from URLs on hosts of different actors) is ``ok`` for the
    earliest fetch and ``duplicate`` for the others, as one crawler would have recorded it.
    """

    def __init__(self, frontiers: list[Frontier]) -> None:
        self.frontiers = frontiers
        self.cross_duplicates = 0

    def rows(self):
        rows = [r for f in self.frontiers for r in f.rows()]
        first: dict[str, float] = {}
        for r in rows:
            if r["status"] == "ok" and r["kind"] == "image" and r["sha256"]:
                t = r["fetched_at"] or 0.0
                first[r["sha256"]] = min(first.get(r["sha256"], t), t)
        taken: set[str] = set()
        self.cross_duplicates = 0
        for r in rows:
            if r["status"] == "ok" and r["kind"] == "image" and r["sha256"]:
                if r["sha256"] in taken or (r["fetched_at"] or 0.0) > first[r["sha256"]]:
                    r = {**r, "status": "duplicate"}
                    self.cross_duplicates += 1
                else:
                    taken.add(r["sha256"])
            yield r


def _merge(out: Path, count: int, results: list[dict[str, Any]], config: CrawlConfig) -> tuple[dict, dict]:
    """One manifest from the actors' journals; this run's stats and the journal totals summed over actors."""
    frontiers = [Frontier(out / JOURNALS / f"{i:03d}" / JOURNAL) for i in range(count)]
    try:
        journals = _Journals(frontiers)
        write_manifest(journals, out / MANIFEST, config.phash_distance)
        totals: Counter[str] = Counter()
        shas: set[str] = set()
        for f in frontiers:
            totals.update({k: v for k, v in f.counts().items() if k != "stored_files"})
            shas.update(r["sha256"] for r in f.rows() if r["kind"] == "image" and r["status"] == "ok")
    finally:
        for f in frontiers:
            f.close()
    totals["image/ok"] -= journals.cross_duplicates
    totals["image/duplicate"] += journals.cross_duplicates
    totals["stored_files"] = len(shas)
    counters: Counter[str] = Counter()
    maxima: dict[str, float] = {}
    messages: Counter[str] = Counter()
    for r in results:
        counters.update(r["stats"]["counters"])
        messages.update(r["stats"]["error_messages"])
        for k, v in r["stats"]["maxima"].items():
            maxima[k] = max(v, maxima.get(k, v))
    counters["image/duplicate_across_actors"] = journals.cross_duplicates  # over all runs, as totals
    stats = {
        "counters": dict(sorted((k, v) for k, v in counters.items() if v)),
        "maxima": dict(sorted(maxima.items())),
        "error_messages": dict(messages.most_common(100)),
    }
    return stats, dict(sorted((k, v) for k, v in totals.items() if v or k == "stored_files"))
