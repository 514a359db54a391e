"""Compression bombs: every Content-Encoding the crawler asks for stops at the decompressed-bytes cap, with memory
bounded by the cap rather than by what one chunk expands to. The bombs are made by the test (a few KiB each)."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib

import pytest
from aiohttp import web

from p2m.crawler.decode import BodyTooLarge, DecodeError, StreamDecoder, accept_encoding
from p2m.crawler.fetch import Fetcher, FetchSettings

CAP = 1024 * 1024
EXPANDED = 64 * 1024 * 1024  # what each bomb expands to: 64x the cap


def _bomb(encoding: str) -> bytes:
    zeros = b"\0" * EXPANDED
    if encoding == "gzip":
        return gzip.compress(zeros, 9)
    if encoding == "deflate":
        return zlib.compress(zeros, 9)
    if encoding == "br":
        brotli = pytest.importorskip(
            "brotli", reason="the brotli package is not installed (br is not requested)"
        )
        return brotli.compress(zeros, quality=5)
    zstandard = pytest.importorskip("zstandard", reason="zstandard is not installed (zstd is not requested)")
    return zstandard.ZstdCompressor(level=3).compress(zeros)


ENCODINGS = ["gzip", "deflate", "br", "zstd"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_one_chunk_of_a_bomb_never_expands_past_the_cap(encoding):
    """The whole bomb is fed as ONE chunk: a decoder without an output bound returns all 64 MiB at once."""
    bomb = _bomb(encoding)
    assert len(bomb) < 512 * 1024
    decoder = StreamDecoder(encoding, CAP)
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            decoder.feed(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * CAP, f"{encoding}: peak {peak} bytes for a {CAP}-byte cap"


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_served_bomb_stops_at_the_cap(encoding):
    bomb = _bomb(encoding)
    assert encoding in accept_encoding()  # the crawler asks for it, so it must cap it

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": encoding, "Content-Type": "image/jpeg"})

    app = web.Application()
    app.router.add_get("/bomb.jpg", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    tracemalloc.start()
    try:
        async with Fetcher(FetchSettings(user_agent="p2m-test", allow_private=True, max_bytes=CAP)) as f:
            r = await asyncio.wait_for(f.get(f"http://127.0.0.1:{port}/bomb.jpg"), 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await runner.cleanup()
    assert r.body is None and r.error_kind == "too_large", r.error
    assert "decompressed body over the 1048576-byte cap" in r.error
    assert peak < 6 * CAP, f"{encoding}: peak {peak} bytes"


def test_a_zstd_frame_asking_for_a_huge_window_is_refused():
    """A frame may declare a window of gigabytes, which the decoder would allocate; RFC 9659 caps HTTP zstd at 8 MiB."""
    zstandard = pytest.importorskip("zstandard", reason="zstandard is not installed")
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)  # 128 MiB window
    writer = zstandard.ZstdCompressor(
        compression_params=params
    ).compressobj()  # size unknown: the window stays
    frame = writer.compress(b"x" * 100_000) + writer.flush()
    assert zstandard.get_frame_parameters(frame).window_size == 128 * 1024 * 1024
    with pytest.raises(DecodeError, match="corrupt zstd body: .*too much memory"):
        StreamDecoder("zstd", CAP).feed(frame)
