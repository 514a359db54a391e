"""`p2m crawl` through click's CliRunner, and the optional MediaPipe person filter."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from crawl_settings import FAST, TEST_UA, D, E, fixture_dir
from crawl_site import photo

from p2m.cli import main
from p2m.crawler import crawl
from p2m.errors import CrawlError

FAST_ARGS = [
    "--allow-private",
    "--delay",
    "0.01",
    "--no-progress",
    "--user-agent",
    TEST_UA,
    "--min-size",
    "32",
]


def test_cli_crawl_summary_and_errors(trap_site, tmp_path):
    site, _ = trap_site
    runner = CliRunner()
    out = tmp_path / "c"
    result = runner.invoke(main, ["crawl", site.url(D, "/d.html"), "--out", str(out), *FAST_ARGS])
    assert result.exit_code == 0, result.output
    assert "images stored (this run)" in result.output and "finish reason" in result.output
    assert (out / "manifest.parquet").exists() and (out / "stats.json").exists()
    assert pq.read_table(out / "manifest.parquet").num_rows == 3
    again = runner.invoke(main, ["crawl", site.url(D, "/d.html"), "--out", str(out), *FAST_ARGS])
    assert again.exit_code == 1 and "pass --resume" in again.output and "Traceback" not in again.output
    resumed = runner.invoke(main, ["crawl", "--resume", "--out", str(out), *FAST_ARGS])
    assert resumed.exit_code == 0 and "images stored (all runs)" in resumed.output
    bad = runner.invoke(
        main, ["crawl", site.url(D, "/d.html"), "--out", str(tmp_path / "b"), "--per-host", "0"]
    )
    assert bad.exit_code == 2 and "--per-host" in bad.output


def test_cli_seed_file(trap_site, tmp_path):
    site, _ = trap_site
    seeds = tmp_path / "urls.txt"
    seeds.write_text(
        f"# image URLs, one per line\n{site.url(D, '/img/d1.jpg')}\n\n{site.url(D, '/img/d2.png')}\n"
    )
    result = CliRunner().invoke(main, ["crawl", str(seeds), "--out", str(tmp_path / "c"), *FAST_ARGS])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "c" / "manifest.parquet").to_pylist()
    assert sorted(r["status"] for r in rows) == ["ok", "ok"] and {r["page_url"] for r in rows} == {""}
    bad = tmp_path / "bad.txt"
    bad.write_text("http://ok.test/\nnot a url\n")
    result = CliRunner().invoke(main, ["crawl", str(bad), "--out", str(tmp_path / "d")])
    assert result.exit_code == 1 and "bad.txt:2" in result.output


def test_person_filter_mediapipe(trap_site, tmp_path):
    pytest.importorskip("mediapipe", reason="the 'detect' extra (mediapipe) is not installed")
    people = fixture_dir("public-domain-people-images")
    site, _ = trap_site
    site.add(
        E,
        "/people.html",
        '<html><body><img src="/astronaut.png" alt="astronaut">'
        '<img src="/blobs.jpg" alt="no one"></body></html>',
    )
    site.add(E, "/astronaut.png", (people / "astronaut.png").read_bytes(), "image/png")
    site.add(E, "/blobs.jpg", photo(77, 256, 256), "image/jpeg")
    r = crawl([site.url(E, "/people.html")], tmp_path / "p", **{**FAST, "person_filter": "mediapipe"})
    rows = {x["url"].rsplit("/", 1)[1]: x for x in pq.read_table(r.manifest).to_pylist()}
    assert rows["astronaut.png"]["status"] == "ok" and rows["astronaut.png"]["person_score"] >= 0.5
    assert rows["blobs.jpg"]["status"] == "rejected" and "no person found" in rows["blobs.jpg"]["error"]
    import subprocess  # mediapipe itself must not pull torch in

    code = (
        "import sys; from p2m.crawler.person import load_person_filter; load_person_filter('mediapipe');"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_person_filter_missing_extra_is_a_clear_error(trap_site, tmp_path, monkeypatch):
    site, _ = trap_site
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # as if the extra were not installed
    with pytest.raises(CrawlError, match=r"needs the 'detect' extra.*pip install 'p2m\[detect\]'"):
        crawl([site.url(D, "/d.html")], tmp_path / "m", **{**FAST, "person_filter": "mediapipe"})
    assert not (tmp_path / "m").exists()  # refused before anything was written
    result = CliRunner().invoke(
        main,
        [
            "crawl",
            site.url(D, "/d.html"),
            "--out",
            str(tmp_path / "n"),
            "--person-filter",
            "mediapipe",
            *FAST_ARGS,
        ],
    )
    assert result.exit_code == 1 and "detect" in result.output
