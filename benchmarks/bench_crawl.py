"""Benchmark: images/s and peak memory of `p2m crawl` (polite) vs img2dataset on the same local URL list.

A child process serves N distinct JPEGs from H loopback ports (one "host" each) with a simulated
latency per request; both tools download the same URL list. p2m runs with politeness on: it reads
robots.txt on every host, keeps at most --per-host requests in flight per host, and honours
Crawl-delay/Retry-After (img2dataset does none of this). Peak memory is the largest summed RSS of
the tool's whole process tree, sampled every 20 ms.

    python benchmarks/bench_crawl.py [--images 2000] [--hosts 50] [--latency 0.05]

Prints one JSON line per tool, then a markdown table row with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402


# -- the server (child process) -------------------------------------------------------------------
def serve(n_images: int, n_hosts: int, latency: float, ready_file: str) -> None:
    import numpy as np
    from aiohttp import web
    from PIL import Image

    rng = np.random.RandomState(0)
    images = []
    for _ in range(n_images):
        grid = (rng.rand(8, 8, 3) * 255).astype(np.uint8)
        im = Image.fromarray(grid).resize((400, 300), Image.BICUBIC)
        noise = rng.randint(0, 24, (300, 400, 3), dtype=np.uint8)
        im = Image.fromarray(np.clip(np.asarray(im, np.int16) + noise - 12, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        images.append(buf.getvalue())

    async def robots(request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n", content_type="text/plain")

    async def image(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        i = int(request.match_info["i"])
        return web.Response(body=images[i], content_type="image/jpeg")

    async def main() -> None:
        ports = []
        for _ in range(n_hosts):
            app = web.Application()
            app.router.add_get("/robots.txt", robots)
            app.router.add_get("/img/{i}.jpg", image)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            ports.append(runner.addresses[0][1])
        Path(ready_file).write_text(json.dumps({"ports": ports, "bytes": sum(map(len, images))}))
        await asyncio.Event().wait()

    asyncio.run(main())


# -- measuring --------------------------------------------------------------------------------------
def tree_rss(root: int) -> int:
    """Summed RSS in bytes of ``root`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
        stack.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, int, str]:
    """Run ``cmd``; returns (wall seconds, peak tree RSS bytes, stderr tail)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        if time.monotonic() - start > timeout:
            proc.kill()
            break
        time.sleep(0.02)
    wall = time.monotonic() - start
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}: {err[-2000:]}")
    return wall, peak, err[-500:]


def run_img2dataset(urls: Path, out: Path, processes: int, threads: int, timeout: float) -> dict:
    code = (
        "import sys; from img2dataset import download; "
        f"download(url_list={str(urls)!r}, output_folder={str(out)!r}, output_format='files', input_format='txt', "
        f"processes_count={processes}, thread_count={threads}, resize_mode='no', timeout=10, retries=0, "
        "number_sample_per_shard=1000, extract_exif=False, compute_hash='sha256', disallowed_header_directives=[])"
    )
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    wall, peak, _ = run_measured([sys.executable, "-c", code], env, timeout)
    ok = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    return {"tool": "img2dataset", "config": f"{processes} processes x {threads} threads, resize_mode=no",
            "images": ok, "wall_s": round(wall, 2), "images_per_s": round(ok / wall, 1),
            "peak_rss_mb": round(peak / 2**20, 1)}


def run_p2m(urls: Path, out: Path, concurrency: int, per_host: int, delay: float, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "p2m", "crawl", str(urls), "--out", str(out), "--allow-private", "--no-progress",
           "--concurrency", str(concurrency), "--per-host", str(per_host), "--delay", str(delay), "--min-size", "32"]
    wall, peak, _ = run_measured(cmd, dict(os.environ), timeout)
    stats = json.loads((out / "stats.json").read_text())
    ok = stats["run"]["counters"].get("image/stored", 0)
    return {"tool": "p2m", "config": f"concurrency {concurrency}, per-host {per_host}, delay {delay} s, robots.txt on",
            "images": ok, "wall_s": round(wall, 2), "images_per_s": round(ok / wall, 1),
            "peak_rss_mb": round(peak / 2**20, 1), "requests": stats["run"]["counters"].get("fetch/requests", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every image response")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--per-host", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.0, help="p2m --delay (robots.txt is always obeyed)")
    parser.add_argument("--i2d-processes", type=int, default=2)
    parser.add_argument("--i2d-threads", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), int(args.serve[1]), float(args.serve[2]), args.serve[3])
        return
    with tempfile.TemporaryDirectory(prefix="bench-crawl-") as tmp:
        tmp_path = Path(tmp)
        ready = tmp_path / "ready.json"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(args.images), str(args.hosts),
                                   str(args.latency), str(ready)])
        try:
            deadline = time.monotonic() + 120
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start")
                time.sleep(0.1)
            info = json.loads(ready.read_text())
            ports = info["ports"]
            urls = tmp_path / "urls.txt"
            # host-interleaved order, as a shuffled real-world list would be
            urls.write_text("".join(f"http://127.0.0.1:{ports[i % len(ports)]}/img/{i}.jpg\n"
                                    for i in range(args.images)))
            one = tmp_path / "one.txt"  # a one-URL run measures start-up and shutdown cost
            one.write_text(f"http://127.0.0.1:{ports[0]}/img/0.jpg\n")
            base = run_img2dataset(urls, tmp_path / "i2d", args.i2d_processes, args.i2d_threads, args.timeout)
            base_fixed = run_img2dataset(one, tmp_path / "i2d1", args.i2d_processes, args.i2d_threads, 120)["wall_s"]
            ours = run_p2m(urls, tmp_path / "p2m", args.concurrency, args.per_host, args.delay, args.timeout)
            ours_fixed = run_p2m(one, tmp_path / "p2m1", args.concurrency, args.per_host, args.delay, 120)["wall_s"]
            for r, fixed in ((base, base_fixed), (ours, ours_fixed)):
                r["startup_s"] = fixed
                r["images_per_s_after_startup"] = round(r["images"] / max(r["wall_s"] - fixed, 1e-3), 1)
        finally:
            server.kill()
            server.wait()
    setup = {"images": args.images, "hosts": args.hosts, "latency_s": args.latency,
             "mean_image_kb": round(info["bytes"] / args.images / 1024, 1), "cpus": os.cpu_count()}
    for r in (base, ours):
        print(json.dumps({**r, **setup}))
    ratio = ours["images_per_s"] / max(base["images_per_s"], 1e-9)
    steady = ours["images_per_s_after_startup"] / max(base["images_per_s_after_startup"], 1e-9)
    mem = ours["peak_rss_mb"] / max(base["peak_rss_mb"], 1e-9)
    where = f"{args.images} JPEGs, {args.hosts} loopback hosts, {args.latency * 1000:.0f} ms latency"
    emit("crawl", f"images/s end to end ({where})", ours["images_per_s"], "img/s", "img2dataset, same URL list",
         base["images_per_s"], note=f"p2m politeness on: {ours['config']}; img2dataset: {base['config']}")
    emit("crawl", "images/s after start-up", ours["images_per_s_after_startup"], "img/s",
         "img2dataset after start-up", base["images_per_s_after_startup"],
         note=f"start-up: p2m {ours['startup_s']:.1f} s, img2dataset {base['startup_s']:.1f} s")
    emit("crawl", "peak memory (RSS)", ours["peak_rss_mb"], "MB", "img2dataset", base["peak_rss_mb"],
         higher_is_better=False)
    print(f"| crawl ({args.images} JPEGs, {args.hosts} loopback hosts, {args.latency * 1000:.0f} ms latency) "
          f"| p2m {ours['images_per_s']} img/s ({ours['images_per_s_after_startup']} after start-up), "
          f"{ours['peak_rss_mb']} MB peak ({ours['config']}) "
          f"| img2dataset {base['images_per_s']} img/s ({base['images_per_s_after_startup']} after start-up), "
          f"{base['peak_rss_mb']} MB peak ({base['config']}) "
          f"| {ratio:.2f}x end-to-end, {steady:.2f}x after start-up, {mem:.2f}x peak memory |")


if __name__ == "__main__":
    main()
