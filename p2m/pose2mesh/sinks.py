"""Extra sinks for the training log: TensorBoard event files and CSV tables beside ``RUN/metrics.jsonl``.

metrics.jsonl stays the record that ``--resume`` trusts (it is truncated to the checkpoint's step); these sinks
only mirror its rows for other tools. On resume, TensorBoard is told to purge the replayed steps and the CSV tables
are rebuilt from the truncated jsonl, so neither shows a step twice.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from p2m.errors import ConfigError
from p2m.io import write_text

logger = logging.getLogger(__name__)

#: What ``--logger`` accepts; jsonl is always written (it is the run's record).
LOGGERS = ("jsonl", "csv", "tensorboard")
#: Sub-folder of the run with the TensorBoard event files (``tensorboard --logdir runs/`` finds every run).
TENSORBOARD_DIR = "tensorboard"
#: Row fields that are coordinates or labels, not scalars to plot.
NOT_SCALARS = ("kind", "step", "epoch", "time", "split")


def parse_loggers(values: Iterable[str]) -> tuple[str, ...]:
    """``("tensorboard,csv",)`` -> ``("csv", "tensorboard")`` (jsonl implied and dropped).

    Raises:
        ConfigError: an unknown name, listing the valid ones.
    """
    names = {v.strip().lower() for arg in values for v in str(arg).split(",") if v.strip()}
    if bad := sorted(names - set(LOGGERS)):
        raise ConfigError(
            f"--logger {', '.join(bad)}: expected {', '.join(LOGGERS)} (repeat or comma-separate)"
        )
    return tuple(n for n in LOGGERS if n in names and n != "jsonl")


def check_available(loggers: Sequence[str]) -> None:
    """Fail before training starts when a sink's package is missing."""
    if "tensorboard" in loggers:
        try:
            import tensorboard  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "--logger tensorboard needs the tensorboard package: pip install 'p2m[plot]'"
            ) from exc


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric values of a metrics row, by name."""
    out = {}
    for k, v in row.items():
        if k in NOT_SCALARS or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class TensorBoardSink:
    """Scalars ``{kind}/{name}`` (``train/loss``, ``val/mpjpe``, ``epoch/lr``) at the row's global step.

    Args:
        run: the run folder; events go to ``run/tensorboard/``.
        resume_step: on resume, the checkpoint's step: TensorBoard drops what earlier sessions logged after it.
    """

    def __init__(self, run: str | Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(Path(run) / TENSORBOARD_DIR), purge_step=purge)

    def write(self, row: Mapping[str, Any]) -> None:
        kind, step = str(row.get("kind", "train")), int(row.get("step", 0))
        for name, value in scalars(row).items():
            self.writer.add_scalar(f"{kind}/{name}", value, global_step=step, walltime=row.get("time"))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class CsvSink:
    """One table per row kind, ``RUN/metrics_{kind}.csv``: step, epoch, then the scalars of the kind's first row.

    A later row's new columns are left out (logged once); the table is rewritten from metrics.jsonl on resume.
    """

    def __init__(self, run: str | Path, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        self.run = Path(run)
        self.columns: dict[str, list[str]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._files: dict[str, Any] = {}
        tables: dict[str, io.StringIO] = {}
        for row in rows:  # rebuild from the record (a resume), atomically per table
            kind = str(row.get("kind", "train"))
            if kind not in tables:
                tables[kind] = io.StringIO()
                self._header(kind, row, tables[kind])
            self._row(kind, row, tables[kind])
        for kind, buf in tables.items():
            write_text(self.path(kind), buf.getvalue())
        for path in self.run.glob("metrics_*.csv"):
            if path.stem.removeprefix("metrics_") not in tables:  # a table with no rows left in the record
                path.unlink()

    def path(self, kind: str) -> Path:
        return self.run / f"metrics_{kind}.csv"

    def _header(self, kind: str, row: Mapping[str, Any], fh: Any) -> None:
        self.columns[kind] = ["step", "epoch", *scalars(row)]
        csv.writer(fh).writerow(self.columns[kind])

    def _row(self, kind: str, row: Mapping[str, Any], fh: Any) -> None:
        values = scalars(row)
        for name in values.keys() - set(self.columns[kind]):
            if (kind, name) not in self._warned:
                self._warned.add((kind, name))
                logger.info(
                    "metrics_%s.csv: column %r appeared after the header; it is in metrics.jsonl only",
                    kind,
                    name,
                )
        cells = [row.get("step", ""), row.get("epoch", "")] + [
            values.get(c, "") for c in self.columns[kind][2:]
        ]
        csv.writer(fh).writerow(cells)

    def write(self, row: Mapping[str, Any]) -> None:
        kind = str(row.get("kind", "train"))
        fh = self._files.get(kind)
        if fh is None:
            path = self.path(kind)
            fresh = not path.exists() or path.stat().st_size == 0
            fh = self._files[kind] = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - kept open
            if fresh:
                self._header(kind, row, fh)
            elif kind not in self.columns:
                with open(path, encoding="utf-8", newline="") as old:
                    self.columns[kind] = next(csv.reader(old))
        self._row(kind, row, fh)
        fh.flush()

    def flush(self) -> None:
        for fh in self._files.values():
            fh.flush()

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}


def open_sinks(
    loggers: Sequence[str],
    run: str | Path,
    record: Sequence[Mapping[str, Any]] | None = None,
    resume_step: int | None = None,
) -> list[Any]:
    """The sinks named in ``loggers`` for ``run`` (``record``: the metrics.jsonl rows kept on resume)."""
    sinks: list[Any] = []
    if "csv" in loggers:
        sinks.append(CsvSink(run, record or ()))
    if "tensorboard" in loggers:
        sinks.append(TensorBoardSink(run, resume_step))
    return sinks
