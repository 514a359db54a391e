"""Write ``manifest.parquet``: one row per URL the crawl met, images with their hashes and sizes."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from p2m.crawler.frontier import Frontier
from p2m.crawler.images import near_duplicate_groups
from p2m.io import atomic_write

SCHEMA = pa.schema([
    ("url", pa.string()),
    ("page_url", pa.string()),
    ("sha256", pa.string()),
    ("phash", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("format", pa.string()),
    ("bytes", pa.int64()),
    ("alt", pa.string()),
    ("license", pa.string()),
    ("status", pa.string()),
    ("http_status", pa.int32()),
    ("fetched_at", pa.timestamp("ms", tz="UTC")),
    ("person_score", pa.float32()),
    ("error", pa.string()),
    # beyond the list:
    ("kind", pa.string()),
    ("path", pa.string()),
    ("near_dup_of", pa.string()),
    ("depth", pa.int32()),
    ("attempts", pa.int32()),
    ("content_type", pa.string()),
])
"""Manifest columns. ``status``: ``ok`` (image stored), ``duplicate`` (same bytes as an image already
stored: ``sha256``/``path`` point at that file), ``rejected`` (fetched but not a usable image),
``failed`` (HTTP, network or size error), ``skipped`` (robots.txt, X-Robots-Tag, scope, limits),
``redirect`` (``error`` names the target), ``queued`` (not reached before the crawl stopped); pages,
sitemaps and feeds that were read have status ``ok``. ``error`` is a one-line reason for every
row whose status is not ``ok``/``duplicate``. ``near_dup_of`` is the sha256 of the first stored
image in the row's perceptual-hash group (its own sha256 when it has no near-duplicate)."""


def build_table(frontier: Frontier, phash_distance: int = 6) -> pa.Table:
    """The manifest as an Arrow table (see :data:`SCHEMA`)."""
    rows = list(frontier.rows())
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}
    stored: dict[str, str] = {}
    for r in rows:
        if r["sha256"] and r["phash"] and r["sha256"] not in stored:
            stored[r["sha256"]] = r["phash"]
    shas = list(stored)
    groups = near_duplicate_groups([stored[s] for s in shas], phash_distance)
    rep = {s: shas[g] for s, g in zip(shas, groups)}
    for r in rows:
        status = r["status"] if r["state"] != "queued" else "queued"
        error = r["error"] or ""
        if status == "queued":
            error = error or "not fetched before the crawl stopped (run again with --resume)"
        fetched = r["fetched_at"]
        values = {
            "url": r["url"], "page_url": r["page_url"] or "", "sha256": r["sha256"], "phash": r["phash"],
            "width": r["width"], "height": r["height"], "format": r["format"], "bytes": r["bytes"],
            "alt": r["alt"] or "", "license": r["license"] or "", "status": status,
            "http_status": r["http_status"],
            "fetched_at": datetime.fromtimestamp(fetched, tz=timezone.utc) if fetched else None,
            "person_score": r["person_score"], "error": error if status not in ("ok", "duplicate") else "",
            "kind": r["kind"], "path": r["path"], "near_dup_of": rep.get(r["sha256"]) if r["sha256"] else None,
            "depth": r["depth"], "attempts": r["attempts"], "content_type": r["content_type"],
        }
        for name in SCHEMA.names:
            cols[name].append(values[name])
    return pa.table(cols, schema=SCHEMA)


def write_manifest(frontier: Frontier, path: str | Path, phash_distance: int = 6) -> int:
    """Write the manifest atomically (temp file, fsync, rename); returns the number of rows."""
    table = build_table(frontier, phash_distance)
    with atomic_write(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
    return table.num_rows


def read_manifest(path: str | Path) -> pa.Table:
    """Read a manifest written by :func:`write_manifest`."""
    return pq.read_table(path)
