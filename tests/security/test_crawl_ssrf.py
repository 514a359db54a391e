"""The crawler's SSRF guard: every address that is not globally routable is refused, whatever form it hides in.

Traffic goes to loopback only. Addresses such as 100.64.0.1 are either judged without connecting,
or served inside a network namespace the test makes itself (``unshare --net``: only ``lo`` exists
there, with the address added to it), so that a guard that fails reaches the test's own server and
nothing else.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiohttp import web
from PIL import Image

from p2m.crawler import crawl
from p2m.crawler.fetch import Fetcher, FetchSettings
from p2m.crawler.urls import UrlError, blocked_address_reason, canonical_host, host_key, normalize_url

UA = "p2m-test/1.0 (+https://example.invalid/p2m-tests)"
QUICK = dict(
    user_agent=UA,
    delay=0.0,
    per_host=2,
    concurrency=4,
    min_size_px=16,
    connect_timeout=2.0,
    read_timeout=1.0,
    total_timeout=3.0,
    retries=2,
    backoff_base=0.05,
    backoff_max=0.2,
    progress=False,
    manifest_every_s=0,
)
CGNAT = "100.64.0.1"


def jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (seed * 40 % 256, 90, 160)).save(buf, "JPEG")
    return buf.getvalue()


# -- address decisions (no connection) ------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "100.64.0.1",
        "100.127.255.254",  # shared address space (carrier-grade NAT; cloud metadata lives here)
        "::ffff:100.64.0.1",
        "2002:6440:1::1",
        "64:ff9b::6440:1",  # the same, inside IPv6
        "2002:7f00:1::",
        "64:ff9b::7f00:1",
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",  # loopback/link-local inside IPv6
        "192.0.0.8",
        "198.18.0.1",
        "192.0.2.1",
        "240.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "224.0.0.1",
        "fc00::1",
        "fe80::1",
        "::1",
        "::",
        "2001:db8::1",
        "64:ff9b:1::1",
    ],
)
def test_every_non_global_address_is_refused(address):
    assert blocked_address_reason(address) is not None


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700:4700::1111", "2002:808:808::1", "64:ff9b::808:808"]
)
def test_global_addresses_pass_also_inside_ipv6(address):
    assert blocked_address_reason(address) is None


def test_the_unwrapped_address_is_named():
    assert "100.64.0.1" in blocked_address_reason("2002:6440:1::1")
    assert "shared" in blocked_address_reason(CGNAT)


def test_allow_loopback_lets_only_loopback_through():
    assert blocked_address_reason("127.0.0.1", allow_loopback=True) is None
    assert blocked_address_reason("::ffff:127.0.0.1", allow_loopback=True) is None
    for address in (CGNAT, "10.0.0.1", "169.254.169.254", "64:ff9b::6440:1"):
        assert blocked_address_reason(address, allow_loopback=True) is not None


# -- legacy numeric IPv4 hosts: parsed as the WHATWG URL standard does --------------------------------
@pytest.mark.parametrize(
    "host, expected",
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f.0.0.1.", "127.0.0.1"),
        ("1681915905", CGNAT),
        ("0x64.0x40.0.1", CGNAT),
        ("100.4194305", CGNAT),
        ("example.com", "example.com"),
        ("[::1]", "::1"),
    ],
)
def test_legacy_numeric_hosts_are_read_as_browsers_read_them(host, expected):
    assert canonical_host(host) == expected
    assert normalize_url(f"http://{host}/a") == f"http://{f'[{expected}]' if ':' in expected else expected}/a"


@pytest.mark.parametrize("host", ["1.2.3.4.5", "08.1", "256.1", "1.16777216", "a.0x", "example.123"])
def test_hosts_that_end_in_a_number_but_are_no_address_are_refused(host):
    with pytest.raises(UrlError, match="ends in a number"):
        normalize_url(f"http://{host}/")


def test_ipv6_host_key_keeps_its_brackets():
    assert host_key("http://[::1]:8080/x") == "http://[::1]:8080"
    assert host_key("https://[2001:DB8::1]/x") == "https://[2001:db8::1]:443"
    assert normalize_url(host_key("http://[::1]:8080/x") + "/robots.txt") == "http://[::1]:8080/robots.txt"


# -- on a loopback server ---------------------------------------------------------------------------
async def _serve(
    routes: dict[str, bytes],
    hits: list[str],
    host: str = "127.0.0.1",
    redirects: dict[str, str] | None = None,
) -> web.AppRunner:
    """A server on ``host`` (port 0) answering ``routes``, 302 for ``redirects``, 404 else; logs paths in ``hits``."""

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        if redirects and request.path in redirects:
            raise web.HTTPFound(redirects[request.path])
        body = routes.get(request.path)
        if body is None:
            return web.Response(status=404)
        return web.Response(
            body=body, content_type="image/jpeg" if request.path.endswith(".jpg") else "text/html"
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    return runner


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "127.1", "0x7f.1", "0x7f000001"])
async def test_legacy_loopback_forms_are_refused_as_loopback_without_a_request(host):
    hits: list[str] = []
    runner = await _serve({"/x": b"secret"}, hits)
    port = runner.addresses[0][1]
    try:
        async with Fetcher(FetchSettings(user_agent=UA, allow_private=False)) as f:
            r = await f.get(f"http://{host}:{port}/x")
    finally:
        await runner.cleanup()
    assert r.error_kind == "blocked" and "127.0.0.1 is a loopback address" in r.error and not r.retryable
    assert hits == []


async def test_a_legacy_host_is_fetched_once_as_its_address_and_never_retried(tmp_path):
    """aiohttp refuses ``127.1`` as "not canonical"; the crawler reads it as 127.0.0.1 and never retries a refusal."""
    hits: list[str] = []
    runner = await _serve({"/robots.txt": b"User-agent: *\nAllow: /\n", "/a.jpg": jpeg()}, hits)
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(
            None, lambda: crawl([f"http://127.1:{port}/a.jpg"], tmp_path / "c", allow_private=True, **QUICK)
        )
    finally:
        await runner.cleanup()
    (row,) = pq.read_table(result.manifest).to_pylist()
    assert row["status"] == "ok" and row["attempts"] == 1, row
    assert hits.count("/a.jpg") == 1


# -- inside a network namespace: 100.64.0.1 served on the namespace's own loopback device -------------
def _netns_available() -> str | None:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return "unshare or ip is not installed"
    probe = subprocess.run(
        ["unshare", "--net", "--map-root-user", "ip", "link", "set", "lo", "up"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"network namespaces unavailable: {probe.stderr.strip()[:200]}"


def _in_netns(case: str, out: Path) -> dict:
    why = _netns_available()
    if why:
        pytest.skip(why)
    proc = subprocess.run(
        ["unshare", "--net", "--map-root-user", sys.executable, __file__, case, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_seed_on_a_shared_address_is_refused(tmp_path):
    """Fails on a guard that only knows "private": 100.64.0.0/10 is not private, and not global either."""
    res = _in_netns("seed", tmp_path)
    assert res["target_hits"] == [], res
    assert all(r["status"] == "failed" and "shared (carrier-grade NAT)" in r["error"] for r in res["rows"]), (
        res
    )


def test_an_image_on_a_shared_address_is_refused_with_images_any_domain(tmp_path):
    res = _in_netns("image", tmp_path)
    assert res["target_hits"] == [], res
    (img,) = [r for r in res["rows"] if r["url"].startswith(f"http://{CGNAT}")]
    assert img["status"] == "failed" and "shared (carrier-grade NAT)" in img["error"]
    assert any(
        r["status"] == "ok" and r["kind"] == "image" for r in res["rows"]
    )  # the loopback image is kept


def test_an_in_scope_image_on_a_shared_address_is_refused(tmp_path):
    res = _in_netns("image-allowed-domain", tmp_path)
    assert res["target_hits"] == [], res
    (img,) = [r for r in res["rows"] if r["url"].startswith(f"http://{CGNAT}")]
    assert img["status"] == "failed" and "shared (carrier-grade NAT)" in img["error"]


def test_a_robots_redirect_to_a_shared_address_is_refused_and_the_host_not_crawled(tmp_path):
    res = _in_netns("robots", tmp_path)
    assert res["target_hits"] == [], res
    assert res["page_hits"] == ["/robots.txt"], res  # only robots.txt was asked of the loopback host
    (row,) = res["rows"]
    assert row["status"] == "failed" and "shared (carrier-grade NAT)" in row["error"], row


def _netns_main(case: str, out: Path) -> None:
    """Runs inside ``unshare --net``: loopback up, 100.64.0.1 on it, two servers, one crawl; prints JSON."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{CGNAT}/32", "dev", "lo"], check=True)
    target_hits: list[str] = []
    page_hits: list[str] = []

    async def main() -> dict:
        target = await _serve(
            {"/robots.txt": b"User-agent: *\nAllow: /\n", "/t.jpg": jpeg(1)}, target_hits, CGNAT
        )
        tport = target.addresses[0][1]
        timg = f"http://{CGNAT}:{tport}/t.jpg"
        robots = b"User-agent: *\nAllow: /\n"
        page = f'<html><body><img src="{timg}"><img src="/own.jpg"></body></html>'.encode()
        if case == "robots":
            local = await _serve(
                {"/a.jpg": jpeg(2)},
                page_hits,
                redirects={"/robots.txt": f"http://{CGNAT}:{tport}/robots.txt"},
            )
        else:
            local = await _serve({"/robots.txt": robots, "/page.html": page, "/own.jpg": jpeg(3)}, page_hits)
        lport = local.addresses[0][1]
        seeds = {
            "seed": ([timg, f"http://{CGNAT}:{tport}/page.html"], {"allow_private": False}),
            "image": (
                [f"http://127.0.0.1:{lport}/page.html"],
                {"allow_loopback": True, "images_any_domain": True},
            ),
            "image-allowed-domain": (
                [f"http://127.0.0.1:{lport}/page.html"],
                {"allow_loopback": True, "allow_domains": [CGNAT]},
            ),
            "robots": (
                [f"http://127.0.0.1:{lport}/a.jpg"],
                {"allow_loopback": True, "allow_domains": [CGNAT]},
            ),
        }
        urls, opts = seeds[case]
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, lambda: crawl(urls, out / case, **QUICK, **opts))
        finally:
            await local.cleanup()
            await target.cleanup()
        rows = [
            {k: r[k] for k in ("url", "status", "error", "kind")}
            for r in pq.read_table(result.manifest).to_pylist()
        ]
        return {"rows": rows, "target_hits": target_hits, "page_hits": page_hits}

    print(json.dumps(asyncio.run(main())))


if __name__ == "__main__":
    _netns_main(sys.argv[1], Path(sys.argv[2]))
