"""`p2m plot RUN`: training curves from metrics.jsonl as PNG files (matplotlib, Agg, written atomically)."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from p2m.errors import CheckpointError
from p2m.io import write_bytes
from p2m.pose2mesh.logging_utils import read_metrics

logger = logging.getLogger(__name__)

LOSS_KEYS = ("loss", "vertex", "normal", "edge", "joint", "lift")
VAL_KEYS = ("mpjpe", "pa_mpjpe", "mpjpe_17", "pa_mpjpe_17", "mpvpe", "lifted_mpjpe")


def _series(rows: Sequence[Mapping[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        if r.get("kind") == kind and isinstance(r.get(key), (int, float)):
            xs.append(int(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Write ``losses.png``, ``lr.png`` and (with validation rows) ``val.png`` into ``out`` (default RUN/plots).

    Returns:
        The files written.

    Raises:
        CheckpointError: the folder has no metrics.jsonl rows.
    """
    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    rows = read_metrics(run / "metrics.jsonl")
    if not rows:
        raise CheckpointError(
            f"{run}: no metrics.jsonl rows to plot (not a p2m run folder, or no step logged yet)"
        )
    dest = Path(out) if out is not None else run / "plots"
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        write_bytes(dest / name, buf.getvalue())
        written.append(dest / name)

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for ax, key in zip(axes.flat, LOSS_KEYS):
        xs, ys = _series(rows, "train", key)
        ex, ey = _series(rows, "epoch", key)
        if not xs and not ex:
            ax.set_visible(False)
            continue
        ax.plot(xs, ys, lw=1, label="train (median of last steps)")
        if ex:
            ax.plot(ex, ey, "o-", ms=3, label="epoch mean")
        ax.set_title("total (weighted)" if key == "loss" else f"{key} (unweighted)")
        if ys and min(ys) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{run.name}: training losses")
    save(fig, "losses.png")

    xs, ys = _series(rows, "train", "lr")
    if xs:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(xs, ys)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        save(fig, "lr.png")

    present = [k for k in VAL_KEYS if _series(rows, "val", k)[0]]
    if present:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key in present:
            vx, vy = _series(rows, "val", key)
            ax.plot(vx, vy, "o-", ms=3, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel("mm")
        ax.set_title(f"{run.name}: validation errors")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "val.png")
    logger.info("wrote %s", ", ".join(str(p) for p in written))
    return written
