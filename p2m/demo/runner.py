"""The demo's step machinery: a list of named steps run in order, each timed, skipped when its stage is absent.

A step whose stage module is not installed (a stage still being built) or whose input step did not run is
reported as skipped with the reason; a step that raises stops the demo with a :class:`P2MError` naming it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2m.errors import P2MError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sizes:
    """How much work each step does (see :data:`QUICK` and :data:`FULL`)."""

    people: int  # pictures of people rendered for the website
    image_size: int  # their width and height, px
    train_samples: int  # pose-only synthetic training samples (people x 4 cameras)
    eval_samples: int  # evaluation samples
    epochs: int  # training epochs
    val_samples: int  # validation samples per epoch during training
    fit_iters: int  # pose-stage steps of the body fit
    fit_headings: int  # initial headings tried by the fit
    fit_starts: int  # front/back starts kept by the fit


QUICK = Sizes(people=8, image_size=320, train_samples=1600, eval_samples=320, epochs=1, val_samples=160,
              fit_iters=50, fit_headings=4, fit_starts=1)  # fmt: skip
FULL = Sizes(people=18, image_size=448, train_samples=6000, eval_samples=1000, epochs=3, val_samples=400,
             fit_iters=150, fit_headings=8, fit_starts=2)  # fmt: skip


@dataclass
class Metric:
    """One row of the report's metrics table."""

    step: str
    name: str
    value: float | int | None
    unit: str = ""


@dataclass
class Picture:
    """One picture of the report: a file under the demo folder and its caption."""

    path: Path
    title: str
    caption: str = ""


@dataclass
class DemoContext:
    """What the steps share: folders, sizes, the running site, and what each step found.

    Attributes:
        out: the demo folder (report files).
        work: ``out/work``, where every stage writes.
        figures: ``out/figures``, the report's pictures.
        quick: the reduced mode.
        sizes: the work sizes of this mode.
        device: torch device name for fit, train, eval and infer (``auto``, ``cpu``, ``cuda``).
        seed: base seed of the synthetic data.
        facts: values steps pass on (paths, counts), by name.
        metrics: rows of the report's metrics table.
        pictures: the report's pictures.
    """

    out: Path
    work: Path
    figures: Path
    quick: bool
    sizes: Sizes
    device: str = "auto"
    seed: int = 0
    facts: dict[str, Any] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    site: Any = None

    def metric(self, step: str, name: str, value: float | int | None, unit: str = "") -> None:
        """Add a row to the metrics table (None or non-finite values show as missing in the report)."""
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        self.metrics.append(Metric(step, name, value, unit))

    def picture(self, path: Path, title: str, caption: str = "") -> None:
        """Add a picture (a file under :attr:`out`) to the report."""
        self.pictures.append(Picture(Path(path), title, caption))


@dataclass(frozen=True)
class Step:
    """One step of the demo.

    Attributes:
        name: short name, printed and used by :attr:`needs`.
        title: what the step does, for the report.
        run: ``run(ctx) -> summary line``; raises on failure.
        requires: modules that must be importable (a stage not built yet, or an optional package not installed,
            makes the step skip).
        needs: steps that must have run (not skipped) before this one.
        hint: how to install a missing optional package, shown with the skip.
    """

    name: str
    title: str
    run: Callable[[DemoContext], str]
    requires: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    hint: str = ""


@dataclass
class StepRecord:
    """What happened to one step: ``ok``, ``skipped`` or ``failed``, how long it took and what it said."""

    index: int
    name: str
    title: str
    status: str
    seconds: float
    summary: str


def missing_module(name: str) -> bool:
    """True when module ``name`` cannot be found (its parent packages are importable)."""
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
        return True


def skip_reason(step: Step, records: Sequence[StepRecord]) -> str | None:
    """Why ``step`` cannot run now (a stage not built yet, or an input step that did not run), or None."""
    for module in step.requires:
        if missing_module(module):
            if module.split(".")[0] == "p2m":
                return f"not available: {module} is not built yet in this version of p2m"
            return f"not available: {module} is not installed" + (f" ({step.hint})" if step.hint else "")
    done = {r.name: r.status for r in records}
    for need in step.needs:
        if done.get(need) != "ok":
            return f"needs the '{need}' step, which was {done.get(need, 'not run')}"
    return None


def run_steps(
    steps: Sequence[Step],
    ctx: DemoContext,
    echo: Callable[[str], None],
    on_failure: Callable[[list[StepRecord]], None],
) -> list[StepRecord]:
    """Run ``steps`` in order, printing one line per step.

    Args:
        steps: the steps.
        ctx: the shared context.
        echo: prints one line.
        on_failure: called with the records (the failed one last) before the error is raised, e.g. to write a
            partial report.

    Returns:
        One :class:`StepRecord` per step.

    Raises:
        P2MError: a step failed; the message names the step, its number and the cause.
    """
    records: list[StepRecord] = []
    total = len(steps)
    for i, step in enumerate(steps, start=1):
        head = f"[{i:>2}/{total}] {step.name:<9}"
        reason = skip_reason(step, records)
        if reason is not None:
            records.append(StepRecord(i, step.name, step.title, "skipped", 0.0, reason))
            echo(f"{head} skipped: {reason}")
            continue
        t0 = time.perf_counter()
        try:
            summary = step.run(ctx)
        except Exception as exc:
            seconds = time.perf_counter() - t0
            cause = str(exc) or type(exc).__name__
            if not isinstance(exc, P2MError):
                cause = f"{type(exc).__name__}: {cause}"
                logger.debug("step %s failed", step.name, exc_info=True)
            records.append(StepRecord(i, step.name, step.title, "failed", seconds, cause))
            echo(f"{head} FAILED after {seconds:.1f} s: {cause}")
            try:
                on_failure(records)
            except Exception:  # the partial report is a courtesy; the step's error is what matters
                logger.warning("could not write the partial report", exc_info=True)
            raise P2MError(f"demo step {i}/{total} '{step.name}' ({step.title}) failed: {cause}") from exc
        seconds = time.perf_counter() - t0
        records.append(StepRecord(i, step.name, step.title, "ok", seconds, summary))
        echo(f"{head} {summary} ({seconds:.1f} s)")
    return records
