"""One row format for every benchmark, so that run_all.py can gather them into one table.

A benchmark script calls :func:`emit` once per figure. It prints a machine-readable line (``BENCH_ROW {json}``)
that run_all.py collects; people reading the script's own output see the same figure in words.
"""

from __future__ import annotations

import json
import math
import os
import platform
from typing import Any

PREFIX = "BENCH_ROW "


def machine() -> str:
    """CPU count, architecture and, when torch sees one, the accelerator's name."""
    text = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
        else:
            text += f", CPU only (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    except ImportError:  # pragma: no cover - every p2m install has torch
        pass
    return text


def emit(
    benchmark: str,
    figure: str,
    value: float | None,
    unit: str,
    baseline: str | None,
    baseline_value: float | None,
    *,
    higher_is_better: bool = True,
    note: str = "",
) -> dict[str, Any]:
    """Print one figure with its baseline (measured in the same run) and the ratio p2m / baseline.

    Args:
        benchmark: which script / topic ("crawl", "shards").
        figure: what was measured ("images/s, 50 hosts").
        value: p2m's number (None when it could not be measured; ``note`` says why).
        unit: its unit.
        baseline: the named baseline, or None when there is none (``note`` says why).
        baseline_value: the baseline's number in the same unit.
        higher_is_better: says how to read the ratio.
        note: anything a reader needs (settings, why a baseline is missing).
    """
    ratio = None
    if value is not None and baseline_value not in (None, 0) and math.isfinite(value):
        ratio = value / baseline_value
    row = {
        "benchmark": benchmark,
        "figure": figure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": None if ratio is None else round(ratio, 3),
        "higher_is_better": higher_is_better,
        "note": note,
        "machine": machine(),
    }
    print(PREFIX + json.dumps(row), flush=True)
    return row
