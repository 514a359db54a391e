"""Write ``manifest.parquet``: one row per URL the crawl met, images with their hashes and sizes."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from p2m.crawler.frontier import Frontier
from p2m.crawler.images import near_duplicate_groups
from p2m.io import atomic_write

SCHEMA = pa.schema(
    [
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
    ]
)
"""Manifest columns. ``status``: ``ok`` (image stored), ``duplicate`` (same bytes as an image already
stored: ``sha256``/``path`` point at that file), ``rejected`` (fetched but not a usable image),
``failed`` (HTTP, network or size error), ``skipped`` (robots.txt, X-Robots-Tag, scope, limits),
``redirect`` (``error`` names the target), ``queued`` (not reached before the crawl stopped); pages,
sitemaps and feeds that were read have status ``ok``. ``error`` is a one-line reason for every
row whose status is not ``ok``/``duplicate``. ``near_dup_of`` is the sha256 of the first stored
image in the row's perceptual-hash group (its own sha256 when it has no near-duplicate)."""


def build_table(frontier: Frontier, phash_distance: int = 6) -> pa.Table:
    """The manifest as an Arrow table (see :data:`SCHEMA`), built column by column from the journal's rows.

    ``frontier`` may also be any object whose ``rows()`` yields dicts keyed by :attr:`Frontier.ROW_COLUMNS`
    (the merged journals of a crawl over Ray).
    """
    if isinstance(frontier, Frontier):
        rows = frontier.row_tuples().fetchall()
    else:
        rows = [tuple(r[c] for c in Frontier.ROW_COLUMNS) for r in frontier.rows()]
    col = dict(zip(Frontier.ROW_COLUMNS, zip(*rows))) if rows else {c: () for c in Frontier.ROW_COLUMNS}
    stored: dict[str, str] = {}
    for sha, phash in zip(col["sha256"], col["phash"]):
        if sha and phash and sha not in stored:
            stored[sha] = phash
    shas = list(stored)
    groups = near_duplicate_groups([stored[s] for s in shas], phash_distance)
    rep = {s: shas[g] for s, g in zip(shas, groups)}
    status = [st if state != "queued" else "queued" for st, state in zip(col["status"], col["state"])]
    error = []
    for st, err in zip(status, col["error"]):
        if st in ("ok", "duplicate"):
            error.append("")
        elif st == "queued":
            error.append(err or "not fetched before the crawl stopped (run again with --resume)")
        else:
            error.append(err or "")
    utc = timezone.utc
    values = {
        "url": col["url"],
        "page_url": [v or "" for v in col["page_url"]],
        "sha256": col["sha256"],
        "phash": col["phash"],
        "width": col["width"],
        "height": col["height"],
        "format": col["format"],
        "bytes": col["bytes"],
        "alt": [v or "" for v in col["alt"]],
        "license": [v or "" for v in col["license"]],
        "status": status,
        "http_status": col["http_status"],
        "fetched_at": [datetime.fromtimestamp(t, tz=utc) if t else None for t in col["fetched_at"]],
        "person_score": col["person_score"],
        "error": error,
        "kind": col["kind"],
        "path": col["path"],
        "near_dup_of": [rep.get(s) if s else None for s in col["sha256"]],
        "depth": col["depth"],
        "attempts": col["attempts"],
        "content_type": col["content_type"],
    }
    return pa.table(
        {name: pa.array(list(values[name]), SCHEMA.field(name).type) for name in SCHEMA.names}, schema=SCHEMA
    )


def write_manifest(frontier: Frontier, path: str | Path, phash_distance: int = 6) -> int:
    """Write the manifest atomically (temp file, fsync, rename); returns the number of rows."""
    table = build_table(frontier, phash_distance)
    with atomic_write(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
    return table.num_rows
