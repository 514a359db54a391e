"""Benchmark: images/s and peak memory of `p2m crawl` (polite) vs img2dataset on the same local URL lists.

A child process serves JPEGs (320x480, ~57 KB each) from H loopback ports (one "host" each) and
answers every image request after a fixed latency. Two list shapes, as users' lists look:

- ``dup``: N URLs that serve only D distinct images (CDN mirrors, reposts): most URLs are exact duplicates;
- ``unique``: N URLs, N distinct images.

p2m runs with politeness on: it reads robots.txt on every host and keeps at most --per-host
requests in flight per host (img2dataset does neither). img2dataset runs as the issue asks:
``--processes_count 2 --thread_count 64 --resize_mode no --disable_all_reencoding True``. The tools
run interleaved (p2m, img2dataset, p2m, ...) because the machine is shared; each row's ratio uses
the medians of the same run. Peak memory is the largest summed RSS of the tool's process tree,
sampled every 20 ms. "Nothing lost" is checked: every URL has its manifest row, and no image URL
ends other than ``ok`` or ``duplicate``.

    python benchmarks/bench_crawl.py [--images 3000] [--distinct 50] [--hosts 32] [--latency 0.05]
                                     [--shapes dup,unique] [--repeats 1]

Prints one JSON line per run, then BENCH_ROW lines (rows.py).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402


# -- the server (child process) -------------------------------------------------------------------
def make_jpeg(seed: int) -> bytes:
    """A 320x480 photo-like JPEG of ~57 KB (smooth colour field + grain), different for every seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    grid = (rng.rand(6, 4, 3) * 255).astype(np.uint8)
    im = Image.fromarray(grid).resize((320, 480), Image.BICUBIC)
    noise = rng.randint(0, 42, (480, 320, 3), dtype=np.int16)
    im = Image.fromarray(np.clip(np.asarray(im, np.int16) + noise - 21, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def serve(n_images: int, n_hosts: int, latency: float, ready_file: str) -> None:
    from aiohttp import web

    images = [make_jpeg(i) for i in range(n_images)]

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
            app.router.add_get("/img/{i}/{name}.jpg", image)
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


def run_measured(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, int, float]:
    """Run ``cmd``; returns (wall seconds, peak tree RSS bytes, CPU seconds of the tree)."""
    start = time.monotonic()
    before = os.times()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        if time.monotonic() - start > timeout:
            proc.kill()
            break
        time.sleep(0.02)
    wall = time.monotonic() - start
    after = os.times()
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode}: {err[-2000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, peak, cpu


def img2dataset_python() -> str:
    """The interpreter that has img2dataset: its own venv (``make bench`` makes ``.venv-img2dataset``), because
    img2dataset pins webdataset<0.3 and pulls a ``dataclasses`` backport that would break p2m's own venv."""
    return os.environ.get("P2M_IMG2DATASET_PYTHON", sys.executable)


def run_img2dataset(urls: Path, out: Path, processes: int, threads: int, timeout: float) -> dict:
    cmd = [
        img2dataset_python(),
        "-c",
        "import fire, img2dataset; fire.Fire(img2dataset.download)",
        "--url_list",
        str(urls),
        "--output_folder",
        str(out),
        "--output_format",
        "files",
        "--input_format",
        "txt",
        "--processes_count",
        str(processes),
        "--thread_count",
        str(threads),
        "--resize_mode",
        "no",
        "--disable_all_reencoding",
        "True",
        "--timeout",
        "10",
        "--retries",
        "0",
        "--number_sample_per_shard",
        "1000",
        "--extract_exif",
        "False",
        "--compute_hash",
        "sha256",
        "--disallowed_header_directives",
        "[]",
        "--enable_wandb",
        "False",
    ]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    wall, peak, cpu = run_measured(cmd, env, timeout)
    ok = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    return {
        "tool": "img2dataset",
        "config": f"{processes} processes x {threads} threads, resize_mode=no, disable_all_reencoding",
        "images": ok,
        "wall_s": round(wall, 2),
        "images_per_s": round(ok / wall, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "cpu_s": round(cpu, 1),
    }


def run_p2m(urls: Path, out: Path, args: argparse.Namespace, n_urls: int) -> dict:
    import pyarrow.parquet as pq

    cmd = [
        sys.executable,
        "-m",
        "p2m",
        "crawl",
        str(urls),
        "--out",
        str(out),
        "--allow-loopback",
        "--no-progress",
        "--concurrency",
        str(args.concurrency),
        "--per-host",
        str(args.per_host),
        "--delay",
        str(args.delay),
        "--min-size",
        "32",
    ]
    if args.image_processes is not None:
        cmd += ["--image-processes", str(args.image_processes)]
    wall, peak, cpu = run_measured(cmd, dict(os.environ), args.timeout)
    counters = json.loads((out / "stats.json").read_text())["run"]["counters"]
    rows = pq.read_table(out / "manifest.parquet", columns=["status"]).column("status").to_pylist()
    lost = n_urls - sum(s in ("ok", "duplicate") for s in rows)
    ok = counters.get("image/stored", 0) + counters.get("image/duplicate", 0)
    return {
        "tool": "p2m",
        "config": f"concurrency {args.concurrency}, per-host {args.per_host}, "
        f"delay {args.delay} s, robots.txt on",
        "images": ok,
        "stored_files": counters.get("image/stored", 0),
        "wall_s": round(wall, 2),
        "images_per_s": round(ok / wall, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "cpu_s": round(cpu, 1),
        "manifest_rows": len(rows),
        "lost": lost,
        "requests": counters.get("fetch/requests", 0),
        "robots": counters.get("robots/fetched", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="URLs per list")
    parser.add_argument("--distinct", type=int, default=50, help="distinct images behind the 'dup' list")
    parser.add_argument("--hosts", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before every image response")
    parser.add_argument("--shapes", default="dup,unique")
    parser.add_argument("--repeats", type=int, default=1, help="runs per tool and shape (interleaved)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--per-host", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.0, help="p2m --delay (robots.txt is always obeyed)")
    parser.add_argument(
        "--image-processes", type=int, default=None, help="p2m --image-processes (default: p2m's)"
    )
    parser.add_argument("--i2d-processes", type=int, default=2)
    parser.add_argument("--i2d-threads", type=int, default=64)
    parser.add_argument("--no-baseline", action="store_true", help="p2m only (profiling); prints no rows")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), int(args.serve[1]), float(args.serve[2]), args.serve[3])
        return
    shapes = [s for s in args.shapes.split(",") if s]
    n_served = args.images if "unique" in shapes else args.distinct
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-crawl-") as tmp:
        tmp_path = Path(tmp)
        ready = tmp_path / "ready.json"
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                str(n_served),
                str(args.hosts),
                str(args.latency),
                str(ready),
            ]
        )
        try:
            deadline = time.monotonic() + 300
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start")
                time.sleep(0.1)
            info = json.loads(ready.read_text())
            ports = info["ports"]
            for shape in shapes:
                distinct = args.distinct if shape == "dup" else args.images
                urls = tmp_path / f"urls-{shape}.txt"
                # host-interleaved order, as a shuffled real-world list would be; every URL differs
                urls.write_text(
                    "".join(
                        f"http://127.0.0.1:{ports[i % len(ports)]}/img/{i % distinct}/u{i}.jpg\n"
                        for i in range(args.images)
                    )
                )
                for rep in range(args.repeats):
                    tools = (
                        ["p2m"]
                        if args.no_baseline
                        else (["p2m", "img2dataset"] if rep % 2 == 0 else ["img2dataset", "p2m"])
                    )
                    for tool in tools:
                        out = tmp_path / f"{tool}-{shape}-{rep}"
                        if tool == "p2m":
                            r = run_p2m(urls, out, args, args.images)
                        else:
                            r = run_img2dataset(urls, out, args.i2d_processes, args.i2d_threads, args.timeout)
                        r.update(shape=shape, distinct=distinct, repeat=rep)
                        print(json.dumps(r), flush=True)
                        results.setdefault((shape, tool), []).append(r)
        finally:
            server.kill()
            server.wait()
    if args.no_baseline:
        return
    kb = info["bytes"] / n_served / 1024
    for shape in shapes:
        ours, base = results[(shape, "p2m")], results[(shape, "img2dataset")]
        med = lambda rs, k: round(statistics.median(r[k] for r in rs), 1)  # noqa: E731
        lost = max(r["lost"] for r in ours)
        distinct = ours[0]["distinct"]
        where = (
            f"{args.images} URLs -> {distinct} distinct 320x480 JPEGs (~{kb:.0f} KB), {args.hosts} loopback "
            f"hosts, {args.latency * 1000:.0f} ms latency"
        )
        emit(
            "crawl",
            f"images/s ({where})",
            med(ours, "images_per_s"),
            "img/s",
            "img2dataset, same URL list, same run",
            med(base, "images_per_s"),
            note=f"p2m politeness on: {ours[0]['config']}; img2dataset: {base[0]['config']}; "
            f"median of {len(ours)} interleaved runs; URLs without a manifest row or not ok: {lost}; "
            f"CPU s p2m {med(ours, 'cpu_s')}, img2dataset {med(base, 'cpu_s')}",
        )
        emit(
            "crawl",
            f"peak memory, RSS of the process tree ({shape} list)",
            med(ours, "peak_rss_mb"),
            "MB",
            "img2dataset",
            med(base, "peak_rss_mb"),
            higher_is_better=False,
        )


if __name__ == "__main__":
    main()
