"""End-to-end crawl of the trap site: statuses, reasons, storage, politeness seen from the server side."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from crawl_settings import FAST, TEST_UA, A, B, C, D

from p2m.crawler import crawl
from p2m.crawler.manifest import SCHEMA
from p2m.errors import CrawlError

ISSUE_COLUMNS = [
    "url",
    "page_url",
    "sha256",
    "phash",
    "width",
    "height",
    "format",
    "bytes",
    "alt",
    "license",
    "status",
    "http_status",
    "fetched_at",
    "person_score",
    "error",
]


def row(tc, host, path):
    return tc["rows"][tc["site"].url(host, path)]


def test_manifest_has_the_issue_columns_and_reasons(trap_crawl):
    names = SCHEMA.names
    assert names[: len(ISSUE_COLUMNS)] == ISSUE_COLUMNS
    for r in trap_crawl["manifest"]:
        assert set(r) == set(names)
        if r["status"] in ("ok", "duplicate"):
            assert r["error"] == ""
        else:  # every URL that did not give an image has a one-line reason
            assert r["error"] and "\n" not in r["error"], r
    assert trap_crawl["stats"]["run"]["finish_reason"] == "finished"


@pytest.mark.parametrize(
    "host,path,status,reason",
    [
        (A, "/img/tiny.png", "rejected", "smaller than --min-size 32"),
        (A, "/img/truncated.jpg", "rejected", "truncated JPEG"),
        (A, "/img/corrupt.jpg", "rejected", "JPEG image"),
        (A, "/img/html.jpg", "rejected", "not an image: HTML served as image/jpeg"),
        (A, "/img/vector.svg", "rejected", "SVG"),
        (A, "/img/oversize.jpg", "failed", "Content-Length 3145731 bytes over the 2097152-byte cap"),
        (A, "/img/oversize-chunked.jpg", "failed", "body over the 2097152-byte cap"),
        (A, "/img/gzip-bomb.jpg", "failed", "decompressed body over the 2097152-byte cap"),
        (A, "/bomb.html", "failed", "decompressed body over"),
        (A, "/img/pixelbomb.png", "rejected", "9000000 pixels over the 4000000-pixel cap"),
        (A, "/img/always500.jpg", "failed", "HTTP 500 Internal Server Error after 3 attempts"),
        (A, "/img/missing.jpg", "failed", "HTTP 404"),
        (A, "/img/stalled.jpg", "failed", "timed out"),
        (A, "/img/noai.jpg", "skipped", "X-Robots-Tag: noimageai"),
        (A, "/private/hidden.jpg", "skipped", "disallowed by robots.txt"),
        (A, "/private/secret.html", "skipped", "disallowed by robots.txt"),
        (B, "/b/private/x.jpg", "skipped", "disallowed by robots.txt"),
        (C, "/c.html", "skipped", "robots.txt returned HTTP 500"),
        (A, "/chain/5", "failed", "too many redirects (6 > --max-redirects 5)"),
        (A, "/loop/b", "redirect", "already seen (redirect loop"),
        (A, "/img/moved.jpg", "redirect", "/img/target.jpg"),
    ],
)
def test_each_trap_gets_its_status_and_reason(trap_crawl, host, path, status, reason):
    r = row(trap_crawl, host, path)
    assert r["status"] == status
    assert reason in r["error"]


def test_good_images_are_stored_content_addressed(trap_crawl):
    out, images = trap_crawl["out"], trap_crawl["images"]
    ok = [r for r in trap_crawl["manifest"] if r["status"] == "ok" and r["kind"] == "image"]
    expected = {
        "good1",
        "large",
        "pic-big",
        "lazy1",
        "noscript",
        "og",
        "tw",
        "ls-2x",
        "lo",
        "mal1",
        "mal2",
        "slow",
        "ratelimited",
        "burst",
        "neardup",
        "b1",
        "b2",
        "target",
        "d1",
        "d2",
    }
    stored_hashes = {r["sha256"] for r in ok}
    for name in expected:
        assert hashlib.sha256(images[name]).hexdigest() in stored_hashes, name
    for r in ok:
        data = (out / r["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"] == Path(r["path"]).stem
        assert r["bytes"] == len(data) and r["width"] >= 32 and len(r["phash"]) == 16
    files = sorted(p for p in (out / "images").rglob("*") if p.is_file())
    assert len(files) == len(stored_hashes) == len(ok)  # one file per distinct content, no temp files


def test_alt_license_page_and_format(trap_crawl):
    good = row(trap_crawl, A, "/img/good1.jpg")
    assert good["alt"] == "person one" and good["page_url"].endswith("/gallery.html")
    og = row(trap_crawl, A, "/img/og.jpg")
    assert og["license"] == "https://creativecommons.org/licenses/by/4.0/"  # rel=license on the index page
    assert row(trap_crawl, D, "/img/d2.png")["format"] == "PNG"
    assert row(trap_crawl, A, "/img/good1.jpg")["format"] == "JPEG"
    assert good["http_status"] == 200 and good["fetched_at"] is not None


def test_parse_choices_seen_from_the_server(trap_crawl):
    site, log = trap_crawl["site"], trap_crawl["log"]
    paths_a = {r.path for r in log if r.port == site.ports[A]}
    # largest srcset / picture candidates only; data: URIs, nofollow, out-of-depth and disallowed never requested
    assert "/img/large.jpg" in paths_a and "/img/w_100,h_100/small.jpg" not in paths_a
    assert "/img/pic-big.jpg" in paths_a and not {"/img/pic-small.jpg", "/img/pic-fallback.jpg"} & paths_a
    assert "/img/ls-2x.jpg" in paths_a and "/img/ls-1x.jpg" not in paths_a
    assert not {"/nofollow.html", "/deep/3.html", "/private/secret.html", "/private/hidden.jpg"} & paths_a
    assert {"/deep/1.html", "/deep/2.html"} <= paths_a
    assert "/chain/6" not in paths_a
    assert all(r.host_header.startswith("127.0.0.1") for r in log)  # localhost links were out of scope
    # C's robots.txt failed with 500: nothing but robots.txt was requested there
    assert {r.path for r in log if r.port == site.ports[C]} == {"/robots.txt"}


def test_each_url_fetched_once_except_retries(trap_crawl):
    log, site = trap_crawl["log"], trap_crawl["site"]
    counts: dict[tuple[int, str], int] = {}
    for r in log:
        counts[(r.port, r.path)] = counts.get((r.port, r.path), 0) + 1
    retried = {"/img/ratelimited.jpg": 2, "/img/burst.jpg": 3, "/img/always500.jpg": 3, "/img/stalled.jpg": 3}
    for (port, path), n in counts.items():
        if port == site.ports[C] and path == "/robots.txt":
            assert n == 3  # 5xx robots.txt is retried, then the host is disallowed
        else:
            assert n == retried.get(path, 1), (port, path, n)


def test_exact_and_near_duplicates(trap_crawl):
    good = row(trap_crawl, A, "/img/good1.jpg")
    dup = row(trap_crawl, B, "/img/dup-of-good1.jpg")
    near = row(trap_crawl, A, "/img/neardup.jpg")
    # whichever copy arrived first is stored ("ok"); the other points at the same file
    assert sorted([good["status"], dup["status"]]) == ["duplicate", "ok"]
    assert dup["sha256"] == good["sha256"] and dup["path"] == good["path"]
    assert near["status"] == "ok" and near["sha256"] != good["sha256"]
    assert near["near_dup_of"] == good["near_dup_of"]  # same perceptual-hash group
    other = row(trap_crawl, A, "/img/large.jpg")
    assert other["near_dup_of"] == other["sha256"] != good["near_dup_of"]


def test_exif_orientation_applied(trap_crawl):
    r = row(trap_crawl, A, "/img/rotated.jpg")
    assert r["status"] == "ok" and (r["width"], r["height"]) == (120, 200)  # stored upright (portrait)
    from PIL import Image

    with Image.open(trap_crawl["out"] / r["path"]) as im:
        assert im.size == (120, 200) and im.getexif().get(0x0112, 1) == 1


def test_politeness_from_the_server_side(trap_crawl):
    site, log = trap_crawl["site"], trap_crawl["log"]
    assert all(r.user_agent == TEST_UA for r in log)
    assert max(site.max_active[site.ports[h]] for h in (A, C, D)) <= FAST["per_host"]
    assert site.max_active[site.ports[B]] == 1  # Crawl-delay makes the host sequential
    # The client waits delay * U(0.5, 1.5) (>= 25 ms) between request starts on one host, and 0.3 s on B.
    # Server-side times carry some scheduling noise, hence the allowances; a missing delay still fails.
    for host, min_gap, mean_gap in ((A, 0.025, 0.05), (D, 0.025, 0.05), (B, 0.3, 0.3)):
        starts = sorted(r.start for r in log if r.port == site.ports[host])
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert len(gaps) >= 3
        assert min(gaps) >= min_gap * 0.5, (host, min(gaps))
        assert starts[-1] - starts[0] >= 0.8 * mean_gap * len(gaps), (host, starts[-1] - starts[0], len(gaps))


def test_retry_after_holds_the_whole_host(trap_crawl):
    site, log = trap_crawl["site"], trap_crawl["log"]
    first, second = sorted((r for r in log if r.path == "/img/ratelimited.jpg"), key=lambda r: r.start)
    assert first.status == 429 and second.status == 200
    assert second.start - first.end >= 0.95
    started_during_hold = [
        r for r in log if r.port == site.ports[A] and first.end + 0.05 < r.start < first.end + 0.95
    ]
    assert started_during_hold == []
    row_ = row(trap_crawl, A, "/img/ratelimited.jpg")
    assert row_["status"] == "ok" and row_["attempts"] == 2


def test_stats_json(trap_crawl):
    stats = json.loads((trap_crawl["out"] / "stats.json").read_text())
    c = stats["run"]["counters"]
    assert c["image/stored"] == len(
        {r["sha256"] for r in trap_crawl["manifest"] if r["status"] == "ok" and r["kind"] == "image"}
    )
    assert c["robots/forbidden"] >= 3 and c["image/duplicate"] == 1 and c["x_robots/skipped"] == 1
    assert c["fetch/retry/http_429"] == 1 and c["redirect/too_many"] == 1
    assert stats["run"]["finish_reason"] == "finished" and stats["totals"].get("queued", 0) == 0
    assert any("HTTP 500" in m for m in stats["run"]["error_messages"])
    assert not list(trap_crawl["out"].glob(".*.tmp"))  # atomic writes left no temp files


def test_limits_max_images_and_max_pages(trap_site, tmp_path):
    site, _ = trap_site
    r = crawl([site.url(A, "/index.html")], tmp_path / "c", **{**FAST, "max_images": 3})
    assert r.finish_reason == "max_images" and r.images_stored == 3
    r = crawl([site.url(A, "/index.html")], tmp_path / "p", **{**FAST, "max_pages": 1, "depth": 5})
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "p" / "manifest.parquet").to_pylist()
    assert sum(1 for x in rows if x["kind"] == "page" and x["status"] == "ok") == 1
    assert any(x["status"] == "queued" and "--resume" in x["error"] for x in rows)


def test_scope_deny_and_allow(trap_site, tmp_path):
    site, _ = trap_site
    site.reset_log()
    crawl([site.url(D, "/d.html")], tmp_path / "deny", **{**FAST, "deny": [r"d2\.png$"]})
    assert not site.requests(D, "/img/d2.png") and site.requests(D, "/img/d1.jpg")


def test_ssrf_guard_refuses_loopback_without_allow_private(trap_site, tmp_path):
    site, _ = trap_site
    site.reset_log()
    opts = {**FAST, "allow_private": False}
    r = crawl([site.url(D, "/d.html"), f"http://localhost:{site.ports[D]}/d.html"], tmp_path / "ssrf", **opts)
    import pyarrow.parquet as pq

    rows = pq.read_table(r.manifest).to_pylist()
    assert len(rows) == 2 and all(x["status"] == "failed" for x in rows)
    assert all("loopback address" in x["error"] and "--allow-private" in x["error"] for x in rows)
    assert site.requests() == []  # nothing reached the server


def test_out_dir_rules(trap_site, tmp_path):
    site, _ = trap_site
    with pytest.raises(CrawlError, match="no seeds"):
        crawl([], tmp_path / "x", **FAST)
    with pytest.raises(CrawlError, match="nothing to resume"):
        crawl([], tmp_path / "x", resume=True, **FAST)
    crawl([site.url(D, "/d.html")], tmp_path / "y", **FAST)
    with pytest.raises(CrawlError, match="pass --resume"):
        crawl([site.url(D, "/d.html")], tmp_path / "y", **FAST)
    with pytest.raises(CrawlError, match="neither an http"):
        crawl(["no-such-file.txt"], tmp_path / "z", **FAST)


def test_resume_of_a_finished_crawl_fetches_nothing(trap_site, tmp_path):
    site, _ = trap_site
    crawl([site.url(D, "/d.html")], tmp_path / "r", **FAST)
    site.reset_log()
    r = crawl([], tmp_path / "r", resume=True, **FAST)
    assert r.finish_reason == "finished" and r.images_stored == 2
    assert site.requests() == []


def test_crawler_never_imports_torch():
    code = (
        "import sys, p2m.crawler, p2m.crawler.engine, p2m.cli.crawl; "
        "from p2m.cli import main; main.get_command(None, 'crawl'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
