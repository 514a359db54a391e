"""The streaming reader the trainer uses: shards -> shuffled, rank/worker-split, batched torch tensors.

Usage::

    from p2m.shards import make_loader
    loader = make_loader("shards/", "train", batch_size=64, num_workers=2, shuffle_buffer=2000, seed=0)
    loader.load_state_dict(checkpoint["data"])     # when resuming
    while loader.state.epoch < epochs:
        for batch in loader:                       # one epoch; batch["j2d"] (64, 17, 3) float32, ...
            ...
            checkpoint["data"] = loader.state_dict()

Pipeline (:func:`shard_pipeline`, each stage a plain generator of :mod:`p2m.shards.stages`, as in webdataset)::

    url_opener -> tar_samples (tar expander + group by keys, keeping this worker's share) -> shuffle
      -> batched (skipping what a resumed epoch consumed) -> collate (p2m.shards.collate: the batch contract)

:class:`ShardStream` only plans what it reads: which shards, in which order, which share and how many batches,
for (epoch, rank, worker). Training and evaluation read through the same pipeline; evaluation is
``drop_last=False`` with no shuffling. Each local shard is checked against its sha256 in index.json when it is
opened, every tar header when it is read; DataLoader workers die with their parent (:func:`die_with_parent`).

Modes:

- **exact** (``epoch_length=None``, needs ``index.json``): shards go to ranks once, by greedy balancing of their
  sample counts; each rank's shards are read in an order shuffled per epoch, and DataLoader worker ``w`` of
  ``W`` keeps samples ``w, w+W, ...`` of that stream (every worker reads the rank's bytes and steps over the
  samples of the others without copying them: cheap for pose-only shards, W times the I/O for image shards).
  No sample is seen twice in an epoch, and every rank yields the same number of full batches,
  ``floor(min_rank_samples / W / B) * W`` (the few samples beyond that are dropped, others in the next
  epoch), so DDP never waits for a rank that ran out.
- evaluation (``drop_last=False``, exact mode): every sample of the split once over all ranks and workers,
  last batches shorter; ``max_samples`` keeps the first samples of the split in index order.
- **resampled** (``epoch_length=N``): every worker draws shards with replacement (seeded per epoch, rank and
  worker) and the rank yields exactly ``N`` batches per epoch. Samples may repeat within an epoch. Works on
  a plain list of shard URLs (no index needed).

Batch ``j`` of an epoch always comes from worker ``j % W`` (the DataLoader's round-robin), which makes the
position exact: :class:`StreamState` ``(epoch, batch, seed)``. Resuming an exact-mode epoch at batch ``k``
replays the same shard order and shuffle and skips what was consumed (without decoding), so the rest of the
epoch is exactly what an uninterrupted run would have produced (same world size, workers, batch size, seed).
Resuming in resampled mode keeps the epoch and batch count (so the epoch still ends after ``N`` batches) but
draws a fresh random stream seeded by ``(seed, epoch, batch)``: statistically the same, not the same samples.
Workers are persistent; the position of each new epoch reaches them through shared memory.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import multiprocessing
import os
import random
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from p2m.errors import ShardError
from p2m.shards.collate import CollateSpec, collate
from p2m.shards.index import load_index, shard_location
from p2m.shards.stages import ShardRef, batched, reraise, resample, share, shuffle, tar_samples, url_opener

logger = logging.getLogger(__name__)


def shard_pipeline(
    shards: Iterable[ShardRef],
    spec: CollateSpec,
    *,
    batch_size: int,
    batches: int,
    skip: int = 0,
    partial: bool = False,
    part: int = 0,
    parts: int = 1,
    shuffle_buffer: int = 0,
    rng: random.Random | None = None,
    handler: Callable[[BaseException], bool] = reraise,
) -> Iterator[dict[str, Any]]:
    """Collated batches of the samples of ``shards`` (``(url, limit, sha256)``, in reading order).

    Args:
        shards: the shards to read, each with the most samples to take from it (None: all) and its sha256 (None:
            unchecked).
        spec: what a batch holds.
        batch_size, batches: batch size and the most batches to yield.
        skip: batches to drop first (a resumed epoch); partial: yield a shorter last batch.
        part, parts: keep samples ``part, part + parts, ...`` of the stream (a DataLoader worker's share).
        shuffle_buffer, rng: reservoir shuffle of that many samples (0 or 1: none).
        handler: what to do with a shard that fails (see :mod:`p2m.shards.stages`).
    """
    streams = url_opener(shards, handler)
    samples = tar_samples(streams, handler, keep=share(part, parts))
    samples = shuffle(samples, shuffle_buffer, rng or random.Random(0))
    for batch in batched(samples, batch_size, batches, skip, partial):
        yield collate(batch, spec)


# ------------------------------------------------------------------------------------------------ the dataset


@dataclass
class StreamState:
    """Where a rank is in the stream; save it with a checkpoint and give it back to resume.

    Attributes:
        epoch: current epoch.
        batch: batches of ``epoch`` this rank has already handed to the trainer.
        seed: base seed.
        mode: ``"exact"`` or ``"resampled"``.
        world_size, num_workers, batch_size: the layout the position refers to (exact replay needs the same).
    """

    epoch: int = 0
    batch: int = 0
    seed: int = 0
    mode: str = "exact"
    world_size: int = 1
    num_workers: int = 0
    batch_size: int = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain ints and strings (safe for ``torch.load(weights_only=True)``)."""
        return asdict(self)


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the arguments, else torch.distributed when initialised, else torchrun's env, else (0, 1)."""
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return (int(rank) if rank is not None else r), (int(world_size) if world_size is not None else w)


def balance(counts: Sequence[int], parts: int) -> list[list[int]]:
    """Assign items (by size) to ``parts`` bins, largest first to the lightest bin; returns item indices per bin."""
    bins: list[list[int]] = [[] for _ in range(parts)]
    load = [0] * parts
    for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        b = min(range(parts), key=lambda p: (load[p], p))
        bins[b].append(i)
        load[b] += counts[i]
    for b in bins:
        b.sort()
    return bins


class ShardStream(IterableDataset):
    """Batches of one split of a shard set, for one rank; iterate it through :class:`ShardLoader`.

    Args:
        source: the shard folder, its ``index.json`` (path or URL), or a list of shard paths/URLs (then
            ``epoch_length`` is required, and body parameters need ``body_model`` + ``body_shapes``).
        split: split name in the index.
        batch_size: samples per batch.
        shuffle_buffer: samples in the shuffle buffer per worker (0 or 1: no sample shuffling).
        seed: base seed of every random choice (shard order, buffer, resampling).
        epoch_length: batches per rank per epoch in resampled mode; None: exact epochs (needs the index).
        rank, world_size: this process's place; default from torch.distributed or RANK / WORLD_SIZE.
        num_workers: DataLoader workers that will iterate this dataset (0: the main process).
        shuffle_shards: shuffle the shard order each epoch (exact mode).
        body_model: body model id to collate (default: the split's only model in index.json, if one).
        body_shapes: per-sample shapes of that model's pose/shape/trans (default: from index.json).
        with_meta, with_images: add decoded json / images to each batch (the shards must hold them).
        handler: called with an exception from a shard; True skips it (resampled mode), False stops.
        allow_incomplete: read an index whose writing run has not finished.
        drop_last: exact mode yields only full batches, the same number on every rank (training). False
            (evaluation): every sample of the split exactly once over all ranks and workers, last batches
            shorter, batch counts that may differ between ranks, no mid-epoch resume.
        max_samples: with ``drop_last=False``, only the first samples of the split, in index order.
    """

    def __init__(
        self,
        source: str | Path | Sequence[str],
        split: str = "train",
        batch_size: int = 64,
        *,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        epoch_length: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
        shuffle_shards: bool = True,
        body_model: str | None = None,
        body_shapes: Mapping[str, Sequence[int]] | None = None,
        with_meta: bool = False,
        with_images: bool = False,
        handler: Callable[[BaseException], bool] = reraise,
        allow_incomplete: bool = False,
        drop_last: bool = True,
        max_samples: int | None = None,
    ) -> None:
        super().__init__()
        if not drop_last and epoch_length is not None:
            raise ShardError("drop_last=False needs exact epochs (epoch_length=None)")
        if max_samples is not None and drop_last:
            raise ShardError("max_samples needs drop_last=False (evaluation)")
        self.drop_last = drop_last
        if batch_size < 1:
            raise ShardError(f"batch_size {batch_size}: expected >= 1")
        if epoch_length is not None and epoch_length < 1:
            raise ShardError(f"epoch_length {epoch_length}: expected >= 1 batches, or None for exact epochs")
        self.rank, self.world_size = dist_info(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise ShardError(f"rank {self.rank} is outside world_size {self.world_size}")
        self.split, self.batch_size, self.seed = split, int(batch_size), int(seed)
        self.shuffle_buffer, self.epoch_length = int(shuffle_buffer), epoch_length
        self.num_workers, self.shuffle_shards = max(0, int(num_workers)), shuffle_shards
        self.handler = handler
        self.urls, self.counts, models, config, self.sha256 = self._shards(source, split, allow_incomplete)
        if epoch_length is None and self.counts is None:
            raise ShardError(
                "exact epochs need the sample count of every shard: pass the shard folder or its index.json, "
                "or give epoch_length for resampled epochs"
            )
        if not self.urls:
            raise ShardError(f"split {split!r} has no shards")
        self.limits: list[int | None] = [None] * len(self.urls)
        if max_samples is not None and self.counts is not None:
            offsets = [sum(self.counts[:i]) for i in range(len(self.counts))]
            self.limits = [max(0, min(c, max_samples - o)) for c, o in zip(self.counts, offsets, strict=True)]
        for flag, option, member in ((with_meta, "with_meta", "json"), (with_images, "with_images", "jpg")):
            if flag and config is not None and not config.get(option):
                raise ShardError(
                    f"{source}: {option}: the shards hold no .{member} members; rewrite them with "
                    f"`p2m shard --{option.replace('_', '-')}`"
                )
        self.spec = CollateSpec(*self._body(models, body_model, body_shapes), with_meta, with_images)
        self.state = StreamState(
            0,
            0,
            self.seed,
            "exact" if epoch_length is None else "resampled",
            self.world_size,
            self.num_workers,
            self.batch_size,
        )
        # (epoch, batch) where the next iteration starts, shared with persistent DataLoader workers
        self._start = (
            multiprocessing.get_context("fork").Array("q", 2, lock=False) if self.num_workers else None
        )
        self.rank_shards: list[int] = list(range(len(self.urls)))
        self.worker_batches: list[int] | None = None  # drop_last=False: batches of each worker
        self.batches_per_epoch = int(epoch_length) if epoch_length is not None else self._plan_exact()

    def _plan_exact(self) -> int:
        """Give this rank its shards and return the batches per epoch (exact mode)."""
        assert self.counts is not None
        counts = [c if lim is None else lim for c, lim in zip(self.counts, self.limits, strict=True)]
        if len(self.urls) < self.world_size and self.drop_last:
            raise ShardError(
                f"split {self.split!r} has {len(self.urls)} shards for {self.world_size} ranks; exact epochs need "
                "at least one shard per rank: rewrite with a smaller --maxcount, or use resampled epochs (epoch_length)"
            )
        bins = balance(counts, self.world_size)
        self.rank_shards = [i for i in bins[self.rank] if counts[i] > 0]
        nw = max(1, self.num_workers)
        if not self.drop_last:
            mine = sum(counts[i] for i in self.rank_shards)
            per_worker = [max(0, (mine - w + nw - 1) // nw) for w in range(nw)]  # worker w keeps w, w+nw, ...
            self.worker_batches = [-(-n // self.batch_size) for n in per_worker]
            return sum(self.worker_batches)
        min_samples = min(sum(counts[i] for i in b) for b in bins)
        batches = (min_samples // nw) // self.batch_size * nw
        if batches == 0:
            raise ShardError(
                f"split {self.split!r}: the smallest rank share is {min_samples} samples, too few for one batch of "
                f"{self.batch_size} per worker ({nw} workers); lower the batch size or the workers"
            )
        return batches

    # -- set-up helpers ------------------------------------------------------------------------------

    @staticmethod
    def _shards(
        source: str | Path | Sequence[str], split: str, allow_incomplete: bool
    ) -> tuple[list[str], list[int] | None, dict[str, Any] | None, dict[str, Any] | None, list[str | None]]:
        if isinstance(source, (list, tuple)):
            return [str(u) for u in source], None, None, None, [None] * len(source)
        text = str(source)
        if text.endswith(".tar") or "{" in text:
            from webdataset.shardlists import expand_urls

            urls = list(expand_urls(text))
            return urls, None, None, None, [None] * len(urls)
        index = load_index(text)
        if not index.get("complete") and not allow_incomplete:
            raise ShardError(
                f"{text}: the index is incomplete (the writing run was interrupted); rerun `p2m shard` with the same "
                "arguments, or pass allow_incomplete=True"
            )
        if split not in index["splits"]:
            raise ShardError(f"{text}: no split {split!r}; the index has {sorted(index['splits'])}")
        rec = index["splits"][split]
        urls = [shard_location(text, sh["name"]) for sh in rec["shards"]]
        return (
            urls,
            [int(sh["samples"]) for sh in rec["shards"]],
            rec.get("body_models", {}),
            index.get("config", {}),
            [sh["sha256"] for sh in rec["shards"]],
        )

    def _body(
        self,
        models: dict[str, Any] | None,
        body_model: str | None,
        body_shapes: Mapping[str, Sequence[int]] | None,
    ) -> tuple[str | None, dict[str, list[int]] | None]:
        if body_shapes is not None:
            if body_model is None:
                raise ShardError("body_shapes needs body_model")
            return body_model, {k: list(v) for k, v in body_shapes.items()}
        if not models:
            if body_model is not None:
                raise ShardError(
                    f"body_model {body_model!r}: no index.json to take its shapes from; pass body_shapes"
                )
            return None, None
        if body_model is None:
            if len(models) > 1:
                raise ShardError(
                    f"split {self.split!r} mixes body models {sorted(models)}; choose one with body_model=... "
                    "(samples of the others get has_body = False)"
                )
            body_model = next(iter(models))
        if body_model not in models:
            raise ShardError(f"body_model {body_model!r}: split {self.split!r} has {sorted(models)}")
        rec = models[body_model]
        shapes = {f: rec.get(f) for f in ("pose", "shape", "trans") if f in rec}
        bad = [f for f, s in shapes.items() if s is None]
        if bad:
            raise ShardError(f"body model {body_model!r}: {bad} have different lengths in different samples")
        return body_model, shapes

    # -- position ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_position(self, epoch: int, batch: int = 0) -> None:
        """Start the next iteration at ``batch`` of ``epoch`` (picked up by DataLoader workers at their start)."""
        if not 0 <= batch <= self.batches_per_epoch:
            raise ShardError(f"batch {batch} is outside epoch length {self.batches_per_epoch}")
        self.state.epoch, self.state.batch = int(epoch), int(batch)
        self._publish_position()

    def _publish_position(self) -> None:
        """Make the current position visible to (persistent) workers before an iteration starts."""
        if self._start is not None:
            self._start[0], self._start[1] = self.state.epoch, self.state.batch

    # -- iteration -----------------------------------------------------------------------------------

    def _rng(self, *parts: int) -> random.Random:
        # a str seed is hashed with sha512 by random.Random: the same in every process and Python run
        return random.Random("/".join(str(p) for p in (self.seed, self.rank, *parts)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        nw = max(1, self.num_workers)
        if info is None:
            if self.num_workers > 0:
                raise ShardError(
                    f"ShardStream(num_workers={self.num_workers}) is iterated in the main process; iterate it through "
                    "make_loader / ShardLoader, or build it with num_workers=0"
                )
            physical = 0
        else:
            if info.num_workers != nw:
                raise ShardError(
                    f"ShardStream(num_workers={self.num_workers}) runs in a DataLoader with {info.num_workers} "
                    "workers; build the loader with make_loader"
                )
            physical = info.id
        if info is not None and self._start is not None:
            epoch, start = int(self._start[0]), int(self._start[1])
        else:
            epoch, start = self.state.epoch, self.state.batch
        logical = (physical + start) % nw
        done = start // nw + (
            1 if logical < start % nw else 0
        )  # batches this worker's role already delivered
        quota = self.batches_per_epoch // nw + (1 if logical < self.batches_per_epoch % nw else 0)
        if not self.drop_last:
            if start:
                raise ShardError(
                    "drop_last=False streams have no mid-epoch resume; start the epoch from batch 0"
                )
            assert self.worker_batches is not None
            quota = self.worker_batches[logical]
        if self.epoch_length is None:
            order = list(self.rank_shards)
            if self.shuffle_shards:
                self._rng(epoch, -1).shuffle(order)  # the same for all workers of this rank
            shards: Iterable[ShardRef] = [(self.urls[i], self.limits[i], self.sha256[i]) for i in order]
            part, parts, skip = logical, nw, done  # workers split the rank's stream sample by sample
            rng = self._rng(epoch, logical)
        else:  # each worker draws its own shards; a resumed epoch draws afresh (documented)
            shards = resample(self.urls, self._rng(epoch, logical, start), self.sha256)
            part, parts, skip = 0, 1, 0
            rng = self._rng(epoch, logical, start, 1)
        produced = 0
        for batch in shard_pipeline(
            shards,
            self.spec,
            batch_size=self.batch_size,
            batches=quota - done,
            skip=skip,
            partial=not self.drop_last,
            part=part,
            parts=parts,
            shuffle_buffer=self.shuffle_buffer,
            rng=rng,
            handler=self.handler,
        ):
            produced += 1
            yield batch
        if produced < quota - done:
            raise ShardError(
                f"split {self.split!r}, rank {self.rank}, worker {logical}: ran out of samples after {produced} of "
                f"{quota - done} batches; a shard holds fewer samples than index.json says or failed to read "
                "(run `p2m shard verify`)"
            )


class ShardLoader:
    """A DataLoader over a :class:`ShardStream` that knows its position.

    Iterating yields one epoch (from the saved position), then advances to the next epoch. ``state_dict()``
    after a batch says where to resume; give it to ``load_state_dict`` of a fresh loader to continue exactly
    (exact mode) or statistically (resampled mode). Workers are persistent: they start once and are told
    the position of each new epoch through shared memory.

    Args:
        stream: the dataset; its ``num_workers`` sets the DataLoader's.
        pin_memory, prefetch_factor, multiprocessing_context: passed to ``torch.utils.data.DataLoader``.
    """

    def __init__(
        self,
        stream: ShardStream,
        *,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        multiprocessing_context: Any = None,
    ) -> None:
        self.stream = stream
        kwargs: dict[str, Any] = {}
        if stream.num_workers > 0:
            kwargs = {
                "prefetch_factor": prefetch_factor,
                "multiprocessing_context": multiprocessing_context,
                "persistent_workers": True,
                "worker_init_fn": functools.partial(die_with_parent, os.getpid()),
            }
        self.loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=stream.num_workers,
            pin_memory=pin_memory,
            collate_fn=_as_is,
            **kwargs,
        )

    @property
    def state(self) -> StreamState:
        return self.stream.state

    def __len__(self) -> int:
        return self.stream.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.stream.set_position(epoch, 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        st = self.stream.state
        if st.batch >= self.stream.batches_per_epoch:
            st.epoch, st.batch = st.epoch + 1, 0
        self.stream._publish_position()
        for batch in self.loader:
            st.batch += (
                1  # counted before the trainer sees it: a checkpoint taken after this step resumes after it
            )
            yield batch
        st.epoch, st.batch = st.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        """The position: ``{epoch, batch, seed, mode, world_size, num_workers, batch_size}``."""
        return self.stream.state.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved position. A different layout (ranks, workers, batch size, seed) is allowed but
        then the rest of the epoch is not the one the saved run would have seen (logged)."""
        st = self.stream.state
        changed = [
            k
            for k in ("seed", "mode", "world_size", "num_workers", "batch_size")
            if state.get(k) != getattr(st, k)
        ]
        if changed:
            logger.warning(
                "resuming the shard stream with other %s than were saved (%s); the rest of epoch %s is not the one "
                "the saved run would have read",
                ", ".join(changed),
                {k: (state.get(k), getattr(st, k)) for k in changed},
                state.get("epoch"),
            )
        epoch, batch = int(state.get("epoch", 0)), int(state.get("batch", 0))
        if (
            batch >= self.stream.batches_per_epoch
        ):  # saved after the last batch of an epoch: the next one is due
            epoch, batch = epoch + 1, 0
        self.stream.set_position(epoch, batch)


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the kernel SIGKILLs this worker when its parent dies (Linux; elsewhere a
    no-op), so a killed trainer leaves no worker blocked on a pipe nobody reads.

    Args:
        parent: the pid of the process that started the worker (checked again after the call, for a parent that
            died before it).
        worker_id: given by the DataLoader.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.debug("worker %d: prctl(PR_SET_PDEATHSIG) failed: errno %d", worker_id, ctypes.get_errno())
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _as_is(batch: Any) -> Any:
    """collate_fn for already collated batches (the default one would walk every key string)."""
    return batch


def make_loader(
    source: str | Path | Sequence[str],
    split: str = "train",
    batch_size: int = 64,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
    **stream_kwargs: Any,
) -> ShardLoader:
    """``ShardLoader(ShardStream(source, split, batch_size, num_workers=..., **stream_kwargs))``.

    Example::

        loader = make_loader("shards/", "train", 64, num_workers=2, shuffle_buffer=2000, seed=0)
        loader.load_state_dict(ckpt["data"])      # when resuming
        for epoch in range(loader.state.epoch, epochs):
            for batch in loader:                  # batch["j2d"]: (64, 17, 3), batch["j3d"], batch["has_j3d"], ...
                ...
                ckpt["data"] = loader.state_dict()
    """
    stream = ShardStream(source, split, batch_size, num_workers=num_workers, **stream_kwargs)
    return ShardLoader(stream, pin_memory=pin_memory)
