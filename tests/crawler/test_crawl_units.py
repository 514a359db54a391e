"""Frontier journal, robots.txt rules, sitemaps/feeds, image checks, URL scope: the parts on their own."""

from __future__ import annotations

import gzip
import io
import random
import re

import pytest
from crawl_settings import FAST, E, fixture_dir
from crawl_site import exif_rotated, photo, pixel_bomb

from p2m.crawler import crawl
from p2m.crawler.frontier import Frontier, NewUrl
from p2m.crawler.images import ImageRejected, check_image, hamming, near_duplicate_groups, sniff_format
from p2m.crawler.robots import rules_from_response
from p2m.crawler.sitemaps import parse_sitemap_or_feed, sniff_xml_kind
from p2m.crawler.urls import Scope, UrlError, blocked_address_reason, normalize_url, registrable_domain


# -- frontier -----------------------------------------------------------------------------------
def test_enqueue_returns_false_on_duplicates_and_survives_reopen(tmp_path):
    path = tmp_path / "j.sqlite"
    f = Frontier(path)
    a = f.enqueue(
        NewUrl(normalize_url("http://H.test:80/a?b=2&a=1#x"), "http://H.test:80/a?b=2&a=1", "page", 0)
    )
    assert a is not None
    assert (
        f.enqueue(NewUrl(normalize_url("http://h.test/a?a=1&b=2"), "http://h.test/a?a=1&b=2", "page", 0))
        is None
    )
    b = f.enqueue(NewUrl("http://h.test/b.jpg", "http://h.test/b.jpg", "image", 1, "http://h.test/a"))
    f.finish(
        b,
        "done",
        "ok",
        sha256="ab" * 32,
        image={
            "sha256": "ab" * 32,
            "path": "images/ab/x.jpg",
            "width": 10,
            "height": 10,
            "format": "JPEG",
            "bytes": 3,
            "phash": "0" * 16,
            "person_score": None,
        },
    )
    f.retry_later(a, 123.0, "HTTP 503", 503)
    # no close(): as after kill -9, a second connection must see everything committed
    g = Frontier(path)
    queued = list(g.queued())
    assert [(q.url, q.attempts, q.not_before) for q in queued] == [("http://H.test:80/a?b=2&a=1", 1, 123.0)]
    assert g.counts() == {"queued": 1, "image/ok": 1, "stored_files": 1}
    assert g.image_known("ab" * 32) and g.known(normalize_url("http://h.test/b.jpg"))
    assert g.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    g.close()
    f.close()


def test_normalize_and_scope():
    assert normalize_url("HTTP://Example.COM:80/a/../b?z=1&a=2#f") == "http://example.com/b?a=2&z=1"
    assert normalize_url("https://example.com:443/") == "https://example.com/"
    with pytest.raises(UrlError, match="only http and https"):
        normalize_url("ftp://example.com/x")
    assert registrable_domain("img.news.bbc.co.uk") == "bbc.co.uk"
    assert registrable_domain("www.example.com") == "example.com"
    assert registrable_domain("127.0.0.1") == "127.0.0.1"
    s = Scope(["https://www.example.com/"], allow_domains=["cdn.test"], deny=[r"/logout"])
    assert s.why_out("https://img.example.com/a.jpg") is None
    assert s.why_out("https://a.cdn.test/x.jpg") is None
    assert "outside" in s.why_out("https://other.org/")
    assert "--deny" in s.why_out("https://www.example.com/logout")
    with pytest.raises(UrlError, match="not a valid regular expression"):
        Scope([], deny=["("])
    for addr, label in (
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("::1", "loopback"),
        ("::ffff:192.168.1.1", "private"),
    ):
        assert label in blocked_address_reason(addr)
    assert blocked_address_reason("93.184.216.34") is None


# -- robots -------------------------------------------------------------------------------------
def test_robots_status_rules_rfc9309():
    text = b"User-agent: p2m-test\nDisallow: /no/\nAllow: /no/but-yes\nCrawl-delay: 2\n\nUser-agent: *\nDisallow: /\n"
    r = rules_from_response(200, text, "", "p2m-test")
    assert r.allowed("http://h/yes") and not r.allowed("http://h/no/x") and r.allowed("http://h/no/but-yes")
    assert r.crawl_delay() == 2.0
    other = rules_from_response(200, text, "", "otherbot")
    assert not other.allowed("http://h/yes")
    for status in (401, 403, 404, 410):
        assert rules_from_response(status, None, "HTTP", "p2m-test").allowed("http://h/anything")
    for status in (429, 500, 503):
        rules = rules_from_response(status, None, "HTTP", "p2m-test")
        assert not rules.allowed("http://h/") and f"HTTP {status}" in rules.why_not()
    unreachable = rules_from_response(0, None, "timed out", "p2m-test")
    assert not unreachable.allowed("http://h/") and "unreachable (timed out)" in unreachable.why_not()
    rate = rules_from_response(200, b"User-agent: *\nRequest-rate: 1/5\n", "", "p2m-test")
    assert rate.crawl_delay() == 5.0


# -- sitemaps and feeds --------------------------------------------------------------------------
def test_trafilatura_sitemaps_and_feeds_parse():
    folder = fixture_dir("trafilatura-resources")
    plain = parse_sitemap_or_feed((folder / "sitemap.xml").read_bytes(), "http://x/")
    gz = parse_sitemap_or_feed((folder / "sitemap.xml.gz").read_bytes(), "http://x/")
    assert plain.kind == gz.kind == "urlset" and len(plain.pages) == 84 and gz.pages == plain.pages
    index = parse_sitemap_or_feed((folder / "sitemap2.xml").read_bytes(), "http://x/")
    assert index.kind == "sitemapindex" and index.sitemaps == [
        "http://www.example.com/sitemap1.xml.gz",
        "http://www.example.com/sitemap2.xml.gz",
    ]  # CDATA read too
    hreflang = parse_sitemap_or_feed((folder / "sitemap-hreflang.xml").read_bytes(), "http://x/")
    assert set(hreflang.pages) == {
        f"http://www.example.com/{p}/page.html" for p in ("english", "deutsch", "schweiz-deutsch")
    }
    atom = parse_sitemap_or_feed((folder / "feed1.atom").read_bytes(), "http://x/")
    assert atom.kind == "atom" and atom.pages == [
        "http://example.org/2003/12/13/atom03",
        "http://example.org/1000",
    ]
    rss = parse_sitemap_or_feed((folder / "feed2.rss").read_bytes(), "http://x/")
    assert rss.kind == "rss" and rss.pages == ["http://www.example.com/blog/post/1"]
    assert sniff_xml_kind((folder / "sitemap.xml.gz").read_bytes()) == "sitemap"
    assert sniff_xml_kind((folder / "feed2.rss").read_bytes()) == "feed"


def test_image_sitemap_and_xxe_safety():
    xml = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
    <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
    <url><loc>http://h/p&e;</loc><image:image><image:loc>http://h/i.jpg</image:loc>
    <image:caption>A person</image:caption></image:image></url></urlset>"""
    found = parse_sitemap_or_feed(xml, "http://h/")
    assert found.images == [("http://h/i.jpg", "A person")]
    assert all("root:" not in p for p in found.pages)


def test_crawl_from_a_sitemap_index_and_feeds_over_loopback(trap_site, tmp_path):
    folder = fixture_dir("trafilatura-resources")
    site, _ = trap_site
    base = site.base(E)

    def local(name: str) -> bytes:
        text = (folder / name).read_text()
        for host in ("https://www.sitemaps.org", "http://www.example.com", "http://example.org"):
            text = text.replace(host, base)
        return text.encode()

    site.add(E, "/sitemap2.xml", local("sitemap2.xml"), "application/xml")
    site.add(E, "/sitemap1.xml.gz", gzip.compress(local("sitemap.xml")), "application/gzip")
    site.add(E, "/sitemap2.xml.gz", gzip.compress(local("sitemap-hreflang.xml")), "application/octet-stream")
    site.add(E, "/feed1.atom", local("feed1.atom"), "application/atom+xml")
    site.add(E, "/feed2.rss", local("feed2.rss"), "application/rss+xml")
    site.reset_log()
    seeds = [site.url(E, p) for p in ("/sitemap2.xml", "/feed1.atom", "/feed2.rss")]
    crawl(seeds, tmp_path / "c", **{**FAST, "delay": 0.0, "per_host": 4})
    requested = [r.path for r in site.requests(E)]
    pages = {
        re.sub(r"^https://www.sitemaps.org", "", u)
        for u in parse_sitemap_or_feed((folder / "sitemap.xml").read_bytes(), "http://x/").pages
    }
    expected = pages | {
        "/english/page.html",
        "/deutsch/page.html",
        "/schweiz-deutsch/page.html",
        "/2003/12/13/atom03",
        "/1000",
        "/blog/post/1",
        "/sitemap1.xml.gz",
        "/sitemap2.xml.gz",
    }
    assert expected <= set(requested)
    assert len(requested) == len(set(requested))  # nothing fetched twice


# -- images -------------------------------------------------------------------------------------
def test_image_checks():
    ok = check_image(photo(1), min_size=32)
    assert (ok.width, ok.height, ok.format, ok.ext) == (160, 120, "JPEG", "jpg") and len(ok.phash) == 16
    assert ok.preview.shape == (120, 160, 3) and not ok.rotated
    rot = check_image(exif_rotated(2), min_size=32)
    assert rot.rotated and (rot.width, rot.height) == (120, 200) and rot.data != exif_rotated(2)
    with pytest.raises(ImageRejected, match="pixel cap") as exc:
        check_image(pixel_bomb(3000), max_pixels=1_000_000)
    assert exc.value.key == "too_many_pixels"
    with pytest.raises(ImageRejected, match="not an image: HTML served as image/png"):
        check_image(b"<html><body>hi</body></html>", declared_type="image/png")
    assert sniff_format(b"RIFF\0\0\0\0WEBPVP8 ") == "WEBP" and sniff_format(b"GIF89a...") == "GIF"
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (100, 80), "red").save(buf, "GIF")
    assert check_image(buf.getvalue(), min_size=32).format == "GIF"


def test_near_duplicate_groups():
    a, b, c = (check_image(photo(s), min_size=8).phash for s in (1, 2, 3))
    near = check_image(_jpeg_again(photo(1), 50), min_size=8).phash
    assert hamming(a, near) <= 6 < hamming(a, b)
    assert near_duplicate_groups([a, b, near, c], 6) == [0, 1, 0, 3]
    assert near_duplicate_groups(["0" * 16, "0" * 15 + "3", "f" * 16], 1) == [0, 1, 2]
    assert near_duplicate_groups(["0" * 16, "0" * 15 + "3", "f" * 16], 2) == [0, 0, 2]


def _jpeg_again(data: bytes, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_near_duplicate_groups_match_all_pairs_comparison():
    rng = random.Random(1)
    base = [rng.getrandbits(64) for _ in range(60)]
    values = []
    for _ in range(300):  # clusters of hashes a few flipped bits apart, chained transitively
        v = rng.choice(base)
        for _ in range(rng.randrange(0, 9)):
            v ^= 1 << rng.randrange(64)
        values.append(v)
    for d in (0, 3, 6, 10):
        parent = list(range(len(values)))

        def find(i: int, parent: list[int] = parent) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        for i in range(len(values)):
            for j in range(i + 1, len(values)):
                if bin(values[i] ^ values[j]).count("1") <= d and find(i) != find(j):
                    ri, rj = find(i), find(j)
                    parent[max(ri, rj)] = min(ri, rj)
        expected = [find(i) for i in range(len(values))]
        assert near_duplicate_groups([f"{v:016x}" for v in values], d) == expected, d
