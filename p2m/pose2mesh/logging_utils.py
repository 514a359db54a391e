"""Training progress: smoothed meters, rate and ETA, the metrics.jsonl log and the per-epoch table."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from p2m.io import write_text

logger = logging.getLogger(__name__)


class SmoothedValue:
    """A series of values: windowed median and global average (vision's ``SmoothedValue``)."""

    def __init__(self, window: int = 20) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.values.append(float(value))
        self.total += float(value) * n
        self.count += n

    @property
    def median(self) -> float:
        if not self.values:
            return float("nan")
        s = sorted(self.values)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else float("nan")


class MetricLogger:
    """Meters of one epoch plus the rate/ETA bookkeeping of a ``log_every`` loop.

    Args:
        total_steps: optimizer steps this epoch (for the ETA).
        samples_per_step: samples one optimizer step consumes over all ranks.
    """

    def __init__(self, total_steps: int, samples_per_step: int) -> None:
        self.meters: dict[str, SmoothedValue] = {}
        self.total_steps, self.samples_per_step = total_steps, samples_per_step
        self.start = time.perf_counter()
        self.steps = 0
        self._mark = (self.start, 0)
        self.data_time = SmoothedValue()
        self.step_time = SmoothedValue()

    def update(self, **values: float) -> None:
        """Add one value per named meter (e.g. the step's losses and learning rate)."""
        for k, v in values.items():
            self.meters.setdefault(k, SmoothedValue()).update(v)

    def step_done(self, data_s: float, step_s: float) -> None:
        self.steps += 1
        self.data_time.update(data_s)
        self.step_time.update(step_s)

    def rate(self) -> float:
        """Samples per second since the last call (over all ranks)."""
        now = time.perf_counter()
        t0, s0 = self._mark
        self._mark = (now, self.steps)
        dt = now - t0
        return (self.steps - s0) * self.samples_per_step / dt if dt > 0 else float("nan")

    def eta_s(self) -> float:
        """Seconds left in this epoch at the average step time so far."""
        if not self.steps:
            return float("nan")
        return (time.perf_counter() - self.start) / self.steps * max(0, self.total_steps - self.steps)

    def state_dict(self) -> dict[str, Any]:
        """The meters as plain types (saved in a mid-epoch checkpoint, so a resumed epoch logs the same values)."""
        return {
            k: {"values": list(m.values), "total": m.total, "count": m.count} for k, m in self.meters.items()
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k, rec in state.items():
            m = self.meters.setdefault(k, SmoothedValue())
            m.values.extend(float(v) for v in rec["values"])
            m.total, m.count = float(rec["total"]), int(rec["count"])

    def averages(self) -> dict[str, float]:
        return {k: m.global_avg for k, m in self.meters.items()}

    def __str__(self) -> str:
        parts = [f"{k}: {m.median:.4g} ({m.global_avg:.4g})" for k, m in self.meters.items()]
        parts.append(f"data: {self.data_time.median * 1e3:.1f} ms")
        parts.append(f"step: {self.step_time.median * 1e3:.1f} ms")
        parts.append(f"eta: {format_seconds(self.eta_s())}")
        return "  ".join(parts)


def format_seconds(seconds: float) -> str:
    """``1:02:03`` style duration (``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class MetricsWriter:
    """Appends rows to ``RUN/metrics.jsonl`` (rank 0 only; a no-op elsewhere).

    Each row is one JSON object with ``kind`` ("train", "val" or "epoch"), ``step`` (global, never reset by a
    resume), ``epoch`` and its values. Rows are appended and flushed; on resume, :meth:`truncate_after` rewrites
    the file atomically without the rows past the checkpoint's step, so a replayed step is never logged twice and
    a line cut by a crash is dropped.
    """

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._fh = None
        #: Extra sinks (:mod:`p2m.pose2mesh.sinks`: TensorBoard, CSV) that get every row written here.
        self.sinks: list[Any] = []

    def truncate_after(self, step: int) -> int:
        """Keep the complete rows with ``step <= step`` (rewritten atomically); returns how many were dropped."""
        if not self.enabled or not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if isinstance(row, dict) and int(row.get("step", 0)) <= step:
                kept.append(line)
            else:
                dropped += 1
        write_text(self.path, "".join(f"{line}\n" for line in kept))
        return dropped

    def write(self, row: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        clean = _finite(row)
        self._fh.write(json.dumps(clean, separators=(",", ":")) + "\n")
        self._fh.flush()
        for sink in self.sinks:
            sink.write(clean)

    def sync(self) -> None:
        """fsync the log (called with each checkpoint)."""
        if self._fh is not None:
            os.fsync(self._fh.fileno())
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for sink in self.sinks:
            sink.close()
        self.sinks = []


def _finite(row: Mapping[str, Any]) -> dict[str, Any]:
    """NaN/inf become None (JSON has no NaN); values are rounded to 7 significant digits, times to milliseconds."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, float):
            out[k] = None if not math.isfinite(v) else round(v, 3) if abs(v) >= 1e6 else float(f"{v:.7g}")
        else:
            out[k] = v
    return out


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (a cut last line is skipped)."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


#: Columns of the per-epoch table: (row key, header, format).
EPOCH_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("epoch", "epoch", "d"), ("step", "step", "d"), ("lr", "lr", ".2e"), ("loss", "loss", ".4f"),
    ("vertex", "vertex", ".4f"), ("normal", "normal", ".4f"), ("edge", "edge", ".4f"), ("joint", "joint", ".2f"),
    ("lift", "lift", ".2f"), ("mpjpe", "MPJPE", ".1f"), ("pa_mpjpe", "PA-MPJPE", ".1f"), ("mpvpe", "MPVPE", ".1f"),
    ("lifted_mpjpe", "PoseNet", ".1f"), ("seconds", "time", ""),
)  # fmt: skip


def epoch_table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]] = EPOCH_COLUMNS
) -> str:
    """A plain-text table of the ``kind == "epoch"`` rows (losses unweighted; errors in mm)."""
    rows = [r for r in rows if r.get("kind") == "epoch"]
    cols = [c for c in columns if any(r.get(c[0]) is not None for r in rows)]
    if not rows or not cols:
        return ""
    cells = [[h for _, h, _ in cols]]
    for r in rows:
        line = []
        for key, _, fmt in cols:
            v = r.get(key)
            if v is None:
                line.append("-")
            elif key == "seconds":
                line.append(format_seconds(float(v)))
            else:
                line.append(format(int(v) if fmt == "d" else float(v), fmt))
        cells.append(line)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    text = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
