"""Benchmark: wall time of each data stage run locally vs with ``--ray`` on this machine, and a crawl over actors.

Every Ray figure has the local run of the same stage, same arguments, measured in the same run as its baseline.
Ray runs on this machine (``ray.init(num_cpus=--cpus)``), so on a 2-core box the rows show Ray's overhead (task
and actor start-up, serialisation, the object store), not a speed-up; Ray's own start-up is a row of its own
and is not included in the stage rows. The crawl serves ``--urls`` distinct JPEGs from ``--hosts`` loopback
ports (one politeness host each) with ``--latency`` per response, from a child process, and crawls the URL list
locally and with 1, 2 and 4 crawler actors.

    python benchmarks/bench_ray.py [--synth 2000] [--urls 20000] [--hosts 64] [--latency 0.05] [--skip-crawl]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402

LOCAL = "local run, same arguments, same run"


def timed(func):
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


# -- the crawl's server (child process) -------------------------------------------------------------------
def serve(n_images: int, n_hosts: int, latency: float, ready_file: str) -> None:
    """``n_images`` distinct small JPEGs (about 3 KB) on ``n_hosts`` loopback ports, ``latency`` s each."""
    import numpy as np
    from aiohttp import web
    from PIL import Image

    rng = np.random.RandomState(0)
    base = [Image.fromarray((rng.rand(4, 4, 3) * 255).astype(np.uint8)).resize((96, 72)) for _ in range(64)]
    cache: dict[int, bytes] = {}

    def image_bytes(i: int) -> bytes:  # made on first request: distinct bytes and phash per index
        if i not in cache:
            im = np.asarray(base[i % 64], np.int16).copy()
            im[(i // 64) % 72, :, :] = (i * 37) % 256
            im[:, (i // 4608) % 96, 1] = (i * 11) % 256
            buf = io.BytesIO()
            Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
            cache[i] = buf.getvalue()
        return cache[i]

    async def robots(request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n", content_type="text/plain")

    async def image(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        return web.Response(body=image_bytes(int(request.match_info["i"])), content_type="image/jpeg")

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
        Path(ready_file).write_text(json.dumps({"ports": ports}))
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the stages -------------------------------------------------------------------------------------------
def bench_stages(tmp: Path, args: argparse.Namespace) -> None:
    from p2m.annotate.synth import SynthOptions

    stages = set(args.stages.split(","))
    opts = SynthOptions(num=args.synth, poses="cmu-train", subjects=8, seed=1)
    if stages & {"synth", "shard"}:
        bench_synth_shard(tmp, args, opts)
    if "detect" in stages:
        bench_detect(tmp, args)
    if "fit" in stages:
        bench_fit(tmp, args)


def bench_synth_shard(tmp: Path, args: argparse.Namespace, opts) -> None:
    from p2m.annotate.synth import synth
    from p2m.scale.shard import build_shards as ray_build_shards
    from p2m.scale.synth import synth as ray_synth
    from p2m.shards import build_shards

    local, _ = timed(lambda: synth(tmp / "synth-local", opts, progress=False))
    ray, stats = timed(lambda: ray_synth(tmp / "synth-ray", opts, progress=False))
    emit(
        "ray",
        f"synth wall s ({args.synth} pose-only samples, h36m cameras, 8 subjects)",
        round(ray, 2),
        "s",
        LOCAL,
        round(local, 2),
        higher_is_better=False,
        note=f"{stats['ray_tasks']} Ray tasks; same bytes as local",
    )

    local, _ = timed(lambda: build_shards([tmp / "synth-local"], tmp / "shards-local", maxcount=500))
    ray, _ = timed(lambda: ray_build_shards([tmp / "synth-local"], tmp / "shards-ray", maxcount=500))
    emit(
        "ray",
        f"shard wall s ({args.synth} pose-only samples, 8 subjects)",
        round(ray, 2),
        "s",
        LOCAL + " (--workers 1)",
        round(local, 2),
        higher_is_better=False,
        note="one Ray task per subject",
    )


def bench_detect(tmp: Path, args: argparse.Namespace) -> None:
    from p2m.annotate.detect import detect
    from p2m.annotate.synth import SynthOptions, synth
    from p2m.scale.detect import detect as ray_detect

    photos = SynthOptions(
        num=args.photos, poses="cmu-train", cameras="random", images=True, image_size=256, seed=2
    )
    synth(tmp / "photos", photos, progress=False)
    src = tmp / "photos" / "images"
    local, _ = timed(lambda: detect(src, tmp / "detect-local", batch=256, progress=False))
    ray, _ = timed(lambda: ray_detect(src, tmp / "detect-ray", batch=256, progress=False))
    emit(
        "ray",
        f"annotate detect wall s ({args.photos} rendered 256 px photos, MediaPipe)",
        round(ray, 2),
        "s",
        LOCAL,
        round(local, 2),
        higher_is_better=False,
        note="tasks of a few images; MediaPipe loaded once per worker",
    )


def bench_fit(tmp: Path, args: argparse.Namespace) -> None:
    import torch

    import p2m.annotate.fit as fit_module
    from p2m.annotate.fit import fit_bodies as fit
    from p2m.annotate.fit_solver import SolverOptions
    from p2m.annotate.synth import SynthOptions, synth
    from p2m.layout import subject_file
    from p2m.scale import common
    from p2m.scale.fit import fit as ray_fit

    people = tmp / "fit-local"
    synth(people, SynthOptions(num=args.people, poses="cmu-eval", cameras="random", seed=3), progress=False)
    for kind in ("joint_3d", "body_param"):
        subject_file(people, "synth", 1, kind).unlink()
    shutil.copytree(people, tmp / "fit-ray")
    solver = SolverOptions(candidates=8)
    fopts = dict(iters=40, batch=max(1, args.people // 4), options=solver, progress=False)
    shutil.copytree(people, tmp / "fit-one-thread")
    threads = torch.get_num_threads()
    local, _ = timed(lambda: fit(people, device="cpu", **fopts))
    torch.set_num_threads(1)
    fit_module._FITTER.clear()  # build the solver again, as the first run and every Ray worker do
    local_1, _ = timed(lambda: fit(tmp / "fit-one-thread", device="cpu", **fopts))
    torch.set_num_threads(threads)
    ray, _ = timed(lambda: ray_fit(tmp / "fit-ray", **fopts))
    what = f"annotate fit wall s ({args.people} people, 40 iters, 4 chunks)"
    note = f"CPU; {int(common.cluster_cpus())} Ray CPUs, each worker 1 torch thread"
    emit(
        "ray",
        what,
        round(ray, 2),
        "s",
        LOCAL + f" (torch {threads} threads)",
        round(local, 2),
        higher_is_better=False,
        note=note,
    )
    emit(
        "ray",
        what,
        round(ray, 2),
        "s",
        LOCAL + " (torch 1 thread)",
        round(local_1, 2),
        higher_is_better=False,
        note=note,
    )


def bench_crawl(tmp: Path, args: argparse.Namespace) -> None:
    from p2m.crawler import crawl
    from p2m.scale.crawl import crawl as ray_crawl

    ready = tmp / "ready.json"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(args.urls), str(args.hosts), str(args.latency), str(ready)]
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the benchmark server did not start")
            time.sleep(0.1)
        ports = json.loads(ready.read_text())["ports"]
        urls = tmp / "urls.txt"
        urls.write_text(
            "".join(f"http://127.0.0.1:{ports[i % len(ports)]}/img/{i}.jpg\n" for i in range(args.urls))
        )
        opts = dict(
            allow_private=True,
            concurrency=64,
            per_host=2,
            delay=0.0,
            min_size_px=32,
            progress=False,
            manifest_every_s=0,
        )
        local, result = timed(lambda: crawl([str(urls)], tmp / "crawl-local", **opts))
        local_rate = result.images_stored / local
        where = f"{args.urls} URLs, {args.hosts} loopback hosts, {args.latency * 1000:.0f} ms latency"
        print(
            json.dumps({"crawl": "local", "images": result.images_stored, "wall_s": round(local, 2)}),
            flush=True,
        )
        for actors in (1, 2, 4):
            wall, res = timed(
                lambda a=actors: ray_crawl([str(urls)], tmp / f"crawl-ray{a}", actors=a, **opts)
            )
            print(
                json.dumps({"crawl": f"ray {actors}", "images": res.images_stored, "wall_s": round(wall, 2)}),
                flush=True,
            )
            emit(
                "ray",
                f"crawl images/s ({where}), {actors} actor(s)",
                round(res.images_stored / wall, 1),
                "img/s",
                "local crawl, same URL list, same run",
                round(local_rate, 1),
                note=f"{res.images_stored} images in {wall:.1f} s vs local {result.images_stored} in {local:.1f} s; "
                "concurrency 64 and per-host 2 per actor, robots.txt on",
            )
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", type=int, default=2000, help="pose-only samples for synth and shard")
    parser.add_argument("--photos", type=int, default=48, help="rendered photos for detect")
    parser.add_argument("--people", type=int, default=8, help="people for fit")
    parser.add_argument("--urls", type=int, default=20000)
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--skip-stages", action="store_true")
    parser.add_argument("--stages", default="synth,shard,detect,fit", help="which stages to time")
    parser.add_argument("--skip-crawl", action="store_true")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), int(args.serve[1]), float(args.serve[2]), args.serve[3])
        return
    from p2m.scale import common

    seconds, _ = timed(lambda: common.init(common.LOCAL, num_cpus=args.cpus))
    emit(
        "ray",
        f"ray.init of a local instance ({args.cpus} CPUs)",
        round(seconds, 2),
        "s",
        None,
        None,
        higher_is_better=False,
        note="paid once per command; not included in the rows below",
    )
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        if not args.skip_stages:
            bench_stages(Path(tmp), args)
        if not args.skip_crawl:
            bench_crawl(Path(tmp), args)


if __name__ == "__main__":
    main()
