"""A real aiohttp server on several loopback ports, run in a thread, that records every request."""

from __future__ import annotations

import asyncio
import gzip
import io
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from aiohttp import web
from PIL import Image

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Req:
    port: int
    path: str
    start: float
    end: float
    status: int
    user_agent: str
    host_header: str


class Site:
    """``n_hosts`` HTTP servers on 127.0.0.1 (one port each = one politeness host) sharing a route table.

    Every request is logged server-side with monotonic start/end times, and the number of
    requests in flight per port is tracked (``max_active``).
    """

    def __init__(self, n_hosts: int) -> None:
        self.n_hosts = n_hosts
        self.routes: dict[tuple[int, str], Handler] = {}
        self.lock = threading.Lock()
        self.log: list[Req] = []
        self.active: dict[int, int] = defaultdict(int)
        self.max_active: dict[int, int] = defaultdict(int)
        self.ports: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runners: list[web.AppRunner] = []

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Site:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        for _ in range(self.n_hosts):
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._dispatch)
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.runners.append(runner)
            self.ports.append(runner.addresses[0][1])

    def stop(self) -> None:
        async def _stop() -> None:
            for r in self.runners:
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def reset_log(self) -> None:
        with self.lock:
            self.log.clear()
            self.max_active.clear()

    # -- routes -------------------------------------------------------------------------------
    def base(self, host: int) -> str:
        return f"http://127.0.0.1:{self.ports[host]}"

    def url(self, host: int, path: str) -> str:
        return self.base(host) + path

    def add(
        self,
        host: int,
        path: str,
        handler: Handler | bytes | str,
        content_type: str = "text/html",
        headers: dict[str, str] | None = None,
    ) -> str:
        if not callable(handler):
            handler = static(handler, content_type, headers)
        self.routes[(self.ports[host], path)] = handler
        return self.url(host, path)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        port = request.transport.get_extra_info("sockname")[1]
        start = time.monotonic()
        with self.lock:
            self.active[port] += 1
            self.max_active[port] = max(self.max_active[port], self.active[port])
        status = 0
        try:
            handler = self.routes.get((port, request.raw_path))
            resp = await handler(request) if handler else web.Response(status=404, text="not found")
            status = resp.status
            return resp
        finally:
            with self.lock:
                self.active[port] -= 1
                self.log.append(
                    Req(
                        port,
                        request.raw_path,
                        start,
                        time.monotonic(),
                        status,
                        request.headers.get("User-Agent", ""),
                        request.headers.get("Host", ""),
                    )
                )

    # -- reading the log ----------------------------------------------------------------------
    def requests(self, host: int | None = None, path: str | None = None) -> list[Req]:
        with self.lock:
            return [
                r
                for r in self.log
                if (host is None or r.port == self.ports[host]) and (path is None or r.path == path)
            ]


# -- handlers -------------------------------------------------------------------------------------
def static(
    body: bytes | str, content_type: str = "text/html", headers: dict[str, str] | None = None
) -> Handler:
    data = body.encode() if isinstance(body, str) else body

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=data, headers={"Content-Type": content_type, **(headers or {})})

    return handler


def status(code: int, headers: dict[str, str] | None = None, text: str = "") -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, text=text or f"status {code}", headers=headers)

    return handler


def redirect(location: str, code: int = 302) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, headers={"Location": location})

    return handler


def sequence(*handlers: Handler) -> Handler:
    """The n-th request gets handlers[n] (the last one repeats)."""
    calls = {"n": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        i = min(calls["n"], len(handlers) - 1)
        calls["n"] += 1
        return await handlers[i](request)

    return handler


def delayed(seconds: float, inner: Handler) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await inner(request)

    return handler


def stall(seconds: float, content_type: str = "image/jpeg") -> Handler:
    """Send headers and a few bytes, then nothing for ``seconds``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": "100000"})
        await resp.prepare(request)
        await resp.write(b"\xff\xd8\xff\xe0")
        await asyncio.sleep(seconds)
        return resp

    return handler


def endless(total: int, content_type: str = "image/jpeg", chunk: int = 65536) -> Handler:
    """Stream ``total`` bytes with no Content-Length (chunked)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        block = b"\xff\xd8\xff" + b"\0" * (chunk - 3)
        try:
            while sent < total:
                await resp.write(block)
                sent += len(block)
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    return handler


# -- content --------------------------------------------------------------------------------------
def photo(seed: int, width: int = 160, height: int = 120, quality: int = 90, fmt: str = "JPEG") -> bytes:
    """A smooth random picture (distinct perceptual hash per seed)."""
    rng = np.random.RandomState(seed)
    grid = (rng.rand(6, 6, 3) * 255).astype(np.uint8)
    im = Image.fromarray(grid).resize((width, height), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def exif_rotated(seed: int, width: int = 200, height: int = 120) -> bytes:
    """A landscape JPEG with EXIF orientation 6 (displayed rotated 90 degrees: portrait)."""
    rng = np.random.RandomState(seed)
    im = Image.fromarray((rng.rand(6, 6, 3) * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def pixel_bomb(side: int = 3000) -> bytes:
    """A tiny PNG file declaring side*side pixels."""
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed (about size/1000 bytes)."""
    return gzip.compress(b"\0" * size, compresslevel=9)
