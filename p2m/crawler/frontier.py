"""The crawl journal: every URL's state in SQLite (WAL), so that a killed crawl resumes without refetching."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2m.errors import CrawlError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KINDS = ("auto", "page", "image", "sitemap", "feed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS urls (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,
    url TEXT NOT NULL,
    kind TEXT NOT NULL,
    depth INTEGER NOT NULL,
    page_url TEXT,
    alt TEXT,
    license TEXT,
    hops INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'queued',
    status TEXT,
    http_status INTEGER,
    error TEXT,
    sha256 TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    fetched_at REAL,
    content_type TEXT,
    bytes INTEGER
);
CREATE INDEX IF NOT EXISTS urls_state ON urls(state);
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    format TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    phash TEXT NOT NULL,
    person_score REAL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS raw_hashes (raw TEXT PRIMARY KEY, sha256 TEXT NOT NULL);
"""
# raw_hashes: sha256 of the fetched bytes -> sha256 of the stored file, where they differ (EXIF rotation
# re-encodes), so that the same bytes fetched again are known without decoding. Added without a schema
# version bump: an older journal gets the empty table and only misses that shortcut.


@dataclass
class Item:
    """One queued URL as the scheduler holds it in memory.

    Attributes:
        id: row id in the journal.
        url: the URL to fetch (as found, made absolute).
        kind: ``auto`` (seed, decided by the response), ``page``, ``image``, ``sitemap`` or ``feed``.
        depth: link distance from a seed (seeds and sitemap entries are 0).
        page_url: the page the URL was found on ('' for seeds).
        alt: alt text of the image ('' when none).
        license: licence URL of the page the image came from ('' when none).
        hops: redirects followed to reach this URL.
        attempts: fetch attempts so far (retries count).
        not_before: wall-clock time before which it must not be fetched (retry backoff).
    """

    id: int
    url: str
    kind: str
    depth: int
    page_url: str = ""
    alt: str = ""
    license: str = ""
    hops: int = 0
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class NewUrl:
    """A URL to enqueue; ``key`` is its normalised form (see :func:`p2m.crawler.urls.normalize_url`)."""

    key: str
    url: str
    kind: str
    depth: int
    page_url: str = ""
    alt: str = ""
    license: str = ""
    hops: int = 0


class Frontier:
    """The journal of a crawl folder (``crawl.sqlite``), opened in WAL mode.

    Every URL is a row with a state: ``queued`` until it reaches a final state (``done``,
    ``failed`` or ``skipped``). A row leaves ``queued`` only in the same transaction that records
    its result, and an image row becomes ``done`` only after its file is in ``images/``, so after
    a kill every URL is either finished (and never fetched again) or still queued.

    With :attr:`deferred` set, results (:meth:`finish`, :meth:`retry_later`) are kept in memory and
    written by :meth:`flush` in one transaction; every read flushes first, and images waiting to be
    written are already known to :meth:`image_known` and :meth:`stored_sha`.

    Args:
        path: the SQLite file.
        readonly: open a second, read-only connection (a manifest written beside a running crawl).
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.deferred = False
        self._pending: list[tuple[str, Any]] = []
        self._pending_images: dict[str, str] = {}  # stored or raw sha256 -> stored sha256, not yet written
        if readonly:
            try:
                self.db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            except sqlite3.DatabaseError as exc:
                raise CrawlError(f"{self.path}: cannot open the crawl journal: {exc}") from exc
            return
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CrawlError(f"{self.path}: cannot open the crawl journal: {exc}") from exc
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise CrawlError(
                f"{self.path}: journal schema version {version}, this p2m reads {SCHEMA_VERSION}"
            )

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        """The JSON value stored under ``key``, or None."""
        self.flush()
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable ``value`` under ``key``."""
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- enqueue ----------------------------------------------------------------------------
    def enqueue(self, new: NewUrl) -> Item | None:
        """Add one URL; returns its :class:`Item`, or None when the URL (by key) is already known."""
        items = self.enqueue_many([new])
        return items[0] if items else None

    def enqueue_many(self, news: Iterable[NewUrl]) -> list[Item]:
        """Add URLs in one transaction; returns the items that were new (duplicates are dropped)."""
        self.flush()
        added: list[Item] = []
        seen: set[str] = set()
        with self._tx():
            for n in news:
                if n.key in seen:
                    continue
                seen.add(n.key)
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO urls(key, url, kind, depth, page_url, alt, license, hops) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (n.key, n.url, n.kind, n.depth, n.page_url, n.alt, n.license, n.hops),
                )
                if cur.rowcount == 1:
                    added.append(
                        Item(cur.lastrowid, n.url, n.kind, n.depth, n.page_url, n.alt, n.license, n.hops)
                    )
        return added

    def record_skipped(self, new: NewUrl, reason: str, status: str = "skipped") -> bool:
        """Add a URL straight in a final state (out of scope, data: URI...); False when already known."""
        self.flush()
        with self._tx():
            cur = self.db.execute(
                "INSERT OR IGNORE INTO urls(key, url, kind, depth, page_url, alt, license, hops, state, status, error,"
                " fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'skipped', ?, ?, ?)",
                (
                    new.key,
                    new.url,
                    new.kind,
                    new.depth,
                    new.page_url,
                    new.alt,
                    new.license,
                    new.hops,
                    status,
                    reason,
                    time.time(),
                ),
            )
        return cur.rowcount == 1

    def requeue_failed(self) -> int:
        """Queue again every URL whose result was ``failed`` (attempts start over); returns how many."""
        self.flush()
        with self._tx():
            cur = self.db.execute(
                "UPDATE urls SET state='queued', attempts=0, not_before=0 "
                "WHERE state='failed' AND status='failed'"
            )
        return cur.rowcount

    def known(self, key: str) -> bool:
        """True when a URL with this key is in the journal."""
        self.flush()
        return self.db.execute("SELECT 1 FROM urls WHERE key=?", (key,)).fetchone() is not None

    # -- results ----------------------------------------------------------------------------
    def retry_later(self, item: Item, not_before: float, error: str, http_status: int | None = None) -> None:
        """Count an attempt and keep the URL queued until ``not_before`` (wall-clock seconds)."""
        item.attempts += 1
        item.not_before = not_before
        self._write(
            [
                (
                    "UPDATE urls SET attempts=?, not_before=?, error=?, http_status=? WHERE id=?",
                    (item.attempts, not_before, error, http_status, item.id),
                )
            ]
        )

    def finish(
        self,
        item: Item,
        state: str,
        status: str,
        *,
        error: str = "",
        http_status: int | None = None,
        sha256: str | None = None,
        content_type: str | None = None,
        nbytes: int | None = None,
        image: dict[str, Any] | None = None,
        kind: str | None = None,
        raw_sha256: str | None = None,
    ) -> None:
        """Record the final result of ``item`` (and, for a newly stored image, its ``images`` row) atomically.

        Args:
            state: ``done``, ``failed`` or ``skipped``.
            status: the manifest status (``ok``, ``duplicate``, ``rejected``, ``failed``, ``skipped``, ``redirect``).
            image: for a new file: sha256, path, width, height, format, bytes, phash, person_score.
            kind: what the URL turned out to be (``page``, ``image``...), when the response decided it.
            raw_sha256: for a new image, the sha256 of the fetched bytes when it differs from the stored file's.
        """
        writes: list[tuple[str, Any]] = []
        if image is not None:
            writes.append(
                (
                    "INSERT OR IGNORE INTO images(sha256, path, width, height, format, bytes, phash, person_score,"
                    " stored_at) VALUES (:sha256, :path, :width, :height, :format, :bytes, :phash, :person_score,"
                    " :stored_at)",
                    {**image, "stored_at": time.time()},
                )
            )
            if raw_sha256 and raw_sha256 != image["sha256"]:
                writes.append(
                    (
                        "INSERT OR IGNORE INTO raw_hashes(raw, sha256) VALUES (?, ?)",
                        (raw_sha256, image["sha256"]),
                    )
                )
        if kind and kind != item.kind:
            writes.append(("UPDATE urls SET kind=? WHERE id=?", (kind, item.id)))
        writes.append(
            (
                "UPDATE urls SET state=?, status=?, error=?, http_status=?, sha256=?, content_type=?, bytes=?,"
                " attempts=?, fetched_at=? WHERE id=?",
                (
                    state,
                    status,
                    error,
                    http_status,
                    sha256,
                    content_type,
                    nbytes,
                    item.attempts + 1,
                    time.time(),
                    item.id,
                ),
            )
        )
        if image is not None and self.deferred:
            self._pending_images[image["sha256"]] = image["sha256"]
            if raw_sha256:
                self._pending_images[raw_sha256] = image["sha256"]
        self._write(writes)

    def _write(self, writes: list[tuple[str, Any]]) -> None:
        if self.deferred:
            self._pending.extend(writes)
            return
        with self._tx():
            for sql, params in writes:
                self.db.execute(sql, params)

    def pending(self) -> int:
        """Statements waiting for :meth:`flush`."""
        return len(self._pending)

    def flush(self) -> None:
        """Write the results kept in memory, in one transaction."""
        if not self._pending:
            return
        writes, self._pending = self._pending, []
        with self._tx():
            for sql, params in writes:
                self.db.execute(sql, params)
        self._pending_images.clear()

    def image_known(self, sha256: str) -> bool:
        """True when an image with this content hash is already stored."""
        if sha256 in self._pending_images:
            return True
        return self.db.execute("SELECT 1 FROM images WHERE sha256=?", (sha256,)).fetchone() is not None

    def stored_sha(self, raw_sha256: str) -> str | None:
        """The sha256 of the stored file that fetched bytes with hash ``raw_sha256`` became, or None when new."""
        found = self._pending_images.get(raw_sha256)
        if found is not None:
            return found
        row = self.db.execute(
            "SELECT sha256 FROM images WHERE sha256=? UNION ALL SELECT sha256 FROM raw_hashes WHERE raw=? LIMIT 1",
            (raw_sha256, raw_sha256),
        ).fetchone()
        return None if row is None else row[0]

    # -- reading ----------------------------------------------------------------------------
    def queued(self) -> Iterator[Item]:
        """Every URL still queued, oldest first (what a resumed crawl starts from)."""
        self.flush()
        cur = self.db.execute(
            "SELECT id, url, kind, depth, page_url, alt, license, hops, attempts, not_before FROM urls "
            "WHERE state='queued' ORDER BY id"
        )
        for row in cur:
            yield Item(
                row[0],
                row[1],
                row[2],
                row[3],
                row[4] or "",
                row[5] or "",
                row[6] or "",
                row[7],
                row[8],
                row[9],
            )

    def counts(self) -> dict[str, int]:
        """Row counts by ``kind/status`` (``image/ok``, ``page/failed``...) plus ``queued`` and ``stored_files``."""
        self.flush()
        out: dict[str, int] = {}
        for kind, state, status, n in self.db.execute(
            "SELECT kind, state, status, COUNT(*) FROM urls GROUP BY kind, state, status"
        ):
            key = "queued" if state == "queued" else f"{kind}/{status}"
            out[key] = out.get(key, 0) + n
        out["stored_files"] = self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        return out

    ROW_COLUMNS = (
        "url",
        "kind",
        "page_url",
        "sha256",
        "phash",
        "width",
        "height",
        "format",
        "bytes",
        "alt",
        "license",
        "state",
        "status",
        "http_status",
        "fetched_at",
        "person_score",
        "error",
        "path",
        "depth",
        "attempts",
        "content_type",
    )

    def row_tuples(self) -> Iterator[tuple]:
        """Every URL row joined with its stored image, as tuples in :attr:`ROW_COLUMNS` order, in insertion order."""
        self.flush()
        return self.db.execute(
            "SELECT u.url, u.kind, u.page_url, u.sha256, i.phash, i.width, i.height, i.format, i.bytes, u.alt,"
            " u.license, u.state, u.status, u.http_status, u.fetched_at, i.person_score, u.error, i.path, u.depth,"
            " u.attempts, u.content_type FROM urls u LEFT JOIN images i ON u.sha256 = i.sha256 ORDER BY u.id"
        )

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every URL row joined with its stored image (for the manifest), in insertion order."""
        for row in self.row_tuples():
            yield dict(zip(self.ROW_COLUMNS, row))

    def close(self) -> None:
        """Write what is pending, checkpoint the WAL and close the database."""
        if self.readonly:
            self.db.close()
            return
        self.flush()
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as exc:  # still closes; the WAL is replayed on next open
            logger.warning("%s: WAL checkpoint failed: %s", self.path, exc)
        self.db.close()

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _tx(self) -> Frontier._Tx:
        return Frontier._Tx(self.db)
