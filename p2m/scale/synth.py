"""``p2m synth --ray``: batches of frames made by Ray tasks, written in batch order by this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p2m.annotate import synth as stage
from p2m.scale import common


def make_batches(out: str, options: stage.SynthOptions, first: int, last: int) -> list[list[tuple]]:
    """The records of batches ``first .. last - 1`` (one Ray task; images are written by the worker)."""
    maker = stage.Synthesizer(out, options)
    return [maker.batch(b) for b in range(first, last)]


def synth(
    out: str | Path, options: stage.SynthOptions, address: str | None = common.LOCAL, progress: bool = True
) -> dict[str, Any]:
    """:func:`p2m.annotate.synth.synth` with the batches made on Ray; same files, same bytes.

    Each task builds the body model once and makes a contiguous range of batches (about four tasks per CPU), so
    the model's load time is paid once per task. ``out`` must be on a filesystem every node sees when
    ``options.images`` is set (workers write the JPEGs).
    """
    common.init(address)
    n = stage.num_batches(options)
    ranges = common.split_range(n, 4 * common.cluster_cpus())
    chunks = common.ordered_map(make_batches, [(str(out), options, a, b) for a, b in ranges])
    batches = (records for chunk in chunks for records in chunk)
    stats = stage.synth(out, options, progress=progress, batches=batches)
    stats["ray_tasks"] = len(ranges)
    return stats
