"""`p2m demo`: the whole pipeline on embedded defaults, offline, from rendered people to a trained model and a report.

Steps (:data:`p2m.demo.steps.STEPS`): render people -> serve them as a local website -> crawl it -> detect 2D
keypoints -> fit the body model -> validate -> synthesise training data -> shard -> train -> evaluate -> infer a
mesh from a crawled picture. Each step calls its stage's public entry function; a stage that is not built yet is
skipped with a line that says so. The report (``report.html``, ``report.md``, ``report.json``) lands in the demo
folder; every stage's output stays under ``work/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2m.demo.runner import FULL, QUICK, DemoContext, Metric, Sizes, Step, StepRecord, run_steps
from p2m.errors import P2MError
from p2m.io import write_text

logger = logging.getLogger(__name__)

MARKER = ".p2m-demo"
__all__ = ["FULL", "QUICK", "DemoResult", "Metric", "Sizes", "Step", "StepRecord", "run_demo"]


@dataclass
class DemoResult:
    """What :func:`run_demo` returns.

    Attributes:
        out: the demo folder.
        report_html, report_md: the report files.
        steps: one record per step (``ok`` / ``skipped``).
        metrics: the report's metrics table.
        seconds: wall time of the whole demo.
        site: the local website, still serving when ``keep_serving`` was set (call ``site.stop()``), else None.
    """

    out: Path
    report_html: Path
    report_md: Path
    steps: list[StepRecord]
    metrics: list[Metric]
    seconds: float
    site: Any = None


def prepare_folder(out: Path) -> None:
    """Create the demo folder, or clear an earlier demo's outputs in it.

    Raises:
        P2MError: ``out`` is a file, or a non-empty folder that no earlier demo made (nothing is deleted then).
    """
    if out.exists() and not out.is_dir():
        raise P2MError(f"--out {out}: is a file; give a folder for the demo")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise P2MError(
                f"--out {out}: the folder is not empty and was not made by `p2m demo` ({MARKER} missing); "
                "choose an empty or new folder"
            )
        for name in ("work", "figures"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("report.html", "report.md", "report.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text(
        out / MARKER,
        "made by `p2m demo`; `p2m demo --out` on this folder replaces work/, figures/ and the reports\n",
    )


def cpu_threads() -> int | None:
    """Torch CPU threads for the demo: the cores the load average leaves idle (at least 1), or None if unknown.

    On a shared machine, more compute threads than idle cores make torch far slower (threads wait on each other:
    8x per training step on 2 busy cores), so the demo uses only the idle ones.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = os.cpu_count() or 1
    return max(1, min(cores, int(cores - load + 0.5)))


def run_demo(
    out: str | Path = "demo-out",
    *,
    quick: bool = False,
    device: str = "auto",
    seed: int = 0,
    keep_serving: bool = False,
    steps: tuple[Step, ...] | None = None,
    echo: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo pipeline into ``out`` and write its report.

    Args:
        out: the demo folder (created; an earlier demo's outputs in it are replaced).
        quick: the reduced mode (fewer pictures, less data, one short epoch), for CI.
        device: torch device for fitting, training, evaluation and inference (``auto``, ``cpu``, ``cuda``).
        seed: base seed of the synthetic data.
        keep_serving: leave the local website running (``result.site``) after the demo.
        steps: the steps to run (default :data:`p2m.demo.steps.STEPS`).
        echo: prints one line per step (default: the log at INFO).

    Returns:
        A :class:`DemoResult`.

    Raises:
        P2MError: a step failed (the message names it and why; a partial report is written first), or ``out``
            cannot be used.
    """
    from p2m.demo.report import write_report
    from p2m.demo.steps import STEPS
    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    say = echo or logger.info
    out = Path(out).resolve()
    prepare_folder(out)
    ctx = DemoContext(
        out=out,
        work=out / "work",
        figures=out / "figures",
        quick=quick,
        sizes=QUICK if quick else FULL,
        device=device,
        seed=seed,
    )
    ctx.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say(f"p2m demo ({'quick' if quick else 'full'} mode) in {out}")
    import torch

    threads_before = torch.get_num_threads()
    threads = cpu_threads()
    if threads is not None and threads < threads_before:
        torch.set_num_threads(threads)
        say(
            f"the CPUs are busy (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): torch uses "
            f"{threads} thread(s)"
        )

    def partial_report(records: list[StepRecord]) -> None:
        html_path, _ = write_report(ctx, records, time.perf_counter() - t0)
        say(f"partial report: {html_path}")

    finished = False
    try:
        records = run_steps(steps if steps is not None else STEPS, ctx, say, partial_report)
        seconds = time.perf_counter() - t0
        html_path, md_path = write_report(ctx, records, seconds)
        finished = True
    finally:
        torch.set_num_threads(threads_before)
        if ctx.site is not None and not (keep_serving and finished):
            ctx.site.stop()
    return DemoResult(
        out, html_path, md_path, records, ctx.metrics, seconds, ctx.site if keep_serving else None
    )
