"""robots.txt cannot be skipped: IPv6 hosts read it, its redirects get the scope checks of every other request,
a host whose robots.txt was not read for a reason of ours is not crawled; a seed dropped by --deny is reported."""

from __future__ import annotations

import asyncio
import io
import logging
import socket

import pyarrow.parquet as pq
import pytest
from aiohttp import web
from PIL import Image

from p2m.crawler import crawl

UA = "p2m-test/1.0 (+https://example.invalid/p2m-tests)"
QUICK = dict(
    user_agent=UA,
    allow_private=True,
    delay=0.0,
    per_host=2,
    concurrency=4,
    min_size_px=16,
    connect_timeout=2.0,
    read_timeout=1.0,
    total_timeout=3.0,
    retries=1,
    backoff_base=0.05,
    backoff_max=0.2,
    progress=False,
    manifest_every_s=0,
)
DISALLOW_ALL = b"User-agent: *\nDisallow: /\n"


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


class Server:
    """One loopback server: ``routes`` (bytes) and ``redirects`` (path -> Location); logs the paths asked."""

    def __init__(
        self, routes: dict[str, bytes], redirects: dict[str, str] | None = None, host: str = "127.0.0.1"
    ):
        self.routes, self.redirects, self.host = routes, redirects or {}, host
        self.hits: list[str] = []

    async def __aenter__(self) -> Server:
        async def handler(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            if request.path in self.redirects:
                raise web.HTTPFound(self.redirects[request.path])
            body = self.routes.get(request.path)
            if body is None:
                return web.Response(status=404)
            ctype = "image/jpeg" if request.path.endswith(".jpg") else "text/plain"
            return web.Response(body=body, content_type=ctype)

        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, 0).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def run_crawl(seeds, out, **opts):
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, lambda: crawl(seeds, out, **{**QUICK, **opts}))
    return result, pq.read_table(result.manifest).to_pylist()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
async def test_an_ipv6_host_reads_robots_txt_and_obeys_it(tmp_path):
    async with Server({"/robots.txt": DISALLOW_ALL, "/a.jpg": jpeg()}, host="::1") as srv:
        result, rows = await run_crawl([f"http://[::1]:{srv.port}/a.jpg"], tmp_path / "c")
    assert srv.hits == ["/robots.txt"]
    (row,) = rows
    assert row["status"] == "skipped" and "robots.txt" in row["error"], row
    assert result.stats["counters"]["robots/forbidden"] == 1


async def test_a_robots_redirect_out_of_scope_is_not_followed_and_the_host_not_crawled(tmp_path):
    async with Server({"/robots.txt": b"User-agent: *\nAllow: /\n"}) as other:
        target = f"http://localhost:{other.port}/robots.txt"  # another registrable domain than 127.0.0.1
        async with Server({"/a.jpg": jpeg()}, redirects={"/robots.txt": target}) as srv:
            result, rows = await run_crawl([f"http://127.0.0.1:{srv.port}/a.jpg"], tmp_path / "c")
    assert other.hits == []
    assert srv.hits == ["/robots.txt"]
    (row,) = rows
    assert row["status"] == "skipped" and "outside the crawl's domains" in row["error"], row
    assert result.stats["counters"]["robots/redirect_refused"] == 1


async def test_a_robots_redirect_matching_deny_is_not_followed(tmp_path):
    async with Server({"/robots.txt": b"User-agent: *\nAllow: /\n"}) as other:
        target = f"http://127.0.0.1:{other.port}/private/robots.txt"
        async with Server({"/a.jpg": jpeg()}, redirects={"/robots.txt": target}) as srv:
            _, rows = await run_crawl(
                [f"http://127.0.0.1:{srv.port}/a.jpg"], tmp_path / "c", deny=["/private/"]
            )
    assert other.hits == [] and srv.hits == ["/robots.txt"]
    assert rows[0]["status"] == "skipped" and "--deny" in rows[0]["error"]


async def test_a_robots_redirect_in_scope_is_followed_and_obeyed(tmp_path):
    async with Server({"/robots.txt": DISALLOW_ALL}) as other:
        target = f"http://127.0.0.1:{other.port}/robots.txt"  # same host name, another port: in scope
        async with Server({"/a.jpg": jpeg()}, redirects={"/robots.txt": target}) as srv:
            _, rows = await run_crawl([f"http://127.0.0.1:{srv.port}/a.jpg"], tmp_path / "c")
    assert other.hits == ["/robots.txt"] and srv.hits == ["/robots.txt"]
    assert rows[0]["status"] == "skipped" and rows[0]["error"] == "disallowed by robots.txt"


async def test_a_seed_dropped_by_deny_is_reported(tmp_path, caplog):
    async with Server({"/robots.txt": b"", "/a.jpg": jpeg(), "/b.jpg": jpeg()}) as srv:
        with caplog.at_level(logging.WARNING, logger="p2m.crawler"):
            result, rows = await run_crawl(
                [f"http://127.0.0.1:{srv.port}/a.jpg", f"http://127.0.0.1:{srv.port}/b.jpg"],
                tmp_path / "c",
                deny=[r"b\.jpg$"],
            )
    assert "/b.jpg" not in srv.hits
    assert result.stats["counters"]["seed/denied"] == 1
    assert any("b.jpg" in r.getMessage() and "--deny" in r.getMessage() for r in caplog.records)
    by_url = {r["url"].rsplit("/", 1)[1]: r for r in rows}
    assert by_url["a.jpg"]["status"] == "ok"
    assert by_url["b.jpg"]["status"] == "skipped" and "--deny" in by_url["b.jpg"]["error"]
