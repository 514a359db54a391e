"""URL lists from parquet/CSV columns, `noml` honoured like `noai`, and --retry-failed on a finished crawl."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from crawl_settings import FAST
from crawl_site import Site, photo, sequence, static, status

from p2m.cli import main
from p2m.crawler import crawl, read_seeds
from p2m.errors import CrawlError


@pytest.fixture(scope="module")
def site():
    s = Site(1).start()
    s.add(0, "/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")
    for i in range(3):
        s.add(0, f"/img/{i}.jpg", photo(40 + i), "image/jpeg")
    s.add(0, "/img/noml.jpg", static(photo(50), "image/jpeg", {"X-Robots-Tag": "noml"}))
    s.add(
        0,
        "/noml.html",
        '<html><head><meta name="robots" content="noml"></head>'
        '<body><img src="/img/0.jpg"><a href="/x.html">x</a></body></html>',
    )
    s.add(0, "/flaky.jpg", sequence(status(500), static(photo(60), "image/jpeg")))
    s.add(0, "/gone.jpg", status(404))
    yield s
    s.stop()


def test_urls_from_a_parquet_column(site, tmp_path):
    urls = [site.url(0, f"/img/{i}.jpg") for i in range(3)]
    path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"caption": ["a", "b", "c"], "image_url": urls}), path)
    assert read_seeds([str(path)], "image_url") == urls
    with pytest.raises(CrawlError, match=r"list.parquet: no column 'url' \(columns: caption, image_url\)"):
        read_seeds([str(path)])
    r = crawl([str(path)], tmp_path / "c", url_column="image_url", **FAST)
    assert r.stats["counters"]["image/stored"] == 3


def test_urls_from_csv_and_tsv_columns_and_bad_rows_named(site, tmp_path):
    urls = [site.url(0, f"/img/{i}.jpg") for i in range(3)]
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("url,licence\n" + "".join(f'"{u}",cc-by\n' for u in urls))
    tsv_path = tmp_path / "list.tsv.gz"
    tsv_path.write_bytes(
        gzip.compress(("id\tlink\n" + "".join(f"{i}\t{u}\n" for i, u in enumerate(urls))).encode())
    )
    assert read_seeds([str(csv_path)]) == urls
    assert read_seeds([str(tsv_path)], "link") == urls
    bad = tmp_path / "bad.csv"
    bad.write_text(f"url\n{urls[0]}\nftp://nope/x.jpg\n")
    with pytest.raises(CrawlError, match=r"bad.csv:3: unsupported scheme 'ftp'"):
        read_seeds([str(bad)])


def test_noml_is_honoured_like_noai(site, tmp_path):
    r = crawl(
        [site.url(0, "/img/noml.jpg"), site.url(0, "/noml.html")], tmp_path / "c", **{**FAST, "depth": 0}
    )
    rows = {x["url"]: x for x in pq.read_table(r.manifest).to_pylist()}
    assert rows[site.url(0, "/img/noml.jpg")]["status"] == "skipped"
    assert "X-Robots-Tag: noml" in rows[site.url(0, "/img/noml.jpg")]["error"]
    assert site.url(0, "/img/0.jpg") not in rows  # the page's images are not taken
    assert r.stats["counters"]["page/meta_robots_noimageai"] == 1


def test_retry_failed_fetches_only_the_failed_urls(site, tmp_path):
    out = tmp_path / "c"
    seeds = [site.url(0, "/flaky.jpg"), site.url(0, "/img/1.jpg"), site.url(0, "/gone.jpg")]
    first = crawl(seeds, out, **{**FAST, "retries": 0})
    rows = {x["url"]: x["status"] for x in pq.read_table(first.manifest).to_pylist()}
    assert rows == {seeds[0]: "failed", seeds[1]: "ok", seeds[2]: "failed"}
    with pytest.raises(CrawlError, match="pass --resume too"):
        crawl([], out, retry_failed=True, **FAST)
    site.reset_log()
    result = CliRunner().invoke(
        main,
        [
            "crawl",
            "--out",
            str(out),
            "--resume",
            "--retry-failed",
            "--no-progress",
            "--allow-loopback",
            "--retries",
            "0",
            "--delay",
            "0.05",
            "--user-agent",
            FAST["user_agent"],
            "--min-size",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    fetched = sorted(r.path for r in site.requests() if r.path != "/robots.txt")
    assert fetched == ["/flaky.jpg", "/gone.jpg"]  # the stored image is not fetched again
    rows = {x["url"]: x for x in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert rows[seeds[0]]["status"] == "ok" and rows[seeds[0]]["attempts"] == 1
    assert rows[seeds[1]]["status"] == "ok" and rows[seeds[2]]["status"] == "failed"
