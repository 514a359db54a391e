"""`build_shards`: datasets in the layout of Contract 1 -> WebDataset tars + index.json, resumable.

Each split is written as a sequence of shards ``{split}-{index:06d}.tar``. A shard is streamed into a
temporary file beside its final name (sha256 computed on the way), fsynced, renamed, and only then entered in
``index.json`` (itself written atomically), so the index is the commit record. Shard boundaries depend only on
the samples from the shard's first one on (``maxcount``, ``maxsize``) and encoding is deterministic (fixed
tar mtime/owner, fixed zip dates, JSON in a fixed order), so a rerun with the same arguments after a crash keeps
every listed shard whose file still has its sha256, skips the samples up to the last kept key, and writes the
rest: the final index and shards are byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import IO, Any

from p2m.errors import ConfigError, LayoutError, ShardError
from p2m.io import _fsync_dir, write_json
from p2m.shards.codec import NPY_ALIGN, TAR_END
from p2m.shards.columns import EncodedBatch
from p2m.shards.encode import Encoded, EncodeOptions
from p2m.shards.index import (
    BODY_FIELDS,
    INDEX_NAME,
    SHARD_RE,
    SPLIT_RE,
    STATS_NAME,
    check_index,
    empty_index,
    empty_split,
    save_index,
    shard_name,
)
from p2m.shards.tasks import KEY_ONLY, SubjectTask, iter_results, plan_tasks

logger = logging.getLogger(__name__)

DEFAULT_MAXCOUNT = 10_000
DEFAULT_MAXSIZE = 1_000_000_000
ALL_SUBJECTS = "*"
_TMP_RE = re.compile(r"^\.[A-Za-z0-9_]+-\d{6,}\.tar\..*\.tmp$")
_SUBJECT_RE = re.compile(r"^[Ss]?(\d+)$")


def parse_subjects(spec: str | Sequence[str | int]) -> list[int | str]:
    """``"S1,S5"`` / ``["S1", 5]`` -> ``[1, 5]``; ``"*"`` (every subject no other split names) -> ``["*"]``.

    Raises:
        ConfigError: a token that is neither ``S<n>``, ``<n>`` nor ``*``.
    """
    tokens = [t.strip() for t in spec.split(",")] if isinstance(spec, str) else [str(t).strip() for t in spec]
    out: list[int | str] = []
    for tok in tokens:
        if tok == ALL_SUBJECTS:
            out.append(ALL_SUBJECTS)
            continue
        m = _SUBJECT_RE.match(tok)
        if not m:
            raise ConfigError(f"subject {tok!r}: expected S<number>, <number> or '*' (e.g. S1,S5,S6)")
        out.append(int(m[1]))
    if not out:
        raise ConfigError("a split needs at least one subject (e.g. train=S1,S5)")
    return out


def normalise_splits(splits: Mapping[str, str | Sequence[str | int]] | None) -> dict[str, list[int | str]]:
    """Check split names and subjects; default ``{"train": ["*"]}`` (everything to train).

    Raises:
        ConfigError: a bad split name, a subject in two splits, or ``*`` in two splits.
    """
    if not splits:
        return {"train": [ALL_SUBJECTS]}
    out: dict[str, list[int | str]] = {}
    owner: dict[int | str, str] = {}
    for name, spec in splits.items():
        if not SPLIT_RE.match(name):
            raise ConfigError(
                f"split name {name!r}: use letters, digits and '_' only (it becomes a file name)"
            )
        subjects = parse_subjects(spec)
        for subj in subjects:
            if subj in owner and owner[subj] != name:
                what = "'*'" if subj == ALL_SUBJECTS else f"subject S{subj}"
                raise ConfigError(f"{what} is in split {owner[subj]!r} and in split {name!r}")
            owner[subj] = name
        out[name] = sorted(set(subjects), key=lambda s: (isinstance(s, str), s))
    return out


class _SplitWriter:
    """Writes the shards of one split: temp file -> fsync -> rename -> on_commit(record)."""

    def __init__(
        self, out: Path, split: str, start: int, maxcount: int, maxsize: int, on_commit: Any
    ) -> None:
        self.out, self.split, self.next_index = out, split, start
        self.maxcount, self.maxsize, self.on_commit = maxcount, maxsize, on_commit
        self.fh: IO[bytes] | None = None
        self.tmp: Path | None = None

    def _open(self) -> None:
        name = shard_name(self.split, self.next_index)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.out)
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; shards are data others may read
        self.fh, self.tmp = os.fdopen(fd, "wb", buffering=1 << 20), Path(tmp)
        self.hash = hashlib.sha256()
        self.count = self.size = 0
        self.first_key = self.last_key = ""
        # samples per (source, fields, body model, id(body shapes)), with the shapes: few groups per shard, so
        # the per-sample cost is one dict update; the index's counters are made from them at commit
        self.groups: dict[tuple[str, tuple[str, ...], str | None, int], list[Any]] = {}

    def add(self, enc: Encoded) -> None:
        if (
            self.fh is not None
            and self.count
            and (self.count >= self.maxcount or self.size + len(enc.data) + len(TAR_END) > self.maxsize)
        ):
            self.commit()
        if self.fh is None:
            self._open()
        if len(enc.data) + len(TAR_END) > self.maxsize:
            logger.warning(
                "sample %s is %d bytes, more than maxsize %d: it gets a shard of its own",
                enc.key,
                len(enc.data),
                self.maxsize,
            )
        assert self.fh is not None
        self.fh.write(enc.data)
        self.hash.update(enc.data)
        self.count += 1
        self.size += len(enc.data)
        self.first_key = self.first_key or enc.key
        self.last_key = enc.key
        group = (enc.source, enc.fields, enc.body_model, id(enc.body_shapes))
        counted = self.groups.get(group)
        if counted is None:
            counted = self.groups[group] = [0, enc.body_shapes]  # holds the shapes, so the id stays theirs
        counted[0] += 1

    def add_batch(self, batch: EncodedBatch) -> None:
        """Add the written samples of a batch: the shard boundaries of :meth:`add` on each, one write per run."""
        live = [k for k, g in enumerate(batch.group_of) if g >= 0]
        if not live:
            return
        if len(live) == len(batch.keys):
            ends, keys, group_of = batch.ends, batch.keys, batch.group_of
        else:
            ends = [batch.ends[k] for k in live]
            keys = [batch.keys[k] for k in live]
            group_of = [batch.group_of[k] for k in live]
        view = memoryview(batch.data)
        n, k, begin = len(live), 0, 0
        while k < n:
            if (
                self.fh is not None
                and self.count
                and (self.count >= self.maxcount or self.size + ends[k] - begin + len(TAR_END) > self.maxsize)
            ):
                self.commit()
            if self.fh is None:
                self._open()
            # samples k..j-1 go to this shard: as many as maxcount and maxsize let in (at least one)
            j = min(
                k + self.maxcount - self.count,
                bisect.bisect_right(ends, self.maxsize - len(TAR_END) - self.size + begin, k, n),
            )
            if j == k:
                logger.warning(
                    "sample %s is %d bytes, more than maxsize %d: it gets a shard of its own",
                    keys[k],
                    ends[k] - begin,
                    self.maxsize,
                )
                j = k + 1
            assert self.fh is not None
            chunk = view[begin : ends[j - 1]]
            self.fh.write(chunk)
            self.hash.update(chunk)
            self.count += j - k
            self.size += len(chunk)
            self.first_key = self.first_key or keys[k]
            self.last_key = keys[j - 1]
            for g, count in Counter(group_of[k:j]).items():
                names, model, shapes = batch.groups[g]
                group = (batch.source, names, model, id(shapes))
                counted = self.groups.get(group)
                if counted is None:
                    counted = self.groups[group] = [0, shapes]
                counted[0] += count
            begin, k = ends[j - 1], j

    def _summary(self) -> tuple[Counter[str], Counter[str], dict[str, dict[str, Any]]]:
        """Samples per source, per field, and per body model with its per-sample shapes (None where they differ)."""
        sources: Counter[str] = Counter()
        fields: Counter[str] = Counter()
        models: dict[str, dict[str, Any]] = {}
        for (source, names, model, _), (count, shapes) in self.groups.items():  # in order of first appearance
            sources[source] += count
            for name in names:
                fields[name] += count
            if model is not None:
                rec = models.setdefault(model, {"samples": 0, **(shapes or {})})
                rec["samples"] += count
                for field, shape in (shapes or {}).items():
                    if rec.get(field) != shape:
                        rec[field] = None  # shapes differ within one model: the reader cannot stack it
        return sources, fields, models

    def commit(self) -> None:
        if self.fh is None or self.tmp is None:
            return
        self.fh.write(TAR_END)
        self.hash.update(TAR_END)
        self.size += len(TAR_END)
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        name = shard_name(self.split, self.next_index)
        os.replace(self.tmp, self.out / name)
        _fsync_dir(self.out)
        sources, fields, models = self._summary()
        record = {
            "name": name,
            "samples": self.count,
            "bytes": self.size,
            "sha256": self.hash.hexdigest(),
            "first_key": self.first_key,
            "last_key": self.last_key,
            "sources": dict(sorted(sources.items())),
            "fields": dict(sorted(fields.items())),
            "body_models": dict(sorted(models.items())),
        }
        self.fh = self.tmp = None
        self.next_index += 1
        self.on_commit(self.split, record)

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
        self.fh = self.tmp = None


def aggregate_split(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The split record of index.json from its shard records."""
    rec = empty_split()
    sources: Counter[str] = Counter()
    fields: Counter[str] = Counter()
    models: dict[str, dict[str, Any]] = {}
    for sh in shards:
        rec["samples"] += sh["samples"]
        rec["bytes"] += sh["bytes"]
        sources.update(sh.get("sources", {}))
        fields.update(sh.get("fields", {}))
        for model, m in sh.get("body_models", {}).items():
            agg = models.setdefault(model, {"samples": 0, **{f: m.get(f) for f in BODY_FIELDS if f in m}})
            agg["samples"] += m["samples"]
            for f in BODY_FIELDS:
                if f in m and agg.get(f) != m[f]:
                    agg[f] = None
    rec.update(
        sources=dict(sorted(sources.items())),
        fields=dict(sorted(fields.items())),
        body_models=dict(sorted(models.items())),
        shards=list(shards),
    )
    return rec


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _kept_shards(out: Path, old: dict[str, Any], stats: Counter[str]) -> dict[str, list[dict[str, Any]]]:
    """Per split, the longest prefix of the old index's shards whose files still match size and sha256."""
    kept: dict[str, list[dict[str, Any]]] = {}
    for split, rec in old.get("splits", {}).items():
        keep: list[dict[str, Any]] = []
        for sh in rec.get("shards", []):
            path = out / sh["name"]
            if not path.is_file() or path.stat().st_size != sh["bytes"] or _file_sha256(path) != sh["sha256"]:
                logger.warning(
                    "%s: missing or changed since it was indexed; rewriting it and the shards after it", path
                )
                stats["shards/rewritten_bad_hash"] += 1
                break
            keep.append(sh)
        kept[split] = keep
    return kept


def _source_records(datasets: Sequence[str | Path]) -> tuple[list[Any], list[dict[str, Any]]]:
    from p2m.layout import read_dataset

    opened, records = [], []
    seen: set[Path] = set()
    for path in datasets:
        root = Path(path).resolve()
        if root in seen:
            raise ConfigError(f"dataset {path} is given twice")
        seen.add(root)
        ds = read_dataset(root)
        if not ds.names:
            raise LayoutError(f"{root}: no annotations/{{name}}_subject{{S}}_data.json files")
        opened.append(ds)
        records.append(
            {"path": str(root), "names": list(ds.names), "info": {n: ds.read_info(n) for n in ds.names}}
        )
    return opened, records


def build_shards(
    datasets: Sequence[str | Path],
    out: str | Path,
    *,
    splits: Mapping[str, str | Sequence[str | int]] | None = None,
    with_images: bool = False,
    crop: bool = False,
    crop_size: int = 256,
    crop_margin: float = 0.2,
    jpeg_quality: int = 90,
    max_side: int | None = None,
    with_meta: bool = False,
    maxcount: int = DEFAULT_MAXCOUNT,
    maxsize: int = DEFAULT_MAXSIZE,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool | None = None,
    map_tasks: Any = None,
) -> dict[str, Any]:
    """Write WebDataset shards (one sample per person) and ``index.json`` from dataset folders.

    Args:
        datasets: dataset folders in the layout of Contract 1; their samples are written in this order.
        out: the shard folder (created). Rerunning with the same arguments resumes an interrupted run.
        splits: split name -> subjects (``"S1,S5"`` or a list; ``"*"`` takes every subject no other split
            names). Default: every subject to ``train``. Subjects in no split are skipped and counted.
        with_images: store a ``.jpg`` per sample (default: pose-only).
        crop: with images, store the person crop (``crop_size`` px square, ``crop_margin`` of the bbox's
            longer side added on each side) instead of the frame.
        crop_size: crop side in px.
        crop_margin: crop margin as a fraction of the bbox's longer side.
        jpeg_quality: quality of re-encoded JPEGs.
        max_side: frames are downscaled to this longer side (None: frames are stored as they are).
        with_meta: also store a ``.json`` member per sample (ids, file name, camera, provenance); the trainer
            does not need it, and a pose-only sample then takes 3 KB instead of 2 KB.
        maxcount: most samples per shard.
        maxsize: most bytes per shard (a larger single sample gets a shard of its own).
        workers: processes that parse and encode whole subjects in parallel (1: all in this process).
        overwrite: delete an existing shard set written with other options instead of refusing.
        progress: show a progress bar (None: only on a terminal).
        map_tasks: an ordered executor that encodes subjects elsewhere (``p2m shard --ray``, see
            :func:`p2m.shards.tasks.iter_results`); the shards are written here, byte-identical.

    Returns:
        Stats with slash keys (``samples/written``, ``samples/kept``, ``shards/written``, ``shards/kept``,
        ``samples/skipped/<reason>``, ``bytes/written``, ``split/<name>/samples``, ``duration_s``) plus
        ``out`` and ``index``; also saved to ``out/shard_stats.json``.

    Raises:
        ConfigError: bad options. LayoutError: a dataset that does not follow the layout.
        ShardError: ``out`` holds shards written with other options (and not ``overwrite``), duplicate keys,
        or inputs that changed under an interrupted run.
    """
    t0 = time.perf_counter()
    if maxcount < 1 or maxsize < 4096:
        raise ConfigError(
            f"maxcount {maxcount} / maxsize {maxsize}: need maxcount >= 1 and maxsize >= 4096 bytes"
        )
    if not 1 <= jpeg_quality <= 95:
        raise ConfigError(f"jpeg_quality {jpeg_quality}: expected 1..95")
    if crop and not with_images:
        raise ConfigError("crop needs with_images (--with-images --crop)")
    if workers < 1:
        raise ConfigError(f"workers {workers}: expected >= 1")
    if not datasets:
        raise ConfigError("no dataset folder given")
    opts = EncodeOptions(
        with_images, crop, int(crop_size), float(crop_margin), int(jpeg_quality), max_side, bool(with_meta)
    )
    split_map = normalise_splits(splits)
    opened, sources = _source_records(datasets)
    # npy_align: how .npy headers are padded (p2m before it: numpy's 64), so a resume never mixes the two
    config = {
        **opts.to_config(),
        "maxcount": int(maxcount),
        "maxsize": int(maxsize),
        "splits": split_map,
        "npy_align": NPY_ALIGN,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats: Counter[str] = Counter()
    with _lock(out):
        index = _start_index(out, config, sources, overwrite, stats)
        kept = {s: list(index["splits"].get(s, {}).get("shards", [])) for s in split_map}
        resume_after = {s: sh[-1]["last_key"] for s, sh in kept.items() if sh}
        index["splits"] = {s: aggregate_split(kept[s]) for s in split_map}
        save_index(out, index)
        stats["shards/kept"] = sum(len(v) for v in kept.values())

        def on_commit(split: str, record: dict[str, Any]) -> None:
            kept[split].append(record)
            index["splits"][split] = aggregate_split(kept[split])
            save_index(out, index)
            stats["shards/written"] += 1

        writers = {s: _SplitWriter(out, s, len(kept[s]), maxcount, maxsize, on_commit) for s in split_map}
        split_of = {subject: name for name, subjects in split_map.items() for subject in subjects}
        tasks = plan_tasks(opened, split_of, resume_after)
        try:
            _run(tasks, writers, opts, workers, resume_after, stats, progress, map_tasks)
            for w in writers.values():
                w.commit()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        index["complete"] = True
        save_index(out, index)
    for s in split_map:
        stats[f"split/{s}/samples"] = index["splits"][s]["samples"]
        stats[f"split/{s}/shards"] = len(index["splits"][s]["shards"])
        if not index["splits"][s]["samples"]:
            logger.warning("split %r has no samples (subjects %s)", s, split_map[s])
    result: dict[str, Any] = dict(sorted(stats.items()))
    result["duration_s"] = round(time.perf_counter() - t0, 3)
    result["out"] = str(out)
    result["index"] = str(out / INDEX_NAME)
    write_json(out / STATS_NAME, result, indent=1)
    return result


def _run(
    tasks: list[SubjectTask],
    writers: dict[str, _SplitWriter],
    opts: EncodeOptions,
    workers: int,
    resume_after: dict[str, str],
    stats: Counter[str],
    progress: bool | None,
    map_tasks: Any = None,
) -> None:
    """Write every task's samples in order: check keys are unique, skip what kept shards hold, count the rest."""
    from tqdm import tqdm

    bar = tqdm(
        desc="shard",
        unit=" samples",
        disable=(not progress) if progress is not None else None,
        mininterval=0.5,
        smoothing=0.1,
    )
    waiting = dict(resume_after)  # split -> last key already in a kept shard
    seen: dict[str, tuple[str, str, Any]] = {}
    try:
        for task, item in iter_results(tasks, opts, workers, map_tasks):
            if isinstance(item, Counter):
                stats.update(item)
                continue
            if isinstance(item, EncodedBatch) and _add_batch(item, task, writers, waiting, seen, stats):
                bar.update(len(item))
                continue
            for enc in item:
                if enc.key in seen:
                    root, name, image_id = seen[enc.key]
                    raise ShardError(
                        f"{task.dataset.root}: dataset {enc.source!r} subject {task.subject} image id {enc.image_id}: "
                        f"sample key {enc.key} is already given by image id {image_id} of dataset {name!r} in {root}. "
                        "Two images share subject/action/subaction/cam/frame, or two folders hold the same dataset "
                        "name and subject."
                    )
                seen[enc.key] = (str(task.dataset.root), enc.source, enc.image_id)
                if enc.split in waiting:
                    stats["samples/kept"] += 1
                    if enc.key == waiting[enc.split]:
                        del waiting[enc.split]
                    continue
                if enc.skip is not None:
                    if enc.skip == KEY_ONLY:  # planning promised this sample lies in a kept shard
                        raise ShardError(
                            f"internal: sample {enc.key} was not encoded; rerun with --overwrite"
                        )
                    stats[f"samples/skipped/{enc.skip}"] += 1
                    continue
                writers[enc.split].add(enc)
                stats["samples/written"] += 1
                stats["bytes/written"] += len(enc.data)
            bar.update(len(item))
    finally:
        bar.close()
    if waiting:
        split, key = next(iter(waiting.items()))
        raise ShardError(
            f"split {split!r}: the kept shards end at sample {key}, which the datasets no longer contain; the "
            "inputs changed since the interrupted run. Use --overwrite (or another --out) to start over."
        )


def _add_batch(
    batch: EncodedBatch,
    task: SubjectTask,
    writers: dict[str, _SplitWriter],
    waiting: dict[str, str],
    seen: dict[str, tuple[str, str, Any]],
    stats: Counter[str],
) -> bool:
    """What :func:`_run` does per sample, for a whole batch; False (nothing done) where it must go sample by sample:
    a split still skipping kept shards, a key seen before, or key-only samples."""
    keys = batch.keys
    if (
        batch.split in waiting
        or KEY_ONLY in batch.skips
        or not seen.keys().isdisjoint(keys)
        or len(set(keys)) != len(keys)
    ):
        return False
    seen.update(zip(keys, zip(repeat(str(task.dataset.root)), repeat(batch.source), batch.image_ids)))
    skipped = Counter(why for why in batch.skips if why is not None)
    for why, count in skipped.items():
        stats[f"samples/skipped/{why}"] += count
    writers[batch.split].add_batch(batch)
    stats["samples/written"] += len(keys) - sum(skipped.values())
    stats["bytes/written"] += len(batch.data)
    return True


def _start_index(
    out: Path, config: dict[str, Any], sources: list[dict[str, Any]], overwrite: bool, stats: Counter[str]
) -> dict[str, Any]:
    """The index to continue from: the old one when it matches (bad-hash shards dropped), else a fresh one."""
    for stale in out.iterdir():
        if _TMP_RE.match(stale.name):  # a shard being written when a previous run died
            stale.unlink()
            stats["files/removed_temp"] += 1
    path = out / INDEX_NAME
    fresh = empty_index(config, sources)
    if not path.exists():
        leftovers = [p.name for p in out.iterdir() if SHARD_RE.match(p.name)]
        if leftovers and not overwrite:
            raise ShardError(
                f"{out}: holds shards ({leftovers[0]}, ...) but no {INDEX_NAME}; use --overwrite"
            )
        _remove_shards(out, stats)
        return fresh
    from p2m.io import read_json

    old = read_json(path)
    try:
        check_index(old, str(path))
    except ShardError:
        if not overwrite:
            raise
        _remove_shards(out, stats)  # e.g. shards of an older schema version: --overwrite replaces them
        path.unlink()
        return fresh
    same = old.get("config") == config and [(s["path"], s["names"]) for s in old.get("sources", [])] == [
        (s["path"], s["names"]) for s in sources
    ]
    if not same:
        if not overwrite:
            diff = _first_difference(old.get("config", {}), config) or "the dataset folders differ"
            raise ShardError(
                f"{out}: already holds shards written with other options ({diff}). Use --overwrite to replace "
                "them, or another --out."
            )
        _remove_shards(out, stats)
        path.unlink()
        return fresh
    kept = _kept_shards(out, old, stats)
    fresh["splits"] = {s: {"shards": sh} for s, sh in kept.items()}
    return fresh


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} then, {new.get(key)!r} now"
    return ""


def _remove_shards(out: Path, stats: Counter[str]) -> None:
    for p in out.iterdir():
        if SHARD_RE.match(p.name):
            p.unlink()
            stats["files/removed_old_shards"] += 1


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One writer per shard folder at a time."""
    fh = (out / ".p2m-shard.lock").open("a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ShardError(
                f"{out}: another `p2m shard` is writing here (lock {out / '.p2m-shard.lock'})"
            ) from exc
        yield
    finally:
        fh.close()
