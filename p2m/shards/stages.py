"""The stages of the shard reader: plain generators over ``(key, {field: bytes})`` samples, as in webdataset.

Each stage takes an iterable and options and yields; stages that touch shards take ``handler=`` (called with
the exception, the shard URL appended to its args; True skips, False stops, raising propagates).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from p2m.shards.codec import Sample, iter_tar_samples

logger = logging.getLogger(__name__)


def reraise(exc: BaseException) -> bool:
    """Handler: re-raise (the default)."""
    raise exc


def warn_and_continue(exc: BaseException) -> bool:
    """Handler: log and skip the shard or sample (resampled mode only; exact mode then runs short and raises)."""
    logger.warning("skipping after error: %s", exc)
    return True


def open_shards(
    urls: Iterable[str], handler: Callable[[BaseException], bool] = reraise, part: int = 0, parts: int = 1
) -> Iterator[Sample]:
    """Open each shard with ``webdataset.gopen`` and yield its samples ``(key, {field: bytes})``.

    With ``parts > 1`` only samples ``part, part + parts, ...`` of the whole stream are yielded; the others are
    stepped over without copying their bytes (the worker split of exact epochs).
    """
    from webdataset.gopen import gopen

    keep = None
    if parts > 1:
        counter = itertools.count()

        def keep() -> bool:
            return next(counter) % parts == part

    for url in urls:
        try:
            with gopen(url, "rb") as stream:
                yield from iter_tar_samples(stream, url, keep=keep)
        except Exception as exc:  # noqa: BLE001 - the handler decides
            exc.args = (*exc.args, url)
            if not handler(exc):
                return


def open_shards_webdataset(
    urls: Iterable[str], handler: Callable[[BaseException], bool] = reraise, part: int = 0, parts: int = 1
) -> Iterator[Sample]:
    """The same stage built from webdataset's own tar expander and key grouping (slower; any tar webdataset reads)."""
    from webdataset.gopen import gopen
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def streams() -> Iterator[dict[str, Any]]:
        for url in urls:
            yield {"url": url, "stream": gopen(url, "rb")}

    samples = group_by_keys(tar_file_expander(streams(), handler=handler), handler=handler)
    for i, sample in enumerate(samples):
        if i % parts == part:
            key = sample.pop("__key__")
            yield key, {k: v for k, v in sample.items() if not k.startswith("__")}


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
        batch = [s for _, s in zip(range(batch_size), it, strict=False)]
        if len(batch) < batch_size and not (partial and batch):
            return
        yield batch


def resample(urls: Sequence[str], rng: random.Random) -> Iterator[str]:
    """Shard URLs drawn with replacement, forever."""
    while True:
        yield urls[rng.randrange(len(urls))]
