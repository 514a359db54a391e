"""`verify_shards`: re-read a shard set with the webdataset package and list every problem found.

Checks, per shard listed in index.json: the file exists with the indexed size and sha256; webdataset's tar
reader reads it to the end; the number of samples, first and last key match the index, and so do the samples
per source (from the keys); every key is dot-free and unique across the set; every sample has its ``.npy``
record (and ``.json`` / ``.jpg`` when the set was written with them); every member decodes (``json.loads``,
``np.load(allow_pickle=False)``, PIL); the record's fields are finite float32 with their shapes (``j2d``/``j3d``
(17, 3), ``bbox``/``cam`` (4,), ``R`` (3, 3), body parameters as index.json records for the sample's body
model). The set-level checks: the index is complete and split totals add up; tar files that the index does not
list are reported as warnings.

The decoding here deliberately uses the standard readers, not the fast parsers of the training reader, so a
bug in p2m's own byte code cannot hide itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2m.shards.encode import sanitize_key_part
from p2m.shards.index import FIXED_SHAPES, SHARD_RE, load_index, resolve_index_path, shard_location

logger = logging.getLogger(__name__)

MAX_PROBLEMS_PER_SHARD = 20
KNOWN_MEMBERS = {"npy", "json", "jpg"}
_KEY_SOURCE = re.compile(r"^(.*)_s\d{3,}_a\d{3,}_sa\d{3,}_c\d{4,}_f\d{6,}_p\d{2,}$")


@dataclass(frozen=True)
class Problem:
    """One finding: the shard, the sample key (or None) and what is wrong."""

    shard: str
    key: str | None
    message: str

    def __str__(self) -> str:
        return (
            f"{self.shard}: sample {self.key}: {self.message}"
            if self.key
            else f"{self.shard}: {self.message}"
        )


@dataclass
class VerifyReport:
    """What :func:`verify_shards` found.

    Attributes:
        location: the shard set checked.
        shards, samples: how many were read.
        problems: every problem (the set is bad when there is any).
        warnings: findings that do not make the set unusable (unlisted tar files).
    """

    location: str
    shards: int = 0
    samples: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """Human-readable summary, one line per problem."""
        lines = [str(p) for p in self.problems] + [f"warning: {w}" for w in self.warnings]
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines.append(f"{self.location}: {self.shards} shards, {self.samples} samples checked: {verdict}")
        return "\n".join(lines)


def verify_shards(location: str | Path, *, workers: int = 1, progress: bool | None = None) -> VerifyReport:
    """Check a shard set written by ``p2m shard`` (see the module docstring for the list of checks).

    Args:
        location: the shard folder, its index.json, or a URL of either.
        workers: processes checking shards in parallel.
        progress: show a progress bar (None: only on a terminal).

    Returns:
        The report; ``report.ok`` is False when anything is wrong.

    Raises:
        ShardError: the index itself is missing or unreadable.
    """
    from tqdm import tqdm

    index = load_index(location)
    base = resolve_index_path(location)
    report = VerifyReport(str(location))
    if not index.get("complete"):
        report.problems.append(
            Problem(
                "index.json",
                None,
                "incomplete: the writing run was interrupted; rerun `p2m shard` with the same arguments",
            )
        )
    config = index.get("config", {})
    with_images, with_meta = bool(config.get("with_images")), bool(config.get("with_meta"))
    tasks = []
    for split, rec in index["splits"].items():
        total = sum(sh["samples"] for sh in rec["shards"])
        if total != rec.get("samples"):
            report.problems.append(
                Problem(
                    "index.json",
                    None,
                    f"split {split}: shard counts add up to {total}, the split says {rec.get('samples')}",
                )
            )
        for sh in rec["shards"]:
            tasks.append(
                (shard_location(base, sh["name"]), sh, rec.get("body_models", {}), with_images, with_meta)
            )
    listed = {sh["name"] for rec in index["splits"].values() for sh in rec["shards"]}
    folder = Path(base).parent
    if "://" not in base and folder.is_dir():
        for p in sorted(folder.iterdir()):
            if SHARD_RE.match(p.name) and p.name not in listed:
                report.warnings.append(
                    f"{p.name}: a shard file that index.json does not list (left by another run?)"
                )
    keys: dict[str, str] = {}
    bar = tqdm(
        total=len(tasks),
        desc="verify",
        unit=" shards",
        disable=(not progress) if progress is not None else None,
    )
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and len(tasks) > 1 else None
    try:
        results: Iterator[tuple[int, list[str], list[Problem]]] = (
            pool.imap(_check_task, tasks) if pool else (_check_task(t) for t in tasks)
        )
        for (_, sh, *_), (n, shard_keys, problems) in zip(tasks, results, strict=True):
            report.shards += 1
            report.samples += n
            report.problems.extend(problems)
            for key in shard_keys:
                if key in keys:
                    report.problems.append(Problem(sh["name"], key, f"duplicate key (also in {keys[key]})"))
                else:
                    keys[key] = sh["name"]
            bar.update(1)
            bar.set_postfix(problems=len(report.problems))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return report


def _check_task(
    task: tuple[str, dict[str, Any], dict[str, Any], bool, bool],
) -> tuple[int, list[str], list[Problem]]:
    return check_shard(*task)


def check_shard(
    url: str, record: dict[str, Any], body_models: dict[str, Any], with_images: bool, with_meta: bool = False
) -> tuple[int, list[str], list[Problem]]:
    """Check one shard against its index record; returns ``(samples read, keys, problems)``."""
    from webdataset.gopen import gopen
    from webdataset.tariterators import group_by_keys, tar_file_expander

    name = record["name"]
    problems: list[Problem] = []

    def add(key: str | None, message: str) -> None:
        if len(problems) < MAX_PROBLEMS_PER_SHARD:
            problems.append(Problem(name, key, message))
        elif len(problems) == MAX_PROBLEMS_PER_SHARD:
            problems.append(Problem(name, None, "more problems in this shard not listed"))

    try:
        with gopen(url, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return 0, [], [Problem(name, None, f"cannot open {url}: {exc}")]
    if len(data) != record["bytes"]:
        add(None, f"size {len(data)} bytes, index.json says {record['bytes']}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != record["sha256"]:
        add(None, f"sha256 {digest[:16]}..., index.json says {record['sha256'][:16]}...")
    keys: list[str] = []
    counts: dict[str, Counter[str]] = {"sources": Counter(), "models": Counter()}
    try:
        source = iter([{"url": url, "stream": io.BytesIO(data)}])
        for sample in group_by_keys(tar_file_expander(source)):
            key = sample["__key__"]
            keys.append(key)
            _check_sample(key, sample, body_models, with_images, with_meta, add, counts)
    except Exception as exc:  # noqa: BLE001 - any failure of the tar reader is a finding
        reason = str(exc.args[0] if exc.args else exc).split(" @ <", 1)[
            0
        ]  # webdataset appends the stream repr
        add(
            keys[-1] if keys else None,
            f"webdataset cannot read the tar after {len(keys)} samples: {type(exc).__name__}: {reason}",
        )
    if len(keys) != record["samples"]:
        add(None, f"{len(keys)} samples read, index.json says {record['samples']}")
    elif keys and (
        keys[0] != record.get("first_key", keys[0]) or keys[-1] != record.get("last_key", keys[-1])
    ):
        add(
            None,
            f"keys run {keys[0]} .. {keys[-1]}, index.json says {record.get('first_key')} .. {record.get('last_key')}",
        )
    if "sources" in record and len(keys) == record["samples"]:
        expected: Counter[str] = Counter()
        for name, n in record["sources"].items():
            expected[sanitize_key_part(name)] += n
        if counts["sources"] != expected:
            add(
                None,
                f"samples per source (from the keys) {dict(counts['sources'])}, index.json says {record['sources']}",
            )
    return len(keys), keys, problems


def _check_sample(
    key: str,
    sample: dict[str, Any],
    body_models: dict[str, Any],
    with_images: bool,
    with_meta: bool,
    add: Any,
    counts: dict[str, Counter[str]],
) -> None:
    fields = {k for k in sample if not k.startswith("__")}
    if "." in key or any(f not in KNOWN_MEMBERS for f in fields):
        add(key, f"unexpected members {sorted(fields - KNOWN_MEMBERS)} (a key with a dot is cut at the dot)")
    source = _KEY_SOURCE.match(key)
    counts["sources"][source[1] if source else "?"] += 1
    for required in ("npy", *(("jpg",) if with_images else ()), *(("json",) if with_meta else ())):
        if required not in fields:
            add(key, f"no .{required} member")
    if "json" in fields:
        try:
            meta = json.loads(sample["json"])
            if not isinstance(meta, dict) or meta.get("key") != key:
                add(key, "json: not an object whose 'key' is the sample key")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            add(key, f"json does not decode: {exc}")
    if "npy" in fields:
        try:
            record = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy and pickle refusals all mean "does not decode"
            add(key, f"npy does not decode: {type(exc).__name__}: {exc}")
        else:
            if record.shape != () or record.dtype.names is None:
                add(key, f"npy is a {record.dtype} array of shape {record.shape}, not a 0-d record")
            else:
                _check_arrays(key, {n: record[n] for n in record.dtype.names}, body_models, add)
    if "jpg" in fields:
        try:
            from PIL import Image

            with Image.open(io.BytesIO(sample["jpg"])) as im:
                im.load()
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken images
            add(key, f"jpg does not decode: {type(exc).__name__}: {exc}")


def _check_arrays(key: str, arrays: dict[str, np.ndarray], body_models: dict[str, Any], add: Any) -> None:
    if "j2d" not in arrays:
        add(key, "record has no j2d")
    for name, shape in FIXED_SHAPES.items():
        arr = arrays.get(name)
        if arr is None:
            continue
        if arr.shape != shape:
            add(key, f"{name} shape {arr.shape}, expected {shape}")
        elif arr.dtype != np.float32:
            add(key, f"{name} dtype {arr.dtype}, expected float32")
        elif not np.all(np.isfinite(arr)):
            add(key, f"{name} has non-finite values")
    body = [f for f in ("pose", "shape", "trans") if f in arrays]
    if not body:
        return
    if "model" not in arrays or arrays["model"].dtype.kind != "S":
        add(key, f"body parameters {body} without a model name")
        return
    try:
        model = arrays["model"].item().decode("utf-8")
    except UnicodeDecodeError:
        add(key, f"body model name {arrays['model'].item()!r} is not UTF-8")
        return
    rec = body_models.get(model)
    if rec is None:
        add(key, f"body model {model!r} is not in index.json ({sorted(body_models)})")
        return
    for f in body:
        arr = arrays[f]
        if rec.get(f) is not None and list(arr.shape) != rec[f]:
            add(key, f"{f} shape {arr.shape}, index.json records {tuple(rec[f])} for {model}")
        elif not np.all(np.isfinite(arr)):
            add(key, f"{f} has non-finite values")
