"""`p2m crawl --ray`: hosts split over actors give the crawl a local run gives, politely, and survive a kill."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from crawl_settings import FAST, A, B
from crawl_site import Site, delayed, photo, static

from p2m.crawler import crawl

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parents[1]


def _trap_site_builder():
    """``build_trap_site`` of the crawler tests (it lives in their conftest, loaded here under its own name)."""
    spec = importlib.util.spec_from_file_location("crawler_trap_site", TESTS / "crawler" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_trap_site


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def _outcome(rows: list[dict]) -> set[tuple]:
    """What a crawl found, by URL: kind, status (ok and duplicate both mean 'stored'), HTTP status, file."""
    return {
        (
            r["url"],
            r["kind"],
            "stored" if r["status"] in ("ok", "duplicate") else r["status"],
            r["http_status"],
            r["path"],
            r["sha256"],
        )
        for r in rows
    }


@pytest.fixture(scope="module")
def trap():
    site = Site(5).start()
    images = _trap_site_builder()(site)
    yield site, images
    site.stop()


@pytest.fixture(scope="module")
def trap_crawls(ray_cluster, trap, tmp_path_factory):
    """The trap site crawled locally, then on Ray with 3 actors (the server's log kept for each)."""
    from p2m.scale.crawl import crawl as ray_crawl

    site, _ = trap
    base = tmp_path_factory.mktemp("trap-ray")
    seeds = [site.url(A, "/index.html")]
    site.reset_log()
    crawl(seeds, base / "local", **FAST)
    local_log = site.requests()
    site.reset_log()
    result = ray_crawl(seeds, base / "ray", actors=3, **FAST)
    return {
        "site": site,
        "local": base / "local",
        "ray": base / "ray",
        "result": result,
        "local_log": local_log,
        "ray_log": site.requests(),
    }


def test_ray_crawl_finds_what_a_local_crawl_finds(trap_crawls):
    local, ray = _rows(trap_crawls["local"]), _rows(trap_crawls["ray"])
    assert len(ray) == len({r["url"] for r in ray})  # one row per URL over all actors
    assert _outcome(ray) == _outcome(local)
    stored = [r for r in ray if r["status"] == "ok" and r["kind"] == "image"]
    assert len(stored) == len({r["sha256"] for r in stored}) >= 15  # each file once, across actors
    files = sorted(p.relative_to(trap_crawls["ray"]) for p in (trap_crawls["ray"] / "images").rglob("*.*"))
    assert files == sorted(Path(r["path"]) for r in stored)
    # good1.jpg on host A and dup-of-good1.jpg on host B: the same bytes, stored once, the later one a duplicate
    statuses = Counter(
        r["status"]
        for r in ray
        if r["sha256"] == next(r2["sha256"] for r2 in ray if r2["url"].endswith("/img/good1.jpg"))
    )
    assert statuses == Counter({"ok": 1, "duplicate": 1})
    assert {r["near_dup_of"] for r in ray if r["url"].endswith(("/img/good1.jpg", "/img/neardup.jpg"))} == {
        next(r["sha256"] for r in ray if r["url"].endswith("/img/good1.jpg"))
    }  # near duplicates across the table


def test_ray_crawl_writes_one_stats_file(trap_crawls):
    stats = json.loads((trap_crawls["ray"] / "stats.json").read_text())
    result = trap_crawls["result"]
    assert result.finish_reason == "finished" and stats["ray"]["actors"] == 3
    per_actor = stats["ray"]["per_actor"]
    assert sum(c.get("fetch/requests", 0) for c in per_actor) == stats["run"]["counters"]["fetch/requests"]
    assert (
        stats["totals"]["stored_files"]
        == result.images_stored
        == sum(1 for r in _rows(trap_crawls["ray"]) if r["status"] == "ok" and r["kind"] == "image")
    )


def test_ray_crawl_is_polite_per_host_across_actors(trap_crawls):
    site, log, local_log = trap_crawls["site"], trap_crawls["ray_log"], trap_crawls["local_log"]
    for host in range(site.n_hosts):
        reqs = [r for r in log if r.port == site.ports[host]]
        robots = sum(r.path == "/robots.txt" for r in reqs)  # one owner reads it (host C's 500s are retried)
        assert robots == sum(r.path == "/robots.txt" and r.port == site.ports[host] for r in local_log), host
        active, most = 0, 0
        for _t, step in sorted([(r.start, 1) for r in reqs] + [(r.end, -1) for r in reqs]):
            active += step
            most = max(most, active)
        assert most <= FAST["per_host"], f"host {host}: {most} requests at once"
    # host B: Crawl-delay 0.3 s for our token: one request at a time, 0.3 s apart. Server-side times carry
    # scheduling noise (as in the crawler's own politeness test), so single gaps get half; a missing delay fails.
    starts = sorted(r.start for r in log if r.port == site.ports[B])
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) >= 3 and min(gaps) >= 0.15 and starts[-1] - starts[0] >= 0.8 * 0.3 * len(gaps)


def _slow_site(hosts: int = 4, pages: int = 6) -> tuple[Site, list[str]]:
    """``hosts`` hosts, each with ``pages`` slow pages of one image, linked from every host's index."""
    site = Site(hosts).start()
    links = "".join(
        f'<a href="{site.url(h, f"/p{i}.html")}">p</a>' for h in range(hosts) for i in range(pages)
    )
    for h in range(hosts):
        site.add(h, "/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")
        site.add(h, "/index.html", f"<html><body>{links}</body></html>")
        for i in range(pages):
            page = f'<html><body><img src="/img/{i}.jpg"></body></html>'
            site.add(h, f"/p{i}.html", delayed(0.15, static(page)))
            site.add(h, f"/img/{i}.jpg", photo(1000 + 10 * h + i), "image/jpeg")
    return site, [site.url(h, "/index.html") for h in range(hosts)]


def test_killed_actor_is_restarted_and_loses_nothing(ray_cluster, tmp_path):
    import ray

    from p2m.scale.crawl import crawl as ray_crawl

    site, seeds = _slow_site()
    try:
        opts = {**FAST, "per_host": 1}
        crawl(seeds, tmp_path / "local", **opts)
        expected = _outcome(_rows(tmp_path / "local"))
        site.reset_log()
        done: dict = {}
        worker = threading.Thread(
            target=lambda: done.update(r=ray_crawl(seeds, tmp_path / "ray", actors=2, **opts))
        )
        worker.start()
        deadline = time.monotonic() + 60
        while len(site.requests()) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        names = [n for n in ray.util.list_named_actors() if n.startswith("p2m-crawl-") and n.endswith("-000")]
        assert len(names) == 1
        assert worker.is_alive(), "the crawl ended before the actor could be killed"
        ray.kill(ray.get_actor(names[0]), no_restart=False)  # Ray restarts it; it reopens its journal
        worker.join(timeout=120)
        assert not worker.is_alive() and done["r"].finish_reason == "finished"
        stats = json.loads((tmp_path / "ray" / "stats.json").read_text())
        assert stats["ray"]["restarted"] == [True, False]
        rows = _rows(tmp_path / "ray")
        assert len(rows) == len({r["url"] for r in rows}) and _outcome(rows) == expected
        fetched = Counter((r.port, r.path) for r in site.requests() if r.path != "/robots.txt")
        assert len(fetched) == len(rows)
        # fetched again: at most what the killed actor had in flight (fetching, or checking and storing)
        assert sum(n - 1 for n in fetched.values()) <= FAST["concurrency"]
    finally:
        site.stop()


def test_ray_crawl_resumes_after_a_limit(ray_cluster, tmp_path):
    from p2m.errors import CrawlError
    from p2m.scale.crawl import crawl as ray_crawl

    site, seeds = _slow_site(hosts=3, pages=3)
    try:
        crawl(seeds, tmp_path / "local", **FAST)
        first = ray_crawl(seeds, tmp_path / "ray", actors=2, max_images=3, **FAST)
        assert first.finish_reason == "max_images" and 3 <= first.images_stored < 9
        with pytest.raises(CrawlError, match="--actors 2"):
            ray_crawl([], tmp_path / "ray", resume=True, actors=3, **FAST)
        site.reset_log()
        second = ray_crawl([], tmp_path / "ray", resume=True, **FAST)
        assert second.finish_reason == "finished" and second.images_stored == 9
        assert _outcome(_rows(tmp_path / "ray")) == _outcome(_rows(tmp_path / "local"))
        refetched = {(r.port, r.path) for r in site.requests() if r.path.endswith(".jpg")}
        assert len(refetched) == 9 - first.images_stored  # stored images are not fetched again
    finally:
        site.stop()
