"""Hash first: bytes already stored or already rejected are recorded without decoding; the journal batches writes."""

from __future__ import annotations

import sqlite3

import pyarrow.parquet as pq
import pytest
from crawl_settings import FAST
from crawl_site import Site, delayed, exif_rotated, photo, static

from p2m.crawler import crawl
from p2m.crawler.frontier import Frontier, NewUrl


@pytest.fixture(scope="module")
def dup_site():
    site = Site(2).start()
    for h in range(2):
        site.add(h, "/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")
        for i in range(12):  # 12 URLs per host, all the same bytes, answered slowly so that many overlap
            site.add(h, f"/same/{i}.jpg", delayed(0.05, static(photo(7), "image/jpeg")))
            site.add(h, f"/bad/{i}.jpg", static(b"\xff\xd8\xff\xe0 not really a jpeg" * 20, "image/jpeg"))
        site.add(h, "/rot/a.jpg", static(exif_rotated(3), "image/jpeg"))
        site.add(h, "/rot/b.jpg", static(exif_rotated(3), "image/jpeg"))
    yield site
    site.stop()


def test_same_bytes_from_many_urls_are_decoded_once(dup_site, tmp_path):
    site = dup_site
    seeds = [site.url(h, f"/same/{i}.jpg") for i in range(12) for h in range(2)]
    r = crawl(seeds, tmp_path / "c", **{**FAST, "per_host": 4, "concurrency": 8})
    counters = r.stats["counters"]
    assert counters["image/checked"] == 1 and counters["image/stored"] == 1
    assert counters["image/duplicate"] == 23
    rows = pq.read_table(r.manifest).to_pylist()
    assert len(rows) == 24 and len({x["sha256"] for x in rows}) == 1
    assert sorted(x["status"] for x in rows) == ["duplicate"] * 23 + ["ok"]


def test_rejected_bytes_are_rejected_again_without_a_decode(dup_site, tmp_path):
    site = dup_site
    seeds = [site.url(h, f"/bad/{i}.jpg") for i in range(12) for h in range(2)]
    r = crawl(seeds, tmp_path / "c", **FAST)
    counters = r.stats["counters"]
    assert counters["image/checked"] == 1 and counters["url/rejected"] == 24
    rows = pq.read_table(r.manifest).to_pylist()
    assert {x["status"] for x in rows} == {"rejected"} and len({x["error"] for x in rows}) == 1


def test_rotated_bytes_fetched_again_after_resume_are_known_without_a_decode(dup_site, tmp_path):
    site = dup_site
    out = tmp_path / "c"
    first = crawl([site.url(0, "/rot/a.jpg")], out, **FAST)
    assert first.stats["counters"]["image/exif_rotated"] == 1
    again = crawl([site.url(1, "/rot/b.jpg")], out, resume=True, **FAST)  # same bytes, another host
    counters = again.stats["counters"]
    assert counters.get("image/checked", 0) == 0 and counters["image/duplicate"] == 1
    rows = {x["url"]: x for x in pq.read_table(again.manifest).to_pylist()}
    a, b = rows[site.url(0, "/rot/a.jpg")], rows[site.url(1, "/rot/b.jpg")]
    assert b["status"] == "duplicate" and b["sha256"] == a["sha256"] and b["path"] == a["path"]
    assert (b["width"], b["height"]) == (120, 200)  # the stored, upright file


def test_deferred_results_are_written_in_one_transaction_on_flush(tmp_path):
    path = tmp_path / "j.sqlite"
    f = Frontier(path)
    f.deferred = True
    (item,) = f.enqueue_many([NewUrl("http://h.test/a.jpg", "http://h.test/a.jpg", "image", 0)])
    image = {
        "sha256": "cd" * 32,
        "path": "images/cd/x.jpg",
        "width": 9,
        "height": 9,
        "format": "JPEG",
        "bytes": 5,
        "phash": "0" * 16,
        "person_score": None,
    }
    f.finish(item, "done", "ok", sha256="cd" * 32, image=image, raw_sha256="ef" * 32)
    other = sqlite3.connect(path)
    assert other.execute("SELECT state FROM urls").fetchone()[0] == "queued"  # not written yet
    assert f.image_known("cd" * 32) and f.stored_sha("ef" * 32) == "cd" * 32  # but already known
    f.flush()
    assert other.execute("SELECT state FROM urls").fetchone()[0] == "done"
    assert other.execute("SELECT sha256 FROM raw_hashes WHERE raw=?", ("ef" * 32,)).fetchone()[0] == "cd" * 32
    other.close()
    f.close()
    g = Frontier(path)
    assert g.stored_sha("ef" * 32) == "cd" * 32 and g.stored_sha("cd" * 32) == "cd" * 32
    assert g.stored_sha("00" * 32) is None
    g.close()
