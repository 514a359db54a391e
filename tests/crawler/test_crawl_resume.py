"""kill -9 in the middle of `python -m p2m crawl`, then --resume: nothing stored is fetched again, nothing is lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from crawl_settings import TEST_UA
from crawl_site import Site, delayed, photo, static
from yarl import URL

from p2m.crawler import crawl

N_HOSTS, N_IMAGES = 3, 24
ARGS = [
    "--allow-private",
    "--delay",
    "0.02",
    "--per-host",
    "1",
    "--no-progress",
    "--user-agent",
    TEST_UA,
    "--min-size",
    "32",
]


@pytest.fixture(scope="module")
def resume_site():
    site = Site(N_HOSTS).start()
    for h in range(N_HOSTS):
        site.add(h, "/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")
        imgs = "".join(f'<img src="/img/{i}.jpg" alt="image {i}">' for i in range(N_IMAGES))
        site.add(h, "/index.html", f"<html><body>{imgs}<img src='/img/dup.jpg'></body></html>")
        for i in range(N_IMAGES):
            site.add(h, f"/img/{i}.jpg", delayed(0.08, static(photo(1000 * h + i, 200, 150), "image/jpeg")))
        site.add(h, "/img/dup.jpg", static(photo(5), "image/jpeg"))  # same bytes on every host
    yield site
    site.stop()


def _stored_at_kill(journal: Path) -> tuple[set[str], int]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        done = {u for (u,) in db.execute("SELECT url FROM urls WHERE state != 'queued'")}
        images = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    finally:
        db.close()
    return done, images


def _images_stored(journal: Path) -> int:
    """Images recorded in a journal that a running crawl is writing (0 while it is being created)."""
    if not journal.exists():
        return 0
    try:
        return _stored_at_kill(journal)[1]
    except sqlite3.OperationalError:
        return 0


def _p2m(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2m", "crawl", *args]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_then_resume_matches_an_uninterrupted_crawl(resume_site, tmp_path):
    site = resume_site
    seeds = [site.url(h, "/index.html") for h in range(N_HOSTS)]
    env = {**os.environ, "P2M_CACHE_DIR": os.environ.get("P2M_CACHE_DIR", str(tmp_path / "cache"))}

    ref = crawl(
        seeds,
        tmp_path / "ref",
        allow_private=True,
        delay=0.02,
        per_host=1,
        user_agent=TEST_UA,
        min_size_px=32,
        progress=False,
    )
    assert ref.finish_reason == "finished"

    site.reset_log()
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _p2m(*seeds, "--out", str(out), *ARGS), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    journal = out / "crawl.sqlite"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"crawl ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        if _images_stored(journal) >= 12:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    finished_before, stored_before = _stored_at_kill(journal)
    assert 12 <= stored_before < N_HOSTS * N_IMAGES + 1  # really killed mid-crawl
    n_before = len(site.requests())

    done = subprocess.run(
        _p2m("--resume", "--out", str(out), *ARGS), env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-3000:]
    after = site.requests()[n_before:]

    # 1. nothing that had a recorded result was fetched again (robots.txt is re-read, by design)
    finished = {(URL(u).port, URL(u).raw_path_qs) for u in finished_before}
    again = sorted(r.path for r in after if (r.port, r.path) in finished)
    assert again == [], f"fetched again after resume: {again}"
    assert any(r.path.startswith("/img/") for r in after)  # the resumed run did have work left
    # 2. at most the URLs in flight at the kill were fetched twice
    counts: dict[tuple[int, str], int] = {}
    for r in site.requests():
        if r.path != "/robots.txt":
            counts[(r.port, r.path)] = counts.get((r.port, r.path), 0) + 1
    assert max(counts.values()) <= 2 and sum(1 for n in counts.values() if n == 2) <= 2 * N_HOSTS

    # 3. the same result as the uninterrupted crawl
    def summary(folder: Path):
        rows = pq.read_table(folder / "manifest.parquet").to_pylist()
        by_path = {r["url"]: (r["status"], r["sha256"]) for r in rows}
        files = sorted(p.name for p in (folder / "images").rglob("*") if p.is_file())
        return by_path, files

    ref_rows, ref_files = summary(tmp_path / "ref")
    got_rows, got_files = summary(out)
    assert got_files == ref_files and len(ref_files) == N_HOSTS * N_IMAGES + 1
    assert {u: s[1] for u, s in got_rows.items()} == {u: s[1] for u, s in ref_rows.items()}
    statuses = sorted(s[0] for s in got_rows.values())
    assert statuses == sorted(s[0] for s in ref_rows.values())  # one "ok" + duplicates for dup.jpg
    assert "images stored (all runs)" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_ctrl_c_stops_cleanly_and_writes_outputs(resume_site, tmp_path):
    site = resume_site
    out = tmp_path / "int"
    proc = subprocess.Popen(
        _p2m(site.url(0, "/index.html"), "--out", str(out), *ARGS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _images_stored(out / "crawl.sqlite") < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    assert "interrupted" in stdout, stdout
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert any(r["status"] == "queued" for r in rows) and any(r["status"] == "ok" for r in rows)
