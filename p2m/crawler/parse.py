"""Pure HTML parsing with BeautifulSoup: image candidates, links, licence and robots meta; no network."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin

from bs4 import BeautifulSoup, Tag

from p2m.crawler.urls import skip_scheme

# Attributes that lazy-loading scripts use for the real image URL, most specific first.
LAZY_SRC_ATTRS = (
    "data-src",
    "data-original",
    "data-lazy-src",
    "data-lazy",
    "data-url",
    "data-hi-res-src",
    "data-full-src",
    "data-large-file",
    "data-orig-file",
    "data-echo",
    "data-img-src",
    "data-image",
)
LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset", "data-original-set")
META_IMAGE_KEYS = ("og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src")
_CC_RE = re.compile(r"creativecommons\.org/(licenses|publicdomain)/", re.I)
_WS = re.compile(r"\s+")


@dataclass
class ImageRef:
    """An image found on a page: absolute URL, alt text and where it was found (``img``, ``picture``, ``og``...)."""

    url: str
    alt: str = ""
    source: str = "img"


@dataclass
class Page:
    """What a page offers the crawler.

    Attributes:
        url: the page URL.
        base: the URL relative links resolve against (``<base href>`` or the page URL).
        images: image candidates in document order, one per ``img``/``picture``/meta tag, no duplicates.
        links: absolute URLs of ``a``/``area`` links to follow (no fragments, no ``rel=nofollow``).
        license: licence URL (``rel=license`` or a Creative Commons link), '' when none.
        robots: directives from ``<meta name="robots">`` (``nofollow``, ``noimageai``...).
        title: the page title.
    """

    url: str
    base: str
    images: list[ImageRef] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    license: str = ""
    robots: set[str] = field(default_factory=set)
    title: str = ""


def parse_srcset(value: str) -> list[tuple[str, float, str]]:
    """Split a ``srcset`` into ``(url, size, unit)`` candidates, following the HTML parsing algorithm.

    ``unit`` is ``w`` (width descriptor), ``x`` (pixel density; no descriptor means ``1x``). URLs
    may contain commas (``.../w_300,h_200/a.jpg 300w``): a URL runs until whitespace.
    """
    out: list[tuple[str, float, str]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        if i >= n:
            break
        j = i
        while j < n and not value[j].isspace():
            j += 1
        url = value[i:j]
        i = j
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            depth = 0
            k = i
            while k < n:
                ch = value[k]
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth = max(0, depth - 1)
                elif ch == "," and depth == 0:
                    break
                k += 1
            descriptor = value[i:k].strip()
            i = k + 1
        if not url:
            continue
        size, unit = 1.0, "x"
        for token in descriptor.split():
            token = token.lower()
            try:
                if token.endswith("w"):
                    size, unit = float(token[:-1]), "w"
                elif token.endswith("x"):
                    size, unit = float(token[:-1]), "x"
            except ValueError:
                continue
        out.append((url, size, unit))
    return out


def largest_srcset(value: str) -> str | None:
    """The largest candidate of a ``srcset`` (widest ``w``, else densest ``x``), or None."""
    cands = [c for c in parse_srcset(value) if not skip_scheme(c[0])]
    if not cands:
        return None
    with_w = [c for c in cands if c[2] == "w"]
    pool = with_w or cands
    return max(enumerate(pool), key=lambda t: (t[1][1], -t[0]))[1][0]


def _attr(tag: Tag, name: str) -> str:
    value = tag.get(name)
    if isinstance(value, list):
        value = " ".join(value)
    return (value or "").strip()


def _best_of(tag: Tag) -> str | None:
    """The best URL an ``img`` or ``source`` offers: largest (lazy) srcset, lazy src, then src."""
    for name in (*LAZY_SRCSET_ATTRS, "srcset"):
        value = _attr(tag, name)
        if value:
            best = largest_srcset(value)
            if best:
                return best
    for name in (*LAZY_SRC_ATTRS, "src"):
        value = _attr(tag, name)
        if value and not skip_scheme(value):
            return value
    return None


def _srcset_width(tag: Tag) -> float:
    for name in (*LAZY_SRCSET_ATTRS, "srcset"):
        cands = [c for c in parse_srcset(_attr(tag, name)) if c[2] == "w"]
        if cands:
            return max(c[1] for c in cands)
    return 0.0


def parse_html(body: bytes | str, url: str, encoding: str | None = None) -> Page:
    """Parse one HTML page.

    Args:
        body: the page (bytes are decoded by BeautifulSoup, with ``encoding`` as a hint).
        url: the page URL, for resolving relative links.
        encoding: charset from the Content-Type header, if any.

    Returns:
        A :class:`Page`. ``data:`` URIs, ``javascript:`` links and fragments are dropped;
        URLs inside scripts are never read.
    """
    if isinstance(body, bytes) and encoding:  # the HTTP charset wins over <meta charset> (HTML spec)
        try:
            body = body.decode(encoding, errors="replace")
        except LookupError:  # an unknown charset name: let BeautifulSoup guess
            pass
    if isinstance(body, bytes):
        soup = BeautifulSoup(body, "lxml")
    else:
        soup = BeautifulSoup(body, "lxml")
    base = url
    base_tag = soup.find("base", href=True)
    if isinstance(base_tag, Tag):
        base = urljoin(url, _attr(base_tag, "href"))
    page = Page(url=url, base=base)
    title = soup.find("title")
    page.title = _WS.sub(" ", title.get_text()).strip() if isinstance(title, Tag) else ""

    # noscript fallbacks: lxml parses their content as tags, except where it kept them as text.
    for ns in soup.find_all("noscript"):
        text = ns.string
        if text and "<img" in text:
            ns.replace_with(BeautifulSoup(text, "lxml").body or "")

    seen: set[str] = set()

    def add_image(raw: str | None, alt: str, source: str) -> None:
        if not raw or skip_scheme(raw):
            return
        absolute = _resolve(base, raw)
        if absolute and absolute not in seen:
            seen.add(absolute)
            page.images.append(ImageRef(absolute, _WS.sub(" ", alt).strip(), source))

    for meta in soup.find_all("meta"):
        key = (_attr(meta, "property") or _attr(meta, "name")).lower()
        if key == "robots":
            page.robots |= {d.strip().lower() for d in _attr(meta, "content").split(",") if d.strip()}
    for meta in soup.find_all("meta"):
        key = (_attr(meta, "property") or _attr(meta, "name")).lower()
        if key in META_IMAGE_KEYS:
            alt_meta = soup.find("meta", attrs={"property": key.split(":")[0] + ":image:alt"})
            alt = _attr(alt_meta, "content") if isinstance(alt_meta, Tag) else page.title
            add_image(_attr(meta, "content"), alt, key.split(":")[0])
    for link in soup.find_all("link"):
        rels = {r.lower() for r in (link.get("rel") or [])}
        if "image_src" in rels:
            add_image(_attr(link, "href"), page.title, "link")

    for img in soup.find_all(["img", "picture"]):
        if img.name == "picture":
            options = [t for t in img.find_all(["source", "img"])]
            best = max(options, key=_srcset_width, default=None) if options else None
            inner = img.find("img")
            alt = _attr(inner, "alt") if isinstance(inner, Tag) else ""
            if best is not None:
                add_image(_best_of(best), alt, "picture")
            continue
        if img.find_parent("picture") is not None:
            continue
        add_image(_best_of(img), _attr(img, "alt"), "img")

    license_rel, license_cc = "", ""
    for a in soup.find_all(["a", "area", "link"], href=True):
        rels = {r.lower() for r in (a.get("rel") or [])}
        href = _attr(a, "href")
        if "license" in rels and not license_rel:
            license_rel = _resolve(base, href) or ""
        elif _CC_RE.search(href) and not license_cc:
            license_cc = _resolve(base, href) or ""
        if a.name == "link" or "nofollow" in rels or skip_scheme(href):
            continue
        absolute = _resolve(base, href)
        if absolute:
            page.links.append(absolute)
    page.license = license_rel or license_cc
    page.links = list(dict.fromkeys(page.links))
    return page


def _resolve(base: str, raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        absolute = urljoin(base, raw)
    except ValueError:
        return None
    absolute = absolute.split("#", 1)[0]
    return absolute if absolute.lower().startswith(("http://", "https://")) else None
