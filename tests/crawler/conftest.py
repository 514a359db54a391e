"""Fixtures for the crawler tests: a multi-host loopback site full of traps, and one crawl of it."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from crawl_settings import FAST, FIXTURES, SHARED, TEST_UA, A, B, C, D, E, fixture_dir  # noqa: F401
from crawl_site import (
    Site,
    delayed,
    endless,
    exif_rotated,
    gzip_bomb,
    photo,
    pixel_bomb,
    redirect,
    sequence,
    stall,
    static,
    status,
)


def truncated(data: bytes) -> bytes:
    return data[: len(data) * 6 // 10]


def corrupt(seed: int) -> bytes:
    rng = random.Random(seed)
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(rng.randrange(256) for _ in range(3000))


def build_trap_site(site: Site) -> dict[str, bytes]:
    """Fill ``site`` (5 hosts: A main, B Crawl-delay, C robots 500, D robots 404, E spare); returns key images."""
    a, b, c, d = (site.base(h) for h in (A, B, C, D))
    pa = site.ports[A]
    good1 = photo(1)
    images = {"good1": good1}
    site.add(A, "/robots.txt", "User-agent: *\nDisallow: /private/\n", "text/plain")
    site.add(
        B,
        "/robots.txt",
        "User-agent: p2m-test\nCrawl-delay: 0.3\nDisallow: /b/private/\n\nUser-agent: *\nDisallow: /\n",
        "text/plain",
    )
    site.add(C, "/robots.txt", status(500))
    site.add(D, "/robots.txt", status(404))
    site.add(
        A,
        "/index.html",
        f"""<html><head><title>Trap site</title>
<meta property="og:image" content="/img/og.jpg"><meta name="twitter:image" content="/img/tw.jpg"></head><body>
<a href="/gallery.html">g</a> <a href="/lazy.html">l</a> <a href="/malformed.html">m</a>
<a href="/private/secret.html">p</a> <a href="{b}/b/index.html">b</a> <a href="{c}/c.html">c</a>
<a href="{d}/d.html">d</a> <a href="/loop/a">loop</a> <a href="/chain/0">chain</a> <a href="/bomb.html">bomb</a>
<a href="/deep/1.html">deep</a> <a href="http://localhost:{pa}/outside.html">outside</a>
<a href="mailto:someone@example.invalid">mail</a> <a href="javascript:void(0)">js</a>
<a href="/nofollow.html" rel="nofollow">nf</a>
<a rel="license" href="https://creativecommons.org/licenses/by/4.0/">CC BY 4.0</a></body></html>""",
    )
    site.add(
        A,
        "/gallery.html",
        f"""<html><head><title>Gallery</title></head><body>
<img src="/img/good1.jpg" alt="person one">
<img src="/img/w_100,h_100/small.jpg" srcset="/img/w_100,h_100/small.jpg 100w, /img/large.jpg 800w" alt="srcset">
<picture><source srcset="/img/pic-small.jpg 300w, /img/pic-big.jpg 1200w" media="(min-width: 800px)">
<img src="/img/pic-fallback.jpg" alt="in a picture"></picture>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/img/lazy1.jpg" alt="lazy">
<noscript><img src="/img/noscript.jpg" alt="ns"></noscript>
<img src="/img/rotated.jpg"><img src="/img/tiny.png"><img src="/img/truncated.jpg"><img src="/img/corrupt.jpg">
<img src="/img/html.jpg"><img src="/img/vector.svg"><img src="{b}/img/dup-of-good1.jpg"><img src="/img/neardup.jpg">
<img src="/img/oversize.jpg"><img src="/img/oversize-chunked.jpg"><img src="/img/pixelbomb.png">
<img src="/img/ratelimited.jpg"><img src="/img/burst.jpg"><img src="/img/always500.jpg"><img src="/img/missing.jpg">
<img src="/img/noai.jpg"><img src="/img/slow.jpg"><img src="/img/stalled.jpg"><img src="/img/moved.jpg">
<img src="/img/gzip-bomb.jpg"><img src="/private/hidden.jpg"><img src="http://localhost:{pa}/img/outside.jpg">
</body></html>""",
    )
    site.add(
        A,
        "/lazy.html",
        """<html><body>
<img data-srcset="/img/ls-1x.jpg 1x, /img/ls-2x.jpg 2x" alt="density">
<img class="lazy" data-original="/img/lo.jpg" alt="original"></body></html>""",
    )
    site.add(
        A,
        "/malformed.html",
        b"""<html><body><div><p>unclosed <img src="/img/mal1.jpg" alt="broken <b>markup">
<table><tr><td><img src='/img/mal2.jpg'></div></span></i><<<>>> &bogus; \xff\xfe</body""",
    )
    for i in range(1, 4):
        site.add(A, f"/deep/{i}.html", f'<html><body><a href="/deep/{i + 1}.html">next</a></body></html>')
    site.add(A, "/nofollow.html", "<html><body>should not be fetched</body></html>")
    site.add(A, "/private/secret.html", "<html><body>secret</body></html>")
    site.add(A, "/loop/a", redirect("/loop/b"))
    site.add(A, "/loop/b", redirect("/loop/a"))
    for i in range(10):
        site.add(A, f"/chain/{i}", redirect(f"/chain/{i + 1}"))
    site.add(A, "/bomb.html", gzip_bomb(20_000_000), headers={"Content-Encoding": "gzip"})
    jpeg = "image/jpeg"
    for name, seed in (
        ("large", 2),
        ("pic-big", 3),
        ("lazy1", 4),
        ("noscript", 5),
        ("og", 6),
        ("tw", 7),
        ("ls-2x", 8),
        ("lo", 9),
        ("mal1", 10),
        ("mal2", 11),
        ("slow", 12),
        ("ratelimited", 13),
        ("burst", 14),
    ):
        images[name] = photo(seed)
    site.add(A, "/img/good1.jpg", good1, jpeg)
    for name in ("large", "pic-big", "lazy1", "noscript", "og", "tw", "ls-2x", "lo", "mal1", "mal2"):
        site.add(A, f"/img/{name}.jpg", images[name], jpeg)
    site.add(A, "/img/rotated.jpg", exif_rotated(20), jpeg)
    site.add(A, "/img/tiny.png", photo(21, 16, 16, fmt="PNG"), "image/png")
    site.add(A, "/img/truncated.jpg", truncated(photo(22, 400, 300)), jpeg)
    site.add(A, "/img/corrupt.jpg", corrupt(23), jpeg)
    site.add(A, "/img/html.jpg", "<!DOCTYPE html><html><body>not a picture</body></html>", jpeg)
    site.add(
        A,
        "/img/vector.svg",
        '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"></svg>',
        "image/svg+xml",
    )
    images["neardup"] = _reencode(good1, 60)
    site.add(A, "/img/neardup.jpg", images["neardup"], jpeg)
    site.add(A, "/img/oversize.jpg", b"\xff\xd8\xff" + os.urandom(3 * 1024 * 1024), jpeg)
    site.add(A, "/img/oversize-chunked.jpg", endless(3 * 1024 * 1024))
    site.add(A, "/img/pixelbomb.png", pixel_bomb(3000), "image/png")
    site.add(
        A,
        "/img/ratelimited.jpg",
        sequence(status(429, {"Retry-After": "1"}), static(images["ratelimited"], jpeg)),
    )
    site.add(A, "/img/burst.jpg", sequence(status(503), status(503), static(images["burst"], jpeg)))
    site.add(A, "/img/always500.jpg", status(500))
    site.add(A, "/img/noai.jpg", photo(24), jpeg, headers={"X-Robots-Tag": "noimageai"})
    site.add(A, "/img/slow.jpg", delayed(0.3, static(images["slow"], jpeg)))
    site.add(A, "/img/stalled.jpg", stall(5.0))
    site.add(A, "/img/moved.jpg", redirect(f"{b}/img/target.jpg", 301))
    site.add(A, "/img/gzip-bomb.jpg", gzip_bomb(20_000_000), jpeg, headers={"Content-Encoding": "gzip"})
    site.add(A, "/private/hidden.jpg", photo(25), jpeg)
    # B: Crawl-delay 0.3 for our token
    images.update(b1=photo(30), b2=photo(31), target=photo(32))
    site.add(
        B,
        "/b/index.html",
        """<html><body><img src="/img/b1.jpg" alt="b one"><img src="/img/b2.jpg">
<img src="/b/private/x.jpg"></body></html>""",
    )
    site.add(B, "/img/b1.jpg", images["b1"], jpeg)
    site.add(B, "/img/b2.jpg", images["b2"], jpeg)
    site.add(B, "/img/dup-of-good1.jpg", good1, jpeg)
    site.add(B, "/img/target.jpg", images["target"], jpeg)
    site.add(B, "/b/private/x.jpg", photo(33), jpeg)
    # C: robots.txt 500 -> nothing else fetched; D: robots.txt 404 -> everything allowed
    site.add(C, "/c.html", '<html><body><img src="/img/c1.jpg"></body></html>')
    site.add(C, "/img/c1.jpg", photo(40), jpeg)
    images.update(d1=photo(41), d2=photo(42, fmt="PNG"))
    site.add(
        D, "/d.html", '<html><body><img src="/img/d1.jpg"><img src="/img/d2.png" alt="png"></body></html>'
    )
    site.add(D, "/img/d1.jpg", images["d1"], jpeg)
    site.add(D, "/img/d2.png", images["d2"], "image/png")
    return images


def _reencode(jpeg: bytes, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="session")
def trap_site():
    site = Site(5).start()
    images = build_trap_site(site)
    yield site, images
    site.stop()


@pytest.fixture(scope="session")
def trap_crawl(trap_site, tmp_path_factory):
    """One crawl of the trap site, shared by the tests that assert on its outputs.

    The crawl runs in a child process, so that its CPU work (decoding, hashing) cannot delay the
    server thread and blur the request times the server records.
    """
    import pyarrow.parquet as pq

    site, images = trap_site
    out = tmp_path_factory.mktemp("trap") / "crawl"
    site.reset_log()
    run_crawl_in_child([site.url(A, "/index.html")], out, FAST)
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    stats = json.loads((out / "stats.json").read_text())
    return {
        "site": site,
        "images": images,
        "out": out,
        "stats": stats,
        "log": site.requests(),
        "rows": {r["url"]: r for r in manifest},
        "manifest": manifest,
    }


def run_crawl_in_child(seeds: list[str], out: Path, options: dict, timeout: float = 120) -> None:
    """``p2m.crawler.crawl(seeds, out, **options)`` in a fresh Python process."""
    code = (
        "import json, sys; from p2m.crawler import crawl; a = json.loads(sys.argv[1]); "
        "crawl(a['seeds'], a['out'], **a['options'])"
    )
    arg = json.dumps({"seeds": seeds, "out": str(out), "options": options})
    done = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
