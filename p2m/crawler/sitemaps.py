"""Seed discovery from sitemaps (urlset, index, image sitemaps, .gz) and RSS/Atom feeds."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from urllib.parse import urljoin

from lxml import etree

from p2m.crawler.decode import BodyTooLarge, DecodeError, StreamDecoder

_PARSER_OPTS = {"resolve_entities": False, "no_network": True, "huge_tree": False, "recover": True}


@dataclass
class Discovered:
    """URLs listed by a sitemap or feed.

    Attributes:
        kind: ``urlset``, ``sitemapindex``, ``rss``, ``atom`` or ``unknown``.
        pages: page URLs (``<url><loc>``, feed item links, hreflang alternates).
        sitemaps: child sitemaps (``<sitemap><loc>``).
        images: ``(url, caption)`` from image sitemaps, RSS enclosures and media:content.
    """

    kind: str
    pages: list[str] = field(default_factory=list)
    sitemaps: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)


def gunzip_capped(data: bytes, max_bytes: int) -> bytes:
    """Decompress a gzip file (e.g. ``sitemap.xml.gz``) without producing more than ``max_bytes``.

    Raises:
        BodyTooLarge: the content is bigger than the cap.
        DecodeError: corrupt or truncated gzip.
    """
    decoder = StreamDecoder("gzip", max_bytes)
    out = decoder.feed(data)
    decoder.finish()
    return out


def sniff_xml_kind(body: bytes) -> str | None:
    """``sitemap`` or ``feed`` when the start of ``body`` looks like one, else None (gzip is looked inside)."""
    head = body[:2048]
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body[:4096], 2048)
        except zlib.error:
            return None
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<"):
        return None
    lowered = head.lower()
    if b"<urlset" in lowered or b"<sitemapindex" in lowered:
        return "sitemap"
    if b"<rss" in lowered or b"<feed" in lowered or b"<rdf:rdf" in lowered:
        return "feed"
    return None


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def parse_sitemap_or_feed(body: bytes, url: str, max_bytes: int = 50 * 1024 * 1024) -> Discovered:
    """Read a sitemap, sitemap index, RSS or Atom document (gzip-compressed or not).

    Args:
        body: the document bytes (a ``.gz`` body is decompressed under ``max_bytes``).
        url: its URL, to resolve relative links.
        max_bytes: cap on the decompressed size (the sitemap protocol allows 50 MB).

    Raises:
        DecodeError, BodyTooLarge: from a bad or too large gzip body.
    """
    if body[:2] == b"\x1f\x8b":
        body = gunzip_capped(body, max_bytes)
    parser = etree.XMLParser(**_PARSER_OPTS)
    try:
        root = etree.fromstring(body.lstrip(), parser)
    except etree.XMLSyntaxError as exc:
        raise DecodeError(f"not well-formed XML: {exc}") from exc
    if root is None:
        return Discovered("unknown")
    kind = _local(root.tag)
    out = Discovered(
        {"urlset": "urlset", "sitemapindex": "sitemapindex", "rss": "rss", "feed": "atom", "rdf": "rss"}.get(
            kind, "unknown"
        )
    )

    def absolute(raw: str | None) -> str | None:
        raw = (raw or "").strip()
        if not raw:
            return None
        full = urljoin(url, raw)
        return full if full.startswith(("http://", "https://")) else None

    if out.kind in ("urlset", "sitemapindex"):
        for entry in root:
            name = _local(entry.tag)
            loc = next((c for c in entry if _local(c.tag) == "loc"), None)
            target = absolute(loc.text if loc is not None else None)
            if name == "sitemap" and target:
                out.sitemaps.append(target)
            elif name == "url":
                if target:
                    out.pages.append(target)
                for child in entry:
                    cname = _local(child.tag)
                    if cname == "link" and child.get("rel") == "alternate":
                        alt = absolute(child.get("href"))
                        if alt:
                            out.pages.append(alt)
                    elif cname == "image":
                        iloc = next((c for c in child if _local(c.tag) == "loc"), None)
                        cap = next((c for c in child if _local(c.tag) in ("caption", "title")), None)
                        img = absolute(iloc.text if iloc is not None else None)
                        if img:
                            out.images.append((img, (cap.text or "").strip() if cap is not None else ""))
    elif out.kind in ("rss", "atom"):
        items = [e for e in root.iter() if _local(e.tag) in ("item", "entry")]
        for item in items:
            links = [c for c in item if _local(c.tag) == "link"]
            chosen = None
            for link in links:  # Atom: <link href rel>; RSS: <link>text</link>
                href = link.get("href") or link.text
                if link.get("rel") in (None, "alternate") and absolute(href):
                    chosen = absolute(href)
                    break
            if chosen is None and links:
                chosen = absolute(links[0].get("href") or links[0].text)
            if chosen:
                out.pages.append(chosen)
            title = next((c.text for c in item if _local(c.tag) == "title"), "") or ""
            for c in item.iter():
                cname = _local(c.tag)
                ctype = (c.get("type") or "").lower()
                if cname in ("enclosure", "content", "thumbnail") and (
                    ctype.startswith("image/") or cname == "thumbnail" or c.get("medium") == "image"
                ):
                    img = absolute(c.get("url") or c.get("href"))
                    if img:
                        out.images.append((img, title.strip()))
    out.pages = list(dict.fromkeys(out.pages))
    out.sitemaps = list(dict.fromkeys(out.sitemaps))
    return out


__all__ = [
    "BodyTooLarge",
    "DecodeError",
    "Discovered",
    "gunzip_capped",
    "parse_sitemap_or_feed",
    "sniff_xml_kind",
]
