"""The demo's local website: pages of people on several loopback "hosts", served by aiohttp from a background thread.

Each host is one port on 127.0.0.1 (the crawler keeps a politeness slot per ``scheme://host:port``, so ports act
as hosts). Nothing listens beyond loopback. Files live in memory; every request is logged so the demo can show
that the crawler obeyed robots.txt (no request ever reaches a disallowed path).

The site (:func:`build_site`) has three hosts:

- ``www``: an index page, gallery pages whose ``<img srcset>`` point at the ``cdn`` host, an about page that only
  the sitemap lists, a too-small logo, a ``/private/`` area that robots.txt disallows, ``sitemap.xml``;
- ``cdn``: the gallery's JPEGs in two sizes (the ``srcset`` candidates);
- ``blog``: posts with ``<picture><source srcset>``, a copy of a gallery picture under another URL (same bytes),
  a picture sent with ``X-Robots-Tag: noimageai``, and a ``/drafts/`` area that robots.txt disallows.
"""

from __future__ import annotations

import asyncio
import html
import io
import logging
import socket
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p2m.errors import P2MError

logger = logging.getLogger(__name__)

#: Paths that robots.txt disallows, per host label.
DISALLOWED = {"www": "/private/", "blog": "/drafts/"}
CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"


@dataclass
class Resource:
    """One file of the site: bytes, content type and extra response headers."""

    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class LocalSite:
    """In-memory files served on 127.0.0.1, one port per host label, from a thread with its own event loop.

    The ports are bound at construction (so page text can hold absolute cross-host URLs before serving starts).
    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        labels: host labels, e.g. ``("www", "cdn", "blog")``.
    """

    def __init__(self, labels: Sequence[str]) -> None:
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"host labels {list(labels)}: expected distinct names")
        self.socks: dict[str, socket.socket] = {}
        try:
            for label in labels:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", 0))
                sock.listen(64)
                sock.setblocking(False)
                self.socks[label] = sock
        except OSError as exc:
            self._close_sockets()
            raise P2MError(f"cannot open a port on 127.0.0.1 for the demo site: {exc}") from exc
        self.bases = {label: f"http://127.0.0.1:{s.getsockname()[1]}" for label, s in self.socks.items()}
        self.files: dict[str, dict[str, Resource]] = {label: {} for label in labels}
        #: (host label, path, status) of every request served.
        self.requests: list[tuple[str, str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ---------------------------------------------------------------- content
    def add(self, label: str, path: str, body: bytes | str, content_type: str, **headers: str) -> str:
        """Serve ``body`` at ``path`` on host ``label``; returns the absolute URL."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.files[label][path] = Resource(data, content_type, dict(headers))
        return self.url(label, path)

    def url(self, label: str, path: str) -> str:
        """Absolute URL of ``path`` on host ``label``."""
        return self.bases[label] + path

    def request_counts(self) -> Counter:
        """Requests served per ``label/status``."""
        return Counter(f"{label}/{status}" for label, _, status in self.requests)

    def disallowed_requests(self) -> list[str]:
        """Requests that reached a path robots.txt disallows (a polite crawler makes none)."""
        return [
            f"{self.bases[label]}{path}"
            for label, path, _ in self.requests
            if label in DISALLOWED and path.startswith(DISALLOWED[label])
        ]

    # ---------------------------------------------------------------- serving
    def start(self) -> LocalSite:
        """Start serving in a daemon thread; returns once every port accepts connections."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._serve, name="p2m-demo-site", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise P2MError("the demo site did not start within 30 s")
        if self._error is not None:
            raise P2MError(f"the demo site could not start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Stop serving and close the ports (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._thread = None
        self._close_sockets()

    def __enter__(self) -> LocalSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_sockets(self) -> None:
        for sock in self.socks.values():
            try:
                sock.close()
            except OSError:
                pass

    def _handler(self, label: str):
        from aiohttp import web

        async def handle(request: web.Request) -> web.StreamResponse:
            res = self.files[label].get(request.path)
            status = 200 if res is not None else 404
            self.requests.append((label, request.path, status))
            if res is None:
                return web.Response(status=404, text="not found", content_type="text/plain")
            return web.Response(body=res.body, content_type=res.content_type, headers=res.headers)

        return handle

    def _serve(self) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        runners: list[web.AppRunner] = []

        async def setup() -> None:
            for label, sock in self.socks.items():
                app = web.Application()
                app.router.add_get("/{tail:.*}", self._handler(label))
                runner = web.AppRunner(app, access_log=None, handle_signals=False)
                await runner.setup()
                runners.append(runner)
                await web.SockSite(runner, sock, shutdown_timeout=1.0).start()

        try:
            loop.run_until_complete(setup())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for runner in runners:
                loop.run_until_complete(runner.cleanup())
            loop.close()


# -------------------------------------------------------------------------------------------- the demo site
def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"</head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n"
        f'<p>Pictures: <a rel="license" href="{CC0}">CC0</a> (rendered people, p2m synth)</p>\n'
        "</body></html>\n"
    )


def _half(jpeg: bytes) -> bytes:
    """The JPEG at half its width and height (the small ``srcset`` candidate)."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        small = im.convert("RGB").resize(
            (max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.BILINEAR
        )
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _logo() -> bytes:
    """A 40x40 PNG logo: an image the crawler must reject as too small."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (40, 40), (30, 90, 160))
    ImageDraw.Draw(im).ellipse([8, 8, 32, 32], fill=(240, 200, 60))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def build_site(images: Sequence[Path], per_page: int = 3) -> LocalSite:
    """Lay out the demo website (see the module docstring) over the given JPEGs of people.

    Two thirds of the pictures go to ``www``'s gallery pages (files on ``cdn``), one to the about page that only
    the sitemap lists, the rest to ``blog`` posts. Each picture is stored once by a polite crawler; the extra
    URLs (a copy, a ``noimageai`` picture, the disallowed areas) must not add stored images.

    Args:
        images: JPEG files (at least 3), e.g. from ``p2m synth --images``.
        per_page: pictures per gallery page and per blog post (at least 1).

    Returns:
        A :class:`LocalSite`, bound but not yet serving; seed it at ``url("www", "/")``.
    """
    if len(images) < 3:
        raise P2MError(f"the demo site needs at least 3 pictures, got {len(images)}")
    per_page = max(1, per_page)
    site = LocalSite(("www", "cdn", "blog"))
    data = [Path(p).read_bytes() for p in images]
    n_gallery = max(1, (2 * len(data)) // 3 - 1)
    gallery, about, blog = data[:n_gallery], data[n_gallery], data[n_gallery + 1 :]
    for label, disallow in (("www", DISALLOWED["www"]), ("cdn", None), ("blog", DISALLOWED["blog"])):
        lines = ["User-agent: *", f"Disallow: {disallow}" if disallow else "Allow: /"]
        if label == "www":
            lines.append(f"Sitemap: {site.url('www', '/sitemap.xml')}")
        site.add(label, "/robots.txt", "\n".join(lines) + "\n", "text/plain")

    def picture_on_cdn(i: int, jpeg: bytes, alt: str) -> str:
        big = site.add("cdn", f"/img/person-{i:03d}.jpg", jpeg, "image/jpeg")
        small = site.add("cdn", f"/img/small/person-{i:03d}.jpg", _half(jpeg), "image/jpeg")
        return (
            f'<figure><img src="{small}" srcset="{small} 1x, {big} 2x" alt="{html.escape(alt)}" '
            f'loading="lazy"><figcaption>{html.escape(alt)}</figcaption></figure>'
        )

    # www: gallery pages, about page (sitemap only), private area, logo, sitemap
    pages = [gallery[k : k + per_page] for k in range(0, len(gallery), per_page)]
    links = []
    for k, chunk in enumerate(pages, start=1):
        figures = [
            picture_on_cdn((k - 1) * per_page + j, jpeg, f"person {(k - 1) * per_page + j + 1}")
            for j, jpeg in enumerate(chunk)
        ]
        nav = f'<p><a href="/gallery/{k + 1}.html">next page</a></p>' if k < len(pages) else ""
        site.add(
            "www", f"/gallery/{k}.html", _page(f"Gallery page {k}", "\n".join(figures) + nav), "text/html"
        )
        links.append(f'<li><a href="/gallery/{k}.html">Gallery page {k}</a></li>')
    site.add(
        "www", "/about.html", _page("About", picture_on_cdn(900, about, "the photographer")), "text/html"
    )
    site.add("www", "/static/logo.png", _logo(), "image/png")
    site.add("www", "/private/secret.jpg", gallery[0], "image/jpeg")
    site.add(
        "www",
        "/private/index.html",
        _page("Private", '<img src="/private/secret.jpg" alt="private">'),
        "text/html",
    )
    index = (
        f'<img src="/static/logo.png" alt="logo">\n<ul>\n{"".join(links)}\n'
        f'<li><a href="/private/index.html">Members only</a></li>\n'
        f'<li><a href="{site.url("blog", "/")}">Our blog</a></li>\n</ul>'
    )
    site.add("www", "/", _page("People gallery", index), "text/html")
    urls = [
        site.url("www", "/"),
        *(site.url("www", f"/gallery/{k}.html") for k in range(1, len(pages) + 1)),
        site.url("www", "/about.html"),
    ]
    sitemap = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        + "".join(f"  <url><loc>{html.escape(u)}</loc></url>\n" for u in urls)
        + "</urlset>\n"
    )
    site.add("www", "/sitemap.xml", sitemap, "application/xml")

    # blog: posts with <picture>, a copy of a gallery picture, a noimageai picture, a disallowed drafts area
    posts = [blog[k : k + per_page] for k in range(0, len(blog), per_page)] or [[]]
    post_links = []
    for k, chunk in enumerate(posts, start=1):
        figures = []
        for j, jpeg in enumerate(chunk):
            name = f"/media/post{k}-{j}"
            small = site.add("blog", f"{name}-480.jpg", _half(jpeg), "image/jpeg")
            big = site.add("blog", f"{name}-960.jpg", jpeg, "image/jpeg")
            figures.append(
                f'<picture><source srcset="{small} 480w, {big} 960w" type="image/jpeg">'
                f'<img src="{small}" alt="blog picture {k}.{j}"></picture>'
            )
        if k == 1:
            copy = site.add("blog", "/media/reposted.jpg", gallery[0], "image/jpeg")
            noai = site.add(
                "blog", "/media/no-ai.jpg", gallery[-1], "image/jpeg", **{"X-Robots-Tag": "noimageai"}
            )
            figures += [
                f'<img src="{copy}" alt="a gallery picture, reposted">',
                f'<img src="{noai}" alt="not for machine learning">',
            ]
        site.add("blog", f"/posts/{k}.html", _page(f"Post {k}", "\n".join(figures)), "text/html")
        post_links.append(f'<li><a href="/posts/{k}.html">Post {k}</a></li>')
    site.add("blog", "/drafts/next.html", _page("Draft", '<img src="/media/post1-0-960.jpg">'), "text/html")
    blog_index = (
        f'<ul>{"".join(post_links)}<li><a href="/drafts/next.html">Next post (draft)</a></li></ul>'
        f'<p><a href="{site.url("www", "/")}">Back to the gallery</a></p>'
    )
    site.add("blog", "/", _page("Blog", blog_index), "text/html")
    return site
