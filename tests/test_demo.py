"""`p2m demo`: the local website, the step runner and report, and the whole pipeline in --quick mode (slow)."""

from __future__ import annotations

import io
import json
import math
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from p2m.cli import main
from p2m.demo import prepare_folder, run_demo
from p2m.demo.report import write_report
from p2m.demo.runner import QUICK, DemoContext, Step, missing_module, run_steps
from p2m.demo.site import build_site
from p2m.errors import P2MError


def _jpegs(folder: Path, n: int, size: int = 128) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
        im = Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        paths.append(folder / f"{i}.jpg")
        paths[-1].write_bytes(buf.getvalue())
    return paths


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _metrics_rows(md: str) -> list[tuple[str, str, str, str]]:
    """Rows (step, metric, value, unit) of the markdown report's metrics table."""
    section = md.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("step", "") and not set(cells[0]) <= {"-"}:
            rows.append(tuple(cells))
    return rows


# ----------------------------------------------------------------------------------------------- the website
def test_site_serves_robots_sitemap_srcset_on_loopback_hosts(tmp_path):
    site = build_site(_jpegs(tmp_path / "img", 6))
    with site:
        assert len(site.bases) == 3
        assert all(base.startswith("http://127.0.0.1:") for base in site.bases.values())
        assert len({base.rsplit(":", 1)[1] for base in site.bases.values()}) == 3
        status, body, _ = _get(site.url("www", "/robots.txt"))
        assert status == 200
        assert "Disallow: /private/" in body.decode()
        assert f"Sitemap: {site.url('www', '/sitemap.xml')}" in body.decode()
        assert "Disallow: /drafts/" in _get(site.url("blog", "/robots.txt"))[1].decode()
        sitemap = _get(site.url("www", "/sitemap.xml"))[1].decode()
        assert site.url("www", "/about.html") in sitemap
        gallery = _get(site.url("www", "/gallery/1.html"))[1].decode()
        assert "srcset=" in gallery and site.bases["cdn"] in gallery
        assert "<picture>" in _get(site.url("blog", "/posts/1.html"))[1].decode()
        status, body, headers = _get(site.url("cdn", "/img/person-000.jpg"))
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
        assert _get(site.url("blog", "/media/no-ai.jpg"))[2]["X-Robots-Tag"] == "noimageai"
        assert _get(site.url("www", "/nothing-here"))[0] == 404
        _get(site.url("www", "/private/index.html"))
        assert site.disallowed_requests() == [site.url("www", "/private/index.html")]
        assert site.request_counts()["www/404"] == 1
        port = int(site.bases["www"].rsplit(":", 1)[1])
    with pytest.raises(OSError):  # stopped: the port no longer answers
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_crawl_of_the_site_stores_each_picture_once_and_obeys_robots(tmp_path):
    from p2m.crawler import crawl

    pictures = _jpegs(tmp_path / "img", 7)
    site = build_site(pictures)
    with site:
        result = crawl(
            [site.url("www", "/")],
            tmp_path / "crawl",
            allow_private=True,
            depth=3,
            delay=0.0,
            retries=0,
            follow_robots_sitemaps=True,
            progress=False,
            manifest_every_s=0,
        )
        bad = site.disallowed_requests()
    counters = result.stats["counters"]
    assert result.images_stored == len(pictures)  # copies, the logo, no-AI and private pictures add none
    assert bad == []
    assert counters["robots/forbidden"] == 2
    assert counters["image/rejected/too_small"] == 1
    assert counters["image/duplicate"] == 1
    assert counters["x_robots/skipped"] == 1


# ----------------------------------------------------------------------------------------------- runner, report
def _ctx(tmp_path: Path) -> DemoContext:
    return DemoContext(
        out=tmp_path, work=tmp_path / "work", figures=tmp_path / "figures", quick=True, sizes=QUICK
    )


def test_steps_skip_missing_stages_and_their_dependents(tmp_path):
    ran, lines = [], []

    def step(name: str):
        def run(ctx: DemoContext) -> str:
            ran.append(name)
            ctx.metric(name, "count", 3)
            return f"{name} did it"

        return run

    steps = (
        Step("a", "first", step("a")),
        Step("b", "needs a stage not built", step("b"), requires=("p2m.no_such_stage_yet",)),
        Step("c", "needs b", step("c"), needs=("b",)),
        Step("d", "needs a", step("d"), needs=("a",)),
        Step("e", "needs a package", step("e"), requires=("no_such_package_p2m",), hint="pip install x"),
    )
    records = run_steps(steps, _ctx(tmp_path), lines.append, lambda recs: None)
    assert ran == ["a", "d"]
    assert [r.status for r in records] == ["ok", "skipped", "skipped", "ok", "skipped"]
    assert "not available: p2m.no_such_stage_yet is not built yet" in records[1].summary
    assert "needs the 'b' step, which was skipped" in records[2].summary
    assert records[4].summary == "not available: no_such_package_p2m is not installed (pip install x)"
    assert len(lines) == 5 and lines[0].startswith("[ 1/5] a") and "a did it" in lines[0]


def test_failing_step_names_itself_and_writes_a_partial_report(tmp_path):
    ctx = _ctx(tmp_path)

    def ok(c: DemoContext) -> str:
        c.metric("ok", "value", 1.5, "mm")
        return "fine"

    def broken(c: DemoContext) -> str:
        raise ValueError("the input had 0 people")

    partial = []
    steps = (Step("ok", "works", ok), Step("broken", "breaks", broken), Step("never", "not reached", ok))
    with pytest.raises(P2MError, match=r"demo step 2/3 'broken' .*ValueError: the input had 0 people"):
        run_steps(steps, ctx, lambda s: None, lambda recs: partial.append(write_report(ctx, recs, 1.0)))
    html_path, md_path = partial[0]
    md = md_path.read_text()
    assert "| 2 | broken | failed |" in md and "failed at step 'broken'" in md
    assert _metrics_rows(md) == [("ok", "value", "1.50", "mm")]
    assert '<table id="metrics">' in html_path.read_text()
    assert json.loads((tmp_path / "report.json").read_text())["steps"][1]["status"] == "failed"


def test_report_marks_missing_numbers(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.metric("evaluate", "MPVPE", float("nan"), "mm")
    ctx.metric("evaluate", "MPJPE", None, "mm")
    _, md_path = write_report(ctx, [], 0.0)
    assert [row[2] for row in _metrics_rows(md_path.read_text())] == ["missing", "missing"]


def test_out_folder_of_something_else_is_refused_and_left_alone(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(P2MError, match="not empty and was not made by `p2m demo`"):
        prepare_folder(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    demo = tmp_path / "demo"
    prepare_folder(demo)
    (demo / "work").mkdir()
    (demo / "work" / "old").write_text("x")
    prepare_folder(demo)  # an earlier demo's folder is reused
    assert not (demo / "work").exists()


# ----------------------------------------------------------------------------------------------- the whole demo
@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out), "--device", "cpu"])
    return out, result


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_demo_runs_and_reports_finite_numbers(quick_demo):
    out, result = quick_demo
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert f"report: {out.resolve() / 'report.html'}" in result.output
    md = (out / "report.md").read_text()
    rows = _metrics_rows(md)
    assert len(rows) >= 20
    for step, name, value, _ in rows:
        assert math.isfinite(float(value)), (step, name, value)  # "missing" fails here
    values = {(step, name): float(value) for step, name, value, _ in rows}
    assert values[("crawl", "images stored")] > 0
    assert values[("crawl", "requests to disallowed paths")] == 0
    assert values[("detect", "people detected")] > 0
    assert values[("shard", "train samples")] > 0 and values[("shard", "test samples")] > 0
    report = json.loads((out / "report.json").read_text())
    for pic in report["pictures"]:
        assert (out / pic["path"]).is_file()
        assert pic["path"] in (out / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_demo_runs_every_stage_that_exists(quick_demo):
    from p2m.demo.steps import STEPS

    out, result = quick_demo
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    status = {s["name"]: s["status"] for s in report["steps"]}
    for step in STEPS:
        expected = "skipped" if any(missing_module(m) for m in step.requires) else "ok"
        assert status[step.name] == expected, (step.name, status)
    assert re.search(rf"\[ 1/{len(STEPS)}\] people +rendered {QUICK.people} people", result.output)
    values = {(m["step"], m["name"]): m["value"] for m in report["metrics"]}
    if status["evaluate"] == "ok":
        for name in ("MPJPE (14 joints)", "PA-MPJPE (14 joints)", "MPVPE"):
            assert 0 < values[("evaluate", name)] < 1000, name


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_demo_mesh_is_a_valid_body_mesh(quick_demo):
    import trimesh
    import yaml

    from p2m.body import create

    out, result = quick_demo
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    if {s["name"]: s["status"] for s in report["steps"]}["infer"] != "ok":
        pytest.skip("p2m infer is not built yet: the demo skipped its mesh step")
    config = yaml.safe_load((out / "work" / "run" / "config.yaml").read_text())
    body = create("anny", topology=config["model"]["body"]["topology"], rig=config["model"]["body"]["rig"])
    for name in ("mesh.obj", "mesh.ply"):
        mesh = trimesh.load(out / "work" / "infer" / name, process=False, force="mesh")
        assert mesh.vertices.shape == (body.num_vertices, 3), name
        assert mesh.faces.shape == tuple(body.faces.shape), name
        assert np.isfinite(mesh.vertices).all()
        extent = np.ptp(mesh.vertices, axis=0).max()
        assert 0.5 < extent < 3.0, f"{name}: a person is 0.5-3 m tall, got {extent:.2f} m"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_without_fit_still_validates_and_shards(tmp_path):
    """A stage that is not built (here: fit, made unavailable) is skipped; the steps after it still run."""
    from dataclasses import replace

    from p2m.demo.steps import STEPS

    by_name = {s.name: s for s in STEPS}
    steps = tuple(
        replace(by_name[n], requires=("p2m.annotate.fit_not_built",)) if n == "fit" else by_name[n]
        for n in ("people", "site", "crawl", "detect", "fit", "validate", "synth", "shard")
    )
    lines: list[str] = []
    result = run_demo(tmp_path / "out", quick=True, device="cpu", steps=steps, echo=lines.append)
    status = {r.name: r.status for r in result.steps}
    assert status.pop("fit") == "skipped"
    assert set(status.values()) == {"ok"}
    assert any("fit" in line and "not built yet" in line for line in lines)
    values = {(m.step, m.name): m.value for m in result.metrics}
    assert values[("validate", "problems")] == 0
    assert values[("validate", "3D frames checked")] == 0  # nothing was fitted
    assert values[("shard", "web samples")] == values[("detect", "people detected")] > 0
    assert "Skipped: fit." in result.report_md.read_text()
