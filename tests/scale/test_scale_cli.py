"""`--ray` as a user runs it: the five commands accept it, and without it nothing imports Ray."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from crawl_settings import TEST_UA
from crawl_site import Site, photo

from p2m.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_without_the_flag_no_stage_imports_ray(tmp_path):
    code = f"""
import sys
from click.testing import CliRunner
from p2m.cli import main
out = {str(tmp_path)!r}
for args in (["synth", "--out", out + "/s", "--num", "4", "--poses", "sampler"], ["shard", out + "/s", "--out", out + "/sh"],
             ["--help"]):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, (args, r.output)
for args in (["synth"], ["shard"], ["crawl"], ["annotate", "detect"], ["annotate", "fit"]):
    r = CliRunner().invoke(main, [*args, "--help"])
    assert r.exit_code == 0 and "--ray [ADDRESS]" in r.output, (args, r.output)
bad = sorted(m for m in sys.modules if m == "ray" or m.startswith(("ray.", "p2m.scale")))
assert not bad, bad
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.slow
def test_cli_runs_synth_shard_and_crawl_on_ray(ray_cluster, tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        main, ["synth", "--out", str(tmp_path / "ds"), "--num", "8", "--poses", "sampler", "--ray"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["shard", str(tmp_path / "ds"), "--out", str(tmp_path / "sh"), "--ray=local"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "sh" / "index.json").read_text())["splits"]["train"]["samples"] == 8
    site = Site(2).start()
    try:
        site.add(0, "/index.html", f'<img src="/a.jpg"><a href="{site.url(1, "/b.html")}">b</a>')
        site.add(0, "/a.jpg", photo(1), "image/jpeg")
        site.add(1, "/b.html", '<img src="/b.jpg">')
        site.add(1, "/b.jpg", photo(2), "image/jpeg")
        args = [
            "crawl",
            site.url(0, "/index.html"),
            "--out",
            str(tmp_path / "c"),
            "--allow-private",
            "--delay",
            "0",
            "--user-agent",
            TEST_UA,
            "--no-progress",
            "--ray",
            "--actors",
            "2",
        ]
        r = runner.invoke(main, args)
        assert r.exit_code == 0, r.output
        assert re.search(r"images stored \(all runs\) +2\n", r.output), r.output
        r = runner.invoke(
            main, ["crawl", site.url(0, "/index.html"), "--out", str(tmp_path / "d"), "--actors", "2"]
        )
        assert r.exit_code == 2 and "needs --ray" in r.output
    finally:
        site.stop()
