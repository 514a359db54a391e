"""`p2m annotate review`: a local, token-protected web page to correct 2D keypoints and reject people.

The server binds 127.0.0.1 only (there is no option for another address) and every request must carry the random
token printed with the URL (403 otherwise). Against DNS rebinding, a request whose ``Host`` header is not
127.0.0.1, localhost or [::1] with the server's port is refused (403); a state-changing request (POST) must also come
with an ``Origin`` of one of those (403 otherwise: a browser always sends it, so only the page itself can save). The page is plain HTML/JS/CSS from ``review_static/``; its
Content-Security-Policy lets it load nothing from the network. It pages through images, draws each person's
COCO-17 skeleton over the image, lets the reviewer drag keypoints, set their visibility (2 visible, 1 occluded,
0 unlabelled), accept or reject a person, and save. Saving is ``POST /api/annotation/{id}``, handled by
:meth:`p2m.annotate.review_store.ReviewStore.save` (what a save changes, and how concurrent saves stay safe, is
documented there). Entry points: :func:`review` (blocking, for the CLI), :func:`start_review_server` (async, for
tests and embedding) and :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from p2m.annotate.review_store import (
    REVIEW_FIELD,
    ConflictError,
    NotFoundError,
    ReviewRequestError,
    ReviewStore,
    annotation_etag,
    apply_edit,
    file_lock,
    is_rejected,
)
from p2m.errors import LayoutError, P2MError
from p2m.io import loads_json
from p2m.joints import COCO_JOINTS, COCO_SKELETON

__all__ = [
    "REVIEW_FIELD",
    "STORE_KEY",
    "ConflictError",
    "NotFoundError",
    "ReviewRequestError",
    "ReviewServer",
    "ReviewStore",
    "annotation_etag",
    "apply_edit",
    "create_app",
    "file_lock",
    "is_rejected",
    "review",
    "start_review_server",
]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("review_static")
HOST = "127.0.0.1"
#: Host names a request may address the server by (with the server's port), in the Host and Origin headers.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: Where :func:`create_app` keeps its :class:`ReviewStore` (``app[STORE_KEY]``).
STORE_KEY = web.AppKey("store", ReviewStore)
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
_SECURITY_HEADERS = {
    # nothing from the network: scripts, styles, images and requests all stay on this server
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def create_app(root: str | Path, token: str) -> web.Application:
    """The aiohttp application of the review page for the dataset at ``root``, guarded by ``token``.

    Routes (every one needs ``?token=`` or an ``X-P2M-Token`` header, a loopback ``Host`` with the server's port,
    and for POST an ``Origin`` of the same form, else 403):
    ``GET /`` the page; ``GET /static/{name}``; ``GET /api/info``; ``GET /api/page/{index}`` (0-based);
    ``GET /api/annotation/{id}``; ``POST /api/annotation/{id}`` (see :meth:`ReviewStore.save`);
    ``GET /image/{image_id}``. Errors are JSON ``{"error": message}`` with status 400, 403, 404 or 409.
    """
    store = ReviewStore(root)

    @web.middleware
    async def guard(request: web.Request, handler):
        given = request.query.get("token") or request.headers.get("X-P2M-Token") or ""
        refused = _refusal(request)
        if refused is not None:
            response: web.StreamResponse = _error(403, refused)
        elif not secrets.compare_digest(given.encode(), token.encode()):
            response = _error(403, "missing or wrong token: open the URL that `p2m annotate review` printed")
        else:
            try:
                response = await handler(request)
            except ReviewRequestError as exc:
                response = _error(exc.status, str(exc))
            except LayoutError as exc:
                response = _error(500, str(exc))
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def index(request: web.Request) -> web.Response:
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        html = html.replace("{{TOKEN}}", token).replace("{{TITLE}}", _html_escape(store.root.name))
        return web.Response(text=html, content_type="text/html")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        path = STATIC_DIR / name
        if "/" in name or path.suffix not in _STATIC_TYPES or not path.is_file():
            raise NotFoundError(f"no static file {name!r}")
        return web.Response(body=path.read_bytes(), content_type=_STATIC_TYPES[path.suffix], charset="utf-8")

    async def info(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "dataset": str(store.root),
                "names": store.dataset.names,
                "count": len(store.pages),
                "keypoints": list(COCO_JOINTS),
                "skeleton": [list(e) for e in COCO_SKELETON],
            }
        )

    async def page(request: web.Request) -> web.Response:
        raw = request.match_info["index"]
        if not raw.isdigit():
            raise NotFoundError(f"page {raw!r} is not a page number; pages are 0..{len(store.pages) - 1}")
        return web.json_response(await asyncio.to_thread(store.page, int(raw)))

    async def get_annotation(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(store.annotation, request.match_info["ann_id"]))

    async def post_annotation(request: web.Request) -> web.Response:
        ann_id = request.match_info["ann_id"]
        store.locate(ann_id)  # 404 before looking at the body
        try:
            body = loads_json(await request.read(), "request body")
        except P2MError as exc:
            raise ReviewRequestError(str(exc)) from None
        return web.json_response(await asyncio.to_thread(store.save, ann_id, body))

    async def image(request: web.Request) -> web.FileResponse:
        path = await asyncio.to_thread(store.image_path, request.match_info["image_id"])
        return web.FileResponse(path)

    app = web.Application(middlewares=[guard])
    app[STORE_KEY] = store
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/info", info)
    app.router.add_get("/api/page/{index}", page)
    app.router.add_get("/api/annotation/{ann_id}", get_annotation)
    app.router.add_post("/api/annotation/{ann_id}", post_annotation)
    app.router.add_get("/image/{image_id}", image)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _refusal(request: web.Request) -> str | None:
    """Why a request is refused before its token is looked at (Host, then Origin for a POST), or None.

    A page on another site that rebinds its DNS name to 127.0.0.1 sends its own name as Host; a page on another
    site that posts here sends its own Origin. Neither can name this server as 127.0.0.1:port.
    """
    sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if not sock:
        return "cannot tell which port this request came in on"
    allowed = {f"{name}:{sock[1]}" for name in LOOPBACK_NAMES}
    host = request.headers.get("Host", "")
    if host.lower() not in allowed:
        return (
            f"Host {host[:100]!r} is not this server ({', '.join(sorted(allowed))}): refused, as a page "
            "of another site rebinding its name to this address would be"
        )
    if request.method not in _SAFE_METHODS:
        origin = request.headers.get("Origin", "")
        if origin.lower() not in {f"http://{a}" for a in allowed}:
            return (
                f"{request.method} with Origin {origin[:100]!r}: changes are accepted only from the review "
                f"page itself (Origin http://{host})"
            )
    return None


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


@dataclass
class ReviewServer:
    """A running review server: ``url`` (with the token) and ``close()``."""

    url: str
    host: str
    port: int
    token: str
    runner: web.AppRunner

    async def close(self) -> None:
        """Stop serving."""
        await self.runner.cleanup()


async def start_review_server(root: str | Path, port: int = 0, token: str | None = None) -> ReviewServer:
    """Start serving the review page of ``root`` on 127.0.0.1 (``port`` 0 picks a free one).

    Raises:
        LayoutError: the dataset cannot be reviewed. P2MError: the port is taken.
    """
    token = token or secrets.token_urlsafe(24)
    app = create_app(root, token)
    # A short shutdown: a local tool should stop at once on Ctrl+C, not wait 60 s for idle keep-alive connections.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, HOST, int(port))
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise P2MError(
            f"cannot listen on {HOST}:{port} ({exc.strerror}); pick another --port, or 0 for any free one"
        ) from exc
    bound = [a for a in runner.addresses if isinstance(a, tuple)]
    host, real_port = bound[0][0], int(bound[0][1])
    return ReviewServer(f"http://{host}:{real_port}/?token={token}", host, real_port, token, runner)


def review(
    root: str | Path,
    port: int = 0,
    open_browser: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the review page of the dataset at ``root`` until interrupted (Ctrl+C).

    Args:
        root: the dataset folder.
        port: TCP port on 127.0.0.1 (0: any free port).
        open_browser: open the page in the default web browser.
        on_ready: called with the page's URL (token included) once the server listens.
    """

    async def run() -> None:
        server = await start_review_server(root, port)
        if on_ready is not None:
            on_ready(server.url)
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        # Stop on Ctrl+C or SIGTERM even when the parent started us with SIGINT ignored (as shells do for
        # background jobs): the handlers are installed here rather than inherited.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
                pass
        try:
            await stop.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            await server.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
