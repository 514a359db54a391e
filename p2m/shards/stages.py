"""The stages of the shard reader: plain generators, composed in :func:`p2m.shards.read.shard_pipeline`.

As in webdataset, each stage takes an iterable and options and yields; stages that touch shards take
``handler=`` (called with the exception, the shard URL appended to its args; True skips the shard, False stops,
raising propagates).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO

from p2m.errors import P2MError, ShardError
from p2m.shards.codec import Sample, iter_tar_samples

logger = logging.getLogger(__name__)

#: A shard to read: (url, most samples to read from it or None for all, its sha256 from index.json or None).
ShardRef = tuple[str, int | None, str | None]
#: Local shards whose sha256 this process has checked: (path, size, mtime_ns, sha256).
_VERIFIED: set[tuple[str, int, int, str]] = set()
_warned_streams = False


def reraise(exc: BaseException) -> bool:
    """Handler: re-raise (the default)."""
    raise exc


def warn_and_continue(exc: BaseException) -> bool:
    """Handler: log and skip the shard (resampled mode only; exact mode then runs short and raises)."""
    logger.warning("skipping after error: %s", exc)
    return True


def _handle(exc: Exception, url: str, handler: Callable[[BaseException], bool]) -> bool:
    """Give the handler one ShardError that names the shard (p2m's own errors already do)."""
    if not isinstance(exc, P2MError):
        wrapped = ShardError(f"{url}: {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        exc = wrapped
    return handler(exc)


def local_path(url: str) -> str | None:
    """The file path of a shard URL that names a local file (a plain path or ``file://``), else None."""
    if url.startswith("file://"):
        return url[len("file://") :]
    if "://" in url or url.startswith("pipe:"):
        return None
    return url


def check_sha256(path: str, expected: str) -> None:
    """Raise :class:`ShardError` unless the file's sha256 is ``expected`` (checked once per file and process)."""
    st = os.stat(path)
    ident = (path, st.st_size, st.st_mtime_ns, expected)
    if ident in _VERIFIED:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ShardError(
            f"{path}: sha256 {digest.hexdigest()[:16]}..., index.json says {expected[:16]}...; the shard "
            "changed since it was written (run `p2m shard verify`, then `p2m shard` to rewrite it)"
        )
    _VERIFIED.add(ident)


def url_opener(
    shards: Iterable[ShardRef], handler: Callable[[BaseException], bool] = reraise
) -> Iterator[tuple[str, IO[bytes], int | None]]:
    """Open each shard with ``webdataset.gopen`` (files, ``pipe:``, http(s), ...): ``(url, stream, limit)``.

    A local shard with a sha256 is checked against it before it is read; a streamed one cannot be (it would have
    to be read twice), which is logged once: its tar headers are still checked. A stream is closed when the next
    one is asked for (or the generator is closed).
    """
    global _warned_streams
    from webdataset.gopen import gopen

    for url, limit, sha256 in shards:
        try:
            path = local_path(url)
            if sha256 is not None and path is not None:
                check_sha256(path, sha256)
            elif sha256 is not None and not _warned_streams:
                logger.info(
                    "%s: a streamed shard's sha256 cannot be checked before it is read; its tar headers are "
                    "checked instead",
                    url,
                )
                _warned_streams = True
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
    check: bool = True,
) -> Iterator[Sample]:
    """Tar expander + group by keys: the samples ``(key, {field: bytes})`` of each stream, in order.

    Args:
        streams: from :func:`url_opener`; a stream's ``limit`` keeps only its first samples.
        handler: see the module docstring.
        keep: called at the start of every sample; False steps over it without copying (see :func:`share`).
        check: verify tar header checksums (see :func:`p2m.shards.codec.iter_tar_samples`).
    """
    for url, stream, limit in streams:
        limited = None if limit is None else _Limit(limit, keep)
        try:
            for sample in iter_tar_samples(
                stream, url, check=check, keep=keep if limited is None else limited
            ):
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


def resample(
    urls: Sequence[str], rng: random.Random, sha256: Sequence[str | None] | None = None
) -> Iterator[ShardRef]:
    """Shards drawn with replacement, forever."""
    while True:
        i = rng.randrange(len(urls))
        yield urls[i], None, None if sha256 is None else sha256[i]
