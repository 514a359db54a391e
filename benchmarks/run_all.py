"""Run every benchmark and rewrite benchmarks/BENCHMARKS.md as one table.

Each script prints ``BENCH_ROW`` lines (benchmarks/rows.py): a figure, the baseline measured in the same run and
the ratio. A script that fails or prints no row is listed under "Missing", with its last error line, rather than
skipped silently; so is a row without a baseline.

    python benchmarks/run_all.py [--quick] [--only crawl,shards]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rows import PREFIX, machine  # noqa: E402

# name -> (script, full arguments, --quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "synth": ("bench_synth.py", ["--num", "10000"], ["--num", "10000"]),
    "body": ("bench_body.py", [], ["--repeats", "3"]),
    "render": ("bench_render.py", [], []),
    "crawl": ("bench_crawl.py", ["--images", "5000"], ["--images", "1000"]),
    "shards": ("bench_shards.py", ["--frames", "2000"], ["--frames", "500"]),
    "meshnet": ("bench_meshnet.py", [], ["--min-time", "2"]),
    "train": ("bench_train.py", [], ["--full-steps", "2"]),
    "cpu_step": ("bench_cpu_step.py", [], ["--min-time", "1", "--no-compile"]),
    "fit": ("bench_fit.py", [], ["--num", "32", "--images", "16"]),
    "detect": ("bench_detect.py", [], []),
    "infer": ("bench_infer.py", [], ["--num", "500"]),
    "refine": ("bench_refine.py", ["--out", "/tmp/p2m-refine"], ["--num", "16", "--out", "/tmp/p2m-refine"]),
    "ray": (
        "bench_ray.py",
        [],
        ["--synth", "500", "--photos", "8", "--people", "4", "--urls", "2000", "--hosts", "16"],
    ),
}


def run(name: str, args: list[str], timeout: float) -> tuple[list[dict], str | None, float]:
    script = HERE / BENCHMARKS[name][0]
    if not script.exists():
        return [], f"{script.name} does not exist", 0.0
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f} s", time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    rows = [json.loads(line[len(PREFIX) :]) for line in proc.stdout.splitlines() if line.startswith(PREFIX)]
    error = None
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        error = f"exit {proc.returncode}: {tail[-1] if tail else 'no message'}"
    elif not rows:
        error = "printed no BENCH_ROW line"
    return rows, error, seconds


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(results: dict[str, tuple[list[dict], str | None, float]], quick: bool) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python benchmarks/run_all.py{' --quick' if quick else ''}` on "
        f"{dt.date.today().isoformat()}; machine: {machine()}.",
        "Every ratio is p2m / baseline, both measured in the same run; the last column says which way is better.",
        "",
        "| benchmark | figure | p2m | baseline | baseline value | ratio | better | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    missing = []
    for name, (rows, error, _seconds) in results.items():
        for r in rows:
            lines.append(
                f"| {name} | {r['figure']} | {fmt(r['value'])} {r['unit']} | {r['baseline'] or '—'} "
                f"| {fmt(r['baseline_value'])} | {fmt(r['ratio'])}x | {'higher' if r['higher_is_better'] else 'lower'} "
                f"| {r['note']} |"
            )
            if r["baseline"] is None or r["baseline_value"] is None:
                missing.append(
                    f"- {name}: {r['figure']}: no baseline value ({r['note'] or 'no reason given'})"
                )
        if error:
            missing.append(f"- {name}: {error}")
    lines += ["", "## Missing", ""] + (
        missing or ["- nothing: every benchmark ran and every row has a baseline"]
    )
    extra = HERE / "MEASURED_ELSEWHERE.md"
    if extra.exists():
        lines += ["", extra.read_text().strip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (minutes instead of tens of minutes)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    ap.add_argument("--out", type=Path, default=HERE / "BENCHMARKS.md")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; expected some of {', '.join(BENCHMARKS)}")
    results = {}
    for name in names:
        _, full, quick = BENCHMARKS[name]
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        results[name] = run(name, quick if args.quick else full, args.timeout)
        rows, error, seconds = results[name]
        print(
            f"[run_all] {name}: {len(rows)} row(s) in {seconds:.0f} s{'; ' + error if error else ''}",
            file=sys.stderr,
            flush=True,
        )
    sys.path.insert(0, str(HERE.parent))
    from p2m.io import write_text

    write_text(args.out, render(results, args.quick))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
