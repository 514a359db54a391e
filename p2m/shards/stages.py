"""The stages of the shard reader: plain generators, composed in :func:`p2m.shards.read.shard_pipeline`.

As in webdataset, each stage takes an iterable and options and yields; stages that touch shards take
``handler=`` (called with the exception, the shard URL appended to its args; True skips the shard, False stops,
raising propagates).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO

from p2m.shards.codec import Sample, iter_tar_samples

logger = logging.getLogger(__name__)

#: A shard to read: (url, most samples to read from it or None for all).
ShardRef = tuple[str, int | None]


def reraise(exc: BaseException) -> bool:
    """Handler: re-raise (the default)."""
    raise exc


def warn_and_continue(exc: BaseException) -> bool:
    """Handler: log and skip the shard (resampled mode only; exact mode then runs short and raises)."""
    logger.warning("skipping after error: %s", exc)
    return True


def _handle(exc: Exception, url: str, handler: Callable[[BaseException], bool]) -> bool:
    exc.args = (*exc.args, url)
    return handler(exc)


def url_opener(
    shards: Iterable[ShardRef], handler: Callable[[BaseException], bool] = reraise
) -> Iterator[tuple[str, IO[bytes], int | None]]:
    """Open each shard with ``webdataset.gopen`` (files, ``pipe:``, http(s), ...): ``(url, stream, limit)``.

    A stream is closed when the next one is asked for (or the generator is closed).
    """
    from webdataset.gopen import gopen

    for url, limit in shards:
        try:
            stream = gopen(url, "rb")
        except Exception as exc:  # noqa: BLE001 - the handler decides
            if _handle(exc, url, handler):
                continue
            return
        with stream:
            yield url, stream, limit


def tar_samples(
    streams: Iterable[tuple[str, IO[bytes], int | None]],
    handler: Callable[[BaseException], bool] = reraise,
    keep: Callable[[], bool] | None = None,
    check: bool = False,
) -> Iterator[Sample]:
    """Tar expander + group by keys: the samples ``(key, {field: bytes})`` of each stream, in order.

    Args:
        streams: from :func:`url_opener`; a stream's ``limit`` keeps only its first samples.
        handler: see the module docstring.
        keep: called at the start of every sample; False steps over it without copying (see :func:`share`).
        check: verify tar header checksums.
    """
    for url, stream, limit in streams:
        limited = None if limit is None else _Limit(limit, keep)
        try:
            for sample in iter_tar_samples(stream, url, check=check, keep=keep if limited is None else limited):
                yield sample
                if limited is not None and limited.seen >= limit:
                    break  # the rest of the shard is not wanted: stop reading it
        except Exception as exc:  # noqa: BLE001 - the handler decides
            if not _handle(exc, url, handler):
                return


class _Limit:
    """A ``keep`` callback that also refuses every sample after the first ``limit`` of a shard."""

    def __init__(self, limit: int, keep: Callable[[], bool] | None) -> None:
        self.limit, self.keep, self.seen = limit, keep, 0

    def __call__(self) -> bool:
        self.seen += 1
        return self.seen <= self.limit and (self.keep is None or self.keep())


def share(part: int, parts: int) -> Callable[[], bool] | None:
    """A ``keep`` callback for :func:`tar_samples`: samples ``part, part + parts, ...`` of the whole stream."""
    if parts <= 1:
        return None
    counter = itertools.count()
    return lambda: next(counter) % parts == part


def shuffle(samples: Iterable[Sample], bufsize: int, rng: random.Random) -> Iterator[Sample]:
    """Reservoir shuffle: fill ``bufsize`` samples, then emit a random one for each new one; deterministic per rng."""
    if bufsize <= 1:
        yield from samples
        return
    buf: list[Sample] = []
    for sample in samples:
        if len(buf) < bufsize:
            buf.append(sample)
            continue
        j = rng.randrange(bufsize)
        yield buf[j]
        buf[j] = sample
    rng.shuffle(buf)
    yield from buf


def batched(
    samples: Iterable[Sample], batch_size: int, count: int, skip: int = 0, partial: bool = False
) -> Iterator[list[Sample]]:
    """Drop the first ``skip`` batches, then yield up to ``count`` batches of ``batch_size`` samples (a shorter
    last one only with ``partial``)."""
    it = iter(samples)
    for _ in range(skip * batch_size):
        if next(it, None) is None:
            return
    for _ in range(count):
        batch = list(itertools.islice(it, batch_size))
        if len(batch) < batch_size and not (partial and batch):
            return
        yield batch


def resample(urls: Sequence[str], rng: random.Random) -> Iterator[ShardRef]:
    """Shards drawn with replacement, forever."""
    while True:
        yield urls[rng.randrange(len(urls))], None
