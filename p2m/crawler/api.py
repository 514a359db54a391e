"""The crawler's one public entry function, ``crawl``, and the files it leaves in the crawl folder."""

from __future__ import annotations

import asyncio
import csv
import gzip
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from p2m.crawler.config import CrawlConfig
from p2m.crawler.engine import Crawler
from p2m.crawler.frontier import Frontier
from p2m.crawler.manifest import write_manifest
from p2m.crawler.person import load_person_filter
from p2m.crawler.stats import Stats
from p2m.crawler.urls import Scope, UrlError, normalize_url
from p2m.errors import CrawlError, P2MError
from p2m.io import read_json, write_json

logger = logging.getLogger(__name__)

JOURNAL = "crawl.sqlite"
MANIFEST = "manifest.parquet"
STATS = "stats.json"


@dataclass
class CrawlResult:
    """What :func:`crawl` returns.

    Attributes:
        out: the crawl folder.
        manifest: path of ``manifest.parquet``.
        finish_reason: ``finished``, ``max_images``, ``max_pages``, ``limits`` or ``interrupted``.
        stats: this run's counters (the ``run`` part of ``stats.json``).
        totals: journal row counts over all runs, by ``kind/status`` (``image/ok``...) plus ``queued``.
        images_stored: distinct image files stored over all runs.
        elapsed_s: seconds this run took.
    """

    out: Path
    manifest: Path
    finish_reason: str
    stats: dict[str, Any]
    totals: dict[str, int]
    images_stored: int
    elapsed_s: float


def read_seeds(seeds: list[str] | tuple[str, ...], url_column: str = "url") -> list[str]:
    """Expand seeds: a URL stays a URL; an existing file is read as a list of URLs.

    A ``.parquet`` file or a ``.csv``/``.tsv`` file (optionally ``.gz``) gives the URLs of its
    column ``url_column``; any other file is read as one URL per line (``#`` starts a comment).

    Raises:
        CrawlError: a seed that is neither an http(s) URL nor a readable file, naming it (and the line/row).
    """
    urls: list[str] = []
    for seed in seeds:
        seed = seed.strip()
        if seed.lower().startswith(("http://", "https://")):
            urls.append(seed)
            continue
        path = Path(seed)
        if not path.is_file():
            raise CrawlError(f"seed {seed!r} is neither an http(s) URL nor a file of URLs")
        name = path.name.lower().removesuffix(".gz")
        if name.endswith((".parquet", ".csv", ".tsv")):
            rows = _table_column(path, url_column)
        else:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise CrawlError(f"{path}: cannot read the seed file: {exc}") from exc
            rows = [
                (f"{path}:{n}", ln.split("#", 1)[0].strip() if ln.lstrip().startswith("#") else ln.strip())
                for n, ln in enumerate(lines, 1)
            ]
        for where, line in rows:
            if not line:
                continue
            try:
                normalize_url(line)
            except UrlError as exc:
                raise CrawlError(f"{where}: {exc}") from exc
            urls.append(line)
    return urls


def _table_column(path: Path, column: str) -> list[tuple[str, str]]:
    """``(place, value)`` for each row of ``column`` in a parquet or CSV/TSV file (places name file and row)."""
    name = path.name.lower().removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            schema = pq.read_schema(path)
            if column not in schema.names:
                raise CrawlError(
                    f"{path}: no column {column!r} (columns: {', '.join(schema.names)}); "
                    "choose one with --url-column"
                )
            values = pq.read_table(path, columns=[column]).column(column).to_pylist()
            return [(f"{path}: row {i}", "" if v is None else str(v).strip()) for i, v in enumerate(values)]
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if name.endswith(".tsv") else ",")
            if column not in (reader.fieldnames or []):
                raise CrawlError(
                    f"{path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])}); "
                    "choose one with --url-column"
                )
            return [(f"{path}:{reader.line_num}", (row.get(column) or "").strip()) for row in reader]
    except CrawlError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise CrawlError(f"{path}: cannot read the seed table: {exc}") from exc


def write_outputs(
    out: Path, frontier: Frontier, stats: Stats | dict[str, Any], config: CrawlConfig, partial: bool = False
) -> None:
    """Write ``manifest.parquet`` and ``stats.json`` atomically (``partial``: a periodic write mid-crawl).

    ``stats`` is the run's counters or a snapshot of them (``Stats.to_dict()``, taken on the crawl's thread).
    """
    write_manifest(frontier, out / MANIFEST, config.phash_distance)
    previous = frontier.get_meta("previous_runs") or []
    write_json(
        out / STATS,
        {
            "partial": partial,
            "run": stats if isinstance(stats, dict) else stats.to_dict(),
            "totals": frontier.counts(),
            "previous_runs": previous,
            "config": config.to_dict(),
        },
        indent=1,
    )


def crawl(
    seeds: list[str] | tuple[str, ...] = (),
    out: str | Path = "crawl-out",
    *,
    resume: bool = False,
    config: CrawlConfig | None = None,
    url_column: str = "url",
    retry_failed: bool = False,
    **options: Any,
) -> CrawlResult:
    """Crawl pages, sitemaps and feeds for images and write a dataset folder.

    The folder gets ``images/`` (content-addressed by sha256), ``manifest.parquet`` (one row per
    URL met, see :data:`p2m.crawler.manifest.SCHEMA`), ``stats.json`` and the journal
    ``crawl.sqlite``. With ``resume=True`` the crawl continues from the journal: URLs whose
    result was recorded are never fetched again; URLs in flight when the last run died are.

    Args:
        seeds: page, sitemap or feed URLs, image URLs, or files listing URLs one per line.
        out: the crawl folder.
        resume: continue the crawl recorded in ``out``. Seeds are optional then.
        config: settings; keyword ``options`` (the fields of :class:`CrawlConfig`) override it.
        url_column: the column holding the URLs in parquet/CSV/TSV seed files.
        retry_failed: with ``resume``, queue again the URLs that ended ``failed`` (HTTP, network and
            size errors; not rejected images, nor URLs skipped by robots.txt or scope) and fetch only those.

    Returns:
        A :class:`CrawlResult`.

    Raises:
        CrawlError: no seeds, a journal already there without ``resume`` (or none with it), a bad seed file.
        ConfigError: an unknown option or a bad value.
    """
    if config is None:
        config = CrawlConfig.from_options(**options)
    elif options:
        config = config.updated(**options)
    if retry_failed and not resume:
        raise CrawlError("--retry-failed retries the failed URLs of an earlier crawl: pass --resume too")
    out = Path(out)
    journal = out / JOURNAL
    if journal.exists() and not resume:
        raise CrawlError(
            f"{out} already holds a crawl ({journal}); pass --resume to continue it, "
            "or choose another --out folder"
        )
    if resume and not journal.exists():
        raise CrawlError(f"nothing to resume in {out}: no {JOURNAL}; run without --resume to start a crawl")
    urls = read_seeds(list(seeds), url_column)
    if not urls and not resume:
        raise CrawlError("no seeds: give page, sitemap or feed URLs, image URLs, or a file of URLs")
    person_filter = load_person_filter(config.person_filter)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CrawlError(f"cannot create the crawl folder {out}: {exc}") from exc
    frontier = Frontier(journal)
    try:
        stored_seeds = frontier.get_meta("seeds") or []
        all_seeds = list(dict.fromkeys([*stored_seeds, *urls]))
        frontier.set_meta("seeds", all_seeds)
        frontier.set_meta("config", config.to_dict())
        try:
            scope = Scope(all_seeds, config.allow_domains, config.deny)
        except UrlError as exc:
            raise CrawlError(str(exc)) from exc
        stats = Stats()
        if resume:
            _remember_previous_run(out, frontier)
            _remove_stale_temp_files(out)
        if retry_failed:
            requeued = frontier.requeue_failed()
            stats.inc("frontier/requeued_failed", requeued)
            logger.info("retrying %d failed URLs", requeued)
        crawler = Crawler(out, config, frontier, scope, stats, person_filter)
        crawler.add_seeds(urls)
        if resume:
            counts = frontier.counts()
            logger.info(
                "resuming crawl in %s: %d URLs queued, %d images stored",
                out,
                counts.get("queued", 0),
                counts.get("stored_files", 0),
            )
        reason = _run(crawler, config)
        stats.finish(reason)
        write_outputs(out, frontier, stats, config)
        totals = frontier.counts()
    finally:
        frontier.close()
        if person_filter is not None:
            person_filter.close()
    return CrawlResult(
        out=out,
        manifest=out / MANIFEST,
        finish_reason=reason,
        stats=stats.to_dict(),
        totals=totals,
        images_stored=totals.get("stored_files", 0),
        elapsed_s=stats.elapsed(),
    )


def _remove_stale_temp_files(out: Path) -> None:
    """Delete the temp files of atomic writes that a killed run left behind (never a finished file)."""
    stale = [*out.glob(".*.tmp"), *(out / "images").glob("*/.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d unfinished temp files left by the previous run", len(stale))


def _remember_previous_run(out: Path, frontier: Frontier) -> None:
    path = out / STATS
    if not path.exists():
        return
    try:
        previous = read_json(path)
    except P2MError as exc:
        logger.warning("ignoring the previous stats: %s", exc)
        return
    runs = frontier.get_meta("previous_runs") or []
    run = previous.get("run", {})
    runs.append(
        {k: run.get(k) for k in ("start_time", "finish_time", "elapsed_s", "finish_reason")}
        | {"partial": previous.get("partial", False)}
    )
    frontier.set_meta("previous_runs", runs[-50:])


def _run(crawler: Crawler, config: CrawlConfig) -> str:
    from tqdm import tqdm

    bar = tqdm(
        total=config.max_images,
        unit="img",
        desc="crawl",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None if config.progress else True,
        smoothing=0.1,
    )
    start_images = crawler.images_stored

    def update(c: Crawler) -> None:
        s = c.stats
        elapsed = max(s.elapsed(), 1e-6)
        bar.n = c.images_stored - start_images
        bar.set_postfix(
            pages=c.pages_read,
            queued=c.scheduler.queued() if c.scheduler else 0,
            failed=s.get("url/failed") + s.get("url/rejected"),
            req_s=f"{s.get('fetch/requests') / elapsed:.1f}",
            refresh=False,
        )
        bar.refresh()

    async def main() -> str:
        loop = asyncio.get_running_loop()
        installed = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, crawler.stop)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        try:
            return await crawler.run(update)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    try:
        reason = asyncio.run(main())
    finally:
        update(crawler)
        bar.close()
    return reason
