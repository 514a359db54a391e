"""The demo's pictures (keypoints and fitted meshes over crawled photos) and its report, as HTML and markdown."""

from __future__ import annotations

import html
import io
import logging
import math
import os
import platform
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from p2m.demo.runner import DemoContext, Metric, StepRecord
from p2m.io import write_bytes, write_json, write_text

logger = logging.getLogger(__name__)

#: Height (px) of each photo in a picture row.
ROW_HEIGHT = 320
GAP_PX = 8


def _row(images: Sequence[np.ndarray], height: int = ROW_HEIGHT) -> bytes:
    """Photos scaled to one height, side by side on white; PNG bytes."""
    from PIL import Image

    scaled = []
    for arr in images:
        im = Image.fromarray(np.asarray(arr, dtype=np.uint8))
        scaled.append(
            im.resize((max(1, round(im.width * height / im.height)), height), Image.Resampling.BILINEAR)
        )
    width = sum(im.width for im in scaled) + GAP_PX * (len(scaled) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for im in scaled:
        canvas.paste(im, (x, 0))
        x += im.width + GAP_PX
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _photo(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def skeleton_figure(dataset: Path, out: Path, max_images: int = 3) -> Path | None:
    """Draw the COCO keypoints of the first people of ``dataset`` over their photos into the PNG ``out``.

    Returns:
        ``out``, or None when no annotated photo was found.
    """
    from p2m.joints import COCO_SKELETON
    from p2m.layout import Dataset
    from p2m.render import draw_skeleton

    drawn = []
    for sample in Dataset(dataset).iter_samples():
        kps = sample.keypoints
        if kps is None or not sample.image_path.is_file() or (kps[:, 2] > 0).sum() < 3:
            continue
        drawn.append(draw_skeleton(_photo(sample.image_path), kps, COCO_SKELETON, radius=3, width=3))
        if len(drawn) == max_images:
            break
    if not drawn:
        return None
    write_bytes(out, _row(drawn))
    return out


def mesh_figure(dataset: Path, out: Path, max_images: int = 3) -> Path | None:
    """Render the fitted bodies (``body_param`` through each image's camera) over their photos into ``out``.

    Returns:
        ``out``, or None when no valid fit was found.
    """
    import torch

    from p2m.body import create
    from p2m.layout import Dataset
    from p2m.render import overlay_mesh, render_mesh

    picked = []
    for sample in Dataset(dataset).iter_samples():
        params, cam = sample.body_param, sample.camera
        if (
            params
            and cam is not None
            and sample.image_path.is_file()
            and params.get("model") == "anny"
            and sample.annotation.get("fit_valid", True)
        ):
            picked.append(sample)
            if len(picked) == max_images:
                break
    if not picked:
        return None
    first = picked[0].body_param
    body = create("anny", topology=first.get("topology", "full"), rig=first.get("rig", "cmu_mb"))
    faces = body.faces.cpu().numpy()
    drawn = []
    for sample in picked:
        p = sample.body_param
        with torch.inference_mode():
            res = body(
                torch.tensor(p["pose"], dtype=torch.float32).reshape(1, -1, 3),
                torch.tensor(p["shape"], dtype=torch.float32).reshape(1, -1),
                torch.tensor(p["trans"], dtype=torch.float32).reshape(1, 3),
            )
        verts_cam = sample.camera.world_to_camera(res.vertices[0].double().numpy() * 1000.0)
        photo = _photo(sample.image_path)
        h, w = photo.shape[:2]
        render = render_mesh(verts_cam, faces, sample.camera.f, sample.camera.c, (w, h), background=photo)
        drawn.append(overlay_mesh(photo, render, alpha=0.7))
    write_bytes(out, _row(drawn))
    return out


# ---------------------------------------------------------------------------------------------------- report
def _value_text(m: Metric) -> str:
    v = m.value
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "missing"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.2f}"


def _machine() -> str:
    try:
        import torch

        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # torch missing or broken: the report still gets written
        dev = "torch unavailable"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, {dev}, Python {platform.python_version()}"


def _code(escaped: str) -> str:
    """Markdown's `code` spans as HTML <code> (the text is already HTML-escaped)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_data(ctx: DemoContext, records: Sequence[StepRecord], total_s: float) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data (also saved as ``report.json``)."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if ctx.quick else "full",
        "machine": _machine(),
        "total_seconds": round(total_s, 1),
        "steps": [
            {
                "index": r.index,
                "name": r.name,
                "title": r.title,
                "status": r.status,
                "seconds": round(r.seconds, 2),
                "summary": r.summary,
            }
            for r in records
        ],
        "metrics": [{"step": m.step, "name": m.name, "value": m.value, "unit": m.unit} for m in ctx.metrics],
        "pictures": [
            {"path": os.path.relpath(p.path, ctx.out), "title": p.title, "caption": p.caption}
            for p in ctx.pictures
            if p.path.exists()
        ],
    }


def write_report(ctx: DemoContext, records: Sequence[StepRecord], total_s: float) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``report.json`` into the demo folder, atomically.

    Returns:
        The paths of report.html and report.md.
    """
    data = report_data(ctx, records, total_s)
    live = [r["name"] for r in data["steps"] if r["status"] == "ok"]
    skipped = [r["name"] for r in data["steps"] if r["status"] == "skipped"]
    failed = [r["name"] for r in data["steps"] if r["status"] == "failed"]
    state = f"failed at step '{failed[0]}'" if failed else "finished"
    head = (
        f"Mode **{data['mode']}**, {state} in {data['total_seconds']:.0f} s on {data['machine']}; "
        f"{data['created']}. Live steps: {', '.join(live) or 'none'}. "
        f"Skipped: {', '.join(skipped) or 'none'}."
    )

    md = [
        "# p2m demo report",
        "",
        head,
        "",
        "## Steps",
        "",
        "| # | step | status | seconds | what it did |",
        "|---|------|--------|--------:|-------------|",
    ]
    md += [
        f"| {r['index']} | {r['name']} | {r['status']} | {r['seconds']:.1f} | {_md_cell(r['summary'])} |"
        for r in data["steps"]
    ]
    md += ["", "## Metrics", "", "| step | metric | value | unit |", "|------|--------|------:|------|"]
    md += [f"| {m.step} | {_md_cell(m.name)} | {_value_text(m)} | {m.unit} |" for m in ctx.metrics]
    md += ["", "## Pictures", ""]
    for p in data["pictures"]:
        md += [f"### {p['title']}", "", f"![{p['title']}]({p['path']})", ""]
        if p["caption"]:
            md += [p["caption"], ""]
    md += [
        "## Files",
        "",
        f"Everything the stages wrote is under `{ctx.work}`:",
        "",
        "| folder | what |",
        "|--------|------|",
    ]
    md += [
        f"| `{os.path.relpath(path, ctx.out)}` | {what} |" for path, what in _folders(ctx) if path.exists()
    ]
    md_path = ctx.out / "report.md"
    write_text(md_path, "\n".join(md) + "\n")

    e = html.escape
    rows = "\n".join(
        f'<tr class="{e(r["status"])}"><td>{r["index"]}</td><td>{e(r["name"])}</td>'
        f'<td>{e(r["status"])}</td><td class="num">{r["seconds"]:.1f}</td><td>{e(r["summary"])}</td></tr>'
        for r in data["steps"]
    )
    metrics = "\n".join(
        f'<tr><td>{e(m.step)}</td><td>{e(m.name)}</td><td class="num">{e(_value_text(m))}</td>'
        f"<td>{e(m.unit)}</td></tr>"
        for m in ctx.metrics
    )
    pics = "\n".join(
        f"<figure><figcaption><b>{e(p['title'])}</b>. {_code(e(p['caption']))}</figcaption>"
        f'<img src="{e(p["path"])}" alt="{e(p["title"])}"></figure>'
        for p in data["pictures"]
    )
    files = "\n".join(
        f"<tr><td><code>{e(os.path.relpath(path, ctx.out))}</code></td><td>{e(what)}</td></tr>"
        for path, what in _folders(ctx)
        if path.exists()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>p2m demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: .3em .6em; }}
th {{ background: #f0f0f0; text-align: left; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.skipped td {{ color: #888; }} tr.failed td {{ background: #fdd; }}
figure {{ margin: 1.5em 0; }} figure img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head>
<body>
<h1>p2m demo report</h1>
<p>{e(head.replace("**", ""))}</p>
<h2>Steps</h2>
<table><tr><th>#</th><th>step</th><th>status</th><th>seconds</th><th>what it did</th></tr>
{rows}
</table>
<h2>Metrics</h2>
<table id="metrics"><tr><th>step</th><th>metric</th><th>value</th><th>unit</th></tr>
{metrics}
</table>
<h2>Pictures</h2>
{pics or "<p>No pictures.</p>"}
<h2>Files</h2>
<table><tr><th>folder</th><th>what</th></tr>
{files}
</table>
</body></html>
"""
    html_path = ctx.out / "report.html"
    write_text(html_path, page)
    write_json(ctx.out / "report.json", data, indent=1)
    return html_path, md_path


def _folders(ctx: DemoContext) -> list[tuple[Path, str]]:
    w = ctx.work
    return [
        (w / "people", "rendered people (p2m synth --images), the website's pictures"),
        (w / "crawl", "crawl output: images/, manifest.parquet, stats.json, crawl.sqlite"),
        (w / "web", "the crawled people as a dataset (detect, fit): annotations/, images/"),
        (w / "synth-train", "synthetic training data (pose-only)"),
        (w / "synth-eval", "synthetic evaluation data (pose-only)"),
        (w / "shards", "WebDataset shards + index.json"),
        (w / "run", "the training run: config.yaml, metrics.jsonl, checkpoints/, best.safetensors"),
        (w / "infer", "the mesh made from a crawled picture"),
    ]
