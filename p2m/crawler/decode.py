"""Streaming Content-Encoding decoders with a cap on decoded bytes, so compression bombs cannot fill memory."""

from __future__ import annotations

import zlib


class BodyTooLarge(Exception):
    """The raw or decoded body passed the configured byte cap; reading stopped there."""


class DecodeError(Exception):
    """A compressed body is corrupt, truncated or uses an encoding this crawler cannot read."""


def _brotli_module():
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        return None
    return brotli if hasattr(brotli.Decompressor(), "can_accept_more_data") else None


def _zstd_module():
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        return None
    return zstandard


def accept_encoding() -> str:
    """The Accept-Encoding header value: only encodings that can be decoded under a byte cap."""
    encodings = ["gzip", "deflate"]
    if _brotli_module() is not None:
        encodings.append("br")
    if _zstd_module() is not None:
        encodings.append("zstd")
    return ", ".join(encodings)


class _Zlib:
    """gzip (multi-member) or deflate (zlib-wrapped or raw, decided by the first bytes)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.d: zlib._Decompress | None = None  # type: ignore[name-defined]
        self.pending = b""

    def _new(self, head: bytes) -> zlib._Decompress:  # type: ignore[name-defined]
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        zlib_header = len(head) >= 2 and (head[0] & 0x0F) == 8 and ((head[0] << 8) | head[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def feed(self, data: bytes, limit: int) -> bytes:
        data = self.pending + data
        self.pending = b""
        out = []
        produced = 0
        while data:
            if self.d is None:
                if self.encoding == "deflate" and len(data) < 2:
                    self.pending = data
                    break
                self.d = self._new(data)
            try:
                chunk = self.d.decompress(data, limit - produced + 1)
            except zlib.error as exc:
                raise DecodeError(f"corrupt {self.encoding} body: {exc}") from exc
            produced += len(chunk)
            out.append(chunk)
            if produced > limit:
                raise BodyTooLarge()
            if self.d.unconsumed_tail:
                data = self.d.unconsumed_tail
                continue
            if self.d.eof:
                data = self.d.unused_data
                if self.encoding == "gzip" and data.lstrip(b"\0"):
                    self.d = None  # another gzip member follows
                    continue
                break
            break
        return b"".join(out)

    def finish(self) -> bytes:
        if self.d is None or not self.d.eof:
            if self.d is None and not self.pending:
                return b""
            raise DecodeError(f"truncated {self.encoding} body: the compressed stream ends early")
        return b""


class _Brotli:
    def __init__(self, module) -> None:
        self.d = module.Decompressor()
        self.error = module.error

    def feed(self, data: bytes, limit: int) -> bytes:
        try:
            out = self.d.process(data, output_buffer_limit=limit + 1)
            chunks = [out]
            produced = len(out)
            while produced <= limit and not self.d.can_accept_more_data():
                more = self.d.process(b"", output_buffer_limit=limit - produced + 1)
                if not more:
                    break
                chunks.append(more)
                produced += len(more)
        except self.error as exc:
            raise DecodeError(f"corrupt br body: {exc}") from exc
        if produced > limit:
            raise BodyTooLarge()
        return b"".join(chunks)

    def finish(self) -> bytes:
        if not self.d.is_finished():
            raise DecodeError("truncated br body: the compressed stream ends early")
        return b""


class _CapExceeded(Exception):
    """Raised by :class:`_CappedSink` inside the zstd writer once the output passes its limit."""


class _CappedSink:
    """The file-like target of a zstd stream writer: keeps output chunks, stops the writer past ``limit``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.produced = 0
        self.limit = 0

    def write(self, data) -> int:
        self.produced += len(data)
        if self.produced > self.limit:
            raise _CapExceeded()
        self.parts.append(bytes(data))
        return len(data)


class _Zstd:
    """zstd through a stream writer that hands output over in 64 KiB pieces, so the cap stops a bomb early.

    ``decompressobj().decompress`` would return everything one input chunk expands to (gigabytes for
    a few KiB); the window is capped at 8 MiB as RFC 9659 asks of HTTP zstd, which bounds the
    decoder's own memory.
    """

    WINDOW = 8 * 1024 * 1024

    def __init__(self, module) -> None:
        self.sink = _CappedSink()
        self.w = module.ZstdDecompressor(max_window_size=self.WINDOW).stream_writer(
            self.sink, write_size=65536, closefd=False
        )
        self.error = module.ZstdError

    def feed(self, data: bytes, limit: int) -> bytes:
        self.sink.parts, self.sink.produced, self.sink.limit = [], 0, limit
        try:
            self.w.write(data)
        except _CapExceeded:
            raise BodyTooLarge() from None
        except self.error as exc:
            raise DecodeError(f"corrupt zstd body: {exc}") from exc
        return b"".join(self.sink.parts)

    def finish(self) -> bytes:
        return b""


class StreamDecoder:
    """Undo a ``Content-Encoding`` chain chunk by chunk, stopping once the decoded size passes ``max_bytes``.

    Codings are undone in reverse order of the header (``gzip, deflate`` means deflate first
    applied... the last listed is removed first). Each stage produces at most ``max_bytes + 1``
    bytes per call, so memory stays near ``max_bytes`` whatever the compression ratio.

    Args:
        content_encoding: the header value ('' or ``identity`` for none).
        max_bytes: cap on decoded bytes.

    Raises:
        DecodeError: an unknown or unsupported coding (e.g. ``br`` without the brotli package).
    """

    def __init__(self, content_encoding: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.total = 0
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        self.stages: list = []
        for coding in reversed(codings):
            if coding in ("identity", ""):
                continue
            if coding in ("gzip", "x-gzip"):
                self.stages.append(_Zlib("gzip"))
            elif coding == "deflate":
                self.stages.append(_Zlib("deflate"))
            elif coding == "br" and _brotli_module() is not None:
                self.stages.append(_Brotli(_brotli_module()))
            elif coding == "zstd" and _zstd_module() is not None:
                self.stages.append(_Zstd(_zstd_module()))
            else:
                raise DecodeError(f"unsupported Content-Encoding {coding!r} (not requested by the crawler)")

    def feed(self, data: bytes) -> bytes:
        """Decode one raw chunk.

        Raises:
            BodyTooLarge: the decoded body passed ``max_bytes``.
            DecodeError: the stream is corrupt.
        """
        for stage in self.stages:
            if not data:
                return b""
            data = stage.feed(data, self.max_bytes - self.total)
        self.total += len(data)
        if self.total > self.max_bytes:
            raise BodyTooLarge()
        return data

    def finish(self) -> bytes:
        """Check that every stage reached its end (a truncated stream raises :class:`DecodeError`)."""
        for stage in self.stages:
            stage.finish()
        return b""
