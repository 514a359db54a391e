"""``index.json``, the commit record of a shard set: which shards are complete, their counts and sha256.

A shard enters the index only after its tar has been renamed into place, so whatever the index lists is
complete; ``"complete": true`` is set when the whole run has finished. Layout (schema version 2)::

    {
      "format": "p2m-shards", "schema_version": 2, "complete": true,
      "config":  {options that decide the bytes: with_images, with_meta, crop, sizes, maxcount, splits, ...},
      "sources": [{"path": "/abs/DATASET", "names": ["h36m"], "info": {...}}],
      "splits": {
        "train": {"samples": 1234, "bytes": 5678,
                  "sources": {"h36m": 1234},
                  "body_models": {"anny": {"samples": 1200, "pose": [38, 3], "shape": [10], "trans": [3]}},
                  "fields": {"j2d": 1234, "j3d": 1234, "bbox": 1234, "cam": 1234, "R": 1234, ...},
                  "shards": [{"name": "train-000000.tar", "samples": 1000, "bytes": 4567,
                              "sha256": "...", "first_key": "...", "last_key": "..."}, ...]}
      }
    }

Nothing in it depends on time, so an interrupted run that is resumed ends with the same index as an
uninterrupted one. Run statistics (durations, skips) go to ``shard_stats.json`` instead.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from p2m.errors import P2MError, ShardError
from p2m.io import read_json, write_json

logger = logging.getLogger(__name__)

FORMAT = "p2m-shards"
#: 2: one ``.npy`` record per sample (R included), ``.json`` only with ``with_meta``; 1 (read no more): npz + json.
SCHEMA_VERSION = 2
INDEX_NAME = "index.json"
STATS_NAME = "shard_stats.json"
SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")
SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>[0-9]{6,})\.tar$")
#: Shapes every sample's arrays must have (the body-parameter shapes are recorded per model instead).
FIXED_SHAPES: dict[str, tuple[int, ...]] = {
    "j2d": (17, 3),
    "j3d": (17, 3),
    "bbox": (4,),
    "cam": (4,),
    "R": (3, 3),
}
BODY_FIELDS: tuple[str, ...] = ("pose", "shape", "trans")


def shard_name(split: str, index: int) -> str:
    """``{split}-{index:06d}.tar``."""
    return f"{split}-{index:06d}.tar"


def empty_index(config: Mapping[str, Any], sources: list[dict[str, Any]]) -> dict[str, Any]:
    """A fresh, incomplete index for a run with this config and these sources."""
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "config": copy.deepcopy(dict(config)),
        "sources": copy.deepcopy(sources),
        "splits": {},
    }


def empty_split() -> dict[str, Any]:
    """The record of a split before any shard is committed."""
    return {"samples": 0, "bytes": 0, "sources": {}, "body_models": {}, "fields": {}, "shards": []}


def resolve_index_path(location: str | Path) -> str:
    """``index.json`` inside a folder, or the path/URL itself when it names a ``.json`` file."""
    text = str(location)
    if text.endswith(".json"):
        return text
    if "://" in text or text.startswith("pipe:"):
        return text.rstrip("/") + "/" + INDEX_NAME
    return str(Path(text) / INDEX_NAME)


def load_index(location: str | Path) -> dict[str, Any]:
    """Read and check an index: a shard folder, a path to index.json, or a URL webdataset can open.

    Raises:
        ShardError: missing, unreadable, another format or an unsupported schema version.
    """
    path = resolve_index_path(location)
    if "://" in path or path.startswith("pipe:"):
        import json

        from webdataset.gopen import gopen

        try:
            with gopen(path, "rb") as fh:
                index = json.loads(fh.read().decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise ShardError(f"{path}: cannot read the shard index: {exc}") from exc
    else:
        if not Path(path).is_file():
            raise ShardError(f"{path}: no shard index (expected the {INDEX_NAME} that `p2m shard` writes)")
        try:
            index = read_json(path)
        except P2MError as exc:
            raise ShardError(str(exc)) from exc
    check_index(index, path)
    return index


def require_split(location: str | Path, split: str, what: str = "--split") -> dict[str, Any]:
    """The index of ``location``, checked to have samples in ``split`` (cheap: callers check before loading a model).

    Raises:
        ShardError: no readable index, or no such split / an empty one, naming the splits the shards have.
    """
    index = load_index(location)
    splits = index.get("splits", {})
    have = ", ".join(f"{name} ({s.get('samples', 0)} samples)" for name, s in splits.items()) or "none"
    if split not in splits:
        raise ShardError(f"{location}: no split {split!r} ({what}); the shards have: {have}")
    if not splits[split].get("samples"):
        raise ShardError(f"{location}: split {split!r} ({what}) has no samples; the shards have: {have}")
    return index


def check_index(index: Any, where: str) -> None:
    """Raise :class:`ShardError` naming the field when ``index`` is not a p2m shard index we can read."""
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ShardError(f"{where}: not a p2m shard index (field 'format' should be {FORMAT!r})")
    version = index.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ShardError(
            f"{where}: shard schema_version {version!r}; this p2m reads version {SCHEMA_VERSION}: rewrite the shards "
            "by running the same `p2m shard DATASET... --out DIR --overwrite` with this p2m"
        )
    splits = index.get("splits")
    if not isinstance(splits, dict):
        raise ShardError(f"{where}: field 'splits' must be an object, got {type(splits).__name__}")
    for split, rec in splits.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("shards"), list):
            raise ShardError(f"{where}: splits.{split}.shards must be a list")
        for i, shard in enumerate(rec["shards"]):
            for field, kind in (("name", str), ("samples", int), ("bytes", int), ("sha256", str)):
                if not isinstance(shard, dict) or not isinstance(shard.get(field), kind):
                    raise ShardError(
                        f"{where}: splits.{split}.shards[{i}].{field} missing or not {kind.__name__}"
                    )
            # a name is never a path or URL: shards are files beside the index (pipe: and URLs only from the user)
            m = SHARD_RE.fullmatch(shard["name"])
            if m is None or m["split"] != split:
                raise ShardError(
                    f"{where}: splits.{split}.shards[{i}].name {shard['name'][:80]!r} is not a shard file "
                    f"name of split {split!r} ({split}-NNNNNN.tar)"
                )


def save_index(out: Path, index: Mapping[str, Any]) -> None:
    """Write ``out/index.json`` atomically (temp file, fsync, rename)."""
    write_json(out / INDEX_NAME, index, indent=1)


def shard_location(base: str, name: str) -> str:
    """The path or URL of shard ``name`` next to the index at ``base`` (a folder, index path or URL, as the user
    typed it).

    Raises:
        ShardError: ``name`` is not a shard file name (an index must never add a path, URL or command).
    """
    if not SHARD_RE.fullmatch(name):
        raise ShardError(f"{base}: {name[:80]!r} is not a shard file name (SPLIT-NNNNNN.tar)")
    text = str(base)
    if text.endswith(".json"):
        text = text.rsplit("/", 1)[0] if "/" in text else "."
    if "://" in text or text.startswith("pipe:"):
        return text.rstrip("/") + "/" + name
    return str(Path(text) / name)


def shard_info(location: str | Path) -> dict[str, Any]:
    """A summary of a shard set, for ``p2m shard info``.

    Args:
        location: the shard folder, its index.json, or a URL of it.

    Returns:
        ``{"location", "complete", "schema_version", "config", "splits": {name: {"shards", "samples",
        "bytes", "bytes_per_sample", "sources", "body_models", "fields"}}, "sources": [...],
        "total": {"shards", "samples", "bytes"}}``.
    """
    index = load_index(location)
    splits: dict[str, Any] = {}
    total = {"shards": 0, "samples": 0, "bytes": 0}
    for name, rec in index["splits"].items():
        n, size = int(rec.get("samples", 0)), int(rec.get("bytes", 0))
        splits[name] = {
            "shards": len(rec["shards"]),
            "samples": n,
            "bytes": size,
            "bytes_per_sample": (size / n) if n else 0.0,
            "sources": dict(rec.get("sources", {})),
            "body_models": copy.deepcopy(rec.get("body_models", {})),
            "fields": dict(rec.get("fields", {})),
        }
        total["shards"] += len(rec["shards"])
        total["samples"] += n
        total["bytes"] += size
    return {
        "location": str(location),
        "complete": bool(index.get("complete")),
        "schema_version": index["schema_version"],
        "config": index.get("config", {}),
        "sources": index.get("sources", []),
        "splits": splits,
        "total": total,
    }


def format_info(info: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`shard_info`'s result."""
    rows = [("split", "shards", "samples", "bytes", "B/sample", "sources", "body models")]
    for name, rec in info["splits"].items():
        sources = ", ".join(f"{k}:{v}" for k, v in sorted(rec["sources"].items())) or "-"
        models = ", ".join(f"{k}:{v.get('samples', 0)}" for k, v in sorted(rec["body_models"].items())) or "-"
        rows.append(
            (
                name,
                str(rec["shards"]),
                str(rec["samples"]),
                _human(rec["bytes"]),
                f"{rec['bytes_per_sample']:.0f}",
                sources,
                models,
            )
        )
    t = info["total"]
    rows.append(("total", str(t["shards"]), str(t["samples"]), _human(t["bytes"]), "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = f"{info['location']}: schema {info['schema_version']}, " + (
        "complete"
        if info["complete"]
        else "INCOMPLETE (an interrupted run: rerun `p2m shard` with the same arguments)"
    )
    cfg = info.get("config", {})
    mode = (
        "with images" + (" (crops)" if cfg.get("crop") else " (frames)")
        if cfg.get("with_images")
        else "pose-only"
    )
    return "\n".join([head, f"content: {mode}", *lines])


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
