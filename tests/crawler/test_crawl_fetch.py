"""Fetcher: Content-Encoding handling, decompression bombs under a memory bound, Retry-After, X-Robots-Tag."""

from __future__ import annotations

import asyncio
import gzip
import time
import tracemalloc
import zlib
from email.utils import formatdate

import pytest
from crawl_settings import TEST_UA, E, fixture_dir
from crawl_site import static

from p2m.crawler.decode import BodyTooLarge, DecodeError, StreamDecoder, accept_encoding
from p2m.crawler.fetch import Fetcher, FetchSettings, parse_retry_after, x_robots_block

CAP = 1024 * 1024
ENCODINGS = {
    "html-gzip.bin": "gzip",
    "html-rawdeflate.bin": "deflate",
    "html-zlibdeflate.bin": "deflate",
    "html-gzip-deflate.bin": "gzip, deflate",
    "html-gzip-deflate-gzip.bin": "gzip, deflate, gzip",
    "html-br.bin": "br",
    "html-zstd-static-content-size.bin": "zstd",
    "bomb-gzip.bin": "gzip",
    "bomb-deflate.bin": "deflate",
    "bomb-br.bin": "br",
    "bomb-zstd.bin": "zstd",
    "truncated-crc-error.gz": "gzip",
    "unexpected-eof.gz": "gzip",
}


def fetch_all(site, paths, **settings):
    async def run():
        s = FetchSettings(user_agent=TEST_UA, allow_private=True, **settings)
        async with Fetcher(s) as f:
            return [await f.get(site.url(E, p)) for p in paths]

    return asyncio.run(run())


@pytest.fixture(scope="module")
def compressed(trap_site):
    folder = fixture_dir("scrapy-compressed")
    site, _ = trap_site
    for name, enc in ENCODINGS.items():
        site.add(E, f"/z/{name}", (folder / name).read_bytes(), "text/html", {"Content-Encoding": enc})
    return site, folder


def test_scrapy_html_fixtures_decode_to_the_page(compressed):
    site, folder = compressed
    names = [
        "html-gzip.bin",
        "html-rawdeflate.bin",
        "html-zlibdeflate.bin",
        "html-gzip-deflate.bin",
        "html-gzip-deflate-gzip.bin",
    ]
    responses = fetch_all(site, [f"/z/{n}" for n in names], max_bytes=CAP)
    reference = gzip.decompress((folder / "html-gzip.bin").read_bytes())
    assert reference.lstrip().lower().startswith(b"<!doctype html") or b"<html" in reference[:500].lower()
    for name, r in zip(names, responses):
        assert r.error == "", (name, r.error)
        # the same German test page, which names its own encoding: same frame, near-identical length
        assert r.body[:60] == reference[:60] and r.body.endswith(b"</html>\n"), name
        assert abs(len(r.body) - len(reference)) < 16, name


@pytest.mark.parametrize("name", ["bomb-gzip.bin", "bomb-deflate.bin", "bomb-br.bin", "bomb-zstd.bin"])
def test_scrapy_bombs_stop_at_the_cap_with_bounded_memory(compressed, name):
    site, _ = compressed
    tracemalloc.start()
    try:
        (r,) = fetch_all(site, [f"/z/{name}"], max_bytes=CAP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.body is None and r.error
    if "br" in name and "br" not in accept_encoding() or "zstd" in name and "zstd" not in accept_encoding():
        assert "unsupported Content-Encoding" in r.error  # never advertised, never decoded
    else:
        assert r.error_kind == "too_large" and "decompressed body over the 1048576-byte cap" in r.error
    assert peak < 6 * CAP, f"peak {peak} bytes while the bomb expands to 11,511,612"


def test_decoder_alone_bounds_output():
    bomb = gzip.compress(b"\0" * 50_000_000)
    d = StreamDecoder("gzip", 100_000)
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            for i in range(0, len(bomb), 4096):
                d.feed(bomb[i : i + 4096])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert d.total <= 100_000 and peak < 1_000_000


def test_truncated_gzip_is_an_error_not_a_crash(compressed):
    site, _ = compressed
    for r in fetch_all(site, ["/z/truncated-crc-error.gz", "/z/unexpected-eof.gz"], max_bytes=CAP):
        assert r.error_kind == "bad_encoding" and ("truncated" in r.error or "corrupt" in r.error), r.error
        assert r.body  # what was decoded before the damage is kept for pages


def test_multi_member_gzip_and_unknown_encoding():
    data = gzip.compress(b"hello ") + gzip.compress(b"world")
    d = StreamDecoder("gzip", 1000)
    assert d.feed(data) == b"hello world"
    d.finish()
    with pytest.raises(DecodeError, match="unsupported Content-Encoding 'compress'"):
        StreamDecoder("compress", 1000)
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = raw.compress(b"x" * 100) + raw.flush()
    assert StreamDecoder("deflate", 1000).feed(body) == b"x" * 100


def test_retry_after_parsing():
    assert parse_retry_after("7") == 7.0
    now = time.time()
    assert 55 <= parse_retry_after(formatdate(now + 60, usegmt=True), now=now) <= 61
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_x_robots_tag_parsing():
    d = ("noai", "noimageai", "noindex")
    assert x_robots_block(["noimageai"], "p2m-test", d) == "noimageai"
    assert x_robots_block(["nofollow, NoIndex"], "p2m-test", d) == "noindex"
    assert x_robots_block(["otherbot: noai"], "p2m-test", d) is None  # scoped to another crawler
    assert x_robots_block(["p2m-test: noai"], "p2m-test", d) == "noai"
    assert x_robots_block(["nofollow"], "p2m-test", d) is None


def test_user_agent_and_size_header_check(trap_site):
    site, _ = trap_site
    site.add(E, "/ua.txt", static(b"x" * 5000, "text/plain"))
    site.reset_log()
    (r,) = fetch_all(site, ["/ua.txt"], max_bytes=4096)
    assert r.error_kind == "too_large" and "Content-Length 5000" in r.error
    (req,) = site.requests(E, "/ua.txt")
    assert req.user_agent == TEST_UA
