"""Benchmark p2m.render's z-buffer against a painter's-algorithm PIL polygon renderer on the same mesh.

Usage: python benchmarks/bench_render.py [--size 512] [--repeats 5] [--mesh anny|sphere]

Prints one JSON line and one markdown row: median seconds per 512x512 image for both renderers, the
speed ratio, and the IoU of their silhouettes (a sanity check that both drew the same thing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2m.render import procedural_background, render_mesh  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402


def painter_render(
    verts: np.ndarray, faces: np.ndarray, f: float, c: tuple[float, float], size: int, bg
) -> np.ndarray:
    """Baseline: sort faces far to near, draw each as a flat-Lambert PIL polygon (no z-buffer)."""
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    front = np.einsum("fd,fd->f", n, tri[:, 0]) < 0
    light = np.array([0.35, -0.55, -1.0]) / np.linalg.norm([0.35, -0.55, -1.0])
    shade = 0.35 + 0.65 * np.clip(n @ light, 0, None)
    uv = f * tri[:, :, :2] / tri[:, :, 2:3] + np.asarray(c)
    order = np.argsort(-tri[:, :, 2].mean(1))
    order = order[front[order]]
    img = Image.fromarray(bg.copy())
    draw = ImageDraw.Draw(img)
    cols = np.clip(np.rint(np.outer(shade, (205, 180, 160))), 0, 255).astype(int)
    for k in order:
        draw.polygon([tuple(p) for p in uv[k]], fill=tuple(cols[k]))
    return np.asarray(img)


def load_mesh(kind: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Camera-frame vertices (metres, 4.5 m in front) and faces of the benchmark mesh."""
    if kind == "anny":
        try:
            from p2m.paths import configure_third_party_caches

            configure_third_party_caches()
            import warp

            warp.config.log_level = warp.LOG_WARNING
            import anny
            import torch

            model = anny.Anny().float()
            with torch.no_grad():
                out = model(pose_parameters=torch.eye(4).expand(1, len(model.bone_labels), 4, 4))
            v = out["vertices"][0].double().numpy()
            cam = np.stack([v[:, 0], -v[:, 2], v[:, 1] + 4.5], axis=1)
            return cam, np.asarray(model.faces, np.int64), "anny rest pose"
        except Exception as exc:  # noqa: BLE001 - fall back to a mesh of similar size
            print(f"anny unavailable ({exc!r}); using an icosphere", file=sys.stderr)
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=5, radius=0.8)
    return s.vertices + [0.0, 0.0, 4.5], np.asarray(s.faces), "icosphere(5)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mesh", choices=["anny", "sphere"], default="anny")
    args = ap.parse_args()
    verts, faces, name = load_mesh(args.mesh)
    size, f = args.size, 1000.0 * args.size / 512
    c = (size / 2, size / 2)
    bg = procedural_background(size, size, np.random.default_rng(0))

    def timed(fn):
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), out

    t_z, res = timed(lambda: render_mesh(verts, faces, f, c, (size, size), background=bg))
    t_zc, _ = timed(lambda: render_mesh(verts, faces, f, c, (size, size), background=bg, cull_backfaces=True))
    t_p, img_p = timed(lambda: painter_render(verts, faces, f, c, size, bg))
    mask_p = (img_p != bg).any(axis=2)
    iou = float((mask_p & res.mask).sum() / max((mask_p | res.mask).sum(), 1))
    row = {
        "benchmark": "render",
        "mesh": name,
        "vertices": int(len(verts)),
        "faces": int(len(faces)),
        "image": f"{size}x{size}",
        "zbuffer_s": round(t_z, 4),
        "zbuffer_cull_s": round(t_zc, 4),
        "baseline": "painter's algorithm, PIL ImageDraw.polygon per front face",
        "baseline_s": round(t_p, 4),
        "speedup": round(t_p / t_z, 2),
        "silhouette_iou": round(iou, 4),
    }
    print(json.dumps(row))
    emit(
        "render",
        f"ms per {size}x{size} image, {name} ({len(faces)} faces)",
        round(t_z * 1000, 1),
        "ms",
        "painter's algorithm with PIL polygons",
        round(t_p * 1000, 1),
        higher_is_better=False,
        note=f"silhouette IoU vs baseline {iou:.3f}; with back-face culling {t_zc * 1000:.0f} ms",
    )
    print(
        f"| render {name} {size}x{size} ({len(faces)} faces) | z-buffer {t_z * 1000:.0f} ms "
        f"(culled {t_zc * 1000:.0f} ms) | painter PIL {t_p * 1000:.0f} ms | {t_p / t_z:.1f}x | IoU {iou:.3f} |"
    )


if __name__ == "__main__":
    main()
