"""HTML parsing: generated edge cases, and real saved pages (mozilla/readability fixtures) served from loopback."""

from __future__ import annotations

import asyncio
import re

import pytest
from bs4 import BeautifulSoup
from crawl_settings import TEST_UA, E, fixture_dir

from p2m.crawler.fetch import Fetcher, FetchSettings
from p2m.crawler.parse import largest_srcset, parse_html, parse_srcset

PAGE = "http://h.test/dir/page.html"


def test_srcset_parsing_keeps_commas_inside_urls():
    cands = parse_srcset("/img/w_300,h_200/a.jpg 300w, /img/w_900,h_600/a.jpg 900w,/b.jpg 50w")
    assert [c[0] for c in cands] == ["/img/w_300,h_200/a.jpg", "/img/w_900,h_600/a.jpg", "/b.jpg"]
    assert largest_srcset("a.jpg 1x, b.jpg 2x, c.jpg 1.5x") == "b.jpg"
    assert largest_srcset("a.jpg, b.jpg 3x") == "b.jpg"
    assert largest_srcset("small.jpg 320w, big.jpg 1280w, mid.jpg 640w") == "big.jpg"
    assert largest_srcset("data:image/gif;base64,AAAA 1x") is None


def test_generated_page_every_image_source():
    html = """<html><head><base href="/base/"><title>T</title>
    <meta property="og:image" content="https://cdn.test/og.jpg"><meta property="og:image:alt" content="og alt">
    <meta name="twitter:image" content="tw.jpg"><meta name="robots" content="noimageai">
    <link rel="license" href="https://creativecommons.org/licenses/by-sa/4.0/"></head><body>
    <img src="a.jpg" alt="  Alt   text ">
    <img src="data:image/png;base64,iVBOR" data-src="lazy.jpg">
    <img data-lazy-src="lazy2.jpg"><img srcset="s.jpg 100w, l.jpg 900w" src="s.jpg">
    <picture><source type="image/webp" srcset="p-300.webp 300w, p-1200.webp 1200w"><img src="p.jpg" alt="pic"></picture>
    <noscript><img src="ns.jpg"></noscript>
    <script>var s = "<img src=\\"script.jpg\\">";</script>
    <a href="next.html#frag">n</a><a href="javascript:alert(1)">x</a><a href="#top">t</a>
    <a href="mailto:a@b.c">m</a><a href="skip.html" rel="nofollow">s</a><a href="/abs.html">a</a>
    </body></html>"""
    page = parse_html(html.encode(), PAGE)
    urls = [i.url for i in page.images]
    base = "http://h.test/base/"
    assert urls == [
        "https://cdn.test/og.jpg",
        base + "tw.jpg",
        base + "a.jpg",
        base + "lazy.jpg",
        base + "lazy2.jpg",
        base + "l.jpg",
        base + "p-1200.webp",
        base + "ns.jpg",
    ]
    assert page.images[0].alt == "og alt" and page.images[2].alt == "Alt text"
    assert page.images[6].alt == "pic" and page.images[6].source == "picture"
    assert page.links == [base + "next.html", "http://h.test/abs.html"]
    assert page.license == "https://creativecommons.org/licenses/by-sa/4.0/"
    assert "noimageai" in page.robots and page.title == "T"


def test_malformed_and_non_utf8_html():
    page = parse_html(
        b"<html><body><p><img src='x.jpg' alt=\"caf\xe9\"><div><<<</span></i>&bogus;<img src=y.png",
        PAGE,
        encoding="latin-1",
    )
    assert [i.url for i in page.images] == ["http://h.test/dir/x.jpg"]
    assert page.images[0].alt == "café"
    assert parse_html(b"", PAGE).images == []


# -- real pages -----------------------------------------------------------------------------------
def _serve_and_parse(site, folder, name):
    """Serve source.html at /test/page.html on loopback, fetch it like the crawler, parse it."""
    site.add(E, "/test/page.html", (folder / name / "source.html").read_bytes(), "text/html")
    url = site.url(E, "/test/page.html")

    async def get():
        async with Fetcher(FetchSettings(user_agent=TEST_UA, allow_private=True)) as f:
            return await f.get(url)

    resp = asyncio.run(get())
    assert resp.error == "" and resp.status == 200
    return parse_html(resp.body, url), site.base(E)


@pytest.fixture(scope="module")
def pages(trap_site):
    return trap_site[0], fixture_dir("readability-pages")


@pytest.mark.parametrize("name", ["base-url", "base-url-base-element", "base-url-base-element-relative"])
def test_base_href_resolution_matches_readability_expected(pages, name):
    site, folder = pages
    page, host = _serve_and_parse(site, folder, name)
    expected_html = (folder / name / "expected.html").read_text()
    expected = {
        src.replace("http://fakehost", host) for src in re.findall(r'<img src="([^"]+)"', expected_html)
    }
    assert {i.url for i in page.images} == expected


def _soup(folder, name):
    return BeautifulSoup((folder / name / "source.html").read_bytes(), "html.parser")


def test_data_uri_placeholders_are_never_candidates(pages):
    site, folder = pages
    page, _ = _serve_and_parse(site, folder, "data-url-image")
    assert page.images and not any(i.url.startswith("data:") for i in page.images)
    assert all(i.url.startswith("http") for i in page.images)


def test_lazy_data_src_only(pages):
    site, folder = pages
    page, _ = _serve_and_parse(site, folder, "lazy-image-3")
    assert [i.url.rsplit(".", 1)[1] for i in page.images] == ["jpg", "png"]
    assert all(i.alt == "performance.jpg" for i in page.images)
    for name in ("herald-sun-1", "article-author-tag"):
        page, _ = _serve_and_parse(site, folder, name)
        found = {i.url for i in page.images}
        wanted = {
            img["data-src"]
            for img in _soup(folder, name).find_all("img", attrs={"data-src": True})
            if img["data-src"].startswith("http") and not img.get("srcset") and not img.get("data-srcset")
        }
        assert wanted and wanted <= found, (name, wanted - found)


def test_lazy_srcset_on_every_image(pages):
    site, folder = pages
    page, _ = _serve_and_parse(site, folder, "lazy-image-2")
    found = {i.url for i in page.images}
    for img in _soup(folder, "lazy-image-2").find_all("img", attrs={"data-srcset": True}):
        cands = [c.strip().rsplit(" ", 1) for c in img["data-srcset"].split(", ") if c.strip()]
        biggest = max(cands, key=lambda c: float(c[1].rstrip("wx")))[0]
        assert biggest in found


def test_noscript_fallbacks_are_found(pages):
    site, folder = pages
    page, _ = _serve_and_parse(site, folder, "lazy-image-1")
    found = {i.url for i in page.images}
    fallback = set()
    for ns in _soup(folder, "lazy-image-1").find_all("noscript"):
        fallback |= set(re.findall(r'<img[^>]+src="(https?://[^"]+)"', ns.decode_contents()))
    assert fallback and fallback <= found


def test_picture_sources_pick_the_widest(pages):
    site, folder = pages
    page, _ = _serve_and_parse(site, folder, "guardian-1")
    found = {i.url for i in page.images if i.source == "picture"}
    pictures = _soup(folder, "guardian-1").find_all("picture")
    assert len(pictures) == 17
    for pic in pictures:
        cands = []
        for source in pic.find_all("source"):
            cands += [c.strip().rsplit(" ", 1) for c in source["srcset"].split(", ") if c.strip()]
        cands = [c for c in cands if len(c) == 2 and c[1].endswith("w")]
        if not cands:
            continue
        biggest = max(cands, key=lambda c: float(c[1].rstrip("w")))[0].replace("&amp;", "&")
        assert biggest in found


def test_site_relative_urls_resolve_to_the_serving_host(pages):
    site, folder = pages
    page, host = _serve_and_parse(site, folder, "telegraph")
    local = [i.url for i in page.images if i.url.startswith(host + "/content/dam/")]
    assert len(local) >= 5


def test_urls_inside_scripts_and_non_image_data_src_are_ignored(pages):
    site, folder = pages
    page, _ = _serve_and_parse(site, folder, "aktualne")
    assert page.images and not any("\\" in i.url or '"' in i.url for i in page.images)
    page, _ = _serve_and_parse(site, folder, "bbc-1")
    div_data_src = {d["data-src"] for d in _soup(folder, "bbc-1").find_all("div", attrs={"data-src": True})}
    assert div_data_src and not div_data_src & {i.url for i in page.images}


@pytest.mark.parametrize("name", ["tmz-1", "citylab-1", "guardian-1", "lazy-image-2", "telegraph"])
def test_every_img_gives_at_most_one_candidate_and_og_first(pages, name):
    site, folder = pages
    page, _ = _serve_and_parse(site, folder, name)
    soup = _soup(folder, name)
    n_img = len(soup.find_all("img")) + len(soup.find_all("meta", property=re.compile("^og:image")))
    assert 0 < len(page.images) <= n_img + 4
    og = soup.find("meta", property="og:image")
    if og is not None:
        assert page.images[0].source == "og"
